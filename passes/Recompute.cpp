//===- Recompute.cpp - Activation checkpointing by decoder layer ----------===//
//
// A training step is one block: the forward clone, then the adjoints in
// reverse order. Every forward value an adjoint reads would stay alive from
// the forward to the backward; for a chosen decoder layer this pass keeps
// only the layer's output (the checkpoint the next layer reads) and
// recomputes everything else the backward reads from the layer's inputs,
// right before the layer's backward begins.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/DenseSet.h"

#include <map>
#include <optional>

namespace bitloom {
#define GEN_PASS_DEF_LOOMRECOMPUTE
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;
using namespace bitloom::loom;

namespace {

/// The decoder layer `L` of a location naming a module `...model.layers.L.*`
/// (import's NameLocs), found inside fused, call-site and nested name
/// locations that later passes may wrap it in.
std::optional<int64_t> layerOf(Location loc) {
  std::optional<int64_t> layer;
  loc->walk([&](Location inner) {
    auto name = dyn_cast<NameLoc>(inner);
    if (!name)
      return WalkResult::advance();
    StringRef text = name.getName().getValue();
    size_t at = text.find("model.layers.");
    if (at == StringRef::npos)
      return WalkResult::advance();
    StringRef rest = text.drop_front(at + strlen("model.layers."));
    int64_t index;
    if (rest.consumeInteger(10, index) || !rest.starts_with("."))
      return WalkResult::advance();
    layer = index;
    return WalkResult::interrupt();
  });
  return layer;
}

/// The op that defines the function's "loss" result: the last op of the
/// forward clone -loom-autodiff makes. Ops after it are the backward.
Operation *lossOp(func::FuncOp func) {
  if (!func.getBody().hasOneBlock())
    return nullptr;
  Operation *ret = func.getBody().front().getTerminator();
  for (unsigned i = 0; i < func.getNumResults(); ++i) {
    auto name = func.getResultAttrOfType<StringAttr>(i, "loom.name");
    if (!name || name.getValue() != "loss" || i >= ret->getNumOperands())
      continue;
    Operation *def = ret->getOperand(i).getDefiningOp();
    if (def && def->getBlock() == &func.getBody().front())
      return def;
  }
  return nullptr;
}

/// Where each op of a training step's block stands: forward (up to the loss)
/// or backward, and the chosen layer a forward op belongs to.
struct Schedule {
  Block &body;
  DenseMap<Operation *, unsigned> order;
  unsigned backwardStart = 0;
  DenseMap<Operation *, int64_t> layerOfOp;

  Schedule(Block &body, Operation *loss) : body(body) {
    unsigned index = 0;
    for (Operation &op : body)
      order[&op] = index++;
    backwardStart = order[loss] + 1;
  }
  /// The op of the block a use belongs to (uses are top-level today; one in
  /// a nested region counts as its parent op's).
  Operation *topLevel(Operation *user) const {
    return body.findAncestorOpInBlock(*user);
  }
  /// Ops this pass inserts are not in `order`: they are backward ops.
  bool isForward(Operation *op) const {
    auto it = order.find(op);
    return it != order.end() && it->second < backwardStart;
  }
  /// Ops that were in the block before this pass, after the loss.
  bool isOriginalBackward(Operation *op) const {
    auto it = order.find(op);
    return it != order.end() && it->second >= backwardStart;
  }
  bool inLayer(Operation *op, int64_t layer) const {
    auto it = layerOfOp.find(op);
    return it != layerOfOp.end() && it->second == layer;
  }
};

class Recompute : public bitloom::impl::LoomRecomputeBase<Recompute> {
public:
  using LoomRecomputeBase::LoomRecomputeBase;

  void runOnOperation() override {
    if (layers < -1) {
      getOperation().emitError("loom-recompute: layers must be -1 (all) or "
                               "at least 0, not ")
          << int64_t(layers);
      return signalPassFailure();
    }
    if (layers == 0)
      return;
    for (auto func : getOperation().getOps<func::FuncOp>())
      recomputeIn(func);
  }

private:
  bool chosen(int64_t layer) const { return layers < 0 || layer < layers; }

  void recomputeIn(func::FuncOp func) {
    Operation *loss = lossOp(func);
    if (!loss)
      return;
    Schedule schedule(func.getBody().front(), loss);

    // Segments: the forward ops of each chosen layer, in forward order.
    std::map<int64_t, SmallVector<Operation *>> segments;
    int64_t layersSeen = 0;
    for (Operation &op : schedule.body) {
      if (!schedule.isForward(&op))
        break;
      std::optional<int64_t> layer = layerOf(op.getLoc());
      if (!layer)
        continue;
      layersSeen = std::max(layersSeen, *layer + 1);
      if (!chosen(*layer))
        continue;
      segments[*layer].push_back(&op);
      schedule.layerOfOp[&op] = *layer;
    }

    SmallVector<Operation *> originals;
    for (auto &[layer, segment] : segments)
      recomputeSegment(schedule, layer, segment, originals);
    if (originals.empty())
      return;
    // An original only the backward read is now dead. Erased last, so that
    // no new op reuses the address of one still in `order`.
    for (Operation *op : llvm::reverse(originals))
      if (isOpTriviallyDead(op))
        op->erase();
    // Layers are chosen as a prefix, so a count says which ones.
    int64_t count =
        layers < 0 ? layersSeen : std::min<int64_t>(layersSeen, layers);
    func->setAttr("loom.recomputed_layers",
                  Builder(func.getContext()).getI64IntegerAttr(count));
  }

  /// Recomputes the values of `layer` the backward reads; appends the ops it
  /// cloned to `originals`.
  void recomputeSegment(const Schedule &schedule, int64_t layer,
                        ArrayRef<Operation *> segment,
                        SmallVectorImpl<Operation *> &originals) {
    // Values that must stay: the checkpoint (read by forward ops outside the
    // segment, i.e. the next layer), parameters (weights, not activations),
    // and results of ops that cannot be re-executed.
    auto kept = [&](Value v) {
      Operation *def = v.getDefiningOp();
      if (!def || !schedule.inLayer(def, layer) || isa<ParamOp>(def) ||
          def->getNumRegions() != 0 || !isMemoryEffectFree(def))
        return true;
      return llvm::any_of(v.getUsers(), [&](Operation *user) {
        Operation *top = schedule.topLevel(user);
        return schedule.isForward(top) && !schedule.inLayer(top, layer);
      });
    };

    // The segment values the backward reads, and its first op to read one.
    // (Clones made for other layers read only their own layer's values and
    // kept ones, so only original backward ops matter here.)
    SmallVector<Value> needed;
    Operation *insertBefore = nullptr;
    for (Operation *op : segment)
      for (Value v : op->getResults()) {
        if (kept(v))
          continue;
        bool read = false;
        for (Operation *user : v.getUsers()) {
          Operation *top = schedule.topLevel(user);
          if (!top || !schedule.isOriginalBackward(top))
            continue;
          read = true;
          if (!insertBefore ||
              schedule.order.lookup(top) < schedule.order.lookup(insertBefore))
            insertBefore = top;
        }
        if (read)
          needed.push_back(v);
      }
    if (needed.empty())
      return;

    // Everything they are computed from inside the segment, back to the
    // kept values (the layer input comes from outside anyway).
    llvm::DenseSet<Operation *> toClone;
    SmallVector<Operation *> worklist;
    for (Value v : needed)
      if (toClone.insert(v.getDefiningOp()).second)
        worklist.push_back(v.getDefiningOp());
    while (!worklist.empty()) {
      Operation *op = worklist.pop_back_val();
      for (Value operand : op->getOperands())
        if (!kept(operand) && toClone.insert(operand.getDefiningOp()).second)
          worklist.push_back(operand.getDefiningOp());
    }

    // The same ops on the same operands, in forward order: bit-identical.
    OpBuilder b(insertBefore);
    IRMapping mapping;
    for (Operation *op : segment)
      if (toClone.contains(op)) {
        b.clone(*op, mapping);
        originals.push_back(op);
        ++numClonedOps;
      }
    ++numLayers;

    // Only the backward reads the clones; the forward keeps the originals,
    // which therefore die at their last forward use.
    for (Value v : needed) {
      v.replaceUsesWithIf(mapping.lookup(v), [&](OpOperand &use) {
        Operation *top = schedule.topLevel(use.getOwner());
        return top && !schedule.isForward(top);
      });
      ++numRecomputedValues;
    }
    // relu²(gate) is cheap and [tokens × intermediate]: rather than keep the
    // clone from the gated product (recomputed first) to the product's
    // adjoint, a reader far behind the first gets a clone of its own, right
    // before it — the gate itself lives that long for relu²'s adjoint.
    for (Operation *op : segment) {
      if (!isa<Relu2Op>(op) || !toClone.contains(op))
        continue;
      Value clone = mapping.lookup(op->getResult(0));
      Operation *cloneOp = clone.getDefiningOp();
      SmallVector<Operation *> readers;
      for (Operation *user : clone.getUsers())
        readers.push_back(user);
      llvm::sort(readers, [](Operation *a, Operation *b) {
        return a->isBeforeInBlock(b);
      });
      Value gate = cloneOp->getOperand(0);
      for (Operation *reader : llvm::drop_begin(readers)) {
        bool gateLives = llvm::any_of(gate.getUsers(), [&](Operation *u) {
          return u != cloneOp && (u == reader || reader->isBeforeInBlock(u));
        });
        if (!gateLives || reader->getBlock() != cloneOp->getBlock())
          continue;
        OpBuilder rb(reader);
        Operation *again = rb.clone(*cloneOp);
        reader->replaceUsesOfWith(clone, again->getResult(0));
        ++numClonedOps;
      }
    }
  }
};

} // namespace

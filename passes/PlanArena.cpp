//===- PlanArena.cpp - Static placement of step buffers in one arena ------===//
//
// After bufferization a training step is one block of top-level ops (the
// schedule). Every memref.alloc of that block is live from its first to its
// last top-level use — uses through views, casts, extracted pointers and
// values loaded from it count, and a use inside a region counts at its
// top-level ancestor. Buffers are placed largest first at the lowest
// aligned offset free over their whole live range (best fit over the
// schedule), then each alloc becomes a memref.view into one trailing i8
// argument: the arena the runtime allocates once.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>

namespace bitloom {
#define GEN_PASS_DEF_LOOMPLANARENA
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;

namespace {

struct PlannedBuffer {
  memref::AllocOp alloc;
  int64_t size = 0;
  int64_t first = 0, last = 0; // inclusive schedule positions
  int64_t offset = 0;
  std::string owner;
};

/// The name a NameLoc gives (the Hugging Face module the op came from), if
/// any location inside `loc` has one.
std::string moduleName(Location loc) {
  std::string name;
  loc->walk([&](Location inner) {
    if (auto named = dyn_cast<NameLoc>(inner)) {
      name = named.getName().str();
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return name;
}

/// What an op is, for the plan's listing: a micro-kernel call names its
/// callee, other ops their name.
std::string opKind(Operation *op) {
  if (auto call = dyn_cast<func::CallOp>(op))
    return call.getCallee().str();
  return op->getName().getStringRef().str();
}

class PlanArena : public bitloom::impl::LoomPlanArenaBase<PlanArena> {
public:
  using LoomPlanArenaBase::LoomPlanArenaBase;

  void runOnOperation() override {
    if (alignment < 1 || !llvm::isPowerOf2_64(uint64_t(alignment))) {
      getOperation().emitError("loom-plan-arena: alignment must be a power "
                               "of two, not ")
          << alignment;
      return signalPassFailure();
    }
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (!func.isExternal() && failed(plan(func)))
        return signalPassFailure();
  }

private:
  LogicalResult plan(func::FuncOp func) {
    if (!func.getBody().hasOneBlock())
      return func.emitError(
          "loom-plan-arena handles straight-line functions only");
    Block &body = func.getBody().front();
    // A buffer allocated inside a loop body would need a slot per
    // iteration; nothing lowers to that, and a silent malloc per step would
    // break the plan's promise.
    WalkResult nested = func.walk([&](memref::AllocOp alloc) {
      if (alloc->getBlock() == &body)
        return WalkResult::advance();
      alloc.emitError("loom-plan-arena: allocation inside a nested region");
      return WalkResult::interrupt();
    });
    if (nested.wasInterrupted())
      return failure();

    llvm::DenseMap<Operation *, int64_t> position;
    int64_t steps = 0;
    for (Operation &op : body)
      position[&op] = steps++;

    std::vector<PlannedBuffer> buffers;
    for (Operation &op : body) {
      auto alloc = dyn_cast<memref::AllocOp>(op);
      if (!alloc)
        continue;
      MemRefType type = alloc.getType();
      if (!type.hasStaticShape() || !type.getLayout().isIdentity())
        return alloc.emitError("loom-plan-arena: buffer ")
               << type << " has no static size and identity layout";
      PlannedBuffer b;
      b.alloc = alloc;
      b.size = type.getNumElements() *
               int64_t(llvm::divideCeil(type.getElementTypeBitWidth(), 8));
      if (failed(liveRange(alloc, body, position, b)))
        return failure();
      buffers.push_back(std::move(b));
    }

    int64_t arenaBytes = place(buffers);

    // The arena: one trailing i8 argument; every buffer a view into it.
    auto arenaType =
        MemRefType::get({arenaBytes}, IntegerType::get(func.getContext(), 8));
    if (failed(func.insertArgument(func.getNumArguments(), arenaType,
                                   DictionaryAttr(), func.getLoc())))
      return func.emitError("loom-plan-arena: cannot add the arena argument");
    Value arena = body.getArguments().back();
    OpBuilder builder(func.getContext());
    SmallVector<Attribute> planned;
    for (PlannedBuffer &b : buffers) {
      builder.setInsertionPoint(b.alloc);
      Value offset =
          arith::ConstantIndexOp::create(builder, b.alloc.getLoc(), b.offset);
      Value view =
          memref::ViewOp::create(builder, b.alloc.getLoc(), b.alloc.getType(),
                                 arena, offset, ValueRange{});
      b.alloc.replaceAllUsesWith(view);
      b.alloc.erase();
      planned.push_back(builder.getDictionaryAttr({
          builder.getNamedAttr("offset", builder.getI64IntegerAttr(b.offset)),
          builder.getNamedAttr("size", builder.getI64IntegerAttr(b.size)),
          builder.getNamedAttr("first", builder.getI64IntegerAttr(b.first)),
          builder.getNamedAttr("last", builder.getI64IntegerAttr(b.last)),
          builder.getNamedAttr("owner", builder.getStringAttr(b.owner)),
      }));
    }
    func->setAttr("loom.arena_bytes", builder.getI64IntegerAttr(arenaBytes));
    func->setAttr("loom.schedule_length", builder.getI64IntegerAttr(steps));
    func->setAttr("loom.memory_plan", builder.getArrayAttr(planned));
    return success();
  }

  /// First and last top-level op that touch the buffer (through anything
  /// derived from it), and the op that owns it: the first one that writes
  /// or reads it, named by its model location.
  static LogicalResult
  liveRange(memref::AllocOp alloc, Block &block,
            const llvm::DenseMap<Operation *, int64_t> &position,
            PlannedBuffer &b) {
    int64_t first = position.lookup(alloc), last = first;
    bool used = false;
    Operation *firstUser = nullptr;
    SmallVector<Value> worklist = {alloc.getResult()};
    llvm::SmallPtrSet<Operation *, 16> seen;
    while (!worklist.empty()) {
      Value value = worklist.pop_back_val();
      for (Operation *user : value.getUsers()) {
        if (!seen.insert(user).second)
          continue;
        if (isa<func::ReturnOp>(user))
          return alloc.emitError("loom-plan-arena: a step buffer is returned "
                                 "(run -buffer-results-to-out-params first)");
        Operation *top = block.findAncestorOpInBlock(*user);
        if (top) {
          int64_t at = position.lookup(top);
          // Views, casts and pointer arithmetic only name the buffer; the
          // op that really touches it first defines its start.
          // So does arithmetic on an extracted pointer (a micro-kernel's
          // argument): the call that receives it touches the bytes.
          bool namesOnly =
              isa<memref::ViewOp, memref::SubViewOp, memref::CastOp,
                  memref::ExpandShapeOp, memref::CollapseShapeOp,
                  memref::ReinterpretCastOp, memref::ExtractStridedMetadataOp,
                  memref::ExtractAlignedPointerAsIndexOp>(top) ||
              isa_and_present<arith::ArithDialect, LLVM::LLVMDialect>(
                  top->getDialect());
          if (!namesOnly && (!used || at < first)) {
            first = at;
            firstUser = top;
            used = true;
          }
          last = std::max(last, at);
        }
        for (Value result : user->getResults())
          worklist.push_back(result);
      }
    }
    // Views of an untouched buffer cost nothing: its bytes are live from
    // the first op that reads or writes them.
    b.first = first;
    b.last = last;
    std::string module = moduleName((firstUser ? firstUser : alloc)->getLoc());
    b.owner = (module.empty() ? std::string("?") : module) + " (" +
              opKind(firstUser ? firstUser : alloc.getOperation()) + ")";
    return success();
  }

  /// Largest first, each at the lowest aligned offset that no placed buffer
  /// live at the same time covers. Returns the arena size.
  int64_t place(std::vector<PlannedBuffer> &buffers) const {
    std::vector<size_t> order(buffers.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (buffers[a].size != buffers[b].size)
        return buffers[a].size > buffers[b].size;
      return buffers[a].first < buffers[b].first;
    });
    std::vector<size_t> placed;
    int64_t arenaBytes = 0;
    std::vector<std::pair<int64_t, int64_t>> busy; // [offset, end)
    for (size_t i : order) {
      PlannedBuffer &b = buffers[i];
      busy.clear();
      for (size_t j : placed) {
        const PlannedBuffer &p = buffers[j];
        if (p.first <= b.last && b.first <= p.last)
          busy.push_back({p.offset, p.offset + p.size});
      }
      std::sort(busy.begin(), busy.end());
      int64_t offset = 0;
      for (auto [begin, end] : busy) {
        if (offset + b.size <= begin)
          break;
        offset = std::max(offset, alignTo(end));
      }
      b.offset = offset;
      arenaBytes = std::max(arenaBytes, offset + b.size);
      placed.push_back(i);
    }
    return alignTo(arenaBytes);
  }

  int64_t alignTo(int64_t n) const {
    return int64_t(llvm::alignTo(uint64_t(n), uint64_t(alignment)));
  }
};

} // namespace

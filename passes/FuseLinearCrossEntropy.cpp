//===- FuseLinearCrossEntropy.cpp - LM head + loss as one op --------------===//
//
// The logits of a causal LM are [rows, vocab]: 1 GiB in f32 for a 128256-
// token vocabulary at 2048 rows, and the backward adds their gradient. Only
// the loss and the input gradient leave the LM head when its weight is
// frozen, so matmul → cross_entropy (→ cross_entropy_grad →
// matmul_grad_input) becomes one loom.linear_cross_entropy whose lowering
// walks the rows in blocks and never holds more than one block of logits.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <algorithm>

namespace bitloom {
#define GEN_PASS_DEF_LOOMFUSELINEARCROSSENTROPY
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;
using namespace bitloom::loom;

namespace {

/// The same weight: one value, or two reads of one parameter (a function
/// may read a parameter once per use).
bool sameWeight(Value a, Value b) {
  if (a == b)
    return true;
  auto pa = a.getDefiningOp<ParamOp>(), pb = b.getDefiningOp<ParamOp>();
  return pa && pb && pa.getName() == pb.getName() && a.getType() == b.getType();
}

/// Whether every user of `v` is an op of `block` that comes after `op`.
bool usedOnlyAfter(Value v, Operation *op) {
  Block *block = op->getBlock();
  for (Operation *user : v.getUsers()) {
    Operation *top = block->findAncestorOpInBlock(*user);
    if (!top || !op->isBeforeInBlock(top))
      return false;
  }
  return true;
}

class FuseLinearCrossEntropy
    : public bitloom::impl::LoomFuseLinearCrossEntropyBase<
          FuseLinearCrossEntropy> {
public:
  using LoomFuseLinearCrossEntropyBase::LoomFuseLinearCrossEntropyBase;

  void runOnOperation() override {
    SmallVector<CrossEntropyOp> losses;
    getOperation().walk([&](CrossEntropyOp ce) { losses.push_back(ce); });
    for (CrossEntropyOp ce : losses)
      fuse(ce);
  }

private:
  /// Rows per block: the most multiples of 8 whose f32 logits fit in
  /// block-bytes (at least 8), but no more than there are rows.
  int64_t blockRowsFor(RankedTensorType input, int64_t vocab) {
    int64_t rows = std::max<int64_t>(8, blockBytes / (vocab * 4) / 8 * 8);
    if (input.getRank() == 3 && !ShapedType::isDynamic(input.getDimSize(0)) &&
        !ShapedType::isDynamic(input.getDimSize(1)))
      rows = std::min(rows, std::max<int64_t>(1, input.getDimSize(0) *
                                                     input.getDimSize(1)));
    return rows;
  }

  void fuse(CrossEntropyOp ce) {
    auto mm = ce.getLogits().getDefiningOp<MatmulOp>();
    if (!mm || mm->getBlock() != ce->getBlock())
      return;
    Block *block = ce->getBlock();
    Value logits = mm.getResult();

    // The logits feed this loss and at most one gradient of it, nothing
    // else: any other reader would need them materialized anyway.
    CrossEntropyGradOp ceGrad;
    for (Operation *user : logits.getUsers()) {
      if (user == ce.getOperation())
        continue;
      auto g = dyn_cast<CrossEntropyGradOp>(user);
      if (!g || ceGrad || g->getBlock() != block || g.getLogits() != logits ||
          g.getLabels() != ce.getLabels() ||
          g.getLossMask() != ce.getLossMask())
        return;
      ceGrad = g;
    }
    // In training the logits' gradient must only reach the input: a weight
    // gradient (trainable head) needs all of it.
    MatmulGradInputOp gradInput;
    if (ceGrad) {
      if (!ceGrad->hasOneUse())
        return;
      gradInput = dyn_cast<MatmulGradInputOp>(*ceGrad->getUsers().begin());
      if (!gradInput || gradInput->getBlock() != block ||
          gradInput.getResultGrad() != ceGrad.getResult() ||
          !sameWeight(gradInput.getWeight(), mm.getWeight()))
        return;
    }

    auto weightType = dyn_cast<RankedTensorType>(mm.getWeight().getType());
    auto inputType = dyn_cast<RankedTensorType>(mm.getInput().getType());
    if (!weightType || !inputType || weightType.getRank() != 2 ||
        ShapedType::isDynamic(weightType.getDimSize(0)) ||
        weightType.getDimSize(0) <= 0)
      return;
    int64_t blockRows = blockRowsFor(inputType, weightType.getDimSize(0));

    // The fused op computes the loss and the input gradient at once, so it
    // goes where the loss gradient is known. The autodiff seed is a constant
    // made after the forward: move it up rather than the loss's users down.
    Operation *insertAt = ce;
    Value lossGrad = ceGrad ? ceGrad.getLossGrad() : Value();
    if (Operation *def = lossGrad ? lossGrad.getDefiningOp() : nullptr;
        def && def->getBlock() == block && ce->isBeforeInBlock(def)) {
      if (def->getNumOperands() == 0 && def->getNumRegions() == 0 &&
          isPure(def)) {
        def->moveBefore(ce);
      } else {
        if (!usedOnlyAfter(ce.getResult(), def))
          return;
        insertAt = def->getNextNode();
      }
    }

    OpBuilder b(insertAt);
    Location loc = b.getFusedLoc({mm.getLoc(), ce.getLoc()});
    auto fused = LinearCrossEntropyOp::create(
        b, loc, ce.getResult().getType(),
        gradInput ? gradInput.getResult().getType() : Type(), mm.getInput(),
        mm.getWeight(), ce.getLabels(), ce.getLossMask(), lossGrad,
        b.getI64IntegerAttr(blockRows));
    ce.getResult().replaceAllUsesWith(fused.getLoss());
    Operation *deadWeight = nullptr;
    if (gradInput) {
      gradInput.getResult().replaceAllUsesWith(fused.getInputGrad());
      if (gradInput.getWeight() != mm.getWeight())
        deadWeight = gradInput.getWeight().getDefiningOp();
      gradInput.erase();
      ceGrad.erase();
    }
    ce.erase();
    mm.erase();
    if (deadWeight && deadWeight->use_empty())
      deadWeight->erase();
  }
};

} // namespace

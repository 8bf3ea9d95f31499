//===- LoomAdjoints.cpp - DifferentiableOpInterface for loom ops ----------===//
//
// The adjoint of every differentiable forward op. Straight-through
// estimators: bitlinear's gradients ignore both roundings, so dx meets the
// quantized weight and dW meets the quantized activations.
//
//===----------------------------------------------------------------------===//
#include "dialects/loom/LoomDialect.h"

#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace bitloom::loom;

namespace {
/// Most ops have one result; no gradient for it means no contribution.
bool hasNoGrad(ArrayRef<Value> resultGrads) {
  return llvm::all_of(resultGrads, [](Value v) { return !v; });
}
} // namespace

SmallVector<Value> EmbeddingOp::buildAdjoint(OpBuilder &b,
                                             ArrayRef<Value> resultGrads,
                                             ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads) || !needsGrad[0])
    return grads;
  grads[0] = EmbeddingGradOp::create(b, getLoc(), getTable().getType(),
                                     resultGrads[0], getTokens());
  return grads;
}

SmallVector<Value> RMSNormOp::buildAdjoint(OpBuilder &b,
                                           ArrayRef<Value> resultGrads,
                                           ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads))
    return grads;
  Value dy = resultGrads[0];
  if (needsGrad[0])
    grads[0] =
        RMSNormGradInputOp::create(b, getLoc(), getInput().getType(), dy,
                                   getInput(), getWeight(), getEpsilonAttr());
  if (needsGrad[1])
    grads[1] = RMSNormGradWeightOp::create(b, getLoc(), getWeight().getType(),
                                           dy, getInput(), getEpsilonAttr());
  return grads;
}

SmallVector<Value> BitLinearOp::buildAdjoint(OpBuilder &b,
                                             ArrayRef<Value> resultGrads,
                                             ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads))
    return grads;
  Value dy = resultGrads[0];
  if (needsGrad[0])
    grads[0] = BitLinearGradInputOp::create(b, getLoc(), getInput().getType(),
                                            dy, getWeight(), getOutputScale(),
                                            getWeightQuantAttr());
  // Only master weights train; a ternary weight is frozen by construction.
  if (needsGrad[1] && getWeightQuant() == WeightQuant::online)
    grads[1] = BitLinearGradWeightOp::create(b, getLoc(), getWeight().getType(),
                                             dy, getInput(), getOutputScale());
  return grads;
}

SmallVector<Value> LoRAOp::buildAdjoint(OpBuilder &b,
                                        ArrayRef<Value> resultGrads,
                                        ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads))
    return grads;
  Value dy = resultGrads[0];
  if (needsGrad[0])
    grads[0] = dy;
  if (needsGrad[1])
    grads[1] = LoRAGradInputOp::create(b, getLoc(), getInput().getType(), dy,
                                       getLoraA(), getLoraB(), getAlphaAttr(),
                                       getRankAttr());
  if (needsGrad[2] || needsGrad[3]) {
    auto params = LoRAGradParamsOp::create(
        b, getLoc(), getLoraA().getType(), getLoraB().getType(), dy, getInput(),
        getLoraA(), getLoraB(), getAlphaAttr(), getRankAttr());
    if (needsGrad[2])
      grads[2] = params.getLoraAGrad();
    if (needsGrad[3])
      grads[3] = params.getLoraBGrad();
  }
  return grads;
}

SmallVector<Value> RoPEOp::buildAdjoint(OpBuilder &b,
                                        ArrayRef<Value> resultGrads,
                                        ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads) || !needsGrad[0])
    return grads;
  grads[0] = RoPEOp::create(b, getLoc(), getInput().getType(), resultGrads[0],
                            getPositions(), getThetaAttr(), getHeadDimAttr(),
                            b.getBoolAttr(!getInverse()));
  return grads;
}

SmallVector<Value> AttentionOp::buildAdjoint(OpBuilder &b,
                                             ArrayRef<Value> resultGrads,
                                             ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads) ||
      llvm::none_of(needsGrad, [](bool x) { return x; }))
    return grads;
  auto grad = AttentionGradOp::create(
      b, getLoc(), getQuery().getType(), getKey().getType(),
      getValue().getType(), resultGrads[0], getQuery(), getKey(), getValue(),
      getNumHeadsAttr(), getNumKvHeadsAttr(), getHeadDimAttr(), getScaleAttr(),
      getCausalAttr());
  for (unsigned i = 0; i < 3; ++i)
    if (needsGrad[i])
      grads[i] = grad->getResult(i);
  return grads;
}

SmallVector<Value> Relu2Op::buildAdjoint(OpBuilder &b,
                                         ArrayRef<Value> resultGrads,
                                         ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads) || !needsGrad[0])
    return grads;
  grads[0] =
      Relu2GradOp::create(b, getLoc(), getType(), resultGrads[0], getInput());
  return grads;
}

SmallVector<Value> AddOp::buildAdjoint(OpBuilder &b,
                                       ArrayRef<Value> resultGrads,
                                       ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads))
    return grads;
  for (unsigned i = 0; i < 2; ++i)
    if (needsGrad[i])
      grads[i] = resultGrads[0];
  return grads;
}

SmallVector<Value> MulOp::buildAdjoint(OpBuilder &b,
                                       ArrayRef<Value> resultGrads,
                                       ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads))
    return grads;
  Value dy = resultGrads[0];
  if (needsGrad[0])
    grads[0] = MulOp::create(b, getLoc(), dy, getRhs());
  if (needsGrad[1])
    grads[1] = MulOp::create(b, getLoc(), dy, getLhs());
  return grads;
}

SmallVector<Value> MatmulOp::buildAdjoint(OpBuilder &b,
                                          ArrayRef<Value> resultGrads,
                                          ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads))
    return grads;
  Value dy = resultGrads[0];
  if (needsGrad[0])
    grads[0] = MatmulGradInputOp::create(b, getLoc(), getInput().getType(), dy,
                                         getWeight());
  if (needsGrad[1])
    grads[1] = MatmulGradWeightOp::create(b, getLoc(), getWeight().getType(),
                                          dy, getInput());
  return grads;
}

SmallVector<Value> CrossEntropyOp::buildAdjoint(OpBuilder &b,
                                                ArrayRef<Value> resultGrads,
                                                ArrayRef<bool> needsGrad) {
  SmallVector<Value> grads((*this)->getNumOperands());
  if (hasNoGrad(resultGrads) || !needsGrad[0])
    return grads;
  grads[0] = CrossEntropyGradOp::create(b, getLoc(), getLogits().getType(),
                                        getLogits(), getLabels(), getLossMask(),
                                        resultGrads[0]);
  return grads;
}

//===- LoomOps.cpp - loom operation verifiers -----------------------------===//
//
// Verifiers check what a shape-polymorphic graph can know statically: ranks,
// element types, and every pair of dimensions that must agree (a dynamic `?`
// agrees with anything).
//
//===----------------------------------------------------------------------===//
#include "dialects/loom/LoomDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace bitloom::loom;

namespace {

bool dimsAgree(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

std::string formatDim(int64_t d) {
  return ShapedType::isDynamic(d) ? "?" : std::to_string(d);
}

/// The ranked shape of `v`, or a diagnostic naming `what` when it is
/// unranked or of the wrong rank.
FailureOr<ArrayRef<int64_t>> requireRank(Operation *op, Value v, StringRef what,
                                         int64_t rank) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  if (!type)
    return op->emitOpError() << what << " must be a ranked tensor";
  if (type.getRank() != rank)
    return op->emitOpError()
           << what << " must have rank " << rank << ", got " << type.getRank();
  return type.getShape();
}

LogicalResult requireDim(Operation *op, StringRef what, int64_t actual,
                         int64_t expected, StringRef expectedWhat) {
  if (dimsAgree(actual, expected))
    return success();
  return op->emitOpError() << what << " is " << formatDim(actual)
                           << " but must equal " << expectedWhat << " ("
                           << formatDim(expected) << ")";
}

/// [out, in] of a weight operand, float or ternary.
ArrayRef<int64_t> weightShape(Value weight) {
  if (auto ternary = dyn_cast<TernaryType>(weight.getType()))
    return ternary.getShape();
  return cast<RankedTensorType>(weight.getType()).getShape();
}

/// Activations are [batch, tokens, features]; the result keeps batch and
/// tokens and has `features` features.
LogicalResult verifyActivationResult(Operation *op,
                                     ArrayRef<int64_t> inputShape,
                                     int64_t features) {
  FailureOr<ArrayRef<int64_t>> result =
      requireRank(op, op->getResult(0), "result", 3);
  if (failed(result))
    return failure();
  if (failed(requireDim(op, "result batch", (*result)[0], inputShape[0],
                        "input batch")) ||
      failed(requireDim(op, "result tokens", (*result)[1], inputShape[1],
                        "input tokens")) ||
      failed(requireDim(op, "result features", (*result)[2], features,
                        "the produced features")))
    return failure();
  return success();
}

} // namespace

LogicalResult ParamOp::verify() {
  if (getName().empty())
    return emitOpError("parameter name must not be empty");
  if (getKind() != ParamKind::weight) {
    auto type = dyn_cast<RankedTensorType>(getType());
    if (!type || type.getRank() != 2 || !type.hasStaticShape())
      return emitOpError("LoRA parameters must be static f32 matrices");
  }
  if (auto type = dyn_cast<RankedTensorType>(getType()))
    if (!type.hasStaticShape())
      return emitOpError("parameters must have a static shape");
  return success();
}

LogicalResult EmbeddingOp::verify() {
  auto table = requireRank(*this, getTable(), "table", 2);
  auto tokens = requireRank(*this, getTokens(), "tokens", 2);
  if (failed(table) || failed(tokens))
    return failure();
  auto result = requireRank(*this, getResult(), "result", 3);
  if (failed(result))
    return failure();
  if (failed(requireDim(*this, "result batch", (*result)[0], (*tokens)[0],
                        "tokens batch")) ||
      failed(requireDim(*this, "result tokens", (*result)[1], (*tokens)[1],
                        "tokens length")) ||
      failed(requireDim(*this, "result features", (*result)[2], (*table)[1],
                        "the table's hidden size")))
    return failure();
  return success();
}

LogicalResult RMSNormOp::verify() {
  auto weight = requireRank(*this, getWeight(), "weight", 1);
  if (failed(weight))
    return failure();
  auto input = dyn_cast<RankedTensorType>(getInput().getType());
  if (!input || input.getRank() < 1)
    return emitOpError("input must be a ranked tensor of rank >= 1");
  if (getResult().getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  if (failed(requireDim(*this, "weight size", (*weight)[0],
                        input.getShape().back(), "the input's last dimension")))
    return failure();
  if (getEpsilon().convertToDouble() <= 0.0)
    return emitOpError("epsilon must be positive");
  return success();
}

LogicalResult BitLinearOp::verify() {
  auto input = requireRank(*this, getInput(), "input", 3);
  if (failed(input))
    return failure();
  bool ternary = isa<TernaryType>(getWeight().getType());
  if (getWeightQuant() == WeightQuant::online && ternary)
    return emitOpError("weight_quant online needs f32 master weights, but the "
                       "weight is already ternary");
  if (getWeightQuant() == WeightQuant::offline && !ternary)
    return emitOpError("weight_quant offline needs a !loom.ternary weight");
  if (!ternary) {
    auto weightType = cast<RankedTensorType>(getWeight().getType());
    if (weightType.getRank() != 2)
      return emitOpError("weight must be a [out, in] matrix");
  }
  ArrayRef<int64_t> weight = weightShape(getWeight());
  if (failed(requireDim(*this, "input features", (*input)[2], weight[1],
                        "the weight's input dimension")))
    return failure();
  if (Value scale = getOutputScale()) {
    auto scaleType = cast<RankedTensorType>(scale.getType());
    if (scaleType.getRank() != 0)
      return emitOpError("output_scale must be a 0-d tensor");
  }
  return verifyActivationResult(*this, *input, weight[0]);
}

LogicalResult LoRAOp::verify() {
  auto base = requireRank(*this, getBase(), "base", 3);
  auto input = requireRank(*this, getInput(), "input", 3);
  auto a = requireRank(*this, getLoraA(), "lora_a", 2);
  auto b = requireRank(*this, getLoraB(), "lora_b", 2);
  if (failed(base) || failed(input) || failed(a) || failed(b))
    return failure();
  if (getRank() <= 0)
    return emitOpError("rank must be positive");
  if (getDropout().convertToDouble() < 0.0 ||
      getDropout().convertToDouble() >= 1.0)
    return emitOpError("dropout must be in [0, 1)");
  if (failed(requireDim(*this, "lora_a rows", (*a)[0], getRank(), "rank")) ||
      failed(requireDim(*this, "lora_a columns", (*a)[1], (*input)[2],
                        "the input features")) ||
      failed(requireDim(*this, "lora_b columns", (*b)[1], getRank(), "rank")) ||
      failed(requireDim(*this, "lora_b rows", (*b)[0], (*base)[2],
                        "the adapted layer's output features")) ||
      failed(requireDim(*this, "base batch", (*base)[0], (*input)[0],
                        "input batch")) ||
      failed(requireDim(*this, "base tokens", (*base)[1], (*input)[1],
                        "input tokens")))
    return failure();
  if (getResult().getType() != getBase().getType())
    return emitOpError("result type must equal the base type");
  return success();
}

LogicalResult RoPEOp::verify() {
  auto input = requireRank(*this, getInput(), "input", 3);
  auto positions = requireRank(*this, getPositions(), "positions", 2);
  if (failed(input) || failed(positions))
    return failure();
  int64_t headDim = getHeadDim();
  if (headDim <= 0 || headDim % 2 != 0)
    return emitOpError("head_dim must be positive and even, got ") << headDim;
  if (!ShapedType::isDynamic((*input)[2]) && (*input)[2] % headDim != 0)
    return emitOpError("input features ")
           << (*input)[2] << " are not a whole number of heads of " << headDim;
  if (failed(requireDim(*this, "positions batch", (*positions)[0], (*input)[0],
                        "input batch")) ||
      failed(requireDim(*this, "positions length", (*positions)[1], (*input)[1],
                        "input tokens")))
    return failure();
  if (getTheta().convertToDouble() <= 0.0)
    return emitOpError("theta must be positive");
  if (getResult().getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  return success();
}

LogicalResult AttentionOp::verify() {
  auto q = requireRank(*this, getQuery(), "query", 3);
  auto k = requireRank(*this, getKey(), "key", 3);
  auto v = requireRank(*this, getValue(), "value", 3);
  if (failed(q) || failed(k) || failed(v))
    return failure();
  int64_t heads = getNumHeads(), kvHeads = getNumKvHeads(),
          headDim = getHeadDim();
  if (heads <= 0 || kvHeads <= 0 || headDim <= 0)
    return emitOpError("num_heads, num_kv_heads and head_dim must be positive");
  if (heads % kvHeads != 0)
    return emitOpError("num_heads (")
           << heads << ") must be a multiple of num_kv_heads (" << kvHeads
           << ")";
  if (failed(requireDim(*this, "query features", (*q)[2], heads * headDim,
                        "num_heads * head_dim")) ||
      failed(requireDim(*this, "key features", (*k)[2], kvHeads * headDim,
                        "num_kv_heads * head_dim")) ||
      failed(requireDim(*this, "value features", (*v)[2], kvHeads * headDim,
                        "num_kv_heads * head_dim")) ||
      failed(requireDim(*this, "key batch", (*k)[0], (*q)[0], "query batch")) ||
      failed(
          requireDim(*this, "value batch", (*v)[0], (*q)[0], "query batch")) ||
      failed(requireDim(*this, "value tokens", (*v)[1], (*k)[1], "key tokens")))
    return failure();
  if (getResult().getType() != getQuery().getType())
    return emitOpError("result type must equal the query type");
  return success();
}

LogicalResult CachedAttentionOp::verify() {
  auto q = requireRank(*this, getQuery(), "query", 3);
  auto k = requireRank(*this, getKey(), "key", 3);
  auto kc = requireRank(*this, getKeyCache(), "key_cache", 3);
  auto vc = requireRank(*this, getValueCache(), "value_cache", 3);
  auto pos = requireRank(*this, getPositions(), "positions", 2);
  if (failed(q) || failed(k) || failed(kc) || failed(vc) || failed(pos))
    return failure();
  int64_t heads = getNumHeads(), kvHeads = getNumKvHeads(),
          headDim = getHeadDim();
  if (heads <= 0 || kvHeads <= 0 || headDim <= 0 || heads % kvHeads != 0)
    return emitOpError("num_heads must be a positive multiple of num_kv_heads");
  if (failed(requireDim(*this, "query features", (*q)[2], heads * headDim,
                        "num_heads * head_dim")) ||
      failed(requireDim(*this, "key features", (*k)[2], kvHeads * headDim,
                        "num_kv_heads * head_dim")) ||
      failed(requireDim(*this, "key_cache features", (*kc)[2],
                        kvHeads * headDim, "num_kv_heads * head_dim")) ||
      failed(
          requireDim(*this, "key tokens", (*k)[1], (*q)[1], "query tokens")) ||
      failed(requireDim(*this, "positions length", (*pos)[1], (*q)[1],
                        "query tokens")))
    return failure();
  if (getKeyCache().getType() != getValueCache().getType() ||
      getNewKeyCache().getType() != getKeyCache().getType() ||
      getNewValueCache().getType() != getValueCache().getType())
    return emitOpError("caches and updated caches must share one type");
  if (getKey().getType() != getValue().getType())
    return emitOpError("key and value must share one type");
  return success();
}

LogicalResult MatmulOp::verify() {
  auto input = requireRank(*this, getInput(), "input", 3);
  auto weight = requireRank(*this, getWeight(), "weight", 2);
  if (failed(input) || failed(weight))
    return failure();
  if (failed(requireDim(*this, "input features", (*input)[2], (*weight)[1],
                        "the weight's columns")))
    return failure();
  return verifyActivationResult(*this, *input, (*weight)[0]);
}

LogicalResult CrossEntropyOp::verify() {
  auto logits = requireRank(*this, getLogits(), "logits", 3);
  auto labels = requireRank(*this, getLabels(), "labels", 2);
  auto mask = requireRank(*this, getLossMask(), "loss_mask", 2);
  if (failed(logits) || failed(labels) || failed(mask))
    return failure();
  for (int i = 0; i < 2; ++i) {
    StringRef dim = i == 0 ? "batch" : "tokens";
    if (failed(requireDim(*this, (Twine("labels ") + dim).str(), (*labels)[i],
                          (*logits)[i], (Twine("logits ") + dim).str())) ||
        failed(requireDim(*this, (Twine("loss_mask ") + dim).str(), (*mask)[i],
                          (*logits)[i], (Twine("logits ") + dim).str())))
      return failure();
  }
  return success();
}

LogicalResult LinearCrossEntropyOp::verify() {
  auto input = requireRank(*this, getInput(), "input", 3);
  auto weight = requireRank(*this, getWeight(), "weight", 2);
  auto labels = requireRank(*this, getLabels(), "labels", 2);
  auto mask = requireRank(*this, getLossMask(), "loss_mask", 2);
  if (failed(input) || failed(weight) || failed(labels) || failed(mask))
    return failure();
  if (failed(requireDim(*this, "input features", (*input)[2], (*weight)[1],
                        "the weight's columns")))
    return failure();
  for (int i = 0; i < 2; ++i) {
    StringRef dim = i == 0 ? "batch" : "tokens";
    if (failed(requireDim(*this, (Twine("labels ") + dim).str(), (*labels)[i],
                          (*input)[i], (Twine("input ") + dim).str())) ||
        failed(requireDim(*this, (Twine("loss_mask ") + dim).str(), (*mask)[i],
                          (*input)[i], (Twine("input ") + dim).str())))
      return failure();
  }
  if (getBlockRows() <= 0)
    return emitOpError("block_rows must be positive, got ") << getBlockRows();
  // The input gradient exists exactly when there is a loss gradient.
  if (bool(getLossGrad()) != bool(getInputGrad()))
    return emitOpError("has an input_grad result if and only if it has a "
                       "loss_grad operand");
  if (getInputGrad() && getInputGrad().getType() != getInput().getType())
    return emitOpError("input_grad must have the input's type");
  return success();
}

#define GET_OP_CLASSES
#include "dialects/loom/LoomOps.cpp.inc"

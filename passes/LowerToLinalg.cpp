//===- LowerToLinalg.cpp - loom ops to linalg on tensors ------------------===//
//
// The first step of native code generation: every loom op becomes upstream
// ops on tensors (linalg.generic, linalg.fill, tensor, arith, math), which
// one-shot bufferization and the standard LLVM lowering then take to machine
// code (codegen/cpu/Pipeline.cpp).
//
// Numerics are those of codegen/reference/Kernels.h, op for op:
//  * every dot product and sum accumulates in f64 and rounds to f32 once
//    (the reference's `Acc = double`), so results do not depend on the loop
//    order that later tiling picks;
//  * quantizer scales are reciprocal-then-multiply, rounding is half to even
//    (math.roundeven), as PyTorch computes them;
//  * scalar hyper-parameters are converted to f32 where PyTorch does.
//
// Activations are handled as [rows, features] matrices: every op collapses
// its [batch, tokens, features] operands (a view after bufferization) and
// expands its result back.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"

#include <limits>

namespace bitloom {
#define GEN_PASS_DEF_LOOMLOWERTOLINALG
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;
using namespace bitloom::loom;

namespace {

constexpr utils::IteratorType P = utils::IteratorType::parallel;
constexpr utils::IteratorType R = utils::IteratorType::reduction;

/// Scalar arithmetic inside a linalg.generic body (or at function level).
struct Scalar {
  OpBuilder &b;
  Location loc;

  Value f32(double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }
  Value f64(double v) {
    return arith::ConstantOp::create(b, loc, b.getF64FloatAttr(v));
  }
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  Value neg(Value x) { return arith::NegFOp::create(b, loc, x); }
  /// std::max / std::min of the reference (NaN-propagating here).
  Value max(Value x, Value y) {
    return arith::MaximumFOp::create(b, loc, x, y);
  }
  Value min(Value x, Value y) {
    return arith::MinimumFOp::create(b, loc, x, y);
  }
  Value clamp(Value x, double lo, double hi) {
    return min(max(x, f32(lo)), f32(hi));
  }
  Value ext(Value x) {
    return x.getType().isF64()
               ? x
               : Value(arith::ExtFOp::create(b, loc, b.getF64Type(), x));
  }
  Value trunc(Value x) {
    return arith::TruncFOp::create(b, loc, b.getF32Type(), x);
  }
  Value cmp(arith::CmpFPredicate p, Value x, Value y) {
    return arith::CmpFOp::create(b, loc, p, x, y);
  }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value index(unsigned dim) { return linalg::IndexOp::create(b, loc, dim); }
  Value toIndex(Value i32) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), i32);
  }
  Value exp(Value x) { return math::ExpOp::create(b, loc, x); }
  Value log(Value x) { return math::LogOp::create(b, loc, x); }
  Value sqrt(Value x) { return math::SqrtOp::create(b, loc, x); }
  Value abs(Value x) { return math::AbsFOp::create(b, loc, x); }
  Value roundEven(Value x) { return math::RoundEvenOp::create(b, loc, x); }
};

/// With `ukernels`, the products that carry the FLOPs become calls into the
/// runtime's micro-kernels (runtime/ukernels/Ukernels.h), made on tensors
/// through bufferization.to_buffer / to_tensor so one-shot bufferization
/// places every buffer. Frozen bitlinear weights arrive packed ("i2x128",
/// 2 bits per weight) with their per-tensor multiplier as a 0-d argument;
/// frozen bf16 embeddings / LM heads (bf16-params) arrive as bf16 and their
/// products call bitloom_uk_matmul_f32_bf16b.
struct UkernelContext {
  /// Operands are memrefs, not pointers (ukernel-memrefs).
  bool memrefs = false;
  /// Packed weight argument -> its multiplier argument.
  llvm::DenseMap<Value, Value> multiplierOf;
  /// External functions the calls need, declared once per module.
  llvm::StringMap<FunctionType> declarations;
};

/// Bytes of one packed "i2x128" row of `k` ternary weights (the ukernels'
/// bitloom_uk_packed_row_bytes).
int64_t packedRowBytes(int64_t k) { return (k + 127) / 128 * 32; }

/// Builds the upstream form of one loom op at a time.
class Lowering {
public:
  explicit Lowering(OpBuilder &builder, Location loc, UkernelContext *uk)
      : b(builder), loc(loc), s{builder, loc}, uk(uk) {}

  FailureOr<SmallVector<Value>> lower(Operation *op);

private:
  OpBuilder &b;
  Location loc;
  Scalar s;
  UkernelContext *uk;

  using Body = function_ref<SmallVector<Value>(Scalar &, ValueRange)>;

  MLIRContext *ctx() { return b.getContext(); }
  Type f32() { return b.getF32Type(); }
  Type f64() { return b.getF64Type(); }

  static ArrayRef<int64_t> shapeOf(Value v) {
    return cast<RankedTensorType>(v.getType()).getShape();
  }

  /// The projection (d0, ..., d{n-1}) -> (d{dims[0]}, ...).
  AffineMap map(unsigned n, ArrayRef<unsigned> dims) {
    SmallVector<AffineExpr> exprs;
    for (unsigned d : dims)
      exprs.push_back(getAffineDimExpr(d, ctx()));
    return AffineMap::get(n, 0, exprs, ctx());
  }
  AffineMap identity(unsigned n) {
    return AffineMap::getMultiDimIdentityMap(n, ctx());
  }

  Value empty(ArrayRef<int64_t> shape, Type elt) {
    return tensor::EmptyOp::create(b, loc, shape, elt);
  }
  Value filled(ArrayRef<int64_t> shape, Type elt, double value) {
    Value v = elt.isF64() ? s.f64(value) : s.f32(value);
    return linalg::FillOp::create(b, loc, v, empty(shape, elt)).getResult(0);
  }

  SmallVector<Value> generic(ValueRange ins, ValueRange outs,
                             ArrayRef<AffineMap> maps,
                             ArrayRef<utils::IteratorType> iters, Body body) {
    auto op = linalg::GenericOp::create(
        b, loc, outs.getTypes(), ins, outs, maps, iters,
        [&](OpBuilder &nb, Location nl, ValueRange args) {
          Scalar inner{nb, nl};
          linalg::YieldOp::create(nb, nl, body(inner, args));
        });
    return SmallVector<Value>(op.getResults());
  }

  /// An elementwise map over operands of one shape. With `inPlace`, the
  /// result is written over an operand this op is the only reader of (not a
  /// function argument), so bufferization reuses its buffer instead of
  /// allocating another: a residual add or a gradient sum costs no memory.
  Value elementwise(ValueRange ins, Type elt, Body body, bool inPlace = false) {
    ArrayRef<int64_t> shape = shapeOf(ins.front());
    unsigned n = shape.size();
    SmallVector<AffineMap> maps(ins.size() + 1, identity(n));
    SmallVector<utils::IteratorType> iters(n, P);
    Value init;
    auto resultType = RankedTensorType::get(shape, elt);
    for (Value v : ins)
      if (inPlace && !init && !isa<BlockArgument>(v) && v.hasOneUse() &&
          v.getType() == resultType)
        init = v;
    return generic(ins, init ? init : empty(shape, elt), maps, iters, body)[0];
  }

  /// out[mo] = Σ a[ma] · b[mb] over the reduction loops, accumulated in f64;
  /// rounded to f32 unless `keepF64`.
  Value contract(Value lhs, AffineMap ma, Value rhs, AffineMap mb,
                 ArrayRef<int64_t> outShape, AffineMap mo,
                 ArrayRef<utils::IteratorType> iters, bool keepF64 = false) {
    Value acc =
        generic({lhs, rhs}, filled(outShape, f64(), 0.0), {ma, mb, mo}, iters,
                [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                  return {e.add(a[2], e.mul(e.ext(a[0]), e.ext(a[1])))};
                })[0];
    return keepF64 ? acc : toF32(acc);
  }

  /// op(a) · op(b) for matrices: op(a) is a [m, k] or, with `transA`, aᵀ of
  /// a [k, m]; op(b) is b [k, n] or, with `transB`, bᵀ of b [n, k]. A
  /// micro-kernel call (f32 accumulation) with ukernels, else `contract`.
  /// b may be a bf16 weight (widened exactly either way).
  Value gemm(Value a, Value bm, bool transA, bool transB) {
    ArrayRef<int64_t> as = shapeOf(a), bs = shapeOf(bm);
    int64_t m = transA ? as[1] : as[0], k = transA ? as[0] : as[1];
    int64_t n = transB ? bs[0] : bs[1];
    if (uk) {
      Value out;
      Value outPtr = newBuffer({m, n}, f32(), out);
      bool bf16 =
          cast<RankedTensorType>(bm.getType()).getElementType().isBF16();
      callUkernel(bf16 ? "bitloom_uk_matmul_f32_bf16b"
                       : "bitloom_uk_matmul_f32",
                  {pointerTo(a), pointerTo(bm), outPtr, i64(m), i64(n), i64(k),
                   i32(transA), i32(transB), i32(0)});
      return finish(out);
    }
    // Loops (m, n, k).
    return contract(a, transA ? map(3, {2, 0}) : map(3, {0, 2}), bm,
                    transB ? map(3, {1, 2}) : map(3, {2, 1}), {m, n},
                    map(3, {0, 1}), {P, P, R});
  }

  Value i64(int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
  }
  Value i32(int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v));
  }
  Type ptrType() { return LLVM::LLVMPointerType::get(ctx()); }
  /// Memref calls leave absent operands out (a null Value).
  Value nullPointer() {
    if (uk && uk->memrefs)
      return Value();
    return LLVM::ZeroOp::create(b, loc, ptrType());
  }
  MemRefType bufferType(Value tensor) {
    auto t = cast<RankedTensorType>(tensor.getType());
    return MemRefType::get(t.getShape(), t.getElementType());
  }
  /// The address of a buffer's first element.
  Value bufferAddress(Value memref) {
    // One declaration serves every call: static shapes are cast away (the
    // sizes are operands anyway) and recovered through the cast.
    if (uk && uk->memrefs) {
      auto type = cast<MemRefType>(memref.getType());
      SmallVector<int64_t> dynamic(type.getRank(), ShapedType::kDynamic);
      return memref::CastOp::create(
          b, loc, MemRefType::get(dynamic, type.getElementType()), memref);
    }
    auto meta = memref::ExtractStridedMetadataOp::create(b, loc, memref);
    Value base = memref::ExtractAlignedPointerAsIndexOp::create(
        b, loc, meta.getBaseBuffer());
    auto type = cast<MemRefType>(memref.getType());
    int64_t bytes = type.getElementTypeBitWidth() / 8;
    Value offset =
        arith::MulIOp::create(b, loc, meta.getOffset(), s.idx(bytes));
    Value address = arith::AddIOp::create(b, loc, base, offset);
    Value asI64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), address);
    return LLVM::IntToPtrOp::create(b, loc, ptrType(), asI64);
  }
  /// A read-only view of a tensor's buffer for a micro-kernel.
  Value pointerTo(Value tensor) {
    Value memref = bufferization::ToBufferOp::create(
        b, loc, bufferType(tensor), tensor, /*read_only=*/true);
    return bufferAddress(memref);
  }
  /// A fresh buffer a micro-kernel writes; `finish` turns it into the
  /// result tensor after the call.
  Value newBuffer(ArrayRef<int64_t> shape, Type elt, Value &memref) {
    memref = memref::AllocOp::create(b, loc, MemRefType::get(shape, elt),
                                     b.getI64IntegerAttr(64));
    return bufferAddress(memref);
  }
  Value finish(Value memref) {
    auto type = cast<MemRefType>(memref.getType());
    return bufferization::ToTensorOp::create(
        b, loc, RankedTensorType::get(type.getShape(), type.getElementType()),
        memref, /*restrict=*/true, /*writable=*/true);
  }
  void callUkernel(StringRef name, ArrayRef<Value> operands) {
    SmallVector<Value> present;
    SmallVector<Type> types;
    for (Value v : operands)
      if (v) {
        present.push_back(v);
        types.push_back(v.getType());
      }
    uk->declarations[name] = FunctionType::get(ctx(), types, {});
    func::CallOp::create(b, loc, name, TypeRange{}, present);
  }
  SmallVector<Value> attentionShape(Value q, Value k, int64_t heads,
                                    int64_t kvHeads, int64_t headDim,
                                    double scale, bool causal);
  bool isPacked(Value weight) { return uk && uk->multiplierOf.count(weight); }
  Value quantizeActivationsToInt8(Value x, Value &actScale);

  Value toF32(Value v) {
    return elementwise(v, f32(),
                       [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                         return {e.trunc(a[0])};
                       });
  }

  /// [d0, ..., dk, C] -> [d0·...·dk, C] and back.
  Value rows(Value v) {
    ArrayRef<int64_t> shape = shapeOf(v);
    if (shape.size() <= 2)
      return v;
    ReassociationIndices lead;
    for (unsigned d = 0; d + 1 < shape.size(); ++d)
      lead.push_back(d);
    return tensor::CollapseShapeOp::create(
        b, loc, v,
        ArrayRef<ReassociationIndices>{
            lead, ReassociationIndices{int64_t(shape.size() - 1)}});
  }
  Value unrows(Value v, Type type) {
    auto tensor = cast<RankedTensorType>(type);
    if (tensor.getRank() <= 2)
      return v;
    ReassociationIndices lead;
    for (unsigned d = 0; d + 1 < tensor.getRank(); ++d)
      lead.push_back(d);
    return tensor::ExpandShapeOp::create(
        b, loc, type, v,
        ArrayRef<ReassociationIndices>{
            lead, ReassociationIndices{tensor.getRank() - 1}});
  }
  /// [B, T, H·D] viewed per head, `heads` giving the trailing dims:
  /// {KVH, G, D} for queries (query head kvh·G + g meets kv head kvh through
  /// plain projections) or {KVH, D} for keys and values.
  Value splitHeads(Value x, ArrayRef<int64_t> heads) {
    ArrayRef<int64_t> outer = shapeOf(x).take_front(2);
    SmallVector<int64_t> shape(outer.begin(), outer.end());
    shape.append(heads.begin(), heads.end());
    return tensor::ExpandShapeOp::create(b, loc,
                                         RankedTensorType::get(shape, f32()), x,
                                         headReassociation(shape.size()));
  }
  /// The inverse of splitHeads, back to `type`.
  Value mergeHeads(Value x, Type type) {
    return tensor::CollapseShapeOp::create(
        b, loc, type, x, headReassociation(shapeOf(x).size()));
  }
  static SmallVector<ReassociationIndices> headReassociation(unsigned rank) {
    ReassociationIndices heads;
    for (unsigned d = 2; d < rank; ++d)
      heads.push_back(d);
    return {{0}, {1}, heads};
  }

  /// Every dimension into one (token ids, masks).
  Value flat(Value v) {
    ArrayRef<int64_t> shape = shapeOf(v);
    if (shape.size() <= 1)
      return v;
    ReassociationIndices all;
    for (unsigned d = 0; d < shape.size(); ++d)
      all.push_back(d);
    return tensor::CollapseShapeOp::create(b, loc, v,
                                           ArrayRef<ReassociationIndices>{all});
  }
  Value extractScalar(Value zeroD) {
    return tensor::ExtractOp::create(b, loc, zeroD, ValueRange{});
  }

  // Kernels.h building blocks.
  Value rmsInv(Value x, double eps);
  Value quantizeActivations(Value x);
  Value quantizeWeight(Value w);
  Value scaleBy(Value x, Value zeroDScale);
  Value rowMax(Value x);
  Value rowSumExp(Value x, Value max);
  Value softmax5(Value scores);
  Value attentionProbs(Value q5, Value k4, int64_t kvHeads, int64_t group,
                       double scale, bool causal);

  // Ops.
  Value embedding(EmbeddingOp op);
  Value embeddingGrad(EmbeddingGradOp op);
  Value rmsNorm(RMSNormOp op);
  Value rmsNormGradInput(RMSNormGradInputOp op);
  Value rmsNormGradWeight(RMSNormGradWeightOp op);
  Value bitlinear(BitLinearOp op);
  Value bitlinearGradInput(BitLinearGradInputOp op);
  Value bitlinearGradWeight(BitLinearGradWeightOp op);
  Value lora(LoRAOp op);
  Value loraGradInput(LoRAGradInputOp op);
  SmallVector<Value> loraGradParams(LoRAGradParamsOp op);
  Value rope(RoPEOp op);
  Value attention(AttentionOp op);
  Value cacheWrite(Value cache, Value rows, ArrayRef<Value> cacheRows);
  SmallVector<Value> cachedAttention(CachedAttentionOp op);
  SmallVector<Value> attentionGrad(AttentionGradOp op);
  Value matmul(MatmulOp op);
  Value matmulGradInput(MatmulGradInputOp op);
  Value matmulGradWeight(MatmulGradWeightOp op);
  Value crossEntropy(CrossEntropyOp op);
  Value crossEntropyGrad(CrossEntropyGradOp op);
  SmallVector<Value> linearCrossEntropy(LinearCrossEntropyOp op);
  Value tokenCount(TokenCountOp op);
  Value globalNorm(GlobalNormOp op);
  Value clipByNorm(ClipByNormOp op);
  Value accumulate(AccumulateOp op);
  SmallVector<Value> adamw(AdamWOp op);
  SmallVector<Value> sgd(SGDOp op);
};

//===----------------------------------------------------------------------===//
// Building blocks
//===----------------------------------------------------------------------===//

/// rsqrt(mean(x²) + eps) per row, in HF's order: x·x in f32, Σ in f64,
/// mean as f32(Σ) / C, then 1 / sqrt.
Value Lowering::rmsInv(Value x, double eps) {
  ArrayRef<int64_t> shape = shapeOf(x);
  int64_t n = shape[0], c = shape[1];
  Value sum =
      generic(x, filled({n}, f64(), 0.0), {identity(2), map(2, {0})}, {P, R},
              [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                return {e.add(a[1], e.ext(e.mul(a[0], a[0])))};
              })[0];
  return generic(sum, empty({n}, f32()), {identity(1), identity(1)}, {P},
                 [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
                   Value variance = e.div(e.trunc(a[0]), e.f32(double(c)));
                   return {
                       e.div(e.f32(1.0), e.sqrt(e.add(variance, e.f32(eps))))};
                 })[0];
}

/// HF ActQuant per row: s = (1 / max(max|x|, 1e-5)) · 127,
/// x_q = clamp(round(x·s), -128, 127) / s.
Value Lowering::quantizeActivations(Value x) {
  ArrayRef<int64_t> shape = shapeOf(x);
  Value maxAbs =
      generic(x, filled({shape[0]}, f32(), 0.0), {identity(2), map(2, {0})},
              {P, R}, [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                return {e.max(a[1], e.abs(a[0]))};
              })[0];
  return generic(
      {x, maxAbs}, empty(shape, f32()), {identity(2), map(2, {0}), identity(2)},
      {P, P}, [](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value m = e.max(a[1], e.f32(1e-5));
        Value scale = e.mul(e.div(e.f32(1.0), m), e.f32(127.0));
        Value q = e.clamp(e.roundEven(e.mul(a[0], scale)), -128.0, 127.0);
        return {e.div(q, scale)};
      })[0];
}

/// HF WeightQuant on the whole matrix: s = 1 / max(mean|W|, 1e-5),
/// W_q = clamp(round(W·s), -1, 1) / s.
Value Lowering::quantizeWeight(Value w) {
  ArrayRef<int64_t> shape = shapeOf(w);
  int64_t count = shape[0] * shape[1];
  Value sum =
      generic(w, filled({}, f64(), 0.0), {identity(2), map(2, {})}, {R, R},
              [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                return {e.add(a[1], e.ext(e.abs(a[0])))};
              })[0];
  return generic(
      {w, sum}, empty(shape, f32()), {identity(2), map(2, {}), identity(2)},
      {P, P}, [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value mean = e.div(e.trunc(a[1]), e.f32(double(count)));
        mean = e.max(mean, e.f32(1e-5));
        Value scale = e.div(e.f32(1.0), mean);
        Value q = e.clamp(e.roundEven(e.mul(a[0], scale)), -1.0, 1.0);
        return {e.div(q, scale)};
      })[0];
}

/// x · scale for a 0-d scale tensor, or x when there is none.
Value Lowering::scaleBy(Value x, Value zeroDScale) {
  if (!zeroDScale)
    return x;
  Value scale = extractScalar(zeroDScale);
  return elementwise(x, f32(),
                     [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
                       return {e.mul(a[0], scale)};
                     });
}

/// Row maximum of x[N, V] (-inf for an empty row).
Value Lowering::rowMax(Value x) {
  int64_t n = shapeOf(x)[0];
  return generic(x,
                 filled({n}, f32(), -std::numeric_limits<double>::infinity()),
                 {identity(2), map(2, {0})}, {P, R},
                 [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                   return {e.max(a[1], a[0])};
                 })[0];
}

/// Σ_c exp(x[n, c] - max[n]) in f64.
Value Lowering::rowSumExp(Value x, Value max) {
  int64_t n = shapeOf(x)[0];
  return generic({x, max}, filled({n}, f64(), 0.0),
                 {identity(2), map(2, {0}), map(2, {0})}, {P, R},
                 [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                   return {e.add(a[2], e.ext(e.exp(e.sub(a[0], a[1]))))};
                 })[0];
}

/// The causal softmax of attention, P[b, kvh, g, t, s] for query head
/// kvh·group + g; q5 is [B, T, KVH, G, D], k4 [B, S, KVH, D].
Value Lowering::attentionProbs(Value q5, Value k4, int64_t kvHeads,
                               int64_t group, double scale, bool causal) {
  ArrayRef<int64_t> qs = shapeOf(q5), ks = shapeOf(k4);
  int64_t batch = qs[0], qLen = qs[1], kvLen = ks[1];
  SmallVector<int64_t> pShape = {batch, kvHeads, group, qLen, kvLen};
  // Loops (b, kvh, g, t, s, d).
  Value dots = contract(q5, map(6, {0, 3, 1, 2, 5}), k4, map(6, {0, 4, 1, 5}),
                        pShape, map(6, {0, 1, 2, 3, 4}), {P, P, P, P, P, R});
  // score = f32(q·k) · scale; keys after the query's position are masked.
  int64_t offset = kvLen - qLen;
  Value scores = generic(
      dots, empty(pShape, f32()), {identity(5), identity(5)}, {P, P, P, P, P},
      [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value v = e.mul(a[0], e.f32(scale));
        if (!causal)
          return {v};
        Value t = e.index(3), sIdx = e.index(4);
        Value limit = arith::AddIOp::create(e.b, e.loc, t, e.idx(offset));
        Value hidden = arith::CmpIOp::create(
            e.b, e.loc, arith::CmpIPredicate::sgt, sIdx, limit);
        return {e.select(hidden,
                         e.f32(-std::numeric_limits<double>::infinity()), v)};
      })[0];
  // Softmax over s: exp(x - max) · (1 / Σ), PyTorch's CPU order.
  return softmax5(scores);
}

/// Softmax over the last of five dims: exp(x - max) · (1 / Σ) with the sum
/// in f64, PyTorch's CPU order.
Value Lowering::softmax5(Value scores) {
  ArrayRef<int64_t> pShape = shapeOf(scores);
  SmallVector<int64_t> rowShape(pShape.drop_back());
  AffineMap rowMap = map(5, {0, 1, 2, 3});
  Value max = generic(
      scores, filled(rowShape, f32(), -std::numeric_limits<double>::infinity()),
      {identity(5), rowMap}, {P, P, P, P, R},
      [](Scalar &e, ValueRange a) -> SmallVector<Value> {
        return {e.max(a[1], a[0])};
      })[0];
  Value exps = generic({scores, max}, empty(pShape, f32()),
                       {identity(5), rowMap, identity(5)}, {P, P, P, P, P},
                       [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                         return {e.exp(e.sub(a[0], a[1]))};
                       })[0];
  Value sum = generic(exps, filled(rowShape, f64(), 0.0), {identity(5), rowMap},
                      {P, P, P, P, R},
                      [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                        return {e.add(a[1], e.ext(a[0]))};
                      })[0];
  return generic({exps, sum}, empty(pShape, f32()),
                 {identity(5), rowMap, identity(5)}, {P, P, P, P, P},
                 [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                   Value inv = e.div(e.f32(1.0), e.trunc(a[1]));
                   return {e.mul(a[0], inv)};
                 })[0];
}

//===----------------------------------------------------------------------===//
// Forward ops
//===----------------------------------------------------------------------===//

Value Lowering::embedding(EmbeddingOp op) {
  Value table = op.getTable(), ids = flat(op.getTokens());
  int64_t n = shapeOf(ids)[0], h = shapeOf(table)[1];
  // A gather: out[n, h] = table[tokens[n], h]. Ids are not range-checked.
  // A bf16 table (bf16-params) is widened exactly.
  Value out =
      generic(ids, empty({n, h}, f32()), {map(2, {0}), identity(2)}, {P, P},
              [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
                Value row = e.toIndex(a[0]);
                Value v = tensor::ExtractOp::create(
                    e.b, e.loc, table, ValueRange{row, e.index(1)});
                if (!v.getType().isF32())
                  v = arith::ExtFOp::create(e.b, e.loc, e.b.getF32Type(), v);
                return {v};
              })[0];
  return unrows(out, op.getType());
}

Value Lowering::rmsNorm(RMSNormOp op) {
  Value x = rows(op.getInput()), w = op.getWeight();
  Value r = rmsInv(x, op.getEpsilon().convertToDouble());
  Value y = generic({x, w, r}, empty(shapeOf(x), f32()),
                    {identity(2), map(2, {1}), map(2, {0}), identity(2)},
                    {P, P}, [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                      return {e.mul(a[1], e.mul(a[0], a[2]))};
                    })[0];
  return unrows(y, op.getType());
}

/// HF ActQuant as int8 codes for the micro-kernels: per row
/// s = (1 / max(max|x|, 1e-5)) · 127 (returned in `actScale`) and
/// q = clamp(round(x·s), -128, 127).
Value Lowering::quantizeActivationsToInt8(Value x, Value &actScale) {
  ArrayRef<int64_t> shape = shapeOf(x);
  Value maxAbs =
      generic(x, filled({shape[0]}, f32(), 0.0), {identity(2), map(2, {0})},
              {P, R}, [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                return {e.max(a[1], e.abs(a[0]))};
              })[0];
  actScale = elementwise(maxAbs, f32(),
                         [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                           Value m = e.max(a[0], e.f32(1e-5));
                           return {e.mul(e.div(e.f32(1.0), m), e.f32(127.0))};
                         });
  return generic(
      {x, actScale}, empty(shape, b.getI8Type()),
      {identity(2), map(2, {0}), identity(2)}, {P, P},
      [](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value q = e.clamp(e.roundEven(e.mul(a[0], a[1])), -128.0, 127.0);
        return {arith::FPToSIOp::create(e.b, e.loc, e.b.getI8Type(), q)};
      })[0];
}

Value Lowering::bitlinear(BitLinearOp op) {
  if (isPacked(op.getWeight())) {
    // y = Σ q·t (exact int32) · multiplier / s per row.
    Value x = rows(op.getInput()), w = op.getWeight(), actScale;
    Value xq = quantizeActivationsToInt8(x, actScale);
    Value multiplier = extractScalar(uk->multiplierOf.lookup(w));
    Value rowFactor = elementwise(
        actScale, f32(), [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
          return {e.div(multiplier, a[0])};
        });
    int64_t n = shapeOf(x)[0], i = shapeOf(x)[1],
            o = cast<RankedTensorType>(op.getType()).getShape().back();
    Value out;
    Value outPtr = newBuffer({n, o}, f32(), out);
    callUkernel("bitloom_uk_ternary_matmul",
                {pointerTo(xq), pointerTo(w), pointerTo(rowFactor), outPtr,
                 i64(n), i64(o), i64(i)});
    return unrows(scaleBy(finish(out), op.getOutputScale()), op.getType());
  }
  Value x = quantizeActivations(rows(op.getInput()));
  Value w = op.getWeightQuant() == WeightQuant::online
                ? quantizeWeight(op.getWeight())
                : op.getWeight(); // dequantized ternary: already W_t · s
  int64_t n = shapeOf(x)[0], o = shapeOf(w)[0];
  // Loops (n, o, i): F.linear with the transposed weight.
  Value y = contract(x, map(3, {0, 2}), w, map(3, {1, 2}), {n, o},
                     map(3, {0, 1}), {P, P, R});
  return unrows(scaleBy(y, op.getOutputScale()), op.getType());
}

Value Lowering::lora(LoRAOp op) {
  Value base = rows(op.getBase()), x = rows(op.getInput());
  Value a = op.getLoraA(), bm = op.getLoraB();
  int64_t n = shapeOf(x)[0], o = shapeOf(bm)[0];
  Value u = gemm(x, a, false, true);
  Value v = gemm(u, bm, false, true);
  double scaling = op.getScaling();
  Value y = generic({base, v}, empty({n, o}, f32()),
                    {identity(2), identity(2), identity(2)}, {P, P},
                    [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
                      return {e.add(a[0], e.mul(a[1], e.f32(scaling)))};
                    })[0];
  return unrows(y, op.getType());
}

/// x·cos + rotate_half(x)·sin per head, the angle of feature i and i + D/2
/// being position · theta^(-2i/D) computed in f32 as HF does. The cos/sin
/// table is built once per token ([B, T, D/2]) and shared by all heads.
Value Lowering::rope(RoPEOp op) {
  Value x = op.getInput(), positions = op.getPositions();
  ArrayRef<int64_t> shape = shapeOf(x);
  int64_t headDim = op.getHeadDim(), half = headDim / 2;
  double theta = op.getTheta().convertToDouble();
  bool inverse = op.getInverse();
  SmallVector<int64_t> tableShape = {shape[0], shape[1], half};
  SmallVector<Value> table = generic(
      positions, {empty(tableShape, f32()), empty(tableShape, f32())},
      {map(3, {0, 1}), identity(3), identity(3)}, {P, P, P},
      [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        OpBuilder &nb = e.b;
        Value twoI = arith::IndexCastOp::create(
            nb, e.loc, nb.getI64Type(),
            arith::MulIOp::create(nb, e.loc, e.index(2), e.idx(2)));
        Value exponent =
            e.div(arith::SIToFPOp::create(nb, e.loc, nb.getF32Type(), twoI),
                  e.f32(double(headDim)));
        Value invFreq =
            e.div(e.f32(1.0),
                  math::PowFOp::create(nb, e.loc, e.f32(theta), exponent));
        Value pos = arith::SIToFPOp::create(nb, e.loc, nb.getF32Type(), a[0]);
        Value angle = e.mul(invFreq, pos);
        Value sin = math::SinOp::create(nb, e.loc, angle);
        return {math::CosOp::create(nb, e.loc, angle),
                inverse ? e.neg(sin) : sin};
      });
  // Feature c of a head reads table entry (c mod D) mod D/2.
  AffineExpr c = getAffineDimExpr(2, ctx());
  AffineMap tableMap =
      AffineMap::get(3, 0,
                     {getAffineDimExpr(0, ctx()), getAffineDimExpr(1, ctx()),
                      (c % headDim) % half},
                     ctx());
  return generic(
      {x, table[0], table[1]}, empty(shape, f32()),
      {identity(3), tableMap, tableMap, identity(3)}, {P, P, P},
      [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        OpBuilder &nb = e.b;
        Value cIdx = e.index(2);
        Value d = arith::RemUIOp::create(nb, e.loc, cIdx, e.idx(headDim));
        Value lower = arith::CmpIOp::create(
            nb, e.loc, arith::CmpIPredicate::ult, d, e.idx(half));
        Value partner =
            e.select(lower, arith::AddIOp::create(nb, e.loc, cIdx, e.idx(half)),
                     arith::SubIOp::create(nb, e.loc, cIdx, e.idx(half)));
        Value other = tensor::ExtractOp::create(
            nb, e.loc, x, ValueRange{e.index(0), e.index(1), partner});
        // rotate_half(x) = [-x2, x1]
        Value rotated = e.select(lower, e.neg(other), other);
        return {e.add(e.mul(a[0], a[1]), e.mul(rotated, a[2]))};
      })[0];
}

/// Causal GQA: q viewed as [B, T, KVH, G, D] so that query head
/// kvh·G + g meets kv head kvh through plain projections.
/// The attention micro-kernels' scalar operands after their buffers.
SmallVector<Value> Lowering::attentionShape(Value q, Value k, int64_t heads,
                                            int64_t kvHeads, int64_t headDim,
                                            double scale, bool causal) {
  ArrayRef<int64_t> qs = shapeOf(q), ks = shapeOf(k);
  return {i64(qs[0]),   i64(qs[1]),   i64(ks[1]),   i64(heads),
          i64(kvHeads), i64(headDim), s.f32(scale), i32(causal)};
}

Value Lowering::attention(AttentionOp op) {
  Value q = op.getQuery(), k = op.getKey(), v = op.getValue();
  int64_t heads = op.getNumHeads(), kvHeads = op.getNumKvHeads(),
          headDim = op.getHeadDim(), group = heads / kvHeads;
  if (uk) {
    Value out;
    SmallVector<Value> operands = {pointerTo(q), pointerTo(k), pointerTo(v),
                                   newBuffer(shapeOf(q), f32(), out)};
    operands.append(attentionShape(q, k, heads, kvHeads, headDim,
                                   op.getScale().convertToDouble(),
                                   op.getCausal()));
    callUkernel("bitloom_uk_attention", operands);
    return finish(out);
  }
  Value q5 = splitHeads(q, {kvHeads, group, headDim});
  Value k4 = splitHeads(k, {kvHeads, headDim});
  Value v4 = splitHeads(v, {kvHeads, headDim});
  Value probs = attentionProbs(q5, k4, kvHeads, group,
                               op.getScale().convertToDouble(), op.getCausal());
  // out[b, t, kvh, g, d] = Σ_s P · v; loops (b, t, kvh, g, d, s).
  Value out =
      contract(probs, map(6, {0, 2, 3, 1, 5}), v4, map(6, {0, 5, 2, 4}),
               shapeOf(q5), map(6, {0, 1, 2, 3, 4}), {P, P, P, P, P, R});
  return mergeHeads(out, op.getType());
}

/// A position as a cache row index, clamped to [0, maxLen) so that a bad
/// position can neither write nor read out of bounds (the reference throws).
static Value cacheRow(Scalar &e, Value position, int64_t maxLen) {
  Value row = arith::MaxSIOp::create(e.b, e.loc, e.toIndex(position), e.idx(0));
  return arith::MinSIOp::create(e.b, e.loc, row, e.idx(maxLen - 1));
}

/// cache[b, positions[b, t], :] = rows[b, t, :] for every (b, t) in order
/// (a later duplicate position wins, as in the reference's copies), given
/// the cache row of each (b, t): one tensor.insert_slice per token, so a
/// decode step writes a single row.
Value Lowering::cacheWrite(Value cache, Value rows, ArrayRef<Value> cacheRows) {
  ArrayRef<int64_t> rs = shapeOf(rows);
  SmallVector<OpFoldResult> sizes = {b.getIndexAttr(1), b.getIndexAttr(1),
                                     b.getIndexAttr(rs[2])};
  SmallVector<OpFoldResult> strides(3, b.getIndexAttr(1));
  for (int64_t bi = 0; bi < rs[0]; ++bi)
    for (int64_t t = 0; t < rs[1]; ++t) {
      SmallVector<OpFoldResult> from = {b.getIndexAttr(bi), b.getIndexAttr(t),
                                        b.getIndexAttr(0)};
      SmallVector<OpFoldResult> to = {
          b.getIndexAttr(bi), cacheRows[bi * rs[1] + t], b.getIndexAttr(0)};
      Value row =
          tensor::ExtractSliceOp::create(b, loc, rows, from, sizes, strides);
      cache =
          tensor::InsertSliceOp::create(b, loc, row, cache, to, sizes, strides);
    }
  return cache;
}

/// The reference's cachedAttention: this call's keys and values are written
/// into the caches first, then query t attends to cache rows
/// 0 .. positions[b, t] with attention's arithmetic (GQA view, f64 dots,
/// exp(x - max) · (1 / Σ)). Rows past the position are masked by select, so
/// stale cache contents never reach the result.
SmallVector<Value> Lowering::cachedAttention(CachedAttentionOp op) {
  Value q = op.getQuery(), positions = op.getPositions();
  int64_t heads = op.getNumHeads(), kvHeads = op.getNumKvHeads(),
          headDim = op.getHeadDim(), group = heads / kvHeads;
  double scale = op.getScale().convertToDouble();
  ArrayRef<int64_t> qs = shapeOf(q), cs = shapeOf(op.getKeyCache());
  int64_t batch = qs[0], qLen = qs[1], maxLen = cs[1];
  SmallVector<Value> cacheRows;
  for (int64_t bi = 0; bi < batch; ++bi)
    for (int64_t t = 0; t < qLen; ++t)
      cacheRows.push_back(
          cacheRow(s,
                   tensor::ExtractOp::create(b, loc, positions,
                                             ValueRange{s.idx(bi), s.idx(t)}),
                   maxLen));
  Value keys = cacheWrite(op.getKeyCache(), op.getKey(), cacheRows);
  Value values = cacheWrite(op.getValueCache(), op.getValue(), cacheRows);
  Value q5 = splitHeads(q, {kvHeads, group, headDim});
  Value k4 = splitHeads(keys, {kvHeads, headDim});
  Value v4 = splitHeads(values, {kvHeads, headDim});
  SmallVector<int64_t> pShape = {batch, kvHeads, group, qLen, maxLen};
  // Loops (b, kvh, g, t, s, d).
  Value dots = contract(q5, map(6, {0, 3, 1, 2, 5}), k4, map(6, {0, 4, 1, 5}),
                        pShape, map(6, {0, 1, 2, 3, 4}), {P, P, P, P, P, R});
  double inf = std::numeric_limits<double>::infinity();
  // score = f32(q·k) · scale for cache rows s <= position, -inf after.
  Value scores = generic(
      {dots, positions}, empty(pShape, f32()),
      {identity(5), map(5, {0, 3}), identity(5)}, {P, P, P, P, P},
      [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value visible =
            arith::CmpIOp::create(e.b, e.loc, arith::CmpIPredicate::sle,
                                  e.index(4), cacheRow(e, a[1], maxLen));
        return {e.select(visible, e.mul(a[0], e.f32(scale)), e.f32(-inf))};
      })[0];
  // Softmax over s: exp(x - max) · (1 / Σ), PyTorch's CPU order.
  Value probs = softmax5(scores);
  // out[b, t, kvh, g, d] = Σ_{s <= position} P · v in f64;
  // loops (b, t, kvh, g, d, s).
  Value acc = generic(
      {probs, v4, positions}, filled(shapeOf(q5), f64(), 0.0),
      {map(6, {0, 2, 3, 1, 5}), map(6, {0, 5, 2, 4}), map(6, {0, 1}),
       map(6, {0, 1, 2, 3, 4})},
      {P, P, P, P, P, R}, [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value visible =
            arith::CmpIOp::create(e.b, e.loc, arith::CmpIPredicate::sle,
                                  e.index(5), cacheRow(e, a[2], maxLen));
        Value term = e.add(a[3], e.mul(e.ext(a[0]), e.ext(a[1])));
        return {e.select(visible, term, a[3])};
      })[0];
  Value out = mergeHeads(toF32(acc), op.getResult().getType());
  return {out, keys, values};
}

Value Lowering::matmul(MatmulOp op) {
  Value x = rows(op.getInput()), w = op.getWeight();
  return unrows(gemm(x, w, false, true), op.getType());
}

/// Mean over masked-in rows of logsumexp(l) - l[label]; 0 without any.
/// Labels of masked-out rows are ignored; masked-in labels are clamped to
/// the vocabulary (the reference throws instead).
Value Lowering::crossEntropy(CrossEntropyOp op) {
  Value logits = rows(op.getLogits()), labels = flat(op.getLabels()),
        mask = flat(op.getLossMask());
  int64_t vocab = shapeOf(logits)[1];
  Value max = rowMax(logits), sum = rowSumExp(logits, max);
  SmallVector<Value> totals = generic(
      {labels, mask, max, sum},
      {filled({}, f64(), 0.0), filled({}, f64(), 0.0)},
      {identity(1), identity(1), identity(1), identity(1), map(1, {}),
       map(1, {})},
      {R}, [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        OpBuilder &nb = e.b;
        Value in = e.cmp(arith::CmpFPredicate::UNE, a[1], e.f32(0.0));
        Value label = arith::MinSIOp::create(
            nb, e.loc,
            arith::MaxSIOp::create(nb, e.loc, e.toIndex(a[0]), e.idx(0)),
            e.idx(vocab - 1));
        Value l = tensor::ExtractOp::create(nb, e.loc, logits,
                                            ValueRange{e.index(0), label});
        Value logProb = e.sub(e.sub(l, a[2]), e.log(e.trunc(a[3])));
        Value total = e.sub(a[4], e.ext(logProb));
        Value count = e.add(a[5], e.f64(1.0));
        return {e.select(in, total, a[4]), e.select(in, count, a[5])};
      });
  return generic(
      totals, empty({}, f32()), {map(0, {}), map(0, {}), map(0, {})}, {},
      [](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value none = e.cmp(arith::CmpFPredicate::OEQ, a[1], e.f64(0.0));
        return {e.select(none, e.f32(0.0), e.trunc(e.div(a[0], a[1])))};
      })[0];
}

//===----------------------------------------------------------------------===//
// Adjoints
//===----------------------------------------------------------------------===//

/// Scatter-add of rows as a masked reduction over the tokens:
/// dtable[v, h] = Σ_n [tokens[n] = v] · dy[n, h], in f32 and token order as
/// the reference accumulates.
Value Lowering::embeddingGrad(EmbeddingGradOp op) {
  Value dy = rows(op.getResultGrad()), ids = flat(op.getTokens());
  auto type = cast<RankedTensorType>(op.getType());
  // Loops (v, h, n).
  return generic({ids, dy}, filled(type.getShape(), f32(), 0.0),
                 {map(3, {2}), map(3, {2, 1}), map(3, {0, 1})}, {P, P, R},
                 [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                   Value hit = arith::CmpIOp::create(
                       e.b, e.loc, arith::CmpIPredicate::eq, e.toIndex(a[0]),
                       e.index(0));
                   return {e.select(hit, e.add(a[2], a[1]), a[2])};
                 })[0];
}

Value Lowering::rmsNormGradInput(RMSNormGradInputOp op) {
  Value dy = rows(op.getResultGrad()), x = rows(op.getInput()),
        w = op.getWeight();
  int64_t n = shapeOf(x)[0], c = shapeOf(x)[1];
  Value r = rmsInv(x, op.getEpsilon().convertToDouble());
  AffineMap id = identity(2), col = map(2, {1}), row = map(2, {0});
  // dot[n] = Σ_c (w·dy) · (x·r) in f64.
  Value dot =
      generic({dy, x, w, r}, filled({n}, f64(), 0.0), {id, id, col, row, row},
              {P, R}, [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                Value wdy = e.mul(a[2], a[0]);
                Value xhat = e.mul(a[1], a[3]);
                return {e.add(a[4], e.mul(e.ext(wdy), e.ext(xhat)))};
              })[0];
  Value dx = generic(
      {dy, x, w, r, dot}, empty({n, c}, f32()), {id, id, col, row, row, id},
      {P, P}, [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value meanDot = e.trunc(e.div(a[4], e.f64(double(c))));
        Value xhat = e.mul(a[1], a[3]);
        return {e.mul(a[3], e.sub(e.mul(a[2], a[0]), e.mul(xhat, meanDot)))};
      })[0];
  return unrows(dx, op.getType());
}

Value Lowering::rmsNormGradWeight(RMSNormGradWeightOp op) {
  Value dy = rows(op.getResultGrad()), x = rows(op.getInput());
  int64_t c = shapeOf(x)[1];
  Value r = rmsInv(x, op.getEpsilon().convertToDouble());
  // Loops (c, n): dw[c] = Σ_n dy · (x·r).
  Value acc =
      generic({dy, x, r}, filled({c}, f64(), 0.0),
              {map(2, {1, 0}), map(2, {1, 0}), map(2, {1}), map(2, {0})},
              {P, R}, [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                Value xhat = e.mul(a[1], a[2]);
                return {e.add(a[3], e.mul(e.ext(a[0]), e.ext(xhat)))};
              })[0];
  return toF32(acc);
}

/// dx = (dy · scale) · W_q: straight through the activation quantizer.
Value Lowering::bitlinearGradInput(BitLinearGradInputOp op) {
  Value dy = scaleBy(rows(op.getResultGrad()), op.getOutputScale());
  if (isPacked(op.getWeight())) {
    // The transposed product on packed weights: dx = multiplier · Σ dy·t.
    Value w = op.getWeight();
    Value multiplier = uk->memrefs ? pointerTo(uk->multiplierOf.lookup(w))
                                   : extractScalar(uk->multiplierOf.lookup(w));
    int64_t n = shapeOf(dy)[0], o = shapeOf(dy)[1],
            i = cast<RankedTensorType>(op.getType()).getShape().back();
    Value out;
    Value outPtr = newBuffer({n, i}, f32(), out);
    callUkernel("bitloom_uk_ternary_matmul_t",
                {pointerTo(dy), pointerTo(w), multiplier, outPtr, i64(n),
                 i64(o), i64(i)});
    return unrows(finish(out), op.getType());
  }
  Value w = op.getWeightQuant() == WeightQuant::online
                ? quantizeWeight(op.getWeight())
                : op.getWeight();
  int64_t n = shapeOf(dy)[0], i = shapeOf(w)[1];
  // Loops (n, i, o).
  Value dx = contract(dy, map(3, {0, 2}), w, map(3, {2, 1}), {n, i},
                      map(3, {0, 1}), {P, P, R});
  return unrows(dx, op.getType());
}

/// dW = (dy · scale)ᵀ · x_q: straight through the weight quantizer.
Value Lowering::bitlinearGradWeight(BitLinearGradWeightOp op) {
  Value dy = scaleBy(rows(op.getResultGrad()), op.getOutputScale());
  Value xq = quantizeActivations(rows(op.getInput()));
  int64_t o = shapeOf(dy)[1], i = shapeOf(xq)[1];
  // Loops (o, i, n).
  return contract(dy, map(3, {2, 0}), xq, map(3, {2, 1}), {o, i},
                  map(3, {0, 1}), {P, P, R});
}

Value Lowering::loraGradInput(LoRAGradInputOp op) {
  Value dy = rows(op.getResultGrad()), a = op.getLoraA(), bm = op.getLoraB();
  double scaling = op.getAlpha().convertToDouble() / double(op.getRank());
  // (dy · c) in f32 first, as autograd scales the LoRA path's output.
  Value scaled = elementwise(
      dy, f32(), [&](Scalar &e, ValueRange v) -> SmallVector<Value> {
        return {e.mul(v[0], e.f32(scaling))};
      });
  // du[n, j] = Σ_o (dy·c)[n, o] · B[o, j]; dx[n, i] = Σ_j du[n, j] · A[j, i].
  Value du = gemm(scaled, bm, false, false);
  Value dx = gemm(du, a, false, false);
  return unrows(dx, op.getType());
}

SmallVector<Value> Lowering::loraGradParams(LoRAGradParamsOp op) {
  Value dy = rows(op.getResultGrad()), x = rows(op.getInput()),
        a = op.getLoraA(), bm = op.getLoraB();
  double scaling = op.getAlpha().convertToDouble() / double(op.getRank());
  Value scaled = elementwise(
      dy, f32(), [&](Scalar &e, ValueRange v) -> SmallVector<Value> {
        return {e.mul(v[0], e.f32(scaling))};
      });
  Value u = gemm(x, a, false, true);
  Value du = gemm(scaled, bm, false, false);
  // dB[o, j] = Σ_n (dy·c)[n, o] · u[n, j]; dA[j, i] = Σ_n du[n, j] · x[n, i].
  Value dB = gemm(scaled, u, true, false);
  Value dA = gemm(du, x, true, false);
  return {dA, dB};
}

/// Recomputes P, then dS = P·(dP - Σ_s P·dP)·scale in f64 as the reference
/// keeps it; dq = dS·K, dk = dSᵀ·Q and dv = Pᵀ·dout summed over each kv
/// head's query group.
SmallVector<Value> Lowering::attentionGrad(AttentionGradOp op) {
  Value q = op.getQuery(), k = op.getKey(), v = op.getValue(),
        dout = op.getResultGrad();
  int64_t heads = op.getNumHeads(), kvHeads = op.getNumKvHeads(),
          headDim = op.getHeadDim(), group = heads / kvHeads;
  double scale = op.getScale().convertToDouble();
  ArrayRef<int64_t> qs = shapeOf(q), ks = shapeOf(k);
  if (uk) {
    Value dq, dk, dv;
    SmallVector<Value> operands = {pointerTo(q),
                                   pointerTo(k),
                                   pointerTo(v),
                                   pointerTo(dout),
                                   newBuffer(qs, f32(), dq),
                                   newBuffer(ks, f32(), dk),
                                   newBuffer(ks, f32(), dv)};
    operands.append(
        attentionShape(q, k, heads, kvHeads, headDim, scale, op.getCausal()));
    callUkernel("bitloom_uk_attention_grad", operands);
    return {finish(dq), finish(dk), finish(dv)};
  }
  Value q5 = splitHeads(q, {kvHeads, group, headDim});
  Value g5 = splitHeads(dout, {kvHeads, group, headDim});
  Value k4 = splitHeads(k, {kvHeads, headDim});
  Value v4 = splitHeads(v, {kvHeads, headDim});
  Value probs = attentionProbs(q5, k4, kvHeads, group, scale, op.getCausal());
  ArrayRef<int64_t> pShape = shapeOf(probs);
  // dP[b, kvh, g, t, s] = Σ_d dout · v, kept in f64; loops (b,kvh,g,t,s,d).
  Value dP = contract(g5, map(6, {0, 3, 1, 2, 5}), v4, map(6, {0, 4, 1, 5}),
                      pShape, map(6, {0, 1, 2, 3, 4}), {P, P, P, P, P, R},
                      /*keepF64=*/true);
  AffineMap rowMap = map(5, {0, 1, 2, 3});
  Value rowDot = generic({probs, dP}, filled(pShape.drop_back(), f64(), 0.0),
                         {identity(5), identity(5), rowMap}, {P, P, P, P, R},
                         [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                           return {e.add(a[2], e.mul(e.ext(a[0]), a[1]))};
                         })[0];
  Value dS = generic(
      {probs, dP, rowDot}, empty(pShape, f64()),
      {identity(5), identity(5), rowMap, identity(5)}, {P, P, P, P, P},
      [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        return {e.mul(e.mul(e.ext(a[0]), e.sub(a[1], a[2])), e.f64(scale))};
      })[0];
  // dq[b, t, kvh, g, d] = Σ_s dS · k; loops (b, t, kvh, g, d, s).
  Value dq = contract(dS, map(6, {0, 2, 3, 1, 5}), k4, map(6, {0, 5, 2, 4}),
                      shapeOf(q5), map(6, {0, 1, 2, 3, 4}), {P, P, P, P, P, R});
  // dk[b, s, kvh, d] = Σ_{g,t} dS · q; loops (b, s, kvh, d, g, t).
  Value dk = contract(dS, map(6, {0, 2, 4, 5, 1}), q5, map(6, {0, 5, 2, 4, 3}),
                      shapeOf(k4), map(6, {0, 1, 2, 3}), {P, P, P, P, R, R});
  Value dv =
      contract(probs, map(6, {0, 2, 4, 5, 1}), g5, map(6, {0, 5, 2, 4, 3}),
               shapeOf(k4), map(6, {0, 1, 2, 3}), {P, P, P, P, R, R});
  return {mergeHeads(dq, q.getType()), mergeHeads(dk, k.getType()),
          mergeHeads(dv, v.getType())};
}

Value Lowering::matmulGradInput(MatmulGradInputOp op) {
  Value dy = rows(op.getResultGrad()), w = op.getWeight();
  return unrows(gemm(dy, w, false, false), op.getType());
}

Value Lowering::matmulGradWeight(MatmulGradWeightOp op) {
  Value dy = rows(op.getResultGrad()), x = rows(op.getInput());
  return gemm(dy, x, true, false);
}

/// dloss · (softmax(l) - onehot(label)) / count on masked-in rows.
Value Lowering::crossEntropyGrad(CrossEntropyGradOp op) {
  Value logits = rows(op.getLogits()), labels = flat(op.getLabels()),
        mask = flat(op.getLossMask());
  Value dloss = extractScalar(op.getLossGrad());
  Value count =
      generic(mask, filled({}, f64(), 0.0), {identity(1), map(1, {})}, {R},
              [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                Value in = e.cmp(arith::CmpFPredicate::UNE, a[0], e.f32(0.0));
                return {e.select(in, e.add(a[1], e.f64(1.0)), a[1])};
              })[0];
  Value max = rowMax(logits), sum = rowSumExp(logits, max);
  // log(f32(Σ)) once per row, not per logit.
  Value logSum = elementwise(sum, f32(),
                             [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                               return {e.log(e.trunc(a[0]))};
                             });
  AffineMap id = identity(2), row = map(2, {0}), none = map(2, {});
  // The logits are dead after this: writing the gradient over them (their
  // tensor as the destination) lets bufferization reuse the [N, V] buffer.
  Value d = generic(
      {logits, labels, mask, max, logSum, count}, logits,
      {id, row, row, row, row, none, id}, {P, P},
      [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        OpBuilder &nb = e.b;
        Value rowsF = e.trunc(a[5]);
        Value noRows = e.cmp(arith::CmpFPredicate::OEQ, rowsF, e.f32(0.0));
        Value g = e.select(noRows, e.f32(0.0), e.div(dloss, rowsF));
        Value prob = e.exp(e.sub(e.sub(a[0], a[3]), a[4]));
        Value isLabel = arith::CmpIOp::create(
            nb, e.loc, arith::CmpIPredicate::eq, e.toIndex(a[1]), e.index(1));
        Value onehot = e.select(isLabel, e.f32(1.0), e.f32(0.0));
        Value out = e.cmp(arith::CmpFPredicate::OEQ, a[2], e.f32(0.0));
        Value zero = arith::OrIOp::create(nb, e.loc, out, noRows);
        return {e.select(zero, e.f32(0.0), e.mul(g, e.sub(prob, onehot)))};
      })[0];
  return unrows(d, op.getType());
}

/// One micro-kernel call computes the loss (and the input gradient) block
/// by block. Its [block_rows, vocab] logits block is a buffer of the step,
/// allocated here like every kernel output, so the memory plan sees and
/// places it and the kernel never allocates.
SmallVector<Value> Lowering::linearCrossEntropy(LinearCrossEntropyOp op) {
  Value x = rows(op.getInput()), w = op.getWeight(),
        labels = flat(op.getLabels()), mask = flat(op.getLossMask());
  int64_t n = shapeOf(x)[0], k = shapeOf(x)[1], v = shapeOf(w)[0];
  // Never more rows of scratch than there are rows.
  int64_t blockRows =
      std::max<int64_t>(1, std::min<int64_t>(op.getBlockRows(), n));
  bool training = bool(op.getLossGrad());
  bool bf16 = cast<RankedTensorType>(w.getType()).getElementType().isBF16();
  // Evaluation passes null for the loss gradient and the input gradient.
  Value lossBuffer, gradBuffer, blockBuffer, lossGradPtr, gradPtr;
  Value lossPtr = newBuffer({}, f32(), lossBuffer);
  if (training) {
    gradPtr = newBuffer({n, k}, f32(), gradBuffer);
    lossGradPtr = pointerTo(op.getLossGrad());
  } else {
    gradPtr = lossGradPtr = nullPointer();
  }
  Value blockPtr = newBuffer({blockRows, v}, f32(), blockBuffer);
  // Memref calls name the loss-only form apart: it has fewer operands.
  std::string name = bf16 ? "bitloom_uk_linear_cross_entropy_bf16w"
                          : "bitloom_uk_linear_cross_entropy";
  if (uk->memrefs && !training)
    name += "_loss";
  callUkernel(name, {pointerTo(x), pointerTo(w), pointerTo(labels),
                     pointerTo(mask), lossGradPtr, lossPtr, gradPtr, blockPtr,
                     i64(n), i64(v), i64(k), i64(blockRows)});
  SmallVector<Value> results = {finish(lossBuffer)};
  if (training)
    results.push_back(unrows(finish(gradBuffer), op.getInputGrad().getType()));
  return results;
}

Value Lowering::tokenCount(TokenCountOp op) {
  Value mask = flat(op.getLossMask());
  Value sum = generic(mask, filled({}, f64(), 0.0), {identity(1), map(1, {})},
                      {R}, [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                        return {e.add(a[1], e.ext(a[0]))};
                      })[0];
  return toF32(sum);
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

Value Lowering::globalNorm(GlobalNormOp op) {
  Value acc = filled({}, f64(), 0.0);
  for (Value g : op.getGrads()) {
    unsigned rank = shapeOf(g).size();
    SmallVector<utils::IteratorType> iters(rank, R);
    acc = generic(g, acc, {identity(rank), map(rank, {})}, iters,
                  [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                    Value x = e.ext(a[0]);
                    return {e.add(a[1], e.mul(x, x))};
                  })[0];
  }
  return generic(acc, empty({}, f32()), {map(0, {}), map(0, {})}, {},
                 [](Scalar &e, ValueRange a) -> SmallVector<Value> {
                   return {e.trunc(e.sqrt(a[0]))};
                 })[0];
}

/// g · min(max_norm / (norm + 1e-6), 1), the factor computed in f64.
Value Lowering::clipByNorm(ClipByNormOp op) {
  Value norm = s.ext(extractScalar(op.getNorm()));
  Value ratio =
      s.div(s.f64(op.getMaxNorm().convertToDouble()), s.add(norm, s.f64(1e-6)));
  Value one = s.f64(1.0);
  Value factor = s.trunc(
      s.select(s.cmp(arith::CmpFPredicate::OLT, one, ratio), one, ratio));
  return elementwise(op.getGrad(), f32(),
                     [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
                       return {e.mul(a[0], factor)};
                     });
}

Value Lowering::accumulate(AccumulateOp op) {
  Value scale = extractScalar(op.getScale());
  return elementwise({op.getAccumulator(), op.getGrad()}, f32(),
                     [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
                       return {e.add(a[0], e.mul(scale, a[1]))};
                     });
}

/// torch.optim.AdamW's single-tensor step with the reference's conversions:
/// per-step scalars in f64 (lr and step are runtime values), per-element
/// arithmetic in f32.
SmallVector<Value> Lowering::adamw(AdamWOp op) {
  double beta1 = op.getBeta1().convertToDouble(),
         beta2 = op.getBeta2().convertToDouble(),
         eps = op.getEpsilon().convertToDouble(),
         wd = op.getWeightDecay().convertToDouble();
  Value lr = s.ext(extractScalar(op.getLr()));
  Value stepI = arith::FPToSIOp::create(b, loc, b.getI64Type(),
                                        extractScalar(op.getStep()));
  Value step = arith::SIToFPOp::create(b, loc, f64(), stepI);
  Value decay = s.trunc(s.sub(s.f64(1.0), s.mul(lr, s.f64(wd))));
  Value bc1 =
      s.sub(s.f64(1.0), math::PowFOp::create(b, loc, s.f64(beta1), step));
  Value bc2 =
      s.sub(s.f64(1.0), math::PowFOp::create(b, loc, s.f64(beta2), step));
  Value bc2Sqrt = s.trunc(s.sqrt(bc2));
  Value negStep = s.trunc(s.neg(s.div(lr, bc1)));
  float w = float(1 - beta1);
  bool lerpLow = std::abs(w) < 0.5f;
  Value p = op.getParam();
  ArrayRef<int64_t> shape = shapeOf(p);
  unsigned rank = shape.size();
  SmallVector<AffineMap> maps(7, identity(rank));
  SmallVector<utils::IteratorType> iters(rank, P);
  return generic(
      {p, op.getGrad(), op.getExpAvg(), op.getExpAvgSq()},
      {empty(shape, f32()), empty(shape, f32()), empty(shape, f32())}, maps,
      iters, [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
        Value param = e.mul(a[0], decay), g = a[1], m = a[2], v = a[3];
        Value wT = e.f32(w);
        // at::lerp's two forms, chosen by the weight as torch does.
        Value mNew = lerpLow
                         ? e.add(m, e.mul(wT, e.sub(g, m)))
                         : e.sub(g, e.mul(e.sub(g, m), e.sub(e.f32(1.0), wT)));
        Value vNew = e.add(e.mul(v, e.f32(float(beta2))),
                           e.mul(e.mul(e.f32(float(1 - beta2)), g), g));
        Value denom = e.add(e.div(e.sqrt(vNew), bc2Sqrt), e.f32(float(eps)));
        Value pNew = e.add(param, e.div(e.mul(negStep, mNew), denom));
        return {pNew, mNew, vNew};
      });
}

/// torch.optim.SGD (dampening 0, no Nesterov); the momentum buffer is
/// replaced by the gradient on step 1.
SmallVector<Value> Lowering::sgd(SGDOp op) {
  double momentum = op.getMomentum().convertToDouble(),
         wd = op.getWeightDecay().convertToDouble();
  Value negLr = s.trunc(s.neg(s.ext(extractScalar(op.getLr()))));
  Value stepI = arith::FPToSIOp::create(b, loc, b.getI64Type(),
                                        extractScalar(op.getStep()));
  Value first = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq, stepI,
      arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(1)));
  Value p = op.getParam();
  ArrayRef<int64_t> shape = shapeOf(p);
  unsigned rank = shape.size();
  SmallVector<AffineMap> maps(5, identity(rank));
  SmallVector<utils::IteratorType> iters(rank, P);
  return generic({p, op.getGrad(), op.getMomentumBuffer()},
                 {empty(shape, f32()), empty(shape, f32())}, maps, iters,
                 [&](Scalar &e, ValueRange a) -> SmallVector<Value> {
                   Value d = a[1], buf = a[2];
                   if (wd != 0)
                     d = e.add(d, e.mul(e.f32(float(wd)), a[0]));
                   if (momentum != 0) {
                     buf =
                         e.select(first, d,
                                  e.add(e.mul(buf, e.f32(float(momentum))), d));
                     d = buf;
                   }
                   return {e.add(a[0], e.mul(negLr, d)), buf};
                 });
}

FailureOr<SmallVector<Value>> Lowering::lower(Operation *op) {
  auto one = [](Value v) { return SmallVector<Value>{v}; };
  return llvm::TypeSwitch<Operation *, FailureOr<SmallVector<Value>>>(op)
      .Case([&](EmbeddingOp o) { return one(embedding(o)); })
      .Case([&](RMSNormOp o) { return one(rmsNorm(o)); })
      .Case([&](BitLinearOp o) { return one(bitlinear(o)); })
      .Case([&](LoRAOp o) { return one(lora(o)); })
      .Case([&](RoPEOp o) { return one(rope(o)); })
      .Case([&](AttentionOp o) { return one(attention(o)); })
      .Case([&](CachedAttentionOp o) { return cachedAttention(o); })
      .Case([&](Relu2Op o) {
        return one(elementwise(
            o.getInput(), f32(),
            [](Scalar &e, ValueRange a) -> SmallVector<Value> {
              Value r = e.max(a[0], e.f32(0.0));
              return {e.mul(r, r)};
            },
            /*inPlace=*/true));
      })
      .Case([&](AddOp o) {
        return one(elementwise(
            {o.getLhs(), o.getRhs()}, f32(),
            [](Scalar &e, ValueRange a) -> SmallVector<Value> {
              return {e.add(a[0], a[1])};
            },
            /*inPlace=*/true));
      })
      .Case([&](MulOp o) {
        return one(elementwise(
            {o.getLhs(), o.getRhs()}, f32(),
            [](Scalar &e, ValueRange a) -> SmallVector<Value> {
              return {e.mul(a[0], a[1])};
            },
            /*inPlace=*/true));
      })
      .Case([&](MatmulOp o) { return one(matmul(o)); })
      .Case([&](CrossEntropyOp o) { return one(crossEntropy(o)); })
      .Case([&](EmbeddingGradOp o) { return one(embeddingGrad(o)); })
      .Case([&](RMSNormGradInputOp o) { return one(rmsNormGradInput(o)); })
      .Case([&](RMSNormGradWeightOp o) { return one(rmsNormGradWeight(o)); })
      .Case([&](BitLinearGradInputOp o) { return one(bitlinearGradInput(o)); })
      .Case(
          [&](BitLinearGradWeightOp o) { return one(bitlinearGradWeight(o)); })
      .Case([&](LoRAGradInputOp o) { return one(loraGradInput(o)); })
      .Case([&](LoRAGradParamsOp o) { return loraGradParams(o); })
      .Case([&](AttentionGradOp o) { return attentionGrad(o); })
      .Case([&](Relu2GradOp o) {
        return one(elementwise(
            {o.getResultGrad(), o.getInput()}, f32(),
            [](Scalar &e, ValueRange a) -> SmallVector<Value> {
              Value r = e.max(a[1], e.f32(0.0));
              return {e.mul(a[0], e.mul(e.f32(2.0), r))};
            },
            /*inPlace=*/true));
      })
      .Case([&](MatmulGradInputOp o) { return one(matmulGradInput(o)); })
      .Case([&](MatmulGradWeightOp o) { return one(matmulGradWeight(o)); })
      .Case([&](CrossEntropyGradOp o) { return one(crossEntropyGrad(o)); })
      .Case([&](TokenCountOp o) { return one(tokenCount(o)); })
      .Case([&](LinearCrossEntropyOp o) { return linearCrossEntropy(o); })
      .Case([&](ConstantOp o) {
        auto type = cast<RankedTensorType>(o.getType());
        return one(
            filled(type.getShape(), f32(), o.getValue().convertToDouble()));
      })
      .Case([&](GlobalNormOp o) { return one(globalNorm(o)); })
      .Case([&](ClipByNormOp o) { return one(clipByNorm(o)); })
      .Case([&](AccumulateOp o) { return one(accumulate(o)); })
      .Case([&](AdamWOp o) { return adamw(o); })
      .Case([&](SGDOp o) { return sgd(o); })
      .Default([](Operation *) { return failure(); });
}

//===----------------------------------------------------------------------===//
// The pass
//===----------------------------------------------------------------------===//

class LowerToLinalg
    : public bitloom::impl::LoomLowerToLinalgBase<LowerToLinalg> {
public:
  using LoomLowerToLinalgBase::LoomLowerToLinalgBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    UkernelContext context;
    context.memrefs = ukernelMemrefs;
    UkernelContext *uk = ukernels ? &context : nullptr;
    llvm::StringSet<> bf16Names;
    for (const std::string &name : bf16Params)
      bf16Names.insert(name);
    for (auto func : module.getOps<func::FuncOp>()) {
      if (func.isExternal())
        continue;
      if (failed(checkStatic(func)) ||
          failed(paramsToArguments(func, uk, bf16Names)) ||
          failed(lowerBody(func, uk)))
        return signalPassFailure();
    }
    OpBuilder builder = OpBuilder::atBlockEnd(module.getBody());
    for (const auto &entry : context.declarations) {
      if (module.lookupSymbol(entry.getKey()))
        continue;
      auto decl = func::FuncOp::create(builder, module.getLoc(), entry.getKey(),
                                       entry.getValue());
      decl.setPrivate();
    }
  }

private:
  static LogicalResult checkStatic(func::FuncOp func) {
    WalkResult walk = func.walk([&](Operation *op) {
      for (Type t : op->getResultTypes())
        if (auto tensor = dyn_cast<RankedTensorType>(t);
            tensor && !tensor.hasStaticShape()) {
          op->emitError("loom-lower-to-linalg needs static shapes; run "
                        "-loom-specialize-shapes first");
          return WalkResult::interrupt();
        }
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return failure();
    for (Type t : func.getArgumentTypes())
      if (auto tensor = dyn_cast<RankedTensorType>(t);
          tensor && !tensor.hasStaticShape())
        return func.emitError("loom-lower-to-linalg needs static shapes; run "
                              "-loom-specialize-shapes first");
    return success();
  }

  /// A frozen weight the micro-kernels take packed: only ever the weight of
  /// bitlinear ops and their input gradients.
  static bool isPackable(ParamOp p) {
    if (p->use_empty())
      return false;
    for (OpOperand &use : p->getUses()) {
      Operation *user = use.getOwner();
      if (auto fwd = dyn_cast<BitLinearOp>(user)) {
        if (fwd.getWeight() != p.getResult())
          return false;
      } else if (auto grad = dyn_cast<BitLinearGradInputOp>(user)) {
        if (grad.getWeight() != p.getResult())
          return false;
      } else {
        return false;
      }
    }
    return true;
  }

  /// A frozen float matrix that can stay bf16: only ever the table of
  /// embeddings and the weight of LM-head products (fused or not) and their
  /// input gradients (the ops that widen it exactly).
  static bool isBf16Able(ParamOp p) {
    auto type = dyn_cast<RankedTensorType>(p.getType());
    if (!type || type.getRank() != 2 || !type.getElementType().isF32() ||
        p->use_empty())
      return false;
    for (OpOperand &use : p->getUses()) {
      Operation *user = use.getOwner();
      if (auto e = dyn_cast<EmbeddingOp>(user)) {
        if (e.getTable() != p.getResult())
          return false;
      } else if (auto m = dyn_cast<MatmulOp>(user)) {
        if (m.getWeight() != p.getResult() || m.getInput() == p.getResult())
          return false;
      } else if (auto g = dyn_cast<MatmulGradInputOp>(user)) {
        if (g.getWeight() != p.getResult() ||
            g.getResultGrad() == p.getResult())
          return false;
      } else if (auto l = dyn_cast<LinearCrossEntropyOp>(user)) {
        if (l.getWeight() != p.getResult() || l.getInput() == p.getResult())
          return false;
      } else {
        return false;
      }
    }
    return true;
  }

  /// Every loom.param becomes a trailing argument named by `loom.name` and
  /// marked `loom.param`, one per distinct name. Without micro-kernels
  /// ternary weights arrive dequantized (f32 [out, in]); with them, frozen
  /// bitlinear weights arrive packed with a multiplier argument. Parameters
  /// named in `bf16Names` arrive as bf16 where every use allows it.
  static LogicalResult paramsToArguments(func::FuncOp func, UkernelContext *uk,
                                         const llvm::StringSet<> &bf16Names) {
    Builder b(func.getContext());
    llvm::StringMap<Value> byName;
    SmallVector<ParamOp> params;
    func.walk([&](ParamOp p) { params.push_back(p); });
    llvm::StringSet<> unpackable, notBf16;
    for (ParamOp p : params) {
      if (!isPackable(p))
        unpackable.insert(p.getName());
      if (!bf16Names.contains(p.getName()) || !isBf16Able(p))
        notBf16.insert(p.getName());
    }
    auto addArgument = [&](Type type, StringRef name, StringRef packing,
                           Location at) -> FailureOr<Value> {
      SmallVector<NamedAttribute> attrs = {
          b.getNamedAttr("loom.name", b.getStringAttr(name)),
          b.getNamedAttr("loom.param", b.getUnitAttr())};
      if (!packing.empty())
        attrs.push_back(
            b.getNamedAttr("loom.packing", b.getStringAttr(packing)));
      unsigned index = func.getNumArguments();
      if (failed(
              func.insertArgument(index, type, b.getDictionaryAttr(attrs), at)))
        return failure();
      return func.getArgument(index);
    };
    for (ParamOp p : params) {
      Value &arg = byName[p.getName()];
      if (!arg) {
        Type type = p.getType();
        ArrayRef<int64_t> shape;
        if (auto ternary = dyn_cast<TernaryType>(type))
          shape = ternary.getShape();
        else
          shape = cast<RankedTensorType>(type).getShape();
        bool packed = uk && !unpackable.contains(p.getName());
        FailureOr<Value> added;
        if (!notBf16.contains(p.getName())) {
          added = addArgument(RankedTensorType::get(shape, b.getBF16Type()),
                              p.getName(), "bf16", p.getLoc());
        } else if (packed) {
          auto packedType = RankedTensorType::get(
              {shape[0], packedRowBytes(shape[1])}, b.getI8Type());
          added = addArgument(packedType, p.getName(), "i2x128", p.getLoc());
          if (failed(added))
            return p.emitError("cannot add the parameter as an argument");
          FailureOr<Value> multiplier =
              addArgument(RankedTensorType::get({}, b.getF32Type()),
                          (p.getName() + ".ternary_scale").str(),
                          "ternary_scale", p.getLoc());
          if (failed(multiplier))
            return p.emitError("cannot add the parameter as an argument");
          uk->multiplierOf[*added] = *multiplier;
        } else {
          if (isa<TernaryType>(type))
            type = RankedTensorType::get(shape, b.getF32Type());
          added = addArgument(type, p.getName(), "", p.getLoc());
        }
        if (failed(added))
          return p.emitError("cannot add the parameter as an argument");
        arg = *added;
      }
      p.getResult().replaceAllUsesWith(arg);
      p.erase();
    }
    return success();
  }

  static LogicalResult lowerBody(func::FuncOp func, UkernelContext *uk) {
    SmallVector<Operation *> ops;
    func.walk([&](Operation *op) {
      if (isa<LoomDialect>(op->getDialect()))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      // The fused LM head + loss exists to keep its logits in blocks, which
      // only the micro-kernel does.
      if (!uk && isa<LinearCrossEntropyOp>(op))
        return op->emitError("loom.linear_cross_entropy needs ukernels=true");
      OpBuilder builder(op);
      Lowering lowering(builder, op->getLoc(), uk);
      FailureOr<SmallVector<Value>> values = lowering.lower(op);
      if (failed(values))
        return op->emitError("loom-lower-to-linalg has no lowering for this "
                             "op");
      op->replaceAllUsesWith(*values);
      op->erase();
    }
    return success();
  }
};

} // namespace

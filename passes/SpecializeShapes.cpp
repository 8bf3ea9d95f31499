//===- SpecializeShapes.cpp - Static batch and tokens dimensions ----------===//
//
// Native code generation compiles one shape: the dynamic [batch, tokens]
// dimensions of the loom IR become the constants given to `bitloom compile`.
// A KV-cached function (one with loom.cached_attention: @generate_step) is a
// decoder step instead: one sequence, one token per call at a position the
// caller passes, so its [batch, tokens] become [1, 1] and its caches keep
// their static max-tokens length.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/IR/Verifier.h"

#include <array>

namespace bitloom {
#define GEN_PASS_DEF_LOOMSPECIALIZESHAPES
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;

namespace {

class SpecializeShapes
    : public bitloom::impl::LoomSpecializeShapesBase<SpecializeShapes> {
public:
  using LoomSpecializeShapesBase::LoomSpecializeShapesBase;

  void runOnOperation() override {
    if (batch <= 0 || seqLen <= 0) {
      getOperation().emitError("loom-specialize-shapes needs batch > 0 and "
                               "seq-len > 0, got batch=")
          << int64_t(batch) << " seq-len=" << int64_t(seqLen);
      return signalPassFailure();
    }
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      bool decoder = false;
      func.walk([&](bitloom::loom::CachedAttentionOp) { decoder = true; });
      if (decoder ? failed(specialize(func, {1, 1}, /*cacheTokens=*/true))
                  : failed(specialize(func, {batch, seqLen}, false)))
        return signalPassFailure();
    }
  }

private:
  /// The static form of `type` with [batch, tokens] = `fixed`, or failure
  /// (reported at `loc`) when its dynamic dimensions are not the leading
  /// pair. `cacheTokens`: a static tokens dimension may differ (a KV cache's
  /// max-tokens).
  FailureOr<Type> specialize(Type type, Location loc,
                             std::array<int64_t, 2> fixed, bool cacheTokens) {
    auto tensor = dyn_cast<RankedTensorType>(type);
    if (!tensor || tensor.hasStaticShape())
      return type;
    SmallVector<int64_t> shape(tensor.getShape());
    for (unsigned dim = 0; dim < shape.size(); ++dim) {
      int64_t &size = shape[dim];
      if (dim >= 2) {
        if (ShapedType::isDynamic(size))
          return emitError(loc) << "dynamic dimension " << dim << " of " << type
                                << " is neither batch nor tokens";
        continue;
      }
      // A static leading dimension must already agree: activations share
      // one batch and one sequence length.
      if (!ShapedType::isDynamic(size) && size != fixed[dim]) {
        if (dim == 1 && cacheTokens)
          continue;
        return emitError(loc)
               << type << ": static dimension " << dim << " is " << size
               << " but the module is specialized to " << fixed[dim];
      }
      size = fixed[dim];
    }
    return RankedTensorType::get(shape, tensor.getElementType(),
                                 tensor.getEncoding());
  }

  LogicalResult specialize(func::FuncOp func, std::array<int64_t, 2> fixed,
                           bool cacheTokens) {
    auto specializeType = [&](Type t, Location loc) {
      return specialize(t, loc, fixed, cacheTokens);
    };
    auto setType = [&](Value v) -> LogicalResult {
      FailureOr<Type> type = specializeType(v.getType(), v.getLoc());
      if (failed(type))
        return failure();
      v.setType(*type);
      return success();
    };
    WalkResult walk = func.walk([&](Operation *op) {
      for (Region &region : op->getRegions())
        for (Block &block : region)
          for (BlockArgument arg : block.getArguments())
            if (failed(setType(arg)))
              return WalkResult::interrupt();
      for (Value result : op->getResults())
        if (failed(setType(result)))
          return WalkResult::interrupt();
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return failure();

    SmallVector<Type> inputs, results;
    for (Type t : func.getArgumentTypes()) {
      FailureOr<Type> s = specializeType(t, func.getLoc());
      if (failed(s))
        return failure();
      inputs.push_back(*s);
    }
    for (Type t : func.getResultTypes()) {
      FailureOr<Type> s = specializeType(t, func.getLoc());
      if (failed(s))
        return failure();
      results.push_back(*s);
    }
    func.setType(FunctionType::get(func.getContext(), inputs, results));
    // The op verifiers re-check every shape relation with the new sizes
    // (e.g. a static tensor that disagrees with the specialized ones).
    return verify(func);
  }
};

} // namespace

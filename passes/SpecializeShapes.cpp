//===- SpecializeShapes.cpp - Static batch and tokens dimensions ----------===//
//
// Native code generation compiles one shape: the dynamic [batch, tokens]
// dimensions of the loom IR become the constants given to `bitloom compile`.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/IR/Verifier.h"

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
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (failed(specialize(func)))
        return signalPassFailure();
  }

private:
  /// The static form of `type`, or failure (reported at `loc`) when its
  /// dynamic dimensions are not the leading [batch, tokens] pair.
  FailureOr<Type> specialize(Type type, Location loc) {
    auto tensor = dyn_cast<RankedTensorType>(type);
    if (!tensor || tensor.hasStaticShape())
      return type;
    SmallVector<int64_t> shape(tensor.getShape());
    const int64_t fixed[2] = {batch, seqLen};
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
      if (!ShapedType::isDynamic(size) && size != fixed[dim])
        return emitError(loc)
               << type << ": static dimension " << dim << " is " << size
               << " but the module is specialized to " << fixed[dim];
      size = fixed[dim];
    }
    return RankedTensorType::get(shape, tensor.getElementType(),
                                 tensor.getEncoding());
  }

  LogicalResult specialize(func::FuncOp func) {
    auto setType = [&](Value v) -> LogicalResult {
      FailureOr<Type> type = specialize(v.getType(), v.getLoc());
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
      FailureOr<Type> s = specialize(t, func.getLoc());
      if (failed(s))
        return failure();
      inputs.push_back(*s);
    }
    for (Type t : func.getResultTypes()) {
      FailureOr<Type> s = specialize(t, func.getLoc());
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

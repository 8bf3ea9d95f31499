//===- Kernels.cpp - GPU kernels for the micro-kernel calls ---------------===//
#include "codegen/vulkan/Kernels.h"
#include "codegen/vulkan/KernelBuilders.h"

using namespace mlir;

namespace bitloom::codegen::vulkan {

FailureOr<SmallVector<KernelDispatch>>
buildUkernelDispatches(func::CallOp call, ModuleOp module,
                       const KernelTarget &target,
                       const KernelScratch &scratch) {
  StringRef name = call.getCallee();
  if (name.starts_with("bitloom_uk_ternary_matmul") ||
      name.starts_with("bitloom_uk_matmul_f32"))
    return buildMatmulDispatches(call, module, target, scratch);
  if (name.starts_with("bitloom_uk_attention"))
    return buildAttentionDispatches(call, module, target);
  if (name.starts_with("bitloom_uk_linear_cross_entropy"))
    return buildCrossEntropyDispatches(call, module, target, scratch);
  return call.emitError("no GPU kernel for micro-kernel @") << name;
}

} // namespace bitloom::codegen::vulkan

//===- KernelBuilders.h - Per-family micro-kernel replacements --*- C++ -*-===//
//
// buildUkernelDispatches (Kernels.h) dispatches on the callee's name to one
// of these. Each has its contract: the operands of `call` are those of the
// micro-kernel of the same name in runtime/ukernels (memref form).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_VULKAN_KERNELBUILDERS_H
#define BITLOOM_CODEGEN_VULKAN_KERNELBUILDERS_H

#include "codegen/vulkan/Kernels.h"

namespace bitloom::codegen::vulkan {

/// bitloom_uk_ternary_matmul, bitloom_uk_ternary_matmul_t,
/// bitloom_uk_matmul_f32, bitloom_uk_matmul_f32_bf16b.
mlir::FailureOr<llvm::SmallVector<KernelDispatch>>
buildMatmulDispatches(mlir::func::CallOp call, mlir::ModuleOp module,
                      const KernelTarget &target,
                      const KernelScratch &scratch = nullptr);

/// bitloom_uk_attention, bitloom_uk_attention_grad.
mlir::FailureOr<llvm::SmallVector<KernelDispatch>>
buildAttentionDispatches(mlir::func::CallOp call, mlir::ModuleOp module,
                         const KernelTarget &target);

/// bitloom_uk_linear_cross_entropy[_bf16w][_loss].
mlir::FailureOr<llvm::SmallVector<KernelDispatch>>
buildCrossEntropyDispatches(mlir::func::CallOp call, mlir::ModuleOp module,
                            const KernelTarget &target);

} // namespace bitloom::codegen::vulkan

#endif // BITLOOM_CODEGEN_VULKAN_KERNELBUILDERS_H

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

#include <string>

namespace bitloom::codegen::vulkan {

/// bitloom_uk_ternary_matmul, bitloom_uk_ternary_matmul_t,
/// bitloom_uk_matmul_f32, bitloom_uk_matmul_f32_bf16b.
mlir::FailureOr<llvm::SmallVector<KernelDispatch>>
buildMatmulDispatches(mlir::func::CallOp call, mlir::ModuleOp module,
                      const KernelTarget &target,
                      const KernelScratch &scratch = nullptr);

/// bitloom_uk_attention, bitloom_uk_attention_grad.
/// out[outRow0 + i, c] = multiplier · Σ_v a[i·lda + v] · b[v, c] for
/// i < m, c < cols, v < reduce, on f16 cooperative matrices with f32 sums
/// (each a row scaled by a power of two and split into two f16 terms, 22
/// significant bits; b
/// exact in f16: ternary, or bf16 above 2^-14 in magnitude). b is packed
/// ternary rows ([reduce] rows of cols columns) or bf16 [reduce, cols]
/// read as words. See MatmulKernels.cpp.
struct CoopGemm {
  int64_t m, reduce, cols, lda, ldc, outRow0;
  bool bf16B;
};
struct CoopGemmBuffers {
  mlir::Value a, b, multiplier /* null: 1 */, out;
  /// 2·m floats of scratch (the rows' scales).
  mlir::Value scales;
  int64_t aElements, bWords, outElements;
};
/// Whether the target and shape take the cooperative product: the tiles
/// divide m, reduce and cols, and the output (`outBytes`, stored by
/// cooperative stores, which a split binding cannot take) fits one binding.
bool coopGemmApplies(const KernelTarget &target, int64_t m, int64_t reduce,
                     int64_t cols, int64_t outBytes);
/// The two dispatches (row scales, products) of `g`, kernels named after
/// `name`.
void buildCoopGemm(mlir::ModuleOp module, mlir::Location loc,
                   const std::string &name, const CoopGemm &g,
                   const CoopGemmBuffers &buffers,
                   llvm::SmallVector<KernelDispatch> &dispatches);

mlir::FailureOr<llvm::SmallVector<KernelDispatch>>
buildAttentionDispatches(mlir::func::CallOp call, mlir::ModuleOp module,
                         const KernelTarget &target);

/// bitloom_uk_linear_cross_entropy[_bf16w][_loss].
mlir::FailureOr<llvm::SmallVector<KernelDispatch>>
buildCrossEntropyDispatches(mlir::func::CallOp call, mlir::ModuleOp module,
                            const KernelTarget &target,
                            const KernelScratch &scratch = nullptr);

} // namespace bitloom::codegen::vulkan

#endif // BITLOOM_CODEGEN_VULKAN_KERNELBUILDERS_H

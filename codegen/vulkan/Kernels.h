//===- Kernels.h - GPU kernels for the micro-kernel calls -------*- C++ -*-===//
//
// The CPU targets call the runtime's micro-kernels (runtime/ukernels) for
// the products that carry the FLOPs. GPU targets replace each such call by
// dispatches of kernels written here in the gpu dialect (gpu.func with
// arith / math / memref / scf bodies, shared memory as memref.alloc in the
// Workgroup storage class), which upstream -convert-gpu-to-spirv turns into
// SPIR-V compute shaders like every other dispatch of the step.
//
// The calls come from -loom-lower-to-linalg{ukernels ukernel-memrefs}: every
// pointer operand of runtime/ukernels/Ukernels.h (and Attention.h) is a
// memref with its static shape cast away (look through the memref.cast for
// it), absent optional operands are left out (the loss-only cross entropy is
// `bitloom_uk_linear_cross_entropy[_bf16w]_loss`), the ternary transposed
// product's multiplier is a memref<f32>, and sizes / flags are constants.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_VULKAN_KERNELS_H
#define BITLOOM_CODEGEN_VULKAN_KERNELS_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"

#include <array>
#include <cstdint>
#include <functional>
#include <string>

namespace bitloom::codegen::vulkan {

/// What the kernels may assume of the device (from its DeviceProfile).
struct KernelTarget {
  int64_t subgroupSize = 1;          // at least this many lanes per subgroup
  int64_t sharedMemoryBytes = 16384; // workgroup (shared) memory
  int64_t maxWorkgroupInvocations = 128;
  bool int8Arithmetic = false;    // shaderInt8
  bool storage8Bit = false;       // 8-bit storage buffer access
  bool integerDotProduct = false; // SPV_KHR_integer_dot_product
  /// (kernelTargetForProfile clears both cooperative-matrix flags under
  /// BITLOOM_VULKAN_NO_COOPERATIVE_MATRIX=1.)
  /// SPV_KHR_cooperative_matrix with a subgroup-scope 16x16x32 int8 product
  /// into int32, on 32-lane subgroups (the ternary forward's tensor-core
  /// kernel).
  bool cooperativeMatrixInt8 = false;
  /// Its 16x16x16 f16 product into f32, with shaderFloat16 (the ternary
  /// input gradient's tensor-core kernel).
  bool cooperativeMatrixF16 = false;
  bool float64 = true; // shaderFloat64
  /// Most bytes of the fused LM head's block of logits: GPUs with memory to
  /// spare take bigger (fewer, better-filled) products.
  int64_t logitsBlockBytes = int64_t(16) << 20;
  /// The largest range one storage buffer binding may cover.
  uint64_t maxStorageBufferRange = uint64_t(128) << 20;
  /// The most storage buffers one kernel may bind.
  uint32_t maxStorageBuffersPerKernel = 24;
};

/// One dispatch of a kernel: `kernel` names a gpu.module of `module` that
/// holds one kernel gpu.func of the same name (with its
/// spirv.entry_point_abi workgroup size); binding k of the dispatch is
/// `buffers[k]`, a memref value of the host function (an operand of the
/// call, seen through its memref.cast, or a buffer it was given).
struct KernelDispatch {
  std::string kernel;
  std::array<int64_t, 3> workgroups = {1, 1, 1};
  llvm::SmallVector<mlir::Value> buffers;
};

/// Scratch memory for a call's dispatches, where its operands have none:
/// returns a host buffer of `bytes` bytes (a range at the arena's end that
/// no planned buffer uses; every call gets the same one, so the dispatches
/// that use it are ordered by their bindings).
using KernelScratch = std::function<mlir::Value(int64_t bytes)>;

/// The dispatches that do what `call` (a micro-kernel call in the memref
/// form) does, in order, adding their kernels to `module` (a kernel already
/// there under the same name is reused: names encode every specialization:
/// shapes, flags, target choices). Fails with a diagnostic on `call` for an
/// unknown micro-kernel or an operand that is not what its contract says.
mlir::FailureOr<llvm::SmallVector<KernelDispatch>>
buildUkernelDispatches(mlir::func::CallOp call, mlir::ModuleOp module,
                       const KernelTarget &target,
                       const KernelScratch &scratch = nullptr);

} // namespace bitloom::codegen::vulkan

#endif // BITLOOM_CODEGEN_VULKAN_KERNELS_H

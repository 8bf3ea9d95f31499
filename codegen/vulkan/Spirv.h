//===- Spirv.h - gpu.module kernels to validated SPIR-V ---------*- C++ -*-===//
//
// The back end of Vulkan code generation: every gpu.module of a module goes
// through upstream -convert-gpu-to-spirv for the profile's target
// environment, is serialized, validated with SPIRV-Tools (spirv-val's rules
// for the target's Vulkan version) and optimized with SPIRV-Tools'
// performance passes, then validated again.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_VULKAN_SPIRV_H
#define BITLOOM_CODEGEN_VULKAN_SPIRV_H

#include "codegen/vulkan/Kernels.h"

#include "mlir/IR/BuiltinOps.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::codegen::vulkan {

/// A unit attribute on a kernel gpu.func: its float arithmetic must round as
/// written (every result decorated NoContraction, so neither spirv-opt nor
/// the driver folds, contracts or reassociates it). Generated kernels carry
/// it: they must quantize exactly as the CPU targets do. The hand-written
/// products leave it off and accumulate with fused multiply-adds.
inline constexpr llvm::StringLiteral kExactFloatAttrName = "loom.exact_float";

/// One compute shader: a SPIR-V module with one entry point.
struct SpirvKernel {
  std::string name;                     // the gpu.module's (unique) name
  std::string entryPoint;               // the gpu.func's name
  std::vector<uint32_t> words;          // the optimized, validated binary
  std::array<int64_t, 3> workgroupSize; // local size
  unsigned numBuffers = 0;              // storage buffers at bindings 0..n-1
};

/// The target environment attribute (#spirv.target_env) for `target`: Vulkan
/// 1.1 (SPIR-V 1.3; Vulkan 1.3 and SPIR-V 1.6 with integer dot products),
/// Shader plus the capabilities and extensions the target has (Int8 with
/// StorageBuffer8BitAccess, Float64, GroupNonUniform*, DotProduct*).
mlir::Attribute spirvTargetEnv(mlir::MLIRContext *context,
                               const KernelTarget &target);

/// Converts each gpu.module of `module` (one kernel gpu.func each) to
/// SPIR-V, serializes, validates, optimizes and validates again. The
/// gpu.modules are consumed (replaced by their spirv.modules). Fails with a
/// diagnostic naming the kernel when a step fails; SPIRV-Tools' messages are
/// in it.
mlir::FailureOr<std::vector<SpirvKernel>>
compileKernelsToSpirv(mlir::ModuleOp module, const KernelTarget &target,
                      bool optimize = true);

/// SPIR-V assembly of `words` (spirv-dis), for inspection and dumps.
std::string disassembleSpirv(const std::vector<uint32_t> &words);

} // namespace bitloom::codegen::vulkan

#endif // BITLOOM_CODEGEN_VULKAN_SPIRV_H

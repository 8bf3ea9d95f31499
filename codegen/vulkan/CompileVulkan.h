//===- CompileVulkan.h - A trained step to SPIR-V dispatches ----*- C++ -*-===//
//
// Ahead-of-time compilation of a statically shaped, differentiated loom
// module for a Vulkan device profile. The front half is the CPU targets'
// (lowering to linalg, bufferization, the static memory plan); then every
// top-level op of each entry point becomes one or more compute dispatches:
//  - linalg ops go through upstream MLIR: parallel loops, collapsed to one
//    dimension and tiled by the workgroup size, mapped to a gpu.launch and
//    outlined (-gpu-kernel-outlining);
//  - micro-kernel calls (the products) become dispatches of the kernels in
//    Kernels.h;
// and every kernel is converted to SPIR-V (Spirv.h). What remains on the host
// is a static schedule: per dispatch, a kernel, a workgroup grid and the
// byte ranges it binds (an entry point's argument or result, a model weight,
// or a range of the one arena).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_VULKAN_COMPILEVULKAN_H
#define BITLOOM_CODEGEN_VULKAN_COMPILEVULKAN_H

#include "codegen/cpu/CompileCpu.h"
#include "codegen/vulkan/Spirv.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::codegen::vulkan {

/// A byte range one dispatch binds.
struct GpuBinding {
  enum class Source { Argument, Result, Arena };
  Source source = Source::Arena;
  /// Argument / result index of the entry point's signature (arguments
  /// include weights, in FunctionSignature::args order).
  uint32_t index = 0;
  uint64_t offset = 0, size = 0;
  /// Whether the kernel may write the range (else it only reads it).
  bool written = true;
};

struct GpuDispatch {
  uint32_t kernel = 0; // index into CompiledVulkanModule::kernels
  std::array<uint32_t, 3> workgroups = {1, 1, 1};
  std::vector<GpuBinding> bindings;
  std::string op; // what it runs: "linalg.generic", "bitloom_uk_attention"
  /// The position in the planned schedule (cpu::PlannedBuffer's first/last)
  /// of the op this dispatch runs (all of a micro-kernel's share one).
  uint32_t schedulePosition = 0;
};

struct CompiledVulkanModule {
  std::vector<SpirvKernel> kernels;
  std::vector<cpu::FunctionSignature> functions;
  /// Per function, its schedule.
  std::vector<std::vector<GpuDispatch>> dispatches;
};

/// The device's capabilities a profile guarantees (DeviceProfile.h), as
/// kernel generation sees them.
KernelTarget kernelTargetForProfile(const std::string &profile);

/// Compiles `entries` of `module` (static shapes) for `target`. Throws
/// FormatError when a phase fails, naming the op it could not lower.
CompiledVulkanModule
compileForVulkan(mlir::ModuleOp module, const KernelTarget &target,
                 const std::vector<std::string> &entries,
                 const std::vector<std::string> &bf16Weights = {});

} // namespace bitloom::codegen::vulkan

#endif // BITLOOM_CODEGEN_VULKAN_COMPILEVULKAN_H

//===- Spirv.cpp - gpu.module kernels to validated SPIR-V -----------------===//
#include "codegen/vulkan/Spirv.h"

#include "mlir/Conversion/GPUToSPIRV/GPUToSPIRVPass.h"
#include "mlir/Conversion/MathToSPIRV/MathToSPIRVPass.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVAttributes.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVOps.h"
#include "mlir/Dialect/SPIRV/IR/TargetAndABI.h"
#include "mlir/Dialect/SPIRV/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/SPIRV/Serialization.h"

#include "spirv-tools/libspirv.hpp"
#include "spirv-tools/optimizer.hpp"

#include "llvm/ADT/StringMap.h"

using namespace mlir;

namespace bitloom::codegen::vulkan {

namespace {

/// Vulkan 1.3 where the target has integer dot products (core there), else
/// the baseline 1.1 every profile has.
bool needsVulkan13(const KernelTarget &target) {
  return target.integerDotProduct;
}

spv_target_env toolsEnv(const KernelTarget &target) {
  return needsVulkan13(target) ? SPV_ENV_VULKAN_1_3 : SPV_ENV_VULKAN_1_1;
}

/// SPIRV-Tools reports through a callback: collect its lines.
spvtools::MessageConsumer collectInto(std::string &messages) {
  return [&messages](spv_message_level_t, const char *, const spv_position_t &p,
                     const char *message) {
    messages += "\n  at word " + std::to_string(p.index) + ": " + message;
  };
}

/// What compileKernelsToSpirv needs of a kernel before conversion erases it.
struct KernelInfo {
  std::string name, entryPoint;
  std::array<int64_t, 3> workgroupSize = {1, 1, 1};
  bool exactFloat = false;
  unsigned numBuffers = 0;
};

/// Decorates every float arithmetic result NoContraction. The kernels must
/// compute what the CPU target computes, rounding for rounding: without the
/// decoration spirv-opt's folding rewrites (1 / m) · 127 as 127 / m and
/// x / 768 + eps as fma(x, 1/768, eps), and drivers may reassociate,
/// contract or use reciprocals too. Those last-bit differences flip
/// round-to-nearest ties in the activation quantization (HF's round(x·s)),
/// which models with bf16 norm weights hit often.
void decorateNoContraction(std::vector<uint32_t> &words) {
  constexpr uint32_t kOpDecorate = 71, kNoContraction = 42;
  auto isFloatArithmetic = [](uint32_t op) {
    switch (op) {
    case 127: // OpFNegate
    case 129: // OpFAdd
    case 131: // OpFSub
    case 133: // OpFMul
    case 136: // OpFDiv
    case 140: // OpFRem
    case 141: // OpFMod
    case 142: // OpVectorTimesScalar
    case 148: // OpDot
      return true;
    default:
      return false;
    }
  };
  // Instructions that come before the types: the decorations go after them.
  auto isPreamble = [](uint32_t op) {
    switch (op) {
    case 2:
    case 3:
    case 4:
    case 5:
    case 6:
    case 7: // debug
    case 10:
    case 11:
    case 14:
    case 15:
    case 16: // extensions, modes
    case 17:
    case 330:
    case 331: // capability, ...
    case 71:
    case 72:
    case 73:
    case 74:
    case 332: // annotations
    case 5632:
    case 5633:
      return true;
    default:
      return false;
    }
  };
  if (words.size() < 5)
    return;
  size_t insertAt = 0;
  std::vector<uint32_t> decorations;
  for (size_t i = 5; i < words.size();) {
    uint32_t count = words[i] >> 16, op = words[i] & 0xffff;
    if (count == 0 || i + count > words.size())
      return; // malformed: leave it to the validator
    if (!insertAt && !isPreamble(op))
      insertAt = i;
    if (isFloatArithmetic(op) && count >= 3)
      decorations.insert(decorations.end(), {(3u << 16) | kOpDecorate,
                                             words[i + 2], kNoContraction});
    i += count;
  }
  if (!insertAt || decorations.empty())
    return;
  words.insert(words.begin() + insertAt, decorations.begin(),
               decorations.end());
}

} // namespace

Attribute spirvTargetEnv(MLIRContext *context, const KernelTarget &target) {
  using spirv::Capability;
  using spirv::Extension;
  SmallVector<Capability> caps = {Capability::Shader,
                                  Capability::Int64,
                                  Capability::GroupNonUniform,
                                  Capability::GroupNonUniformArithmetic,
                                  Capability::GroupNonUniformBallot,
                                  Capability::GroupNonUniformShuffle};
  SmallVector<Extension> exts = {
      Extension::SPV_KHR_storage_buffer_storage_class};
  if (target.float64)
    caps.push_back(Capability::Float64);
  // i8 buffers are loaded as i8 only where i8 arithmetic exists too;
  // otherwise (and for i16, whose arithmetic no profile promises) MLIR
  // emulates them with 32-bit words.
  if (target.int8Arithmetic) {
    caps.push_back(Capability::Int8);
    if (target.storage8Bit) {
      caps.push_back(Capability::StorageBuffer8BitAccess);
      exts.push_back(Extension::SPV_KHR_8bit_storage);
    }
  }
  if (target.cooperativeMatrixF16)
    caps.push_back(Capability::Float16);
  if (target.cooperativeMatrixInt8 || target.cooperativeMatrixF16) {
    caps.push_back(Capability::CooperativeMatrixKHR);
    exts.push_back(Extension::SPV_KHR_cooperative_matrix);
  }
  if (target.integerDotProduct) {
    caps.push_back(Capability::DotProduct);
    caps.push_back(Capability::DotProductInput4x8BitPacked);
    exts.push_back(Extension::SPV_KHR_integer_dot_product);
  }
  auto triple = spirv::VerCapExtAttr::get(
      needsVulkan13(target) ? spirv::Version::V_1_6 : spirv::Version::V_1_3,
      caps, exts, context);
  Builder b(context);
  int64_t invocations = target.maxWorkgroupInvocations;
  auto limits = spirv::ResourceLimitsAttr::get(
      context, target.sharedMemoryBytes, invocations,
      b.getI32ArrayAttr({int32_t(invocations), int32_t(invocations), 64}),
      target.subgroupSize, std::nullopt, std::nullopt, ArrayAttr(),
      ArrayAttr());
  return spirv::TargetEnvAttr::get(triple, limits, spirv::ClientAPI::Vulkan);
}

FailureOr<std::vector<SpirvKernel>>
compileKernelsToSpirv(ModuleOp module, const KernelTarget &target,
                      bool optimize) {
  MLIRContext *context = module.getContext();
  // Record each kernel's entry point and local size: conversion rewrites
  // the gpu.funcs.
  llvm::StringMap<KernelInfo> kernels;
  SmallVector<std::string> order;
  for (auto gpuModule : module.getOps<gpu::GPUModuleOp>()) {
    auto funcs = gpuModule.getOps<gpu::GPUFuncOp>();
    if (std::distance(funcs.begin(), funcs.end()) != 1)
      return gpuModule.emitError("expected exactly one kernel per gpu.module");
    gpu::GPUFuncOp func = *funcs.begin();
    KernelInfo info;
    info.name = gpuModule.getName().str();
    info.entryPoint = func.getName().str();
    info.numBuffers = func.getNumArguments();
    info.exactFloat = func->hasAttr(kExactFloatAttrName);
    if (auto abi = func->getAttrOfType<spirv::EntryPointABIAttr>(
            spirv::getEntryPointABIAttrName()))
      if (DenseI32ArrayAttr size = abi.getWorkgroupSize())
        for (auto [i, extent] : llvm::enumerate(size.asArrayRef()))
          if (i < 3)
            info.workgroupSize[i] = extent;
    kernels[gpuModule.getName()] = info;
    order.push_back(gpuModule.getName().str());
  }
  // nsw/nuw become NoSignedWrap decorations, which need an extension that
  // Vulkan 1.1 devices need not have: drop them (they only license
  // optimizations).
  module.walk([](arith::ArithIntegerOverflowFlagsInterface op) {
    op->setAttr(op.getIntegerOverflowAttrName(),
                arith::IntegerOverflowFlagsAttr::get(
                    op->getContext(), arith::IntegerOverflowFlags::none));
  });
  module->setAttr(spirv::getTargetEnvAttrName(),
                  spirvTargetEnv(context, target));
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(context));

  PassManager pm(context);
  // Subviews (a KV cache row) become index arithmetic on their loads.
  pm.addNestedPass<gpu::GPUModuleOp>(memref::createFoldMemRefAliasOpsPass());
  // -convert-gpu-to-spirv converts arith, scf and memref itself; math goes
  // first, to the GLSL extended instructions.
  pm.addNestedPass<gpu::GPUModuleOp>(createConvertMathToSPIRVPass());
  pm.addPass(createConvertGPUToSPIRVPass(/*mapMemorySpace=*/true));
  OpPassManager &spirvModules = pm.nest<spirv::ModuleOp>();
  spirvModules.addPass(spirv::createSPIRVLowerABIAttributesPass());
  spirvModules.addPass(spirv::createSPIRVUpdateVCEPass());
  if (failed(pm.run(module)))
    return failure();
  // -convert-gpu-to-spirv leaves integer cooperative products without
  // operand flags, which makes their components unsigned: the kernels'
  // int8 operands are signed.
  module.walk([&](spirv::KHRCooperativeMatrixMulAddOp op) {
    auto a = cast<spirv::CooperativeMatrixType>(op.getA().getType());
    if (!isa<IntegerType>(a.getElementType()))
      return;
    op->setAttr(
        op.getMatrixOperandsAttrName(),
        spirv::CooperativeMatrixOperandsKHRAttr::get(
            context, spirv::CooperativeMatrixOperandsKHR::ASigned |
                         spirv::CooperativeMatrixOperandsKHR::BSigned |
                         spirv::CooperativeMatrixOperandsKHR::CSigned |
                         spirv::CooperativeMatrixOperandsKHR::ResultSigned));
  });

  // -spirv-lower-abi-attrs lists an entry point's interface by the target's
  // SPIR-V version (every global from 1.4 on), while -spirv-update-vce picks
  // the least version the ops need: declare the target's version.
  spirv::Version version =
      needsVulkan13(target) ? spirv::Version::V_1_6 : spirv::Version::V_1_3;
  for (auto spirvModule : module.getOps<spirv::ModuleOp>())
    if (std::optional<spirv::VerCapExtAttr> triple =
            spirvModule.getVceTriple()) {
      SmallVector<spirv::Capability> caps(triple->getCapabilities());
      SmallVector<spirv::Extension> exts(triple->getExtensions());
      spirvModule.setVceTripleAttr(
          spirv::VerCapExtAttr::get(version, caps, exts, context));
    }
  spvtools::SpirvTools tools(toolsEnv(target));
  spvtools::ValidatorOptions validatorOptions;
  // Storage buffers are std430-laid-out structs: the scalar layout check
  // would reject nothing here, the relaxed one matches Vulkan's rules.
  validatorOptions.SetRelaxBlockLayout(true);
  std::vector<SpirvKernel> result;
  llvm::StringMap<spirv::ModuleOp> spirvByName;
  for (auto spirvModule : module.getOps<spirv::ModuleOp>())
    if (std::optional<StringRef> name = spirvModule.getName())
      spirvByName[*name] = spirvModule;
  for (const std::string &gpuName : order) {
    const KernelInfo &info = kernels[gpuName];
    // -convert-gpu-to-spirv names each module after its gpu.module.
    auto it = spirvByName.find("__spv__" + gpuName);
    if (it == spirvByName.end())
      return module.emitError("kernel ")
             << info.name << ": no SPIR-V module after conversion";
    SmallVector<uint32_t> binary;
    if (failed(spirv::serialize(it->second, binary)))
      return it->second.emitError("kernel ")
             << info.name << ": SPIR-V serialization failed";
    std::vector<uint32_t> words(binary.begin(), binary.end());
    if (info.exactFloat)
      decorateNoContraction(words);
    // SPIRV-Tools 2023.1 (Debian 12) predates SPV_KHR_cooperative_matrix:
    // it can neither validate nor optimize such a kernel, which goes to
    // the driver as MLIR serialized it (and is checked by its results).
    bool cooperative = false;
    if (std::optional<spirv::VerCapExtAttr> triple = it->second.getVceTriple())
      cooperative = llvm::is_contained(triple->getCapabilities(),
                                       spirv::Capability::CooperativeMatrixKHR);
    if (cooperative) {
      result.push_back({info.name, info.entryPoint, std::move(words),
                        info.workgroupSize, info.numBuffers});
      continue;
    }
    std::string messages;
    tools.SetMessageConsumer(collectInto(messages));
    if (!tools.Validate(words.data(), words.size(), validatorOptions))
      return module.emitError("kernel ")
             << info.name << ": generated SPIR-V is invalid:" << messages;
    if (optimize) {
      spvtools::Optimizer optimizer(toolsEnv(target));
      optimizer.SetMessageConsumer(collectInto(messages));
      optimizer.RegisterPerformancePasses();
      std::vector<uint32_t> optimized;
      if (!optimizer.Run(words.data(), words.size(), &optimized,
                         validatorOptions, /*skip_validation=*/false))
        return module.emitError("kernel ")
               << info.name << ": SPIR-V optimization failed:" << messages;
      if (!tools.Validate(optimized.data(), optimized.size(), validatorOptions))
        return module.emitError("kernel ")
               << info.name << ": optimized SPIR-V is invalid:" << messages;
      words = std::move(optimized);
    }
    result.push_back({info.name, info.entryPoint, std::move(words),
                      info.workgroupSize, info.numBuffers});
  }
  // The device code now lives in `result`; the host module keeps no copy.
  for (auto gpuModule :
       llvm::make_early_inc_range(module.getOps<gpu::GPUModuleOp>()))
    gpuModule.erase();
  for (auto spirvModule :
       llvm::make_early_inc_range(module.getOps<spirv::ModuleOp>()))
    spirvModule.erase();
  return result;
}

std::string disassembleSpirv(const std::vector<uint32_t> &words) {
  spvtools::SpirvTools tools(SPV_ENV_VULKAN_1_3);
  std::string text;
  if (!tools.Disassemble(words, &text,
                         SPV_BINARY_TO_TEXT_OPTION_FRIENDLY_NAMES |
                             SPV_BINARY_TO_TEXT_OPTION_INDENT))
    return "; (SPIRV-Tools could not disassemble the binary: kernels that use "
           "SPV_KHR_cooperative_matrix are newer than this SPIRV-Tools)\n";
  return text;
}

} // namespace bitloom::codegen::vulkan

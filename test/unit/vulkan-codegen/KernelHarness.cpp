//===- KernelHarness.cpp - Run one micro-kernel call's GPU kernels --------===//
#include "KernelHarness.h"

#include "hal/vulkan/VulkanContext.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <exception>
#include <map>

using namespace mlir;

namespace bitloom::test {

using codegen::vulkan::KernelDispatch;
using codegen::vulkan::KernelTarget;
using codegen::vulkan::SpirvKernel;

KernelHarness::KernelHarness() {
  try {
    std::vector<vulkan::DeviceInfo> devices = vulkan::enumerateDevices();
    if (devices.empty()) {
      reason = "no Vulkan device";
      return;
    }
    // Whatever the device offers, so that every kernel variant can run.
    const vulkan::DeviceInfo &d = devices[0];
    vulkan::DeviceFeatures features;
    features.shaderFloat64 = d.shaderFloat64;
    features.shaderInt8 = d.shaderInt8;
    features.shaderFloat16 = d.shaderFloat16;
    features.storageBuffer8BitAccess = d.storageBuffer8BitAccess;
    features.storageBuffer16BitAccess = d.storageBuffer16BitAccess;
    features.integerDotProduct = d.integerDotProduct;
    features.cooperativeMatrix =
        d.cooperativeMatrixInt8 || d.cooperativeMatrixF16;
    context = std::make_unique<vulkan::VulkanContext>(0, nullptr, features);
  } catch (const std::exception &e) {
    reason = std::string("no usable Vulkan device: ") + e.what();
  }
}

KernelHarness::~KernelHarness() = default;

KernelTarget KernelHarness::deviceTarget() const {
  KernelTarget t;
  if (!context)
    return t;
  const vulkan::DeviceInfo &d = context->device();
  t.subgroupSize = d.subgroupSize;
  t.sharedMemoryBytes = d.maxComputeSharedMemorySize;
  t.maxWorkgroupInvocations = d.maxComputeWorkGroupInvocations;
  t.int8Arithmetic = d.shaderInt8;
  t.storage8Bit = d.storageBuffer8BitAccess;
  t.integerDotProduct = d.integerDotProduct;
  t.cooperativeMatrixInt8 = d.cooperativeMatrixInt8;
  t.cooperativeMatrixF16 = d.cooperativeMatrixF16 && d.shaderFloat16;
  return t;
}

namespace {

/// Every dialect the kernel builders may create ops of.
void loadDialects(MLIRContext &ctx) {
  DialectRegistry registry;
  registry.insert<arith::ArithDialect, func::FuncDialect, gpu::GPUDialect,
                  math::MathDialect, memref::MemRefDialect, scf::SCFDialect,
                  spirv::SPIRVDialect, vector::VectorDialect>();
  ctx.appendDialectRegistry(registry);
  ctx.loadAllAvailableDialects();
}

/// The call's view of a buffer: every dimension dynamic.
MemRefType dynamicType(MemRefType t) {
  SmallVector<int64_t> shape(t.getRank(), ShapedType::kDynamic);
  return MemRefType::get(shape, t.getElementType());
}

int64_t byteSize(MemRefType t) {
  return t.getNumElements() * ((t.getElementTypeBitWidth() + 7) / 8);
}

} // namespace

HarnessResult compileUkernelCall(const std::string &callee,
                                 const std::vector<HarnessBuffer> &buffers,
                                 const std::vector<HarnessOperand> &operands,
                                 const KernelTarget &target) {
  HarnessResult result;
  MLIRContext ctx;
  loadDialects(ctx);
  std::string diagnostics;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    llvm::raw_string_ostream os(diagnostics);
    os << d << "\n";
    return success();
  });
  auto fail = [&](const std::string &what) {
    result.ok = false;
    result.error = what + (diagnostics.empty() ? "" : ":\n" + diagnostics);
    return result;
  };

  // The argument types.
  SmallVector<MemRefType> types;
  for (auto [i, buffer] : llvm::enumerate(buffers)) {
    auto t = dyn_cast_or_null<MemRefType>(parseType(buffer.type, &ctx));
    if (!t || !t.hasStaticShape())
      return fail("buffer " + std::to_string(i) + ": '" + buffer.type +
                  "' is not a static memref type");
    if (!buffer.bytes.empty() && int64_t(buffer.bytes.size()) != byteSize(t))
      return fail("buffer " + std::to_string(i) + ": " +
                  std::to_string(buffer.bytes.size()) + " bytes for " +
                  buffer.type);
    types.push_back(t);
    result.bufferBytes.push_back(byteSize(t));
  }

  // @test and the callee's declaration.
  Location loc = UnknownLoc::get(&ctx);
  OpBuilder b(&ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  SmallVector<Type> argTypes(types.begin(), types.end());
  auto test =
      func::FuncOp::create(b, loc, "test", b.getFunctionType(argTypes, {}));
  Block *entry = test.addEntryBlock();
  b.setInsertionPointToStart(entry);
  SmallVector<Value> callOperands;
  for (const HarnessOperand &op : operands) {
    switch (op.kind) {
    case HarnessOperand::Kind::Buffer: {
      if (op.integer < 0 || op.integer >= int64_t(buffers.size()))
        return fail("operand names buffer " + std::to_string(op.integer) +
                    " of " + std::to_string(buffers.size()));
      Value arg = entry->getArgument(op.integer);
      MemRefType dynamic = dynamicType(types[op.integer]);
      if (dynamic != arg.getType())
        arg = memref::CastOp::create(b, loc, dynamic, arg);
      callOperands.push_back(arg);
      break;
    }
    case HarnessOperand::Kind::I64:
      callOperands.push_back(
          arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(op.integer)));
      break;
    case HarnessOperand::Kind::I32:
      callOperands.push_back(
          arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(op.integer)));
      break;
    case HarnessOperand::Kind::F32:
      callOperands.push_back(
          arith::ConstantOp::create(b, loc, b.getF32FloatAttr(op.real)));
      break;
    }
  }
  auto call = func::CallOp::create(b, loc, callee, TypeRange{}, callOperands);
  func::ReturnOp::create(b, loc);
  b.setInsertionPointToEnd(module->getBody());
  auto decl = func::FuncOp::create(
      b, loc, callee,
      b.getFunctionType(ValueRange(callOperands).getTypes(), {}));
  decl.setPrivate();

  FailureOr<SmallVector<KernelDispatch>> dispatches =
      codegen::vulkan::buildUkernelDispatches(call, *module, target);
  if (failed(dispatches))
    return fail("buildUkernelDispatches failed");
  {
    llvm::raw_string_ostream os(result.kernelIR);
    module->print(os);
  }
  if (failed(module->verify()))
    return fail("the module with the kernels does not verify");
  // Bindings by argument index.
  for (const KernelDispatch &d : *dispatches) {
    std::vector<unsigned> args;
    for (Value v : d.buffers) {
      auto arg = dyn_cast<BlockArgument>(v);
      if (!arg || arg.getOwner() != entry)
        return fail("dispatch of " + d.kernel +
                    " binds a value that is not an argument of @test");
      args.push_back(arg.getArgNumber());
    }
    result.bindings.push_back(std::move(args));
    result.kernels.push_back(d.kernel);
    result.workgroups.push_back(d.workgroups);
  }

  FailureOr<std::vector<SpirvKernel>> kernels =
      codegen::vulkan::compileKernelsToSpirv(*module, target);
  if (failed(kernels))
    return fail("compileKernelsToSpirv failed");
  result.spirv = std::move(*kernels);
  result.ok = true;
  return result;
}

HarnessResult KernelHarness::run(const std::string &callee,
                                 const std::vector<HarnessBuffer> &buffers,
                                 const std::vector<HarnessOperand> &operands,
                                 const KernelTarget &target, bool timed) {
  if (!context) {
    HarnessResult result;
    result.error = reason;
    return result;
  }
  HarnessResult result = compileUkernelCall(callee, buffers, operands, target);
  if (!result.ok)
    return result;
  result.ok = false;
  auto fail = [&](const std::string &what) {
    result.ok = false;
    result.error = what;
    return result;
  };
  std::map<std::string, const SpirvKernel *> byName;
  for (const SpirvKernel &k : result.spirv)
    byName[k.name] = &k;

  try {
    vulkan::VulkanContext &vk = *context;
    std::vector<vulkan::Buffer> deviceBuffers;
    for (auto [i, size] : llvm::enumerate(result.bufferBytes)) {
      uint64_t bytes = std::max<int64_t>(size, 4);
      deviceBuffers.push_back(vk.allocate(bytes));
      std::vector<uint8_t> init = buffers[i].bytes;
      init.resize(bytes, 0);
      vk.upload(deviceBuffers.back(), init.data(), bytes);
    }
    std::map<std::string, vulkan::Pipeline> pipelines;
    vulkan::CommandSequence sequence = vk.record();
    for (size_t d = 0; d < result.kernels.size(); ++d) {
      const std::string &name = result.kernels[d];
      const std::vector<unsigned> &args = result.bindings[d];
      auto it = byName.find(name);
      if (it == byName.end())
        return fail("no SPIR-V for kernel " + name);
      const SpirvKernel &k = *it->second;
      if (k.numBuffers != args.size())
        return fail("kernel " + name + " has " + std::to_string(k.numBuffers) +
                    " buffers, its dispatch " + std::to_string(args.size()));
      vulkan::Pipeline &pipeline = pipelines[name];
      if (!pipeline)
        pipeline = vk.createPipeline(k.words, k.numBuffers, 0, k.entryPoint);
      std::vector<vulkan::BufferRange> bound;
      for (unsigned a : args)
        bound.push_back(deviceBuffers[a]);
      const std::array<int64_t, 3> &grid = result.workgroups[d];
      sequence.dispatch(pipeline, bound, nullptr, 0, grid[0], grid[1], grid[2]);
    }
    vk.submitAndWait(sequence);
    if (timed) {
      auto start = std::chrono::steady_clock::now();
      vk.submitAndWait(sequence);
      result.seconds = std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - start)
                           .count();
    }
    for (auto [i, size] : llvm::enumerate(result.bufferBytes)) {
      std::vector<uint8_t> out(size);
      if (!out.empty())
        vk.download(deviceBuffers[i], out.data(), out.size());
      result.buffers.push_back(std::move(out));
    }
  } catch (const std::exception &e) {
    return fail(std::string("Vulkan: ") + e.what());
  }
  result.ok = true;
  return result;
}

} // namespace bitloom::test

//===- NativeEmitterTest.cpp - MLIR to shared objects, loaded and run -----===//
#include "codegen/native/NativeEmitter.h"
#include "formats/Error.h"
#include "hal/cpu/NativeLibrary.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include <gtest/gtest.h>

#include <elf.h>

using namespace mlir;

namespace {

// y[i] += a * x[i] with scf loops on static memrefs: the shape compiled
// kernels have after bufferization.
constexpr const char *kAxpy = R"mlir(
func.func @axpy(%x: memref<16xf32>, %y: memref<16xf32>, %a: memref<f32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c16 = arith.constant 16 : index
  %s = memref.load %a[] : memref<f32>
  scf.for %i = %c0 to %c16 step %c1 {
    %xv = memref.load %x[%i] : memref<16xf32>
    %yv = memref.load %y[%i] : memref<16xf32>
    %p = arith.mulf %s, %xv : f32
    %r = arith.addf %yv, %p : f32
    memref.store %r, %y[%i] : memref<16xf32>
  }
  return
}
)mlir";

OwningOpRef<ModuleOp> lowerToLLVM(MLIRContext &context) {
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(kAxpy, &context);
  if (!module)
    return {};
  PassManager pm(&context);
  if (failed(parsePassPipeline(
          "convert-scf-to-cf, convert-cf-to-llvm, convert-arith-to-llvm, "
          "finalize-memref-to-llvm, "
          "convert-func-to-llvm{use-bare-ptr-memref-call-conv=1}, "
          "reconcile-unrealized-casts",
          pm)) ||
      failed(pm.run(*module)))
    return {};
  return module;
}

class NativeEmitter : public ::testing::Test {
protected:
  void SetUp() override {
    DialectRegistry registry;
    registerAllDialects(registry);
    registerAllExtensions(registry);
    context.appendDialectRegistry(registry);
    registerAllPasses();
  }
  MLIRContext context;
};

TEST_F(NativeEmitter, HostSharedObjectRuns) {
  OwningOpRef<ModuleOp> module = lowerToLLVM(context);
  ASSERT_TRUE(module);
  bitloom::native::addPackedEntryPoints(*module);
#if defined(__x86_64__)
  auto target = bitloom::native::resolveNativeTarget("cpu-x86_64", "native");
#else
  auto target = bitloom::native::resolveNativeTarget("cpu-arm64", "native");
#endif
  std::string assembly;
  std::vector<uint8_t> so =
      bitloom::native::emitSharedObject(*module, target, &assembly);
  EXPECT_NE(assembly.find("axpy"), std::string::npos);
  auto library =
      bitloom::hal::cpu::NativeLibrary::load("test", so.data(), so.size());
  auto axpy = library->lookup("axpy_packed");
  std::vector<float> x(16), y(16);
  for (int i = 0; i < 16; ++i) {
    x[i] = float(i);
    y[i] = 1.0f;
  }
  float a = 0.5f;
  void *bindings[] = {x.data(), y.data(), &a};
  axpy(bindings);
  for (int i = 0; i < 16; ++i)
    EXPECT_FLOAT_EQ(y[i], 1.0f + 0.5f * float(i));
}

TEST_F(NativeEmitter, CrossCompilesForArm64) {
  OwningOpRef<ModuleOp> module = lowerToLLVM(context);
  ASSERT_TRUE(module);
  bitloom::native::addPackedEntryPoints(*module);
  auto target = bitloom::native::resolveNativeTarget("cpu-arm64", "cortex-a76");
  std::string assembly;
  std::vector<uint8_t> so =
      bitloom::native::emitSharedObject(*module, target, &assembly);
  ASSERT_GE(so.size(), sizeof(Elf64_Ehdr));
  Elf64_Ehdr header;
  std::memcpy(&header, so.data(), sizeof(header));
  EXPECT_EQ(header.e_machine, EM_AARCH64);
  EXPECT_EQ(header.e_type, ET_DYN);
  // NEON code for the loop (fmla / fmul+fadd) on a cortex-a76.
  EXPECT_NE(assembly.find("axpy_packed"), std::string::npos);
}

TEST_F(NativeEmitter, BadTargetsAreClearErrors) {
  EXPECT_THROW(bitloom::native::resolveNativeTarget("cpu-riscv", "generic"),
               bitloom::FormatError);
#if defined(__x86_64__)
  try {
    bitloom::native::resolveNativeTarget("cpu-arm64", "native");
    FAIL() << "expected an error";
  } catch (const bitloom::FormatError &e) {
    EXPECT_NE(std::string(e.what()).find("--cpu"), std::string::npos);
  }
#endif
}

} // namespace

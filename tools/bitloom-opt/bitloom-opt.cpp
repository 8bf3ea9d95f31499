//===- bitloom-opt.cpp - mlir-opt with bitloom's dialects and passes ------===//
#include "codegen/cpu/Pipeline.h"
#include "codegen/vulkan/Passes.h"
#include "dialects/loom/LoomDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  // Upstream's dialects, interface models and passes as in mlir-opt, so any
  // stage of the CPU pipeline (codegen/cpu/Pipeline.cpp) can be replayed.
  bitloom::codegen::cpu::registerCpuLoweringDependencies(registry);
  mlir::registerAllPasses();
  bitloom::registerLoomPasses();
  bitloom::codegen::vulkan::registerLoomVulkanPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "bitloom optimizer driver\n", registry));
}

//===- bitloom-opt.cpp - mlir-opt with bitloom's dialects and passes ------===//
#include "dialects/loom/LoomDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<bitloom::loom::LoomDialect, mlir::func::FuncDialect>();
  mlir::registerTransformsPasses(); // canonicalize, cse, ...
  bitloom::registerLoomPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "bitloom optimizer driver\n", registry));
}

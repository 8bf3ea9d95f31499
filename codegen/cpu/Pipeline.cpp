//===- Pipeline.cpp - loom IR to the LLVM dialect for CPUs ----------------===//
#include "codegen/cpu/Pipeline.h"

#include "dialects/loom/LoomDialect.h"
#include "passes/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

using namespace mlir;

namespace bitloom::codegen::cpu {

void registerCpuLoweringDependencies(DialectRegistry &registry) {
  registry.insert<loom::LoomDialect>();
  // Bufferization and the conversions to LLVM find their op behaviour in
  // external models spread over many dialects: register them all, as
  // mlir-opt does, rather than chase the list.
  registerAllDialects(registry);
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
}

void buildCpuPlanningPipeline(OpPassManager &pm, bool ukernels) {
  bitloom::LoomLowerToLinalgOptions lowering;
  lowering.ukernels = ukernels;
  pm.addPass(bitloom::createLoomLowerToLinalg(lowering));

  // Tensors to buffers. Function boundaries use plain (identity-layout)
  // memrefs so the runtime passes dense arrays.
  bufferization::OneShotBufferizePassOptions bufferize;
  bufferize.bufferizeFunctionBoundaries = true;
  bufferize.functionBoundaryTypeConversion =
      bufferization::LayoutMapOption::IdentityLayoutMap;
  pm.addPass(bufferization::createOneShotBufferizePass(bufferize));
  // Results become caller-allocated outputs: the runtime owns every buffer
  // that crosses the boundary (and will place them in its arena).
  bufferization::BufferResultsToOutParamsPassOptions outParams;
  outParams.hoistStaticAllocs = true;
  outParams.modifyPublicFunctions = true;
  pm.addPass(bufferization::createBufferResultsToOutParamsPass(outParams));
  // Every remaining buffer gets a static offset in one arena argument: no
  // allocation at run time, and the peak is known now.
  pm.addPass(bitloom::createLoomPlanArena());
}

void buildCpuLoweringPipeline(OpPassManager &pm, bool barePointers,
                              bool ukernels) {
  buildCpuPlanningPipeline(pm, ukernels);

  // Scalar loops; tiling and vectorization come later.
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  ConvertFuncToLLVMPassOptions funcToLLVM;
  funcToLLVM.useBarePtrCallConv = barePointers;
  pm.addPass(createConvertFuncToLLVMPass(funcToLLVM));
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}

} // namespace bitloom::codegen::cpu

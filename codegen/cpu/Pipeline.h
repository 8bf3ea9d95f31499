//===- Pipeline.h - loom IR to the LLVM dialect for CPUs --------*- C++ -*-===//
//
// The phase after autodiff for the CPU target: a statically shaped loom
// module (-loom-specialize-shapes) to LLVM dialect, ready for translation to
// LLVM IR and object code (or the JIT, as the tests do).
//
// The ABI of every lowered function: its inputs as memrefs with the identity
// layout, in order (the original arguments, then one per `loom.param` weight,
// in first-use order, as -loom-lower-to-linalg appends them), followed by
// one output memref per result, in order, that the caller allocates
// (buffer-results-to-out-params), then the arena (-loom-plan-arena): a
// `memref<N x i8>` the caller allocates, holding every transient buffer at
// its planned offset. Each memref is passed as its expanded LLVM descriptor
// (allocated pointer, aligned pointer, offset, sizes, strides).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_CPU_PIPELINE_H
#define BITLOOM_CODEGEN_CPU_PIPELINE_H

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"

namespace bitloom::codegen::cpu {

/// Dialects, interface models (bufferization, deallocation, conversion to
/// LLVM) and LLVM IR translations the pipeline and the JIT need.
void registerCpuLoweringDependencies(mlir::DialectRegistry &registry);

/// -loom-lower-to-linalg, one-shot bufferization across function
/// boundaries, caller-allocated results and -loom-plan-arena: the module
/// with its memory plan (function attributes loom.arena_bytes,
/// loom.memory_plan), before any code generation.
void buildCpuPlanningPipeline(mlir::OpPassManager &pm, bool ukernels = false);

/// The planning pipeline, then linalg to loops and the standard conversions
/// to the LLVM dialect.
/// `barePointers`: pass each (static, identity-layout) memref as a bare
/// pointer to its data instead of an expanded descriptor — the ABI of
/// ahead-of-time compiled artifacts, whose runtime binds raw buffers.
/// `ukernels`: matrix products call the runtime's micro-kernels and frozen
/// bitlinear weights are passed packed (see -loom-lower-to-linalg).
void buildCpuLoweringPipeline(mlir::OpPassManager &pm,
                              bool barePointers = false, bool ukernels = false);

} // namespace bitloom::codegen::cpu

#endif // BITLOOM_CODEGEN_CPU_PIPELINE_H

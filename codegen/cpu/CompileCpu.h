//===- CompileCpu.h - A trained step to a native shared object --*- C++ -*-===//
//
// Ahead-of-time compilation of a statically shaped, differentiated loom
// module for a CPU: the CPU lowering pipeline with bare-pointer arguments,
// packed entry points, LLVM's code generator and ld.lld. Records each entry
// point's signature (names, shapes, which arguments are model weights) so a
// runtime can bind buffers without MLIR.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_CPU_COMPILECPU_H
#define BITLOOM_CODEGEN_CPU_COMPILECPU_H

#include "codegen/native/NativeEmitter.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::codegen::cpu {

struct TensorSignature {
  std::string name; // loom.name
  std::vector<int64_t> shape;
  bool isInt = false;    // i32 (tokens, positions, labels) else f32
  bool isWeight = false; // a frozen model weight (loom.param argument)
  /// "f32", "i32", "i8" (packed ternary bytes) or "bf16" (a bf16 weight).
  std::string dtype = "f32";
  /// Weights: "" (f32 values), "i2x128" (packed ternary bytes, shape
  /// [out, row bytes]), "ternary_scale" (the packed weight's multiplier) or
  /// "bf16" (the model's bf16 values as stored).
  std::string packing;
  int64_t numElements() const;
  /// Bytes of the buffer the runtime binds.
  int64_t byteSize() const;
};

/// A transient buffer of an entry point, placed in its arena by
/// -loom-plan-arena: live over the inclusive range [first, last] of
/// top-level ops of the compiled step (its schedule).
struct PlannedBuffer {
  int64_t offset = 0, size = 0;
  int64_t first = 0, last = 0;
  std::string owner; // "<model module> (<op or micro-kernel>)"
};

/// Bindings of `<name>_packed(void **)`: args in order, one output buffer
/// per result, in order, then the arena (`arenaBytes`, 64-byte aligned,
/// contents dead between calls).
struct FunctionSignature {
  std::string name;
  std::vector<TensorSignature> args, results;
  int64_t arenaBytes = 0;
  int64_t scheduleLength = 0;
  std::vector<PlannedBuffer> buffers;
};

struct CompiledCpuModule {
  std::vector<uint8_t> sharedObject;
  std::string assembly;
  /// The optimized LLVM module the shared object was generated from, as
  /// bitcode (withBitcode only): the `llvm-bc` executable of an artifact.
  std::string bitcode;
  std::vector<FunctionSignature> functions;
  const FunctionSignature *find(const std::string &name) const;
};

/// Compiles `entries` of `module` (which must have static shapes: run
/// -loom-specialize-shapes first). The module itself is left unchanged.
/// Throws FormatError when a phase fails.
/// `withAssembly` also renders the target assembly (a second code
/// generation run); `withBitcode` keeps the optimized LLVM module as bitcode
/// (what `bitloom inspect --dump-kernels` reads from an artifact).
/// `bf16Weights` names the model's weights stored in bf16
/// (bf16WeightNames): those still frozen in `module` (loom.param) go to
/// -loom-lower-to-linalg's bf16-params, so an embedding / LM head among them
/// stays bf16 (packing "bf16").
CompiledCpuModule
compileForCpu(mlir::ModuleOp module, const native::NativeTarget &target,
              const std::vector<std::string> &entries,
              bool withAssembly = false, bool withBitcode = false,
              const std::vector<std::string> &bf16Weights = {});

/// What compileForCpu would plan, without generating code: each entry
/// point's signature with its arena and buffers (for choosing what to
/// recompute under a memory budget).
std::vector<FunctionSignature>
planForCpu(mlir::ModuleOp module, const std::vector<std::string> &entries,
           const std::vector<std::string> &bf16Weights = {});

/// The module planForCpu plans, kept: `entries` of `module` through
/// -loom-plan-arena, their signatures in `signatures`. GPU targets start
/// from it with `ukernelMemrefs` (micro-kernel calls on memrefs, which they
/// replace by their own kernels). `logitsBlockBytes` (0: the pass's
/// default) bounds the fused LM head's block of logits.
mlir::OwningOpRef<mlir::ModuleOp>
planModule(mlir::ModuleOp module, const std::vector<std::string> &entries,
           const std::vector<std::string> &bf16Weights, bool ukernelMemrefs,
           std::vector<FunctionSignature> &signatures,
           int64_t logitsBlockBytes = 0);

} // namespace bitloom::codegen::cpu

#endif // BITLOOM_CODEGEN_CPU_COMPILECPU_H

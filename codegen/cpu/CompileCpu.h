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

#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::codegen::cpu {

struct TensorSignature {
  std::string name; // loom.name
  std::vector<int64_t> shape;
  bool isInt = false;    // i32 (tokens, positions, labels) else f32
  bool isWeight = false; // a frozen model weight (loom.param argument)
  int64_t numElements() const;
};

/// Bindings of `<name>_packed(void **)`: args in order, then one output
/// buffer per result, in order.
struct FunctionSignature {
  std::string name;
  std::vector<TensorSignature> args, results;
};

struct CompiledCpuModule {
  std::vector<uint8_t> sharedObject;
  std::string assembly;
  std::vector<FunctionSignature> functions;
  const FunctionSignature *find(const std::string &name) const;
};

/// Compiles `entries` of `module` (which must have static shapes: run
/// -loom-specialize-shapes first). The module itself is left unchanged.
/// Throws FormatError when a phase fails.
/// `withAssembly` also renders the target assembly (a second code
/// generation run: only for `inspect --dump-kernels`).
CompiledCpuModule compileForCpu(mlir::ModuleOp module,
                                const native::NativeTarget &target,
                                const std::vector<std::string> &entries,
                                bool withAssembly = false);

} // namespace bitloom::codegen::cpu

#endif // BITLOOM_CODEGEN_CPU_COMPILECPU_H

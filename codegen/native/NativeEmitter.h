//===- NativeEmitter.h - LLVM dialect to a loadable shared object -*- C++
//-*-===//
//
// The last step of the native CPU targets: a module in the LLVM dialect
// becomes an ELF shared object for x86-64 or arm64 (LLVM's code generator,
// then ld.lld), which the runtime loads from the artifact's bytes
// (runtime/hal/cpu/NativeLibrary.h). Every public function gets a packed
// twin `<name>_packed(void **bindings)` so the runtime calls all of them the
// same way.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_NATIVE_NATIVEEMITTER_H
#define BITLOOM_CODEGEN_NATIVE_NATIVEEMITTER_H

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llvm {
class TargetMachine;
} // namespace llvm

namespace bitloom::native {

struct NativeTarget {
  std::string triple;   // x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu
  std::string cpu;      // a CPU name LLVM knows, e.g. x86-64-v3, cortex-a76
  std::string features; // +dotprod,... (empty: the CPU's own)
  /// LLVM optimization level 0-3. O2 compiles the tiny preset's train_step in
  /// about 30 s here; O3 costs minutes for little gain on scalar loop nests.
  int optLevel = 2;
};

/// `target` is cpu-x86_64 or cpu-arm64; `cpu` is "native" (this host's CPU
/// and features; only when the architectures match), "generic", or a name.
/// Throws FormatError naming --target / --cpu for unknown values.
NativeTarget resolveNativeTarget(const std::string &target,
                                 const std::string &cpu);

/// The code generator for `target` (position-independent code, aggressive
/// code generation: what emitSharedObject uses). Throws FormatError naming
/// --target / --cpu when LLVM cannot target it.
std::unique_ptr<llvm::TargetMachine>
createTargetMachine(const NativeTarget &target);

/// Adds `llvm.func @<name>_packed(!llvm.ptr)` for every external function
/// whose parameters are all pointers (bare-pointer memref convention).
void addPackedEntryPoints(mlir::ModuleOp llvmModule);

/// LLVM IR (optimized at target.optLevel) -> object code -> shared object
/// bytes. `assembly`, when not null, receives the target assembly;
/// `bitcode`, when not null, the optimized module (the code the shared object
/// holds) as LLVM bitcode, for `bitloom inspect --dump-kernels`.
/// Throws FormatError on failure.
std::vector<uint8_t> emitSharedObject(mlir::ModuleOp llvmModule,
                                      const NativeTarget &target,
                                      std::string *assembly = nullptr,
                                      std::string *bitcode = nullptr);

} // namespace bitloom::native

#endif // BITLOOM_CODEGEN_NATIVE_NATIVEEMITTER_H

//===- Passes.h - Vulkan code generation passes -----------------*- C++ -*-===//
#ifndef BITLOOM_CODEGEN_VULKAN_PASSES_H
#define BITLOOM_CODEGEN_VULKAN_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/Pass.h"

namespace bitloom::codegen::vulkan {

#define GEN_PASS_DECL
#include "codegen/vulkan/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "codegen/vulkan/Passes.h.inc"

/// The attribute in which -loom-vulkan-split-bindings records a kernel's
/// split arguments (triples: argument, chunks, chunk bytes).
inline constexpr llvm::StringLiteral kSplitArgumentsAttrName =
    "loom.split_arguments";

/// A kernel argument split into `chunks` arguments that each bind at most
/// `chunkBytes` of the same buffer, at successive offsets.
struct SplitArgument {
  unsigned argument = 0; // index before the split
  unsigned chunks = 0;
  uint64_t chunkBytes = 0;
};

/// `kSplitArgumentsAttrName` of `splits`.
mlir::DenseI64ArrayAttr
encodeSplitArguments(mlir::MLIRContext *context,
                     llvm::ArrayRef<SplitArgument> splits);
/// The splits recorded on `func` (none when it has no record).
llvm::SmallVector<SplitArgument>
decodeSplitArguments(mlir::gpu::GPUFuncOp func);

} // namespace bitloom::codegen::vulkan

#endif // BITLOOM_CODEGEN_VULKAN_PASSES_H

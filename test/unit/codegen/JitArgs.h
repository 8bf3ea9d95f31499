//===- JitArgs.h - Arguments for JIT-compiled entry points ------*- C++ -*-===//
//
// Shared by the codegen tests that run lowered entry points through MLIR's
// ExecutionEngine with its packed-argument ABI.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TEST_UNIT_CODEGEN_JITARGS_H
#define BITLOOM_TEST_UNIT_CODEGEN_JITARGS_H

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/SmallVector.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace bitloom::test {

/// The memref descriptors of the lowered ABI (see codegen/cpu/Pipeline.h):
/// allocated and aligned pointers, offset, sizes, strides, one word each.
class PackedArgs {
public:
  void add(void *data, const std::vector<int64_t> &shape) {
    auto words = std::make_unique<std::vector<int64_t>>();
    words->push_back(reinterpret_cast<int64_t>(data));
    words->push_back(reinterpret_cast<int64_t>(data));
    words->push_back(0);
    words->insert(words->end(), shape.begin(), shape.end());
    int64_t stride = 1;
    std::vector<int64_t> strides(shape.size());
    for (size_t d = shape.size(); d-- > 0;) {
      strides[d] = stride;
      stride *= shape[d];
    }
    words->insert(words->end(), strides.begin(), strides.end());
    for (int64_t &w : *words)
      pointers_.push_back(&w);
    storage_.push_back(std::move(words));
  }
  /// The trailing arena argument -loom-plan-arena gave `function` (read
  /// from the lowered module), freshly allocated and 64-byte aligned.
  void addArena(mlir::ModuleOp lowered, llvm::StringRef function) {
    auto func = lowered.lookupSymbol<mlir::LLVM::LLVMFuncOp>(function);
    auto bytes =
        func ? func->getAttrOfType<mlir::IntegerAttr>("loom.arena_bytes")
             : nullptr;
    int64_t n = bytes ? bytes.getInt() : 0;
    arenas_.push_back(std::make_unique<std::vector<int64_t>>(n / 8 + 8));
    add(arenas_.back()->data(), {n});
  }
  llvm::SmallVector<void *> &pointers() { return pointers_; }

private:
  std::vector<std::unique_ptr<std::vector<int64_t>>> storage_, arenas_;
  llvm::SmallVector<void *> pointers_;
};

} // namespace bitloom::test

#endif // BITLOOM_TEST_UNIT_CODEGEN_JITARGS_H

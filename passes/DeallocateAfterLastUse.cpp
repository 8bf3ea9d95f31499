//===- DeallocateAfterLastUse.cpp - Free buffers at their last use --------===//
//
// A buffer is live from its memref.alloc to the last top-level op of the
// function that depends on it: the closure of its users through every
// result (views, casts, pointer extraction and arithmetic, loads). A use
// inside a region (a linalg body reading a captured buffer) counts at its
// top-level ancestor.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>

namespace bitloom {
#define GEN_PASS_DEF_LOOMDEALLOCATEAFTERLASTUSE
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;

namespace {

class DeallocateAfterLastUse
    : public bitloom::impl::LoomDeallocateAfterLastUseBase<
          DeallocateAfterLastUse> {
public:
  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (func.isExternal())
        continue;
      if (!func.getBody().hasOneBlock()) {
        func.emitError("loom-deallocate-after-last-use handles straight-line "
                       "functions only");
        return signalPassFailure();
      }
      // A buffer allocated inside a region (a loop body) would need a
      // deallocation per iteration; nothing lowers to that today, and
      // silently leaking it would be worse than refusing.
      Block &body = func.getBody().front();
      WalkResult nested = func.walk([&](memref::AllocOp alloc) {
        if (alloc->getBlock() == &body)
          return WalkResult::advance();
        alloc.emitError("loom-deallocate-after-last-use: allocation inside "
                        "a nested region");
        return WalkResult::interrupt();
      });
      if (nested.wasInterrupted())
        return signalPassFailure();
      int64_t peak = placeDeallocations(body);
      func->setAttr(
          "loom.peak_buffer_bytes",
          IntegerAttr::get(IntegerType::get(&getContext(), 64), peak));
    }
  }

private:
  /// The last op of `block` that depends on `alloc`, or null when the
  /// buffer escapes through a return.
  static Operation *lastUse(memref::AllocOp alloc, Block &block) {
    Operation *last = alloc;
    SmallVector<Value> worklist = {alloc.getResult()};
    llvm::SmallPtrSet<Operation *, 16> seen;
    while (!worklist.empty()) {
      Value value = worklist.pop_back_val();
      for (Operation *user : value.getUsers()) {
        if (!seen.insert(user).second)
          continue;
        if (isa<func::ReturnOp>(user))
          return nullptr;
        Operation *top = block.findAncestorOpInBlock(*user);
        if (top && last->isBeforeInBlock(top))
          last = top;
        for (Value result : user->getResults())
          worklist.push_back(result);
      }
    }
    return last;
  }

  static int64_t bytesOf(memref::AllocOp alloc) {
    MemRefType type = alloc.getType();
    if (!type.hasStaticShape())
      return 0;
    return type.getNumElements() *
           int64_t(llvm::divideCeil(type.getElementTypeBitWidth(), 8));
  }

  /// Places the deallocations; returns the peak of simultaneously live
  /// buffer bytes over the block (what the step allocates beyond the
  /// caller's arguments and results).
  static int64_t placeDeallocations(Block &block) {
    SmallVector<memref::AllocOp> allocs;
    for (Operation &op : block)
      if (auto alloc = dyn_cast<memref::AllocOp>(op))
        allocs.push_back(alloc);
    for (memref::AllocOp alloc : allocs) {
      Operation *last = lastUse(alloc, block);
      if (!last || last->hasTrait<OpTrait::IsTerminator>())
        continue;
      OpBuilder builder(last->getContext());
      builder.setInsertionPointAfter(last);
      memref::DeallocOp::create(builder, alloc.getLoc(), alloc.getResult());
    }
    int64_t live = 0, peak = 0;
    for (Operation &op : block) {
      if (auto alloc = dyn_cast<memref::AllocOp>(op))
        peak = std::max(peak, live += bytesOf(alloc));
      else if (auto dealloc = dyn_cast<memref::DeallocOp>(op))
        if (auto alloc = dealloc.getMemref().getDefiningOp<memref::AllocOp>())
          live -= bytesOf(alloc);
    }
    return peak;
  }
};

} // namespace

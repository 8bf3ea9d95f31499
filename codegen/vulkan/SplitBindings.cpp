//===- SplitBindings.cpp - Kernel buffers split to fit one binding --------===//
#include "codegen/vulkan/Passes.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Transforms.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

using namespace mlir;

namespace bitloom::codegen::vulkan {

#define GEN_PASS_DEF_LOOMVULKANSPLITBINDINGS
#include "codegen/vulkan/Passes.h.inc"

namespace {

uint64_t byteSize(MemRefType type) {
  return uint64_t(type.getNumElements()) * type.getElementTypeBitWidth() / 8;
}

/// Loads and stores of `arg` (a statically shaped, contiguous buffer) go to
/// the chunk that holds the element: the row-major linear index picks the
/// chunk (an scf.if chain: SPIR-V has no dynamically indexed set of
/// distinct bindings without optional features) and the offset in it.
LogicalResult redirectToChunks(BlockArgument arg, ArrayRef<Value> chunks,
                               int64_t chunkElements) {
  auto type = cast<MemRefType>(arg.getType());
  for (Operation *user : llvm::make_early_inc_range(arg.getUsers())) {
    auto load = dyn_cast<memref::LoadOp>(user);
    auto store = dyn_cast<memref::StoreOp>(user);
    if (!load && !store)
      return user->emitError(
          "a buffer larger than the storage buffer range is used other than "
          "by loads and stores, so it cannot be split");
    OpBuilder b(user);
    Location loc = user->getLoc();
    ValueRange indices = load ? load.getIndices() : store.getIndices();
    // Row-major: ((i0 · d1 + i1) · d2 + i2) ...
    Value linear = indices.front();
    for (auto [dim, index] :
         llvm::zip(type.getShape().drop_front(), indices.drop_front())) {
      Value extent = arith::ConstantIndexOp::create(b, loc, dim);
      linear = arith::AddIOp::create(
          b, loc, arith::MulIOp::create(b, loc, linear, extent), index);
    }
    Value size = arith::ConstantIndexOp::create(b, loc, chunkElements);
    Value which = arith::DivUIOp::create(b, loc, linear, size);
    Value local = arith::RemUIOp::create(b, loc, linear, size);
    TypeRange results = load ? TypeRange(load->getResultTypes()) : TypeRange();
    // Chunk k, else the chain for chunks k+1...: built from the last one.
    std::function<SmallVector<Value>(OpBuilder &, unsigned)> access =
        [&](OpBuilder &at, unsigned k) -> SmallVector<Value> {
      if (k + 1 == chunks.size()) {
        if (load)
          return {memref::LoadOp::create(at, loc, chunks[k], local)};
        memref::StoreOp::create(at, loc, store.getValueToStore(), chunks[k],
                                local);
        return {};
      }
      Value isK =
          arith::CmpIOp::create(at, loc, arith::CmpIPredicate::eq, which,
                                arith::ConstantIndexOp::create(at, loc, k));
      auto branch = scf::IfOp::create(at, loc, results, isK,
                                      /*withElseRegion=*/true);
      // Without results the blocks come with their (empty) yields.
      OpBuilder then = branch.getThenBodyBuilder();
      OpBuilder otherwise = branch.getElseBodyBuilder();
      if (load) {
        Value v = memref::LoadOp::create(then, loc, chunks[k], local);
        scf::YieldOp::create(then, loc, v);
        scf::YieldOp::create(otherwise, loc, access(otherwise, k + 1));
      } else {
        memref::StoreOp::create(then, loc, store.getValueToStore(), chunks[k],
                                local);
        access(otherwise, k + 1);
      }
      return SmallVector<Value>(branch.getResults());
    };
    SmallVector<Value> values = access(b, 0);
    if (load)
      load.replaceAllUsesWith(values.front());
    user->erase();
  }
  return success();
}

/// Splits each argument of `func` larger than `maxRange` bytes into chunks
/// that fit it (mobile GPUs cap one binding at 128-512 MiB; a 2B model's
/// embedding is 626 MiB): the host binds the same buffer once per chunk at
/// successive offsets. Chunks are whole multiples of 256 bytes, the largest
/// minStorageBufferOffsetAlignment Vulkan allows, so every chunk's offset is
/// aligned where the whole buffer's is. Returns what was split.
FailureOr<SmallVector<SplitArgument>>
splitOversizedArguments(gpu::GPUFuncOp func, uint64_t maxRange) {
  constexpr uint64_t kOffsetAlignment = 256;
  SmallVector<SplitArgument> splits;
  Block &entry = func.getBody().front();
  SmallVector<Type> inputs(func.getArgumentTypes());
  bool changed = false, folded = false;
  unsigned numArguments = inputs.size();
  // `i` walks the arguments as they become, `original` as they were.
  for (unsigned original = 0, i = 0; original < numArguments; ++original, ++i) {
    auto type = dyn_cast<MemRefType>(inputs[i]);
    if (!type || (byteSize(type) + 3) / 4 * 4 <= maxRange)
      continue;
    if (!type.hasStaticShape() || !type.getLayout().isIdentity())
      return func.emitError("a kernel buffer larger than the storage buffer "
                            "range without a static, contiguous layout");
    uint64_t chunkBytes = maxRange / kOffsetAlignment * kOffsetAlignment;
    int64_t chunkElements =
        int64_t(chunkBytes * 8 / type.getElementTypeBitWidth());
    if (chunkElements == 0)
      return func.emitError("a storage buffer range below 256 bytes");
    if (!folded) {
      // Views of the buffer (a KV cache row) into the loads and stores.
      RewritePatternSet patterns(func.getContext());
      memref::populateFoldMemRefAliasOpPatterns(patterns);
      if (failed(applyPatternsGreedily(func, std::move(patterns))))
        return func.emitError("folding views into loads and stores failed");
      folded = true;
    }
    int64_t total = type.getNumElements();
    unsigned count = unsigned((total + chunkElements - 1) / chunkElements);
    BlockArgument whole = entry.getArgument(i);
    SmallVector<Value> chunks;
    SmallVector<Type> chunkTypes;
    for (unsigned k = 0; k < count; ++k) {
      int64_t n = std::min<int64_t>(chunkElements, total - k * chunkElements);
      chunkTypes.push_back(MemRefType::get({n}, type.getElementType(),
                                           AffineMap(), type.getMemorySpace()));
      chunks.push_back(
          entry.insertArgument(i + 1 + k, chunkTypes.back(), whole.getLoc()));
    }
    if (failed(redirectToChunks(whole, chunks, chunkElements)))
      return failure();
    entry.eraseArgument(i);
    inputs.erase(inputs.begin() + i);
    inputs.insert(inputs.begin() + i, chunkTypes.begin(), chunkTypes.end());
    splits.push_back({original, count, chunkBytes});
    i += count - 1;
    changed = true;
  }
  if (changed) {
    func.removeArgAttrsAttr();
    func.setFunctionType(FunctionType::get(func.getContext(), inputs, {}));
  }
  return splits;
}

struct SplitBindingsPass
    : impl::LoomVulkanSplitBindingsBase<SplitBindingsPass> {
  using LoomVulkanSplitBindingsBase::LoomVulkanSplitBindingsBase;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<gpu::GPUFuncOp>()) {
      if (!func.isKernel())
        continue;
      FailureOr<SmallVector<SplitArgument>> split =
          splitOversizedArguments(func, maxRange);
      if (failed(split))
        return signalPassFailure();
      if (split->empty())
        continue;
      func->setAttr(kSplitArgumentsAttrName,
                    encodeSplitArguments(func.getContext(), *split));
    }
  }
};

} // namespace

DenseI64ArrayAttr encodeSplitArguments(MLIRContext *context,
                                       ArrayRef<SplitArgument> splits) {
  SmallVector<int64_t> triples;
  for (const SplitArgument &s : splits)
    triples.append(
        {int64_t(s.argument), int64_t(s.chunks), int64_t(s.chunkBytes)});
  return DenseI64ArrayAttr::get(context, triples);
}

SmallVector<SplitArgument> decodeSplitArguments(gpu::GPUFuncOp func) {
  SmallVector<SplitArgument> splits;
  auto record = func->getAttrOfType<DenseI64ArrayAttr>(kSplitArgumentsAttrName);
  if (!record)
    return splits;
  ArrayRef<int64_t> triples = record.asArrayRef();
  for (size_t i = 0; i + 2 < triples.size(); i += 3)
    splits.push_back({unsigned(triples[i]), unsigned(triples[i + 1]),
                      uint64_t(triples[i + 2])});
  return splits;
}

} // namespace bitloom::codegen::vulkan

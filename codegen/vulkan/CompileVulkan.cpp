//===- CompileVulkan.cpp - A trained step to SPIR-V dispatches ------------===//
#include "codegen/vulkan/CompileVulkan.h"
#include "codegen/vulkan/Passes.h"

#include "formats/Error.h"
#include "hal/vulkan/DeviceProfile.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Conversion/SCFToGPU/SCFToGPU.h"
#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/ParallelLoopMapper.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/Dialect/SPIRV/IR/TargetAndABI.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/DialectConversion.h"
#include "mlir/Transforms/Passes.h"
#include "mlir/Transforms/RegionUtils.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringMap.h"

#include <cstdlib>
#include <map>

using namespace mlir;

namespace bitloom::codegen::vulkan {

KernelTarget kernelTargetForProfile(const std::string &name) {
  const bitloom::vulkan::DeviceProfile &p = bitloom::vulkan::findProfile(name);
  KernelTarget t;
  t.subgroupSize = std::max<int64_t>(1, p.minSubgroupSize);
  t.sharedMemoryBytes = std::max<int64_t>(16384, p.minComputeSharedMemorySize);
  t.maxWorkgroupInvocations =
      std::max<int64_t>(128, p.minComputeWorkGroupInvocations);
  t.int8Arithmetic = p.shaderInt8;
  t.storage8Bit = p.storageBuffer8BitAccess;
  t.integerDotProduct = p.integerDotProduct;
  t.cooperativeMatrixInt8 = p.cooperativeMatrixInt8 && p.minSubgroupSize == 32;
  t.cooperativeMatrixF16 =
      p.cooperativeMatrixF16 && p.shaderFloat16 && p.minSubgroupSize == 32;
  // The scalar kernels instead of the tensor-core ones (for A/B runs).
  if (const char *off = std::getenv("BITLOOM_VULKAN_NO_COOPERATIVE_MATRIX");
      off && *off && std::string(off) != "0")
    t.cooperativeMatrixInt8 = t.cooperativeMatrixF16 = false;
  // Where the profile has f64, kernels keep the CPU targets' f64
  // accumulations (and quantize exactly as they do); elsewhere (phones)
  // they demote them to f32.
  t.float64 = p.shaderFloat64;
  if (p.minStorageBufferRange)
    t.maxStorageBufferRange = p.minStorageBufferRange;
  if (p.minStorageBuffersPerStage)
    t.maxStorageBuffersPerKernel = p.minStorageBuffersPerStage;
  // Data-centre and desktop GPUs: the head's product over 512 rows at once
  // (128256 x 512 f32 logits are 250 MiB) instead of 32-row slivers.
  if (name == "nvidia")
    t.logitsBlockBytes = int64_t(256) << 20;
  return t;
}

namespace {

[[noreturn]] void fail(Operation *op, const std::string &what) {
  std::string where;
  llvm::raw_string_ostream os(where);
  op->getLoc().print(os);
  throw FormatError("", "compile --target vulkan",
                    what + " (" + op->getName().getStringRef().str() + " at " +
                        where + ")");
}

bool isMicroKernelCall(Operation *op) {
  auto call = dyn_cast<func::CallOp>(op);
  return call && call.getCallee().starts_with("bitloom_uk_");
}

/// Ops that only name memory (no work of their own on a device).
bool isView(Operation *op) {
  return isa<memref::ViewOp, memref::CastOp, memref::CollapseShapeOp,
             memref::ExpandShapeOp, memref::ReinterpretCastOp,
             memref::SubViewOp>(op);
}

/// Scalar host computations (a hyperparameter loaded from its buffer and the
/// arithmetic on it) that device code reads: each kernel recomputes them.
bool isScalarOp(Operation *op) {
  if (op->getNumRegions() != 0 || op->getNumResults() != 1)
    return false;
  if (isa<memref::LoadOp>(op))
    return true;
  Dialect *dialect = op->getDialect();
  return dialect && isa<arith::ArithDialect, math::MathDialect>(dialect) &&
         !isa<MemRefType>(op->getResult(0).getType());
}

/// Clones into the first block of each region of `op` the chains of
/// scalar ops its body reads from above, so that outlining captures buffers
/// only (a kernel reads the hyperparameter from its buffer).
/// With `kernel` (a gpu.launch), constants and dynamic subviews (a KV cache
/// row at a position read from a buffer) go in too.
void sinkScalarChains(Operation *op, bool kernel = false) {
  for (Region &region : op->getRegions()) {
    llvm::SetVector<Value> above;
    getUsedValuesDefinedAbove(region, above);
    // The chain, in dependency order.
    llvm::SetVector<Operation *> chain;
    std::function<void(Value)> collect = [&](Value v) {
      Operation *def = v.getDefiningOp();
      if (!def || chain.contains(def))
        return;
      bool constant = def->hasTrait<OpTrait::ConstantLike>();
      bool sink =
          kernel ? constant || isScalarOp(def) || isa<memref::SubViewOp>(def)
                 : !constant && isScalarOp(def);
      if (!sink)
        return;
      for (Value operand : def->getOperands())
        collect(operand);
      chain.insert(def);
    };
    for (Value v : above)
      collect(v);
    if (chain.empty())
      continue;
    OpBuilder b = OpBuilder::atBlockBegin(&region.front());
    IRMapping map;
    for (Operation *def : chain)
      b.clone(*def, map);
    for (Operation *def : chain)
      replaceAllUsesInRegionWith(def->getResult(0),
                                 map.lookup(def->getResult(0)), region);
  }
}

/// A linalg op without parallel dimensions (a full reduction, or 0-d
/// arithmetic) goes into a one-iteration parallel loop: one device thread.
void wrapInParallel(Operation *op) {
  OpBuilder b(op);
  Location loc = op->getLoc();
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  auto parallel = scf::ParallelOp::create(b, loc, ValueRange{zero},
                                          ValueRange{one}, ValueRange{one});
  op->moveBefore(parallel.getBody()->getTerminator());
}

/// The combiner of a reduction body `out = combine(out, f(inputs))` when it
/// has that form (the output's block argument used once, by an associative
/// and commutative arith op that the body yields), else null.
Operation *reductionCombiner(linalg::GenericOp op) {
  if (op.getNumDpsInits() != 1 || op.getNumReductionLoops() == 0 ||
      !op.hasPureBufferSemantics())
    return nullptr;
  Block &body = op.getRegion().front();
  BlockArgument out = body.getArguments().back();
  auto yield = cast<linalg::YieldOp>(body.getTerminator());
  if (yield.getNumOperands() != 1 || !out.hasOneUse())
    return nullptr;
  Operation *combine = yield.getOperand(0).getDefiningOp();
  if (!combine || *out.getUsers().begin() != combine ||
      !isa<arith::AddFOp, arith::AddIOp, arith::MaximumFOp, arith::MinimumFOp,
           arith::MaxNumFOp, arith::MinNumFOp>(combine))
    return nullptr;
  return combine;
}

/// A reduction with enough work per output becomes one workgroup per output
/// element (parallel dimensions linearized over the grid) whose threads
/// stride over the reduction dimensions, each combining its share, then one
/// thread combining the partial results in thread order into the output:
/// coalesced loads and the whole GPU busy, where one thread per output
/// element would walk a whole row (or a whole tensor, for a global norm)
/// alone. Returns false (and changes nothing) when `op` is not such a
/// reduction.
bool lowerReductionToLaunch(linalg::GenericOp op, int64_t maxThreads) {
  Operation *combine = reductionCombiner(op);
  if (!combine)
    return false;
  SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  SmallVector<utils::IteratorType> iterators = op.getIteratorTypesArray();
  SmallVector<unsigned> parallelDims, reductionDims;
  int64_t numOutputs = 1, reductionSize = 1;
  for (auto [d, kind] : llvm::enumerate(iterators)) {
    if (ShapedType::isDynamic(ranges[d]))
      return false;
    if (kind == utils::IteratorType::parallel) {
      parallelDims.push_back(d);
      numOutputs *= ranges[d];
    } else {
      reductionDims.push_back(d);
      reductionSize *= ranges[d];
    }
  }
  // Short reductions keep one thread per output element.
  if (reductionSize < 64 || numOutputs > 65535 || numOutputs < 1)
    return false;
  int64_t threads = 32;
  while (threads * 2 <= std::min<int64_t>(maxThreads, 256) &&
         threads * 2 <= reductionSize)
    threads *= 2;

  MLIRContext *ctx = op.getContext();
  Location loc = op.getLoc();
  OpBuilder b(op);
  auto index = [&](int64_t v) -> Value {
    return arith::ConstantIndexOp::create(b, loc, v);
  };
  Value one = index(1);
  auto launch = gpu::LaunchOp::create(b, loc, index(numOutputs), one, one,
                                      index(threads), one, one);
  Block &kernel = launch.getBody().front();
  b.setInsertionPointToStart(&kernel);
  gpu::TerminatorOp::create(b, loc);
  b.setInsertionPointToStart(&kernel);
  Value block = launch.getBlockIds().x, thread = launch.getThreadIds().x;

  // Loop indices: the parallel ones from the workgroup, the reduction ones
  // from the strided position `r`.
  SmallVector<Value> dims(ranges.size());
  auto delinearize = [&](Value linear, ArrayRef<unsigned> which) {
    for (unsigned d : llvm::reverse(which)) {
      Value extent = index(ranges[d]);
      dims[d] = arith::RemUIOp::create(b, loc, linear, extent);
      linear = arith::DivUIOp::create(b, loc, linear, extent);
    }
  };
  delinearize(block, parallelDims);

  Block &body = op.getRegion().front();
  BlockArgument outArg = body.getArguments().back();
  Type elem = outArg.getType();
  Value contribution = combine->getOperand(0) == outArg
                           ? combine->getOperand(1)
                           : combine->getOperand(0);
  auto loadOperand = [&](OpOperand &operand) -> Value {
    Value v = operand.get();
    auto type = dyn_cast<MemRefType>(v.getType());
    if (!type)
      return v;
    AffineMap map = op.getMatchingIndexingMap(&operand);
    SmallVector<Value> indices;
    for (unsigned k = 0; k < map.getNumResults(); ++k)
      indices.push_back(
          affine::AffineApplyOp::create(b, loc, map.getSubMap({k}), dims));
    return memref::LoadOp::create(b, loc, v, indices);
  };

  Value zero = arith::ConstantOp::create(b, loc, b.getZeroAttr(elem));
  Value no = arith::ConstantIntOp::create(b, loc, b.getI1Type(), 0);
  auto loop = scf::ForOp::create(
      b, loc, thread, index(reductionSize), index(threads),
      ValueRange{zero, no},
      [&](OpBuilder &nested, Location, Value r, ValueRange carried) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(nested.getInsertionBlock());
        delinearize(r, reductionDims);
        IRMapping map;
        for (OpOperand *input : op.getDpsInputOperands())
          map.map(body.getArgument(input->getOperandNumber()),
                  loadOperand(*input));
        for (Operation &bodyOp : body.without_terminator()) {
          if (&bodyOp == combine)
            continue;
          if (auto idx = dyn_cast<linalg::IndexOp>(bodyOp)) {
            map.map(idx.getResult(), dims[idx.getDim()]);
            continue;
          }
          b.clone(bodyOp, map);
        }
        Value value = map.lookupOrDefault(contribution);
        IRMapping combineMap;
        combineMap.map(outArg, carried[0]);
        combineMap.map(contribution, value);
        Value combined = b.clone(*combine, combineMap)->getResult(0);
        Value next =
            arith::SelectOp::create(b, loc, carried[1], combined, value);
        Value yes = arith::ConstantIntOp::create(b, loc, b.getI1Type(), 1);
        scf::YieldOp::create(b, loc, ValueRange{next, yes});
      });

  auto workgroup =
      spirv::StorageClassAttr::get(ctx, spirv::StorageClass::Workgroup);
  auto partials = memref::AllocOp::create(
      b, loc, MemRefType::get({threads}, elem, AffineMap(), workgroup));
  auto valid = memref::AllocOp::create(
      b, loc,
      MemRefType::get({threads}, b.getI32Type(), AffineMap(), workgroup));
  memref::StoreOp::create(b, loc, loop.getResult(0), partials,
                          ValueRange{thread});
  memref::StoreOp::create(
      b, loc, arith::ExtUIOp::create(b, loc, b.getI32Type(), loop.getResult(1)),
      valid, ValueRange{thread});
  gpu::BarrierOp::create(b, loc);
  Value first =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, thread, index(0));
  auto onlyFirst = scf::IfOp::create(b, loc, first, /*withElseRegion=*/false);
  b.setInsertionPointToStart(&onlyFirst.getThenRegion().front());
  // The output's element: reduction dimensions do not appear in its map.
  for (unsigned d : reductionDims)
    dims[d] = index(0);
  OpOperand &outOperand = *op.getDpsInitOperand(0);
  AffineMap outMap = op.getMatchingIndexingMap(&outOperand);
  SmallVector<Value> outIndices;
  for (unsigned k = 0; k < outMap.getNumResults(); ++k)
    outIndices.push_back(
        affine::AffineApplyOp::create(b, loc, outMap.getSubMap({k}), dims));
  Value initial = memref::LoadOp::create(b, loc, outOperand.get(), outIndices);
  auto fold = scf::ForOp::create(
      b, loc, index(0), index(threads), one, ValueRange{initial},
      [&](OpBuilder &nested, Location, Value i, ValueRange carried) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(nested.getInsertionBlock());
        Value partial = memref::LoadOp::create(b, loc, partials, ValueRange{i});
        Value has = arith::CmpIOp::create(
            b, loc, arith::CmpIPredicate::ne,
            memref::LoadOp::create(b, loc, valid, ValueRange{i}),
            arith::ConstantIntOp::create(b, loc, b.getI32Type(), 0));
        IRMapping combineMap;
        combineMap.map(outArg, carried[0]);
        combineMap.map(contribution, partial);
        Value combined = b.clone(*combine, combineMap)->getResult(0);
        scf::YieldOp::create(b, loc,
                             ValueRange{arith::SelectOp::create(
                                 b, loc, has, combined, carried[0])});
      });
  memref::StoreOp::create(b, loc, fold.getResult(0), outOperand.get(),
                          outIndices);
  op.erase();
  return true;
}

/// Demotes f64 arithmetic in a kernel to f32: mobile GPUs have no f64, and
/// the generated accumulations stay within the f32 paths' tolerance.
void demoteF64(gpu::GPUFuncOp func) {
  MLIRContext *ctx = func.getContext();
  Type f64 = Float64Type::get(ctx), f32 = Float32Type::get(ctx);
  // f64 buffers (accumulators in the arena) hold f32 in every kernel alike.
  auto demoted = [&](Type type) -> Type {
    if (type == f64)
      return f32;
    if (auto memref = dyn_cast<MemRefType>(type);
        memref && memref.getElementType() == f64)
      return MemRefType::get(memref.getShape(), f32, memref.getLayout(),
                             memref.getMemorySpace());
    return type;
  };
  SmallVector<Type> inputs;
  for (BlockArgument arg : func.getArguments()) {
    arg.setType(demoted(arg.getType()));
    inputs.push_back(arg.getType());
  }
  func.setFunctionType(FunctionType::get(ctx, inputs, {}));
  func.walk([&](Operation *op) {
    for (Region &region : op->getRegions())
      for (Block &block : region)
        for (BlockArgument arg : block.getArguments())
          arg.setType(demoted(arg.getType()));
    if (auto constant = dyn_cast<arith::ConstantOp>(op)) {
      if (auto value = dyn_cast<FloatAttr>(constant.getValue());
          value && value.getType() == f64) {
        auto attr = FloatAttr::get(f32, value.getValueAsDouble());
        constant.setValueAttr(attr);
        constant.getResult().setType(f32);
      }
      return;
    }
    for (Value result : op->getResults())
      result.setType(demoted(result.getType()));
  });
  // extf f32 -> f32 and truncf f32 -> f32 are now identities.
  func.walk([&](Operation *op) {
    if (!isa<arith::ExtFOp, arith::TruncFOp>(op))
      return;
    if (op->getOperand(0).getType() == op->getResult(0).getType()) {
      op->getResult(0).replaceAllUsesWith(op->getOperand(0));
      op->erase();
    }
  });
}

/// GLSL's extended instructions take f64 for a few functions only (sqrt,
/// abs, rounding, fma): the others (pow, exp, log, sin, cos, ...) run in f32
/// on f64 values. Only bias corrections and rotary angles use them.
void narrowTranscendentals(gpu::GPUFuncOp func) {
  MLIRContext *ctx = func.getContext();
  Type f64 = Float64Type::get(ctx), f32 = Float32Type::get(ctx);
  SmallVector<Operation *> narrow;
  func.walk([&](Operation *op) {
    if (!isa_and_nonnull<math::MathDialect>(op->getDialect()) ||
        op->getNumResults() != 1 || op->getResult(0).getType() != f64)
      return;
    if (isa<math::SqrtOp, math::AbsFOp, math::RoundEvenOp, math::RoundOp,
            math::FloorOp, math::CeilOp, math::FmaOp, math::CopySignOp,
            math::TruncOp>(op))
      return;
    narrow.push_back(op);
  });
  for (Operation *op : narrow) {
    OpBuilder b(op);
    IRMapping map;
    for (Value operand : op->getOperands())
      map.map(operand, operand.getType() == f64
                           ? Value(arith::TruncFOp::create(b, op->getLoc(), f32,
                                                           operand))
                           : operand);
    Operation *copy = b.clone(*op, map);
    copy->getResult(0).setType(f32);
    Value wide =
        arith::ExtFOp::create(b, op->getLoc(), f64, copy->getResult(0));
    op->getResult(0).replaceAllUsesWith(wide);
    op->erase();
  }
}

/// bf16 buffers (frozen embeddings) are read as their 16-bit patterns and
/// widened exactly (bits << 16): SPIR-V has no bf16 loads.
void widenBF16Arguments(gpu::GPUFuncOp func) {
  MLIRContext *ctx = func.getContext();
  Type i16 = IntegerType::get(ctx, 16), i32 = IntegerType::get(ctx, 32),
       f32 = Float32Type::get(ctx);
  SmallVector<Type> inputs;
  bool changed = false;
  for (BlockArgument arg : func.getArguments()) {
    auto type = dyn_cast<MemRefType>(arg.getType());
    if (!type || !type.getElementType().isBF16()) {
      inputs.push_back(arg.getType());
      continue;
    }
    auto bits = MemRefType::get(type.getShape(), i16, type.getLayout(),
                                type.getMemorySpace());
    arg.setType(bits);
    inputs.push_back(bits);
    changed = true;
    for (Operation *user : llvm::make_early_inc_range(arg.getUsers())) {
      auto load = dyn_cast<memref::LoadOp>(user);
      if (!load)
        fail(user, "a bf16 buffer is used other than by loads");
      load.getResult().setType(i16);
      for (Operation *use : llvm::make_early_inc_range(load->getUsers())) {
        auto ext = dyn_cast<arith::ExtFOp>(use);
        if (!ext || ext.getType() != f32)
          fail(use, "a bf16 value is used other than widened to f32");
        OpBuilder b(ext);
        Value wide = arith::ExtUIOp::create(b, ext.getLoc(), i32, load);
        Value shifted = arith::ShLIOp::create(
            b, ext.getLoc(), wide,
            arith::ConstantIntOp::create(b, ext.getLoc(), i32, 16));
        Value value = arith::BitcastOp::create(b, ext.getLoc(), f32, shifted);
        ext.replaceAllUsesWith(value);
        ext.erase();
      }
    }
  }
  if (changed)
    func.setFunctionType(FunctionType::get(ctx, inputs, {}));
}

/// Where a host memref lives: an argument of the entry function (+ byte
/// offset), seen through views.
struct Traced {
  unsigned argument = 0;
  uint64_t offset = 0, size = 0;
};

uint64_t byteSize(MemRefType type) {
  uint64_t bits = type.getElementTypeBitWidth();
  return uint64_t(type.getNumElements()) * bits / 8;
}

Traced trace(Value v, Operation *user) {
  uint64_t offset = 0;
  // Whole 32-bit words: kernels read narrow types as words.
  uint64_t size = (byteSize(cast<MemRefType>(v.getType())) + 3) / 4 * 4;
  while (true) {
    if (auto arg = dyn_cast<BlockArgument>(v))
      return {arg.getArgNumber(), offset, size};
    Operation *def = v.getDefiningOp();
    if (auto view = dyn_cast<memref::ViewOp>(def)) {
      std::optional<int64_t> shift = getConstantIntValue(view.getByteShift());
      if (!shift || !view.getSizes().empty())
        fail(def, "a view into the arena at a dynamic offset");
      offset += uint64_t(*shift);
      v = view.getSource();
      continue;
    }
    if (isa<memref::CastOp, memref::CollapseShapeOp, memref::ExpandShapeOp>(
            def)) {
      // Identity layouts: contiguous reshapes of the same bytes.
      v = def->getOperand(0);
      continue;
    }
    fail(user, "a kernel buffer that is not an argument or an arena range "
               "(defined by " +
                   (def ? def->getName().getStringRef().str()
                        : std::string("a block argument")) +
                   ")");
  }
}

/// Whether a kernel may write `buffer` (an argument, or a view of one): a
/// store or any use other than a load or a view (atomics, copies, ops not
/// known here) counts. The runtime orders only dependent dispatches.
bool mayWrite(Value buffer) {
  for (Operation *user : buffer.getUsers()) {
    if (isa<memref::LoadOp>(user))
      continue;
    if (isa<memref::SubViewOp, memref::CastOp, memref::ReinterpretCastOp,
            memref::CollapseShapeOp, memref::ExpandShapeOp, memref::ViewOp>(
            user)) {
      if (mayWrite(user->getResult(0)))
        return true;
      continue;
    }
    return true;
  }
  return false;
}

/// What a dispatch runs, for inspection and profiles: the micro-kernel or
/// the outlined kernel, and the model module it belongs to
/// ("bitloom_uk_ternary_matmul model.layers.3.mlp.up_proj").
std::string opLabel(Operation *op, const std::string &kernel) {
  std::string label =
      isMicroKernelCall(op) ? cast<func::CallOp>(op).getCallee().str() : kernel;
  Location loc = op->getLoc();
  if (auto fused = dyn_cast<FusedLoc>(loc);
      fused && !fused.getLocations().empty())
    loc = fused.getLocations().front();
  if (auto name = dyn_cast<NameLoc>(loc))
    label += " " + name.getName().str();
  return label;
}

/// A dispatch whose buffers are already traced: canonicalization may
/// rewrite the views they came through before the schedule is read.
struct TracedDispatch {
  std::string kernel;
  std::array<uint32_t, 3> workgroups = {1, 1, 1};
  SmallVector<Traced> buffers;
};

class EntryLowering {
public:
  EntryLowering(ModuleOp module, const KernelTarget &target)
      : module(module), target(target) {}

  /// Linalg ops to gpu.launch, micro-kernel calls to their dispatches
  /// (recorded in `ukernelDispatches`). Kernels that need scratch get it
  /// past the function's planned arena (`arenaBytes`, which grows by the
  /// most any call takes).
  void lowerToLaunches(func::FuncOp func, int64_t &arenaBytes) {
    // The arena is the function's last argument (cpu::FunctionSignature).
    BlockArgument arena = func.getArguments().back();
    const int64_t scratchBase = (arenaBytes + 255) / 256 * 256;
    int64_t scratchBytes = 0;
    for (Operation &op : llvm::make_early_inc_range(func.getOps())) {
      if (isMicroKernelCall(&op)) {
        KernelScratch scratch = [&](int64_t bytes) -> Value {
          OpBuilder b(&op);
          scratchBytes = std::max(scratchBytes, bytes);
          Value shift =
              arith::ConstantIndexOp::create(b, op.getLoc(), scratchBase);
          return memref::ViewOp::create(
              b, op.getLoc(),
              MemRefType::get({bytes}, IntegerType::get(op.getContext(), 8)),
              arena, shift, ValueRange());
        };
        FailureOr<SmallVector<KernelDispatch>> dispatches =
            buildUkernelDispatches(cast<func::CallOp>(op), module, target,
                                   scratch);
        if (failed(dispatches))
          fail(&op, "no GPU kernel for this micro-kernel call");
        SmallVector<TracedDispatch> &traced = ukernelDispatches[&op];
        for (KernelDispatch &k : *dispatches) {
          TracedDispatch d;
          d.kernel = k.kernel;
          for (int i = 0; i < 3; ++i)
            d.workgroups[i] = uint32_t(k.workgroups[i]);
          for (Value buffer : k.buffers)
            d.buffers.push_back(trace(buffer, &op));
          traced.push_back(std::move(d));
        }
        continue;
      }
      if (auto copy = dyn_cast<memref::CopyOp>(op)) {
        OpBuilder b(copy);
        linalg::CopyOp::create(b, copy.getLoc(), copy.getSource(),
                               copy.getTarget());
        copy.erase();
        continue;
      }
      if (auto linalgOp = dyn_cast<linalg::LinalgOp>(op)) {
        sinkScalarChains(&op);
        if (auto generic = dyn_cast<linalg::GenericOp>(op);
            generic &&
            lowerReductionToLaunch(generic, target.maxWorkgroupInvocations))
          continue;
        if (linalgOp.getNumParallelLoops() == 0)
          wrapInParallel(&op);
      }
    }
    if (scratchBytes)
      arenaBytes = scratchBase + scratchBytes;
    PassManager pm(func.getContext());
    pm.addPass(createConvertLinalgToParallelLoopsPass());
    if (failed(pm.run(func)))
      fail(func, "lowering linalg to parallel loops failed");

    int64_t tile = std::min<int64_t>(256, target.maxWorkgroupInvocations);
    IRRewriter rewriter(func.getContext());
    for (Operation &op : llvm::make_early_inc_range(func.getOps())) {
      auto loop = dyn_cast<scf::ParallelOp>(op);
      if (!loop)
        continue;
      // The iteration count, from the constant bounds linalg gives.
      int64_t extent = 1;
      for (auto [lb, ub, step] : llvm::zip(
               loop.getLowerBound(), loop.getUpperBound(), loop.getStep())) {
        std::optional<int64_t> l = getConstantIntValue(lb),
                               u = getConstantIntValue(ub),
                               s = getConstantIntValue(step);
        if (!l || !u || !s || *s <= 0)
          fail(loop, "a loop with dynamic bounds");
        extent *= std::max<int64_t>(0, (*u - *l + *s - 1) / *s);
      }
      if (loop.getNumLoops() > 1) {
        std::vector<unsigned> all;
        for (unsigned d = 0; d < loop.getNumLoops(); ++d)
          all.push_back(d);
        Operation *before = loop->getPrevNode(), *after = loop->getNextNode();
        Block *block = loop->getBlock();
        rewriter.setInsertionPoint(loop);
        collapseParallelLoops(rewriter, loop, {all});
        // The collapsed loop (and the index arithmetic it needs) replaced
        // `loop` where it was.
        loop = nullptr;
        for (Operation *o = before ? before->getNextNode() : &block->front();
             o && o != after; o = o->getNextNode())
          if (auto collapsed = dyn_cast<scf::ParallelOp>(o))
            loop = collapsed;
        if (!loop)
          fail(block->getParentOp(), "collapsing a parallel loop failed");
      }
      int64_t size = std::min<int64_t>(tile, std::max<int64_t>(extent, 1));
      if ((extent + size - 1) / size > 65535)
        fail(loop, "more than 65535 workgroups of " + std::to_string(size) +
                       " (a tensor of " + std::to_string(extent) +
                       " elements in one dispatch)");
      scf::tileParallelLoop(loop, {size}, /*noMinMaxBounds=*/true);
    }
    PassManager map(func.getContext());
    map.addPass(createGpuMapParallelLoopsPass());
    map.addPass(createConvertParallelLoopToGpuPass());
    map.addPass(createLowerAffinePass());
    map.addPass(createCanonicalizerPass());
    if (failed(map.run(func)))
      fail(func, "mapping parallel loops to the GPU failed");
    // Constants go into the kernels, so that a kernel's operands are its
    // buffers alone.
    func.walk([](gpu::LaunchOp launch) {
      // Sizes are static: the body reads them as constants, not as the
      // launch's block arguments (which outlining would pass in).
      OpBuilder sizes = OpBuilder::atBlockBegin(&launch.getBody().front());
      gpu::KernelDim3 inside[2] = {launch.getGridSize(), launch.getBlockSize()};
      gpu::KernelDim3 outside[2] = {launch.getGridSizeOperandValues(),
                                    launch.getBlockSizeOperandValues()};
      for (int i = 0; i < 2; ++i)
        for (auto [arg, value] : llvm::zip(
                 SmallVector<Value>{inside[i].x, inside[i].y, inside[i].z},
                 SmallVector<Value>{outside[i].x, outside[i].y, outside[i].z}))
          if (std::optional<int64_t> n = getConstantIntValue(value))
            arg.replaceAllUsesWith(
                arith::ConstantIndexOp::create(sizes, launch.getLoc(), *n));
      sinkScalarChains(launch, /*kernel=*/true);
    });
  }

  llvm::DenseMap<Operation *, SmallVector<TracedDispatch>> ukernelDispatches;

private:
  ModuleOp module;
  const KernelTarget &target;
};

/// Replaces outlined kernels that are identical up to their name by the
/// first of them: a model repeats the same shapes in every layer.
void deduplicateKernels(ModuleOp module) {
  // Candidates share a signature and attributes; bodies are compared
  // structurally (value names and locations do not matter).
  std::map<std::pair<std::string, llvm::hash_code>, std::vector<gpu::GPUFuncOp>>
      kept;
  llvm::StringMap<std::string> renamed; // dropped kernel -> kept kernel
  for (auto gpuModule :
       llvm::make_early_inc_range(module.getOps<gpu::GPUModuleOp>())) {
    auto funcs = gpuModule.getOps<gpu::GPUFuncOp>();
    if (funcs.empty())
      continue;
    gpu::GPUFuncOp func = *funcs.begin();
    std::string signature;
    llvm::raw_string_ostream os(signature);
    func.getFunctionType().print(os);
    llvm::hash_code hash = OperationEquivalence::computeHash(
        func, OperationEquivalence::ignoreHashValue,
        OperationEquivalence::ignoreHashValue,
        OperationEquivalence::IgnoreLocations);
    std::vector<gpu::GPUFuncOp> &same = kept[{signature, hash}];
    gpu::GPUFuncOp match;
    for (gpu::GPUFuncOp candidate : same)
      if (OperationEquivalence::isEquivalentTo(
              candidate, func, OperationEquivalence::IgnoreLocations)) {
        match = candidate;
        break;
      }
    if (!match) {
      same.push_back(func);
      continue;
    }
    renamed[gpuModule.getName()] =
        cast<gpu::GPUModuleOp>(match->getParentOp()).getName().str();
    gpuModule.erase();
  }
  if (renamed.empty())
    return;
  module.walk([&](gpu::LaunchFuncOp launch) {
    auto it = renamed.find(launch.getKernelModuleName());
    if (it == renamed.end())
      return;
    auto ref = SymbolRefAttr::get(
        launch.getContext(), it->second,
        {FlatSymbolRefAttr::get(launch.getContext(), it->second)});
    launch.setKernelAttr(ref);
  });
}

} // namespace

CompiledVulkanModule compileForVulkan(ModuleOp source,
                                      const KernelTarget &target,
                                      const std::vector<std::string> &entries,
                                      const std::vector<std::string> &bf16) {
  CompiledVulkanModule compiled;
  OwningOpRef<ModuleOp> module =
      cpu::planModule(source, entries, bf16, /*ukernelMemrefs=*/true,
                      compiled.functions, target.logitsBlockBytes);
  MLIRContext *context = module->getContext();
  (*module)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                     UnitAttr::get(context));

  // Each compute op's position in the planned schedule, in order: after
  // lowering, the launches and calls come in the same order.
  std::vector<std::vector<uint32_t>> positions;
  for (const std::string &entry : entries) {
    std::vector<uint32_t> &list = positions.emplace_back();
    uint32_t position = 0;
    for (Operation &op : module->lookupSymbol<func::FuncOp>(entry).getOps()) {
      if (isa<linalg::LinalgOp, memref::CopyOp>(op) || isMicroKernelCall(&op))
        list.push_back(position);
      ++position;
    }
  }
  EntryLowering lowering(*module, target);
  for (size_t e = 0; e < entries.size(); ++e)
    lowering.lowerToLaunches(module->lookupSymbol<func::FuncOp>(entries[e]),
                             compiled.functions[e].arenaBytes);

  {
    PassManager pm(context);
    pm.addPass(createGpuKernelOutliningPass());
    pm.addPass(createCanonicalizerPass());
    pm.addPass(createLowerAffinePass());
    if (failed(pm.run(*module)))
      throw FormatError("", "compile --target vulkan",
                        "outlining the kernels failed");
  }
  // Outlined kernels take their workgroup size from the launch: record it
  // where -convert-gpu-to-spirv looks (the entry point ABI).
  for (auto func : module->getOps<func::FuncOp>())
    func.walk([&](gpu::LaunchFuncOp launch) {
      auto kernel = SymbolTable::lookupNearestSymbolFrom<gpu::GPUFuncOp>(
          launch, launch.getKernel());
      if (!kernel || kernel->hasAttr(spirv::getEntryPointABIAttrName()))
        return;
      kernel->setAttr(kExactFloatAttrName, UnitAttr::get(context));
      SmallVector<int32_t> size;
      for (Value v : {launch.getBlockSizeX(), launch.getBlockSizeY(),
                      launch.getBlockSizeZ()}) {
        std::optional<int64_t> n = getConstantIntValue(v);
        if (!n)
          fail(launch, "a kernel with a dynamic workgroup size");
        size.push_back(int32_t(*n));
      }
      kernel->setAttr(spirv::getEntryPointABIAttrName(),
                      spirv::getEntryPointABIAttr(context, size));
    });
  for (auto gpuModule : module->getOps<gpu::GPUModuleOp>())
    for (auto func : gpuModule.getOps<gpu::GPUFuncOp>()) {
      if (!target.float64)
        demoteF64(func);
      else
        narrowTranscendentals(func);
      widenBF16Arguments(func);
    }
  deduplicateKernels(*module);
  // Kernel arguments split to fit the profile's storage buffer range, per
  // kernel (gpu.module) name.
  {
    PassManager pm(context);
    // The host's launches keep their unsplit operands until the schedule
    // below is read (they are erased then): no verification in between.
    pm.enableVerifier(false);
    LoomVulkanSplitBindingsOptions options;
    options.maxRange = target.maxStorageBufferRange;
    pm.addNestedPass<gpu::GPUModuleOp>(createLoomVulkanSplitBindings(options));
    if (failed(pm.run(*module)))
      throw FormatError("", "compile --target vulkan",
                        "splitting kernel buffers to fit the storage buffer "
                        "range failed (see the diagnostics above)");
  }
  // Per kernel (gpu.module) name: its split arguments, and which of its
  // (split) arguments it may write.
  llvm::StringMap<SmallVector<SplitArgument>> splits;
  llvm::StringMap<std::vector<bool>> written;
  for (auto gpuModule : module->getOps<gpu::GPUModuleOp>())
    for (auto func : gpuModule.getOps<gpu::GPUFuncOp>()) {
      if (func.getNumArguments() > target.maxStorageBuffersPerKernel)
        fail(func, "kernel " + gpuModule.getName().str() + " binds " +
                       std::to_string(func.getNumArguments()) +
                       " storage buffers, more than the profile's " +
                       std::to_string(target.maxStorageBuffersPerKernel) +
                       " per kernel (a smaller storage buffer range splits "
                       "more tensors into more bindings)");
      if (SmallVector<SplitArgument> split = decodeSplitArguments(func);
          !split.empty()) {
        splits[gpuModule.getName()] = std::move(split);
        func->removeAttr(kSplitArgumentsAttrName);
      }
      std::vector<bool> &flags = written[gpuModule.getName()];
      for (BlockArgument arg : func.getArguments())
        flags.push_back(mayWrite(arg));
    }

  // The host schedule, before the kernels are converted away.
  struct PendingDispatch {
    std::string kernel;
    std::array<uint32_t, 3> workgroups;
    SmallVector<Traced> buffers;
    Operation *op;
    uint32_t position;
  };
  std::vector<std::vector<PendingDispatch>> pending;
  for (const std::string &entry : entries) {
    auto func = module->lookupSymbol<func::FuncOp>(entry);
    std::vector<PendingDispatch> &list = pending.emplace_back();
    const std::vector<uint32_t> &computePositions =
        positions[pending.size() - 1];
    size_t computeOp = 0;
    auto nextPosition = [&](Operation *op) {
      if (computeOp >= computePositions.size())
        fail(op, "more dispatches than compute ops (a lowering split one)");
      return computePositions[computeOp++];
    };
    for (Operation &op : func.getOps()) {
      if (auto launch = dyn_cast<gpu::LaunchFuncOp>(op)) {
        PendingDispatch d;
        d.kernel = launch.getKernelModuleName().str();
        Value grid[3] = {launch.getGridSizeX(), launch.getGridSizeY(),
                         launch.getGridSizeZ()};
        for (int i = 0; i < 3; ++i) {
          std::optional<int64_t> n = getConstantIntValue(grid[i]);
          if (!n)
            fail(launch, "a dynamic workgroup grid");
          d.workgroups[i] = uint32_t(*n);
        }
        for (Value operand : launch.getKernelOperands()) {
          if (!isa<MemRefType>(operand.getType())) {
            std::string text;
            llvm::raw_string_ostream os(text);
            operand.print(os);
            fail(launch, "a kernel operand that is not a buffer: " + text);
          }
          d.buffers.push_back(trace(operand, launch));
        }
        d.op = &op;
        d.position = nextPosition(&op);
        list.push_back(std::move(d));
        continue;
      }
      if (auto it = lowering.ukernelDispatches.find(&op);
          it != lowering.ukernelDispatches.end()) {
        uint32_t position = nextPosition(&op);
        for (TracedDispatch &k : it->second) {
          PendingDispatch d;
          d.kernel = k.kernel;
          d.workgroups = k.workgroups;
          d.buffers = k.buffers;
          d.op = &op;
          d.position = position;
          list.push_back(std::move(d));
        }
        continue;
      }
      if (isView(&op) || op.hasTrait<OpTrait::ConstantLike>() ||
          isa<func::ReturnOp>(op) || isScalarOp(&op) ||
          isa<memref::ExtractStridedMetadataOp>(op))
        continue;
      fail(&op, "this op has no GPU lowering");
    }
    if (computeOp != computePositions.size())
      fail(func, "fewer dispatches than compute ops");
  }

  // Bindings, from the planned signature: arguments (weights included),
  // then one output per result, then the arena.
  std::vector<std::vector<GpuDispatch>> schedule(entries.size());
  for (size_t e = 0; e < entries.size(); ++e) {
    const cpu::FunctionSignature &sig = compiled.functions[e];
    unsigned numArgs = sig.args.size(), numResults = sig.results.size();
    for (PendingDispatch &d : pending[e]) {
      GpuDispatch out;
      out.workgroups = d.workgroups;
      out.schedulePosition = d.position;
      out.op = opLabel(d.op, d.kernel);
      ArrayRef<SplitArgument> split;
      if (auto it = splits.find(d.kernel); it != splits.end())
        split = it->second;
      auto writes = written.find(d.kernel);
      if (writes == written.end())
        fail(d.op, "dispatch of unknown kernel " + d.kernel);
      for (auto [argument, t] : llvm::enumerate(d.buffers)) {
        GpuBinding b;
        b.offset = t.offset;
        b.size = t.size;
        if (t.argument < numArgs) {
          b.source = GpuBinding::Source::Argument;
          b.index = t.argument;
        } else if (t.argument < numArgs + numResults) {
          b.source = GpuBinding::Source::Result;
          b.index = t.argument - numArgs;
        } else {
          b.source = GpuBinding::Source::Arena;
        }
        const SplitArgument *chunked = nullptr;
        for (const SplitArgument &s : split)
          if (s.argument == argument)
            chunked = &s;
        // One binding per chunk of a split buffer, at successive offsets.
        for (unsigned k = 0; k < (chunked ? chunked->chunks : 1); ++k) {
          GpuBinding part = b;
          if (chunked) {
            part.offset = b.offset + k * chunked->chunkBytes;
            part.size =
                std::min(chunked->chunkBytes, b.size - k * chunked->chunkBytes);
          }
          size_t position = out.bindings.size();
          part.written =
              position >= writes->second.size() || writes->second[position];
          if (part.size > target.maxStorageBufferRange)
            fail(d.op,
                 "binding " + std::to_string(out.bindings.size()) + " of " +
                     out.op + " covers " + std::to_string(part.size) +
                     " bytes, more than the storage buffer range of " +
                     std::to_string(target.maxStorageBufferRange) + " bytes");
          out.bindings.push_back(part);
        }
      }
      // The kernel index is resolved after conversion, by name.
      out.kernel = 0;
      schedule[e].push_back(std::move(out));
    }
  }

  // The schedule is recorded: the host code goes (its launches no longer
  // match the kernels, whose f64 and bf16 buffers changed type).
  for (auto func : llvm::make_early_inc_range(module->getOps<func::FuncOp>()))
    func.erase();
  FailureOr<std::vector<SpirvKernel>> kernels =
      compileKernelsToSpirv(*module, target);
  if (failed(kernels))
    throw FormatError("", "compile --target vulkan",
                      "SPIR-V generation failed (see the diagnostics above)");
  compiled.kernels = std::move(*kernels);
  llvm::StringMap<uint32_t> index;
  for (size_t k = 0; k < compiled.kernels.size(); ++k)
    index[compiled.kernels[k].name] = uint32_t(k);
  for (size_t e = 0; e < entries.size(); ++e)
    for (size_t i = 0; i < schedule[e].size(); ++i) {
      // Kernel gpu.modules and their gpu.funcs share names.
      std::string name = pending[e][i].kernel;
      auto it = index.find(name);
      if (it == index.end()) {
        // Outlined kernels: the gpu.func inside the module has its own name.
        throw FormatError("", "compile --target vulkan",
                          "dispatch of unknown kernel " + name);
      }
      schedule[e][i].kernel = it->second;
    }
  compiled.dispatches = std::move(schedule);
  return compiled;
}

} // namespace bitloom::codegen::vulkan

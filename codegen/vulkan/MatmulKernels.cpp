//===- MatmulKernels.cpp - GEMM kernels for the micro-kernel calls --------===//
//
// The ternary BitNet linear (forward and input gradient) and the dense f32
// GEMMs (B in f32 or bf16) as tiled gpu.func kernels, one dispatch per call:
// a workgroup per output tile, the reduction walked in chunks staged in
// shared memory (the next chunk's global loads in flight in registers while
// the current one is used), each invocation accumulating a register block
// of the tile; thin or short products split the reduction over k-groups of
// the workgroup. The tile is chosen per shape from a cost model fitted on
// an H100 (see cost()).
//
// Buffers the kernels read as integers are declared as i32 words (the bytes
// are the host's): SPIR-V without 8/16-bit storage has no cheap byte loads,
// and four int8 lanes in a word are what the packed dot product takes. So
// the ternary forward needs k % 4 == 0 and the bf16 GEMM an even number of
// B elements (both hold for every model shape); the calls fail otherwise.
//
//===----------------------------------------------------------------------===//
#include "codegen/vulkan/KernelBuilders.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVAttributes.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVDialect.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVOps.h"
#include "mlir/Dialect/SPIRV/IR/TargetAndABI.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cstdlib>
#include <functional>

using namespace mlir;

namespace bitloom::codegen::vulkan {
namespace {

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Bytes of one packed "i2x128" row (bitloom_uk_packed_row_bytes).
int64_t packedRowBytes(int64_t k) { return ceilDiv(k, 128) * 32; }

//===----------------------------------------------------------------------===//
// Operands of the call
//===----------------------------------------------------------------------===//

/// A buffer operand seen through its memref.cast: the host value bound to
/// the kernel and its static type.
struct HostBuffer {
  Value value;
  MemRefType type;
};

class CallOperands {
public:
  explicit CallOperands(func::CallOp call) : call(call) {}

  /// Operand `i` as a dense buffer of `elements` elements whose element type
  /// satisfies `isElement`.
  FailureOr<HostBuffer> buffer(unsigned i, StringRef what, int64_t elements,
                               function_ref<bool(Type)> isElement) {
    if (i >= call.getNumOperands())
      return call.emitError("missing operand ") << i << " (" << what << ")";
    Value v = call.getOperand(i);
    if (auto cast = v.getDefiningOp<memref::CastOp>())
      v = cast.getSource();
    auto type = dyn_cast<MemRefType>(v.getType());
    // The kernel addresses the binding as dense row-major data at offset 0.
    if (!type || !type.hasStaticShape() || !type.getLayout().isIdentity())
      return call.emitError() << what << " (operand " << i
                              << ") must be a memref of static shape with "
                                 "identity layout (seen through its cast), "
                                 "not "
                              << v.getType();
    if (!isElement(type.getElementType()))
      return call.emitError()
             << what << " (operand " << i << ") has element type "
             << type.getElementType() << ", not what the micro-kernel takes";
    if (type.getNumElements() != elements)
      return call.emitError()
             << what << " (operand " << i << ") has " << type.getNumElements()
             << " elements where the sizes call for " << elements;
    return HostBuffer{v, type};
  }

  FailureOr<int64_t> constant(unsigned i, StringRef what) {
    if (i >= call.getNumOperands())
      return call.emitError("missing operand ") << i << " (" << what << ")";
    std::optional<int64_t> v = getConstantIntValue(call.getOperand(i));
    if (!v)
      return call.emitError()
             << what << " (operand " << i << ") must be a constant";
    return *v;
  }

  func::CallOp call;
};

bool isF32(Type t) { return t.isF32(); }
bool isI8(Type t) { return t.isInteger(8); }
bool isBf16Bits(Type t) { return t.isBF16() || t.isInteger(16); }

//===----------------------------------------------------------------------===//
// IR emission helpers
//===----------------------------------------------------------------------===//

/// Terse arith / memref / scf construction on an ImplicitLocOpBuilder.
struct Emit {
  ImplicitLocOpBuilder &b;

  Type i32Type() { return b.getI32Type(); }
  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value i32(int64_t v) {
    return arith::ConstantIntOp::create(b, b.getI32Type(),
                                        static_cast<int32_t>(v));
  }
  Value f32(float v) {
    return arith::ConstantFloatOp::create(b, b.getF32Type(), APFloat(v));
  }
  Value add(Value x, Value y) {
    if (isa<FloatType>(x.getType()))
      return arith::AddFOp::create(b, x, y);
    return arith::AddIOp::create(b, x, y);
  }
  Value add(Value x, int64_t y) { return y ? add(x, idx(y)) : x; }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value mul(Value x, Value y) {
    if (isa<FloatType>(x.getType()))
      return arith::MulFOp::create(b, x, y);
    return arith::MulIOp::create(b, x, y);
  }
  Value mul(Value x, int64_t y) { return y == 1 ? x : mul(x, idx(y)); }
  Value divU(Value x, int64_t y) {
    return y == 1 ? x : arith::DivUIOp::create(b, x, idx(y)).getResult();
  }
  Value remU(Value x, int64_t y) {
    return arith::RemUIOp::create(b, x, idx(y));
  }
  Value andI(Value x, Value y) { return arith::AndIOp::create(b, x, y); }
  Value orI(Value x, Value y) { return arith::OrIOp::create(b, x, y); }
  Value xorI(Value x, Value y) { return arith::XOrIOp::create(b, x, y); }
  Value shl(Value x, Value y) { return arith::ShLIOp::create(b, x, y); }
  Value shrS(Value x, Value y) { return arith::ShRSIOp::create(b, x, y); }
  Value shrU(Value x, Value y) { return arith::ShRUIOp::create(b, x, y); }
  Value ult(Value x, Value y) {
    return arith::CmpIOp::create(b, arith::CmpIPredicate::ult, x, y);
  }
  Value ult(Value x, int64_t y) { return ult(x, idx(y)); }
  Value eq(Value x, Value y) {
    return arith::CmpIOp::create(b, arith::CmpIPredicate::eq, x, y);
  }
  /// Conjunction of the non-null conditions; null when there are none.
  Value both(Value x, Value y) {
    if (!x)
      return y;
    if (!y)
      return x;
    return arith::AndIOp::create(b, x, y);
  }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, c, x, y);
  }
  Value toF32(Value i) { return arith::SIToFPOp::create(b, b.getF32Type(), i); }
  Value bitcastF32(Value i) {
    return arith::BitcastOp::create(b, b.getF32Type(), i);
  }

  Value load(Value mem, Value i) {
    return memref::LoadOp::create(b, mem, ValueRange{i});
  }
  void store(Value v, Value mem, Value i) {
    memref::StoreOp::create(b, v, mem, ValueRange{i});
  }
  /// mem[i] where `valid` (null: always), else `fallback`, never reading out
  /// of bounds: invalid lanes read element 0 and discard it, which keeps the
  /// loads free of control flow.
  Value loadOr(Value mem, Value i, Value valid, Value fallback) {
    if (!valid)
      return load(mem, i);
    Value v = load(mem, select(valid, i, idx(0)));
    return select(valid, v, fallback);
  }

  /// Runs `body` under `cond` (unconditionally when null).
  void when(Value cond, function_ref<void()> body) {
    if (!cond) {
      body();
      return;
    }
    auto ifOp = scf::IfOp::create(b, cond, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
    body();
  }

  /// scf.for lb..ub step `step` carrying `init` (not empty) through `body`.
  SmallVector<Value>
  loop(int64_t lb, int64_t ub, int64_t step, ValueRange init,
       function_ref<SmallVector<Value>(Value, ValueRange)> body) {
    assert(!init.empty() && "the loop builder adds the yield itself");
    auto forOp = scf::ForOp::create(b, idx(lb), idx(ub), idx(step), init);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(forOp.getBody());
    SmallVector<Value> next =
        body(forOp.getInductionVar(), forOp.getRegionIterArgs());
    scf::YieldOp::create(b, next);
    return SmallVector<Value>(forOp.getResults());
  }
};

//===----------------------------------------------------------------------===//
// Kernel functions
//===----------------------------------------------------------------------===//

/// The kernel gpu.func `name` in its own gpu.module, with a 1-D workgroup of
/// `threads` invocations; null when the module already has it (the
/// specializations in the name make it the same kernel).
gpu::GPUFuncOp createKernel(ModuleOp module, StringRef name,
                            ArrayRef<Type> args, int64_t threads) {
  MLIRContext *ctx = module.getContext();
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(ctx));
  if (module.lookupSymbol<gpu::GPUModuleOp>(name))
    return nullptr;
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(module.getBody());
  Location loc = module.getLoc();
  auto gpuModule = gpu::GPUModuleOp::create(b, loc, name);
  b.setInsertionPointToStart(gpuModule.getBody());
  auto fn =
      gpu::GPUFuncOp::create(b, loc, name, FunctionType::get(ctx, args, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), UnitAttr::get(ctx));
  fn->setAttr(
      spirv::getEntryPointABIAttrName(),
      spirv::getEntryPointABIAttr(ctx, {static_cast<int32_t>(threads), 1, 1}));
  b.setInsertionPointToEnd(&fn.getBody().front());
  gpu::ReturnOp::create(b, loc);
  return fn;
}

MemRefType bufferType(int64_t elements, Type elt) {
  return MemRefType::get({elements}, elt);
}

MemRefType sharedType(MLIRContext *ctx, int64_t elements, Type elt) {
  return MemRefType::get(
      {elements}, elt, MemRefLayoutAttrInterface(),
      spirv::StorageClassAttr::get(ctx, spirv::StorageClass::Workgroup));
}

void loadDialects(MLIRContext *ctx) {
  ctx->getOrLoadDialect<arith::ArithDialect>();
  ctx->getOrLoadDialect<gpu::GPUDialect>();
  ctx->getOrLoadDialect<memref::MemRefDialect>();
  ctx->getOrLoadDialect<scf::SCFDialect>();
  ctx->getOrLoadDialect<spirv::SPIRVDialect>();
}

//===----------------------------------------------------------------------===//
// The tiled main loop
//===----------------------------------------------------------------------===//

/// An output tile of bm x bn per workgroup; each of the (bm/tm) x (bn/tn)
/// invocations of a k-group accumulates tm x tn outputs: rows ty + (bm/tm)·r
/// and columns tx + (bn/tn)·c of the tile, strided so that the invocations
/// of a subgroup read consecutive shared words (no bank conflicts) and write
/// consecutive output columns. With `splits` k-groups, group g takes the
/// reduction chunks g, g + splits, ... (each group stages its own) and the
/// groups' sums are added in shared memory at the end: short, thin products
/// (the LoRA ones) get enough invocations that way.
struct Config {
  int64_t bm, bn, tm, tn;
  int64_t splits = 1;
  int64_t tx() const { return bn / tn; }
  int64_t ty() const { return bm / tm; }
  int64_t groupThreads() const { return tx() * ty(); }
  int64_t threads() const { return groupThreads() * splits; }
};

/// Invocations that a large GPU runs at full speed at once, and the
/// exposed cost of staging one chunk (mostly hidden by the read-ahead), in
/// units of a multiply-add. Fitted to timings of the 2B model's products
/// (512 rows) over every tile on an H100 (132 SMs): the best measured tile
/// was picked or one within 18% of it.
constexpr double kResidentThreads = 132 * 256;
constexpr double kChunkLatency = 100;

/// Relative time of the product with `c`: the slowest invocation's serial
/// work (steps of tm·tn multiply-adds and tm + tn shared loads, plus the
/// staging latency per chunk), scaled by how oversubscribed the GPU is.
double cost(const Config &c, int64_t m, int64_t n, int64_t chunks,
            int64_t steps) {
  double tiles = double(ceilDiv(m, c.bm) * ceilDiv(n, c.bn));
  double rounds = double(ceilDiv(chunks, c.splits));
  double step = double(c.tm * c.tn + c.tm + c.tn);
  double serial = rounds * (double(steps) * step + kChunkLatency) +
                  (c.splits > 1 ? double(c.tm * c.tn * c.splits) : 0.0);
  double load = tiles * double(c.threads()) / kResidentThreads;
  return serial * std::max(1.0, load);
}

/// The register blocks the kernels choose among (bm, bn, tm, tn).
constexpr Config kTiles[] = {
    {128, 128, 8, 8}, {128, 64, 8, 8}, {64, 128, 8, 8}, {64, 64, 8, 4},
    {64, 32, 4, 4},   {32, 64, 4, 4},  {32, 32, 4, 2},  {64, 16, 4, 2},
    {16, 64, 2, 4},   {32, 16, 2, 2},  {16, 32, 2, 2},  {16, 16, 2, 2},
    {32, 128, 4, 8},  {64, 64, 8, 8},  {32, 64, 4, 8},  {64, 32, 8, 4},
};

/// The cheapest configuration that the target can run: `admits` filters the
/// register blocks (the ternary products have fixed tile constraints),
/// `sharedBytes` sizes a configuration's shared memory. The environment
/// variables BITLOOM_VULKAN_MATMUL_TILE=<bm>x<bn> and
/// BITLOOM_VULKAN_MATMUL_SPLIT=<splits> restrict the choice where a
/// matching configuration fits: the tests cover every tile with them, and
/// they serve to tune on a device without rebuilding.
std::optional<Config>
pickConfig(const KernelTarget &target, int64_t m, int64_t n, int64_t chunks,
           int64_t steps, function_ref<bool(const Config &)> admits,
           function_ref<int64_t(const Config &)> sharedBytes) {
  int64_t forcedM = 0, forcedN = 0, forcedSplits = 0;
  if (const char *forced = std::getenv("BITLOOM_VULKAN_MATMUL_TILE")) {
    auto [bm, bn] = StringRef(forced).split('x');
    if (bm.getAsInteger(10, forcedM) || bn.getAsInteger(10, forcedN))
      forcedM = forcedN = 0;
  }
  if (const char *forced = std::getenv("BITLOOM_VULKAN_MATMUL_SPLIT"))
    if (StringRef(forced).getAsInteger(10, forcedSplits))
      forcedSplits = 0;
  std::optional<Config> best, forcedBest;
  double bestCost = 0, forcedCost = 0;
  for (Config tile : kTiles) {
    if (!admits(tile))
      continue;
    for (int64_t splits : {1, 2, 4, 8, 16}) {
      Config c = tile;
      c.splits = splits;
      if (splits > chunks || c.threads() > target.maxWorkgroupInvocations ||
          c.threads() > 1024 || sharedBytes(c) > target.sharedMemoryBytes)
        continue;
      double t = cost(c, m, n, chunks, steps);
      if (!best || t < bestCost) {
        best = c;
        bestCost = t;
      }
      bool matches = (!forcedM || (c.bm == forcedM && c.bn == forcedN)) &&
                     (!forcedSplits || c.splits == forcedSplits);
      if ((forcedM || forcedSplits) && matches &&
          (!forcedBest || t < forcedCost)) {
        forcedBest = c;
        forcedCost = t;
      }
    }
  }
  return forcedBest ? forcedBest : best;
}

/// The invocation's place: its k-group, its index in the group, its
/// register block and the tile's origin.
struct Place {
  Value tid, group, ltid, tx, ty, row0, col0;
  /// Start of the group's staging area in the kernel's shared buffer.
  Value base;
  SmallVector<Value> rows, cols; // tile-local rows / columns of its block
};

Place emitPlace(Emit &e, const Config &c, int64_t groupElems) {
  Place p;
  p.tid = gpu::ThreadIdOp::create(e.b, gpu::Dimension::x);
  if (c.splits > 1) {
    p.group = e.divU(p.tid, c.groupThreads());
    p.ltid = e.remU(p.tid, c.groupThreads());
  } else {
    p.group = e.idx(0);
    p.ltid = p.tid;
  }
  p.base = e.mul(p.group, groupElems);
  p.tx = e.remU(p.ltid, c.tx());
  p.ty = e.divU(p.ltid, c.tx());
  p.col0 = e.mul(gpu::BlockIdOp::create(e.b, gpu::Dimension::x), c.bn);
  p.row0 = e.mul(gpu::BlockIdOp::create(e.b, gpu::Dimension::y), c.bm);
  for (int64_t r = 0; r < c.tm; ++r)
    p.rows.push_back(e.add(p.ty, c.ty() * r));
  for (int64_t col = 0; col < c.tn; ++col)
    p.cols.push_back(e.add(p.tx, c.tx() * col));
  return p;
}

/// Calls `body(item, valid)` for each slot of the group's cooperative copy
/// of `count` items: item ltid + slot·groupThreads, valid null or whether
/// the item exists (for the last slot when the count is not a multiple).
void forEachItem(Emit &e, const Place &p, const Config &c, int64_t count,
                 function_ref<void(Value, Value)> body) {
  int64_t threads = c.groupThreads();
  for (int64_t s = 0; s * threads < count; ++s) {
    Value item = e.add(p.ltid, s * threads);
    body(item, (s + 1) * threads > count ? e.ult(item, count) : Value());
  }
}

/// What a kernel plugs into the main loop.
struct MainLoop {
  Config cfg;
  int64_t chunks; // reduction chunks staged in shared memory
  int64_t steps;  // reduction steps per chunk (shared rows)
  int64_t unroll; // steps per iteration of the inner loop (divides steps)
  Type accType;
  /// The kernel's shared buffer (of accType), which the split reduction
  /// reuses once the staging is done.
  Value shared;
  /// Global loads of the invocation's share of chunk `chunk` (zeros where
  /// `valid`, when not null, is false), kept in registers while the
  /// previous chunk is computed on.
  std::function<SmallVector<Value>(Emit &, Value chunk, Value valid)> fetch;
  /// Stores fetched values in the group's staging area.
  std::function<void(Emit &, ArrayRef<Value>)> put;
  /// The invocation's operand for block row r / column c at step `step`.
  std::function<Value(Emit &, Value step, int64_t r)> readA;
  std::function<Value(Emit &, Value step, int64_t c)> readB;
  /// acc[r·tn + c] += a[r] · b[c] (one reduction step).
  std::function<void(Emit &, ArrayRef<Value> a, ArrayRef<Value> b,
                     MutableArrayRef<Value> acc)>
      update;
  /// Consumes the tile's sums (row-major over the register block), in one
  /// group's invocations.
  std::function<void(Emit &, ArrayRef<Value> acc)> finish;
};

void emitMainLoop(Emit &e, const Place &p, const MainLoop &l) {
  const Config &c = l.cfg;
  int64_t blockSize = c.tm * c.tn, splits = c.splits;
  int64_t rounds = ceilDiv(l.chunks, splits);
  bool ragged = l.chunks % splits != 0;
  auto fetchRound = [&](Value round, bool ahead) {
    Value chunk = splits > 1 ? e.add(e.mul(round, splits), p.group) : round;
    if (ragged)
      return l.fetch(e, chunk, e.ult(chunk, l.chunks));
    // Reading ahead past the last chunk re-reads it (and drops it).
    if (ahead)
      chunk = arith::MinUIOp::create(e.b, chunk, e.idx(l.chunks - 1));
    return l.fetch(e, chunk, Value());
  };
  auto steps = [&](Value first, ValueRange acc) {
    SmallVector<Value> cur(acc);
    for (int64_t u = 0; u < l.unroll; ++u) {
      Value step = e.add(first, u);
      SmallVector<Value> a, b;
      for (int64_t r = 0; r < c.tm; ++r)
        a.push_back(l.readA(e, step, r));
      for (int64_t col = 0; col < c.tn; ++col)
        b.push_back(l.readB(e, step, col));
      l.update(e, a, b, cur);
    }
    return cur;
  };

  Value zero = l.accType.isF32() ? e.f32(0) : e.i32(0);
  SmallVector<Value> init(blockSize, zero);
  auto round = [&](ValueRange acc, ArrayRef<Value> fetched,
                   function_ref<SmallVector<Value>()> fetchNext) {
    l.put(e, fetched);
    gpu::BarrierOp::create(e.b);
    // The next chunk's loads are in flight while this one is used.
    SmallVector<Value> next = fetchNext();
    SmallVector<Value> sums = l.unroll == l.steps
                                  ? steps(e.idx(0), acc)
                                  : e.loop(0, l.steps, l.unroll, acc, steps);
    llvm::append_range(sums, next);
    return sums;
  };
  SmallVector<Value> acc;
  if (rounds == 1) {
    acc = round(init, fetchRound(e.idx(0), false),
                [] { return SmallVector<Value>(); });
  } else {
    llvm::append_range(init, fetchRound(e.idx(0), false));
    SmallVector<Value> results =
        e.loop(0, rounds, 1, init, [&](Value r, ValueRange carried) {
          SmallVector<Value> next =
              round(carried.take_front(blockSize),
                    SmallVector<Value>(carried.drop_front(blockSize)),
                    [&] { return fetchRound(e.add(r, 1), true); });
          // The next round's stores overwrite what this one reads.
          gpu::BarrierOp::create(e.b);
          return next;
        });
    acc.assign(results.begin(), results.begin() + blockSize);
  }
  if (splits > 1 && rounds == 1)
    gpu::BarrierOp::create(e.b);
  if (splits == 1) {
    l.finish(e, acc);
    return;
  }
  // Partial sums at [(i·splits + group)·groupThreads + ltid], added in
  // group order (the result does not depend on scheduling).
  int64_t threads = c.groupThreads();
  for (int64_t i = 0; i < blockSize; ++i)
    e.store(
        acc[i], l.shared,
        e.add(e.add(e.mul(p.group, threads), p.ltid), i * splits * threads));
  gpu::BarrierOp::create(e.b);
  e.when(e.eq(p.group, e.idx(0)), [&] {
    SmallVector<Value> total;
    for (int64_t i = 0; i < blockSize; ++i) {
      Value sum;
      for (int64_t g = 0; g < splits; ++g) {
        Value v = e.load(l.shared, e.add(p.ltid, (i * splits + g) * threads));
        sum = sum ? e.add(sum, v) : v;
      }
      total.push_back(sum);
    }
    l.finish(e, total);
  });
}

//===----------------------------------------------------------------------===//
// Ternary forward: y = (float)(xq · wᵀ) · rowFactor
//===----------------------------------------------------------------------===//
//
// A chunk is one packed block: 128 columns, 32 words of xq per row and 8
// packed words per weight row. Word w' of a block holds, in its byte t at
// bits [2l, 2l+2), column 32l + 4w' + t: masking the word with 0x03030303
// after a shift by 2l gives the four consecutive columns 32l + 4w' + 0..3 as
// bytes in {0, 1, 2}, aligned with xq's word 8l + w' of the block. Staging
// turns them into signed bytes (w - 1 in each lane, without borrows) so a
// step is one packed 4x8-bit dot product per output.

/// The i32 sum of the products of the four signed bytes of `x` and `w`.
Value dot4(Emit &e, Value x, Value w, bool dotProduct) {
  if (dotProduct)
    return spirv::SDotOp::create(
        e.b, e.i32Type(), x, w,
        spirv::PackedVectorFormatAttr::get(
            e.b.getContext(),
            spirv::PackedVectorFormat::PackedVectorFormat4x8Bit));
  Value sum;
  for (int64_t t = 0; t < 4; ++t) {
    Value xt = e.shrS(e.shl(x, e.i32(24 - 8 * t)), e.i32(24));
    Value wt = e.shrS(e.shl(w, e.i32(24 - 8 * t)), e.i32(24));
    Value p = e.mul(xt, wt);
    sum = sum ? e.add(sum, p) : p;
  }
  return sum;
}

/// Words of one group's staging area: 32 xq words per tile row, 32 signed
/// weight words per tile column.
int64_t ternaryGroupWords(const Config &c) { return 32 * (c.bm + c.bn); }
int64_t ternarySharedBytes(const Config &c) {
  // The split reduction reuses the staging areas.
  int64_t reduction = c.splits > 1 ? c.bm * c.bn : 0;
  return 4 * c.splits * std::max(ternaryGroupWords(c), reduction);
}

//===----------------------------------------------------------------------===//
// Ternary forward on cooperative matrices (tensor cores)
//===----------------------------------------------------------------------===//
//
// Where the target has SPV_KHR_cooperative_matrix's 16x16x32 int8 product:
// the same staging as above (xq words per row, weights unpacked to signed
// bytes per output column, both k-contiguous), rows padded to kStageStride
// words, then each 32-lane subgroup of the 128-invocation workgroup
// multiplies a 32 x 32 block of the 64 x 64 tile as 2 x 2 cooperative
// int32 accumulators: A (16 x 32 bytes of xq) row-major from the xq stage,
// B (32 x 16 weight bytes) column-major from the weight stage. The sums go
// through shared memory to an epilogue that applies the row factor exactly
// as the CPU does. Integer products and sums are exact, so the result is
// the scalar kernels' bit for bit.

constexpr int64_t kCoopTileM = 64, kCoopTileN = 64, kCoopThreads = 128;
/// Words per staged row: one packed block (32 words) and 4 words of padding
/// (rows 144 bytes apart: 16-byte aligned, and the staging stores of a
/// subgroup spread over the banks).
constexpr int64_t kStageStride = 36;
constexpr int64_t kOutStride = kCoopTileN + 4;

/// Whether the cooperative kernel takes this product.
bool coopTernaryApplies(const KernelTarget &target, int64_t m, int64_t n,
                        int64_t k) {
  return target.cooperativeMatrixInt8 && target.subgroupSize == 32 &&
         target.maxWorkgroupInvocations >= kCoopThreads &&
         target.sharedMemoryBytes >=
             4 * std::max((kCoopTileM + kCoopTileN) * kStageStride,
                          kCoopTileM * kOutStride) &&
         m % kCoopTileM == 0 && n % kCoopTileN == 0 && k % 128 == 0;
}

void buildTernaryMatmulCoop(gpu::GPUFuncOp fn, Location loc, int64_t m,
                            int64_t n, int64_t k) {
  MLIRContext *ctx = fn.getContext();
  ImplicitLocOpBuilder b(loc, ctx);
  b.setInsertionPointToStart(&fn.getBody().front());
  Emit e{b};
  Type i32 = b.getI32Type();
  Type si8 = IntegerType::get(ctx, 8, IntegerType::Signed);
  auto aType = gpu::MMAMatrixType::get({16, 32}, si8, "AOp");
  auto bType = gpu::MMAMatrixType::get({32, 16}, si8, "BOp");
  auto cType = gpu::MMAMatrixType::get({16, 16}, i32, "COp");
  int64_t kWords = k / 4, blocks = k / 128;
  Value xArg = fn.getArgument(0), wArg = fn.getArgument(1),
        fArg = fn.getArgument(2), yArg = fn.getArgument(3);

  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value subgroup = e.divU(tid, 32);
  Value blockRow = e.mul(e.divU(subgroup, 2), 32);
  Value blockCol = e.mul(e.remU(subgroup, 2), 32);
  Value col0 = e.mul(gpu::BlockIdOp::create(b, gpu::Dimension::x), kCoopTileN);
  Value row0 = e.mul(gpu::BlockIdOp::create(b, gpu::Dimension::y), kCoopTileM);
  int64_t stageWords = (kCoopTileM + kCoopTileN) * kStageStride;
  Value shared = memref::AllocOp::create(
      b, sharedType(ctx, std::max(stageWords, kCoopTileM * kOutStride), i32));
  int64_t weightStage = kCoopTileM * kStageStride;

  // Global loads of chunk `chunk`: 16 xq words and 4 packed weight words
  // per invocation.
  auto fetch = [&](Value chunk) {
    SmallVector<Value> v;
    for (int64_t s = 0; s < kCoopTileM * 32 / kCoopThreads; ++s) {
      Value item = e.add(tid, s * kCoopThreads);
      Value row = e.divU(item, 32), q = e.remU(item, 32);
      v.push_back(e.load(xArg, e.add(e.mul(e.add(row0, row), kWords),
                                     e.add(e.mul(chunk, 32), q))));
    }
    for (int64_t s = 0; s < kCoopTileN * 8 / kCoopThreads; ++s) {
      Value item = e.add(tid, s * kCoopThreads);
      Value col = e.divU(item, 8), wq = e.remU(item, 8);
      v.push_back(e.load(wArg, e.add(e.mul(e.add(col0, col), blocks * 8),
                                     e.add(e.mul(chunk, 8), wq))));
    }
    return v;
  };
  auto put = [&](ValueRange v) {
    size_t next = 0;
    for (int64_t s = 0; s < kCoopTileM * 32 / kCoopThreads; ++s) {
      Value item = e.add(tid, s * kCoopThreads);
      Value row = e.divU(item, 32), q = e.remU(item, 32);
      e.store(v[next++], shared, e.add(e.mul(row, kStageStride), q));
    }
    for (int64_t s = 0; s < kCoopTileN * 8 / kCoopThreads; ++s) {
      Value item = e.add(tid, s * kCoopThreads);
      Value col = e.divU(item, 8), wq = e.remU(item, 8);
      Value word = v[next++];
      for (int64_t lane = 0; lane < 4; ++lane) {
        // Columns 32·lane + 4·wq + 0..3 as signed bytes (see above).
        Value f = e.andI(e.shrU(word, e.i32(2 * lane)), e.i32(0x03030303));
        f = e.xorI(e.sub(e.orI(f, e.i32(0x80808080)), e.i32(0x01010101)),
                   e.i32(0x80808080));
        e.store(
            f, shared,
            e.add(e.add(e.mul(col, kStageStride), wq), weightStage + 8 * lane));
      }
    }
  };
  auto lead = [&](int64_t words) { return b.getIndexAttr(words); };

  Value zero = gpu::SubgroupMmaConstantMatrixOp::create(b, cType, e.i32(0));
  SmallVector<Value> init(4, zero);
  llvm::append_range(init, fetch(e.idx(0)));
  SmallVector<Value> results =
      e.loop(0, blocks, 1, init, [&](Value chunk, ValueRange carried) {
        put(carried.drop_front(4));
        gpu::BarrierOp::create(b);
        // The next chunk's loads are in flight during the products (the
        // last chunk re-reads itself and drops it).
        Value ahead =
            arith::MinUIOp::create(b, e.add(chunk, 1), e.idx(blocks - 1));
        SmallVector<Value> next = fetch(ahead);
        SmallVector<Value> acc(carried.take_front(4));
        for (int64_t step = 0; step < 4; ++step) {
          Value a[2], bm[2];
          for (int64_t i = 0; i < 2; ++i)
            a[i] = gpu::SubgroupMmaLoadMatrixOp::create(
                b, aType, shared,
                ValueRange{e.add(e.mul(e.add(blockRow, 16 * i), kStageStride),
                                 8 * step)},
                lead(kStageStride), UnitAttr());
          for (int64_t j = 0; j < 2; ++j)
            bm[j] = gpu::SubgroupMmaLoadMatrixOp::create(
                b, bType, shared,
                ValueRange{e.add(e.mul(e.add(blockCol, 16 * j), kStageStride),
                                 weightStage + 8 * step)},
                lead(kStageStride), b.getUnitAttr());
          for (int64_t i = 0; i < 2; ++i)
            for (int64_t j = 0; j < 2; ++j)
              acc[2 * i + j] = gpu::SubgroupMmaComputeOp::create(
                  b, a[i], bm[j], acc[2 * i + j], UnitAttr(), UnitAttr());
        }
        // The next chunk's stores overwrite what the products read.
        gpu::BarrierOp::create(b);
        llvm::append_range(acc, next);
        return acc;
      });

  // The sums through shared memory (the stages are free), then the row
  // factor, exactly the CPU's (float)sum · rowFactor[i].
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 2; ++j)
      gpu::SubgroupMmaStoreMatrixOp::create(
          b, results[2 * i + j], shared,
          ValueRange{e.add(e.mul(e.add(blockRow, 16 * i), kOutStride),
                           e.add(blockCol, 16 * j))},
          lead(kOutStride), UnitAttr());
  gpu::BarrierOp::create(b);
  for (int64_t s = 0; s < kCoopTileM * kCoopTileN / kCoopThreads; ++s) {
    Value item = e.add(tid, s * kCoopThreads);
    Value row = e.divU(item, kCoopTileN), col = e.remU(item, kCoopTileN);
    Value sum = e.load(shared, e.add(e.mul(row, kOutStride), col));
    Value gRow = e.add(row0, row);
    Value v = e.mul(e.toF32(sum), e.load(fArg, gRow));
    e.store(v, yArg, e.add(e.mul(gRow, n), e.add(col0, col)));
  }
}

LogicalResult buildTernaryMatmul(func::CallOp call, ModuleOp module,
                                 const KernelTarget &target,
                                 SmallVector<KernelDispatch> &dispatches) {
  CallOperands ops(call);
  FailureOr<int64_t> m = ops.constant(4, "m"), n = ops.constant(5, "n"),
                     k = ops.constant(6, "k");
  if (failed(m) || failed(n) || failed(k))
    return failure();
  if (*m <= 0 || *n <= 0 || *k <= 0)
    return call.emitError("empty ternary product");
  // xq rows are read as whole i32 words.
  if (*k % 4)
    return call.emitError("the GPU ternary matmul needs k % 4 == 0 (xq rows "
                          "read as i32 words); k = ")
           << *k;
  int64_t rowBytes = packedRowBytes(*k);
  FailureOr<HostBuffer> xq = ops.buffer(0, "xq", *m * *k, isI8),
                        w = ops.buffer(1, "w", *n * rowBytes, isI8),
                        rowFactor = ops.buffer(2, "rowFactor", *m, isF32),
                        y = ops.buffer(3, "y", *m * *n, isF32);
  if (failed(xq) || failed(w) || failed(rowFactor) || failed(y))
    return failure();

  int64_t kWords = *k / 4, blocks = rowBytes / 32;
  MLIRContext *ctx = module.getContext();
  Type i32 = IntegerType::get(ctx, 32), f32 = Float32Type::get(ctx);
  SmallVector<Type> argTypes = {bufferType(*m * kWords, i32),
                                bufferType(*n * rowBytes / 4, i32),
                                bufferType(*m, f32), bufferType(*m * *n, f32)};
  if (coopTernaryApplies(target, *m, *n, *k)) {
    std::string name =
        llvm::formatv("bitloom_ternary_matmul_m{0}_n{1}_k{2}_coop{3}x{4}", *m,
                      *n, *k, kCoopTileM, kCoopTileN);
    dispatches.push_back({name,
                          {*n / kCoopTileN, *m / kCoopTileM, 1},
                          {xq->value, w->value, rowFactor->value, y->value}});
    if (gpu::GPUFuncOp fn = createKernel(module, name, argTypes, kCoopThreads))
      buildTernaryMatmulCoop(fn, call.getLoc(), *m, *n, *k);
    return success();
  }
  bool dot = target.integerDotProduct;
  // The xq staging swizzle needs 32-row groups.
  std::optional<Config> picked = pickConfig(
      target, *m, *n, blocks, dot ? 32 : 128,
      [](const Config &c) { return c.bm % 32 == 0; }, ternarySharedBytes);
  if (!picked)
    return call.emitError("no ternary matmul tile fits the target's "
                          "workgroup limits");
  const Config t = *picked;
  std::string name = llvm::formatv(
      "bitloom_ternary_matmul_m{0}_n{1}_k{2}_t{3}x{4}_r{5}x{6}_s{7}_{8}", *m,
      *n, *k, t.bm, t.bn, t.tm, t.tn, t.splits, dot ? "dot" : "imul");
  dispatches.push_back({name,
                        {ceilDiv(*n, t.bn), ceilDiv(*m, t.bm), 1},
                        {xq->value, w->value, rowFactor->value, y->value}});

  gpu::GPUFuncOp fn = createKernel(module, name, argTypes, t.threads());
  if (!fn)
    return success();
  ImplicitLocOpBuilder b(call.getLoc(), ctx);
  b.setInsertionPointToStart(&fn.getBody().front());
  Emit e{b};
  Value xArg = fn.getArgument(0), wArg = fn.getArgument(1),
        fArg = fn.getArgument(2), yArg = fn.getArgument(3);
  Place p = emitPlace(e, t, ternaryGroupWords(t));
  // Per group: xs[q][row ^ q] = xq word q of the block on tile row `row`
  // (the XOR spreads the column-wise staging stores over all banks while
  // the reads of a step, one q and rows of a 32-aligned group, still hit
  // distinct banks), then ws[q][col] = signed weight bytes aligned with xq
  // word q.
  Value shared = memref::AllocOp::create(
      b, sharedType(ctx, ternarySharedBytes(t) / 4, i32));
  Value xs = p.base, ws = e.add(p.base, 32 * t.bm);

  MainLoop l;
  l.cfg = t;
  l.chunks = blocks;
  l.steps = 32;
  l.unroll = dot ? 8 : 2;
  l.accType = i32;
  l.shared = shared;
  l.fetch = [&](Emit &e, Value chunk, Value chunkValid) {
    SmallVector<Value> v;
    forEachItem(e, p, t, t.bm * 32, [&](Value item, Value itemValid) {
      Value q = e.remU(item, 32), row = e.divU(item, 32);
      Value gRow = e.add(p.row0, row), word = e.add(e.mul(chunk, 32), q);
      Value valid = e.both(e.both(chunkValid, itemValid),
                           e.both(*m % t.bm ? e.ult(gRow, *m) : Value(),
                                  kWords % 32 ? e.ult(word, kWords) : Value()));
      v.push_back(
          e.loadOr(xArg, e.add(e.mul(gRow, kWords), word), valid, e.i32(0)));
    });
    forEachItem(e, p, t, t.bn * 8, [&](Value item, Value itemValid) {
      Value wq = e.remU(item, 8), col = e.divU(item, 8);
      Value gCol = e.add(p.col0, col);
      // Rows past n feed outputs that are never stored, but an invalid
      // chunk must add nothing: all fields 1 (weights 0).
      Value valid = e.both(e.both(chunkValid, itemValid),
                           *n % t.bn ? e.ult(gCol, *n) : Value());
      v.push_back(e.loadOr(
          wArg, e.add(e.add(e.mul(gCol, blocks * 8), e.mul(chunk, 8)), wq),
          valid, e.i32(0x55555555)));
    });
    return v;
  };
  l.put = [&](Emit &e, ArrayRef<Value> v) {
    size_t next = 0;
    forEachItem(e, p, t, t.bm * 32, [&](Value item, Value itemValid) {
      Value x = v[next++];
      e.when(itemValid, [&] {
        Value q = e.remU(item, 32), row = e.divU(item, 32);
        e.store(x, shared, e.add(xs, e.add(e.mul(q, t.bm), e.xorI(row, q))));
      });
    });
    forEachItem(e, p, t, t.bn * 8, [&](Value item, Value itemValid) {
      Value word = v[next++];
      e.when(itemValid, [&] {
        Value wq = e.remU(item, 8), col = e.divU(item, 8);
        for (int64_t lane = 0; lane < 4; ++lane) {
          Value f = e.andI(e.shrU(word, e.i32(2 * lane)), e.i32(0x03030303));
          // Per byte: (f + 0x80) - 1, then flip the bias back: w = f - 1.
          f = e.xorI(e.sub(e.orI(f, e.i32(0x80808080)), e.i32(0x01010101)),
                     e.i32(0x80808080));
          e.store(f, shared,
                  e.add(ws, e.add(e.mul(e.add(wq, 8 * lane), t.bn), col)));
        }
      });
    });
  };
  l.readA = [&](Emit &e, Value q, int64_t r) {
    return e.load(shared,
                  e.add(xs, e.add(e.mul(q, t.bm), e.xorI(p.rows[r], q))));
  };
  l.readB = [&](Emit &e, Value q, int64_t c) {
    return e.load(shared, e.add(ws, e.add(e.mul(q, t.bn), p.cols[c])));
  };
  l.update = [&](Emit &e, ArrayRef<Value> a, ArrayRef<Value> bv,
                 MutableArrayRef<Value> acc) {
    for (int64_t r = 0; r < t.tm; ++r)
      for (int64_t c = 0; c < t.tn; ++c) {
        Value &s = acc[r * t.tn + c];
        s = e.add(s, dot4(e, a[r], bv[c], dot));
      }
  };
  l.finish = [&](Emit &e, ArrayRef<Value> acc) {
    for (int64_t r = 0; r < t.tm; ++r) {
      Value gRow = e.add(p.row0, p.rows[r]);
      e.when(*m % t.bm ? e.ult(gRow, *m) : Value(), [&] {
        Value factor = e.load(fArg, gRow);
        for (int64_t c = 0; c < t.tn; ++c) {
          Value gCol = e.add(p.col0, p.cols[c]);
          e.when(*n % t.bn ? e.ult(gCol, *n) : Value(), [&] {
            // Exactly the CPU's (float)sum * rowFactor[i].
            Value v = e.mul(e.toF32(acc[r * t.tn + c]), factor);
            e.store(v, yArg, e.add(e.mul(gRow, *n), gCol));
          });
        }
      });
    }
  };
  emitMainLoop(e, p, l);
  return success();
}

//===----------------------------------------------------------------------===//
// Dense GEMMs: f32 A, B in f32 / bf16 / packed ternary
//===----------------------------------------------------------------------===//

enum class BKind { F32, Bf16, Ternary };

/// C[m, n] = (accumulate ? C : 0) + scale · Σ_p opA[m, p] · opB[p, n] with
/// f32 accumulation. a is f32 ([m, k], or [k, m] with transA); b is f32 or
/// bf16 pairs in i32 words ([k, n], or [n, k] with transB) or a packed
/// ternary matrix ([k, n] in "i2x128" rows, n padded to whole blocks);
/// `scale` (a memref<1xf32>) only for the ternary one.
struct GemmProblem {
  int64_t m, n, k;
  bool transA, transB, accumulate;
  BKind bKind;
};

/// Reduction elements per chunk.
constexpr int64_t kGemmChunk = 16;

/// Staging copies go along the contiguous dimension of global memory; when
/// that is the reduction one, the copy writes shared columns, and rows are
/// padded so that a subgroup's stores (32 / kGemmChunk rows of kGemmChunk
/// columns) hit distinct banks. The ternary weights' decoding stores
/// (4 rows x 8 words of a block) need a padding of 1.
int64_t gemmAStride(const GemmProblem &g, const Config &c) {
  return c.bm + (g.transA ? 0 : 32 / kGemmChunk);
}
int64_t gemmBStride(const GemmProblem &g, const Config &c) {
  if (g.bKind == BKind::Ternary)
    return c.bn + 1;
  return c.bn + (g.transB ? 32 / kGemmChunk : 0);
}
int64_t gemmGroupElems(const GemmProblem &g, const Config &c) {
  return kGemmChunk * (gemmAStride(g, c) + gemmBStride(g, c));
}
int64_t gemmSharedBytes(const GemmProblem &g, const Config &c) {
  int64_t reduction = c.splits > 1 ? c.bm * c.bn : 0;
  return 4 * c.splits * std::max(gemmGroupElems(g, c), reduction);
}

void emitGemm(gpu::GPUFuncOp fn, Location loc, const GemmProblem &g,
              const Config &t) {
  MLIRContext *ctx = fn.getContext();
  const int64_t bk = kGemmChunk;
  Type f32 = Float32Type::get(ctx);
  ImplicitLocOpBuilder b(loc, ctx);
  b.setInsertionPointToStart(&fn.getBody().front());
  Emit e{b};
  Value aArg = fn.getArgument(0), bArg = fn.getArgument(1),
        cArg = fn.getArgument(g.bKind == BKind::Ternary ? 3 : 2);
  Place p = emitPlace(e, t, gemmGroupElems(g, t));
  int64_t aStride = gemmAStride(g, t), bStride = gemmBStride(g, t);
  Value shared = memref::AllocOp::create(
      b, sharedType(ctx, gemmSharedBytes(g, t) / 4, f32));
  // Per group: as[kk][row], then bs[kk][col].
  Value as = p.base, bs = e.add(p.base, bk * aStride);

  bool rowsPartial = g.m % t.bm, colsPartial = g.n % t.bn, kPartial = g.k % bk;
  int64_t blocks = ceilDiv(g.n, 128);
  // Tile-local (k, row) of A item `item`, and (k, col) of B item `item`.
  auto aItem = [&](Value item) -> std::pair<Value, Value> {
    if (g.transA)
      return {e.divU(item, t.bm), e.remU(item, t.bm)};
    return {e.remU(item, bk), e.divU(item, bk)};
  };
  auto bItem = [&](Value item) -> std::pair<Value, Value> {
    if (g.transB)
      return {e.remU(item, bk), e.divU(item, bk)};
    return {e.divU(item, t.bn), e.remU(item, t.bn)};
  };

  MainLoop l;
  l.cfg = t;
  l.chunks = ceilDiv(g.k, bk);
  l.steps = bk;
  l.unroll = bk;
  l.accType = f32;
  l.shared = shared;
  l.fetch = [&](Emit &e, Value chunk, Value chunkValid) {
    SmallVector<Value> v;
    Value k0 = e.mul(chunk, bk);
    forEachItem(e, p, t, t.bm * bk, [&](Value item, Value itemValid) {
      auto [kk, row] = aItem(item);
      Value gRow = e.add(p.row0, row), gk = e.add(k0, kk);
      Value valid = e.both(e.both(chunkValid, itemValid),
                           e.both(rowsPartial ? e.ult(gRow, g.m) : Value(),
                                  kPartial ? e.ult(gk, g.k) : Value()));
      Value at =
          g.transA ? e.add(e.mul(gk, g.m), gRow) : e.add(e.mul(gRow, g.k), gk);
      v.push_back(e.loadOr(aArg, at, valid, e.f32(0)));
    });
    if (g.bKind == BKind::Ternary) {
      // Rows k0.. of this column tile's packed block: 8 words a row.
      Value block = gpu::BlockIdOp::create(e.b, gpu::Dimension::x);
      forEachItem(e, p, t, bk * 8, [&](Value item, Value itemValid) {
        Value wq = e.remU(item, 8), kk = e.divU(item, 8);
        Value gk = e.add(k0, kk);
        Value at = e.add(e.add(e.mul(gk, blocks * 8), e.mul(block, 8)), wq);
        Value valid = e.both(e.both(chunkValid, itemValid),
                             kPartial ? e.ult(gk, g.k) : Value());
        // Past the last row: all fields 1, i.e. weights 0.
        v.push_back(e.loadOr(bArg, at, valid, e.i32(0x55555555)));
      });
      return v;
    }
    forEachItem(e, p, t, t.bn * bk, [&](Value item, Value itemValid) {
      auto [kk, col] = bItem(item);
      Value gCol = e.add(p.col0, col), gk = e.add(k0, kk);
      Value valid = e.both(e.both(chunkValid, itemValid),
                           e.both(colsPartial ? e.ult(gCol, g.n) : Value(),
                                  kPartial ? e.ult(gk, g.k) : Value()));
      Value at =
          g.transB ? e.add(e.mul(gCol, g.k), gk) : e.add(e.mul(gk, g.n), gCol);
      if (g.bKind == BKind::Bf16) {
        // Element `at` is the low (even) or high half of word at / 2;
        // widening is exact: the bits become the f32's upper half.
        Value word = e.loadOr(bArg, e.divU(at, 2), valid, e.i32(0));
        Value odd = e.eq(e.remU(at, 2), e.idx(1));
        Value bits = e.select(odd, e.andI(word, e.i32(0xFFFF0000)),
                              e.shl(word, e.i32(16)));
        v.push_back(e.bitcastF32(bits));
      } else {
        v.push_back(e.loadOr(bArg, at, valid, e.f32(0)));
      }
    });
    return v;
  };
  l.put = [&](Emit &e, ArrayRef<Value> v) {
    size_t next = 0;
    forEachItem(e, p, t, t.bm * bk, [&](Value item, Value itemValid) {
      Value x = v[next++];
      e.when(itemValid, [&] {
        auto [kk, row] = aItem(item);
        e.store(x, shared, e.add(as, e.add(e.mul(kk, aStride), row)));
      });
    });
    if (g.bKind == BKind::Ternary) {
      forEachItem(e, p, t, bk * 8, [&](Value item, Value itemValid) {
        Value word = v[next++];
        e.when(itemValid, [&] {
          Value wq = e.remU(item, 8), kk = e.divU(item, 8);
          Value row = e.add(bs, e.add(e.mul(kk, bStride), e.mul(wq, 4)));
          for (int64_t lane = 0; lane < 4; ++lane)
            for (int64_t byte = 0; byte < 4; ++byte) {
              Value field =
                  e.andI(e.shrU(word, e.i32(8 * byte + 2 * lane)), e.i32(3));
              e.store(e.toF32(e.sub(field, e.i32(1))), shared,
                      e.add(row, 32 * lane + byte));
            }
        });
      });
      return;
    }
    forEachItem(e, p, t, t.bn * bk, [&](Value item, Value itemValid) {
      Value x = v[next++];
      e.when(itemValid, [&] {
        auto [kk, col] = bItem(item);
        e.store(x, shared, e.add(bs, e.add(e.mul(kk, bStride), col)));
      });
    });
  };
  l.readA = [&](Emit &e, Value kk, int64_t r) {
    return e.load(shared, e.add(as, e.add(e.mul(kk, aStride), p.rows[r])));
  };
  l.readB = [&](Emit &e, Value kk, int64_t c) {
    return e.load(shared, e.add(bs, e.add(e.mul(kk, bStride), p.cols[c])));
  };
  l.update = [&](Emit &e, ArrayRef<Value> a, ArrayRef<Value> bv,
                 MutableArrayRef<Value> acc) {
    for (int64_t r = 0; r < t.tm; ++r)
      for (int64_t c = 0; c < t.tn; ++c) {
        Value &s = acc[r * t.tn + c];
        s = e.add(s, e.mul(a[r], bv[c]));
      }
  };
  l.finish = [&](Emit &e, ArrayRef<Value> acc) {
    Value scale;
    if (g.bKind == BKind::Ternary)
      scale = e.load(fn.getArgument(2), e.idx(0));
    for (int64_t r = 0; r < t.tm; ++r) {
      Value gRow = e.add(p.row0, p.rows[r]);
      e.when(rowsPartial ? e.ult(gRow, g.m) : Value(), [&] {
        for (int64_t c = 0; c < t.tn; ++c) {
          Value gCol = e.add(p.col0, p.cols[c]);
          e.when(colsPartial ? e.ult(gCol, g.n) : Value(), [&] {
            Value at = e.add(e.mul(gRow, g.n), gCol);
            Value v = acc[r * t.tn + c];
            if (scale)
              v = e.mul(scale, v);
            if (g.accumulate)
              v = e.add(e.load(cArg, at), v);
            e.store(v, cArg, at);
          });
        }
      });
    }
  };
  emitMainLoop(e, p, l);
}

LogicalResult buildDenseMatmul(func::CallOp call, ModuleOp module,
                               const KernelTarget &target, bool bf16,
                               SmallVector<KernelDispatch> &dispatches) {
  CallOperands ops(call);
  FailureOr<int64_t> m = ops.constant(3, "m"), n = ops.constant(4, "n"),
                     k = ops.constant(5, "k"),
                     transA = ops.constant(6, "transA"),
                     transB = ops.constant(7, "transB"),
                     accumulate = ops.constant(8, "accumulate");
  if (failed(m) || failed(n) || failed(k) || failed(transA) || failed(transB) ||
      failed(accumulate))
    return failure();
  if (*m <= 0 || *n <= 0 || *k <= 0)
    return call.emitError("empty matrix product");
  FailureOr<HostBuffer> a = ops.buffer(0, "a", *m * *k, isF32),
                        bm = ops.buffer(1, "b", *k * *n,
                                        bf16 ? isBf16Bits : isF32),
                        c = ops.buffer(2, "c", *m * *n, isF32);
  if (failed(a) || failed(bm) || failed(c))
    return failure();
  // B is read as i32 words of bf16 pairs: the binding must be whole words.
  if (bf16 && (*k * *n) % 2)
    return call.emitError("the GPU bf16 GEMM needs an even number of B "
                          "elements (read as pairs); k·n = ")
           << *k * *n;

  GemmProblem g{*m,
                *n,
                *k,
                *transA != 0,
                *transB != 0,
                *accumulate != 0,
                bf16 ? BKind::Bf16 : BKind::F32};
  std::optional<Config> picked = pickConfig(
      target, *m, *n, ceilDiv(*k, kGemmChunk), kGemmChunk,
      [](const Config &) { return true; },
      [&](const Config &c) { return gemmSharedBytes(g, c); });
  if (!picked)
    return call.emitError("no GEMM tile fits the target's workgroup limits");
  const Config t = *picked;
  std::string name = llvm::formatv(
      "bitloom_matmul_f32{0}_m{1}_n{2}_k{3}_ta{4}_tb{5}_acc{6}_t{7}x{8}_"
      "r{9}x{10}_s{11}",
      bf16 ? "_bf16b" : "", *m, *n, *k, int(g.transA), int(g.transB),
      int(g.accumulate), t.bm, t.bn, t.tm, t.tn, t.splits);
  dispatches.push_back({name,
                        {ceilDiv(*n, t.bn), ceilDiv(*m, t.bm), 1},
                        {a->value, bm->value, c->value}});

  MLIRContext *ctx = module.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  Type bType = bf16 ? bufferType(*k * *n / 2, i32) : bufferType(*k * *n, f32);
  if (gpu::GPUFuncOp fn = createKernel(
          module, name,
          {bufferType(*m * *k, f32), bType, bufferType(*m * *n, f32)},
          t.threads()))
    emitGemm(fn, call.getLoc(), g, t);
  return success();
}

//===----------------------------------------------------------------------===//
// Ternary input gradient on cooperative matrices (tensor cores)
//===----------------------------------------------------------------------===//
//
// dx = multiplier · dy · w with f16 products into f32 sums, near f32 accuracy:
// each dy value, scaled by a power of two per row (the row's largest lands
// in [2^14, 2^15)), is split into hi = f16(v) and lo = f16(v - hi), 22
// significant bits together, and ternary weights are exact in f16, so
// dx = (hi·w + lo·w) · 2^-e · multiplier. Two dispatches: the rows' scales
// into the call's scratch, then the products: a 64 x 128 tile of dx (one
// packed block wide) per workgroup of 8 subgroups, each 32 x 32 as 2 x 2
// f32 accumulators, n in chunks of 32 staged in shared memory.

} // namespace

constexpr int64_t kTTileM = 64, kTTileK = 128, kTChunk = 32, kTThreads = 256;
/// Halves per staged dy row and weight row (rows 16-byte aligned, padded
/// off the banks' period).
constexpr int64_t kAStride = kTChunk + 8, kBStride = kTTileK + 8;

bool coopGemmApplies(const KernelTarget &target, int64_t m, int64_t n,
                     int64_t k, int64_t outBytes) {
  int64_t shared =
      2 * (2 * kTTileM * kAStride + kTChunk * kBStride) + 4 * kTTileM * 16;
  return target.cooperativeMatrixF16 && target.subgroupSize == 32 &&
         target.maxWorkgroupInvocations >= kTThreads &&
         target.sharedMemoryBytes >= shared &&
         uint64_t(outBytes) <= target.maxStorageBufferRange &&
         m % kTTileM == 0 && k % kTTileK == 0 && n % kTChunk == 0;
}

/// scales[i] = 2^(14 - e_i) and scales[m + i] = 2^(e_i - 14) · multiplier
/// (1 without that argument), with 2^e_i ≤ max_c<n |a[i·lda + c]| <
/// 2^(e_i + 1) (e clamped so that both are normal floats): a workgroup per
/// row.
namespace {

void emitRowScales(gpu::GPUFuncOp fn, Location loc, int64_t m, int64_t n,
                   int64_t lda) {
  MLIRContext *ctx = fn.getContext();
  ImplicitLocOpBuilder b(loc, ctx);
  b.setInsertionPointToStart(&fn.getBody().front());
  Emit e{b};
  Type i32 = b.getI32Type(), f32 = b.getF32Type();
  bool withMultiplier = fn.getNumArguments() == 3;
  Value dy = fn.getArgument(0),
        multiplier = withMultiplier ? fn.getArgument(1) : Value(),
        scales = fn.getArguments().back();
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value row = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  // Non-negative floats order as their bit patterns: the largest |dy| is
  // the largest of the bits with the sign cleared (a NaN stays largest).
  SmallVector<Value> largest = e.loop(
      0, ceilDiv(n, kTThreads), 1, {e.i32(0)}, [&](Value it, ValueRange acc) {
        Value c = e.add(tid, e.mul(it, kTThreads));
        Value valid = n % kTThreads ? e.ult(c, n) : Value();
        Value v = e.loadOr(dy, e.add(e.mul(row, lda), c), valid, e.f32(0));
        Value bits =
            e.andI(arith::BitcastOp::create(b, i32, v), e.i32(0x7fffffff));
        return SmallVector<Value>{arith::MaxUIOp::create(b, acc[0], bits)};
      });
  Value shared = memref::AllocOp::create(b, sharedType(ctx, kTThreads, i32));
  e.store(largest[0], shared, tid);
  gpu::BarrierOp::create(b);
  for (int64_t half = kTThreads / 2; half > 0; half /= 2) {
    e.when(e.ult(tid, half), [&] {
      Value other = e.load(shared, e.add(tid, half));
      e.store(arith::MaxUIOp::create(b, e.load(shared, tid), other), shared,
              tid);
    });
    gpu::BarrierOp::create(b);
  }
  e.when(e.eq(tid, e.idx(0)), [&] {
    // Biased exponent of the largest, kept in [15, 254]: the scale's
    // biased exponent 268 - eb lies in [14, 253], its inverse's in [1, 240].
    Value eb = e.andI(e.shrU(e.load(shared, e.idx(0)), e.i32(23)), e.i32(0xff));
    eb = arith::MaxUIOp::create(b, eb, e.i32(15));
    Value sb = e.sub(e.i32(268), eb);
    Value scale = arith::BitcastOp::create(b, f32, e.shl(sb, e.i32(23)));
    Value inverse = arith::BitcastOp::create(
        b, f32, e.shl(e.sub(e.i32(254), sb), e.i32(23)));
    e.store(scale, scales, row);
    if (withMultiplier)
      inverse = e.mul(inverse, e.load(multiplier, e.idx(0)));
    e.store(inverse, scales, e.add(row, m));
  });
}

} // namespace

static void emitCoopGemm(gpu::GPUFuncOp fn, Location loc, const CoopGemm &g) {
  int64_t m = g.m, n = g.reduce, k = g.cols;
  MLIRContext *ctx = fn.getContext();
  ImplicitLocOpBuilder b(loc, ctx);
  b.setInsertionPointToStart(&fn.getBody().front());
  Emit e{b};
  Type i32 = b.getI32Type(), f32 = b.getF32Type(), f16 = b.getF16Type();
  auto aType = gpu::MMAMatrixType::get({16, 16}, f16, "AOp");
  auto bType = gpu::MMAMatrixType::get({16, 16}, f16, "BOp");
  auto cType = gpu::MMAMatrixType::get({16, 16}, f32, "COp");
  int64_t blocks = packedRowBytes(k) / 32;
  // Words per staged bf16 chunk row (a tile row of 128 halves).
  constexpr int64_t kBf16Words = kTTileK / 2;
  Value dy = fn.getArgument(0), w = fn.getArgument(1),
        scales = fn.getArgument(2), dx = fn.getArgument(3);

  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value subgroup = e.divU(tid, 32);
  Value blockRow = e.mul(e.divU(subgroup, 4), 32);
  Value blockCol = e.mul(e.remU(subgroup, 4), 32);
  Value tileCol = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value col0 = e.mul(tileCol, kTTileK);
  Value row0 = e.mul(gpu::BlockIdOp::create(b, gpu::Dimension::y), kTTileM);
  Value hiStage =
      memref::AllocOp::create(b, sharedType(ctx, kTTileM * kAStride, f16));
  Value loStage =
      memref::AllocOp::create(b, sharedType(ctx, kTTileM * kAStride, f16));
  Value wStage =
      memref::AllocOp::create(b, sharedType(ctx, kTChunk * kBStride, f16));
  Value scaleTile =
      memref::AllocOp::create(b, sharedType(ctx, kTTileM * 16, f32));
  auto lead = [&](int64_t elements) { return b.getIndexAttr(elements); };

  // The tile's output factors, 16 per row (a cooperative operand), and the
  // scales of the rows this invocation stages: rows tid/32 + 8s.
  for (int64_t s = 0; s < kTTileM * 16 / kTThreads; ++s) {
    Value item = e.add(tid, s * kTThreads);
    Value r = e.divU(item, 16);
    e.store(e.load(scales, e.add(e.add(row0, r), m)), scaleTile, item);
  }
  constexpr int64_t kDyPerThread = kTTileM * kTChunk / kTThreads; // 8
  SmallVector<Value> rowScale;
  for (int64_t s = 0; s < kDyPerThread; ++s)
    rowScale.push_back(
        e.load(scales,
               e.add(row0, e.add(e.divU(tid, kTChunk), s * (kTThreads / 32)))));

  auto fetch = [&](Value chunk) {
    SmallVector<Value> v;
    for (int64_t s = 0; s < kDyPerThread; ++s) {
      Value item = e.add(tid, s * kTThreads);
      Value r = e.divU(item, kTChunk), c = e.remU(item, kTChunk);
      v.push_back(e.load(dy, e.add(e.mul(e.add(row0, r), g.lda),
                                   e.add(e.mul(chunk, kTChunk), c))));
    }
    if (g.bf16B) {
      // 8 words (16 bf16) each: row item/64 of the chunk, word item%64 of
      // the tile's 128 columns.
      for (int64_t s = 0; s < kTChunk * kBf16Words / kTThreads; ++s) {
        Value item = e.add(tid, s * kTThreads);
        Value vv = e.divU(item, kBf16Words), wc = e.remU(item, kBf16Words);
        v.push_back(
            e.load(w, e.add(e.mul(e.add(e.mul(chunk, kTChunk), vv), k / 2),
                            e.add(e.mul(tileCol, kBf16Words), wc))));
      }
      return v;
    }
    // One packed word each: row tid/8 of the chunk, word tid%8 of the
    // tile's block.
    Value nn = e.divU(tid, 8), wq = e.remU(tid, 8);
    v.push_back(
        e.load(w, e.add(e.mul(e.add(e.mul(chunk, kTChunk), nn), blocks * 8),
                        e.add(e.mul(tileCol, 8), wq))));
    return v;
  };
  auto put = [&](ValueRange v) {
    for (int64_t s = 0; s < kDyPerThread; ++s) {
      Value item = e.add(tid, s * kTThreads);
      Value r = e.divU(item, kTChunk), c = e.remU(item, kTChunk);
      Value scaled = e.mul(v[s], rowScale[s]);
      // hi: the value rounded to f16's 11 significant bits with integer
      // operations (a compiler may fold f32 -> f16 -> f32 into nothing,
      // which would leave lo zero), so the conversion to f16 is exact and
      // the remainder lo = scaled - hi is exact in f32.
      Value bits = arith::BitcastOp::create(b, i32, scaled);
      Value rounded =
          e.andI(e.add(bits, e.i32(0x1000)), e.i32(int32_t(0xffffe000u)));
      Value hiWide = arith::BitcastOp::create(b, f32, rounded);
      Value hi = arith::TruncFOp::create(b, f16, hiWide);
      Value lo = arith::TruncFOp::create(
          b, f16, arith::SubFOp::create(b, scaled, hiWide));
      Value at = e.add(e.mul(r, kAStride), c);
      e.store(hi, hiStage, at);
      e.store(lo, loStage, at);
    }
    if (g.bf16B) {
      // bf16 pairs, low half first; bf16 values are f16 values (exactly,
      // above f16's normal minimum 2^-14).
      for (int64_t s = 0; s < kTChunk * kBf16Words / kTThreads; ++s) {
        Value item = e.add(tid, s * kTThreads);
        Value vv = e.divU(item, kBf16Words), wc = e.remU(item, kBf16Words);
        Value word = v[kDyPerThread + s];
        Value halves[2] = {e.shl(word, e.i32(16)),
                           e.andI(word, e.i32(int32_t(0xffff0000u)))};
        for (int64_t h = 0; h < 2; ++h) {
          Value value = arith::TruncFOp::create(
              b, f16, arith::BitcastOp::create(b, f32, halves[h]));
          e.store(value, wStage,
                  e.add(e.mul(vv, kBStride), e.add(e.mul(wc, 2), h)));
        }
      }
      return;
    }
    Value word = v[kDyPerThread];
    Value nn = e.divU(tid, 8), wq = e.remU(tid, 8);
    for (int64_t lane = 0; lane < 4; ++lane)
      for (int64_t t = 0; t < 4; ++t) {
        // Column 32·lane + 4·wq + t of the block: its field, minus 1.
        Value field = e.andI(e.shrU(word, e.i32(2 * lane + 8 * t)), e.i32(3));
        Value weight = arith::SIToFPOp::create(b, f16, e.sub(field, e.i32(1)));
        e.store(weight, wStage,
                e.add(e.mul(nn, kBStride), e.add(e.mul(wq, 4), 32 * lane + t)));
      }
  };

  Value zero = gpu::SubgroupMmaConstantMatrixOp::create(b, cType, e.f32(0));
  SmallVector<Value> init(4, zero);
  llvm::append_range(init, fetch(e.idx(0)));
  int64_t chunks = n / kTChunk;
  SmallVector<Value> results =
      e.loop(0, chunks, 1, init, [&](Value chunk, ValueRange carried) {
        put(carried.drop_front(4));
        gpu::BarrierOp::create(b);
        Value ahead =
            arith::MinUIOp::create(b, e.add(chunk, 1), e.idx(chunks - 1));
        SmallVector<Value> next = fetch(ahead);
        SmallVector<Value> acc(carried.take_front(4));
        for (int64_t step = 0; step < kTChunk / 16; ++step) {
          Value hi[2], lo[2], wm[2];
          for (int64_t i = 0; i < 2; ++i) {
            Value at =
                e.add(e.mul(e.add(blockRow, 16 * i), kAStride), 16 * step);
            hi[i] = gpu::SubgroupMmaLoadMatrixOp::create(
                b, aType, hiStage, ValueRange{at}, lead(kAStride), UnitAttr());
            lo[i] = gpu::SubgroupMmaLoadMatrixOp::create(
                b, aType, loStage, ValueRange{at}, lead(kAStride), UnitAttr());
          }
          for (int64_t j = 0; j < 2; ++j)
            wm[j] = gpu::SubgroupMmaLoadMatrixOp::create(
                b, bType, wStage,
                ValueRange{
                    e.add(e.add(blockCol, 16 * j), 16 * step * kBStride)},
                lead(kBStride), UnitAttr());
          for (int64_t i = 0; i < 2; ++i)
            for (int64_t j = 0; j < 2; ++j) {
              Value &c = acc[2 * i + j];
              c = gpu::SubgroupMmaComputeOp::create(b, hi[i], wm[j], c,
                                                    UnitAttr(), UnitAttr());
              c = gpu::SubgroupMmaComputeOp::create(b, lo[i], wm[j], c,
                                                    UnitAttr(), UnitAttr());
            }
        }
        gpu::BarrierOp::create(b);
        llvm::append_range(acc, next);
        return acc;
      });

  // Undo the row scale, apply the multiplier (one rounding, as the CPU's
  // scale · sum), straight into dx.
  for (int64_t i = 0; i < 2; ++i) {
    Value factor = gpu::SubgroupMmaLoadMatrixOp::create(
        b, cType, scaleTile, ValueRange{e.mul(e.add(blockRow, 16 * i), 16)},
        lead(16), UnitAttr());
    for (int64_t j = 0; j < 2; ++j) {
      Value out = gpu::SubgroupMmaElementwiseOp::create(
          b, cType, ValueRange{results[2 * i + j], factor},
          gpu::MMAElementwiseOp::MULF);
      Value at = e.add(
          e.mul(e.add(e.add(row0, g.outRow0), e.add(blockRow, 16 * i)), g.ldc),
          e.add(col0, e.add(blockCol, 16 * j)));
      gpu::SubgroupMmaStoreMatrixOp::create(b, out, dx, ValueRange{at},
                                            lead(g.ldc), UnitAttr());
    }
  }
}

void buildCoopGemm(ModuleOp module, Location loc, const std::string &name,
                   const CoopGemm &g, const CoopGemmBuffers &buffers,
                   SmallVector<KernelDispatch> &dispatches) {
  MLIRContext *ctx = module.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  std::string scalesName =
      llvm::formatv("{0}_scales_m{1}_n{2}_lda{3}{4}", name, g.m, g.reduce,
                    g.lda, buffers.multiplier ? "_mul" : "");
  SmallVector<Value> scaleBuffers = {buffers.a};
  SmallVector<Type> scaleTypes = {bufferType(buffers.aElements, f32)};
  if (buffers.multiplier) {
    scaleBuffers.push_back(buffers.multiplier);
    scaleTypes.push_back(bufferType(1, f32));
  }
  scaleBuffers.push_back(buffers.scales);
  scaleTypes.push_back(bufferType(2 * g.m, f32));
  dispatches.push_back({scalesName, {g.m, 1, 1}, scaleBuffers});
  if (gpu::GPUFuncOp fn =
          createKernel(module, scalesName, scaleTypes, kTThreads))
    emitRowScales(fn, loc, g.m, g.reduce, g.lda);
  std::string productName = llvm::formatv(
      "{0}_m{1}_n{2}_k{3}_lda{4}_ldc{5}_r{6}_coop{7}x{8}", name, g.m, g.reduce,
      g.cols, g.lda, g.ldc, g.outRow0, kTTileM, kTTileK);
  dispatches.push_back({productName,
                        {g.cols / kTTileK, g.m / kTTileM, 1},
                        {buffers.a, buffers.b, buffers.scales, buffers.out}});
  if (gpu::GPUFuncOp fn = createKernel(
          module, productName,
          {bufferType(buffers.aElements, f32), bufferType(buffers.bWords, i32),
           bufferType(2 * g.m, f32), bufferType(buffers.outElements, f32)},
          kTThreads))
    emitCoopGemm(fn, loc, g);
}

namespace {

LogicalResult buildTernaryMatmulT(func::CallOp call, ModuleOp module,
                                  const KernelTarget &target,
                                  const KernelScratch &scratch,
                                  SmallVector<KernelDispatch> &dispatches) {
  CallOperands ops(call);
  FailureOr<int64_t> m = ops.constant(4, "m"), n = ops.constant(5, "n"),
                     k = ops.constant(6, "k");
  if (failed(m) || failed(n) || failed(k))
    return failure();
  if (*m <= 0 || *n <= 0 || *k <= 0)
    return call.emitError("empty ternary product");
  int64_t rowBytes = packedRowBytes(*k);
  FailureOr<HostBuffer> dy = ops.buffer(0, "dy", *m * *n, isF32),
                        w = ops.buffer(1, "w", *n * rowBytes, isI8),
                        scale = ops.buffer(2, "multiplier", 1, isF32),
                        dx = ops.buffer(3, "dx", *m * *k, isF32);
  if (failed(dy) || failed(w) || failed(scale) || failed(dx))
    return failure();

  if (scratch && coopGemmApplies(target, *m, *n, *k, 4 * *m * *k)) {
    CoopGemm g{*m,
               *n,
               *k,
               /*lda=*/*n,
               /*ldc=*/*k,
               /*outRow0=*/0,
               /*bf16B=*/false};
    CoopGemmBuffers buffers{dy->value, w->value, scale->value,      dx->value,
                            Value(),   *m * *n,  *n * rowBytes / 4, *m * *k};
    buffers.scales = scratch(8 * *m);
    buildCoopGemm(module, call.getLoc(), "bitloom_ternary_matmul_t", g, buffers,
                  dispatches);
    return success();
  }
  // As a GEMM: rows m, columns k (the packed ones), reduction n. A column
  // tile is one whole packed block.
  GemmProblem g{*m, *k, *n, false, false, false, BKind::Ternary};
  std::optional<Config> picked = pickConfig(
      target, *m, *k, ceilDiv(*n, kGemmChunk), kGemmChunk,
      [](const Config &c) { return c.bn == 128; },
      [&](const Config &c) { return gemmSharedBytes(g, c); });
  if (!picked)
    return call.emitError("no ternary matmul_t tile fits the target's "
                          "workgroup limits");
  const Config t = *picked;
  std::string name = llvm::formatv(
      "bitloom_ternary_matmul_t_m{0}_n{1}_k{2}_t{3}x{4}_r{5}x{6}_s{7}", *m, *n,
      *k, t.bm, t.bn, t.tm, t.tn, t.splits);
  dispatches.push_back({name,
                        {ceilDiv(*k, t.bn), ceilDiv(*m, t.bm), 1},
                        {dy->value, w->value, scale->value, dx->value}});

  MLIRContext *ctx = module.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  if (gpu::GPUFuncOp fn = createKernel(
          module, name,
          {bufferType(*m * *n, f32), bufferType(*n * rowBytes / 4, i32),
           bufferType(1, f32), bufferType(*m * *k, f32)},
          t.threads()))
    emitGemm(fn, call.getLoc(), g, t);
  return success();
}

} // namespace

FailureOr<SmallVector<KernelDispatch>>
buildMatmulDispatches(func::CallOp call, ModuleOp module,
                      const KernelTarget &target,
                      const KernelScratch &scratch) {
  loadDialects(module.getContext());
  SmallVector<KernelDispatch> dispatches;
  StringRef name = call.getCallee();
  LogicalResult built = failure();
  if (name == "bitloom_uk_ternary_matmul")
    built = buildTernaryMatmul(call, module, target, dispatches);
  else if (name == "bitloom_uk_ternary_matmul_t")
    built = buildTernaryMatmulT(call, module, target, scratch, dispatches);
  else if (name == "bitloom_uk_matmul_f32")
    built = buildDenseMatmul(call, module, target, /*bf16=*/false, dispatches);
  else if (name == "bitloom_uk_matmul_f32_bf16b")
    built = buildDenseMatmul(call, module, target, /*bf16=*/true, dispatches);
  else
    return call.emitError("no GPU matmul kernel for @") << name;
  if (failed(built))
    return failure();
  return dispatches;
}

} // namespace bitloom::codegen::vulkan

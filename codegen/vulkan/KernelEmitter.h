//===- KernelEmitter.h - Building gpu.func kernel bodies --------*- C++ -*-===//
//
// Shared by the attention and cross-entropy kernel builders: creating one
// kernel gpu.module (or finding the one of that name), reading a
// micro-kernel call's operands, and a small emitter for kernel bodies
// (index / f32 arithmetic, buffer and shared-memory access, scf loops,
// barriers). Header-only: each user is one translation unit.
//
// The bodies use only what -convert-gpu-to-spirv converts: gpu, arith,
// memref, scf, and spirv.GL ops for exp / log / fma (the pass has no math
// patterns). Index values become 32-bit integers in SPIR-V, so every
// buffer must have fewer than 2^31 elements.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_VULKAN_KERNELEMITTER_H
#define BITLOOM_CODEGEN_VULKAN_KERNELEMITTER_H

#include "codegen/vulkan/Kernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Utils/MemRefUtils.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVAttributes.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVDialect.h"
#include "mlir/Dialect/SPIRV/IR/SPIRVOps.h"
#include "mlir/Dialect/SPIRV/IR/TargetAndABI.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/SymbolTable.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

namespace bitloom::codegen::vulkan::emit {

/// Loads the dialects kernel bodies use (a no-op where already loaded).
inline void loadKernelDialects(mlir::MLIRContext *ctx) {
  ctx->getOrLoadDialect<mlir::arith::ArithDialect>();
  ctx->getOrLoadDialect<mlir::gpu::GPUDialect>();
  ctx->getOrLoadDialect<mlir::memref::MemRefDialect>();
  ctx->getOrLoadDialect<mlir::scf::SCFDialect>();
  ctx->getOrLoadDialect<mlir::spirv::SPIRVDialect>();
}

/// The kernel gpu.func of a new gpu.module `name` at the end of `module`
/// (marked gpu.container_module), with an entry block and `workgroupSize`
/// threads; null when `module` already has a gpu.module of that name: the
/// names encode every specialization, so that kernel is the same one.
inline mlir::gpu::GPUFuncOp createKernel(mlir::ModuleOp module,
                                         llvm::StringRef name,
                                         llvm::ArrayRef<mlir::Type> args,
                                         int64_t workgroupSize) {
  using namespace mlir;
  MLIRContext *ctx = module.getContext();
  loadKernelDialects(ctx);
  module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(ctx));
  if (isa_and_nonnull<gpu::GPUModuleOp>(
          SymbolTable::lookupSymbolIn(module, name)))
    return nullptr;
  OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
  Location loc = module.getLoc();
  auto gpuModule = gpu::GPUModuleOp::create(b, loc, name);
  b.setInsertionPointToStart(gpuModule.getBody());
  auto func = gpu::GPUFuncOp::create(b, loc, name, b.getFunctionType(args, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func->setAttr(spirv::getEntryPointABIAttrName(),
                spirv::getEntryPointABIAttr(
                    ctx, {int32_t(workgroupSize), int32_t(1), int32_t(1)}));
  return func;
}

/// A flat buffer argument type: memref<elements x elt>.
inline mlir::MemRefType flatBuffer(mlir::Type elt, int64_t elements) {
  return mlir::MemRefType::get({elements}, elt);
}

/// Reads a micro-kernel call's operands, failing with a diagnostic on the
/// call that names the operand.
class CallOperands {
public:
  explicit CallOperands(mlir::func::CallOp call) : call(call) {}

  mlir::InFlightDiagnostic error(unsigned i) {
    return call.emitError("operand #")
           << i << " of @" << call.getCallee() << ": ";
  }

  /// The static buffer behind pointer operand `i` (the source of its
  /// memref.cast), which must hold `elements` elements of `elt`, densely
  /// from its first byte, in the default memory space.
  mlir::FailureOr<mlir::Value> buffer(unsigned i, mlir::Type elt,
                                      int64_t elements) {
    using namespace mlir;
    if (i >= call.getNumOperands())
      return call.emitError("@") << call.getCallee() << " has "
                                 << call.getNumOperands() << " operands";
    Value v = call.getOperand(i);
    if (auto cast = v.getDefiningOp<memref::CastOp>())
      v = cast.getSource();
    auto type = dyn_cast<MemRefType>(v.getType());
    if (!type || !type.hasStaticShape())
      return error(i) << "expected a statically shaped memref (behind its "
                         "memref.cast), got "
                      << v.getType();
    int64_t offset;
    SmallVector<int64_t> strides;
    if (!memref::isStaticShapeAndContiguousRowMajor(type) ||
        failed(type.getStridesAndOffset(strides, offset)) || offset != 0)
      return error(i) << "expected a dense row-major buffer, got " << type;
    if (type.getMemorySpace())
      return error(i) << "expected the default memory space, got " << type;
    if (type.getElementType() != elt)
      return error(i) << "expected elements of " << elt << ", got " << type;
    if (type.getNumElements() != elements)
      return error(i) << "expected " << elements << " elements, got " << type;
    if (elements >= std::numeric_limits<int32_t>::max())
      return error(i) << "buffers of 2^31 or more elements are not supported "
                         "(32-bit indices)";
    return v;
  }

  mlir::FailureOr<int64_t> constantInt(unsigned i) {
    if (i >= call.getNumOperands())
      return call.emitError("@") << call.getCallee() << " has "
                                 << call.getNumOperands() << " operands";
    std::optional<int64_t> v = mlir::getConstantIntValue(call.getOperand(i));
    if (!v)
      return error(i) << "expected an integer constant";
    return *v;
  }

  mlir::FailureOr<float> constantF32(unsigned i) {
    if (i >= call.getNumOperands())
      return call.emitError("@") << call.getCallee() << " has "
                                 << call.getNumOperands() << " operands";
    llvm::APFloat value(0.0f);
    if (!mlir::matchPattern(call.getOperand(i),
                            mlir::m_ConstantFloat(&value)) ||
        !call.getOperand(i).getType().isF32())
      return error(i) << "expected an f32 constant";
    return value.convertToFloat();
  }

private:
  mlir::func::CallOp call;
};

/// Builds a kernel body at the builder's insertion point.
class Emitter {
public:
  Emitter(mlir::OpBuilder &b, mlir::Location loc) : b(b), loc(loc) {}

  mlir::OpBuilder &b;
  mlir::Location loc;

  // Constants.
  mlir::Value idx(int64_t v) {
    return mlir::arith::ConstantIndexOp::create(b, loc, v);
  }
  mlir::Value f32(double v) {
    return mlir::arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }
  mlir::Value i32(int64_t v) {
    return mlir::arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v));
  }
  mlir::Value negInf() { return f32(-std::numeric_limits<double>::infinity()); }
  mlir::Value posInf() { return f32(std::numeric_limits<double>::infinity()); }

  // Arithmetic on index / i32 (signed) or f32 by the operands' type.
  mlir::Value add(mlir::Value x, mlir::Value y) {
    if (isFloat(x))
      return mlir::arith::AddFOp::create(b, loc, x, y);
    return mlir::arith::AddIOp::create(b, loc, x, y);
  }
  mlir::Value add(mlir::Value x, int64_t y) { return y ? add(x, idx(y)) : x; }
  mlir::Value sub(mlir::Value x, mlir::Value y) {
    if (isFloat(x))
      return mlir::arith::SubFOp::create(b, loc, x, y);
    return mlir::arith::SubIOp::create(b, loc, x, y);
  }
  mlir::Value mul(mlir::Value x, mlir::Value y) {
    if (isFloat(x))
      return mlir::arith::MulFOp::create(b, loc, x, y);
    return mlir::arith::MulIOp::create(b, loc, x, y);
  }
  mlir::Value mul(mlir::Value x, int64_t y) {
    return y == 1 ? x : mul(x, idx(y));
  }
  mlir::Value div(mlir::Value x, mlir::Value y) {
    if (isFloat(x))
      return mlir::arith::DivFOp::create(b, loc, x, y);
    return mlir::arith::DivSIOp::create(b, loc, x, y);
  }
  mlir::Value div(mlir::Value x, int64_t y) {
    return y == 1 ? x : div(x, idx(y));
  }
  mlir::Value rem(mlir::Value x, int64_t y) {
    return mlir::arith::RemSIOp::create(b, loc, x, idx(y));
  }
  mlir::Value minI(mlir::Value x, mlir::Value y) {
    return mlir::arith::MinSIOp::create(b, loc, x, y);
  }
  mlir::Value maxI(mlir::Value x, mlir::Value y) {
    return mlir::arith::MaxSIOp::create(b, loc, x, y);
  }
  /// NaN-propagating, as the micro-kernels' max.
  mlir::Value fmax(mlir::Value x, mlir::Value y) {
    return mlir::arith::MaximumFOp::create(b, loc, x, y);
  }
  mlir::Value fma(mlir::Value x, mlir::Value y, mlir::Value z) {
    return mlir::spirv::GLFmaOp::create(b, loc, x.getType(), x, y, z);
  }
  mlir::Value exp(mlir::Value x) {
    return mlir::spirv::GLExpOp::create(b, loc, x);
  }
  mlir::Value log(mlir::Value x) {
    return mlir::spirv::GLLogOp::create(b, loc, x);
  }

  // Comparisons (signed for integers, ordered for floats).
  mlir::Value cmp(mlir::arith::CmpIPredicate ip, mlir::arith::CmpFPredicate fp,
                  mlir::Value x, mlir::Value y) {
    if (isFloat(x))
      return mlir::arith::CmpFOp::create(b, loc, fp, x, y);
    return mlir::arith::CmpIOp::create(b, loc, ip, x, y);
  }
  mlir::Value lt(mlir::Value x, mlir::Value y) {
    return cmp(mlir::arith::CmpIPredicate::slt, mlir::arith::CmpFPredicate::OLT,
               x, y);
  }
  mlir::Value lt(mlir::Value x, int64_t y) { return lt(x, idx(y)); }
  mlir::Value le(mlir::Value x, mlir::Value y) {
    return cmp(mlir::arith::CmpIPredicate::sle, mlir::arith::CmpFPredicate::OLE,
               x, y);
  }
  mlir::Value gt(mlir::Value x, mlir::Value y) {
    return cmp(mlir::arith::CmpIPredicate::sgt, mlir::arith::CmpFPredicate::OGT,
               x, y);
  }
  mlir::Value ge(mlir::Value x, mlir::Value y) {
    return cmp(mlir::arith::CmpIPredicate::sge, mlir::arith::CmpFPredicate::OGE,
               x, y);
  }
  mlir::Value eq(mlir::Value x, mlir::Value y) {
    return cmp(mlir::arith::CmpIPredicate::eq, mlir::arith::CmpFPredicate::OEQ,
               x, y);
  }
  /// x != y, true for NaN operands.
  mlir::Value ne(mlir::Value x, mlir::Value y) {
    return cmp(mlir::arith::CmpIPredicate::ne, mlir::arith::CmpFPredicate::UNE,
               x, y);
  }
  mlir::Value andI(mlir::Value x, mlir::Value y) {
    return mlir::arith::AndIOp::create(b, loc, x, y);
  }
  mlir::Value orI(mlir::Value x, mlir::Value y) {
    return mlir::arith::OrIOp::create(b, loc, x, y);
  }
  mlir::Value select(mlir::Value c, mlir::Value x, mlir::Value y) {
    return mlir::arith::SelectOp::create(b, loc, c, x, y);
  }

  // Memory.
  mlir::Value load(mlir::Value memref, mlir::Value i) {
    return mlir::memref::LoadOp::create(b, loc, memref, mlir::ValueRange{i});
  }
  mlir::Value load(mlir::Value memref, int64_t i) {
    return load(memref, idx(i));
  }
  void store(mlir::Value v, mlir::Value memref, mlir::Value i) {
    mlir::memref::StoreOp::create(b, loc, v, memref, mlir::ValueRange{i});
  }
  void store(mlir::Value v, mlir::Value memref, int64_t i) {
    store(v, memref, idx(i));
  }
  /// Workgroup (shared) memory of `n` elements.
  mlir::Value shared(int64_t n, mlir::Type elt = {}) {
    if (!elt)
      elt = b.getF32Type();
    auto space = mlir::spirv::StorageClassAttr::get(
        b.getContext(), mlir::spirv::StorageClass::Workgroup);
    auto type = mlir::MemRefType::get({n}, elt, mlir::AffineMap(), space);
    return mlir::memref::AllocOp::create(b, loc, type);
  }
  void barrier() { mlir::gpu::BarrierOp::create(b, loc); }
  mlir::Value threadId() {
    return mlir::gpu::ThreadIdOp::create(b, loc, mlir::gpu::Dimension::x);
  }
  mlir::Value blockId(mlir::gpu::Dimension d) {
    return mlir::gpu::BlockIdOp::create(b, loc, d);
  }
  mlir::Value i32ToIndex(mlir::Value v) {
    return mlir::arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
  }

  // Control flow.
  using LoopBody = std::function<llvm::SmallVector<mlir::Value>(
      mlir::Value iv, mlir::ValueRange iterArgs)>;
  /// scf.for from lb to ub (exclusive) by `step`, carrying `init`.
  llvm::SmallVector<mlir::Value> loop(mlir::Value lb, mlir::Value ub,
                                      int64_t step, mlir::ValueRange init,
                                      const LoopBody &body) {
    auto op =
        mlir::scf::ForOp::create(b, loc, lb, ub, idx(step), init,
                                 [&](mlir::OpBuilder &, mlir::Location,
                                     mlir::Value iv, mlir::ValueRange args) {
                                   llvm::SmallVector<mlir::Value> next =
                                       body(iv, args);
                                   mlir::scf::YieldOp::create(b, loc, next);
                                 });
    llvm::SmallVector<mlir::Value> results(op.getResults());
    // SCFToSPIRV (MLIR 22) returns a loop's results through a Function
    // variable stored only in the body: a loop that runs zero times yields
    // an uninitialized value (0 on lavapipe, garbage on NVIDIA). Pick the
    // initial values then, unless the bounds prove an iteration.
    std::optional<int64_t> lo = mlir::getConstantIntValue(lb),
                           hi = mlir::getConstantIntValue(ub);
    if (results.empty() || (lo && hi && *lo < *hi))
      return results;
    mlir::Value ran = lt(lb, ub);
    for (auto [result, initial] : llvm::zip(results, init))
      result = select(ran, result, initial);
    return results;
  }
  llvm::SmallVector<mlir::Value> loop(int64_t lb, int64_t ub, int64_t step,
                                      mlir::ValueRange init,
                                      const LoopBody &body) {
    return loop(idx(lb), idx(ub), step, init, body);
  }
  void loop(mlir::Value lb, mlir::Value ub, int64_t step,
            const std::function<void(mlir::Value)> &body) {
    loop(lb, ub, step, {}, [&](mlir::Value iv, mlir::ValueRange) {
      body(iv);
      return llvm::SmallVector<mlir::Value>();
    });
  }
  void loop(int64_t lb, int64_t ub, int64_t step,
            const std::function<void(mlir::Value)> &body) {
    loop(idx(lb), idx(ub), step, body);
  }
  void ifThen(mlir::Value cond, const std::function<void()> &then) {
    mlir::scf::IfOp::create(b, loc, cond,
                            [&](mlir::OpBuilder &, mlir::Location) {
                              then();
                              mlir::scf::YieldOp::create(b, loc);
                            });
  }
  /// scf.if with results: both branches yield values of the same types.
  llvm::SmallVector<mlir::Value>
  ifElse(mlir::Value cond,
         const std::function<llvm::SmallVector<mlir::Value>()> &then,
         const std::function<llvm::SmallVector<mlir::Value>()> &otherwise) {
    auto op = mlir::scf::IfOp::create(
        b, loc, cond,
        [&](mlir::OpBuilder &, mlir::Location) {
          mlir::scf::YieldOp::create(b, loc, then());
        },
        [&](mlir::OpBuilder &, mlir::Location) {
          mlir::scf::YieldOp::create(b, loc, otherwise());
        });
    return llvm::SmallVector<mlir::Value>(op.getResults());
  }
  void ret() { mlir::gpu::ReturnOp::create(b, loc); }

private:
  static bool isFloat(mlir::Value v) {
    return mlir::isa<mlir::FloatType>(v.getType());
  }
};

/// Threads laid over a rows x cols tile: thread t covers rows
/// t / cols' + rowThreads * r (r < rowsPer) and columns
/// t % cols' + colThreads * c (c < colsPer), so that neighbouring threads
/// touch neighbouring columns (coalesced, no shared-memory bank conflicts).
struct ThreadGrid {
  int64_t rowThreads = 1, colThreads = 1, rowsPer = 1, colsPer = 1;
  int64_t used() const { return rowThreads * colThreads; }
};

/// The grid of at most `threads` threads over rows x cols (rows a power of
/// two) that uses the most threads, then has the squarest per-thread tile
/// (fewest loads per multiply-add).
inline ThreadGrid gridFor(int64_t rows, int64_t cols, int64_t threads) {
  ThreadGrid best;
  bool have = false;
  for (int64_t ct = 1; ct <= threads && ct <= cols; ct *= 2) {
    if (cols % ct)
      break;
    int64_t rt = std::min(threads / ct, rows);
    while (rows % rt)
      rt /= 2;
    ThreadGrid g{rt, ct, rows / rt, cols / ct};
    auto better = [&] {
      if (g.used() != best.used())
        return g.used() > best.used();
      return g.rowsPer + g.colsPer < best.rowsPer + best.colsPer;
    };
    if (!have || better()) {
      best = g;
      have = true;
    }
  }
  return best;
}

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t pow2Ceil(int64_t x) {
  int64_t p = 1;
  while (p < x)
    p *= 2;
  return p;
}

/// Threads per workgroup the kernels use: 256 where the target allows
/// (enough warps per workgroup to hide latency), else its limit rounded
/// down to a power of two.
inline int64_t workgroupThreads(const KernelTarget &target, int64_t cap = 256) {
  int64_t t = 1;
  while (t * 2 <= std::min(cap, target.maxWorkgroupInvocations))
    t *= 2;
  return t;
}

/// The bits of `v` in hex, for kernel names.
inline std::string hexBits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  char text[9];
  std::snprintf(text, sizeof text, "%08x", bits);
  return text;
}

} // namespace bitloom::codegen::vulkan::emit

#endif // BITLOOM_CODEGEN_VULKAN_KERNELEMITTER_H

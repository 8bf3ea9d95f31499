//===- CrossEntropyKernels.cpp - LM head + cross-entropy as GPU kernels ---===//
//
// bitloom_uk_linear_cross_entropy[_bf16w][_loss] (runtime/ukernels/
// Ukernels.h) as dispatches, block of rows by block of rows through the
// caller's [blockRows, v] scratch, like the micro-kernel:
//  1. logits: scratch = x[block] · wᵀ, a tiled GEMM (tiles whose rows are
//     all masked out are skipped: nothing reads their logits);
//  2. softmax: a workgroup per row takes the row's max, Σ exp and loss term
//     (0 for masked-out rows); in training it overwrites the row with
//     dlogits = g·(softmax - onehot), g = lossGrad / count (0 rows when
//     masked out). The term is parked where nothing reads it before step 3:
//     the row's first xGrad element in training (written by step 4 only),
//     the row's first logit otherwise (consumed by then);
//  3. loss: one workgroup adds the block's terms (in a fixed order) to the
//     running total in *loss; the last block divides by the count;
//  4. training: xGrad[block] = dlogits · w, a tiled GEMM (all-masked tiles
//     are written as zeros).
// Every kernel specializes on its block (the bindings are whole buffers),
// so a call makes 3 or 4 kernels per block of rows. The mask count is
// recomputed where needed (n floats, cheap) rather than stored: the call has
// no buffer to keep it in.
//
// f32 throughout; the loss sums are tree reductions in shared memory.
// bf16 weights are read as i32 words (two elements each, low half first)
// and widened exactly (bits << 16).
//
//===----------------------------------------------------------------------===//
#include "codegen/vulkan/KernelBuilders.h"
#include "codegen/vulkan/KernelEmitter.h"

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace mlir;
using namespace bitloom::codegen::vulkan::emit;

namespace bitloom::codegen::vulkan {

namespace {

struct Problem {
  int64_t n, v, k, blockRows;
  bool bf16, training;
  std::string name() const {
    return std::string(bf16 ? "bf16" : "f32") +
           (training ? "_train" : "_loss") + "_n" + std::to_string(n) + "_v" +
           std::to_string(v) + "_k" + std::to_string(k);
  }
};

/// C[M, N] = A[M, K] · op(B) for one block: A rows from aRow0 (leading
/// dimension lda), C rows from cRow0 (ldc), the rows' mask from maskRow0.
/// B is w: [N, K] when `transposedB` (the logits), else [K, N] (xGrad).
struct Gemm {
  int64_t m, n, k;
  bool transposedB, bf16;
  int64_t aRow0, lda, cRow0, ldc, maskRow0;
  /// Tiles without a masked-in row: write zeros (else leave C alone).
  bool zeroSkipped;
};

/// A GEMM's tiling: bm x bn outputs per workgroup, `threads` threads in
/// `groups` groups that split each slice of K (bk deep per group) and add
/// their partial tiles at the end: more threads per tile where the product
/// has too few tiles to fill the GPU (K is long: the xGrad product).
struct GemmTiles {
  int64_t threads, bm, bn, bk, groups;
  int64_t depth() const { return bk * groups; }
  int64_t groupThreads() const { return threads / groups; }
  std::string name() const {
    return "w" + std::to_string(threads) + "_" + std::to_string(bm) + "x" +
           std::to_string(bn) + "x" + std::to_string(bk) + "g" +
           std::to_string(groups);
  }
};

/// Shared floats of a tiling: the A and B slices, or the partial tiles of
/// half the groups, whichever is larger (they share one array).
int64_t gemmSharedFloats(const GemmTiles &t) {
  return std::max(t.depth() * (t.bm + t.bn + 2), t.groups / 2 * t.bm * t.bn);
}

/// Whether `t` fits the target: threads and shared memory.
bool fits(const GemmTiles &t, const KernelTarget &target) {
  return t.threads <= target.maxWorkgroupInvocations &&
         gemmSharedFloats(t) * 4 <= target.sharedMemoryBytes &&
         t.bm * t.bn % t.groupThreads() == 0;
}

/// 128 x 128 tiles with 256 threads (8 x 8 outputs each) for large
/// products, smaller ones where that leaves too few workgroups to fill a
/// large GPU; `override` names an environment variable that may force one
/// ("bm,bn,bk,groupThreads,groups", for tuning runs).
GemmTiles chooseGemmTiles(const Gemm &g, const KernelTarget &target,
                          const char *override) {
  int64_t maxThreads = workgroupThreads(target);
  int64_t bm = std::min<int64_t>(128, std::max<int64_t>(8, pow2Ceil(g.m)));
  int64_t bn = 128;
  auto tiles = [&] { return ceilDiv(g.m, bm) * ceilDiv(g.n, bn); };
  while (tiles() < 256 && bn > 32)
    bn /= 2;
  while (tiles() < 256 && bm > 16)
    bm /= 2;
  // 16 to 64 outputs per thread.
  int64_t threads = std::min(maxThreads, bm * bn / 16);
  threads = std::max(threads, std::min<int64_t>(32, maxThreads));
  GemmTiles t{threads, bm, bn, 16, 1};
  while (!fits(t, target) && t.bk > 2)
    t.bk /= 2;
  // A long K and too few large tiles to fill an H100 (the xGrad product,
  // n = k = 2560 over the vocabulary, up to 512 rows): 32 x 32 tiles, K
  // split over up to 16 groups of 32 threads. Measured there on the 2B
  // model's head: 2.3 ms instead of 8.4 for 32 rows, 10.5 instead of 12.2
  // for 256; even at 512 rows, worse from 1024.
  if (g.k >= 4096 && ceilDiv(g.m, 128) * ceilDiv(g.n, 128) < 80) {
    int64_t rows = std::min<int64_t>(32, std::max<int64_t>(16, pow2Ceil(g.m)));
    // rows x 32 tiles, 32 outputs per thread.
    int64_t groupThreads = rows;
    GemmTiles split{0, rows, 32, 8, 1};
    for (int64_t groups = 16; groups >= 2; groups /= 2) {
      split.groups = groups;
      split.threads = groupThreads * groups;
      if (split.threads <= workgroupThreads(target, 512) &&
          fits(split, target)) {
        t = split;
        break;
      }
    }
  }
  if (const char *forced = std::getenv(override)) {
    int64_t v[5];
    if (std::sscanf(forced, "%ld,%ld,%ld,%ld,%ld", &v[0], &v[1], &v[2], &v[3],
                    &v[4]) == 5) {
      GemmTiles f{v[3] * v[4], v[0], v[1], v[2], v[4]};
      if (fits(f, target))
        t = f;
    }
  }
  return t;
}

class Builder {
public:
  Builder(gpu::GPUFuncOp func, int64_t threads)
      : b(OpBuilder::atBlockBegin(&func.getBody().front())),
        e(b, func.getLoc()), args(func.getArguments()), threads(threads) {
    tid = e.threadId();
  }

protected:
  OpBuilder b;
  Emitter e;
  ValueRange args;
  int64_t threads;
  Value tid;

  Value toF32(Value i32) {
    return arith::SIToFPOp::create(b, e.loc, b.getF32Type(), i32);
  }
  /// Σ over the workgroup of every thread's `value` (f32 or i32), or its
  /// NaN-propagating max, by a tree in shared memory `buf` of `threads`
  /// elements: the same order whatever the data. Every thread gets it.
  Value reduce(Value buf, Value value, bool max = false) {
    e.store(value, buf, tid);
    e.barrier();
    for (int64_t half = threads / 2; half >= 1; half /= 2) {
      e.ifThen(e.lt(tid, half), [&] {
        Value x = e.load(buf, tid), y = e.load(buf, e.add(tid, half));
        e.store(max ? e.fmax(x, y) : e.add(x, y), buf, tid);
      });
      e.barrier();
    }
    Value result = e.load(buf, 0);
    // The buffer may be reused right away.
    e.barrier();
    return result;
  }
  /// #{i < n : mask[i] != 0} (NaN counts, as in the micro-kernel), as i32.
  Value count(Value mask, int64_t n, Value buf) {
    Value partial =
        e.loop(tid, e.idx(n), threads, {e.i32(0)}, [&](Value i, ValueRange a) {
          Value in = e.ne(e.load(mask, i), e.f32(0));
          return SmallVector<Value>{
              e.add(a[0], e.select(in, e.i32(1), e.i32(0)))};
        })[0];
    return reduce(buf, partial);
  }
};

/// The tiled GEMM: a workgroup per bm x bn tile of C; each depth-deep
/// slice of A and B is staged in shared memory (k-major, padded rows), each
/// thread group multiplies its bk rows of it into 8 x 8 (or smaller)
/// outputs per thread; the groups' partial tiles are added in a fixed tree
/// order at the end.
class GemmKernel : public Builder {
public:
  GemmKernel(gpu::GPUFuncOp func, const Gemm &g, const GemmTiles &t)
      : Builder(func, t.threads), g(g), t(t),
        grid(gridFor(t.bm, t.bn, t.groupThreads())) {}

  void build() {
    Value a = args[0], w = args[1], mask = args[2], c = args[3];
    Value n0 = e.mul(e.blockId(gpu::Dimension::x), t.bn);
    Value m0 = e.mul(e.blockId(gpu::Dimension::y), t.bm);
    int64_t depth = t.depth();
    Value sh = e.shared(gemmSharedFloats(t));
    aBase = 0;
    bBase = depth * (t.bm + 1);
    Value group = e.div(tid, t.groupThreads());
    Value local = t.groups > 1 ? e.rem(tid, t.groupThreads()) : tid;
    Value col = e.rem(local, grid.colThreads);
    Value row = e.rem(e.div(local, grid.colThreads), grid.rowThreads);
    // Group 0 (its threads on the grid) stores the tile.
    Value storer;
    if (t.groups > 1)
      storer = e.lt(tid, grid.used());
    else if (grid.used() < t.threads)
      storer = e.lt(tid, grid.used());

    // Whether any row of the tile is masked in: the same answer in every
    // thread, so the branch below is uniform.
    Value anyIn =
        e.loop(0, t.bm, 1, {arith::ConstantIntOp::create(b, e.loc, 0, 1)},
               [&](Value i, ValueRange acc) {
                 Value r = e.add(m0, i);
                 Value at = e.add(e.minI(r, e.idx(g.m - 1)), e.idx(g.maskRow0));
                 Value in = e.ne(e.load(mask, at), e.f32(0));
                 if (g.m % t.bm)
                   in = e.andI(in, e.lt(r, g.m));
                 return SmallVector<Value>{e.orI(acc[0], in)};
               })[0];

    auto storeTile = [&](const std::function<Value(int64_t, int64_t)> &val) {
      for (int64_t r = 0; r < grid.rowsPer; ++r) {
        Value gm = e.add(e.add(row, grid.rowThreads * r), m0);
        for (int64_t cc = 0; cc < grid.colsPer; ++cc) {
          Value gn = e.add(e.add(col, grid.colThreads * cc), n0);
          Value ok = storer;
          auto also = [&](Value cond) { ok = ok ? e.andI(ok, cond) : cond; };
          if (g.m % t.bm)
            also(e.lt(gm, g.m));
          if (g.n % t.bn)
            also(e.lt(gn, g.n));
          Value at = e.add(e.mul(e.add(gm, g.cRow0), g.ldc), gn);
          Value v = val(r, cc);
          if (ok)
            e.ifThen(ok, [&] { e.store(v, c, at); });
          else
            e.store(v, c, at);
        }
      }
    };

    e.ifElse(
        anyIn,
        [&]() -> SmallVector<Value> {
          SmallVector<Value> acc(grid.rowsPer * grid.colsPer, e.f32(0));
          Value kBase = e.mul(group, t.bk);
          acc = e.loop(0, ceilDiv(g.k, depth), 1, acc,
                       [&](Value kt, ValueRange it) {
                         Value k0 = e.mul(kt, depth);
                         loadA(a, sh, m0, k0);
                         loadB(w, sh, n0, k0);
                         e.barrier();
                         SmallVector<Value> next(it.begin(), it.end());
                         multiply(sh, kBase, row, col, next);
                         e.barrier();
                         return next;
                       });
          reduceGroups(sh, group, row, col, acc);
          storeTile([&](int64_t r, int64_t cc) {
            return acc[r * grid.colsPer + cc];
          });
          return {};
        },
        [&]() -> SmallVector<Value> {
          if (g.zeroSkipped)
            storeTile([&](int64_t, int64_t) { return e.f32(0); });
          return {};
        });
    e.ret();
  }

private:
  Gemm g;
  GemmTiles t;
  ThreadGrid grid;
  int64_t aBase = 0, bBase = 0; // the slices' offsets in the shared array

  /// Runs body(el) for el = tid, tid + threads, ... below `total`,
  /// unrolled (guarded where `total` is not a multiple of threads).
  void forEachElement(int64_t total, const std::function<void(Value)> &body) {
    for (int64_t first = 0; first < total; first += t.threads) {
      Value el = e.add(tid, first);
      if (first + t.threads <= total)
        body(el);
      else
        e.ifThen(e.lt(el, total), [&] { body(el); });
    }
  }

  /// A[m0 .., k0 ..] into the A slice [kk][m] (K-contiguous rows:
  /// consecutive threads read consecutive kk).
  void loadA(Value a, Value sh, Value m0, Value k0) {
    int64_t depth = t.depth();
    forEachElement(t.bm * depth, [&](Value el) {
      Value m = e.div(el, depth), kk = e.rem(el, depth);
      Value gm = e.add(m0, m), gk = e.add(k0, kk);
      Value at = e.add(e.mul(e.add(e.minI(gm, e.idx(g.m - 1)), g.aRow0), g.lda),
                       e.minI(gk, e.idx(g.k - 1)));
      Value v = e.load(a, at);
      Value ok;
      if (g.m % t.bm)
        ok = e.lt(gm, g.m);
      if (g.k % depth)
        ok = ok ? e.andI(ok, e.lt(gk, g.k)) : e.lt(gk, g.k);
      if (ok)
        v = e.select(ok, v, e.f32(0));
      e.store(v, sh, e.add(e.mul(kk, t.bm + 1), m));
    });
  }

  /// The two bf16 elements of an i32 word, widened: low half first.
  std::pair<Value, Value> widen(Value word) {
    Value lo = arith::ShLIOp::create(b, e.loc, word, e.i32(16));
    Value hi =
        arith::AndIOp::create(b, e.loc, word, e.i32(int32_t(0xffff0000)));
    auto f32 = b.getF32Type();
    return {arith::BitcastOp::create(b, e.loc, f32, lo),
            arith::BitcastOp::create(b, e.loc, f32, hi)};
  }

  /// B's slice into [kk][n] after A's.
  void loadB(Value w, Value sh, Value n0, Value k0) {
    int64_t stride = t.bn + 1, depth = t.depth();
    auto at2 = [&](Value kk, Value nn) {
      return e.add(e.mul(kk, stride), e.add(nn, bBase));
    };
    auto guard = [&](Value v, Value gn, Value gk) {
      Value ok;
      if (g.n % t.bn)
        ok = e.lt(gn, g.n);
      if (g.k % depth)
        ok = ok ? e.andI(ok, e.lt(gk, g.k)) : e.lt(gk, g.k);
      return ok ? e.select(ok, v, e.f32(0)) : v;
    };
    Value lastN = e.idx(g.n - 1), lastK = e.idx(g.k - 1);
    if (g.transposedB && !g.bf16) {
      // w[n][k]: like A.
      forEachElement(t.bn * depth, [&](Value el) {
        Value nn = e.div(el, depth), kk = e.rem(el, depth);
        Value gn = e.add(n0, nn), gk = e.add(k0, kk);
        Value at = e.add(e.mul(e.minI(gn, lastN), g.k), e.minI(gk, lastK));
        e.store(guard(e.load(w, at), gn, gk), sh, at2(kk, nn));
      });
    } else if (g.transposedB) {
      // bf16 w[n][k]: a word holds (k, k + 1); k is even.
      int64_t pairs = depth / 2;
      forEachElement(t.bn * pairs, [&](Value el) {
        Value nn = e.div(el, pairs), p = e.rem(el, pairs);
        Value gn = e.add(n0, nn), gk = e.add(k0, e.mul(p, 2));
        Value at = e.add(e.mul(e.minI(gn, lastN), g.k / 2),
                         e.div(e.minI(gk, e.idx(g.k - 2)), 2));
        auto [lo, hi] = widen(e.load(w, at));
        Value kk = e.mul(p, 2);
        e.store(guard(lo, gn, gk), sh, at2(kk, nn));
        e.store(guard(hi, gn, gk), sh, at2(e.add(kk, 1), nn));
      });
    } else if (!g.bf16) {
      // w[k][n]: consecutive threads read consecutive n.
      forEachElement(depth * t.bn, [&](Value el) {
        Value kk = e.div(el, t.bn), nn = e.rem(el, t.bn);
        Value gn = e.add(n0, nn), gk = e.add(k0, kk);
        Value at = e.add(e.mul(e.minI(gk, lastK), g.n), e.minI(gn, lastN));
        e.store(guard(e.load(w, at), gn, gk), sh, at2(kk, nn));
      });
    } else {
      // bf16 w[k][n]: a word holds (n, n + 1); n is even.
      int64_t pairs = t.bn / 2;
      forEachElement(depth * pairs, [&](Value el) {
        Value kk = e.div(el, pairs), p = e.rem(el, pairs);
        Value gn = e.add(n0, e.mul(p, 2)), gk = e.add(k0, kk);
        Value at = e.add(e.mul(e.minI(gk, lastK), g.n / 2),
                         e.div(e.minI(gn, e.idx(g.n - 2)), 2));
        auto [lo, hi] = widen(e.load(w, at));
        Value nn = e.mul(p, 2);
        e.store(guard(lo, gn, gk), sh, at2(kk, nn));
        e.store(guard(hi, gn, gk), sh, at2(kk, e.add(nn, 1)));
      });
    }
  }

  /// acc += A[kk][rows] ⊗ B[kk][cols] over this group's bk rows of the
  /// slice (from kBase), fully unrolled.
  void multiply(Value sh, Value kBase, Value row, Value col,
                SmallVector<Value> &acc) {
    Value aRow = e.add(e.mul(kBase, t.bm + 1), row);
    Value bCol = e.add(e.mul(kBase, t.bn + 1), e.add(col, bBase));
    for (int64_t kk = 0; kk < t.bk; ++kk) {
      SmallVector<Value> av, bv;
      for (int64_t r = 0; r < grid.rowsPer; ++r)
        av.push_back(
            e.load(sh, e.add(aRow, kk * (t.bm + 1) + grid.rowThreads * r)));
      for (int64_t c = 0; c < grid.colsPer; ++c)
        bv.push_back(
            e.load(sh, e.add(bCol, kk * (t.bn + 1) + grid.colThreads * c)));
      for (int64_t r = 0; r < grid.rowsPer; ++r)
        for (int64_t c = 0; c < grid.colsPer; ++c) {
          Value &slot = acc[r * grid.colsPer + c];
          slot = e.fma(av[r], bv[c], slot);
        }
    }
  }

  /// Adds the groups' partial tiles into group 0's: the upper half of the
  /// live groups hands its tiles to the lower half through shared memory,
  /// until one is left.
  void reduceGroups(Value sh, Value group, Value row, Value col,
                    SmallVector<Value> &acc) {
    int64_t tile = t.bm * t.bn;
    Value active = grid.used() < t.groupThreads()
                       ? e.lt(e.rem(tid, t.groupThreads()), grid.used())
                       : Value();
    auto slot = [&](Value g, int64_t r, int64_t c) {
      Value at = e.add(e.mul(e.add(row, grid.rowThreads * r), t.bn),
                       e.add(col, grid.colThreads * c));
      return e.add(e.mul(g, tile), at);
    };
    for (int64_t live = t.groups; live > 1; live /= 2) {
      int64_t half = live / 2;
      Value upper = e.andI(e.ge(group, e.idx(half)), e.lt(group, live));
      if (active)
        upper = e.andI(upper, active);
      e.ifThen(upper, [&] {
        Value g = e.sub(group, e.idx(half));
        for (int64_t r = 0; r < grid.rowsPer; ++r)
          for (int64_t c = 0; c < grid.colsPer; ++c)
            e.store(acc[r * grid.colsPer + c], sh, slot(g, r, c));
      });
      e.barrier();
      Value lower = e.lt(group, half);
      SmallVector<Value> sum = e.ifElse(
          lower,
          [&]() -> SmallVector<Value> {
            SmallVector<Value> out(acc);
            for (int64_t r = 0; r < grid.rowsPer; ++r)
              for (int64_t c = 0; c < grid.colsPer; ++c) {
                Value &v = out[r * grid.colsPer + c];
                v = e.add(v, e.load(sh, slot(group, r, c)));
              }
            return out;
          },
          [&]() -> SmallVector<Value> { return acc; });
      acc.assign(sum.begin(), sum.end());
      e.barrier();
    }
  }
};

/// Step 2: a workgroup per row of the block.
/// Training args: labels, mask, lossGrad, scratch, xGrad.
/// Loss-only args: labels, mask, scratch.
class SoftmaxKernel : public Builder {
public:
  SoftmaxKernel(gpu::GPUFuncOp func, const Problem &p, int64_t r0,
                int64_t threads)
      : Builder(func, threads), p(p), r0(r0) {}

  void build() {
    Value labels = args[0], mask = args[1];
    Value scratch = args[p.training ? 3 : 2];
    Value r = e.blockId(gpu::Dimension::x);
    Value global = e.add(r, r0);
    Value rowBase = e.mul(r, p.v);
    Value buf = e.shared(threads), counts = e.shared(threads, b.getI32Type());
    Value termAt = p.training ? e.mul(global, p.k) : rowBase;
    Value termBuffer = p.training ? args[4] : scratch;
    Value cnt = p.training ? count(mask, p.n, counts) : Value();
    Value in = e.ne(e.load(mask, global), e.f32(0));
    Value term = e.ifElse(
        in,
        [&]() -> SmallVector<Value> {
          Value label = e.i32ToIndex(e.load(labels, global));
          Value clamped = e.maxI(e.minI(label, e.idx(p.v - 1)), e.idx(0));
          Value partialMax =
              e.loop(tid, e.idx(p.v), threads, {e.negInf()},
                     [&](Value c, ValueRange a) {
                       return SmallVector<Value>{
                           e.fmax(a[0], e.load(scratch, e.add(rowBase, c)))};
                     })[0];
          Value max = reduce(buf, partialMax, /*max=*/true);
          Value partialSum = e.loop(
              tid, e.idx(p.v), threads, {e.f32(0)}, [&](Value c, ValueRange a) {
                Value l = e.load(scratch, e.add(rowBase, c));
                return SmallVector<Value>{e.add(a[0], e.exp(e.sub(l, max)))};
              })[0];
          Value sum = reduce(buf, partialSum);
          Value atLabel = e.load(scratch, e.add(rowBase, clamped));
          Value logProb = e.sub(e.sub(atLabel, max), e.log(sum));
          if (p.training) {
            // g · softmax - g at the label (a label outside the
            // vocabulary has no one-hot).
            Value g = e.div(e.load(args[2], 0), toF32(cnt));
            Value inv = e.div(e.f32(1), sum);
            e.loop(tid, e.idx(p.v), threads, [&](Value c) {
              Value at = e.add(rowBase, c);
              Value soft = e.mul(e.exp(e.sub(e.load(scratch, at), max)), inv);
              Value d = e.mul(g, soft);
              d = e.select(e.eq(c, label), e.sub(d, g), d);
              e.store(d, scratch, at);
            });
          }
          return {e.sub(e.f32(0), logProb)};
        },
        [&]() -> SmallVector<Value> {
          if (p.training)
            e.loop(tid, e.idx(p.v), threads, [&](Value c) {
              e.store(e.f32(0), scratch, e.add(rowBase, c));
            });
          return {e.f32(0)};
        })[0];
    // Every thread has read the row (its label's logit included) before
    // its first element may become the term.
    e.barrier();
    e.ifThen(e.eq(tid, e.idx(0)), [&] { e.store(term, termBuffer, termAt); });
    e.ret();
  }

private:
  Problem p;
  int64_t r0;
};

/// Step 3: one workgroup. Args: mask, the terms' buffer, loss.
class LossKernel : public Builder {
public:
  LossKernel(gpu::GPUFuncOp func, const Problem &p, int64_t r0, int64_t rows,
             bool first, bool last, int64_t threads)
      : Builder(func, threads), p(p), r0(r0), rows(rows), first(first),
        last(last) {}

  void build() {
    Value mask = args[0], terms = args[1], loss = args[2];
    Value buf = e.shared(threads);
    Value cnt;
    if (last)
      cnt = count(mask, p.n, e.shared(threads, b.getI32Type()));
    int64_t stride = p.training ? p.k : p.v, offset = p.training ? r0 : 0;
    Value partial = e.loop(
        tid, e.idx(rows), threads, {e.f32(0)}, [&](Value i, ValueRange a) {
          Value at = e.mul(e.add(i, offset), stride);
          return SmallVector<Value>{e.add(a[0], e.load(terms, at))};
        })[0];
    Value sum = reduce(buf, partial);
    e.ifThen(e.eq(tid, e.idx(0)), [&] {
      Value total = first ? sum : e.add(e.load(loss, 0), sum);
      if (last) {
        // No masked-in row: the loss is 0, not 0 / 0.
        Value none = e.eq(cnt, e.i32(0));
        total = e.select(none, e.f32(0), e.div(total, toF32(cnt)));
      }
      e.store(total, loss, 0);
    });
    e.ret();
  }

private:
  Problem p;
  int64_t r0, rows;
  bool first, last;
};

} // namespace

FailureOr<SmallVector<KernelDispatch>>
buildCrossEntropyDispatches(func::CallOp call, ModuleOp module,
                            const KernelTarget &target,
                            const KernelScratch &kernelScratch) {
  StringRef callee = call.getCallee();
  StringRef base = callee;
  bool training = !base.consume_back("_loss");
  bool bf16 = base.consume_back("_bf16w");
  if (base != "bitloom_uk_linear_cross_entropy")
    return call.emitError("no cross-entropy kernel for @") << callee;
  unsigned numBuffers = training ? 8 : 6;
  if (call.getNumOperands() != numBuffers + 4)
    return call.emitError("@") << callee << " expects " << numBuffers + 4
                               << " operands, got " << call.getNumOperands();
  CallOperands ops(call);
  SmallVector<int64_t> sizes;
  for (unsigned i = 0; i < 4; ++i) {
    FailureOr<int64_t> size = ops.constantInt(numBuffers + i);
    if (failed(size))
      return failure();
    sizes.push_back(*size);
  }
  Problem p{sizes[0], sizes[1], sizes[2], sizes[3], bf16, training};
  if (p.n <= 0 || p.v <= 0 || p.k <= 0 || p.blockRows <= 0)
    return call.emitError("linear_cross_entropy: unsupported sizes n ")
           << p.n << ", v " << p.v << ", k " << p.k << ", block rows "
           << p.blockRows;
  if (bf16 && p.k % 2)
    return call.emitError("linear_cross_entropy_bf16w: k = ")
           << p.k << " is odd: bf16 rows are read as whole 32-bit words";

  MLIRContext *ctx = call.getContext();
  Type f32 = Float32Type::get(ctx), i32 = IntegerType::get(ctx, 32);
  Type wElt = bf16 ? BFloat16Type::get(ctx) : f32;
  // Operand positions of the two forms.
  unsigned xI = 0, wI = 1, labelsI = 2, maskI = 3;
  unsigned lossGradI = 4, lossI = training ? 5 : 4, xGradI = 6,
           scratchI = training ? 7 : 5;
  auto get = [&](unsigned i, Type elt, int64_t elements) {
    return ops.buffer(i, elt, elements);
  };
  FailureOr<Value> x = get(xI, f32, p.n * p.k), w = get(wI, wElt, p.v * p.k),
                   labels = get(labelsI, i32, p.n), mask = get(maskI, f32, p.n),
                   loss = get(lossI, f32, 1),
                   scratch = get(scratchI, f32, p.blockRows * p.v);
  if (failed(x) || failed(w) || failed(labels) || failed(mask) ||
      failed(loss) || failed(scratch))
    return failure();
  Value lossGrad, xGrad;
  if (training) {
    FailureOr<Value> lg = get(lossGradI, f32, 1),
                     xg = get(xGradI, f32, p.n * p.k);
    if (failed(lg) || failed(xg))
      return failure();
    lossGrad = *lg;
    xGrad = *xg;
  }
  // As the micro-kernel: never more rows per block than there are.
  int64_t blockRows = std::min(p.blockRows, p.n);
  int64_t rowThreads = workgroupThreads(target);

  auto flat = [](Value buffer) {
    auto type = cast<MemRefType>(buffer.getType());
    return type.getElementType().isBF16()
               ? flatBuffer(IntegerType::get(type.getContext(), 32),
                            type.getNumElements() / 2)
               : flatBuffer(type.getElementType(), type.getNumElements());
  };
  auto typesOf = [&](ArrayRef<Value> buffers) {
    SmallVector<Type> types;
    for (Value buffer : buffers)
      types.push_back(flat(buffer));
    return types;
  };

  SmallVector<KernelDispatch> dispatches;
  auto gemm = [&](StringRef what, const Gemm &g, ArrayRef<Value> buffers) {
    GemmTiles t =
        chooseGemmTiles(g, target,
                        what == "logits" ? "BITLOOM_VULKAN_CE_LOGITS_TILE"
                                         : "BITLOOM_VULKAN_CE_XGRAD_TILE");
    std::string name = ("bitloom_lce_" + what + "_").str() + p.name() + "_r" +
                       std::to_string(g.maskRow0) + "_m" + std::to_string(g.m) +
                       "_" + t.name();
    if (gpu::GPUFuncOp func =
            createKernel(module, name, typesOf(buffers), t.threads))
      GemmKernel(func, g, t).build();
    KernelDispatch d;
    d.kernel = name;
    d.workgroups = {ceilDiv(g.n, t.bn), ceilDiv(g.m, t.bm), 1};
    d.buffers.assign(buffers.begin(), buffers.end());
    dispatches.push_back(std::move(d));
  };

  for (int64_t r0 = 0; r0 < p.n; r0 += blockRows) {
    int64_t rows = std::min(blockRows, p.n - r0);
    bool first = r0 == 0, last = r0 + rows == p.n;
    std::string block = "_r" + std::to_string(r0) + "_m" + std::to_string(rows);

    // 1. logits = x[block] · wᵀ.
    gemm("logits",
         Gemm{rows, p.v, p.k, /*transposedB=*/true, bf16, r0, p.k, 0, p.v, r0,
              /*zeroSkipped=*/false},
         {*x, *w, *mask, *scratch});

    // 2. Row statistics, loss terms, dlogits.
    {
      SmallVector<Value> buffers = {*labels, *mask};
      if (training)
        buffers.append({lossGrad, *scratch, xGrad});
      else
        buffers.push_back(*scratch);
      std::string name = "bitloom_lce_softmax_" + p.name() + block + "_w" +
                         std::to_string(rowThreads);
      if (gpu::GPUFuncOp func =
              createKernel(module, name, typesOf(buffers), rowThreads))
        SoftmaxKernel(func, p, r0, rowThreads).build();
      dispatches.push_back(KernelDispatch{name, {rows, 1, 1}, buffers});
    }

    // 3. The block's terms into the loss.
    {
      SmallVector<Value> buffers = {*mask, training ? xGrad : *scratch, *loss};
      std::string name = "bitloom_lce_loss_" + p.name() + block +
                         (first ? "_first" : "") + (last ? "_last" : "") +
                         "_w" + std::to_string(rowThreads);
      if (gpu::GPUFuncOp func =
              createKernel(module, name, typesOf(buffers), rowThreads))
        LossKernel(func, p, r0, rows, first, last, rowThreads).build();
      dispatches.push_back(KernelDispatch{name, {1, 1, 1}, buffers});
    }

    // 4. xGrad[block] = dlogits · w: on cooperative matrices where the
    // target has them (masked rows' dlogits are zeros: their xGrad too).
    if (training && bf16 && kernelScratch &&
        coopGemmApplies(target, rows, p.v, p.k, 4 * p.n * p.k)) {
      CoopGemm g{rows,          p.v,         p.k,
                 /*lda=*/p.v,   /*ldc=*/p.k, /*outRow0=*/r0,
                 /*bf16B=*/true};
      CoopGemmBuffers buffers{*scratch,      *w,       Value(),
                              xGrad,         Value(),  p.blockRows * p.v,
                              p.v * p.k / 2, p.n * p.k};
      buffers.scales = kernelScratch(8 * rows);
      buildCoopGemm(module, call.getLoc(), "bitloom_lce_xgrad_" + p.name(), g,
                    buffers, dispatches);
    } else if (training)
      gemm("xgrad",
           Gemm{rows, p.k, p.v, /*transposedB=*/false, bf16, 0, p.v, r0, p.k,
                r0, /*zeroSkipped=*/true},
           {*scratch, *w, *mask, xGrad});
  }
  return dispatches;
}

} // namespace bitloom::codegen::vulkan

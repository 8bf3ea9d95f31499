//===- AttentionKernels.cpp - GQA attention as GPU kernels ----------------===//
//
// bitloom_uk_attention and bitloom_uk_attention_grad (runtime/ukernels/
// Attention.h) as flash-attention style kernels: no [T x S] matrix exists
// anywhere; tiles of Q, K, V (and dout) live in shared memory, the softmax
// is online in f32 with max subtraction.
//
// Forward, one dispatch: a workgroup per (query tile, head, batch) walks the
// key tiles its queries see (causal: up to the diagonal); per tile,
// S = scale·Q·Kᵀ (phase A), the running row max / sum and P = exp(S - max)
// (phase B, one thread per row), O = alpha·O + P·V (phase C).
//
// Backward, three dispatches:
//  1. stats: the forward again, keeping per query row its log-sum-exp and
//     Σ_d dout·out (= Σ_s P·dP, the "row dot"). They are parked in the
//     first two floats of that row of dq, which nothing reads before pass 3
//     overwrites it: the call has no other scratch;
//  2. dk, dv: a workgroup per (key tile, kv head, batch) walks all query
//     tiles of the group's heads, recomputing P = exp(S - lse) and
//     dS = P·(dout·vᵀ - rowdot)·scale: dv += Pᵀ·dout, dk += dSᵀ·q;
//  3. dq: a workgroup per (query tile, head, batch) reads its rows' stats,
//     walks its key tiles and accumulates dq = dS·k, then overwrites them.
//
// Shared-memory tiles are padded by one float per row so that threads
// walking either dimension hit distinct banks.
//
//===----------------------------------------------------------------------===//
#include "codegen/vulkan/KernelBuilders.h"
#include "codegen/vulkan/KernelEmitter.h"

#include <string>
#include <tuple>

using namespace mlir;
using namespace bitloom::codegen::vulkan::emit;

namespace bitloom::codegen::vulkan {

namespace {

struct Shape {
  int64_t batch, queries, keys, heads, kvHeads, headDim;
  float scale;
  bool causal;

  int64_t group() const { return heads / kvHeads; }
  int64_t qElements() const { return batch * queries * heads * headDim; }
  int64_t kElements() const { return batch * keys * kvHeads * headDim; }
  std::string name() const {
    return "b" + std::to_string(batch) + "_t" + std::to_string(queries) + "_s" +
           std::to_string(keys) + "_h" + std::to_string(heads) + "_kv" +
           std::to_string(kvHeads) + "_d" + std::to_string(headDim) + "_sc" +
           hexBits(scale) + (causal ? "_causal" : "_full");
  }
};

enum class Kind { Forward, Stats, KeyGrad, QueryGrad };

const char *kindName(Kind kind) {
  switch (kind) {
  case Kind::Forward:
    return "fwd";
  case Kind::Stats:
    return "stats";
  case Kind::KeyGrad:
    return "dkdv";
  case Kind::QueryGrad:
    return "dq";
  }
  return "";
}

/// Query tile, key tile and threads of one kernel.
struct Tiles {
  int64_t threads, bq, bk;
};

/// Shared floats of a kernel (the allocations below, summed).
int64_t sharedFloats(Kind kind, int64_t bq, int64_t bk, int64_t d) {
  int64_t qs = d * (bq + 1), kv = d * (bk + 1), p = bq * (bk + 1),
          dout = bq * (d + 1);
  switch (kind) {
  case Kind::Forward:
  case Kind::Stats:
    return qs + kv + p + 2 * bq;
  case Kind::KeyGrad:
    return 2 * kv + qs + dout + 2 * p + 2 * bq;
  case Kind::QueryGrad:
    return qs + dout + 2 * kv + p + 2 * bq;
  }
  return 0;
}

/// The largest tiles (in preference order) whose shared memory fits.
FailureOr<Tiles> chooseTiles(Kind kind, const Shape &s,
                             const KernelTarget &target) {
  int64_t threads = workgroupThreads(target);
  int64_t budget = target.sharedMemoryBytes / 4;
  static const int64_t candidates[][2] = {
      {64, 32}, {64, 16}, {32, 32}, {32, 16}, {16, 16}, {32, 8}, {16, 8},
      {8, 8},   {8, 4},   {4, 4},   {4, 2},   {2, 2},   {2, 1},  {1, 1}};
  for (const auto &candidate : candidates) {
    // No tile larger than the sequence it covers, nor more rows than
    // threads (phase B gives each query row a thread).
    int64_t bq = std::min({candidate[0], pow2Ceil(s.queries), threads});
    int64_t bk = std::min(candidate[1], pow2Ceil(s.keys));
    if (sharedFloats(kind, bq, bk, s.headDim) <= budget)
      return Tiles{threads, bq, bk};
  }
  return failure();
}

using Reader = std::function<Value(int64_t, Value)>;

/// One product of an accumulate() loop: a rows x cols tile per thread,
/// acc[r][c] += a(r, x) · b(c, x).
struct Product {
  int64_t rows, cols;
  Reader a, b;
};

/// Runs every product's multiply-adds for x < n (one scf.for, unrolled by
/// up to 4); `acc` holds the products' tiles, row-major, one after another.
SmallVector<Value> accumulate(Emitter &e, int64_t n, ValueRange acc,
                              ArrayRef<Product> products) {
  int64_t unroll = n % 4 == 0 ? 4 : n % 2 == 0 ? 2 : 1;
  return e.loop(0, n, unroll, acc, [&](Value x0, ValueRange args) {
    SmallVector<Value> out(args.begin(), args.end());
    for (int64_t u = 0; u < unroll; ++u) {
      Value x = e.add(x0, u);
      size_t base = 0;
      for (const Product &p : products) {
        SmallVector<Value> as, bs;
        for (int64_t r = 0; r < p.rows; ++r)
          as.push_back(p.a(r, x));
        for (int64_t c = 0; c < p.cols; ++c)
          bs.push_back(p.b(c, x));
        for (int64_t r = 0; r < p.rows; ++r)
          for (int64_t c = 0; c < p.cols; ++c) {
            Value &slot = out[base + r * p.cols + c];
            slot = e.fma(as[r], bs[c], slot);
          }
        base += p.rows * p.cols;
      }
    }
    return out;
  });
}

/// One attention kernel's body.
class AttentionKernel {
public:
  AttentionKernel(gpu::GPUFuncOp func, Kind kind, const Shape &s,
                  const Tiles &t)
      : b(OpBuilder::atBlockBegin(&func.getBody().front())),
        e(b, func.getLoc()), args(func.getArguments()), kind(kind), s(s), t(t) {
  }

  void build() {
    tid = e.threadId();
    switch (kind) {
    case Kind::Forward:
    case Kind::Stats:
      buildForward();
      break;
    case Kind::KeyGrad:
      buildKeyGrad();
      break;
    case Kind::QueryGrad:
      buildQueryGrad();
      break;
    }
    e.ret();
  }

private:
  OpBuilder b;
  Emitter e;
  ValueRange args;
  Kind kind;
  Shape s;
  Tiles t;
  Value tid;

  int64_t D() const { return s.headDim; }

  /// Start of query row `q` (clamped into range), head h, batch bt, in q /
  /// dout / out / dq, and whether q is a row.
  std::pair<Value, Value> queryRow(Value bt, Value h, Value q) {
    Value valid = e.lt(q, s.queries);
    Value clamped = e.minI(q, e.idx(s.queries - 1));
    Value row = e.add(e.mul(e.add(e.mul(bt, s.queries), clamped), s.heads), h);
    return {e.mul(row, D()), valid};
  }
  /// The same for key row `k` of kv head kvh in k / v / dk / dv.
  std::pair<Value, Value> keyRow(Value bt, Value kvh, Value k) {
    Value valid = e.lt(k, s.keys);
    Value clamped = e.minI(k, e.idx(s.keys - 1));
    Value row = e.add(e.mul(e.add(e.mul(bt, s.keys), clamped), s.kvHeads), kvh);
    return {e.mul(row, D()), valid};
  }

  /// Copies `rows` rows of D floats (row i starting at rowOf(i).first, zero
  /// where rowOf(i).second is false) into `dst`: element (i, d) at
  /// d·stride + i when `transposed`, else i·stride + d. Consecutive threads
  /// read consecutive d.
  void loadTile(Value dst, bool transposed, int64_t stride, int64_t rows,
                Value src,
                const std::function<std::pair<Value, Value>(Value)> &rowOf) {
    e.loop(tid, e.idx(rows * D()), t.threads, [&](Value el) {
      Value i = e.div(el, D()), d = e.rem(el, D());
      Value start, valid;
      std::tie(start, valid) = rowOf(i);
      Value v = e.load(src, e.add(start, d));
      if (valid)
        v = e.select(valid, v, e.f32(0));
      Value at =
          transposed ? e.add(e.mul(d, stride), i) : e.add(e.mul(i, stride), d);
      e.store(v, dst, at);
    });
  }

  /// Thread coordinates in `g`: (row, column, active). Threads beyond the
  /// grid redo a used thread's work but store nothing.
  struct Coords {
    Value row, col, active;
  };
  Coords coords(const ThreadGrid &g) {
    Value col = e.rem(tid, g.colThreads);
    Value row = e.rem(e.div(tid, g.colThreads), g.rowThreads);
    Value active = g.used() < t.threads ? e.lt(tid, g.used()) : Value();
    return {row, col, active};
  }
  void storeIf(Value active, Value v, Value memref, Value at) {
    if (!active) {
      e.store(v, memref, at);
      return;
    }
    e.ifThen(active, [&] { e.store(v, memref, at); });
  }
  Value both(Value a, Value c) {
    if (!a)
      return c;
    if (!c)
      return a;
    return e.andI(a, c);
  }

  /// Whether key `key` is visible to query `q` (null: always).
  Value visible(Value q, Value key) {
    Value cond;
    if (s.keys % t.bk)
      cond = e.lt(key, s.keys);
    if (s.causal)
      cond = both(cond, e.le(key, e.add(q, s.keys - s.queries)));
    return cond;
  }

  /// Key tiles the query tile at q0 sees: causal ones stop at the last
  /// query's diagonal.
  Value keyTiles(Value q0) {
    Value end = e.idx(s.keys);
    if (s.causal)
      end = e.maxI(e.minI(e.add(q0, t.bq + s.keys - s.queries), end), e.idx(0));
    return e.div(e.add(end, t.bk - 1), t.bk);
  }

  SmallVector<Value> zeros(int64_t n) {
    return SmallVector<Value>(n, e.f32(0));
  }

  void buildForward() {
    bool stats = kind == Kind::Stats;
    Value q = args[0], k = args[1], v = args[2];
    int64_t bq = t.bq, bk = t.bk, qStride = bq + 1, kStride = bk + 1;
    Value bt = e.blockId(gpu::Dimension::z), h = e.blockId(gpu::Dimension::y);
    Value q0 = e.mul(e.blockId(gpu::Dimension::x), bq);
    Value kvh = e.div(h, s.group());
    Value qs = e.shared(D() * qStride), kv = e.shared(D() * kStride);
    Value ps = e.shared(bq * kStride), alphas = e.shared(bq),
          sums = e.shared(bq);
    auto qRowOf = [&](Value i) { return queryRow(bt, h, e.add(q0, i)); };
    loadTile(qs, /*transposed=*/true, qStride, bq, q, qRowOf);

    ThreadGrid ga = gridFor(bq, bk, t.threads),
               gc = gridFor(bq, D(), t.threads);
    Coords ca = coords(ga), cc = coords(gc);
    int64_t accSize = gc.rowsPer * gc.colsPer;
    SmallVector<Value> init = zeros(accSize);
    init.push_back(e.negInf()); // running max
    init.push_back(e.f32(0));   // running sum
    SmallVector<Value> state =
        e.loop(e.idx(0), keyTiles(q0), 1, init, [&](Value kt, ValueRange it) {
          Value kv0 = e.mul(kt, bk);
          auto kRowOf = [&](Value j) { return keyRow(bt, kvh, e.add(kv0, j)); };
          loadTile(kv, /*transposed=*/true, kStride, bk, k, kRowOf);
          e.barrier();
          // Phase A: scores.
          SmallVector<Value> sAcc = accumulate(
              e, D(), zeros(ga.rowsPer * ga.colsPer),
              {{ga.rowsPer, ga.colsPer,
                [&](int64_t r, Value d) {
                  return e.load(qs, e.add(e.add(e.mul(d, qStride), ca.row),
                                          ga.rowThreads * r));
                },
                [&](int64_t c, Value d) {
                  return e.load(kv, e.add(e.add(e.mul(d, kStride), ca.col),
                                          ga.colThreads * c));
                }}});
          for (int64_t r = 0; r < ga.rowsPer; ++r)
            for (int64_t c = 0; c < ga.colsPer; ++c) {
              Value i = e.add(ca.row, ga.rowThreads * r);
              Value j = e.add(ca.col, ga.colThreads * c);
              Value score = e.mul(sAcc[r * ga.colsPer + c], e.f32(s.scale));
              if (Value ok = visible(e.add(q0, i), e.add(kv0, j)))
                score = e.select(ok, score, e.negInf());
              storeIf(ca.active, score, ps, e.add(e.mul(i, kStride), j));
            }
          e.barrier();
          loadTile(kv, /*transposed=*/true, kStride, bk, v, kRowOf);
          // Phase B: one thread per query row.
          Value m = it[accSize], l = it[accSize + 1];
          SmallVector<Value> ml = e.ifElse(
              e.lt(tid, bq),
              [&]() -> SmallVector<Value> {
                Value rowBase = e.mul(tid, kStride);
                Value rowMax =
                    e.loop(0, bk, 1, {e.negInf()}, [&](Value j, ValueRange a) {
                      return SmallVector<Value>{
                          e.fmax(a[0], e.load(ps, e.add(rowBase, j)))};
                    })[0];
                Value mNew = e.fmax(m, rowMax);
                // A row with no visible key yet: exponents of -inf, not NaN.
                Value mSafe = e.select(e.eq(mNew, e.negInf()), e.f32(0), mNew);
                Value alpha = e.exp(e.sub(m, mSafe));
                Value sum =
                    e.loop(0, bk, 1, {e.f32(0)}, [&](Value j, ValueRange a) {
                      Value at = e.add(rowBase, j);
                      Value p = e.exp(e.sub(e.load(ps, at), mSafe));
                      e.store(p, ps, at);
                      return SmallVector<Value>{e.add(a[0], p)};
                    })[0];
                e.store(alpha, alphas, tid);
                return {mNew, e.fma(l, alpha, sum)};
              },
              [&]() -> SmallVector<Value> { return {m, l}; });
          e.barrier();
          // Phase C: O = alpha·O + P·V.
          SmallVector<Value> acc(it.begin(), it.begin() + accSize);
          for (int64_t r = 0; r < gc.rowsPer; ++r) {
            Value alpha = e.load(alphas, e.add(cc.row, gc.rowThreads * r));
            for (int64_t c = 0; c < gc.colsPer; ++c)
              acc[r * gc.colsPer + c] = e.mul(acc[r * gc.colsPer + c], alpha);
          }
          acc = accumulate(e, bk, acc,
                           {{gc.rowsPer, gc.colsPer,
                             [&](int64_t r, Value j) {
                               Value i = e.add(cc.row, gc.rowThreads * r);
                               return e.load(ps, e.add(e.mul(i, kStride), j));
                             },
                             [&](int64_t c, Value j) {
                               Value d = e.add(cc.col, gc.colThreads * c);
                               return e.load(kv, e.add(e.mul(d, kStride), j));
                             }}});
          e.barrier();
          acc.append(ml);
          return acc;
        });

    Value m = state[accSize], l = state[accSize + 1];
    e.ifThen(e.lt(tid, bq), [&] { e.store(l, sums, tid); });
    e.barrier();
    // out = O / l; rows that see no key (causal, queries > keys) are 0.
    SmallVector<Value> rowDot;
    for (int64_t r = 0; r < gc.rowsPer; ++r) {
      Value i = e.add(cc.row, gc.rowThreads * r);
      Value li = e.load(sums, i);
      Value positive = e.gt(li, e.f32(0));
      Value start, valid;
      std::tie(start, valid) = qRowOf(i);
      Value partial = e.f32(0);
      for (int64_t c = 0; c < gc.colsPer; ++c) {
        Value d = e.add(cc.col, gc.colThreads * c);
        Value o =
            e.select(positive, e.div(state[r * gc.colsPer + c], li), e.f32(0));
        if (stats)
          partial = e.fma(e.load(args[3], e.add(start, d)), o, partial);
        else
          storeIf(both(cc.active, valid), o, args[3], e.add(start, d));
      }
      rowDot.push_back(partial);
    }
    if (!stats)
      return;
    // Row dots: per-thread partials through shared memory (Q's tile is
    // free now), summed in a fixed order by each row's thread.
    Value red = qs;
    for (int64_t r = 0; r < gc.rowsPer; ++r) {
      Value i = e.add(cc.row, gc.rowThreads * r);
      storeIf(cc.active, rowDot[r], red,
              e.add(e.mul(i, gc.colThreads), cc.col));
    }
    e.barrier();
    Value dq = args[4];
    e.ifThen(e.lt(tid, bq), [&] {
      Value start, valid;
      std::tie(start, valid) = qRowOf(tid);
      Value base = e.mul(tid, gc.colThreads);
      Value dot =
          e.loop(0, gc.colThreads, 1, {e.f32(0)}, [&](Value x, ValueRange a) {
            return SmallVector<Value>{e.add(a[0], e.load(red, e.add(base, x)))};
          })[0];
      Value lse = e.select(e.gt(l, e.f32(0)), e.add(m, e.log(l)), e.posInf());
      e.ifThen(valid, [&] {
        e.store(lse, dq, start);
        e.store(dot, dq, e.add(start, 1));
      });
    });
  }

  /// Phase A of the backward kernels: for the query tile at q0 (rows of
  /// qs / douts) and the key tile at kv0 (ks / vs), P = exp(scale·S - lse)
  /// into `ps` (when given) and dS = P·(dP - rowdot)·scale into `dss`.
  void probabilitiesAndScores(Value q0, Value kv0, Value qs, Value douts,
                              Value ks, Value vs, Value lses, Value dots,
                              Value ps, Value dss) {
    int64_t qStride = t.bq + 1, kStride = t.bk + 1, dStride = D() + 1;
    ThreadGrid ga = gridFor(t.bq, t.bk, t.threads);
    Coords ca = coords(ga);
    auto rowOf = [&](int64_t r) { return e.add(ca.row, ga.rowThreads * r); };
    auto colOf = [&](int64_t c) { return e.add(ca.col, ga.colThreads * c); };
    int64_t n = ga.rowsPer * ga.colsPer;
    SmallVector<Value> init = zeros(2 * n);
    SmallVector<Value> acc =
        accumulate(e, D(), init,
                   {{ga.rowsPer, ga.colsPer,
                     [&](int64_t r, Value d) {
                       return e.load(qs, e.add(e.mul(d, qStride), rowOf(r)));
                     },
                     [&](int64_t c, Value d) {
                       return e.load(ks, e.add(e.mul(d, kStride), colOf(c)));
                     }},
                    {ga.rowsPer, ga.colsPer,
                     [&](int64_t r, Value d) {
                       return e.load(douts, e.add(e.mul(rowOf(r), dStride), d));
                     },
                     [&](int64_t c, Value d) {
                       return e.load(vs, e.add(e.mul(d, kStride), colOf(c)));
                     }}});
    Value scale = e.f32(s.scale);
    for (int64_t r = 0; r < ga.rowsPer; ++r) {
      Value i = rowOf(r);
      Value lse = e.load(lses, i), dot = e.load(dots, i);
      for (int64_t c = 0; c < ga.colsPer; ++c) {
        Value j = colOf(c);
        Value p = e.exp(e.sub(e.mul(acc[r * ga.colsPer + c], scale), lse));
        if (Value ok = visible(e.add(q0, i), e.add(kv0, j)))
          p = e.select(ok, p, e.f32(0));
        Value ds =
            e.mul(e.mul(p, e.sub(acc[n + r * ga.colsPer + c], dot)), scale);
        Value at = e.add(e.mul(i, kStride), j);
        if (ps)
          storeIf(ca.active, p, ps, at);
        storeIf(ca.active, ds, dss, at);
      }
    }
  }

  /// The stats of query rows q0 + i (pass 1's, in dq) into lses / dots:
  /// rows past the end get lse = +inf, so that their P is 0.
  void loadStats(Value bt, Value h, Value q0, Value lses, Value dots) {
    Value dq = args[4];
    e.ifThen(e.lt(tid, t.bq), [&] {
      Value start, valid;
      std::tie(start, valid) = queryRow(bt, h, e.add(q0, tid));
      e.store(e.select(valid, e.load(dq, start), e.posInf()), lses, tid);
      e.store(e.select(valid, e.load(dq, e.add(start, 1)), e.f32(0)), dots,
              tid);
    });
  }

  void buildKeyGrad() {
    Value q = args[0], k = args[1], v = args[2], dout = args[3];
    Value dk = args[5], dv = args[6];
    int64_t bq = t.bq, bk = t.bk, qStride = bq + 1, kStride = bk + 1,
            dStride = D() + 1;
    Value bt = e.blockId(gpu::Dimension::z), kvh = e.blockId(gpu::Dimension::y);
    Value kv0 = e.mul(e.blockId(gpu::Dimension::x), bk);
    Value ks = e.shared(D() * kStride), vs = e.shared(D() * kStride);
    Value qs = e.shared(D() * qStride), douts = e.shared(bq * dStride);
    Value ps = e.shared(bq * kStride), dss = e.shared(bq * kStride);
    Value lses = e.shared(bq), dots = e.shared(bq);
    auto kRowOf = [&](Value j) { return keyRow(bt, kvh, e.add(kv0, j)); };
    loadTile(ks, /*transposed=*/true, kStride, bk, k, kRowOf);
    loadTile(vs, /*transposed=*/true, kStride, bk, v, kRowOf);

    // Queries that see a key of this tile: causal ones start at its
    // first key's diagonal.
    Value firstTile = e.idx(0);
    if (s.causal)
      firstTile = e.div(e.maxI(e.add(kv0, s.queries - s.keys), e.idx(0)), bq);
    Value queryTiles = e.idx(ceilDiv(s.queries, bq));

    ThreadGrid gc = gridFor(bk, D(), t.threads);
    Coords cc = coords(gc);
    int64_t n = gc.rowsPer * gc.colsPer;
    SmallVector<Value> acc =
        e.loop(0, s.group(), 1, zeros(2 * n), [&](Value g, ValueRange perHead) {
          Value h = e.add(e.mul(kvh, s.group()), g);
          return e.loop(
              firstTile, queryTiles, 1, perHead, [&](Value qt, ValueRange it) {
                Value q0 = e.mul(qt, bq);
                auto qRowOf = [&](Value i) {
                  return queryRow(bt, h, e.add(q0, i));
                };
                e.barrier();
                loadTile(qs, /*transposed=*/true, qStride, bq, q, qRowOf);
                loadTile(douts, /*transposed=*/false, dStride, bq, dout,
                         qRowOf);
                loadStats(bt, h, q0, lses, dots);
                e.barrier();
                probabilitiesAndScores(q0, kv0, qs, douts, ks, vs, lses, dots,
                                       ps, dss);
                e.barrier();
                // dv += Pᵀ·dout, dk += dSᵀ·q over this tile's queries.
                auto keyOf = [&](int64_t r) {
                  return e.add(cc.row, gc.rowThreads * r);
                };
                auto dimOf = [&](int64_t c) {
                  return e.add(cc.col, gc.colThreads * c);
                };
                return accumulate(
                    e, bq, it,
                    {{gc.rowsPer, gc.colsPer,
                      [&](int64_t r, Value i) {
                        return e.load(ps, e.add(e.mul(i, kStride), keyOf(r)));
                      },
                      [&](int64_t c, Value i) {
                        return e.load(douts,
                                      e.add(e.mul(i, dStride), dimOf(c)));
                      }},
                     {gc.rowsPer, gc.colsPer,
                      [&](int64_t r, Value i) {
                        return e.load(dss, e.add(e.mul(i, kStride), keyOf(r)));
                      },
                      [&](int64_t c, Value i) {
                        return e.load(qs, e.add(e.mul(dimOf(c), qStride), i));
                      }}});
              });
        });
    for (int64_t r = 0; r < gc.rowsPer; ++r) {
      Value start, valid;
      std::tie(start, valid) = kRowOf(e.add(cc.row, gc.rowThreads * r));
      for (int64_t c = 0; c < gc.colsPer; ++c) {
        Value at = e.add(start, e.add(cc.col, gc.colThreads * c));
        Value ok = both(cc.active, s.keys % bk ? valid : Value());
        storeIf(ok, acc[r * gc.colsPer + c], dv, at);
        storeIf(ok, acc[n + r * gc.colsPer + c], dk, at);
      }
    }
  }

  void buildQueryGrad() {
    Value q = args[0], k = args[1], v = args[2], dout = args[3], dq = args[4];
    int64_t bq = t.bq, bk = t.bk, qStride = bq + 1, kStride = bk + 1,
            dStride = D() + 1;
    Value bt = e.blockId(gpu::Dimension::z), h = e.blockId(gpu::Dimension::y);
    Value q0 = e.mul(e.blockId(gpu::Dimension::x), bq);
    Value kvh = e.div(h, s.group());
    Value qs = e.shared(D() * qStride), douts = e.shared(bq * dStride);
    Value ks = e.shared(D() * kStride), vs = e.shared(D() * kStride);
    Value dss = e.shared(bq * kStride);
    Value lses = e.shared(bq), dots = e.shared(bq);
    auto qRowOf = [&](Value i) { return queryRow(bt, h, e.add(q0, i)); };
    loadTile(qs, /*transposed=*/true, qStride, bq, q, qRowOf);
    loadTile(douts, /*transposed=*/false, dStride, bq, dout, qRowOf);
    loadStats(bt, h, q0, lses, dots);

    ThreadGrid gc = gridFor(bq, D(), t.threads);
    Coords cc = coords(gc);
    SmallVector<Value> acc = e.loop(
        e.idx(0), keyTiles(q0), 1, zeros(gc.rowsPer * gc.colsPer),
        [&](Value kt, ValueRange it) {
          Value kv0 = e.mul(kt, bk);
          auto kRowOf = [&](Value j) { return keyRow(bt, kvh, e.add(kv0, j)); };
          e.barrier();
          loadTile(ks, /*transposed=*/true, kStride, bk, k, kRowOf);
          loadTile(vs, /*transposed=*/true, kStride, bk, v, kRowOf);
          e.barrier();
          probabilitiesAndScores(q0, kv0, qs, douts, ks, vs, lses, dots,
                                 Value(), dss);
          e.barrier();
          // dq += dS·k.
          return accumulate(e, bk, it,
                            {{gc.rowsPer, gc.colsPer,
                              [&](int64_t r, Value j) {
                                Value i = e.add(cc.row, gc.rowThreads * r);
                                return e.load(dss, e.add(e.mul(i, kStride), j));
                              },
                              [&](int64_t c, Value j) {
                                Value d = e.add(cc.col, gc.colThreads * c);
                                return e.load(ks, e.add(e.mul(d, kStride), j));
                              }}});
        });
    // Every thread has read its rows' stats before any row is overwritten.
    e.barrier();
    for (int64_t r = 0; r < gc.rowsPer; ++r) {
      Value start, valid;
      std::tie(start, valid) = qRowOf(e.add(cc.row, gc.rowThreads * r));
      for (int64_t c = 0; c < gc.colsPer; ++c)
        storeIf(both(cc.active, valid), acc[r * gc.colsPer + c], dq,
                e.add(start, e.add(cc.col, gc.colThreads * c)));
    }
  }
};

/// The dispatch of one kernel over `buffers` (adding the kernel to
/// `module` unless it is there).
FailureOr<KernelDispatch> dispatch(func::CallOp call, ModuleOp module,
                                   Kind kind, const Shape &s,
                                   const KernelTarget &target,
                                   ArrayRef<Value> buffers) {
  FailureOr<Tiles> tiles = chooseTiles(kind, s, target);
  if (failed(tiles))
    return call.emitError("attention: head_dim ")
           << s.headDim << " leaves no tiles that fit "
           << target.sharedMemoryBytes << " bytes of shared memory";
  std::string name = std::string("bitloom_attention_") + kindName(kind) + "_" +
                     s.name() + "_w" + std::to_string(tiles->threads) + "_q" +
                     std::to_string(tiles->bq) + "_k" +
                     std::to_string(tiles->bk);
  SmallVector<Type> types;
  for (Value buffer : buffers) {
    auto type = cast<MemRefType>(buffer.getType());
    types.push_back(flatBuffer(type.getElementType(), type.getNumElements()));
  }
  if (gpu::GPUFuncOp func = createKernel(module, name, types, tiles->threads))
    AttentionKernel(func, kind, s, *tiles).build();
  KernelDispatch d;
  d.kernel = name;
  bool perKeyTile = kind == Kind::KeyGrad;
  d.workgroups = {perKeyTile ? ceilDiv(s.keys, tiles->bk)
                             : ceilDiv(s.queries, tiles->bq),
                  perKeyTile ? s.kvHeads : s.heads, s.batch};
  d.buffers.assign(buffers.begin(), buffers.end());
  return d;
}

} // namespace

FailureOr<SmallVector<KernelDispatch>>
buildAttentionDispatches(func::CallOp call, ModuleOp module,
                         const KernelTarget &target) {
  StringRef callee = call.getCallee();
  bool grad = callee == "bitloom_uk_attention_grad";
  if (!grad && callee != "bitloom_uk_attention")
    return call.emitError("no attention kernel for @") << callee;
  unsigned numBuffers = grad ? 7 : 4;
  if (call.getNumOperands() != numBuffers + 8)
    return call.emitError("@") << callee << " expects " << numBuffers + 8
                               << " operands, got " << call.getNumOperands();
  CallOperands ops(call);
  SmallVector<int64_t> sizes;
  for (unsigned i = 0; i < 6; ++i) {
    FailureOr<int64_t> size = ops.constantInt(numBuffers + i);
    if (failed(size))
      return failure();
    sizes.push_back(*size);
  }
  FailureOr<float> scale = ops.constantF32(numBuffers + 6);
  FailureOr<int64_t> causal = ops.constantInt(numBuffers + 7);
  if (failed(scale) || failed(causal))
    return failure();
  Shape s{sizes[0], sizes[1], sizes[2], sizes[3],
          sizes[4], sizes[5], *scale,   *causal != 0};
  if (s.batch <= 0 || s.queries <= 0 || s.keys <= 0 || s.heads <= 0 ||
      s.kvHeads <= 0 || s.headDim <= 0 || s.heads % s.kvHeads)
    return call.emitError("attention: unsupported shape ")
           << s.batch << "x" << s.queries << "x" << s.keys << ", heads "
           << s.heads << " / " << s.kvHeads << ", head_dim " << s.headDim;
  // The backward parks two floats of stats per query row in dq.
  if (grad && s.headDim < 2)
    return call.emitError("attention_grad: head_dim 1 is not supported");

  Type f32 = Float32Type::get(call.getContext());
  SmallVector<Value> buffers;
  for (unsigned i = 0; i < numBuffers; ++i) {
    // q, k, v, then out or dout, dq, dk, dv: query-shaped or key-shaped.
    bool queryShaped = i == 0 || i == 3 || i == 4;
    FailureOr<Value> buffer =
        ops.buffer(i, f32, queryShaped ? s.qElements() : s.kElements());
    if (failed(buffer))
      return failure();
    buffers.push_back(*buffer);
  }

  SmallVector<KernelDispatch> dispatches;
  auto add = [&](Kind kind, ArrayRef<Value> bound) -> LogicalResult {
    FailureOr<KernelDispatch> d =
        dispatch(call, module, kind, s, target, bound);
    if (failed(d))
      return failure();
    dispatches.push_back(std::move(*d));
    return success();
  };
  if (!grad) {
    if (failed(add(Kind::Forward, buffers)))
      return failure();
    return dispatches;
  }
  ArrayRef<Value> all(buffers);
  if (failed(add(Kind::Stats, all.take_front(5))) ||
      failed(add(Kind::KeyGrad, all)) ||
      failed(add(Kind::QueryGrad, all.take_front(5))))
    return failure();
  return dispatches;
}

} // namespace bitloom::codegen::vulkan

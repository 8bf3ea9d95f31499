//===- Ukernels.cpp - Entry points of the CPU micro-kernels --------------===//
//
// The C ABI: argument handling, the choice of ISA, and the split of each
// product into disjoint output ranges for the thread pool. The kernels
// themselves live in one translation unit per ISA (Kernels*.cpp).
//
//===----------------------------------------------------------------------===//
#include "ukernels/Ukernels.h"
#include "ukernels/Internal.h"
#include "ukernels/ThreadPool.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <new>

#ifdef BITLOOM_UK_ARM64_KERNELS
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace bitloom::uk {

const char *isaName(Isa isa) {
  switch (isa) {
  case Isa::Scalar:
    return "scalar";
  case Isa::Avx2:
    return "avx2";
  case Isa::Avx512:
    return "avx512";
  case Isa::Neon:
    return "neon";
  case Isa::NeonDot:
    return "neon-dotprod";
  }
  return "?";
}

std::vector<Isa> availableIsas() {
  std::vector<Isa> isas = {Isa::Scalar};
#ifdef BITLOOM_UK_X86_KERNELS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    isas.push_back(Isa::Avx2);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni"))
    isas.push_back(Isa::Avx512);
#endif
#ifdef BITLOOM_UK_ARM64_KERNELS
  // Advanced SIMD is part of the arm64 base architecture.
  isas.push_back(Isa::Neon);
  if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP)
    isas.push_back(Isa::NeonDot);
#endif
  return isas;
}

namespace {

const KernelTable &tableFor(Isa isa) {
  switch (isa) {
#ifdef BITLOOM_UK_X86_KERNELS
  case Isa::Avx2:
    return avx2Kernels();
  case Isa::Avx512:
    return avx512Kernels();
#endif
#ifdef BITLOOM_UK_ARM64_KERNELS
  case Isa::Neon:
    return neonKernels();
  case Isa::NeonDot:
    return neonDotKernels();
#endif
  default:
    return scalarKernels();
  }
}

const KernelTable *bestTable() {
  static const KernelTable *best = &tableFor(availableIsas().back());
  return best;
}

std::atomic<const KernelTable *> active{nullptr};

const KernelTable &kernels() {
  const KernelTable *t = active.load(std::memory_order_acquire);
  if (!t) {
    t = bestTable();
    active.store(t, std::memory_order_release);
  }
  return *t;
}

// Below this many multiply-adds a product runs on the calling thread: waking
// the workers would cost more than it saves.
constexpr double kMinParallelMacs = double(1 << 18);

// In double: the product of three int64 extents may overflow.
double macs(int64_t m, int64_t n, int64_t k) {
  return double(m) * double(n) * double(k);
}

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct AlignedDelete {
  void operator()(void *p) const { ::operator delete(p, std::align_val_t(64)); }
};

struct ScratchBuffer {
  std::unique_ptr<void, AlignedDelete> data;
  size_t size = 0;
};

} // namespace

Isa activeIsa() { return kernels().isa; }

bool forceIsa(Isa isa) {
  for (Isa available : availableIsas())
    if (available == isa) {
      active.store(&tableFor(isa), std::memory_order_release);
      return true;
    }
  return false;
}

void resetIsa() { active.store(bestTable(), std::memory_order_release); }

void *scratch(ScratchSlot slot, size_t bytes) {
  thread_local ScratchBuffer buffers[kNumSlots];
  ScratchBuffer &buf = buffers[slot];
  if (buf.size < bytes || !buf.data) {
    // Grow geometrically so that a sequence of slightly larger shapes does
    // not reallocate every call.
    size_t size = bytes > 2 * buf.size ? bytes : 2 * buf.size;
    size = (size + 63) / 64 * 64 + 64;
    buf.data.reset(::operator new(size, std::align_val_t(64)));
    buf.size = size;
  }
  return buf.data.get();
}

namespace {

/// Runs table.gemm over [0, m) x [0, n), split over threads.
void runGemm(const KernelTable &table, const GemmArgs &g) {
  if (g.m <= 0 || g.n <= 0)
    return;
  if (g.k <= 0) {
    if (!g.accumulate)
      for (int64_t i = 0; i < g.m; ++i)
        std::memset(g.c + i * g.ldc, 0, size_t(g.n) * sizeof(float));
    return;
  }
  ThreadPool &pool = ThreadPool::global();
  int32_t threads = pool.threads();
  if (threads == 1 || macs(g.m, g.n, g.k) < kMinParallelMacs) {
    table.gemm(g, 0, g.m, 0, g.n);
    return;
  }
  // Each thread packs all of the operand it does not split: split n (and
  // copy opA per thread) when opA is the smaller, as with m = tokens, unless
  // n has too few tiles to go round and m has more.
  int64_t nTiles = ceilDiv(g.n, table.gemmNr);
  int64_t mTiles = ceilDiv(g.m, table.gemmMr);
  bool splitN = g.m <= g.n ? nTiles >= threads || nTiles >= mTiles
                           : mTiles < threads && mTiles < nTiles;
  if (splitN) {
    int64_t nr = table.gemmNr;
    pool.parallelFor(nTiles, [&](int64_t b, int64_t e) {
      table.gemm(g, 0, g.m, b * nr, e * nr < g.n ? e * nr : g.n);
    });
  } else {
    int64_t mr = table.gemmMr;
    pool.parallelFor(mTiles, [&](int64_t b, int64_t e) {
      table.gemm(g, b * mr, e * mr < g.m ? e * mr : g.m, 0, g.n);
    });
  }
}

/// bitloom_uk_matmul_f32's operands but B (dense, row-major, no padding).
GemmArgs denseGemm(const float *a, float *c, int64_t m, int64_t n, int64_t k,
                   int32_t transA, int32_t transB, int32_t accumulate) {
  GemmArgs g;
  g.a = a;
  g.lda = transA ? m : k;
  g.transA = transA != 0;
  g.ldb = transB ? k : n;
  g.transB = transB != 0;
  g.c = c;
  g.ldc = n;
  g.m = m;
  g.n = n;
  g.k = k;
  g.accumulate = accumulate != 0;
  return g;
}

} // namespace
} // namespace bitloom::uk

using namespace bitloom::uk;

extern "C" {

int32_t bitloom_uk_set_threads(int32_t n) {
  return ThreadPool::global().setThreads(n);
}

int32_t bitloom_uk_threads(void) { return ThreadPool::global().threads(); }

int64_t bitloom_uk_packed_row_bytes(int64_t k) { return (k + 127) / 128 * 32; }

void bitloom_uk_pack_ternary(const int8_t *w, int64_t n, int64_t k,
                             uint8_t *packed) {
  int64_t rowBytes = bitloom_uk_packed_row_bytes(k);
  for (int64_t o = 0; o < n; ++o) {
    const int8_t *src = w + o * k;
    uint8_t *row = packed + o * rowBytes;
    for (int64_t b = 0; b < rowBytes / 32; ++b)
      for (int64_t j = 0; j < 32; ++j) {
        uint8_t byte = 0;
        for (int64_t l = 0; l < 4; ++l) {
          int64_t c = 128 * b + 32 * l + j;
          // Out-of-range values are not ternary; store them as 0 rather
          // than corrupt the neighbouring fields.
          int v = c < k ? src[c] : 0;
          v = v < -1 || v > 1 ? 0 : v;
          byte |= uint8_t((v + 1) << (2 * l));
        }
        row[32 * b + j] = byte;
      }
  }
}

void bitloom_uk_unpack_ternary(const uint8_t *packed, int64_t n, int64_t k,
                               int8_t *w) {
  int64_t rowBytes = bitloom_uk_packed_row_bytes(k);
  for (int64_t o = 0; o < n; ++o) {
    const uint8_t *row = packed + o * rowBytes;
    for (int64_t c = 0; c < k; ++c) {
      int v = (row[(c >> 7) * 32 + (c & 31)] >> (2 * ((c >> 5) & 3))) & 3;
      w[o * k + c] = int8_t(v - 1);
    }
  }
}

void bitloom_uk_ternary_matmul(const int8_t *xq, const uint8_t *w,
                               const float *rowFactor, float *y, int64_t m,
                               int64_t n, int64_t k) {
  if (m <= 0 || n <= 0)
    return;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t o = 0; o < n; ++o)
        y[i * n + o] = 0.0f * rowFactor[i];
    return;
  }
  const KernelTable &table = kernels();
  TernaryArgs t{xq, w, rowFactor, y, m, n, k};
  ThreadPool &pool = ThreadPool::global();
  int32_t threads = pool.threads();
  if (threads == 1 || macs(m, n, k) < kMinParallelMacs) {
    table.ternaryMatmul(t, 0, m, 0, n);
    return;
  }
  // Outputs are independent and each thread unpacks only its own rows of w.
  int64_t nr = table.ternaryNr;
  int64_t nUnits = ceilDiv(n, nr);
  if (nUnits >= threads) {
    pool.parallelFor(nUnits, [&](int64_t b, int64_t e) {
      table.ternaryMatmul(t, 0, m, b * nr, e * nr < n ? e * nr : n);
    });
  } else {
    pool.parallelFor(
        m, [&](int64_t b, int64_t e) { table.ternaryMatmul(t, b, e, 0, n); });
  }
}

void bitloom_uk_ternary_matmul_t(const float *dy, const uint8_t *w, float scale,
                                 float *dx, int64_t m, int64_t n, int64_t k) {
  // dx = dy * (scale * W) with W [n, k]: a GEMM whose B panels are unpacked
  // from the ternary bits as they are packed, one cache block at a time.
  GemmArgs g;
  g.a = dy;
  g.lda = n;
  g.ternary = w;
  g.ternaryRowBytes = bitloom_uk_packed_row_bytes(k);
  g.scale = scale;
  g.c = dx;
  g.ldc = k;
  g.m = m;
  g.n = k;
  g.k = n;
  runGemm(kernels(), g);
}

void bitloom_uk_matmul_f32(const float *a, const float *b, float *c, int64_t m,
                           int64_t n, int64_t k, int32_t transA, int32_t transB,
                           int32_t accumulate) {
  GemmArgs g = denseGemm(a, c, m, n, k, transA, transB, accumulate);
  g.b = b;
  runGemm(kernels(), g);
}

void bitloom_uk_matmul_f32_bf16b(const float *a, const uint16_t *b, float *c,
                                 int64_t m, int64_t n, int64_t k,
                                 int32_t transA, int32_t transB,
                                 int32_t accumulate) {
  GemmArgs g = denseGemm(a, c, m, n, k, transA, transB, accumulate);
  g.bf16 = b;
  runGemm(kernels(), g);
}
}

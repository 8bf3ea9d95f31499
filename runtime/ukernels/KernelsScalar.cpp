//===- KernelsScalar.cpp - Portable kernels, the reference path ----------===//
//
// Plain C++ with the same blocking as the vector kernels, so that it is a
// usable fallback on any CPU and the reference every ISA is tested against.
//
//===----------------------------------------------------------------------===//
#include "ukernels/GemmDriver.h"

namespace bitloom::uk {
namespace {

struct ScalarGemm {
  static constexpr int64_t MR = 4, NR = 16, KC = 256, NC = 512, MC = 128;

  static void packA(const GemmArgs &g, int64_t i0, int64_t mr, int64_t p0,
                    int64_t kc, float *dst) {
    packAGeneric<MR>(g, i0, mr, p0, kc, dst);
  }
  static void packB(const GemmArgs &g, int64_t p0, int64_t kc, int64_t j0,
                    int64_t nr, float *dst) {
    packBGeneric<NR>(g, p0, kc, j0, nr, dst);
  }
  // Not inlined: on its own the register allocator keeps every accumulator
  // in a register (inlined into the loops it spilled one, halving speed).
  __attribute__((noinline)) static void kernel(int64_t kc, const float *a,
                                               const float *b, float *c,
                                               int64_t ldc, int64_t mr,
                                               int64_t nr, bool load) {
    float acc[MR][NR] = {};
    for (int64_t p = 0; p < kc; ++p)
      for (int64_t r = 0; r < MR; ++r)
        for (int64_t j = 0; j < NR; ++j)
          acc[r][j] += a[p * MR + r] * b[p * NR + j];
    for (int64_t r = 0; r < mr; ++r)
      for (int64_t j = 0; j < nr; ++j)
        c[r * ldc + j] = (load ? c[r * ldc + j] : 0.0f) + acc[r][j];
  }
};

void gemm(const GemmArgs &g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  gemmRange<ScalarGemm>(g, m0, m1, n0, n1);
}

constexpr int64_t kTernaryRows = 8;

// Unpacks kTernaryRows output rows at a time (the only copy of w ever made)
// and takes exact int32 dot products with each row of x.
void ternaryMatmul(const TernaryArgs &t, int64_t m0, int64_t m1, int64_t n0,
                   int64_t n1) {
  const int64_t k = t.k, rowBytes = ceilDiv(k, 128) * 32;
  int8_t *tile =
      static_cast<int8_t *>(scratch(kScratchTile, size_t(kTernaryRows * k)));
  for (int64_t o0 = n0; o0 < n1; o0 += kTernaryRows) {
    int64_t rows = minI64(kTernaryRows, n1 - o0);
    for (int64_t o = 0; o < rows; ++o) {
      const uint8_t *row = t.w + (o0 + o) * rowBytes;
      for (int64_t c = 0; c < k; ++c)
        tile[o * k + c] = int8_t(ternaryAt(row, c));
    }
    for (int64_t i = m0; i < m1; ++i) {
      const int8_t *x = t.xq + i * k;
      for (int64_t o = 0; o < rows; ++o) {
        const int8_t *w = tile + o * k;
        int32_t acc = 0;
        for (int64_t c = 0; c < k; ++c)
          acc += int32_t(x[c]) * int32_t(w[c]);
        t.y[i * t.n + o0 + o] = float(acc) * t.rowFactor[i];
      }
    }
  }
}

} // namespace

const KernelTable &scalarKernels() {
  static const KernelTable table = {Isa::Scalar, ScalarGemm::NR, ScalarGemm::MR,
                                    gemm,        kTernaryRows,   ternaryMatmul};
  return table;
}

} // namespace bitloom::uk

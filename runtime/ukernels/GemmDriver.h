//===- GemmDriver.h - Blocked GEMM loops shared by every ISA ----*- C++ -*-===//
//
// The cache blocking around a register-tile micro-kernel, in the style of
// BLIS/GotoBLAS: panels of opA (MR rows) and opB (NR columns) are packed into
// contiguous, zero-padded buffers so the micro-kernel only ever streams
// memory and never checks bounds inside its k loop.
//
// Each ISA translation unit includes this file and instantiates gemmRange
// with its own traits. Everything here has internal linkage (an unnamed
// namespace) on purpose: the TUs are compiled with different -m flags, and
// an inline function or template instantiation merged across them by the
// linker could run AVX-512 code on a CPU without it.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_UKERNELS_GEMMDRIVER_H
#define BITLOOM_UKERNELS_GEMMDRIVER_H

#include "ukernels/Internal.h"

#include <cstdint>
#include <cstring>

namespace bitloom::uk {
namespace {

inline int64_t minI64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t maxI64(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Packed A above this many bytes is built and consumed in row chunks.
constexpr int64_t kMaxPackedABytes = 2 << 20;

/// Ternary w(p, j) of the i2x128 layout, in {-1, 0, 1}.
inline int ternaryAt(const uint8_t *row, int64_t j) {
  return ((row[(j >> 7) * 32 + (j & 31)] >> (2 * ((j >> 5) & 3))) & 3) - 1;
}

/// The f32 value of bf16 bits: exact, bf16 being the upper half of an f32.
inline float bf16ToFloat(uint16_t bits) {
  uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// opA rows [i0, i0 + mr) x columns [p0, p0 + kc) into dst[p * MR + r],
/// rows mr..MR-1 zero.
template <int64_t MR>
void packAGeneric(const GemmArgs &g, int64_t i0, int64_t mr, int64_t p0,
                  int64_t kc, float *dst) {
  if (g.transA) {
    for (int64_t p = 0; p < kc; ++p) {
      const float *src = g.a + (p0 + p) * g.lda + i0;
      int64_t r = 0;
      for (; r < mr; ++r)
        dst[p * MR + r] = src[r];
      for (; r < MR; ++r)
        dst[p * MR + r] = 0.0f;
    }
    return;
  }
  for (int64_t r = 0; r < MR; ++r) {
    if (r >= mr) {
      for (int64_t p = 0; p < kc; ++p)
        dst[p * MR + r] = 0.0f;
      continue;
    }
    const float *src = g.a + (i0 + r) * g.lda + p0;
    for (int64_t p = 0; p < kc; ++p)
      dst[p * MR + r] = src[p];
  }
}

/// opB rows [p0, p0 + kc) x columns [j0, j0 + nr) into dst[p * NR + j],
/// columns nr..NR-1 zero. A bf16 B is widened here, one panel at a time.
template <int64_t NR>
void packBGeneric(const GemmArgs &g, int64_t p0, int64_t kc, int64_t j0,
                  int64_t nr, float *dst) {
  for (int64_t p = 0; p < kc; ++p) {
    float *out = dst + p * NR;
    if (g.ternary) {
      const uint8_t *row = g.ternary + (p0 + p) * g.ternaryRowBytes;
      for (int64_t j = 0; j < nr; ++j)
        out[j] = g.scale * float(ternaryAt(row, j0 + j));
    } else if (g.bf16) {
      for (int64_t j = 0; j < nr; ++j)
        out[j] = bf16ToFloat(g.transB ? g.bf16[(j0 + j) * g.ldb + p0 + p]
                                      : g.bf16[(p0 + p) * g.ldb + j0 + j]);
    } else if (g.transB) {
      for (int64_t j = 0; j < nr; ++j)
        out[j] = g.b[(j0 + j) * g.ldb + p0 + p];
    } else {
      const float *src = g.b + (p0 + p) * g.ldb + j0;
      for (int64_t j = 0; j < nr; ++j)
        out[j] = src[j];
    }
    for (int64_t j = nr; j < NR; ++j)
      out[j] = 0.0f;
  }
}

/// The micro-kernel over packed panels: C[ic.., jc..] (+)= A block * B block.
template <typename Traits>
void macroKernel(int64_t mc, int64_t nc, int64_t kc, const float *ap,
                 const float *bp, float *c, int64_t ldc, bool load) {
  constexpr int64_t MR = Traits::MR, NR = Traits::NR;
  int64_t mPanels = ceilDiv(mc, MR), nPanels = ceilDiv(nc, NR);
  // The B micro-panel stays in L1 while the A panels stream from L2.
  for (int64_t jp = 0; jp < nPanels; ++jp) {
    int64_t nr = minI64(NR, nc - jp * NR);
    for (int64_t ip = 0; ip < mPanels; ++ip)
      Traits::kernel(kc, ap + ip * MR * kc, bp + jp * NR * kc,
                     c + ip * MR * ldc + jp * NR, ldc, minI64(MR, mc - ip * MR),
                     nr, load);
  }
}

/// C[m0:m1, n0:n1] of the product, with Traits providing
///   MR, NR (register tile), KC, NC, MC (cache blocks),
///   packA(g, i0, mr, p0, kc, dst), packB(g, p0, kc, j0, nr, dst),
///   kernel(kc, aPanel, bPanel, c, ldc, mr, nr, load): the MR x NR tile of
///     aPanel * bPanel, added to C if `load`, stored to its mr x nr corner.
template <typename Traits>
void gemmRange(const GemmArgs &g, int64_t m0, int64_t m1, int64_t n0,
               int64_t n1) {
  constexpr int64_t MR = Traits::MR, NR = Traits::NR, KC = Traits::KC,
                    NC = Traits::NC, MC = Traits::MC;
  const int64_t k = g.k, mPanels = ceilDiv(m1 - m0, MR);
  float *bp = static_cast<float *>(
      scratch(kScratchB, size_t(minI64(KC, k) * NC * sizeof(float))));
  auto packBBlock = [&](int64_t pc, int64_t kc, int64_t jc, int64_t nc) {
    for (int64_t jp = 0; jp * NR < nc; ++jp)
      Traits::packB(g, pc, kc, jc + jp * NR, minI64(NR, nc - jp * NR),
                    bp + jp * NR * kc);
  };
  auto packABlock = [&](int64_t ic, int64_t mc, int64_t pc, int64_t kc,
                        float *dst) {
    for (int64_t ip = 0; ip * MR < mc; ++ip)
      Traits::packA(g, ic + ip * MR, minI64(MR, mc - ip * MR), pc, kc,
                    dst + ip * MR * kc);
  };

  if (mPanels * MR * k * int64_t(sizeof(float)) <= kMaxPackedABytes) {
    // The usual shape here is short and wide (m = tokens): all of opA is
    // packed once and reused for every column block.
    float *ap = static_cast<float *>(
        scratch(kScratchA, size_t(mPanels * MR * k * sizeof(float))));
    for (int64_t pc = 0; pc < k; pc += KC)
      packABlock(m0, m1 - m0, pc, minI64(KC, k - pc), ap + pc * mPanels * MR);
    for (int64_t jc = n0; jc < n1; jc += NC) {
      int64_t nc = minI64(NC, n1 - jc);
      for (int64_t pc = 0; pc < k; pc += KC) {
        int64_t kc = minI64(KC, k - pc);
        packBBlock(pc, kc, jc, nc);
        macroKernel<Traits>(m1 - m0, nc, kc, ap + pc * mPanels * MR, bp,
                            g.c + m0 * g.ldc + jc, g.ldc,
                            g.accumulate || pc > 0);
      }
    }
    return;
  }
  // Otherwise the GotoBLAS order: each B block is packed once, A blocks are
  // repacked for every column block.
  float *ap = static_cast<float *>(
      scratch(kScratchA, size_t(MC * minI64(KC, k) * sizeof(float))));
  for (int64_t jc = n0; jc < n1; jc += NC) {
    int64_t nc = minI64(NC, n1 - jc);
    for (int64_t pc = 0; pc < k; pc += KC) {
      int64_t kc = minI64(KC, k - pc);
      packBBlock(pc, kc, jc, nc);
      for (int64_t ic = m0; ic < m1; ic += MC) {
        int64_t mc = minI64(MC, m1 - ic);
        packABlock(ic, mc, pc, kc, ap);
        macroKernel<Traits>(mc, nc, kc, ap, bp, g.c + ic * g.ldc + jc, g.ldc,
                            g.accumulate || pc > 0);
      }
    }
  }
}

} // namespace
} // namespace bitloom::uk

#endif // BITLOOM_UKERNELS_GEMMDRIVER_H

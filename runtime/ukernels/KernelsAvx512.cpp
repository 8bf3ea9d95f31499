//===- KernelsAvx512.cpp - AVX-512 F/BW/VL/VNNI kernels -------------------===//
//
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni and only called
// after cpuid says so. No standard-library templates are instantiated here:
// a copy compiled with these flags could be the one the linker keeps for the
// whole program.
//
//===----------------------------------------------------------------------===//
#include "ukernels/GemmDriver.h"

#include <immintrin.h>

namespace bitloom::uk {
namespace {

inline __mmask16 mask16(int64_t count) {
  return count >= 16  ? __mmask16(0xFFFF)
         : count <= 0 ? __mmask16(0)
                      : __mmask16((1u << count) - 1);
}

/// In-register transpose of a 16x16 block of 32-bit elements.
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int q = 0; q < 8; ++q) {
    t[2 * q] = _mm512_unpacklo_ps(r[2 * q], r[2 * q + 1]);
    t[2 * q + 1] = _mm512_unpackhi_ps(r[2 * q], r[2 * q + 1]);
  }
  for (int s = 0; s < 4; ++s) {
    u[4 * s + 0] = _mm512_shuffle_ps(t[4 * s], t[4 * s + 2], 0x44);
    u[4 * s + 1] = _mm512_shuffle_ps(t[4 * s], t[4 * s + 2], 0xEE);
    u[4 * s + 2] = _mm512_shuffle_ps(t[4 * s + 1], t[4 * s + 3], 0x44);
    u[4 * s + 3] = _mm512_shuffle_ps(t[4 * s + 1], t[4 * s + 3], 0xEE);
  }
  // u[4s + c] holds, in 128-bit lane L, column 4L + c of rows 4s..4s+3.
  for (int c = 0; c < 4; ++c) {
    __m512 ab = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
    __m512 abHi = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    __m512 cd = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    __m512 cdHi = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_f32x4(ab, cd, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(ab, cd, 0xDD);
    r[8 + c] = _mm512_shuffle_f32x4(abHi, cdHi, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(abHi, cdHi, 0xDD);
  }
}

/// In-register transpose of an 8x8 block of floats.
inline void transpose8x8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int q = 0; q < 4; ++q) {
    t[2 * q] = _mm256_unpacklo_ps(r[2 * q], r[2 * q + 1]);
    t[2 * q + 1] = _mm256_unpackhi_ps(r[2 * q], r[2 * q + 1]);
  }
  for (int s = 0; s < 2; ++s) {
    u[4 * s + 0] = _mm256_shuffle_ps(t[4 * s], t[4 * s + 2], 0x44);
    u[4 * s + 1] = _mm256_shuffle_ps(t[4 * s], t[4 * s + 2], 0xEE);
    u[4 * s + 2] = _mm256_shuffle_ps(t[4 * s + 1], t[4 * s + 3], 0x44);
    u[4 * s + 3] = _mm256_shuffle_ps(t[4 * s + 1], t[4 * s + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

//===----------------------------------------------------------------------===//
// f32 GEMM: 8x32 register tile (16 zmm accumulators).
//===----------------------------------------------------------------------===//

// Packing B reads many rows at once, each a few cache lines at a time: the
// hardware prefetchers do not run far enough ahead on so many streams when
// B comes from DRAM (the 32000-row LM head), so fetch the lines the next
// steps will read. Worth about 5% on such products.
constexpr int64_t kPrefetchAhead = 64; // floats

inline void prefetch(const void *p) {
  _mm_prefetch(static_cast<const char *>(p), _MM_HINT_T0);
}

/// Sixteen bf16 values (those of `mask`, the others 0) widened to f32.
inline __m512 loadBf16(__mmask16 mask, const uint16_t *src) {
  __m512i bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, src));
  return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
}

struct Avx512Gemm {
  static constexpr int64_t MR = 8, NR = 32, KC = 256, NC = 512, MC = 256;

  static void packA(const GemmArgs &g, int64_t i0, int64_t mr, int64_t p0,
                    int64_t kc, float *dst) {
    if (g.transA) {
      __mmask8 mask = __mmask8(mask16(mr));
      const float *src = g.a + p0 * g.lda + i0;
      for (int64_t p = 0; p < kc; ++p)
        _mm256_store_ps(dst + p * MR,
                        _mm256_maskz_loadu_ps(mask, src + p * g.lda));
      return;
    }
    // Eight rows of A, eight columns at a time, transposed in registers.
    const float *src = g.a + i0 * g.lda + p0;
    for (int64_t p = 0; p < kc; p += 8) {
      __mmask8 pm = __mmask8(mask16(kc - p));
      __m256 r[8];
      for (int q = 0; q < 8; ++q)
        r[q] = q < mr ? _mm256_maskz_loadu_ps(pm, src + q * g.lda + p)
                      : _mm256_setzero_ps();
      transpose8x8(r);
      int64_t count = minI64(8, kc - p);
      for (int q = 0; q < count; ++q)
        _mm256_store_ps(dst + (p + q) * MR, r[q]);
    }
  }

  static void packB(const GemmArgs &g, int64_t p0, int64_t kc, int64_t j0,
                    int64_t nr, float *dst) {
    __mmask16 lo = mask16(nr), hi = mask16(nr - 16);
    if (g.ternary) {
      // j0 is a multiple of 32, so the panel is one 32-byte chunk of a
      // block, one shift away from its 2-bit fields.
      const float s = g.scale;
      const __m512 lut =
          _mm512_setr_ps(-s, 0.0f, s, 0.0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
      const __m128i shift = _mm_cvtsi32_si128(int(2 * ((j0 >> 5) & 3)));
      const __m256i three = _mm256_set1_epi8(3);
      const uint8_t *src = g.ternary + p0 * g.ternaryRowBytes + (j0 >> 7) * 32;
      for (int64_t p = 0; p < kc; ++p) {
        __m256i bits = _mm256_loadu_si256(
            reinterpret_cast<const __m256i *>(src + p * g.ternaryRowBytes));
        bits = _mm256_and_si256(_mm256_srl_epi16(bits, shift), three);
        __m512i i0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(bits));
        __m512i i1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(bits, 1));
        _mm512_store_ps(dst + p * NR, _mm512_maskz_permutexvar_ps(lo, i0, lut));
        _mm512_store_ps(dst + p * NR + 16,
                        _mm512_maskz_permutexvar_ps(hi, i1, lut));
      }
      return;
    }
    if (g.bf16)
      packPanel(g.bf16, g, p0, kc, j0, nr, dst);
    else
      packPanel(g.b, g, p0, kc, j0, nr, dst);
  }

  static __m512 load(__mmask16 mask, const float *src) {
    return _mm512_maskz_loadu_ps(mask, src);
  }
  static __m512 load(__mmask16 mask, const uint16_t *src) {
    return loadBf16(mask, src);
  }

  /// packB of a dense B, f32 or bf16 (widened while loading: exact).
  template <typename Elem>
  static void packPanel(const Elem *b, const GemmArgs &g, int64_t p0,
                        int64_t kc, int64_t j0, int64_t nr, float *dst) {
    __mmask16 lo = mask16(nr), hi = mask16(nr - 16);
    if (!g.transB) {
      const Elem *src = b + p0 * g.ldb + j0;
      for (int64_t p = 0; p < kc; ++p) {
        prefetch(src + p * g.ldb + kPrefetchAhead);
        if (sizeof(Elem) == 4) // 32 floats span two cache lines
          prefetch(src + p * g.ldb + kPrefetchAhead + 16);
        _mm512_store_ps(dst + p * NR, load(lo, src + p * g.ldb));
        _mm512_store_ps(dst + p * NR + 16, load(hi, src + p * g.ldb + 16));
      }
      return;
    }
    // B^T: 16 rows of the stored matrix (16 output columns) by 16 of k at a
    // time, transposed in registers.
    for (int64_t half = 0; half < 2; ++half) {
      int64_t rows = minI64(16, nr - 16 * half);
      const Elem *src = b + (j0 + 16 * half) * g.ldb + p0;
      for (int64_t p = 0; p < kc; p += 16) {
        __mmask16 pm = mask16(kc - p);
        __m512 r[16];
        for (int q = 0; q < 16; ++q) {
          if (q < rows)
            prefetch(src + q * g.ldb + p + kPrefetchAhead);
          r[q] = q < rows ? load(pm, src + q * g.ldb + p) : _mm512_setzero_ps();
        }
        transpose16x16(r);
        int64_t count = minI64(16, kc - p);
        for (int q = 0; q < count; ++q)
          _mm512_store_ps(dst + (p + q) * NR + 16 * half, r[q]);
      }
    }
  }

  // Not inlined: on its own the register allocator keeps every accumulator
  // in a register (inlined into the loops it spilled one, halving speed).
  __attribute__((noinline)) static void kernel(int64_t kc, const float *a,
                                               const float *b, float *c,
                                               int64_t ldc, int64_t mr,
                                               int64_t nr, bool load) {
    __m512 acc[MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
      acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kc; ++p) {
      __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        __m512 av = _mm512_set1_ps(a[r]);
        acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
      }
      a += MR;
      b += NR;
    }
    if (mr == MR && nr == NR) {
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        float *cr = c + r * ldc;
        if (load) {
          acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_loadu_ps(cr));
          acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_loadu_ps(cr + 16));
        }
        _mm512_storeu_ps(cr, acc[r][0]);
        _mm512_storeu_ps(cr + 16, acc[r][1]);
      }
      return;
    }
    __mmask16 lo = mask16(nr), hi = mask16(nr - 16);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      if (r >= mr)
        break;
      float *cr = c + r * ldc;
      if (load) {
        acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_maskz_loadu_ps(lo, cr));
        acc[r][1] =
            _mm512_add_ps(acc[r][1], _mm512_maskz_loadu_ps(hi, cr + 16));
      }
      _mm512_mask_storeu_ps(cr, lo, acc[r][0]);
      _mm512_mask_storeu_ps(cr + 16, hi, acc[r][1]);
    }
  }
};

void gemm(const GemmArgs &g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  gemmRange<Avx512Gemm>(g, m0, m1, n0, n1);
}

//===----------------------------------------------------------------------===//
// Ternary forward with VNNI.
//
// vpdpbusd multiplies unsigned by signed bytes, so the weights are used as
// stored, w + 1 in {0, 1, 2}, and sum_c x[c] is subtracted at the end. The
// outputs are in the vector lanes: a tile of 16 rows of w is transposed
// (still 2-bit packed) so that one zmm holds the same packed dword of 16
// rows; a shift and a mask then give, in every lane, the weights of the same
// four consecutive columns, which meet four bytes of x broadcast from
// memory. No horizontal sums, and unpacking costs two instructions per 64
// weights, shared by all the rows of x in the register block.
//===----------------------------------------------------------------------===//

constexpr int64_t kGroup = 16; // output rows per zmm
// 4 x 4 zmm accumulators: as fast as 6 x 4 would be if it did not spill
// (the loop runs at one vpdpbusd per cycle), and 64 outputs per tile.
constexpr int kMaxGroups = 4; // zmm columns of the register block
constexpr int kMaxRows = 4;   // rows of x in the register block

/// Transposes groups `t < groups` of 16 rows of w (starting at o0; rows
/// >= n are zero) into tile[(dw * groups + t) * 16 + lane] = dword dw of row
/// o0 + 16t + lane.
void buildTile(const TernaryArgs &ta, int64_t o0, int groups, int64_t nDw,
               uint32_t *tile) {
  const int64_t rowBytes = nDw * 4;
  for (int t = 0; t < groups; ++t) {
    int64_t rows = minI64(kGroup, ta.n - (o0 + kGroup * t));
    const uint8_t *src = ta.w + (o0 + kGroup * t) * rowBytes;
    for (int64_t dw = 0; dw < nDw; dw += 16) {
      __mmask16 dm = mask16(nDw - dw);
      __m512 r[16];
      for (int q = 0; q < 16; ++q)
        r[q] = q < rows ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(
                              dm, src + q * rowBytes + dw * 4))
                        : _mm512_setzero_ps();
      transpose16x16(r);
      int64_t count = minI64(16, nDw - dw);
      for (int q = 0; q < count; ++q)
        _mm512_store_ps(
            reinterpret_cast<float *>(tile + ((dw + q) * groups + t) * kGroup),
            r[q]);
    }
  }
}

inline int32_t load32(const int8_t *p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

/// y rows x[0..R) against `T` groups of the tile, written to y[.., o0 ..).
template <int R, int T>
void ternaryBlock(const int8_t *const *x, const int32_t *rowSum,
                  const float *rowFactor, const uint32_t *tile, int64_t nDw,
                  float *const *y, int64_t o0, int64_t n) {
  __m512i acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t)
      acc[r][t] = _mm512_setzero_si512();
  const __m512i three = _mm512_set1_epi8(3);
  for (int64_t dw = 0; dw < nDw; ++dw) {
    // Dword d of block b: bytes 4d..4d+3, i.e. columns 128b + 32l + 4d + i.
    const int64_t col = (dw >> 3) * 128 + (dw & 7) * 4;
    __m512i packed[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t)
      packed[t] = _mm512_load_si512(tile + (dw * T + t) * kGroup);
#pragma GCC unroll 4
    for (int l = 0; l < 4; ++l) {
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        __m512i w =
            _mm512_and_si512(_mm512_srli_epi32(packed[t], 2 * l), three);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r)
          acc[r][t] = _mm512_dpbusd_epi32(
              acc[r][t], w, _mm512_set1_epi32(load32(x[r] + col + 32 * l)));
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    __m512i sum = _mm512_set1_epi32(rowSum[r]);
    __m512 factor = _mm512_set1_ps(rowFactor[r]);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      __m512 v = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][t], sum)), factor);
      _mm512_mask_storeu_ps(y[r] + o0 + kGroup * t,
                            mask16(n - (o0 + kGroup * t)), v);
    }
  }
}

template <int R>
void ternaryBlockT(int groups, const int8_t *const *x, const int32_t *rowSum,
                   const float *rowFactor, const uint32_t *tile, int64_t nDw,
                   float *const *y, int64_t o0, int64_t n) {
  if (groups == kMaxGroups)
    return ternaryBlock<R, kMaxGroups>(x, rowSum, rowFactor, tile, nDw, y, o0,
                                       n);
  if constexpr (kMaxGroups > 1)
    if (groups == 1)
      return ternaryBlock<R, 1>(x, rowSum, rowFactor, tile, nDw, y, o0, n);
  if constexpr (kMaxGroups > 2)
    if (groups == 2)
      return ternaryBlock<R, 2>(x, rowSum, rowFactor, tile, nDw, y, o0, n);
  if constexpr (kMaxGroups > 3)
    if (groups == 3)
      return ternaryBlock<R, 3>(x, rowSum, rowFactor, tile, nDw, y, o0, n);
}

/// ternaryBlockT<rows> for 1 <= rows <= R.
template <int R>
void ternaryRows(int rows, int groups, const int8_t *const *x,
                 const int32_t *rowSum, const float *rowFactor,
                 const uint32_t *tile, int64_t nDw, float *const *y, int64_t o0,
                 int64_t n) {
  if (rows == R)
    return ternaryBlockT<R>(groups, x, rowSum, rowFactor, tile, nDw, y, o0, n);
  if constexpr (R > 1)
    ternaryRows<R - 1>(rows, groups, x, rowSum, rowFactor, tile, nDw, y, o0, n);
}

void ternaryMatmul(const TernaryArgs &ta, int64_t m0, int64_t m1, int64_t n0,
                   int64_t n1) {
  const int64_t k = ta.k, nBlocks = ceilDiv(k, 128), nDw = nBlocks * 8;
  const int64_t kp = nBlocks * 128, rows = m1 - m0;
  // x rows padded with zeros to whole blocks (the padding of w is then
  // multiplied by zero), followed by their sums.
  const int8_t *xs = ta.xq + m0 * k;
  int64_t xStride = k;
  size_t xBytes = k == kp ? 0 : size_t(rows * kp);
  uint8_t *xBuf = static_cast<uint8_t *>(
      scratch(kScratchX, xBytes + size_t(rows) * sizeof(int32_t) + 64));
  if (k != kp) {
    for (int64_t i = 0; i < rows; ++i) {
      std::memcpy(xBuf + i * kp, xs + i * k, size_t(k));
      std::memset(xBuf + i * kp + k, 0, size_t(kp - k));
    }
    xs = reinterpret_cast<const int8_t *>(xBuf);
    xStride = kp;
  }
  int32_t *rowSum = reinterpret_cast<int32_t *>(xBuf + (xBytes + 63) / 64 * 64);
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t i = 0; i < rows; ++i) {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t c = 0; c < kp; c += 64)
      acc = _mm512_dpbusd_epi32(acc, ones,
                                _mm512_loadu_si512(xs + i * xStride + c));
    rowSum[i] = _mm512_reduce_add_epi32(acc);
  }

  uint32_t *tile = static_cast<uint32_t *>(scratch(
      kScratchTile, size_t(nDw * kMaxGroups * kGroup * sizeof(uint32_t))));
  for (int64_t o0 = n0; o0 < n1; o0 += kMaxGroups * kGroup) {
    int groups = int(minI64(kMaxGroups, ceilDiv(n1 - o0, kGroup)));
    buildTile(ta, o0, groups, nDw, tile);
    for (int64_t i = 0; i < rows; i += kMaxRows) {
      const int8_t *x[kMaxRows];
      float *y[kMaxRows];
      int r = int(minI64(kMaxRows, rows - i));
      for (int q = 0; q < r; ++q) {
        x[q] = xs + (i + q) * xStride;
        y[q] = ta.y + (m0 + i + q) * ta.n;
      }
      const int32_t *sums = rowSum + i;
      const float *factor = ta.rowFactor + m0 + i;
      ternaryRows<kMaxRows>(r, groups, x, sums, factor, tile, nDw, y, o0, n1);
    }
  }
}

} // namespace

const KernelTable &avx512Kernels() {
  static const KernelTable table = {Isa::Avx512, Avx512Gemm::NR, Avx512Gemm::MR,
                                    gemm,        kGroup,         ternaryMatmul};
  return table;
}

} // namespace bitloom::uk

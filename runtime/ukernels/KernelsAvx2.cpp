//===- KernelsAvx2.cpp - AVX2 + FMA kernels -------------------------------===//
//
// Compiled with -mavx2 -mfma and only called after cpuid says so; for x86-64
// CPUs without AVX-512. Like the AVX-512 file it instantiates no standard
// library templates.
//
//===----------------------------------------------------------------------===//
#include "ukernels/GemmDriver.h"

#include <immintrin.h>

namespace bitloom::uk {
namespace {

/// Lanes [0, count) set, as the sign-bit mask maskload/maskstore take.
inline __m256i laneMask(int64_t count) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int32_t c = int32_t(count < 0 ? 0 : count > 8 ? 8 : count);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), index);
}

/// Eight bf16 values widened to f32.
inline __m256 widenBf16(__m128i bits) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

/// bf16 values [0, count) of `src` (the others 0) widened to f32: AVX2 has
/// no masked 16-bit load.
inline __m256 loadBf16(const uint16_t *src, int64_t count) {
  if (count >= 8)
    return widenBf16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(src)));
  uint16_t tmp[8] = {};
  if (count > 0)
    std::memcpy(tmp, src, size_t(count) * sizeof(uint16_t));
  return widenBf16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(tmp)));
}

/// In-register transpose of an 8x8 block of 32-bit elements.
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
  // u[4s + c] holds, in 128-bit lane L, column 4L + c of rows 4s..4s+3.
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

//===----------------------------------------------------------------------===//
// f32 GEMM: 6x16 register tile (12 ymm accumulators).
//===----------------------------------------------------------------------===//

struct Avx2Gemm {
  static constexpr int64_t MR = 6, NR = 16, KC = 256, NC = 512, MC = 144;

  static void packA(const GemmArgs &g, int64_t i0, int64_t mr, int64_t p0,
                    int64_t kc, float *dst) {
    packAGeneric<MR>(g, i0, mr, p0, kc, dst);
  }

  static void packB(const GemmArgs &g, int64_t p0, int64_t kc, int64_t j0,
                    int64_t nr, float *dst) {
    const __m256i lo = laneMask(nr), hi = laneMask(nr - 8);
    if (g.ternary) {
      // j0 is a multiple of 16: half of a 32-byte chunk, one shift away from
      // its 2-bit fields.
      const __m256 lut = _mm256_setr_ps(-g.scale, 0.0f, g.scale, 0, 0, 0, 0, 0);
      const __m128i shift = _mm_cvtsi32_si128(int(2 * ((j0 >> 5) & 3)));
      const __m128i three = _mm_set1_epi8(3);
      const uint8_t *src =
          g.ternary + p0 * g.ternaryRowBytes + (j0 >> 7) * 32 + (j0 & 16);
      for (int64_t p = 0; p < kc; ++p) {
        __m128i bits = _mm_loadu_si128(
            reinterpret_cast<const __m128i *>(src + p * g.ternaryRowBytes));
        bits = _mm_and_si128(_mm_srl_epi16(bits, shift), three);
        __m256i i0 = _mm256_cvtepu8_epi32(bits);
        __m256i i1 = _mm256_cvtepu8_epi32(_mm_srli_si128(bits, 8));
        _mm256_store_ps(dst + p * NR,
                        _mm256_and_ps(_mm256_permutevar8x32_ps(lut, i0),
                                      _mm256_castsi256_ps(lo)));
        _mm256_store_ps(dst + p * NR + 8,
                        _mm256_and_ps(_mm256_permutevar8x32_ps(lut, i1),
                                      _mm256_castsi256_ps(hi)));
      }
      return;
    }
    if (g.bf16) {
      packBf16(g, p0, kc, j0, nr, dst);
      return;
    }
    if (!g.transB) {
      const float *src = g.b + p0 * g.ldb + j0;
      for (int64_t p = 0; p < kc; ++p) {
        _mm256_store_ps(dst + p * NR, _mm256_maskload_ps(src + p * g.ldb, lo));
        _mm256_store_ps(dst + p * NR + 8,
                        _mm256_maskload_ps(src + p * g.ldb + 8, hi));
      }
      return;
    }
    for (int64_t half = 0; half < 2; ++half) {
      int64_t rows = minI64(8, nr - 8 * half);
      const float *src = g.b + (j0 + 8 * half) * g.ldb + p0;
      for (int64_t p = 0; p < kc; p += 8) {
        __m256i pm = laneMask(kc - p);
        __m256 r[8];
        for (int q = 0; q < 8; ++q)
          r[q] = q < rows ? _mm256_maskload_ps(src + q * g.ldb + p, pm)
                          : _mm256_setzero_ps();
        transpose8x8(r);
        int64_t count = minI64(8, kc - p);
        for (int q = 0; q < count; ++q)
          _mm256_store_ps(dst + (p + q) * NR + 8 * half, r[q]);
      }
    }
  }

  /// packB of a bf16 B: the f32 paths with a widening load.
  static void packBf16(const GemmArgs &g, int64_t p0, int64_t kc, int64_t j0,
                       int64_t nr, float *dst) {
    if (!g.transB) {
      const uint16_t *src = g.bf16 + p0 * g.ldb + j0;
      for (int64_t p = 0; p < kc; ++p) {
        _mm256_store_ps(dst + p * NR, loadBf16(src + p * g.ldb, nr));
        _mm256_store_ps(dst + p * NR + 8,
                        loadBf16(src + p * g.ldb + 8, nr - 8));
      }
      return;
    }
    for (int64_t half = 0; half < 2; ++half) {
      int64_t rows = minI64(8, nr - 8 * half);
      const uint16_t *src = g.bf16 + (j0 + 8 * half) * g.ldb + p0;
      for (int64_t p = 0; p < kc; p += 8) {
        int64_t count = minI64(8, kc - p);
        __m256 r[8];
        for (int q = 0; q < 8; ++q)
          r[q] = q < rows ? loadBf16(src + q * g.ldb + p, count)
                          : _mm256_setzero_ps();
        transpose8x8(r);
        for (int q = 0; q < count; ++q)
          _mm256_store_ps(dst + (p + q) * NR + 8 * half, r[q]);
      }
    }
  }

  // Not inlined: on its own the register allocator keeps every accumulator
  // in a register (inlined into the loops it spilled one, halving speed).
  __attribute__((noinline)) static void kernel(int64_t kc, const float *a,
                                               const float *b, float *c,
                                               int64_t ldc, int64_t mr,
                                               int64_t nr, bool load) {
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r)
      acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t p = 0; p < kc; ++p) {
      __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        __m256 av = _mm256_broadcast_ss(a + r);
        acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
      }
      a += MR;
      b += NR;
    }
    const __m256i lo = laneMask(nr), hi = laneMask(nr - 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      if (r >= mr)
        break;
      float *cr = c + r * ldc;
      if (nr == NR) {
        if (load) {
          acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(cr));
          acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(cr + 8));
        }
        _mm256_storeu_ps(cr, acc[r][0]);
        _mm256_storeu_ps(cr + 8, acc[r][1]);
      } else {
        if (load) {
          acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_maskload_ps(cr, lo));
          acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_maskload_ps(cr + 8, hi));
        }
        _mm256_maskstore_ps(cr, lo, acc[r][0]);
        _mm256_maskstore_ps(cr + 8, hi, acc[r][1]);
      }
    }
  }
};

void gemm(const GemmArgs &g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  gemmRange<Avx2Gemm>(g, m0, m1, n0, n1);
}

//===----------------------------------------------------------------------===//
// Ternary forward: the layout of the AVX-512 kernel with 8 output rows per
// ymm, and vpmaddubsw (u8 w + 1 times s8 x, pairs summed to i16: at most
// 2 * 2 * 128, no saturation) + vpmaddwd in place of vpdpbusd.
//===----------------------------------------------------------------------===//

constexpr int64_t kGroup = 8; // output rows per ymm, and per tile
// One ymm of outputs by four rows of x: wider blocks measured no faster, the
// loop being bound by the multiply-adds, not by unpacking.
constexpr int kMaxRows = 4; // rows of x in the register block

/// tile[dw * 8 + lane] = dword dw of row o0 + lane (rows >= n are zero).
void buildTile(const TernaryArgs &ta, int64_t o0, int64_t nDw, uint32_t *tile) {
  const int64_t rowBytes = nDw * 4;
  int64_t rows = minI64(kGroup, ta.n - o0);
  const uint8_t *src = ta.w + o0 * rowBytes;
  // nDw is a multiple of 8: whole 32-byte blocks.
  for (int64_t dw = 0; dw < nDw; dw += 8) {
    __m256 r[8];
    for (int q = 0; q < 8; ++q)
      r[q] = q < rows ? _mm256_loadu_ps(reinterpret_cast<const float *>(
                            src + q * rowBytes + dw * 4))
                      : _mm256_setzero_ps();
    transpose8x8(r);
    for (int q = 0; q < 8; ++q)
      _mm256_store_ps(reinterpret_cast<float *>(tile + (dw + q) * kGroup),
                      r[q]);
  }
}

inline int32_t load32(const int8_t *p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

template <int R>
void ternaryBlock(const int8_t *const *x, const int32_t *rowSum,
                  const float *rowFactor, const uint32_t *tile, int64_t nDw,
                  float *const *y, int64_t o0, int64_t n) {
  __m256i acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    acc[r] = _mm256_setzero_si256();
  const __m256i three = _mm256_set1_epi8(3);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t dw = 0; dw < nDw; ++dw) {
    const int64_t col = (dw >> 3) * 128 + (dw & 7) * 4;
    __m256i packed = _mm256_load_si256(
        reinterpret_cast<const __m256i *>(tile + dw * kGroup));
    __m256i w[4];
#pragma GCC unroll 4
    for (int l = 0; l < 4; ++l)
      w[l] = _mm256_and_si256(_mm256_srli_epi32(packed, 2 * l), three);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      // The four products of one output stay below 4 * 512 in int16, so
      // they are summed there and widened once.
      __m256i s =
          _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(load32(x[r] + col)));
#pragma GCC unroll 3
      for (int l = 1; l < 4; ++l)
        s = _mm256_add_epi16(
            s, _mm256_maddubs_epi16(
                   w[l], _mm256_set1_epi32(load32(x[r] + col + 32 * l))));
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(s, ones));
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(
                                 acc[r], _mm256_set1_epi32(rowSum[r]))),
                             _mm256_set1_ps(rowFactor[r]));
    if (n - o0 >= kGroup)
      _mm256_storeu_ps(y[r] + o0, v);
    else
      _mm256_maskstore_ps(y[r] + o0, laneMask(n - o0), v);
  }
}

/// ternaryBlock<rows> for 1 <= rows <= R.
template <int R>
void ternaryRows(int rows, const int8_t *const *x, const int32_t *rowSum,
                 const float *rowFactor, const uint32_t *tile, int64_t nDw,
                 float *const *y, int64_t o0, int64_t n) {
  if (rows == R)
    return ternaryBlock<R>(x, rowSum, rowFactor, tile, nDw, y, o0, n);
  if constexpr (R > 1)
    ternaryRows<R - 1>(rows, x, rowSum, rowFactor, tile, nDw, y, o0, n);
}

void ternaryMatmul(const TernaryArgs &ta, int64_t m0, int64_t m1, int64_t n0,
                   int64_t n1) {
  const int64_t k = ta.k, nBlocks = ceilDiv(k, 128), nDw = nBlocks * 8;
  const int64_t kp = nBlocks * 128, rows = m1 - m0;
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
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < rows; ++i) {
    __m256i acc = _mm256_setzero_si256();
    for (int64_t c = 0; c < kp; c += 32) {
      __m256i v = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(xs + i * xStride + c));
      acc = _mm256_add_epi32(
          acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc),
                              _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    rowSum[i] = _mm_cvtsi128_si32(s);
  }

  uint32_t *tile = static_cast<uint32_t *>(
      scratch(kScratchTile, size_t(nDw * kGroup * sizeof(uint32_t))));
  for (int64_t o0 = n0; o0 < n1; o0 += kGroup) {
    buildTile(ta, o0, nDw, tile);
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
      ternaryRows<kMaxRows>(r, x, sums, factor, tile, nDw, y, o0, n1);
    }
  }
}

} // namespace

const KernelTable &avx2Kernels() {
  static const KernelTable table = {Isa::Avx2, Avx2Gemm::NR, Avx2Gemm::MR,
                                    gemm,      kGroup,       ternaryMatmul};
  return table;
}

} // namespace bitloom::uk

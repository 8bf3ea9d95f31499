//===- KernelsNeonDot.cpp - arm64 kernels with the dot product extension -===//
//
// Compiled with -march=armv8.2-a+dotprod and only called when HWCAP_ASIMDDP
// says the core has SDOT. The ternary forward follows the AVX-512 kernel: a
// tile of w is transposed still 2-bit packed, so that one q register holds
// the same packed dword of four rows; a shift and a mask give w + 1 in
// {0, 1, 2} for four consecutive columns in every lane, and SDOT with four
// bytes of x broadcast accumulates four outputs with no horizontal sums.
// sum_c x[c] is subtracted at the end.
//
//===----------------------------------------------------------------------===//
#include "ukernels/GemmDriver.h"

#include <arm_neon.h>

namespace bitloom::uk {
namespace {

constexpr int64_t kGroup = 4; // output rows per q register
constexpr int kMaxGroups = 4; // q columns of the register block
constexpr int kMaxRows = 4;   // rows of x in the register block

/// tile[(dw * groups + t) * 4 + lane] = dword dw of row o0 + 4t + lane (rows
/// >= n are zero).
void buildTile(const TernaryArgs &ta, int64_t o0, int groups, int64_t nDw,
               uint32_t *tile) {
  const int64_t rowBytes = nDw * 4;
  for (int t = 0; t < groups; ++t)
    for (int64_t lane = 0; lane < kGroup; ++lane) {
      int64_t o = o0 + kGroup * t + lane;
      const uint8_t *src = ta.w + o * rowBytes;
      for (int64_t dw = 0; dw < nDw; ++dw) {
        uint32_t v = 0;
        if (o < ta.n)
          std::memcpy(&v, src + dw * 4, 4);
        tile[(dw * groups + t) * kGroup + lane] = v;
      }
    }
}

template <int R, int T>
void ternaryBlock(const int8_t *const *x, const int32_t *rowSum,
                  const float *rowFactor, const uint32_t *tile, int64_t nDw,
                  float *const *y, int64_t o0, int64_t n) {
  int32x4_t acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t)
      acc[r][t] = vdupq_n_s32(0);
  const uint8x16_t three = vdupq_n_u8(3);
  for (int64_t dw = 0; dw < nDw; ++dw) {
    // Dword d of block b: bytes 4d..4d+3, i.e. columns 128b + 32l + 4d + i.
    const int64_t col = (dw >> 3) * 128 + (dw & 7) * 4;
    uint8x16_t packed[T];
    for (int t = 0; t < T; ++t)
      packed[t] = vld1q_u8(
          reinterpret_cast<const uint8_t *>(tile + (dw * T + t) * kGroup));
    for (int l = 0; l < 4; ++l) {
      int8x16_t xb[R];
      for (int r = 0; r < R; ++r) {
        int32_t v;
        std::memcpy(&v, x[r] + col + 32 * l, 4);
        xb[r] = vreinterpretq_s8_s32(vdupq_n_s32(v));
      }
      const int8x16_t shift = vdupq_n_s8(int8_t(-2 * l));
      for (int t = 0; t < T; ++t) {
        int8x16_t w =
            vreinterpretq_s8_u8(vandq_u8(vshlq_u8(packed[t], shift), three));
        for (int r = 0; r < R; ++r)
          acc[r][t] = vdotq_s32(acc[r][t], w, xb[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    int32x4_t sum = vdupq_n_s32(rowSum[r]);
    for (int t = 0; t < T; ++t) {
      float32x4_t v =
          vmulq_n_f32(vcvtq_f32_s32(vsubq_s32(acc[r][t], sum)), rowFactor[r]);
      int64_t o = o0 + kGroup * t;
      if (n - o >= kGroup) {
        vst1q_f32(y[r] + o, v);
      } else {
        float tmp[kGroup];
        vst1q_f32(tmp, v);
        for (int64_t j = 0; j < n - o; ++j)
          y[r][o + j] = tmp[j];
      }
    }
  }
}

template <int R>
void ternaryBlockT(int groups, const int8_t *const *x, const int32_t *rowSum,
                   const float *rowFactor, const uint32_t *tile, int64_t nDw,
                   float *const *y, int64_t o0, int64_t n) {
  switch (groups) {
  case 1:
    return ternaryBlock<R, 1>(x, rowSum, rowFactor, tile, nDw, y, o0, n);
  case 2:
    return ternaryBlock<R, 2>(x, rowSum, rowFactor, tile, nDw, y, o0, n);
  case 3:
    return ternaryBlock<R, 3>(x, rowSum, rowFactor, tile, nDw, y, o0, n);
  default:
    return ternaryBlock<R, 4>(x, rowSum, rowFactor, tile, nDw, y, o0, n);
  }
}

void ternaryMatmul(const TernaryArgs &ta, int64_t m0, int64_t m1, int64_t n0,
                   int64_t n1) {
  const int64_t k = ta.k, nBlocks = ceilDiv(k, 128), nDw = nBlocks * 8;
  const int64_t kp = nBlocks * 128, rows = m1 - m0;
  // x rows padded with zeros to whole blocks, followed by their sums.
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
  for (int64_t i = 0; i < rows; ++i) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int64_t c = 0; c < kp; c += 16)
      acc = vpadalq_s16(acc, vpaddlq_s8(vld1q_s8(xs + i * xStride + c)));
    rowSum[i] = vaddvq_s32(acc);
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
      switch (r) {
      case 1:
        ternaryBlockT<1>(groups, x, sums, factor, tile, nDw, y, o0, n1);
        break;
      case 2:
        ternaryBlockT<2>(groups, x, sums, factor, tile, nDw, y, o0, n1);
        break;
      case 3:
        ternaryBlockT<3>(groups, x, sums, factor, tile, nDw, y, o0, n1);
        break;
      default:
        ternaryBlockT<4>(groups, x, sums, factor, tile, nDw, y, o0, n1);
        break;
      }
    }
  }
}

} // namespace

const KernelTable &neonDotKernels() {
  // The f32 GEMM is the baseline one, with its granules.
  static const KernelTable table = {
      Isa::NeonDot, neonKernels().gemmNr, neonKernels().gemmMr, neonGemm,
      kGroup,       ternaryMatmul};
  return table;
}

} // namespace bitloom::uk

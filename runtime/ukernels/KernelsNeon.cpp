//===- KernelsNeon.cpp - arm64 Advanced SIMD kernels ----------------------===//
//
// Baseline arm64 (Advanced SIMD is part of the architecture): the f32 GEMM
// used on every arm64 CPU, and a ternary forward for cores without the dot
// product extension (see KernelsNeonDot.cpp for those with it).
//
//===----------------------------------------------------------------------===//
#include "ukernels/GemmDriver.h"

#include <arm_neon.h>

namespace bitloom::uk {
namespace {

//===----------------------------------------------------------------------===//
// f32 GEMM: 8x8 register tile (16 q accumulators), fused multiply-add by
// lane so that a panel of A needs two loads per k step.
//===----------------------------------------------------------------------===//

struct NeonGemm {
  static constexpr int64_t MR = 8, NR = 8, KC = 256, NC = 512, MC = 128;

  static void packA(const GemmArgs &g, int64_t i0, int64_t mr, int64_t p0,
                    int64_t kc, float *dst) {
    packAGeneric<MR>(g, i0, mr, p0, kc, dst);
  }

  /// Eight bf16 values widened to f32 into dst[0, 8).
  static void storeBf16(const uint16_t *src, float *dst) {
    uint16x8_t bits = vld1q_u16(src);
    vst1q_f32(dst, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(bits), 16)));
    vst1q_f32(dst + 4, vreinterpretq_f32_u32(vshll_high_n_u16(bits, 16)));
  }

  /// Four bf16 values widened to f32.
  static float32x4_t loadBf16x4(const uint16_t *src) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(src), 16));
  }

  /// packB of a bf16 B on whole panels (nr == NR): the widening is a shift.
  static void packBf16(const GemmArgs &g, int64_t p0, int64_t kc, int64_t j0,
                       float *dst) {
    if (!g.transB) {
      const uint16_t *src = g.bf16 + p0 * g.ldb + j0;
      for (int64_t p = 0; p < kc; ++p)
        storeBf16(src + p * g.ldb, dst + p * NR);
      return;
    }
    // Eight stored rows (the panel's columns) by four of k at a time, as two
    // 4x4 transposes; the last kc % 4 steps one at a time.
    const uint16_t *src = g.bf16 + j0 * g.ldb + p0;
    int64_t p = 0;
    for (; p + 4 <= kc; p += 4)
      for (int half = 0; half < 2; ++half) {
        const uint16_t *rows = src + 4 * half * g.ldb + p;
        float32x4x2_t t01 =
            vtrnq_f32(loadBf16x4(rows), loadBf16x4(rows + g.ldb));
        float32x4x2_t t23 = vtrnq_f32(loadBf16x4(rows + 2 * g.ldb),
                                      loadBf16x4(rows + 3 * g.ldb));
        float *out = dst + p * NR + 4 * half;
        vst1q_f32(out, vcombine_f32(vget_low_f32(t01.val[0]),
                                    vget_low_f32(t23.val[0])));
        vst1q_f32(out + NR, vcombine_f32(vget_low_f32(t01.val[1]),
                                         vget_low_f32(t23.val[1])));
        vst1q_f32(out + 2 * NR, vcombine_f32(vget_high_f32(t01.val[0]),
                                             vget_high_f32(t23.val[0])));
        vst1q_f32(out + 3 * NR, vcombine_f32(vget_high_f32(t01.val[1]),
                                             vget_high_f32(t23.val[1])));
      }
    for (; p < kc; ++p)
      for (int64_t j = 0; j < NR; ++j)
        dst[p * NR + j] = bf16ToFloat(src[j * g.ldb + p]);
  }

  static void packB(const GemmArgs &g, int64_t p0, int64_t kc, int64_t j0,
                    int64_t nr, float *dst) {
    if (g.bf16 && nr == NR) {
      packBf16(g, p0, kc, j0, dst);
      return;
    }
    if (!g.ternary || nr != NR) {
      packBGeneric<NR>(g, p0, kc, j0, nr, dst);
      return;
    }
    // j0 is a multiple of 8: eight bytes of one 32-byte chunk, one shift
    // away from their 2-bit fields. (u - 1) * scale is exact.
    const int8x8_t shift = vdup_n_s8(int8_t(-2 * ((j0 >> 5) & 3)));
    const uint8x8_t three = vdup_n_u8(3);
    const float32x4_t one = vdupq_n_f32(1.0f);
    const uint8_t *src =
        g.ternary + p0 * g.ternaryRowBytes + (j0 >> 7) * 32 + (j0 & 31);
    for (int64_t p = 0; p < kc; ++p) {
      uint8x8_t u =
          vand_u8(vshl_u8(vld1_u8(src + p * g.ternaryRowBytes), shift), three);
      uint16x8_t u16 = vmovl_u8(u);
      float32x4_t lo = vcvtq_f32_u32(vmovl_u16(vget_low_u16(u16)));
      float32x4_t hi = vcvtq_f32_u32(vmovl_u16(vget_high_u16(u16)));
      vst1q_f32(dst + p * NR, vmulq_n_f32(vsubq_f32(lo, one), g.scale));
      vst1q_f32(dst + p * NR + 4, vmulq_n_f32(vsubq_f32(hi, one), g.scale));
    }
  }

  // Not inlined: on its own the register allocator keeps every accumulator
  // in a register (inlined into the loops it spilled one, halving speed).
  __attribute__((noinline)) static void kernel(int64_t kc, const float *a,
                                               const float *b, float *c,
                                               int64_t ldc, int64_t mr,
                                               int64_t nr, bool load) {
    float32x4_t acc[MR][2];
    for (int r = 0; r < MR; ++r)
      acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
    for (int64_t p = 0; p < kc; ++p) {
      float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
      float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
#define BITLOOM_FMA_ROW(r, av, lane)                                           \
  acc[r][0] = vfmaq_laneq_f32(acc[r][0], b0, av, lane);                        \
  acc[r][1] = vfmaq_laneq_f32(acc[r][1], b1, av, lane);
      BITLOOM_FMA_ROW(0, a0, 0)
      BITLOOM_FMA_ROW(1, a0, 1)
      BITLOOM_FMA_ROW(2, a0, 2)
      BITLOOM_FMA_ROW(3, a0, 3)
      BITLOOM_FMA_ROW(4, a1, 0)
      BITLOOM_FMA_ROW(5, a1, 1)
      BITLOOM_FMA_ROW(6, a1, 2)
      BITLOOM_FMA_ROW(7, a1, 3)
#undef BITLOOM_FMA_ROW
      a += MR;
      b += NR;
    }
    if (nr == NR) {
      for (int r = 0; r < mr; ++r) {
        float *cr = c + r * ldc;
        if (load) {
          acc[r][0] = vaddq_f32(acc[r][0], vld1q_f32(cr));
          acc[r][1] = vaddq_f32(acc[r][1], vld1q_f32(cr + 4));
        }
        vst1q_f32(cr, acc[r][0]);
        vst1q_f32(cr + 4, acc[r][1]);
      }
      return;
    }
    for (int r = 0; r < mr; ++r) {
      float tmp[NR];
      vst1q_f32(tmp, acc[r][0]);
      vst1q_f32(tmp + 4, acc[r][1]);
      float *cr = c + r * ldc;
      for (int64_t j = 0; j < nr; ++j)
        cr[j] = (load ? cr[j] : 0.0f) + tmp[j];
    }
  }
};

//===----------------------------------------------------------------------===//
// Ternary forward without SDOT: four rows of w unpacked to int8 {-1, 0, 1}
// (the only copy of w ever made), then widening multiply-accumulates
// against each row of x and one horizontal sum per output.
//===----------------------------------------------------------------------===//

constexpr int64_t kTileRows = 4;

void unpackRows(const TernaryArgs &ta, int64_t o0, int64_t rows, int64_t kp,
                int8_t *tile) {
  const int64_t rowBytes = kp / 4;
  const uint8x16_t three = vdupq_n_u8(3);
  const int8x16_t one = vdupq_n_s8(1);
  for (int64_t t = 0; t < kTileRows; ++t) {
    int8_t *dst = tile + t * kp;
    if (t >= rows) {
      std::memset(dst, 0, size_t(kp));
      continue;
    }
    const uint8_t *src = ta.w + (o0 + t) * rowBytes;
    for (int64_t b = 0; b < kp / 128; ++b) {
      uint8x16_t v0 = vld1q_u8(src + 32 * b), v1 = vld1q_u8(src + 32 * b + 16);
      for (int l = 0; l < 4; ++l) {
        int8x16_t shift = vdupq_n_s8(int8_t(-2 * l));
        int8x16_t u0 =
            vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v0, shift), three));
        int8x16_t u1 =
            vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v1, shift), three));
        vst1q_s8(dst + 128 * b + 32 * l, vsubq_s8(u0, one));
        vst1q_s8(dst + 128 * b + 32 * l + 16, vsubq_s8(u1, one));
      }
    }
  }
}

void ternaryMatmul(const TernaryArgs &ta, int64_t m0, int64_t m1, int64_t n0,
                   int64_t n1) {
  const int64_t k = ta.k, kp = ceilDiv(k, 128) * 128, rows = m1 - m0;
  const int8_t *xs = ta.xq + m0 * k;
  int64_t xStride = k;
  if (k != kp) {
    int8_t *xBuf = static_cast<int8_t *>(scratch(kScratchX, size_t(rows * kp)));
    for (int64_t i = 0; i < rows; ++i) {
      std::memcpy(xBuf + i * kp, xs + i * k, size_t(k));
      std::memset(xBuf + i * kp + k, 0, size_t(kp - k));
    }
    xs = xBuf;
    xStride = kp;
  }
  int8_t *tile =
      static_cast<int8_t *>(scratch(kScratchTile, size_t(kTileRows * kp)));
  for (int64_t o0 = n0; o0 < n1; o0 += kTileRows) {
    int64_t outs = minI64(kTileRows, n1 - o0);
    unpackRows(ta, o0, outs, kp, tile);
    for (int64_t i = 0; i < rows; ++i) {
      const int8_t *x = xs + i * xStride;
      int32x4_t acc[kTileRows];
      for (int t = 0; t < kTileRows; ++t)
        acc[t] = vdupq_n_s32(0);
      for (int64_t c = 0; c < kp; c += 16) {
        int8x16_t xv = vld1q_s8(x + c);
        for (int t = 0; t < kTileRows; ++t) {
          int8x16_t wv = vld1q_s8(tile + t * kp + c);
          // |x * w| <= 128, so two products fit in int16.
          int16x8_t p = vmull_s8(vget_low_s8(xv), vget_low_s8(wv));
          p = vmlal_s8(p, vget_high_s8(xv), vget_high_s8(wv));
          acc[t] = vpadalq_s16(acc[t], p);
        }
      }
      float *y = ta.y + (m0 + i) * ta.n + o0;
      for (int64_t t = 0; t < outs; ++t)
        y[t] = float(vaddvq_s32(acc[t])) * ta.rowFactor[m0 + i];
    }
  }
}

} // namespace

void neonGemm(const GemmArgs &g, int64_t m0, int64_t m1, int64_t n0,
              int64_t n1) {
  gemmRange<NeonGemm>(g, m0, m1, n0, n1);
}

const KernelTable &neonKernels() {
  static const KernelTable table = {Isa::Neon, NeonGemm::NR, NeonGemm::MR,
                                    neonGemm,  kTileRows,    ternaryMatmul};
  return table;
}

} // namespace bitloom::uk

//===- LinearCrossEntropy.cpp - LM head + cross-entropy, row blocks -------===//
//
// bitloom_uk_linear_cross_entropy: for each block of rows, the logits come
// from the threaded GEMM into the caller's scratch, each row's softmax
// statistics and loss term are taken from it, and in training the block is
// overwritten by its gradient and multiplied back through the head by the
// same GEMM the unfused input gradient uses. The head is read twice per
// block; the logits are computed once and never leave the block.
//
//===----------------------------------------------------------------------===//
#include "ukernels/Internal.h"
#include "ukernels/ThreadPool.h"
#include "ukernels/Ukernels.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

using namespace bitloom::uk;

namespace {

// Below this many logits per block the row loop stays on the calling
// thread: waking the workers would cost more than it saves.
constexpr int64_t kMinParallelLogits = int64_t(1) << 15;

/// c[m, n] = x[m, k] · w[n, k]ᵀ.
void logitsGemm(const float *x, const float *w, float *c, int64_t m, int64_t n,
                int64_t k) {
  bitloom_uk_matmul_f32(x, w, c, m, n, k, 0, 1, 0);
}
void logitsGemm(const float *x, const uint16_t *w, float *c, int64_t m,
                int64_t n, int64_t k) {
  bitloom_uk_matmul_f32_bf16b(x, w, c, m, n, k, 0, 1, 0);
}

/// dx[m, k] = d[m, v] · w[v, k].
void inputGradGemm(const float *d, const float *w, float *dx, int64_t m,
                   int64_t v, int64_t k) {
  bitloom_uk_matmul_f32(d, w, dx, m, k, v, 0, 0, 0);
}
void inputGradGemm(const float *d, const uint16_t *w, float *dx, int64_t m,
                   int64_t v, int64_t k) {
  bitloom_uk_matmul_f32_bf16b(d, w, dx, m, k, v, 0, 0, 0);
}

/// exp(x) for x <= 0 (a logit minus its row's max) to within 1 ulp, in
/// arithmetic the compiler vectorizes (std::exp is a libm call per element,
/// which made the softmax cost a third of the GEMMs). Cephes' expf: x = n·ln2
/// + r, a degree-6 polynomial in r, 2ⁿ from the exponent bits; 0 below the
/// smallest normal result, NaN stays NaN.
__attribute__((always_inline)) inline float expNonPositive(float x) {
  const float log2e = 1.44269504088896341f, ln2Hi = 0.693359375f,
              ln2Lo = -2.12194440e-4f;
  // Adding 1.5·2²³ rounds to an integer, which the low mantissa bits hold.
  const float magic = 12582912.0f;
  float t = x * log2e + magic;
  float n = t - magic;
  int32_t bits;
  std::memcpy(&bits, &t, sizeof bits);
  int32_t scaleBits = (bits - 0x4B400000 + 127) << 23;
  float scale;
  std::memcpy(&scale, &scaleBits, sizeof scale);
  float r = x - n * ln2Hi;
  r = r - n * ln2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return x < -87.33654f ? 0.0f : p * scale;
}

/// The loss term -log_softmax(l)[label] of one masked-in row, with the
/// unfused path's numerics up to rounding (f32 max, f64 Σ exp, log of the
/// f32 sum). With `grad`, replaces the row by g · (softmax(l) - onehot).
__attribute__((always_inline)) inline double
rowLossBody(float *l, int64_t v, int32_t label, bool grad, float g) {
  float max = -std::numeric_limits<float>::infinity();
  bool nan = false;
#pragma omp simd reduction(max : max) reduction(| : nan)
  for (int64_t c = 0; c < v; ++c) {
    max = l[c] > max ? l[c] : max;
    nan |= l[c] != l[c];
  }
  // NaN-propagating, as the generated code's arith.maximumf.
  if (nan)
    max = std::numeric_limits<float>::quiet_NaN();
  // The loss clamps the label as the unfused lowering does; the gradient's
  // one-hot only matches a label inside the vocabulary.
  int64_t clamped = label < 0 ? 0 : label >= v ? v - 1 : label;
  float atLabel = l[clamped];
  double sum = 0;
  if (grad) {
    // exp(l - max) once, kept in place for the softmax below.
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < v; ++c) {
      float e = expNonPositive(l[c] - max);
      l[c] = e;
      sum += double(e);
    }
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < v; ++c)
      sum += double(expNonPositive(l[c] - max));
  }
  float logProb = (atLabel - max) - std::log(float(sum));
  if (grad) {
    float inv = float(1.0 / sum);
#pragma omp simd
    for (int64_t c = 0; c < v; ++c)
      l[c] = g * (l[c] * inv);
    if (label >= 0 && label < v)
      l[label] -= g;
  }
  return -double(logProb);
}

// One copy per instruction set, chosen with the GEMMs' (activeIsa), so the
// vector exp is as wide as the machine allows and tests reach every copy.
// The body is inlined into each: no out-of-line copy compiled for one ISA
// can be shared with another.
using RowLossFn = double (*)(float *, int64_t, int32_t, bool, float);

double rowLossBaseline(float *l, int64_t v, int32_t label, bool grad, float g) {
  return rowLossBody(l, v, label, grad, g);
}
#ifdef BITLOOM_UK_X86_KERNELS
__attribute__((target("avx2,fma"))) double
rowLossAvx2(float *l, int64_t v, int32_t label, bool grad, float g) {
  return rowLossBody(l, v, label, grad, g);
}
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl"))) double
rowLossAvx512(float *l, int64_t v, int32_t label, bool grad, float g) {
  return rowLossBody(l, v, label, grad, g);
}
#endif

RowLossFn rowLossFor(Isa isa) {
  switch (isa) {
#ifdef BITLOOM_UK_X86_KERNELS
  case Isa::Avx2:
    return rowLossAvx2;
  case Isa::Avx512:
    return rowLossAvx512;
#endif
  default:
    return rowLossBaseline;
  }
}

template <typename W>
void linearCrossEntropy(const float *x, const W *w, const int32_t *labels,
                        const float *mask, const float *lossGrad, float *loss,
                        float *xGrad, float *scratch, int64_t n, int64_t v,
                        int64_t k, int64_t blockRows) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i)
    count += mask[i] != 0.0f;
  bool training = xGrad != nullptr;
  if (n <= 0 || v <= 0 || (count == 0 && !training)) {
    *loss = 0.0f;
    if (training && n > 0)
      std::memset(xGrad, 0, size_t(n * k) * sizeof(float));
    return;
  }
  // dloss / count in f32, as the unfused gradient computes it.
  float g = training && count > 0 ? *lossGrad / float(double(count)) : 0.0f;
  if (blockRows <= 0 || blockRows > n)
    blockRows = n;
  double *terms = static_cast<double *>(
      bitloom::uk::scratch(kScratchRows, size_t(blockRows) * sizeof(double)));
  ThreadPool &pool = ThreadPool::global();
  RowLossFn rowLoss = rowLossFor(activeIsa());
  double total = 0;
  for (int64_t r0 = 0; r0 < n; r0 += blockRows) {
    int64_t rows = n - r0 < blockRows ? n - r0 : blockRows;
    bool anyIn = false;
    for (int64_t i = r0; i < r0 + rows && !anyIn; ++i)
      anyIn = mask[i] != 0.0f;
    // A block without targets has loss 0 and gradient 0: skip its products.
    if (!anyIn) {
      if (training)
        std::memset(xGrad + r0 * k, 0, size_t(rows * k) * sizeof(float));
      continue;
    }
    logitsGemm(x + r0 * k, w, scratch, rows, v, k);
    auto rowRange = [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        float *l = scratch + r * v;
        if (mask[r0 + r] == 0.0f) {
          terms[r] = 0;
          if (training)
            std::memset(l, 0, size_t(v) * sizeof(float));
          continue;
        }
        terms[r] = rowLoss(l, v, labels[r0 + r], training, g);
      }
    };
    if (pool.threads() == 1 || rows * v < kMinParallelLogits)
      rowRange(0, rows);
    else
      pool.parallelFor(rows, rowRange);
    // In row order, whatever the thread count.
    for (int64_t r = 0; r < rows; ++r)
      total += terms[r];
    if (training)
      inputGradGemm(scratch, w, xGrad + r0 * k, rows, v, k);
  }
  *loss = count == 0 ? 0.0f : float(total / double(count));
}

} // namespace

extern "C" {

void bitloom_uk_linear_cross_entropy(const float *x, const float *w,
                                     const int32_t *labels, const float *mask,
                                     const float *lossGrad, float *loss,
                                     float *xGrad, float *scratch, int64_t n,
                                     int64_t v, int64_t k, int64_t blockRows) {
  linearCrossEntropy(x, w, labels, mask, lossGrad, loss, xGrad, scratch, n, v,
                     k, blockRows);
}

void bitloom_uk_linear_cross_entropy_bf16w(
    const float *x, const uint16_t *w, const int32_t *labels, const float *mask,
    const float *lossGrad, float *loss, float *xGrad, float *scratch, int64_t n,
    int64_t v, int64_t k, int64_t blockRows) {
  linearCrossEntropy(x, w, labels, mask, lossGrad, loss, xGrad, scratch, n, v,
                     k, blockRows);
}
}

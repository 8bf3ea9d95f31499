// Reference kernels for bitloom's reference executor and for gradient tests.
//
// Plain loops, no threads, no SIMD, no MLIR/LLVM: these kernels define what
// the compiled kernels must compute. They mirror Hugging Face transformers'
// BitNet (AutoBitLinear online quantization, BitNetRMSNorm, rotary embedding,
// eager attention), PEFT's LoRA and torch.optim's single-tensor AdamW / SGD,
// down to the order of the float operations, so that a float executor built
// on them reproduces PyTorch's numbers to ~1e-6.
//
// Conventions:
//  * T is the tensor element type: float for the executor, double for the
//    finite-difference tests.
//  * Tensors are row-major and contiguous; shapes are explicit int64_t
//    arguments; N = batch * tokens rows where relevant.
//  * Argument order: inputs, shape, scalar attributes, outputs.
//  * Outputs are overwritten unless the kernel's name ends in "Accumulate".
//  * Scalar hyper-parameters are double and are converted to T exactly where
//    PyTorch converts a Python float to the tensor's dtype.
//  * Reductions (dot products, sums) accumulate in double and round to T once:
//    that is within PyTorch's own float rounding of the exact value, and makes
//    these kernels independent of summation order.
//  * Rounding is round-half-to-even (torch.round): std::nearbyint under the
//    default FE_TONEAREST mode, never std::round.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitloom::reference {

namespace detail {

using Acc = double;

inline void checkNonNegative(int64_t v, const char *what) {
  if (v < 0)
    throw std::invalid_argument(std::string("bitloom::reference: negative ") +
                                what + ": " + std::to_string(v));
}

template <typename... Dims> void checkDims(const char *kernel, Dims... dims) {
  for (int64_t d : {static_cast<int64_t>(dims)...})
    if (d < 0)
      throw std::invalid_argument(std::string("bitloom::reference::") + kernel +
                                  ": negative dimension " + std::to_string(d));
}

inline void checkIndex(int64_t id, int64_t limit, const char *kernel,
                       const char *what) {
  if (id < 0 || id >= limit)
    throw std::out_of_range(std::string("bitloom::reference::") + kernel +
                            ": " + what + " " + std::to_string(id) +
                            " out of range [0, " + std::to_string(limit) + ")");
}

// torch.round: round half to even.
template <typename T> T roundHalfEven(T v) { return std::nearbyint(v); }

template <typename T> T clampTo(T v, T lo, T hi) {
  return std::min(std::max(v, lo), hi);
}

// HF's default rotary inv_freq, evaluated in T the way
// `1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))` evaluates in
// float32: exponent = float(2i) / dim, pow in T, then reciprocal.
template <typename T> T ropeInvFreq(int64_t i, int64_t headDim, double theta) {
  T exponent = static_cast<T>(2 * i) / static_cast<T>(headDim);
  T power = std::pow(static_cast<T>(theta), exponent);
  return T(1) / power;
}

} // namespace detail

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

// out[n, :] = table[tokens[n], :]
template <typename T>
void embedding(const T *table, const int32_t *tokens, int64_t V, int64_t H,
               int64_t N, T *out) {
  detail::checkDims("embedding", V, H, N);
  for (int64_t n = 0; n < N; ++n) {
    detail::checkIndex(tokens[n], V, "embedding", "token id");
    const T *row = table + static_cast<int64_t>(tokens[n]) * H;
    for (int64_t h = 0; h < H; ++h)
      out[n * H + h] = row[h];
  }
}

// dtable[tokens[n], :] += dy[n, :]
template <typename T>
void embeddingGradAccumulate(const T *dy, const int32_t *tokens, int64_t V,
                             int64_t H, int64_t N, T *dtable) {
  detail::checkDims("embeddingGradAccumulate", V, H, N);
  for (int64_t n = 0; n < N; ++n)
    detail::checkIndex(tokens[n], V, "embeddingGradAccumulate", "token id");
  for (int64_t n = 0; n < N; ++n) {
    T *row = dtable + static_cast<int64_t>(tokens[n]) * H;
    for (int64_t h = 0; h < H; ++h)
      row[h] += dy[n * H + h];
  }
}

//===----------------------------------------------------------------------===//
// RMSNorm (HF BitNetRMSNorm)
//===----------------------------------------------------------------------===//

namespace detail {
// rsqrt(mean(x^2) + eps) of one row, in HF's order: x.pow(2) in T, mean =
// sum / C, + eps, rsqrt as 1 / sqrt.
template <typename T> T rmsInvRow(const T *x, int64_t C, double eps) {
  Acc sum = 0;
  for (int64_t c = 0; c < C; ++c)
    sum += static_cast<Acc>(x[c] * x[c]);
  T variance = static_cast<T>(sum) / static_cast<T>(C);
  return T(1) / std::sqrt(variance + static_cast<T>(eps));
}
} // namespace detail

// y = w * (x * rsqrt(mean(x^2) + eps)), per row of x[N, C].
template <typename T>
void rmsNorm(const T *x, const T *w, int64_t N, int64_t C, double eps, T *y) {
  detail::checkDims("rmsNorm", N, C);
  for (int64_t n = 0; n < N; ++n) {
    const T *xr = x + n * C;
    T r = detail::rmsInvRow(xr, C, eps);
    for (int64_t c = 0; c < C; ++c)
      y[n * C + c] = w[c] * (xr[c] * r);
  }
}

// dx = r * (w*dy - xhat * mean(w*dy*xhat)), xhat = x*r, r = rsqrt(var+eps).
template <typename T>
void rmsNormGradInput(const T *dy, const T *x, const T *w, int64_t N, int64_t C,
                      double eps, T *dx) {
  detail::checkDims("rmsNormGradInput", N, C);
  for (int64_t n = 0; n < N; ++n) {
    const T *xr = x + n * C;
    const T *dyr = dy + n * C;
    T r = detail::rmsInvRow(xr, C, eps);
    detail::Acc dot = 0;
    for (int64_t c = 0; c < C; ++c)
      dot += static_cast<detail::Acc>(w[c] * dyr[c]) *
             static_cast<detail::Acc>(xr[c] * r);
    T meanDot = static_cast<T>(dot / static_cast<detail::Acc>(C));
    for (int64_t c = 0; c < C; ++c)
      dx[n * C + c] = r * (w[c] * dyr[c] - (xr[c] * r) * meanDot);
  }
}

// dw[c] = sum_n dy[n, c] * xhat[n, c]
template <typename T>
void rmsNormGradWeight(const T *dy, const T *x, int64_t N, int64_t C,
                       double eps, T *dw) {
  detail::checkDims("rmsNormGradWeight", N, C);
  std::vector<detail::Acc> acc(static_cast<size_t>(C), 0);
  for (int64_t n = 0; n < N; ++n) {
    const T *xr = x + n * C;
    T r = detail::rmsInvRow(xr, C, eps);
    for (int64_t c = 0; c < C; ++c)
      acc[c] += static_cast<detail::Acc>(dy[n * C + c]) *
                static_cast<detail::Acc>(xr[c] * r);
  }
  for (int64_t c = 0; c < C; ++c)
    dw[c] = static_cast<T>(acc[c]);
}

//===----------------------------------------------------------------------===//
// BitNet quantizers (HF WeightQuant / ActQuant forward; STE backward)
//===----------------------------------------------------------------------===//

// HF WeightQuant.forward on W[O, I] (per-tensor):
//   s = 1.0 / W.abs().mean().clamp_(min=1e-5)
//   out = (W * s).round().clamp(-1, 1) / s
// i.e. the dequantized ternary weights. `1.0 / t` is Tensor.__rtruediv__,
// which PyTorch evaluates as t.reciprocal() * 1.0: a plain reciprocal.
// quantize=false copies W (identity), so finite differences see a smooth
// function; the backward is the identity either way (straight-through).
template <typename T>
void quantizeWeightOnline(const T *W, int64_t O, int64_t I, bool quantize,
                          T *out) {
  detail::checkDims("quantizeWeightOnline", O, I);
  const int64_t n = O * I;
  if (!quantize) {
    std::copy(W, W + n, out);
    return;
  }
  detail::Acc sum = 0;
  for (int64_t e = 0; e < n; ++e)
    sum += static_cast<detail::Acc>(std::abs(W[e]));
  // torch's CPU mean is sum(...) / numel, both in T.
  T mean = n > 0 ? static_cast<T>(sum) / static_cast<T>(n) : T(0);
  mean = std::max(mean, static_cast<T>(1e-5));
  T s = T(1) / mean;
  for (int64_t e = 0; e < n; ++e)
    out[e] = detail::clampTo(detail::roundHalfEven(W[e] * s), T(-1), T(1)) / s;
}

// HF ActQuant.forward per row (token) of x[N, I]:
//   s = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
//   out = (x * s).round().clamp(-128, 127) / s
// `127 / t` is Tensor.__rtruediv__ = t.reciprocal() * 127: two roundings,
// not one division (they differ in ~25% of float inputs, and the difference
// moves int8 ties). quantize=false copies x (identity, see above).
template <typename T>
void quantizeActivations(const T *x, int64_t N, int64_t I, bool quantize,
                         T *out) {
  detail::checkDims("quantizeActivations", N, I);
  if (!quantize) {
    std::copy(x, x + N * I, out);
    return;
  }
  for (int64_t n = 0; n < N; ++n) {
    const T *xr = x + n * I;
    T maxAbs = 0;
    for (int64_t i = 0; i < I; ++i)
      maxAbs = std::max(maxAbs, std::abs(xr[i]));
    maxAbs = std::max(maxAbs, static_cast<T>(1e-5));
    T s = (T(1) / maxAbs) * T(127);
    for (int64_t i = 0; i < I; ++i)
      out[n * I + i] =
          detail::clampTo(detail::roundHalfEven(xr[i] * s), T(-128), T(127)) /
          s;
  }
}

//===----------------------------------------------------------------------===//
// BitLinear (on already-quantized operands) with an optional output scale
//===----------------------------------------------------------------------===//

// y[N, O] = (xq[N, I] . wq[O, I]^T) * outScale   (F.linear, then * scale as
// the offline AutoBitLinear multiplies by weight_scale; outScale = 1: none).
template <typename T>
void bitlinear(const T *xq, const T *wq, int64_t N, int64_t I, int64_t O, T *y,
               double outScale = 1.0) {
  detail::checkDims("bitlinear", N, I, O);
  const T s = static_cast<T>(outScale);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      detail::Acc acc = 0;
      for (int64_t i = 0; i < I; ++i)
        acc += static_cast<detail::Acc>(xq[n * I + i]) *
               static_cast<detail::Acc>(wq[o * I + i]);
      T v = static_cast<T>(acc);
      y[n * O + o] = outScale == 1.0 ? v : v * s;
    }
}

// dx[N, I] = (dy * outScale) . wq. Straight-through: the gradient w.r.t. the
// unquantized input x is this same value (ActQuant.backward is the identity),
// and it uses the dequantized (ternary * scale) weight.
template <typename T>
void bitlinearGradInput(const T *dy, const T *wq, int64_t N, int64_t I,
                        int64_t O, T *dx, double outScale = 1.0) {
  detail::checkDims("bitlinearGradInput", N, I, O);
  const T s = static_cast<T>(outScale);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < I; ++i) {
      detail::Acc acc = 0;
      for (int64_t o = 0; o < O; ++o) {
        T g = outScale == 1.0 ? dy[n * O + o] : dy[n * O + o] * s;
        acc += static_cast<detail::Acc>(g) *
               static_cast<detail::Acc>(wq[o * I + i]);
      }
      dx[n * I + i] = static_cast<T>(acc);
    }
}

// dW[O, I] = (dy * outScale)^T . xq. Straight-through: HF's
// `w + (wq - w).detach()` makes this the gradient of the master weight W.
template <typename T>
void bitlinearGradWeight(const T *dy, const T *xq, int64_t N, int64_t I,
                         int64_t O, T *dW, double outScale = 1.0) {
  detail::checkDims("bitlinearGradWeight", N, I, O);
  const T s = static_cast<T>(outScale);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      detail::Acc acc = 0;
      for (int64_t n = 0; n < N; ++n) {
        T g = outScale == 1.0 ? dy[n * O + o] : dy[n * O + o] * s;
        acc += static_cast<detail::Acc>(g) *
               static_cast<detail::Acc>(xq[n * I + i]);
      }
      dW[o * I + i] = static_cast<T>(acc);
    }
}

//===----------------------------------------------------------------------===//
// LoRA (PEFT: result + lora_B(lora_A(x)) * scaling)
//===----------------------------------------------------------------------===//

namespace detail {
// u[r] = A[r, I] . x[I]   (one row of x . A^T, rounded to T like a tensor)
template <typename T>
void loraDown(const T *xr, const T *A, int64_t I, int64_t R, T *u) {
  for (int64_t j = 0; j < R; ++j) {
    Acc acc = 0;
    for (int64_t i = 0; i < I; ++i)
      acc += static_cast<Acc>(xr[i]) * static_cast<Acc>(A[j * I + i]);
    u[j] = static_cast<T>(acc);
  }
}
} // namespace detail

// y[N, O] = base + ((x . A^T) . B^T) * scaling; A: [R, I], B: [O, R].
// y may alias base (each element reads base before writing it).
template <typename T>
void lora(const T *base, const T *x, const T *A, const T *B, int64_t N,
          int64_t I, int64_t O, int64_t R, double scaling, T *y) {
  detail::checkDims("lora", N, I, O, R);
  const T sc = static_cast<T>(scaling);
  std::vector<T> u(static_cast<size_t>(R));
  for (int64_t n = 0; n < N; ++n) {
    detail::loraDown(x + n * I, A, I, R, u.data());
    for (int64_t o = 0; o < O; ++o) {
      detail::Acc acc = 0;
      for (int64_t j = 0; j < R; ++j)
        acc += static_cast<detail::Acc>(u[j]) *
               static_cast<detail::Acc>(B[o * R + j]);
      T v = static_cast<T>(acc);
      y[n * O + o] = base[n * O + o] + v * sc;
    }
  }
}

// dx[N, I] += ((dy * scaling) . B) . A   (autograd's order for the LoRA path)
template <typename T>
void loraGradInputAccumulate(const T *dy, const T *A, const T *B, int64_t N,
                             int64_t I, int64_t O, int64_t R, double scaling,
                             T *dx) {
  detail::checkDims("loraGradInputAccumulate", N, I, O, R);
  const T sc = static_cast<T>(scaling);
  std::vector<T> du(static_cast<size_t>(R));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < R; ++j) {
      detail::Acc acc = 0;
      for (int64_t o = 0; o < O; ++o)
        acc += static_cast<detail::Acc>(dy[n * O + o] * sc) *
               static_cast<detail::Acc>(B[o * R + j]);
      du[j] = static_cast<T>(acc);
    }
    for (int64_t i = 0; i < I; ++i) {
      detail::Acc acc = 0;
      for (int64_t j = 0; j < R; ++j)
        acc += static_cast<detail::Acc>(du[j]) *
               static_cast<detail::Acc>(A[j * I + i]);
      dx[n * I + i] += static_cast<T>(acc);
    }
  }
}

// dB[O, R] = (dy * scaling)^T . (x . A^T);  dA[R, I] = ((dy * scaling) . B)^T .
// x
template <typename T>
void loraGradParams(const T *dy, const T *x, const T *A, const T *B, int64_t N,
                    int64_t I, int64_t O, int64_t R, double scaling, T *dA,
                    T *dB) {
  detail::checkDims("loraGradParams", N, I, O, R);
  const T sc = static_cast<T>(scaling);
  std::vector<T> u(static_cast<size_t>(N * R)), du(static_cast<size_t>(N * R));
  for (int64_t n = 0; n < N; ++n) {
    detail::loraDown(x + n * I, A, I, R, u.data() + n * R);
    for (int64_t j = 0; j < R; ++j) {
      detail::Acc acc = 0;
      for (int64_t o = 0; o < O; ++o)
        acc += static_cast<detail::Acc>(dy[n * O + o] * sc) *
               static_cast<detail::Acc>(B[o * R + j]);
      du[n * R + j] = static_cast<T>(acc);
    }
  }
  for (int64_t o = 0; o < O; ++o)
    for (int64_t j = 0; j < R; ++j) {
      detail::Acc acc = 0;
      for (int64_t n = 0; n < N; ++n)
        acc += static_cast<detail::Acc>(dy[n * O + o] * sc) *
               static_cast<detail::Acc>(u[n * R + j]);
      dB[o * R + j] = static_cast<T>(acc);
    }
  for (int64_t j = 0; j < R; ++j)
    for (int64_t i = 0; i < I; ++i) {
      detail::Acc acc = 0;
      for (int64_t n = 0; n < N; ++n)
        acc += static_cast<detail::Acc>(du[n * R + j]) *
               static_cast<detail::Acc>(x[n * I + i]);
      dA[j * I + i] = static_cast<T>(acc);
    }
}

//===----------------------------------------------------------------------===//
// Rotary position embedding (rotate-half layout)
//===----------------------------------------------------------------------===//

// x, y: [batch, seqLen, heads * headDim]; positions: [batch, seqLen].
// y = x * cos + rotate_half(x) * sin with cos/sin of position * inv_freq,
// computed as HF does in float32. inverse=true rotates by -angle, which is
// the adjoint (rotations are orthogonal): the gradient of rope is
// rope(dy, inverse=true). y may alias x.
template <typename T>
void rope(const T *x, const int32_t *positions, int64_t batch, int64_t seqLen,
          int64_t heads, int64_t headDim, double theta, bool inverse, T *y) {
  detail::checkDims("rope", batch, seqLen, heads, headDim);
  if (headDim % 2 != 0)
    throw std::invalid_argument("bitloom::reference::rope: odd head dim " +
                                std::to_string(headDim));
  const int64_t half = headDim / 2;
  std::vector<T> invFreq(static_cast<size_t>(half)), cosv(invFreq.size()),
      sinv(invFreq.size());
  for (int64_t i = 0; i < half; ++i)
    invFreq[i] = detail::ropeInvFreq<T>(i, headDim, theta);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seqLen; ++t) {
      const T pos = static_cast<T>(positions[b * seqLen + t]);
      for (int64_t i = 0; i < half; ++i) {
        // freqs = inv_freq @ position: one product; emb = cat(freqs, freqs),
        // so dims i and i + half share the angle.
        T angle = invFreq[i] * pos;
        cosv[i] = std::cos(angle);
        sinv[i] = inverse ? -std::sin(angle) : std::sin(angle);
      }
      const int64_t rowOff = (b * seqLen + t) * heads * headDim;
      for (int64_t h = 0; h < heads; ++h) {
        const T *xh = x + rowOff + h * headDim;
        T *yh = y + rowOff + h * headDim;
        for (int64_t i = 0; i < half; ++i) {
          T x1 = xh[i], x2 = xh[i + half];
          // rotate_half(x) = [-x2, x1]
          yh[i] = x1 * cosv[i] + (-x2) * sinv[i];
          yh[i + half] = x2 * cosv[i] + x1 * sinv[i];
        }
      }
    }
}

//===----------------------------------------------------------------------===//
// Causal grouped-query attention (HF eager_attention_forward)
//===----------------------------------------------------------------------===//

namespace detail {
inline void checkAttention(const char *kernel, int64_t batch, int64_t qLen,
                           int64_t kvLen, int64_t qHeads, int64_t kvHeads,
                           int64_t headDim, bool causal) {
  checkDims(kernel, batch, qLen, kvLen, qHeads, kvHeads, headDim);
  if (kvHeads == 0 || qHeads % kvHeads != 0)
    throw std::invalid_argument(std::string("bitloom::reference::") + kernel +
                                ": query heads " + std::to_string(qHeads) +
                                " not a multiple of kv heads " +
                                std::to_string(kvHeads));
  if (causal && kvLen < qLen)
    throw std::invalid_argument(std::string("bitloom::reference::") + kernel +
                                ": causal attention needs kvLen >= qLen");
}

// Softmax row of query (b, h, t): p[s] for s < count, where count is the
// number of visible keys (t + 1 + kvLen - qLen when causal). HF order:
// score = (q . k) * scale; softmax in T with max subtraction, then
// exp * (1 / sum) as PyTorch's CPU softmax does.
template <typename T>
int64_t attentionProbs(const T *q, const T *k, int64_t b, int64_t t, int64_t h,
                       int64_t qLen, int64_t kvLen, int64_t qHeads,
                       int64_t kvHeads, int64_t headDim, double scale,
                       bool causal, std::vector<T> &p, int64_t qRow = -1) {
  const int64_t group = qHeads / kvHeads;
  const int64_t kvh = h / group;
  const int64_t count = causal ? t + 1 + (kvLen - qLen) : kvLen;
  // qRow: the query's row when it differs from its causal index t (cached
  // attention, where t is the absolute position).
  const T *qv = q + ((b * qLen + (qRow < 0 ? t : qRow)) * qHeads + h) * headDim;
  p.assign(static_cast<size_t>(count), T(0));
  T maxScore = -std::numeric_limits<T>::infinity();
  for (int64_t s = 0; s < count; ++s) {
    const T *kv = k + ((b * kvLen + s) * kvHeads + kvh) * headDim;
    Acc acc = 0;
    for (int64_t d = 0; d < headDim; ++d)
      acc += static_cast<Acc>(qv[d]) * static_cast<Acc>(kv[d]);
    p[s] = static_cast<T>(acc) * static_cast<T>(scale);
    maxScore = std::max(maxScore, p[s]);
  }
  Acc sum = 0;
  for (int64_t s = 0; s < count; ++s) {
    p[s] = std::exp(p[s] - maxScore);
    sum += static_cast<Acc>(p[s]);
  }
  const T inv = T(1) / static_cast<T>(sum);
  for (int64_t s = 0; s < count; ++s)
    p[s] = p[s] * inv;
  return count;
}
} // namespace detail

// q, out: [batch, qLen, qHeads * headDim]; k, v: [batch, kvLen, kvHeads *
// headDim]. kv head j serves query heads j*g .. j*g+g-1, g = qHeads/kvHeads.
// causal: query t sees keys s <= t + (kvLen - qLen) (a KV-cache prefix).
template <typename T>
void attention(const T *q, const T *k, const T *v, int64_t batch, int64_t qLen,
               int64_t kvLen, int64_t qHeads, int64_t kvHeads, int64_t headDim,
               double scale, bool causal, T *out) {
  detail::checkAttention("attention", batch, qLen, kvLen, qHeads, kvHeads,
                         headDim, causal);
  const int64_t group = qHeads / kvHeads;
  std::vector<T> p;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < qLen; ++t)
      for (int64_t h = 0; h < qHeads; ++h) {
        const int64_t count =
            detail::attentionProbs(q, k, b, t, h, qLen, kvLen, qHeads, kvHeads,
                                   headDim, scale, causal, p);
        const int64_t kvh = h / group;
        T *o = out + ((b * qLen + t) * qHeads + h) * headDim;
        for (int64_t d = 0; d < headDim; ++d) {
          detail::Acc acc = 0;
          for (int64_t s = 0; s < count; ++s)
            acc += static_cast<detail::Acc>(p[s]) *
                   static_cast<detail::Acc>(
                       v[((b * kvLen + s) * kvHeads + kvh) * headDim + d]);
          o[d] = static_cast<T>(acc);
        }
      }
}

// Attention for generation over explicit KV caches ([batch, maxLen,
// kvHeads * headDim]): writes k/v of each token into the caches at its
// position, then each query attends to cache entries 0 .. its position, with
// the same arithmetic as attention() (so a cached decode equals recomputing
// the whole prefix).
template <typename T>
void cachedAttention(const T *q, const T *k, const T *v, T *kCache, T *vCache,
                     const int32_t *positions, int64_t batch, int64_t qLen,
                     int64_t maxLen, int64_t qHeads, int64_t kvHeads,
                     int64_t headDim, double scale, T *out) {
  detail::checkAttention("cachedAttention", batch, qLen, maxLen, qHeads,
                         kvHeads, headDim, false);
  const int64_t kvWidth = kvHeads * headDim;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < qLen; ++t) {
      const int64_t pos = positions[b * qLen + t];
      detail::checkIndex(pos, maxLen, "cachedAttention", "position");
      std::copy(k + (b * qLen + t) * kvWidth, k + (b * qLen + t + 1) * kvWidth,
                kCache + (b * maxLen + pos) * kvWidth);
      std::copy(v + (b * qLen + t) * kvWidth, v + (b * qLen + t + 1) * kvWidth,
                vCache + (b * maxLen + pos) * kvWidth);
    }
  const int64_t group = qHeads / kvHeads;
  std::vector<T> p;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < qLen; ++t)
      for (int64_t h = 0; h < qHeads; ++h) {
        // Queries see the cache as a causal prefix ending at their position.
        const int64_t count = positions[b * qLen + t] + 1;
        const T *cacheBatch = kCache + b * maxLen * kvWidth;
        detail::attentionProbs(q + b * qLen * qHeads * headDim, cacheBatch,
                               /*b=*/0, /*t=*/count - 1, h, /*qLen=*/count,
                               /*kvLen=*/count, qHeads, kvHeads, headDim, scale,
                               true, p, /*qRow=*/t);
        const int64_t kvh = h / group;
        T *o = out + ((b * qLen + t) * qHeads + h) * headDim;
        for (int64_t d = 0; d < headDim; ++d) {
          detail::Acc acc = 0;
          for (int64_t s = 0; s < count; ++s)
            acc +=
                static_cast<detail::Acc>(p[s]) *
                static_cast<detail::Acc>(
                    vCache[((b * maxLen + s) * kvHeads + kvh) * headDim + d]);
          o[d] = static_cast<T>(acc);
        }
      }
}

// Backward of attention, recomputing the softmax:
//   dP = dout . V^T;  dS = P * (dP - rowsum(P * dP));
//   dq = scale * dS . K;  dk = scale * dS^T . Q;  dv = P^T . dout,
// dk and dv summed over the query heads of each kv head's group.
// dq, dk, dv are overwritten.
template <typename T>
void attentionGrad(const T *dout, const T *q, const T *k, const T *v,
                   int64_t batch, int64_t qLen, int64_t kvLen, int64_t qHeads,
                   int64_t kvHeads, int64_t headDim, double scale, bool causal,
                   T *dq, T *dk, T *dv) {
  detail::checkAttention("attentionGrad", batch, qLen, kvLen, qHeads, kvHeads,
                         headDim, causal);
  const int64_t group = qHeads / kvHeads;
  const size_t kvSize = static_cast<size_t>(batch * kvLen * kvHeads * headDim);
  std::vector<detail::Acc> dkAcc(kvSize, 0), dvAcc(kvSize, 0);
  std::vector<T> p;
  std::vector<detail::Acc> ds;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < qLen; ++t)
      for (int64_t h = 0; h < qHeads; ++h) {
        const int64_t count =
            detail::attentionProbs(q, k, b, t, h, qLen, kvLen, qHeads, kvHeads,
                                   headDim, scale, causal, p);
        const int64_t kvh = h / group;
        const int64_t qOff = ((b * qLen + t) * qHeads + h) * headDim;
        const T *g = dout + qOff;
        const T *qv = q + qOff;
        ds.assign(static_cast<size_t>(count), 0);
        detail::Acc rowDot = 0;
        for (int64_t s = 0; s < count; ++s) {
          const int64_t kvOff = ((b * kvLen + s) * kvHeads + kvh) * headDim;
          detail::Acc dp = 0;
          for (int64_t d = 0; d < headDim; ++d)
            dp += static_cast<detail::Acc>(g[d]) *
                  static_cast<detail::Acc>(v[kvOff + d]);
          ds[s] = dp;
          rowDot += static_cast<detail::Acc>(p[s]) * dp;
          for (int64_t d = 0; d < headDim; ++d)
            dvAcc[kvOff + d] +=
                static_cast<detail::Acc>(p[s]) * static_cast<detail::Acc>(g[d]);
        }
        for (int64_t s = 0; s < count; ++s)
          ds[s] = static_cast<detail::Acc>(p[s]) * (ds[s] - rowDot) * scale;
        for (int64_t d = 0; d < headDim; ++d) {
          detail::Acc acc = 0;
          for (int64_t s = 0; s < count; ++s)
            acc +=
                ds[s] * static_cast<detail::Acc>(
                            k[((b * kvLen + s) * kvHeads + kvh) * headDim + d]);
          dq[qOff + d] = static_cast<T>(acc);
        }
        for (int64_t s = 0; s < count; ++s) {
          const int64_t kvOff = ((b * kvLen + s) * kvHeads + kvh) * headDim;
          for (int64_t d = 0; d < headDim; ++d)
            dkAcc[kvOff + d] += ds[s] * static_cast<detail::Acc>(qv[d]);
        }
      }
  for (size_t e = 0; e < kvSize; ++e) {
    dk[e] = static_cast<T>(dkAcc[e]);
    dv[e] = static_cast<T>(dvAcc[e]);
  }
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

// y = relu(x)^2 (HF ReLUSquaredActivation: square(relu(x))).
template <typename T> void relu2(const T *x, int64_t n, T *y) {
  detail::checkDims("relu2", n);
  for (int64_t e = 0; e < n; ++e) {
    T r = std::max(x[e], T(0));
    y[e] = r * r;
  }
}

// dx = dy * (2 * relu(x))
template <typename T>
void relu2Grad(const T *dy, const T *x, int64_t n, T *dx) {
  detail::checkDims("relu2Grad", n);
  for (int64_t e = 0; e < n; ++e) {
    T r = std::max(x[e], T(0));
    dx[e] = dy[e] * (T(2) * r);
  }
}

template <typename T> void mul(const T *a, const T *b, int64_t n, T *y) {
  detail::checkDims("mul", n);
  for (int64_t e = 0; e < n; ++e)
    y[e] = a[e] * b[e];
}

template <typename T> void add(const T *a, const T *b, int64_t n, T *y) {
  detail::checkDims("add", n);
  for (int64_t e = 0; e < n; ++e)
    y[e] = a[e] + b[e];
}

//===----------------------------------------------------------------------===//
// Dense matmul (tied lm_head): y = x . W^T
//===----------------------------------------------------------------------===//

// y[N, M] = x[N, K] . W[M, K]^T
template <typename T>
void matmul(const T *x, const T *W, int64_t N, int64_t K, int64_t M, T *y) {
  detail::checkDims("matmul", N, K, M);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) {
      detail::Acc acc = 0;
      for (int64_t kk = 0; kk < K; ++kk)
        acc += static_cast<detail::Acc>(x[n * K + kk]) *
               static_cast<detail::Acc>(W[m * K + kk]);
      y[n * M + m] = static_cast<T>(acc);
    }
}

// dx[N, K] = dy[N, M] . W[M, K]
template <typename T>
void matmulGradInput(const T *dy, const T *W, int64_t N, int64_t K, int64_t M,
                     T *dx) {
  detail::checkDims("matmulGradInput", N, K, M);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t kk = 0; kk < K; ++kk) {
      detail::Acc acc = 0;
      for (int64_t m = 0; m < M; ++m)
        acc += static_cast<detail::Acc>(dy[n * M + m]) *
               static_cast<detail::Acc>(W[m * K + kk]);
      dx[n * K + kk] = static_cast<T>(acc);
    }
}

// dW[M, K] += dy[N, M]^T . x[N, K]
template <typename T>
void matmulGradWeightAccumulate(const T *dy, const T *x, int64_t N, int64_t K,
                                int64_t M, T *dW) {
  detail::checkDims("matmulGradWeightAccumulate", N, K, M);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t kk = 0; kk < K; ++kk) {
      detail::Acc acc = 0;
      for (int64_t n = 0; n < N; ++n)
        acc += static_cast<detail::Acc>(dy[n * M + m]) *
               static_cast<detail::Acc>(x[n * K + kk]);
      dW[m * K + kk] += static_cast<T>(acc);
    }
}

//===----------------------------------------------------------------------===//
// Masked cross-entropy (causal-LM loss)
//===----------------------------------------------------------------------===//

namespace detail {
// max and log(sum(exp(l - max))) of one row, as torch's log_softmax.
template <typename T>
void logSumExpParts(const T *l, int64_t V, T &maxLogit, T &logSum) {
  maxLogit = -std::numeric_limits<T>::infinity();
  for (int64_t c = 0; c < V; ++c)
    maxLogit = std::max(maxLogit, l[c]);
  Acc sum = 0;
  for (int64_t c = 0; c < V; ++c)
    sum += static_cast<Acc>(std::exp(l[c] - maxLogit));
  logSum = std::log(static_cast<T>(sum));
}
} // namespace detail

// Mean over rows with mask != 0 of (logsumexp(logits[n]) - logits[n,
// labels[n]]); 0 when no row is masked in (count = 0). Labels of masked-out
// rows are ignored (may be -100); a masked-in label out of [0, V) throws.
// *count (if non-null) receives the number of masked-in rows.
template <typename T>
T crossEntropy(const T *logits, const int32_t *labels, const T *mask, int64_t N,
               int64_t V, int64_t *count = nullptr) {
  detail::checkDims("crossEntropy", N, V);
  detail::Acc total = 0;
  int64_t rows = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (mask[n] == T(0))
      continue;
    detail::checkIndex(labels[n], V, "crossEntropy", "label");
    const T *l = logits + n * V;
    T maxLogit, logSum;
    detail::logSumExpParts(l, V, maxLogit, logSum);
    // -log_softmax[label] = -((l - max) - log(sum))
    T logProb = (l[labels[n]] - maxLogit) - logSum;
    total += -static_cast<detail::Acc>(logProb);
    ++rows;
  }
  if (count)
    *count = rows;
  return rows == 0 ? T(0)
                   : static_cast<T>(total / static_cast<detail::Acc>(rows));
}

// dlogits = dloss * (softmax(logits) - onehot(label)) * mask / count; rows
// with mask 0 (and everything when count = 0) get 0.
template <typename T>
void crossEntropyGrad(const T *logits, const int32_t *labels, const T *mask,
                      int64_t N, int64_t V, double dloss, T *dlogits) {
  detail::checkDims("crossEntropyGrad", N, V);
  int64_t rows = 0;
  for (int64_t n = 0; n < N; ++n)
    if (mask[n] != T(0)) {
      detail::checkIndex(labels[n], V, "crossEntropyGrad", "label");
      ++rows;
    }
  const T g = rows == 0 ? T(0) : static_cast<T>(dloss) / static_cast<T>(rows);
  for (int64_t n = 0; n < N; ++n) {
    T *d = dlogits + n * V;
    if (mask[n] == T(0) || rows == 0) {
      std::fill(d, d + V, T(0));
      continue;
    }
    const T *l = logits + n * V;
    T maxLogit, logSum;
    detail::logSumExpParts(l, V, maxLogit, logSum);
    for (int64_t c = 0; c < V; ++c) {
      T prob = std::exp((l[c] - maxLogit) - logSum);
      T onehot = c == labels[n] ? T(1) : T(0);
      d[c] = g * (prob - onehot);
    }
  }
}

//===----------------------------------------------------------------------===//
// Optimizers (torch.optim single-tensor paths)
//===----------------------------------------------------------------------===//

// One torch.optim.AdamW step (amsgrad=False, maximize=False), step counted
// from 1. Python-float scalars are computed in double and converted to T
// where torch converts them:
//   p.mul_(1 - lr*wd); m.lerp_(g, 1 - beta1);
//   v.mul_(beta2).addcmul_(g, g, value=1 - beta2);
//   denom = (v.sqrt() / sqrt(1 - beta2^step)).add_(eps);
//   p.addcdiv_(m, denom, value=-lr / (1 - beta1^step)).
// lerp_ is torch >= 2.0's form (1.13 used m.mul_(beta1).add_(g, 1 - beta1));
// the two differ by an ulp at most.
template <typename T>
void adamw(T *p, const T *g, T *m, T *v, int64_t n, double lr, double beta1,
           double beta2, double eps, double weightDecay, int64_t step) {
  detail::checkDims("adamw", n);
  if (step < 1)
    throw std::invalid_argument("bitloom::reference::adamw: step counts from "
                                "1, got " +
                                std::to_string(step));
  const T decay = static_cast<T>(1 - lr * weightDecay);
  const T w = static_cast<T>(1 - beta1); // lerp weight
  const T b2 = static_cast<T>(beta2);
  const T oneMinusB2 = static_cast<T>(1 - beta2);
  const double stepD = static_cast<double>(step);
  const double biasCorrection1 = 1 - std::pow(beta1, stepD);
  const double biasCorrection2 = 1 - std::pow(beta2, stepD);
  const double stepSize = lr / biasCorrection1;
  const T bc2Sqrt = static_cast<T>(std::sqrt(biasCorrection2));
  const T epsT = static_cast<T>(eps);
  const T negStep = static_cast<T>(-stepSize);
  for (int64_t e = 0; e < n; ++e) {
    p[e] = p[e] * decay;
    // at::lerp: weight < 0.5 ? self + w*(end-self) : end - (end-self)*(1-w)
    m[e] = std::abs(w) < T(0.5) ? m[e] + w * (g[e] - m[e])
                                : g[e] - (g[e] - m[e]) * (T(1) - w);
    v[e] = v[e] * b2 + (oneMinusB2 * g[e]) * g[e];
    T denom = std::sqrt(v[e]) / bc2Sqrt + epsT;
    p[e] = p[e] + (negStep * m[e]) / denom;
  }
}

// One torch.optim.SGD step (dampening 0, nesterov false, maximize false):
//   d = g + wd*p (g itself is not modified); buf = firstStep ? d :
//   buf*momentum + d; p += -lr * buf (d when momentum = 0; then
//   momentumBuffer may be null).
template <typename T>
void sgd(T *p, const T *g, T *momentumBuffer, int64_t n, double lr,
         double momentum, double weightDecay, bool firstStep) {
  detail::checkDims("sgd", n);
  const T wd = static_cast<T>(weightDecay);
  const T mom = static_cast<T>(momentum);
  const T negLr = static_cast<T>(-lr);
  for (int64_t e = 0; e < n; ++e) {
    T d = weightDecay != 0 ? g[e] + wd * p[e] : g[e];
    if (momentum != 0) {
      momentumBuffer[e] = firstStep ? d : momentumBuffer[e] * mom + d;
      d = momentumBuffer[e];
    }
    p[e] = p[e] + negLr * d;
  }
}

//===----------------------------------------------------------------------===//
// Gradient clipping (torch.nn.utils.clip_grad_norm_)
//===----------------------------------------------------------------------===//

// Sum of squares of g[n], accumulated in double; the global norm is the
// square root of the sum over all trainable tensors.
template <typename T> double globalNormSquared(const T *g, int64_t n) {
  detail::checkDims("globalNormSquared", n);
  double sum = 0;
  for (int64_t e = 0; e < n; ++e)
    sum += static_cast<double>(g[e]) * static_cast<double>(g[e]);
  return sum;
}

// min(maxNorm / (totalNorm + 1e-6), 1): the factor clip_grad_norm_ multiplies
// every gradient by.
inline double clipFactor(double totalNorm, double maxNorm) {
  return std::min(maxNorm / (totalNorm + 1e-6), 1.0);
}

} // namespace bitloom::reference

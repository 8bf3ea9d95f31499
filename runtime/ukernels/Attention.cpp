//===- Attention.cpp - Causal GQA attention micro-kernels -----------------===//
#include "ukernels/Attention.h"

#include "ukernels/ThreadPool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

// Per-ISA clones of the hot loops (ifunc-dispatched by the loader) so the
// generic runtime binary still uses AVX-512 / AVX2 where present.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BITLOOM_UK_CLONES                                                      \
  __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BITLOOM_UK_CLONES
#endif

namespace {

using bitloom::uk::ThreadPool;

struct Shape {
  int64_t batch, queries, keys, heads, kvHeads, headDim;
  float scale;
  bool causal;
  int64_t group() const { return heads / kvHeads; }
  int64_t qStride() const { return heads * headDim; }
  int64_t kStride() const { return kvHeads * headDim; }
  /// Keys visible to query t.
  int64_t visible(int64_t t) const {
    return causal ? std::min(keys, t + (keys - queries) + 1) : keys;
  }
};

BITLOOM_UK_CLONES
float dot(const float *a, const float *b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i)
    acc += a[i] * b[i];
  return acc;
}

BITLOOM_UK_CLONES
void axpy(float alpha, const float *x, float *y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    y[i] += alpha * x[i];
}

/// Softmax probabilities of query row `qRow` over the first `n` keys of
/// `kBase` (rows `kStride` apart) into p; returns nothing else.
void probabilities(const Shape &s, const float *qRow, const float *kBase,
                   int64_t n, float *p) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    p[j] = dot(qRow, kBase + j * s.kStride(), s.headDim) * s.scale;
    max = std::max(max, p[j]);
  }
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    p[j] = std::exp(p[j] - max);
    sum += double(p[j]);
  }
  float inv = 1.0f / float(sum);
  for (int64_t j = 0; j < n; ++j)
    p[j] *= inv;
}

/// Runs fn(b, kvh) for every (batch, kv head) pair on the pool.
/// A row of `n` floats of this thread's scratch (`slot` 0 or 1): grown once,
/// then reused by every later call, so a step allocates nothing here.
float *rowScratch(int slot, int64_t n) {
  thread_local std::vector<float> rows[2];
  if (rows[slot].size() < size_t(n))
    rows[slot].resize(size_t(n));
  return rows[slot].data();
}

template <typename F> void forEachKvHead(const Shape &s, F &&fn) {
  ThreadPool::global().parallelFor(s.batch * s.kvHeads,
                                   [&](int64_t begin, int64_t end) {
                                     for (int64_t i = begin; i < end; ++i)
                                       fn(i / s.kvHeads, i % s.kvHeads);
                                   });
}

} // namespace

extern "C" void bitloom_uk_attention(const float *q, const float *k,
                                     const float *v, float *out, int64_t batch,
                                     int64_t queries, int64_t keys,
                                     int64_t heads, int64_t kvHeads,
                                     int64_t headDim, float scale,
                                     int32_t causal) {
  Shape s{batch, queries, keys, heads, kvHeads, headDim, scale, causal != 0};
  forEachKvHead(s, [&](int64_t b, int64_t kvh) {
    float *p = rowScratch(0, s.keys);
    const float *kBase = k + b * s.keys * s.kStride() + kvh * s.headDim;
    const float *vBase = v + b * s.keys * s.kStride() + kvh * s.headDim;
    for (int64_t g = 0; g < s.group(); ++g) {
      int64_t h = kvh * s.group() + g;
      for (int64_t t = 0; t < s.queries; ++t) {
        int64_t row = (b * s.queries + t) * s.qStride() + h * s.headDim;
        int64_t n = s.visible(t);
        probabilities(s, q + row, kBase, n, p);
        float *o = out + row;
        std::memset(o, 0, sizeof(float) * size_t(s.headDim));
        for (int64_t j = 0; j < n; ++j)
          axpy(p[j], vBase + j * s.kStride(), o, s.headDim);
      }
    }
  });
}

extern "C" void bitloom_uk_attention_grad(const float *q, const float *k,
                                          const float *v, const float *dout,
                                          float *dq, float *dk, float *dv,
                                          int64_t batch, int64_t queries,
                                          int64_t keys, int64_t heads,
                                          int64_t kvHeads, int64_t headDim,
                                          float scale, int32_t causal) {
  Shape s{batch, queries, keys, heads, kvHeads, headDim, scale, causal != 0};
  forEachKvHead(s, [&](int64_t b, int64_t kvh) {
    float *p = rowScratch(0, s.keys), *dS = rowScratch(1, s.keys);
    int64_t kOffset = b * s.keys * s.kStride() + kvh * s.headDim;
    const float *kBase = k + kOffset, *vBase = v + kOffset;
    float *dkBase = dk + kOffset, *dvBase = dv + kOffset;
    // This task owns kv head kvh of batch b: dk/dv rows are its alone.
    for (int64_t j = 0; j < s.keys; ++j) {
      std::memset(dkBase + j * s.kStride(), 0, sizeof(float) * s.headDim);
      std::memset(dvBase + j * s.kStride(), 0, sizeof(float) * s.headDim);
    }
    for (int64_t g = 0; g < s.group(); ++g) {
      int64_t h = kvh * s.group() + g;
      for (int64_t t = 0; t < s.queries; ++t) {
        int64_t row = (b * s.queries + t) * s.qStride() + h * s.headDim;
        int64_t n = s.visible(t);
        const float *qRow = q + row, *gRow = dout + row;
        probabilities(s, qRow, kBase, n, p);
        double rowDot = 0.0;
        for (int64_t j = 0; j < n; ++j) {
          dS[j] = dot(gRow, vBase + j * s.kStride(), s.headDim);
          rowDot += double(p[j]) * double(dS[j]);
        }
        float *dqRow = dq + row;
        std::memset(dqRow, 0, sizeof(float) * size_t(s.headDim));
        for (int64_t j = 0; j < n; ++j) {
          float ds = float(double(p[j]) * (double(dS[j]) - rowDot) * s.scale);
          axpy(ds, kBase + j * s.kStride(), dqRow, s.headDim);
          axpy(ds, qRow, dkBase + j * s.kStride(), s.headDim);
          axpy(p[j], gRow, dvBase + j * s.kStride(), s.headDim);
        }
      }
    }
  });
}

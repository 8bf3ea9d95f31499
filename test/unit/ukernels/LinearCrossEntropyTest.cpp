//===- LinearCrossEntropyTest.cpp - fused LM head + loss vs unfused -------===//
//
// bitloom_uk_linear_cross_entropy against the composition it replaces: the
// logits GEMM, cross-entropy and its gradient with the unfused lowering's
// numerics, and the input-gradient GEMM. Block sizes that divide the rows
// and that do not, masks with zeros and all zeros, f32 and bf16 heads, on
// every ISA with 1-3 threads.
//
//===----------------------------------------------------------------------===//
#include "ForEachConfig.h"
#include "ukernels/Internal.h"
#include "ukernels/Ukernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace bitloom::uk;
using bitloom::uk::test::forEachConfig;

namespace {

struct Problem {
  int64_t n, v, k;
  std::vector<float> x, w;
  std::vector<uint16_t> wBf16;
  std::vector<int32_t> labels;
  std::vector<float> mask;
};

float fromBf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Random data; `maskKind` 0: every row in, 1: some rows out (label -100),
/// 2: no row in.
Problem makeProblem(std::mt19937 &rng, int64_t n, int64_t v, int64_t k,
                    int maskKind) {
  Problem p{n, v, k, {}, {}, {}, {}, {}};
  // Logits of a few units, so that the max subtraction matters.
  std::uniform_real_distribution<float> dist(-1.5f, 1.5f);
  p.x.resize(size_t(n * k));
  for (float &f : p.x)
    f = dist(rng);
  p.w.resize(size_t(v * k));
  p.wBf16.resize(p.w.size());
  for (size_t i = 0; i < p.w.size(); ++i) {
    float f = dist(rng);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    p.wBf16[i] = uint16_t(u >> 16);
    // The f32 head is the bf16 one widened, so both paths see one matrix.
    p.w[i] = fromBf16(p.wBf16[i]);
  }
  std::uniform_int_distribution<int32_t> label(0, int32_t(v - 1));
  std::bernoulli_distribution out(0.3);
  p.labels.resize(size_t(n));
  p.mask.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    bool in = maskKind == 0 || (maskKind == 1 && !out(rng));
    p.mask[size_t(i)] = in ? 1.0f : 0.0f;
    p.labels[size_t(i)] = in ? label(rng) : -100;
  }
  return p;
}

/// The unfused path: GEMM → cross_entropy → cross_entropy_grad → GEMM, the
/// loss and its gradient with the numerics of -loom-lower-to-linalg.
struct Unfused {
  float loss = 0;
  std::vector<float> dlogits, dx;
  std::vector<double> dxNorm; // L2 norm of the terms of each dx element
};

Unfused runUnfused(const Problem &p, bool bf16, float dloss) {
  int64_t n = p.n, v = p.v, k = p.k;
  std::vector<float> logits(size_t(n * v));
  if (bf16)
    bitloom_uk_matmul_f32_bf16b(p.x.data(), p.wBf16.data(), logits.data(), n, v,
                                k, 0, 1, 0);
  else
    bitloom_uk_matmul_f32(p.x.data(), p.w.data(), logits.data(), n, v, k, 0, 1,
                          0);
  Unfused u;
  double count = 0, total = 0;
  for (int64_t i = 0; i < n; ++i)
    count += p.mask[size_t(i)] != 0.0f;
  float g = count == 0 ? 0.0f : dloss / float(count);
  u.dlogits.assign(size_t(n * v), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    if (p.mask[size_t(i)] == 0.0f)
      continue;
    const float *l = logits.data() + i * v;
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < v; ++c)
      max = std::max(max, l[c]);
    double sum = 0;
    for (int64_t c = 0; c < v; ++c)
      sum += double(std::exp(l[c] - max));
    float logSum = std::log(float(sum));
    total -= double((l[p.labels[size_t(i)]] - max) - logSum);
    for (int64_t c = 0; c < v; ++c) {
      float prob = std::exp((l[c] - max) - logSum);
      float onehot = c == p.labels[size_t(i)] ? 1.0f : 0.0f;
      u.dlogits[size_t(i * v + c)] = g * (prob - onehot);
    }
  }
  u.loss = count == 0 ? 0.0f : float(total / count);
  u.dx.resize(size_t(n * k));
  if (bf16)
    bitloom_uk_matmul_f32_bf16b(u.dlogits.data(), p.wBf16.data(), u.dx.data(),
                                n, k, v, 0, 0, 0);
  else
    bitloom_uk_matmul_f32(u.dlogits.data(), p.w.data(), u.dx.data(), n, k, v, 0,
                          0, 0);
  u.dxNorm.assign(size_t(n * k), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double sq = 0;
      for (int64_t c = 0; c < v; ++c) {
        double t = double(u.dlogits[size_t(i * v + c)]) *
                   double(p.w[size_t(c * k + j)]);
        sq += t * t;
      }
      u.dxNorm[size_t(i * k + j)] = std::sqrt(sq);
    }
  return u;
}

void callFused(const Problem &p, bool bf16, const float *dloss, float *loss,
               float *dx, float *scratch, int64_t blockRows) {
  if (bf16)
    bitloom_uk_linear_cross_entropy_bf16w(
        p.x.data(), p.wBf16.data(), p.labels.data(), p.mask.data(), dloss, loss,
        dx, scratch, p.n, p.v, p.k, blockRows);
  else
    bitloom_uk_linear_cross_entropy(p.x.data(), p.w.data(), p.labels.data(),
                                    p.mask.data(), dloss, loss, dx, scratch,
                                    p.n, p.v, p.k, blockRows);
}

constexpr float kGuard = 12345.0f;

void checkAgainstUnfused(const Problem &p, bool bf16, int64_t blockRows,
                         const std::string &where) {
  SCOPED_TRACE(where + (bf16 ? " bf16" : " f32") + " block_rows " +
               std::to_string(blockRows));
  const float dloss = 0.75f;
  forEachConfig([&] {
    Unfused ref = runUnfused(p, bf16, dloss);
    int64_t scratchRows = blockRows < p.n ? blockRows : p.n;
    // One guard element after the block: the kernel stays inside it.
    std::vector<float> scratch(size_t(scratchRows * p.v + 1), NAN);
    scratch.back() = kGuard;
    std::vector<float> dx(size_t(p.n * p.k), NAN);
    float loss = NAN, lossOnly = NAN;
    callFused(p, bf16, &dloss, &loss, dx.data(), scratch.data(), blockRows);
    ASSERT_EQ(scratch.back(), kGuard);
    double tol = 1e-6 * std::max(1.0, double(std::fabs(ref.loss)));
    ASSERT_NEAR(loss, ref.loss, tol);
    for (int64_t e = 0; e < p.n * p.k; ++e)
      ASSERT_LE(std::fabs(double(dx[size_t(e)]) - double(ref.dx[size_t(e)])),
                1e-5 * std::sqrt(double(p.v)) * ref.dxNorm[size_t(e)] + 1e-30)
          << "dx at " << e << ": got " << dx[size_t(e)] << ", expected "
          << ref.dx[size_t(e)];
    // Evaluation: the same loss, no gradient written.
    callFused(p, bf16, nullptr, &lossOnly, nullptr, scratch.data(), blockRows);
    ASSERT_EQ(scratch.back(), kGuard);
    ASSERT_EQ(lossOnly, loss);
  });
}

} // namespace

TEST(UkernelsLinearCrossEntropy, MatchesUnfusedComposition) {
  std::mt19937 rng(11);
  // (rows, vocab, hidden): vocab and hidden off the register tiles.
  const int64_t shapes[][3] = {{37, 103, 24}, {32, 64, 16}, {5, 50, 8}};
  for (const auto &s : shapes)
    for (int maskKind = 0; maskKind < 2; ++maskKind) {
      Problem p = makeProblem(rng, s[0], s[1], s[2], maskKind);
      std::string where = "n " + std::to_string(s[0]) + " v " +
                          std::to_string(s[1]) + " k " + std::to_string(s[2]) +
                          " mask " + std::to_string(maskKind);
      // Dividing the rows, not dividing them, one block, more than all.
      for (int64_t blockRows : {int64_t(8), int64_t(16), s[0], s[0] + 9})
        for (bool bf16 : {false, true})
          checkAgainstUnfused(p, bf16, blockRows, where);
    }
}

// Blocks large enough to split the softmax rows over the threads.
TEST(UkernelsLinearCrossEntropy, LargeBlocks) {
  std::mt19937 rng(12);
  Problem p = makeProblem(rng, 70, 1000, 40, 1);
  for (int64_t blockRows : {int64_t(32), int64_t(70)})
    for (bool bf16 : {false, true})
      checkAgainstUnfused(p, bf16, blockRows, "n 70 v 1000 k 40");
}

// No target at all: loss 0 and a zero gradient, as the unfused path gives.
TEST(UkernelsLinearCrossEntropy, AllZeroMask) {
  std::mt19937 rng(13);
  Problem p = makeProblem(rng, 19, 40, 12, 2);
  for (bool bf16 : {false, true})
    forEachConfig([&] {
      const float dloss = 1.0f;
      std::vector<float> scratch(size_t(8 * p.v), NAN);
      std::vector<float> dx(size_t(p.n * p.k), NAN);
      float loss = NAN;
      callFused(p, bf16, &dloss, &loss, dx.data(), scratch.data(), 8);
      EXPECT_EQ(loss, 0.0f);
      for (float d : dx)
        ASSERT_EQ(d, 0.0f);
      loss = NAN;
      callFused(p, bf16, nullptr, &loss, nullptr, scratch.data(), 8);
      EXPECT_EQ(loss, 0.0f);
    });
}

// One row, one class: log-softmax is 0 whatever the logit, and so is the
// gradient.
TEST(UkernelsLinearCrossEntropy, SingleClass) {
  std::vector<float> x = {0.5f, -2.0f, 3.0f}, w = {1.0f, 2.0f, -1.0f};
  std::vector<int32_t> labels = {0};
  std::vector<float> mask = {1.0f}, scratch(1), dx(3, NAN);
  float loss = NAN, dloss = 1.0f;
  bitloom_uk_linear_cross_entropy(x.data(), w.data(), labels.data(),
                                  mask.data(), &dloss, &loss, dx.data(),
                                  scratch.data(), 1, 1, 3, 8);
  EXPECT_EQ(loss, 0.0f);
  for (float d : dx)
    EXPECT_EQ(d, 0.0f);
}

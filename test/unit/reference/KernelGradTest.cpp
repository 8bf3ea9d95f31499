// Every adjoint of the reference kernels against central finite differences
// in double. Each test defines a scalar loss L = <f(inputs), R> with a random
// R, so dL/dinput is the kernel's backward applied to dy = R.
#include "codegen/reference/Kernels.h"
#include "test/unit/reference/KernelTestUtil.h"

#include <gtest/gtest.h>

namespace ref = bitloom::reference;
using namespace bitloom::reference::testing;

namespace {

TEST(ReferenceKernelGrad, RmsNorm) {
  std::mt19937 rng(1);
  const int64_t N = 5, C = 7;
  const double eps = 1e-5;
  Vec x = randomVec(N * C, rng), w = randomVec(C, rng, 0.5, 1.5),
      R = randomVec(N * C, rng);
  auto loss = [&] {
    Vec y(N * C);
    ref::rmsNorm(x.data(), w.data(), N, C, eps, y.data());
    return dot(y, R);
  };
  Vec dx(N * C), dw(C);
  ref::rmsNormGradInput(R.data(), x.data(), w.data(), N, C, eps, dx.data());
  ref::rmsNormGradWeight(R.data(), x.data(), N, C, eps, dw.data());
  expectGradClose(dx, finiteDiff(loss, x), "rmsNorm dx");
  expectGradClose(dw, finiteDiff(loss, w), "rmsNorm dw");
}

// With the quantizers switched to the identity, bitlinear is a plain linear
// map whose adjoints (through the straight-through quantizers) are checked.
TEST(ReferenceKernelGrad, Bitlinear) {
  std::mt19937 rng(2);
  const int64_t N = 4, I = 6, O = 5;
  for (double outScale : {1.0, 0.37}) {
    Vec x = randomVec(N * I, rng), W = randomVec(O * I, rng),
        R = randomVec(N * O, rng);
    auto loss = [&] {
      Vec xq(N * I), wq(O * I), y(N * O);
      ref::quantizeActivations(x.data(), N, I, false, xq.data());
      ref::quantizeWeightOnline(W.data(), O, I, false, wq.data());
      ref::bitlinear(xq.data(), wq.data(), N, I, O, y.data(), outScale);
      return dot(y, R);
    };
    Vec dx(N * I), dW(O * I);
    ref::bitlinearGradInput(R.data(), W.data(), N, I, O, dx.data(), outScale);
    ref::bitlinearGradWeight(R.data(), x.data(), N, I, O, dW.data(), outScale);
    expectGradClose(dx, finiteDiff(loss, x), "bitlinear dx");
    expectGradClose(dW, finiteDiff(loss, W), "bitlinear dW");
  }
}

TEST(ReferenceKernelGrad, Lora) {
  std::mt19937 rng(3);
  const int64_t N = 4, I = 6, O = 5, R_ = 3;
  const double scaling = 16.0 / 3.0;
  Vec base = randomVec(N * O, rng), x = randomVec(N * I, rng),
      A = randomVec(R_ * I, rng), B = randomVec(O * R_, rng),
      R = randomVec(N * O, rng);
  auto loss = [&] {
    Vec y(N * O);
    ref::lora(base.data(), x.data(), A.data(), B.data(), N, I, O, R_, scaling,
              y.data());
    return dot(y, R);
  };
  // dx accumulates: start from a known non-zero value.
  Vec dx0 = randomVec(N * I, rng), dx = dx0, dA(R_ * I), dB(O * R_);
  ref::loraGradInputAccumulate(R.data(), A.data(), B.data(), N, I, O, R_,
                               scaling, dx.data());
  for (size_t i = 0; i < dx.size(); ++i)
    dx[i] -= dx0[i];
  ref::loraGradParams(R.data(), x.data(), A.data(), B.data(), N, I, O, R_,
                      scaling, dA.data(), dB.data());
  expectGradClose(dx, finiteDiff(loss, x), "lora dx");
  expectGradClose(dA, finiteDiff(loss, A), "lora dA");
  expectGradClose(dB, finiteDiff(loss, B), "lora dB");
  // d(base) is the identity.
  expectGradClose(R, finiteDiff(loss, base), "lora dbase");
}

// RoPE is linear and orthogonal: its adjoint is the inverse rotation.
TEST(ReferenceKernelGrad, RopeAdjoint) {
  std::mt19937 rng(4);
  const int64_t B = 2, T = 5, H = 3, D = 8;
  const double theta = 500000.0;
  std::vector<int32_t> pos = {0, 1, 2, 3, 4, 17, 100, 2047, 5, 9};
  Vec x = randomVec(B * T * H * D, rng), y = randomVec(B * T * H * D, rng);
  Vec rx(x.size()), riy(y.size()), back(x.size());
  ref::rope(x.data(), pos.data(), B, T, H, D, theta, false, rx.data());
  ref::rope(y.data(), pos.data(), B, T, H, D, theta, true, riy.data());
  EXPECT_NEAR(dot(rx, y), dot(x, riy), 1e-12 * std::abs(dot(rx, y)) + 1e-13);
  // inverse(rope(x)) == x, and the gradient (rope(dy, inverse)) matches FD.
  ref::rope(rx.data(), pos.data(), B, T, H, D, theta, true, back.data());
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(back[i], x[i], 1e-14);
  auto loss = [&] {
    Vec out(x.size());
    ref::rope(x.data(), pos.data(), B, T, H, D, theta, false, out.data());
    return dot(out, y);
  };
  expectGradClose(riy, finiteDiff(loss, x), "rope dx");
  // Position 0 is the identity; in-place (y aliasing x) is allowed.
  Vec z = x;
  std::vector<int32_t> zeros(B * T, 0);
  ref::rope(z.data(), zeros.data(), B, T, H, D, theta, false, z.data());
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(z[i], x[i]);
  // Odd head dims have no rotate-half layout.
  EXPECT_THROW(
      ref::rope(x.data(), pos.data(), 1, 1, 1, 3, theta, false, rx.data()),
      std::invalid_argument);
}

// RoPE's values against the closed form in double: inv_freq = theta^(-2i/D),
// dims i and i + D/2 rotated by position * inv_freq.
TEST(ReferenceKernelGrad, RopeClosedForm) {
  const int64_t D = 6;
  const double theta = 10000.0;
  std::vector<int32_t> pos = {3};
  Vec x = {0.1, -0.2, 0.3, 0.4, 0.5, -0.6}, y(D);
  ref::rope(x.data(), pos.data(), 1, 1, 1, D, theta, false, y.data());
  for (int64_t i = 0; i < D / 2; ++i) {
    double a = 3.0 * std::pow(theta, -2.0 * i / D);
    EXPECT_NEAR(y[i], x[i] * std::cos(a) - x[i + 3] * std::sin(a), 1e-15);
    EXPECT_NEAR(y[i + 3], x[i + 3] * std::cos(a) + x[i] * std::sin(a), 1e-15);
  }
}

struct AttnCase {
  int64_t B, T, S, Hq, Hkv, D;
  bool causal;
};

class ReferenceAttentionGrad : public ::testing::TestWithParam<AttnCase> {};

TEST_P(ReferenceAttentionGrad, QKV) {
  const AttnCase c = GetParam();
  std::mt19937 rng(5);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  Vec q = randomVec(c.B * c.T * c.Hq * c.D, rng, -2, 2),
      k = randomVec(c.B * c.S * c.Hkv * c.D, rng, -2, 2),
      v = randomVec(c.B * c.S * c.Hkv * c.D, rng),
      R = randomVec(c.B * c.T * c.Hq * c.D, rng);
  auto loss = [&] {
    Vec out(q.size());
    ref::attention(q.data(), k.data(), v.data(), c.B, c.T, c.S, c.Hq, c.Hkv,
                   c.D, scale, c.causal, out.data());
    return dot(out, R);
  };
  Vec dq(q.size()), dk(k.size()), dv(v.size());
  ref::attentionGrad(R.data(), q.data(), k.data(), v.data(), c.B, c.T, c.S,
                     c.Hq, c.Hkv, c.D, scale, c.causal, dq.data(), dk.data(),
                     dv.data());
  expectGradClose(dq, finiteDiff(loss, q), "attention dq");
  expectGradClose(dk, finiteDiff(loss, k), "attention dk");
  expectGradClose(dv, finiteDiff(loss, v), "attention dv");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ReferenceAttentionGrad,
    ::testing::Values(AttnCase{2, 7, 7, 4, 2, 6, true},   // GQA, causal
                      AttnCase{1, 7, 10, 6, 2, 4, true},  // KV-cache prefix
                      AttnCase{1, 5, 3, 2, 1, 4, false},  // not causal, S < T
                      AttnCase{1, 3, 3, 2, 2, 2, true})); // MHA

TEST(ReferenceKernelGrad, AttentionSemantics) {
  // Causal row 0 sees only key 0: out = v[0] (per kv head, GQA mapping).
  const int64_t T = 3, Hq = 4, Hkv = 2, D = 2;
  std::mt19937 rng(6);
  Vec q = randomVec(T * Hq * D, rng), k = randomVec(T * Hkv * D, rng),
      v = randomVec(T * Hkv * D, rng), out(q.size());
  ref::attention(q.data(), k.data(), v.data(), 1, T, T, Hq, Hkv, D, 0.7, true,
                 out.data());
  for (int64_t h = 0; h < Hq; ++h)
    for (int64_t d = 0; d < D; ++d)
      EXPECT_DOUBLE_EQ(out[h * D + d], v[(h / 2) * D + d]) << h;
  // Equal keys: the output is the mean of the visible values.
  Vec kk(T * Hkv * D, 0.5);
  ref::attention(q.data(), kk.data(), v.data(), 1, T, T, Hq, Hkv, D, 0.7, true,
                 out.data());
  for (int64_t h = 0; h < Hq; ++h)
    for (int64_t d = 0; d < D; ++d) {
      double mean = 0;
      for (int64_t s = 0; s < T; ++s)
        mean += v[(s * Hkv + h / 2) * D + d] / T;
      EXPECT_NEAR(out[((T - 1) * Hq + h) * D + d], mean, 1e-15);
    }
  EXPECT_THROW(ref::attention(q.data(), k.data(), v.data(), 1, T, T, 3, 2, D,
                              0.7, true, out.data()),
               std::invalid_argument);
}

TEST(ReferenceKernelGrad, Relu2) {
  std::mt19937 rng(7);
  const int64_t n = 20;
  Vec x = randomVec(n, rng), R = randomVec(n, rng);
  // Keep away from the kink of relu^2's derivative at 0 (FD step 2e-3).
  for (double &e : x)
    e = e < 0 ? e - 0.05 : e + 0.05;
  auto loss = [&] {
    Vec y(n);
    ref::relu2(x.data(), n, y.data());
    return dot(y, R);
  };
  Vec dx(n);
  ref::relu2Grad(R.data(), x.data(), n, dx.data());
  expectGradClose(dx, finiteDiff(loss, x), "relu2 dx");
  Vec y(1);
  Vec neg = {-3.0};
  ref::relu2(neg.data(), 1, y.data());
  EXPECT_EQ(y[0], 0.0);
}

TEST(ReferenceKernelGrad, ElementwiseMulAdd) {
  Vec a = {1, 2, -3}, b = {4, -5, 6}, y(3);
  ref::mul(a.data(), b.data(), 3, y.data());
  EXPECT_EQ(y, (Vec{4, -10, -18}));
  ref::add(a.data(), b.data(), 3, y.data());
  EXPECT_EQ(y, (Vec{5, -3, 3}));
}

TEST(ReferenceKernelGrad, Matmul) {
  std::mt19937 rng(8);
  const int64_t N = 4, K = 6, M = 9;
  Vec x = randomVec(N * K, rng), W = randomVec(M * K, rng),
      R = randomVec(N * M, rng);
  auto loss = [&] {
    Vec y(N * M);
    ref::matmul(x.data(), W.data(), N, K, M, y.data());
    return dot(y, R);
  };
  Vec dx(N * K), dW0 = randomVec(M * K, rng), dW = dW0;
  ref::matmulGradInput(R.data(), W.data(), N, K, M, dx.data());
  ref::matmulGradWeightAccumulate(R.data(), x.data(), N, K, M, dW.data());
  for (size_t i = 0; i < dW.size(); ++i)
    dW[i] -= dW0[i];
  expectGradClose(dx, finiteDiff(loss, x), "matmul dx");
  expectGradClose(dW, finiteDiff(loss, W), "matmul dW");
}

TEST(ReferenceKernelGrad, CrossEntropy) {
  std::mt19937 rng(9);
  const int64_t N = 6, V = 11;
  Vec logits = randomVec(N * V, rng, -3, 3);
  std::vector<int32_t> labels = {3, -100, 0, 10, 7, -100};
  Vec mask = {1, 0, 1, 1, 1, 0};
  const double dloss = 1.7;
  auto loss = [&] {
    return dloss *
           ref::crossEntropy(logits.data(), labels.data(), mask.data(), N, V);
  };
  int64_t count = -1;
  double L = ref::crossEntropy(logits.data(), labels.data(), mask.data(), N, V,
                               &count);
  EXPECT_EQ(count, 4);
  // The loss against logsumexp written out directly.
  double expect = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (mask[n] == 0)
      continue;
    double s = 0;
    for (int64_t v = 0; v < V; ++v)
      s += std::exp(logits[n * V + v]);
    expect += std::log(s) - logits[n * V + labels[n]];
  }
  EXPECT_NEAR(L, expect / 4, 1e-14);
  Vec dl(N * V);
  ref::crossEntropyGrad(logits.data(), labels.data(), mask.data(), N, V, dloss,
                        dl.data());
  expectGradClose(dl, finiteDiff(loss, logits), "crossEntropy dlogits");
  for (int64_t v = 0; v < V; ++v)
    EXPECT_EQ(dl[1 * V + v], 0.0);

  // No masked-in rows: loss 0, gradient 0.
  Vec none(N, 0.0);
  EXPECT_EQ(ref::crossEntropy(logits.data(), labels.data(), none.data(), N, V,
                              &count),
            0.0);
  EXPECT_EQ(count, 0);
  ref::crossEntropyGrad(logits.data(), labels.data(), none.data(), N, V, dloss,
                        dl.data());
  for (double d : dl)
    EXPECT_EQ(d, 0.0);

  // A masked-in label out of range throws.
  mask[1] = 1;
  EXPECT_THROW(
      ref::crossEntropy(logits.data(), labels.data(), mask.data(), N, V),
      std::out_of_range);
  EXPECT_THROW(ref::crossEntropyGrad(logits.data(), labels.data(), mask.data(),
                                     N, V, dloss, dl.data()),
               std::out_of_range);
}

TEST(ReferenceKernelGrad, Embedding) {
  std::mt19937 rng(10);
  const int64_t V = 7, H = 3, N = 5;
  Vec table = randomVec(V * H, rng), R = randomVec(N * H, rng);
  std::vector<int32_t> tokens = {2, 6, 2, 0, 5};
  auto loss = [&] {
    Vec out(N * H);
    ref::embedding(table.data(), tokens.data(), V, H, N, out.data());
    return dot(out, R);
  };
  Vec dtable(V * H, 0.0);
  ref::embeddingGradAccumulate(R.data(), tokens.data(), V, H, N, dtable.data());
  // Rows never looked up get exactly zero: compare those separately.
  Vec fd = finiteDiff(loss, table);
  for (int64_t r : {1, 3, 4})
    for (int64_t h = 0; h < H; ++h) {
      EXPECT_EQ(dtable[r * H + h], 0.0);
      EXPECT_NEAR(fd[r * H + h], 0.0, 1e-12);
    }
  expectGradClose(dtable, fd, "embedding dtable");

  std::vector<int32_t> bad = {1, 7};
  Vec out(2 * H);
  try {
    ref::embedding(table.data(), bad.data(), V, H, 2, out.data());
    FAIL() << "expected std::out_of_range";
  } catch (const std::out_of_range &e) {
    EXPECT_NE(std::string(e.what()).find("7"), std::string::npos) << e.what();
  }
  std::vector<int32_t> negative = {-1};
  EXPECT_THROW(ref::embeddingGradAccumulate(R.data(), negative.data(), V, H, 1,
                                            dtable.data()),
               std::out_of_range);
}

} // namespace

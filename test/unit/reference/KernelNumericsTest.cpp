// Forward values of the BitNet quantizers against hand-computed cases (ties,
// clamping, tiny scales), the straight-through rule, and the optimizers and
// gradient clipping against their formulas.
#include "codegen/reference/Kernels.h"
#include "test/unit/reference/KernelTestUtil.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace ref = bitloom::reference;
using namespace bitloom::reference::testing;

namespace {

using FVec = std::vector<float>;

// Expected values printed by PyTorch running HF's ActQuant.forward body in
// float32 (9 significant digits round-trip a float exactly).
TEST(ReferenceQuantizers, ActivationsMatchHandComputedCases) {
  const int64_t N = 4, I = 8;
  FVec x = {
      // max 127 -> scale exactly 1: ties round half to even, 127 stays 127.
      127.f, 2.5f, 3.5f, -2.5f, 0.5f, -0.5f, 1.5f, -126.5f,
      // all zero: max clamps to 1e-5, everything quantizes to 0.
      0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f,
      // max below 1e-5: the clamp sets the scale (127 / 1e-5).
      1e-6f, -2e-6f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f,
      // negative max maps to -127; -1.5 * s = -63.5000038 rounds to -64
      // only because s = reciprocal(3) * 127 (127 / 3 would give -63).
      -3.f, 1.f, 0.7f, -1.5f, 2.9f, 0.01f, 0.02f, 1e-3f};
  FVec expect = {127.f,
                 2.f,
                 4.f,
                 -2.f,
                 0.f,
                 -0.f,
                 2.f,
                 -126.f,
                 0.f,
                 0.f,
                 0.f,
                 0.f,
                 0.f,
                 0.f,
                 0.f,
                 0.f,
                 1.02362208e-06f,
                 -1.96850397e-06f,
                 0.f,
                 0.f,
                 0.f,
                 0.f,
                 0.f,
                 0.f,
                 -2.99999976f,
                 0.992125928f,
                 0.708661377f,
                 -1.5118109f,
                 2.90551162f,
                 0.f,
                 0.0236220453f,
                 0.f};
  FVec out(N * I);
  ref::quantizeActivations(x.data(), N, I, true, out.data());
  for (int64_t e = 0; e < N * I; ++e)
    EXPECT_EQ(out[e], expect[e]) << "element " << e;
  // quantize=false is the identity.
  ref::quantizeActivations(x.data(), N, I, false, out.data());
  EXPECT_EQ(out, x);
}

TEST(ReferenceQuantizers, WeightsMatchHandComputedCases) {
  // mean|W| = 0.5 -> s = 2: 0.5 and -0.5 tie to 0, 1.5 rounds to 2 and
  // clamps to 1, 2.5 ties to 2 and clamps to 1. Output is q / s.
  FVec W = {0.25f, -0.25f, 0.75f, -0.75f, 1.25f, -0.5f, 0.25f, 0.f};
  FVec expect = {0.f, -0.f, 0.5f, -0.5f, 0.5f, -0.5f, 0.f, 0.f};
  FVec out(8);
  ref::quantizeWeightOnline(W.data(), 2, 4, true, out.data());
  EXPECT_EQ(out, expect);
  EXPECT_TRUE(std::signbit(out[1])); // -0.5 rounds to -0, as torch.round
  // mean|W| below 1e-5: the clamp sets s = 1e5; 6e-6 -> 0.6 -> 1 -> 1e-5,
  // 5e-6 -> 0.5 ties to 0.
  FVec tiny = {1e-7f, -1e-7f, 6e-6f, -4e-6f, 5e-6f, 0.f, 0.f, 0.f};
  FVec expectTiny = {0.f, -0.f, 9.99999975e-06f, -0.f, 0.f, 0.f, 0.f, 0.f};
  ref::quantizeWeightOnline(tiny.data(), 2, 4, true, out.data());
  EXPECT_EQ(out, expectTiny);
  ref::quantizeWeightOnline(W.data(), 2, 4, false, out.data());
  EXPECT_EQ(out, W);
}

// Straight-through estimators: the quantizers' backward is the identity, so
// the gradient of <bitlinear(Qa(x), Qw(W)), R> w.r.t. x is the gradient of
// <bitlinear(x', Qw(W)), R> at x' = x (quantized weight kept), and w.r.t. W
// that of <bitlinear(Qa(x), W'), R> (quantized activations kept).
TEST(ReferenceQuantizers, StraightThroughGradients) {
  std::mt19937 rng(11);
  const int64_t N = 3, I = 8, O = 4;
  Vec x = randomVec(N * I, rng), W = randomVec(O * I, rng),
      R = randomVec(N * O, rng);
  Vec xq(N * I), wq(O * I);
  ref::quantizeActivations(x.data(), N, I, true, xq.data());
  ref::quantizeWeightOnline(W.data(), O, I, true, wq.data());
  // wq is ternary times one scale.
  double mag = 0;
  for (double w : wq)
    if (w != 0) {
      if (mag == 0)
        mag = std::abs(w);
      EXPECT_DOUBLE_EQ(std::abs(w), mag);
    }
  EXPECT_GT(mag, 0);

  Vec dx(N * I), dW(O * I);
  ref::bitlinearGradInput(R.data(), wq.data(), N, I, O, dx.data());
  ref::bitlinearGradWeight(R.data(), xq.data(), N, I, O, dW.data());
  // Written out: dx = R . wq and dW = R^T . xq with the dequantized operands.
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < I; ++i) {
      double s = 0;
      for (int64_t o = 0; o < O; ++o)
        s += R[n * O + o] * wq[o * I + i];
      EXPECT_NEAR(dx[n * I + i], s, 1e-15);
    }
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) {
      double s = 0;
      for (int64_t n = 0; n < N; ++n)
        s += R[n * O + o] * xq[n * I + i];
      EXPECT_NEAR(dW[o * I + i], s, 1e-15);
    }
  Vec xs = x;
  auto lossX = [&] {
    Vec y(N * O);
    ref::bitlinear(xs.data(), wq.data(), N, I, O, y.data());
    return dot(y, R);
  };
  expectGradClose(dx, finiteDiff(lossX, xs), "STE dx");
  Vec Ws = W;
  auto lossW = [&] {
    Vec y(N * O);
    ref::bitlinear(xq.data(), Ws.data(), N, I, O, y.data());
    return dot(y, R);
  };
  expectGradClose(dW, finiteDiff(lossW, Ws), "STE dW");
}

// AdamW as written in the docs (textbook order, double) for three steps.
template <typename T> void checkAdamW(double tol) {
  std::mt19937 rng(12);
  const int64_t n = 9;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  // Inputs rounded to T first, so both sides start from the same values.
  auto roundT = [](Vec v) {
    for (double &e : v)
      e = static_cast<T>(e);
    return v;
  };
  Vec p0 = roundT(randomVec(n, rng));
  std::vector<Vec> grads = {roundT(randomVec(n, rng)),
                            roundT(randomVec(n, rng)),
                            roundT(randomVec(n, rng))};
  Vec pe = p0, me(n, 0), ve(n, 0);
  std::vector<T> p(p0.begin(), p0.end()), m(n, 0), v(n, 0);
  for (int64_t step = 1; step <= 3; ++step) {
    const Vec &g = grads[step - 1];
    for (int64_t e = 0; e < n; ++e) {
      pe[e] *= 1 - lr * wd;
      me[e] = b1 * me[e] + (1 - b1) * g[e];
      ve[e] = b2 * ve[e] + (1 - b2) * g[e] * g[e];
      double mhat = me[e] / (1 - std::pow(b1, step));
      double vhat = ve[e] / (1 - std::pow(b2, step));
      pe[e] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
    std::vector<T> gt(g.begin(), g.end());
    ref::adamw(p.data(), gt.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd,
               step);
    // Relative to each tensor's largest element: m = b1*m + (1-b1)*g cancels,
    // so small elements carry the rounding error of the large terms.
    auto maxAbs = [](const Vec &a) {
      double r = 0;
      for (double e : a)
        r = std::max(r, std::abs(e));
      return r;
    };
    for (int64_t e = 0; e < n; ++e) {
      EXPECT_NEAR(p[e], pe[e], tol * maxAbs(pe)) << step << " " << e;
      EXPECT_NEAR(m[e], me[e], tol * maxAbs(me)) << step << " " << e;
      EXPECT_NEAR(v[e], ve[e], tol * maxAbs(ve)) << step << " " << e;
    }
  }
  EXPECT_THROW(ref::adamw(p.data(), p.data(), m.data(), v.data(), n, lr, b1, b2,
                          eps, wd, 0),
               std::invalid_argument);
}

TEST(ReferenceOptimizers, AdamWMatchesFormulaDouble) {
  checkAdamW<double>(1e-12);
}
TEST(ReferenceOptimizers, AdamWMatchesFormulaFloat) { checkAdamW<float>(2e-6); }

TEST(ReferenceOptimizers, SgdMatchesFormula) {
  std::mt19937 rng(13);
  const int64_t n = 7;
  const double lr = 0.05, mom = 0.9, wd = 0.1;
  Vec p = randomVec(n, rng), buf(n, 123.0), pe = p, be(n, 0);
  Vec pPlain = p, pPlainE = p;
  for (int step = 0; step < 3; ++step) {
    Vec g = randomVec(n, rng), gCopy = g;
    for (int64_t e = 0; e < n; ++e) {
      double d = g[e] + wd * pe[e];
      be[e] = step == 0 ? d : mom * be[e] + d;
      pe[e] -= lr * be[e];
      pPlainE[e] -= lr * g[e];
    }
    ref::sgd(p.data(), g.data(), buf.data(), n, lr, mom, wd, step == 0);
    // momentum 0, no weight decay: plain SGD, no buffer needed.
    ref::sgd(pPlain.data(), g.data(), static_cast<double *>(nullptr), n, lr,
             0.0, 0.0, step == 0);
    EXPECT_EQ(g, gCopy); // the gradient is not modified
    for (int64_t e = 0; e < n; ++e) {
      EXPECT_NEAR(p[e], pe[e], 1e-14);
      EXPECT_NEAR(buf[e], be[e], 1e-14);
      EXPECT_NEAR(pPlain[e], pPlainE[e], 1e-15);
    }
  }
}

TEST(ReferenceOptimizers, ClipGradNorm) {
  Vec a = {3, 4}, b = {12};
  double total = std::sqrt(ref::globalNormSquared(a.data(), 2) +
                           ref::globalNormSquared(b.data(), 1));
  EXPECT_DOUBLE_EQ(total, 13.0);
  EXPECT_DOUBLE_EQ(ref::clipFactor(total, 1.0), 1.0 / (13.0 + 1e-6));
  EXPECT_EQ(ref::clipFactor(0.5, 1.0), 1.0);
  EXPECT_EQ(ref::clipFactor(0.0, 1.0), 1.0);
  FVec f = {1e20f, 1e20f}; // would overflow a float accumulator
  EXPECT_DOUBLE_EQ(ref::globalNormSquared(f.data(), 2),
                   2.0 * double(1e20f) * double(1e20f));
}

} // namespace

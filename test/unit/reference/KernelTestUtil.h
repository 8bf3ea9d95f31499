// Helpers for the reference-kernel tests: random tensors, inner products and
// central finite differences in double.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace bitloom::reference::testing {

using Vec = std::vector<double>;

inline Vec randomVec(size_t n, std::mt19937 &rng, double lo = -1.0,
                     double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double &e : v)
    e = dist(rng);
  return v;
}

inline double dot(const Vec &a, const Vec &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

// Gradient of loss() w.r.t. x by the fourth-order central stencil
// (-f(x+2h) + 8f(x+h) - 8f(x-h) + f(x-2h)) / 12h: truncation O(h^4) and
// round-off O(eps/h) are both ~1e-12 at h = 1e-3, far below the 1e-6
// tolerance. x is perturbed in place and restored.
template <typename F> Vec finiteDiff(F loss, Vec &x, double h = 1e-3) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    auto at = [&](double d) {
      x[i] = x0 + d;
      return loss();
    };
    g[i] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h);
    x[i] = x0;
  }
  return g;
}

// Element-wise |a - n| <= rtol * max(|n|, 1e-3 * max|n|): relative, with a
// floor for elements that are tiny compared with the rest of the gradient.
inline void expectGradClose(const Vec &analytic, const Vec &numeric,
                            const std::string &what, double rtol = 1e-6) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  double scale = 0;
  for (double n : numeric)
    scale = std::max(scale, std::abs(n));
  ASSERT_GT(scale, 0) << what << ": all-zero numeric gradient";
  for (size_t i = 0; i < analytic.size(); ++i) {
    double tol = rtol * std::max(std::abs(numeric[i]), 1e-3 * scale);
    EXPECT_NEAR(analytic[i], numeric[i], tol) << what << " element " << i;
  }
}

} // namespace bitloom::reference::testing

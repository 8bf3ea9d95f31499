//===- KernelHarnessTest.h - A test suite sharing one harness ---*- C++ -*-===//
//
// Every kernel family's suite opens the Vulkan device once (a harness per
// test would create a device per test) and skips when there is none; and
// the comparison the suites share.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TEST_VULKAN_CODEGEN_KERNELHARNESSTEST_H
#define BITLOOM_TEST_VULKAN_CODEGEN_KERNELHARNESSTEST_H

#include "KernelHarness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace bitloom::test {

/// max |got - want| <= tolerance · max |want| (and no NaN).
inline void expectClose(const std::vector<float> &got,
                        const std::vector<float> &want, double tolerance,
                        const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0, worst = 0;
  size_t worstAt = 0;
  for (float w : want)
    scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i) {
    double diff = std::fabs(double(got[i]) - double(want[i]));
    if (!(diff <= worst)) {
      worst = std::isnan(diff) ? INFINITY : diff;
      worstAt = i;
    }
  }
  EXPECT_LE(worst, tolerance * std::max(scale, 1e-30))
      << what << ": worst at " << worstAt << ": got " << got[worstAt]
      << ", want " << want[worstAt] << " (max |want| " << scale << ")";
}

class KernelHarnessTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() { harness = new KernelHarness(); }
  static void TearDownTestSuite() {
    delete harness;
    harness = nullptr;
  }
  void SetUp() override {
    if (!harness->available())
      GTEST_SKIP() << harness->unavailableReason();
  }

  static inline KernelHarness *harness = nullptr;
};

} // namespace bitloom::test

#endif // BITLOOM_TEST_VULKAN_CODEGEN_KERNELHARNESSTEST_H

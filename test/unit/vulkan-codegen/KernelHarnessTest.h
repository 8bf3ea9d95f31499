//===- KernelHarnessTest.h - A test suite sharing one harness ---*- C++ -*-===//
//
// Every kernel family's suite opens the Vulkan device once (a harness per
// test would create a device per test) and skips when there is none.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TEST_VULKAN_CODEGEN_KERNELHARNESSTEST_H
#define BITLOOM_TEST_VULKAN_CODEGEN_KERNELHARNESSTEST_H

#include "KernelHarness.h"

#include <gtest/gtest.h>

namespace bitloom::test {

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

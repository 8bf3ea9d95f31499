//===- ForEachConfig.h - Every ISA and thread count -------------*- C++ -*-===//
#ifndef BITLOOM_TEST_UNIT_UKERNELS_FOREACHCONFIG_H
#define BITLOOM_TEST_UNIT_UKERNELS_FOREACHCONFIG_H

#include "ukernels/Internal.h"
#include "ukernels/Ukernels.h"

#include <gtest/gtest.h>

#include <string>

namespace bitloom::uk::test {

/// Runs `body` for every available ISA and thread count (1-3), then
/// restores the defaults so the tests stay independent.
template <typename F> void forEachConfig(F body) {
  for (Isa isa : availableIsas()) {
    ASSERT_TRUE(forceIsa(isa));
    for (int32_t threads : {1, 2, 3}) {
      bitloom_uk_set_threads(threads);
      SCOPED_TRACE(std::string("isa ") + isaName(isa) + ", threads " +
                   std::to_string(threads));
      body();
    }
  }
  resetIsa();
  bitloom_uk_set_threads(1);
}

} // namespace bitloom::uk::test

#endif // BITLOOM_TEST_UNIT_UKERNELS_FOREACHCONFIG_H

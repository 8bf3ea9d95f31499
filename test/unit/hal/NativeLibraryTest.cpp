//===- NativeLibraryTest.cpp - Loading shared objects from memory ---------===//
#include "hal/cpu/NativeLibrary.h"
#include "formats/Error.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <vector>

using bitloom::FormatError;
using bitloom::hal::cpu::NativeLibrary;

namespace {

std::vector<uint8_t> readFile(const char *path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST(NativeLibrary, LoadsFromMemoryAndCallsPackedEntries) {
  std::vector<uint8_t> bytes = readFile(BITLOOM_TEST_KERNELS);
  ASSERT_FALSE(bytes.empty());
  auto library =
      NativeLibrary::load("test.blm: executable 0", bytes.data(), bytes.size());
  auto axpy = library->lookup("bitloom_test_axpy");
  float x[3] = {1, 2, 3}, y[3] = {10, 20, 30};
  long n = 3;
  void *bindings[] = {x, y, &n};
  axpy(bindings);
  EXPECT_FLOAT_EQ(y[0], 12);
  EXPECT_FLOAT_EQ(y[2], 36);
}

TEST(NativeLibrary, MissingEntryNamesIt) {
  std::vector<uint8_t> bytes = readFile(BITLOOM_TEST_KERNELS);
  auto library = NativeLibrary::load("m.blm", bytes.data(), bytes.size());
  try {
    library->lookup("train_step");
    FAIL() << "expected an error";
  } catch (const FormatError &e) {
    EXPECT_STREQ(e.what(), "m.blm: train_step: entry point not found");
  }
}

TEST(NativeLibrary, RejectsWhatIsNotASharedObject) {
  std::vector<uint8_t> junk(128, 0x42);
  EXPECT_THROW(NativeLibrary::load("j.blm", junk.data(), junk.size()),
               FormatError);
  // An ELF of another machine is named as such.
  std::vector<uint8_t> bytes = readFile(BITLOOM_TEST_KERNELS);
  bytes[18] = 183; // e_machine = EM_AARCH64 (x86-64 hosts) ...
  bytes[19] = 0;
  if (bytes[18] == 183) {
#if defined(__x86_64__)
    try {
      NativeLibrary::load("a.blm", bytes.data(), bytes.size());
      FAIL() << "expected an error";
    } catch (const FormatError &e) {
      EXPECT_STREQ(e.what(), "a.blm: compiled for arm64, but this machine is "
                             "x86-64");
    }
#endif
  }
  // Truncated: the header is fine but the loader must refuse, not crash.
  std::vector<uint8_t> good = readFile(BITLOOM_TEST_KERNELS);
  good.resize(200);
  EXPECT_THROW(NativeLibrary::load("t.blm", good.data(), good.size()),
               FormatError);
}

} // namespace

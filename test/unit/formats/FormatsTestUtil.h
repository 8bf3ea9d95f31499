//===- FormatsTestUtil.h - Helpers for the file-format tests ----*- C++ -*-===//
#ifndef BITLOOM_TEST_FORMATS_TESTUTIL_H
#define BITLOOM_TEST_FORMATS_TESTUTIL_H

#include "formats/Error.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace bitloom::test {

/// A fresh directory under /tmp, removed with everything in it.
class TempDir {
public:
  TempDir() {
    char tmpl[] = "/tmp/bitloom-formats-XXXXXX";
    const char *p = ::mkdtemp(tmpl);
    if (!p)
      throw std::runtime_error("mkdtemp failed");
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string &name) const { return path_ + "/" + name; }
  const std::string &path() const { return path_; }
  /// Names of the entries in the directory (to catch leftover temp files).
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto &e : std::filesystem::directory_iterator(path_))
      out.push_back(e.path().filename().string());
    return out;
  }

private:
  std::string path_;
};

inline void writeBytes(const std::string &path,
                       const std::vector<uint8_t> &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

inline std::vector<uint8_t> readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

/// Little-endian byte builder for hand-made (and hand-broken) files.
struct Bytes {
  std::vector<uint8_t> b;
  template <typename T> Bytes &put(T v) {
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    b.insert(b.end(), raw, raw + sizeof(T));
    return *this;
  }
  Bytes &u8(uint8_t v) { return put(v); }
  Bytes &u32(uint32_t v) { return put(v); }
  Bytes &u64(uint64_t v) { return put(v); }
  Bytes &i64(int64_t v) { return put(v); }
  Bytes &str(const std::string &s) {
    u64(s.size());
    return raw(s);
  }
  Bytes &raw(const std::string &s) {
    // push_back, not insert: GCC 12 warns falsely on the inlined insert.
    for (char c : s)
      b.push_back(uint8_t(c));
    return *this;
  }
  Bytes &zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
  Bytes &padTo(size_t align) {
    return zeros((align - b.size() % align) % align);
  }
};

/// Passes when `fn` throws a FormatError whose message contains every one of
/// `parts` (the file path, the field, the problem).
template <typename F>
::testing::AssertionResult
throwsFormatError(F &&fn, const std::vector<std::string> &parts) {
  try {
    fn();
  } catch (const FormatError &e) {
    std::string msg = e.what();
    for (const std::string &p : parts)
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure()
               << "message \"" << msg << "\" lacks \"" << p << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception &e) {
    return ::testing::AssertionFailure()
           << "threw something other than FormatError: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

#define EXPECT_FORMAT_ERROR(stmt, ...)                                         \
  EXPECT_TRUE(::bitloom::test::throwsFormatError([&] { stmt; }, {__VA_ARGS__}))

} // namespace bitloom::test

#endif // BITLOOM_TEST_FORMATS_TESTUTIL_H

//===- UkernelsTest.cpp - CPU micro-kernels against naive references ------===//
//
// Every kernel is checked on every ISA this machine can run (forceIsa) and
// with 1, 2 and 3 threads, over shapes that hit the register-tile, cache
// block and thread-split edges: the ternary forward bit for bit against an
// int64 reference, the f32 products against float64 references.
//
//===----------------------------------------------------------------------===//
#include "ukernels/Ukernels.h"
#include "ForEachConfig.h"
#include "ukernels/Internal.h"
#include "ukernels/ThreadPool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace bitloom::uk;
using bitloom::uk::test::forEachConfig;

namespace {

std::vector<int8_t> randomTernary(std::mt19937 &rng, int64_t count) {
  std::uniform_int_distribution<int> dist(-1, 1);
  std::vector<int8_t> w(static_cast<size_t>(count));
  for (int8_t &v : w)
    v = int8_t(dist(rng));
  return w;
}

std::vector<float> randomFloats(std::mt19937 &rng, int64_t count) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (float &x : v)
    x = dist(rng);
  return v;
}

std::vector<uint8_t> pack(const std::vector<int8_t> &w, int64_t n, int64_t k) {
  std::vector<uint8_t> packed(size_t(n * bitloom_uk_packed_row_bytes(k)));
  bitloom_uk_pack_ternary(w.data(), n, k, packed.data());
  return packed;
}

// Tolerance for an f32 dot product of `k` terms whose exact value is `ref`
// and whose terms have L2 norm `norm`.
void expectClose(float got, double ref, double norm, int64_t k,
                 const std::string &where) {
  double tol = 1e-5 * std::sqrt(double(k > 0 ? k : 1)) * norm + 1e-30;
  ASSERT_LE(std::fabs(double(got) - ref), tol)
      << where << ": got " << got << ", expected " << ref;
}

} // namespace

//===----------------------------------------------------------------------===//
// Packing
//===----------------------------------------------------------------------===//

TEST(UkernelsPack, RowBytes) {
  EXPECT_EQ(bitloom_uk_packed_row_bytes(0), 0);
  EXPECT_EQ(bitloom_uk_packed_row_bytes(1), 32);
  EXPECT_EQ(bitloom_uk_packed_row_bytes(128), 32);
  EXPECT_EQ(bitloom_uk_packed_row_bytes(129), 64);
  EXPECT_EQ(bitloom_uk_packed_row_bytes(768), 192);
}

TEST(UkernelsPack, RoundTripAndPadding) {
  std::mt19937 rng(1);
  for (int64_t k : {1, 5, 31, 32, 33, 100, 127, 128, 129, 300, 768}) {
    for (int64_t n : {1, 3, 17}) {
      std::vector<int8_t> w = randomTernary(rng, n * k);
      std::vector<uint8_t> packed = pack(w, n, k);
      std::vector<int8_t> back(size_t(n * k), 42);
      bitloom_uk_unpack_ternary(packed.data(), n, k, back.data());
      ASSERT_EQ(back, w) << "n " << n << " k " << k;
      // Columns >= k store 1 (w = 0).
      int64_t rowBytes = bitloom_uk_packed_row_bytes(k);
      for (int64_t o = 0; o < n; ++o)
        for (int64_t c = k; c < rowBytes * 4; ++c) {
          uint8_t byte = packed[size_t(o * rowBytes + (c / 128) * 32 + c % 32)];
          ASSERT_EQ((byte >> (2 * ((c / 32) % 4))) & 3, 1)
              << "n " << n << " k " << k << " column " << c;
        }
    }
  }
}

TEST(UkernelsPack, LayoutMatchesTheDocumentedFormula) {
  // One -1 at column c of row 1 of a [2, 300] matrix lands in byte
  // rowBytes + 32 * (c / 128) + c % 32 at bits 2 * ((c % 128) / 32).
  const int64_t n = 2, k = 300, rowBytes = bitloom_uk_packed_row_bytes(k);
  for (int64_t c : {0, 31, 32, 77, 127, 128, 200, 299}) {
    std::vector<int8_t> w(size_t(n * k), 0);
    w[size_t(k + c)] = -1;
    std::vector<uint8_t> packed = pack(w, n, k);
    for (int64_t byte = 0; byte < n * rowBytes; ++byte) {
      uint8_t expected = 0x55;
      if (byte == rowBytes + 32 * (c / 128) + c % 32)
        expected = uint8_t(0x55 & ~(1u << (2 * ((c % 128) / 32))));
      ASSERT_EQ(packed[size_t(byte)], expected)
          << "c " << c << " byte " << byte;
    }
  }
}

//===----------------------------------------------------------------------===//
// Ternary forward
//===----------------------------------------------------------------------===//

namespace {

void checkTernaryMatmul(int64_t m, int64_t n, int64_t k,
                        const std::vector<int8_t> &x,
                        const std::vector<int8_t> &w) {
  std::mt19937 rng(uint32_t(m * 131 + n * 7 + k));
  std::vector<uint8_t> packed = pack(w, n, k);
  std::vector<float> factor = randomFloats(rng, m);
  std::vector<float> expected(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t o = 0; o < n; ++o) {
      int64_t sum = 0;
      for (int64_t c = 0; c < k; ++c)
        sum += int64_t(x[size_t(i * k + c)]) * w[size_t(o * k + c)];
      expected[size_t(i * n + o)] = float(int32_t(sum)) * factor[size_t(i)];
    }
  forEachConfig([&] {
    std::vector<float> y(size_t(m * n), -7.0f);
    bitloom_uk_ternary_matmul(x.data(), packed.data(), factor.data(), y.data(),
                              m, n, k);
    for (int64_t idx = 0; idx < m * n; ++idx)
      ASSERT_EQ(y[size_t(idx)], expected[size_t(idx)])
          << "m " << m << " n " << n << " k " << k << " at row " << idx / n
          << " output " << idx % n;
  });
}

} // namespace

TEST(UkernelsTernaryMatmul, ExactOnRandomShapes) {
  std::mt19937 rng(2);
  std::uniform_int_distribution<int> byte(-128, 127);
  const int64_t shapes[][3] = {
      {1, 1, 1},     {1, 7, 127},    {7, 1, 128},     {7, 7, 129},
      {1, 16, 300},  {127, 7, 1},    {128, 129, 7},   {129, 128, 768},
      {300, 7, 300}, {7, 300, 768},  {128, 768, 128}, {129, 300, 768},
      {6, 64, 256},  {13, 65, 1000}, {300, 1, 129},   {1, 300, 300}};
  for (const auto &s : shapes) {
    int64_t m = s[0], n = s[1], k = s[2];
    std::vector<int8_t> x(size_t(m * k));
    for (int8_t &v : x)
      v = int8_t(byte(rng));
    checkTernaryMatmul(m, n, k, x, randomTernary(rng, n * k));
  }
}

TEST(UkernelsTernaryMatmul, ExtremeValues) {
  // All -128 against all +1 / all -1 rows, and +127: the largest sums the
  // u8 * s8 products and their pairwise i16 sums can produce.
  for (int64_t k : {127, 128, 768, 2048}) {
    const int64_t m = 3, n = 20;
    std::vector<int8_t> x(size_t(m * k));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t c = 0; c < k; ++c)
        x[size_t(i * k + c)] = int8_t(i == 0   ? -128
                                      : i == 1 ? 127
                                               : (c % 2 ? -128 : 127));
    std::vector<int8_t> w(size_t(n * k));
    for (int64_t o = 0; o < n; ++o)
      for (int64_t c = 0; c < k; ++c)
        w[size_t(o * k + c)] = int8_t(o % 3 == 0   ? 1
                                      : o % 3 == 1 ? -1
                                                   : (c % 2 ? -1 : 1));
    checkTernaryMatmul(m, n, k, x, w);
  }
}

TEST(UkernelsTernaryMatmul, ZeroK) {
  std::vector<float> factor = {1.0f, 2.0f}, y(6, 5.0f);
  int8_t x = 0;
  uint8_t w = 0;
  bitloom_uk_ternary_matmul(&x, &w, factor.data(), y.data(), 2, 3, 0);
  for (float v : y)
    EXPECT_EQ(v, 0.0f);
}

//===----------------------------------------------------------------------===//
// Ternary input gradient
//===----------------------------------------------------------------------===//

TEST(UkernelsTernaryMatmulT, MatchesDoubleReference) {
  std::mt19937 rng(3);
  const int64_t shapes[][3] = {
      {1, 1, 1},      {1, 7, 127},   {7, 1, 128},     {7, 7, 129},
      {3, 300, 33},   {127, 5, 300}, {128, 129, 768}, {129, 300, 300},
      {31, 768, 65},  {2, 1000, 1},  {300, 40, 200},  {128, 2048, 96},
      {300, 2048, 40}};
  for (const auto &s : shapes) {
    int64_t m = s[0], n = s[1], k = s[2];
    std::vector<int8_t> w = randomTernary(rng, n * k);
    std::vector<uint8_t> packed = pack(w, n, k);
    std::vector<float> dy = randomFloats(rng, m * n);
    const float scale = 0.37f;
    std::vector<double> ref(size_t(m * k)), norm(size_t(m * k));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t c = 0; c < k; ++c) {
        double sum = 0, sq = 0;
        for (int64_t o = 0; o < n; ++o) {
          double term = double(dy[size_t(i * n + o)]) * w[size_t(o * k + c)];
          sum += term;
          sq += term * term;
        }
        ref[size_t(i * k + c)] = scale * sum;
        norm[size_t(i * k + c)] = scale * std::sqrt(sq);
      }
    forEachConfig([&] {
      std::vector<float> dx(size_t(m * k), 99.0f);
      bitloom_uk_ternary_matmul_t(dy.data(), packed.data(), scale, dx.data(), m,
                                  n, k);
      for (int64_t idx = 0; idx < m * k; ++idx)
        expectClose(dx[size_t(idx)], ref[size_t(idx)], norm[size_t(idx)], n,
                    "m " + std::to_string(m) + " n " + std::to_string(n) +
                        " k " + std::to_string(k) + " at " +
                        std::to_string(idx));
    });
  }
}

//===----------------------------------------------------------------------===//
// f32 GEMM
//===----------------------------------------------------------------------===//

TEST(UkernelsMatmulF32, AllTransposesAndAccumulate) {
  std::mt19937 rng(4);
  const int64_t shapes[][3] = {{1, 1, 1},       {1, 7, 127},     {7, 1, 128},
                               {7, 33, 129},    {9, 31, 257},    {17, 300, 5},
                               {128, 100, 768}, {129, 300, 300}, {300, 40, 33},
                               {33, 1000, 64},  {800, 40, 768},  {2, 2, 0}};
  for (const auto &s : shapes) {
    int64_t m = s[0], n = s[1], k = s[2];
    std::vector<float> a = randomFloats(rng, m * k),
                       b = randomFloats(rng, k * n);
    std::vector<float> c0 = randomFloats(rng, m * n);
    for (int transA = 0; transA < 2; ++transA)
      for (int transB = 0; transB < 2; ++transB) {
        std::vector<double> prod(size_t(m * n)), norm(size_t(m * n));
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double sum = 0, sq = 0;
            for (int64_t p = 0; p < k; ++p) {
              double av = transA ? a[size_t(p * m + i)] : a[size_t(i * k + p)];
              double bv = transB ? b[size_t(j * k + p)] : b[size_t(p * n + j)];
              sum += av * bv;
              sq += av * bv * av * bv;
            }
            prod[size_t(i * n + j)] = sum;
            norm[size_t(i * n + j)] = std::sqrt(sq);
          }
        for (int accumulate = 0; accumulate < 2; ++accumulate)
          forEachConfig([&] {
            std::vector<float> c =
                accumulate ? c0 : std::vector<float>(c0.size(), NAN);
            bitloom_uk_matmul_f32(a.data(), b.data(), c.data(), m, n, k, transA,
                                  transB, accumulate);
            for (int64_t idx = 0; idx < m * n; ++idx) {
              double ref =
                  prod[size_t(idx)] + (accumulate ? c0[size_t(idx)] : 0.0);
              expectClose(c[size_t(idx)], ref,
                          norm[size_t(idx)] + (accumulate ? 1.0 : 0.0), k,
                          "m " + std::to_string(m) + " n " + std::to_string(n) +
                              " k " + std::to_string(k) + " transA " +
                              std::to_string(transA) + " transB " +
                              std::to_string(transB) + " accumulate " +
                              std::to_string(accumulate) + " at " +
                              std::to_string(idx));
            }
          });
      }
  }
}

/// bf16 bits of a float, rounded to nearest even (inputs here are finite).
uint16_t toBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float fromBf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// B in bf16 is widened exactly, so the product equals the f32 GEMM's on the
// widened B: compared with a float64 reference of that, and bit for bit with
// bitloom_uk_matmul_f32 on the same ISA (the same packing order and tile).
TEST(UkernelsMatmulF32Bf16B, AllTransposesAndAccumulate) {
  std::mt19937 rng(5);
  const int64_t shapes[][3] = {{1, 1, 1},      {1, 7, 127},     {7, 1, 128},
                               {7, 33, 129},   {9, 31, 257},    {17, 300, 5},
                               {5, 17, 15},    {128, 100, 768}, {300, 40, 33},
                               {33, 1000, 64}, {6, 2050, 96},   {2, 2, 0}};
  for (const auto &s : shapes) {
    int64_t m = s[0], n = s[1], k = s[2];
    std::vector<float> a = randomFloats(rng, m * k);
    std::vector<float> bf = randomFloats(rng, k * n);
    std::vector<uint16_t> b(bf.size());
    for (size_t i = 0; i < bf.size(); ++i) {
      b[i] = toBf16(bf[i] * 3.0f);
      bf[i] = fromBf16(b[i]);
    }
    std::vector<float> c0 = randomFloats(rng, m * n);
    for (int transA = 0; transA < 2; ++transA)
      for (int transB = 0; transB < 2; ++transB) {
        std::vector<double> prod(size_t(m * n)), norm(size_t(m * n));
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double sum = 0, sq = 0;
            for (int64_t p = 0; p < k; ++p) {
              double av = transA ? a[size_t(p * m + i)] : a[size_t(i * k + p)];
              double bv =
                  transB ? bf[size_t(j * k + p)] : bf[size_t(p * n + j)];
              sum += av * bv;
              sq += av * bv * av * bv;
            }
            prod[size_t(i * n + j)] = sum;
            norm[size_t(i * n + j)] = std::sqrt(sq);
          }
        for (int accumulate = 0; accumulate < 2; ++accumulate)
          forEachConfig([&] {
            std::vector<float> c =
                accumulate ? c0 : std::vector<float>(c0.size(), NAN);
            std::vector<float> same = c;
            bitloom_uk_matmul_f32_bf16b(a.data(), b.data(), c.data(), m, n, k,
                                        transA, transB, accumulate);
            bitloom_uk_matmul_f32(a.data(), bf.data(), same.data(), m, n, k,
                                  transA, transB, accumulate);
            std::string where = "m " + std::to_string(m) + " n " +
                                std::to_string(n) + " k " + std::to_string(k) +
                                " transA " + std::to_string(transA) +
                                " transB " + std::to_string(transB) +
                                " accumulate " + std::to_string(accumulate);
            ASSERT_EQ(
                std::memcmp(c.data(), same.data(), c.size() * sizeof(float)), 0)
                << where << ": differs from bitloom_uk_matmul_f32";
            for (int64_t idx = 0; idx < m * n; ++idx) {
              double ref =
                  prod[size_t(idx)] + (accumulate ? c0[size_t(idx)] : 0.0);
              expectClose(c[size_t(idx)], ref,
                          norm[size_t(idx)] + (accumulate ? 1.0 : 0.0), k,
                          where + " at " + std::to_string(idx));
            }
          });
      }
  }
}

// Special values widen exactly: infinities, subnormals, the largest finite
// value (-0 would become +0 in the zero-initialized sum).
TEST(UkernelsMatmulF32Bf16B, WidensExactly) {
  const uint16_t values[] = {0x0000, 0x3F80, 0xBF80, 0x7F80, 0xFF80,
                             0x0001, 0x807F, 0x7F7F, 0x4049};
  const int64_t n = sizeof(values) / sizeof(values[0]);
  float one = 1.0f;
  forEachConfig([&] {
    for (int transB = 0; transB < 2; ++transB) {
      // m = 1, k = 1: c[j] = 1 * b[j] (the same memory either way).
      std::vector<float> c(size_t(n), NAN);
      bitloom_uk_matmul_f32_bf16b(&one, values, c.data(), 1, n, 1, 0, transB,
                                  0);
      for (int64_t j = 0; j < n; ++j) {
        float expected = fromBf16(values[j]);
        ASSERT_EQ(std::memcmp(&c[size_t(j)], &expected, 4), 0)
            << "transB " << transB << " value " << std::hex << values[j];
      }
    }
  });
}

//===----------------------------------------------------------------------===//
// Threads and dispatch
//===----------------------------------------------------------------------===//

TEST(UkernelsThreads, SetThreadsReturnsThePreviousCount) {
  int32_t original = bitloom_uk_set_threads(3);
  EXPECT_EQ(bitloom_uk_threads(), 3);
  EXPECT_EQ(bitloom_uk_set_threads(0), 3);
  EXPECT_EQ(bitloom_uk_threads(), 1);
  EXPECT_EQ(bitloom_uk_set_threads(-5), 1);
  EXPECT_EQ(bitloom_uk_threads(), 1);
  bitloom_uk_set_threads(original);
}

TEST(UkernelsThreads, ParallelForCoversEachIndexOnce) {
  for (int32_t threads = 1; threads <= 4; ++threads) {
    ThreadPool pool(threads);
    for (int64_t count = 0; count <= 20; ++count)
      for (int repeat = 0; repeat < 20; ++repeat) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(count));
        std::atomic<int> calls{0};
        pool.parallelFor(count, [&](int64_t begin, int64_t end) {
          ASSERT_LT(begin, end);
          for (int64_t i = begin; i < end; ++i)
            hits[size_t(i)].fetch_add(1);
          calls.fetch_add(1);
        });
        for (int64_t i = 0; i < count; ++i)
          ASSERT_EQ(hits[size_t(i)].load(), 1)
              << threads << " threads, count " << count;
        ASSERT_EQ(calls.load(), count < threads ? count : threads);
      }
  }
}

TEST(UkernelsDispatch, ScalarIsAlwaysAvailable) {
  std::vector<Isa> isas = availableIsas();
  ASSERT_FALSE(isas.empty());
  std::string names;
  for (Isa isa : isas)
    names += std::string(names.empty() ? "" : ",") + isaName(isa);
  RecordProperty("isas", names);
  std::printf("available ISAs: %s\n", names.c_str());
  EXPECT_EQ(isas.front(), Isa::Scalar);
  EXPECT_TRUE(forceIsa(Isa::Scalar));
  EXPECT_EQ(activeIsa(), Isa::Scalar);
  resetIsa();
  EXPECT_EQ(activeIsa(), isas.back());
#if defined(__x86_64__)
  EXPECT_FALSE(forceIsa(Isa::NeonDot));
#elif defined(__aarch64__)
  EXPECT_FALSE(forceIsa(Isa::Avx512));
  EXPECT_TRUE(forceIsa(Isa::Neon));
  resetIsa();
#endif
  EXPECT_EQ(activeIsa(), isas.back());
}

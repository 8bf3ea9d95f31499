//===- MatmulKernelsTest.cpp - GPU matmul kernels vs the CPU ukernels -----===//
//
// The kernels of MatmulKernels.cpp on the Vulkan device against the CPU
// micro-kernels on random data: the ternary forward bit for bit, the
// transposed ternary product and the f32 / bf16 GEMMs within 1e-5 of the
// sum of the magnitudes of their terms. Shapes leave partial tiles in every
// dimension; BITLOOM_VULKAN_MATMUL_TILE forces each tile size in turn, and
// targets with and without the integer dot product, and with the generic
// profile's limits, are covered.
//
//===----------------------------------------------------------------------===//
#include "KernelHarnessTest.h"

#include "ukernels/Ukernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

using bitloom::codegen::vulkan::KernelTarget;
using namespace bitloom::test;

namespace {

/// Sets BITLOOM_VULKAN_MATMUL_TILE for one scope.
class ForcedTile {
public:
  explicit ForcedTile(const std::string &tile) {
    if (!tile.empty())
      setenv("BITLOOM_VULKAN_MATMUL_TILE", tile.c_str(), 1);
  }
  ~ForcedTile() { unsetenv("BITLOOM_VULKAN_MATMUL_TILE"); }
};

/// Sets BITLOOM_VULKAN_MATMUL_SPLIT (k-groups per workgroup) for one scope.
class ForcedSplit {
public:
  explicit ForcedSplit(int splits) {
    setenv("BITLOOM_VULKAN_MATMUL_SPLIT", std::to_string(splits).c_str(), 1);
  }
  ~ForcedSplit() { unsetenv("BITLOOM_VULKAN_MATMUL_SPLIT"); }
};

class MatmulKernelsTest : public KernelHarnessTest {
protected:
  /// The device's own limits, with or without the dot product.
  KernelTarget device(bool dot) const {
    KernelTarget t = harness->deviceTarget();
    t.integerDotProduct = t.integerDotProduct && dot;
    // The scalar kernels: the tensor-core one has its own test.
    t.cooperativeMatrixInt8 = false;
    return t;
  }
  /// The generic profile: 128 invocations, 16 KiB, no 8-bit features.
  static KernelTarget generic() { return KernelTarget(); }

  std::mt19937 rng{1234};
};

std::string memrefType(std::initializer_list<int64_t> shape,
                       const std::string &elt) {
  std::string s = "memref<";
  for (int64_t d : shape)
    s += std::to_string(d) + "x";
  return s + elt + ">";
}

std::string describe(const KernelTarget &t) {
  return "target{invocations " + std::to_string(t.maxWorkgroupInvocations) +
         ", shared " + std::to_string(t.sharedMemoryBytes) + ", dot " +
         std::to_string(t.integerDotProduct) + "}";
}

//===----------------------------------------------------------------------===//
// Ternary forward
//===----------------------------------------------------------------------===//

struct TernaryCase {
  int64_t m, n, k;
};

/// Runs the GPU and CPU forward on one random problem; expects equal bits.
void checkTernary(KernelHarness &h, std::mt19937 &rng, TernaryCase c,
                  const KernelTarget &target, const std::string &tile = "",
                  const std::string &mustContain = "") {
  SCOPED_TRACE("m " + std::to_string(c.m) + " n " + std::to_string(c.n) +
               " k " + std::to_string(c.k) + " " + describe(target) +
               " tile '" + tile + "'");
  std::uniform_int_distribution<int> byte(-128, 127), trit(-1, 1);
  std::uniform_real_distribution<float> factor(1e-4f, 2.0f);
  std::vector<int8_t> xq(c.m * c.k), w(c.n * c.k);
  for (int8_t &v : xq)
    v = int8_t(byte(rng));
  // Extremes in some rows: sums far from zero.
  for (int64_t j = 0; j < c.k; ++j)
    xq[j] = -128;
  for (int8_t &v : w)
    v = int8_t(trit(rng));
  int64_t rowBytes = bitloom_uk_packed_row_bytes(c.k);
  std::vector<uint8_t> packed(c.n * rowBytes);
  bitloom_uk_pack_ternary(w.data(), c.n, c.k, packed.data());
  std::vector<float> rowFactor(c.m);
  for (float &f : rowFactor)
    f = factor(rng);
  std::vector<float> expected(c.m * c.n);
  bitloom_uk_ternary_matmul(xq.data(), packed.data(), rowFactor.data(),
                            expected.data(), c.m, c.n, c.k);

  ForcedTile forced(tile);
  HarnessResult r = h.run("bitloom_uk_ternary_matmul",
                          {{memrefType({c.m, c.k}, "i8"), toBytes(xq)},
                           {memrefType({c.n, rowBytes}, "i8"), toBytes(packed)},
                           {memrefType({c.m}, "f32"), toBytes(rowFactor)},
                           {memrefType({c.m, c.n}, "f32"), {}}},
                          {HarnessOperand::buffer(0), HarnessOperand::buffer(1),
                           HarnessOperand::buffer(2), HarnessOperand::buffer(3),
                           HarnessOperand::i64(c.m), HarnessOperand::i64(c.n),
                           HarnessOperand::i64(c.k)},
                          target);
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.kernels.size(), 1u);
  if (!tile.empty())
    EXPECT_NE(r.kernels[0].find("_t" + tile + "_"), std::string::npos)
        << r.kernels[0];
  EXPECT_NE(r.kernels[0].find(mustContain), std::string::npos) << r.kernels[0];
  std::vector<float> y = fromBytes<float>(r.buffers[3]);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < c.m * c.n; ++i)
    if (std::memcmp(&y[i], &expected[i], 4) != 0 && ++mismatches <= 5)
      ADD_FAILURE() << "y[" << i / c.n << ", " << i % c.n << "] = " << y[i]
                    << ", CPU " << expected[i] << " (" << r.kernels[0] << ")";
  EXPECT_EQ(mismatches, 0);
}

const TernaryCase kTernaryCases[] = {
    {1, 1, 4},     {3, 5, 128},    {37, 70, 200},
    {64, 64, 256}, {70, 130, 388}, {130, 129, 644},
};

// The tensor-core kernel (where the device has VK_KHR_cooperative_matrix's
// int8 product; lavapipe has not): the same bits as the CPU.
TEST_F(MatmulKernelsTest, TernaryForwardExactOnCooperativeMatrices) {
  KernelTarget t = harness->deviceTarget();
  t.subgroupSize = 32; // what the device reports, not a profile minimum
  if (!t.cooperativeMatrixInt8 || harness->deviceTarget().subgroupSize != 32)
    GTEST_SKIP() << "the device has no 16x16x32 int8 cooperative matrix "
                    "product on 32-lane subgroups";
  for (TernaryCase c : {TernaryCase{64, 64, 128}, TernaryCase{128, 192, 384},
                        TernaryCase{512, 256, 768}})
    checkTernary(*harness, rng, c, t, "", "_coop64x64");
  // Shapes the tiles do not divide take the scalar kernels.
  checkTernary(*harness, rng, {70, 130, 388}, t, "", "_dot");
}

TEST_F(MatmulKernelsTest, TernaryForwardExactWithDotProduct) {
  KernelTarget t = device(true);
  if (!t.integerDotProduct)
    GTEST_SKIP() << "the device has no integer dot product";
  for (TernaryCase c : kTernaryCases)
    checkTernary(*harness, rng, c, t, "", "_dot");
}

TEST_F(MatmulKernelsTest, TernaryForwardExactWithoutDotProduct) {
  for (TernaryCase c : kTernaryCases)
    checkTernary(*harness, rng, c, device(false), "", "_imul");
}

TEST_F(MatmulKernelsTest, TernaryForwardExactGenericProfile) {
  for (TernaryCase c : kTernaryCases)
    checkTernary(*harness, rng, c, generic());
}

TEST_F(MatmulKernelsTest, TernaryForwardEveryTile) {
  for (const char *tile :
       {"128x128", "128x64", "64x128", "64x64", "32x64", "32x32"})
    for (bool dot : {true, false})
      checkTernary(*harness, rng, {150, 140, 300}, device(dot), tile);
}

TEST_F(MatmulKernelsTest, TernaryForwardSplitK) {
  // 11 blocks: every split leaves some k-groups a block short.
  for (int splits : {2, 4})
    for (bool dot : {true, false}) {
      ForcedSplit forced(splits);
      checkTernary(*harness, rng, {40, 70, 1292}, device(dot), "",
                   "_s" + std::to_string(splits) + "_");
    }
}

TEST_F(MatmulKernelsTest, TernaryForwardRejectsUnalignedK) {
  std::vector<int8_t> xq(2 * 6);
  HarnessResult r = harness->run(
      "bitloom_uk_ternary_matmul",
      {{"memref<2x6xi8>", toBytes(xq)},
       {"memref<3x32xi8>", {}},
       {"memref<2xf32>", {}},
       {"memref<2x3xf32>", {}}},
      {HarnessOperand::buffer(0), HarnessOperand::buffer(1),
       HarnessOperand::buffer(2), HarnessOperand::buffer(3),
       HarnessOperand::i64(2), HarnessOperand::i64(3), HarnessOperand::i64(6)},
      generic());
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("k % 4 == 0"), std::string::npos) << r.error;
}

//===----------------------------------------------------------------------===//
// Ternary transposed product
//===----------------------------------------------------------------------===//

void checkTernaryT(KernelHarness &h, std::mt19937 &rng, TernaryCase c,
                   const KernelTarget &target, const std::string &tile = "",
                   const std::string &mustContain = "") {
  SCOPED_TRACE("m " + std::to_string(c.m) + " n " + std::to_string(c.n) +
               " k " + std::to_string(c.k) + " " + describe(target) +
               " tile '" + tile + "'");
  std::uniform_int_distribution<int> trit(-1, 1);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> dy(c.m * c.n);
  for (float &v : dy)
    v = value(rng);
  std::vector<int8_t> w(c.n * c.k);
  for (int8_t &v : w)
    v = int8_t(trit(rng));
  int64_t rowBytes = bitloom_uk_packed_row_bytes(c.k);
  std::vector<uint8_t> packed(c.n * rowBytes);
  bitloom_uk_pack_ternary(w.data(), c.n, c.k, packed.data());
  float scale = 0.37f;
  std::vector<float> expected(c.m * c.k);
  bitloom_uk_ternary_matmul_t(dy.data(), packed.data(), scale, expected.data(),
                              c.m, c.n, c.k);

  ForcedTile forced(tile);
  HarnessResult r = h.run("bitloom_uk_ternary_matmul_t",
                          {{memrefType({c.m, c.n}, "f32"), toBytes(dy)},
                           {memrefType({c.n, rowBytes}, "i8"), toBytes(packed)},
                           {"memref<f32>", toBytes(std::vector<float>{scale})},
                           {memrefType({c.m, c.k}, "f32"), {}}},
                          {HarnessOperand::buffer(0), HarnessOperand::buffer(1),
                           HarnessOperand::buffer(2), HarnessOperand::buffer(3),
                           HarnessOperand::i64(c.m), HarnessOperand::i64(c.n),
                           HarnessOperand::i64(c.k)},
                          target);
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.kernels.size(), 1u);
  if (!tile.empty())
    EXPECT_NE(r.kernels[0].find("_t" + tile + "_"), std::string::npos)
        << r.kernels[0];
  EXPECT_NE(r.kernels[0].find(mustContain), std::string::npos) << r.kernels[0];
  std::vector<float> dx = fromBytes<float>(r.buffers[3]);
  int64_t bad = 0;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.k; ++j) {
      double magnitude = 0;
      for (int64_t o = 0; o < c.n; ++o)
        magnitude += std::fabs(double(dy[i * c.n + o]) * w[o * c.k + j]);
      double bound = 1e-5 * std::fabs(scale) * magnitude + 1e-30;
      double got = dx[i * c.k + j], want = expected[i * c.k + j];
      if (!(std::fabs(got - want) <= bound) && ++bad <= 5)
        ADD_FAILURE() << "dx[" << i << ", " << j << "] = " << got << ", CPU "
                      << want << " (bound " << bound << ", " << r.kernels[0]
                      << ")";
    }
  EXPECT_EQ(bad, 0);
}

TEST_F(MatmulKernelsTest, TernaryTransposed) {
  for (TernaryCase c :
       {TernaryCase{1, 1, 1}, TernaryCase{3, 5, 128}, TernaryCase{37, 70, 200},
        TernaryCase{70, 33, 300}, TernaryCase{130, 129, 644}}) {
    checkTernaryT(*harness, rng, c, device(true));
    checkTernaryT(*harness, rng, c, generic());
  }
}

TEST_F(MatmulKernelsTest, TernaryTransposedEveryTile) {
  for (const char *tile : {"128x128", "64x128", "32x128"})
    checkTernaryT(*harness, rng, {150, 40, 300}, device(true), tile);
}

TEST_F(MatmulKernelsTest, TernaryTransposedSplitK) {
  // n = 300: 19 chunks of 16. (More k-groups of a whole packed block's
  // columns do not fit in lavapipe's 32 KiB.)
  for (int splits : {2}) {
    ForcedSplit forced(splits);
    checkTernaryT(*harness, rng, {40, 300, 260}, device(true), "",
                  "_s" + std::to_string(splits));
  }
}

//===----------------------------------------------------------------------===//
// Dense GEMMs
//===----------------------------------------------------------------------===//

struct GemmCase {
  int64_t m, n, k;
};

uint16_t toBf16Bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return uint16_t(bits >> 16);
}
float fromBf16Bits(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void checkGemm(KernelHarness &h, std::mt19937 &rng, GemmCase c, bool transA,
               bool transB, bool accumulate, bool bf16,
               const KernelTarget &target, const std::string &tile = "",
               const std::string &mustContain = "") {
  SCOPED_TRACE("m " + std::to_string(c.m) + " n " + std::to_string(c.n) +
               " k " + std::to_string(c.k) + " transA " +
               std::to_string(transA) + " transB " + std::to_string(transB) +
               " accumulate " + std::to_string(accumulate) + " bf16 " +
               std::to_string(bf16) + " " + describe(target) + " tile '" +
               tile + "'");
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> a(c.m * c.k), bf(c.k * c.n), c0(c.m * c.n);
  for (float &v : a)
    v = value(rng);
  for (float &v : c0)
    v = value(rng);
  std::vector<uint16_t> bb(c.k * c.n);
  for (int64_t i = 0; i < c.k * c.n; ++i) {
    if (bf16) {
      bb[i] = toBf16Bits(value(rng));
      bf[i] = fromBf16Bits(bb[i]);
    } else {
      bf[i] = value(rng);
    }
  }
  std::vector<float> expected = c0;
  if (bf16)
    bitloom_uk_matmul_f32_bf16b(a.data(), bb.data(), expected.data(), c.m, c.n,
                                c.k, transA, transB, accumulate);
  else
    bitloom_uk_matmul_f32(a.data(), bf.data(), expected.data(), c.m, c.n, c.k,
                          transA, transB, accumulate);

  ForcedTile forced(tile);
  std::string aType =
      transA ? memrefType({c.k, c.m}, "f32") : memrefType({c.m, c.k}, "f32");
  std::string bElt = bf16 ? "bf16" : "f32";
  std::string bType =
      transB ? memrefType({c.n, c.k}, bElt) : memrefType({c.k, c.n}, bElt);
  HarnessResult r =
      h.run(bf16 ? "bitloom_uk_matmul_f32_bf16b" : "bitloom_uk_matmul_f32",
            {{aType, toBytes(a)},
             {bType, bf16 ? toBytes(bb) : toBytes(bf)},
             {memrefType({c.m, c.n}, "f32"), toBytes(c0)}},
            {HarnessOperand::buffer(0), HarnessOperand::buffer(1),
             HarnessOperand::buffer(2), HarnessOperand::i64(c.m),
             HarnessOperand::i64(c.n), HarnessOperand::i64(c.k),
             HarnessOperand::i32(transA), HarnessOperand::i32(transB),
             HarnessOperand::i32(accumulate)},
            target);
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.kernels.size(), 1u);
  if (!tile.empty())
    EXPECT_NE(r.kernels[0].find("_t" + tile + "_"), std::string::npos)
        << r.kernels[0];
  EXPECT_NE(r.kernels[0].find(mustContain), std::string::npos) << r.kernels[0];
  std::vector<float> out = fromBytes<float>(r.buffers[2]);
  int64_t bad = 0;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      double magnitude = accumulate ? std::fabs(c0[i * c.n + j]) : 0;
      for (int64_t p = 0; p < c.k; ++p) {
        float av = transA ? a[p * c.m + i] : a[i * c.k + p];
        float bv = transB ? bf[j * c.k + p] : bf[p * c.n + j];
        magnitude += std::fabs(double(av) * bv);
      }
      double bound = 1e-5 * magnitude + 1e-30;
      double got = out[i * c.n + j], want = expected[i * c.n + j];
      if (!(std::fabs(got - want) <= bound) && ++bad <= 5)
        ADD_FAILURE() << "c[" << i << ", " << j << "] = " << got << ", CPU "
                      << want << " (bound " << bound << ", " << r.kernels[0]
                      << ")";
    }
  EXPECT_EQ(bad, 0);
}

const GemmCase kGemmCases[] = {
    {1, 1, 1}, {37, 70, 45}, {64, 64, 64}, {5, 130, 300}, {130, 16, 33},
};

TEST_F(MatmulKernelsTest, F32AllFlags) {
  for (GemmCase c : kGemmCases)
    for (int flags = 0; flags < 8; ++flags)
      checkGemm(*harness, rng, c, flags & 1, flags & 2, flags & 4,
                /*bf16=*/false, device(true));
}

TEST_F(MatmulKernelsTest, Bf16AllFlags) {
  for (GemmCase c : kGemmCases)
    for (int flags = 0; flags < 8; ++flags)
      if ((c.k * c.n) % 2 == 0)
        checkGemm(*harness, rng, c, flags & 1, flags & 2, flags & 4,
                  /*bf16=*/true, device(true));
}

TEST_F(MatmulKernelsTest, GemmGenericProfile) {
  for (int flags = 0; flags < 8; ++flags) {
    checkGemm(*harness, rng, {70, 90, 50}, flags & 1, flags & 2, flags & 4,
              /*bf16=*/false, generic());
    checkGemm(*harness, rng, {70, 90, 50}, flags & 1, flags & 2, flags & 4,
              /*bf16=*/true, generic());
  }
}

TEST_F(MatmulKernelsTest, GemmEveryTile) {
  // Each tile with two of the flag combinations, all of them over the tiles.
  int flags = 0;
  for (const char *tile :
       {"128x128", "128x64", "64x128", "64x64", "64x32", "32x64", "32x32",
        "64x16", "16x64", "32x16", "16x32", "16x16"}) {
    checkGemm(*harness, rng, {150, 140, 40}, flags & 1, flags & 2, flags & 4,
              /*bf16=*/false, device(true), tile);
    flags = (flags + 3) % 8;
    checkGemm(*harness, rng, {150, 140, 40}, flags & 1, flags & 2, flags & 4,
              /*bf16=*/true, device(true), tile);
    flags = (flags + 3) % 8;
  }
}

TEST_F(MatmulKernelsTest, GemmSplitK) {
  // k = 300: 19 chunks of 16.
  int flags = 0;
  for (int splits : {2, 4, 8}) {
    ForcedSplit forced(splits);
    checkGemm(*harness, rng, {70, 20, 300}, flags & 1, flags & 2, flags & 4,
              /*bf16=*/false, device(true), "", "_s" + std::to_string(splits));
    flags = (flags + 3) % 8;
    checkGemm(*harness, rng, {20, 70, 300}, flags & 1, flags & 2, flags & 4,
              /*bf16=*/true, device(true), "", "_s" + std::to_string(splits));
    flags = (flags + 3) % 8;
  }
}

TEST_F(MatmulKernelsTest, Bf16RejectsOddElementCount) {
  HarnessResult r = harness->run(
      "bitloom_uk_matmul_f32_bf16b",
      {{"memref<1x3xf32>", {}},
       {"memref<3x1xbf16>", {}},
       {"memref<1x1xf32>", {}}},
      {HarnessOperand::buffer(0), HarnessOperand::buffer(1),
       HarnessOperand::buffer(2), HarnessOperand::i64(1),
       HarnessOperand::i64(1), HarnessOperand::i64(3), HarnessOperand::i32(0),
       HarnessOperand::i32(0), HarnessOperand::i32(0)},
      generic());
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("even number of B elements"), std::string::npos)
      << r.error;
}

TEST_F(MatmulKernelsTest, SmallExactGemm) {
  std::vector<float> a(8 * 4, 1.0f), b(4 * 8, 2.0f);
  KernelTarget t = device(true);
  HarnessResult r1 = harness->run(
      "bitloom_uk_matmul_f32",
      {{"memref<8x4xf32>", toBytes(a)},
       {"memref<4x8xf32>", toBytes(b)},
       {"memref<8x8xf32>", {}}},
      {HarnessOperand::buffer(0), HarnessOperand::buffer(1),
       HarnessOperand::buffer(2), HarnessOperand::i64(8),
       HarnessOperand::i64(8), HarnessOperand::i64(4), HarnessOperand::i32(0),
       HarnessOperand::i32(0), HarnessOperand::i32(0)},
      t);
  ASSERT_TRUE(r1.ok) << r1.error;
  for (float v : fromBytes<float>(r1.buffers[2]))
    EXPECT_EQ(v, 8.0f);
}

} // namespace

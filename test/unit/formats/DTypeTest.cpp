//===- DTypeTest.cpp - Element types, conversions, ternary blocks ---------===//
//
// Conversions are checked against independent formulas here and against
// numpy / gguf-py bit for bit in ReferenceTest.cpp.
//
//===----------------------------------------------------------------------===//
#include "formats/DType.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

using namespace bitloom;

namespace {
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float fromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
} // namespace

TEST(FormatsDType, NamesSizesAndStorage) {
  EXPECT_STREQ(dtypeName(DType::BF16), "BF16");
  EXPECT_STREQ(dtypeName(DType::Bool), "BOOL");
  EXPECT_EQ(dtypeFromName("TQ2_0"), DType::TQ2_0);
  EXPECT_EQ(dtypeFromName("BOOL"), DType::Bool);
  EXPECT_EQ(dtypeFromName("F8_E4M3"), std::nullopt);
  EXPECT_EQ(dtypeSize(DType::F64), 8u);
  EXPECT_EQ(dtypeSize(DType::BF16), 2u);
  EXPECT_EQ(dtypeSize(DType::TQ1_0), 0u);
  EXPECT_EQ(dtypeBlockSize(DType::TQ2_0), 256u);
  EXPECT_EQ(dtypeBlockBytes(DType::TQ1_0), 54u);
  EXPECT_EQ(dtypeBlockBytes(DType::TQ2_0), 66u);
  EXPECT_EQ(dtypeStorageBytes(DType::TQ1_0, 512), 108u);
  EXPECT_EQ(dtypeStorageBytes(DType::TQ2_0, 256 * 3), 198u);
  EXPECT_EQ(dtypeStorageBytes(DType::TQ2_0, 100), 0u);
  EXPECT_EQ(dtypeStorageBytes(DType::F16, 7), 14u);
}

TEST(FormatsDType, HalfToFloatMatchesTheDefinition) {
  for (uint32_t h = 0; h < 65536; ++h) {
    int sign = (h >> 15) ? -1 : 1;
    int exp = (h >> 10) & 31;
    int mant = h & 1023;
    float got = halfToFloat(uint16_t(h));
    if (exp == 31) {
      if (mant == 0)
        EXPECT_EQ(got, sign * INFINITY) << h;
      else
        EXPECT_TRUE(std::isnan(got)) << h;
      continue;
    }
    double want = exp == 0 ? std::ldexp(double(mant), -24)
                           : std::ldexp(1024.0 + mant, exp - 25);
    EXPECT_EQ(bits(got), bits(float(sign * want))) << h;
  }
}

TEST(FormatsDType, FloatToHalfRoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 31) == 31 && (h & 1023))
      continue; // NaNs are checked below
    EXPECT_EQ(floatToHalf(halfToFloat(uint16_t(h))), h) << h;
  }
}

TEST(FormatsDType, FloatToHalfRoundsToNearestEven) {
  EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(floatToHalf(65519.99f), 0x7bff);
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00); // tie, odd mantissa: up to inf
  EXPECT_EQ(floatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);     // tie: even
  EXPECT_EQ(floatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02); // tie: even
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)),
            0x3c01);
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -24)), 0x0001); // smallest subnormal
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -25)), 0x0000); // tie: even (zero)
  EXPECT_EQ(floatToHalf(3 * std::ldexp(1.0f, -25)), 0x0002); // tie: even
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -14)), 0x0400);     // smallest normal
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(NAN), 0x7e00);
  EXPECT_EQ(floatToHalf(-NAN), 0xfe00);
  EXPECT_EQ(floatToHalf(INFINITY), 0x7c00);
}

TEST(FormatsDType, Bf16RoundsToNearestEvenLikeTorch) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(fromBits(0x3f808000)), 0x3f80); // tie: even
  EXPECT_EQ(floatToBf16(fromBits(0x3f818000)), 0x3f82); // tie: even
  EXPECT_EQ(floatToBf16(fromBits(0x3f808001)), 0x3f81);
  EXPECT_EQ(floatToBf16(fromBits(0x7f7fffff)), 0x7f80); // max float: inf
  EXPECT_EQ(floatToBf16(-0.0f), 0x8000);
  // c10::BFloat16 maps every NaN to 0x7FC0, sign and payload dropped.
  EXPECT_EQ(floatToBf16(NAN), 0x7fc0);
  EXPECT_EQ(floatToBf16(fromBits(0xffc00001)), 0x7fc0);
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = bf16ToFloat(uint16_t(h));
    EXPECT_EQ(bits(f), h << 16);
    if (!std::isnan(f))
      EXPECT_EQ(floatToBf16(f), h);
  }
}

TEST(FormatsDType, DequantizesPlainTypes) {
  const int8_t i8[] = {-128, -1, 0, 127};
  float out[4];
  dequantize(DType::I8, reinterpret_cast<const uint8_t *>(i8), out, 4);
  EXPECT_EQ(out[0], -128.0f);
  EXPECT_EQ(out[3], 127.0f);
  const uint8_t flags[] = {0, 1, 2, 0};
  dequantize(DType::Bool, flags, out, 4);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[2], 1.0f);
  // Unaligned source: the reader hands out pointers into a mapping.
  std::vector<uint8_t> buf(1 + 2 * 8);
  const double d[2] = {0.5, -3.25};
  std::memcpy(buf.data() + 1, d, sizeof(d));
  dequantize(DType::F64, buf.data() + 1, out, 2);
  EXPECT_EQ(out[0], 0.5f);
  EXPECT_EQ(out[1], -3.25f);
  const uint16_t h[] = {0x3c00, 0xc000};
  dequantize(DType::F16, reinterpret_cast<const uint8_t *>(h), out, 2);
  EXPECT_EQ(out[1], -2.0f);
  const int64_t i64[] = {-(int64_t(1) << 40)};
  dequantize(DType::I64, reinterpret_cast<const uint8_t *>(i64), out, 1);
  EXPECT_EQ(out[0], -1099511627776.0f);
}

namespace {
/// 256 ternary codes (0, 1, 2) per block, deterministic.
std::vector<float> ternaryBlock(uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::vector<float> x(256);
  for (float &v : x)
    v = float(int(rng() % 3) - 1) * scale;
  x[7] = scale; // make sure max|x| == scale
  return x;
}
} // namespace

TEST(FormatsDType, TQ2LayoutIsTheDocumentedOne) {
  std::vector<float> x = ternaryBlock(1, 1.0f);
  std::vector<uint8_t> q(66);
  quantizeTernary(DType::TQ2_0, x.data(), q.data(), 256);
  // In each 32-byte half, byte m holds elements m + 32n at bits 2n..2n+1.
  for (int half = 0; half < 2; ++half)
    for (int m = 0; m < 32; ++m)
      for (int n = 0; n < 4; ++n) {
        int code = (q[half * 32 + m] >> (2 * n)) & 3;
        EXPECT_EQ(float(code - 1), x[half * 128 + m + 32 * n]);
      }
  EXPECT_EQ(q[64] | (q[65] << 8), 0x3c00); // d = 1.0 in fp16
}

TEST(FormatsDType, TQ1LayoutIsTheDocumentedOne) {
  std::vector<float> x = ternaryBlock(2, 1.0f);
  std::vector<uint8_t> q(54);
  quantizeTernary(DType::TQ1_0, x.data(), q.data(), 256);
  static const int pow3[5] = {1, 3, 9, 27, 81};
  auto trit = [&](uint8_t byte, int n) {
    return ((uint8_t(byte * pow3[n])) * 3) >> 8;
  };
  // qs[0..31]: element n*32 + m; qs[32..47]: 160 + n*16 + m;
  // qh[0..3]: 240 + n*4 + j.
  for (int m = 0; m < 32; ++m)
    for (int n = 0; n < 5; ++n)
      EXPECT_EQ(float(trit(q[m], n) - 1), x[n * 32 + m]);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 5; ++n)
      EXPECT_EQ(float(trit(q[32 + m], n) - 1), x[160 + n * 16 + m]);
  for (int j = 0; j < 4; ++j)
    for (int n = 0; n < 4; ++n)
      EXPECT_EQ(float(trit(q[48 + j], n) - 1), x[240 + n * 4 + j]);
  EXPECT_EQ(q[52] | (q[53] << 8), 0x3c00);

  // One byte by hand: codes (2, 1, 0, 0, 0) make 2*81 + 27 = 189, stored as
  // ceil(189 * 256 / 243) = 200.
  std::vector<float> y(256, 0.0f);
  y[0] = 1.0f;
  y[32] = 0.0f;
  y[64] = y[96] = y[128] = -1.0f;
  quantizeTernary(DType::TQ1_0, y.data(), q.data(), 256);
  EXPECT_EQ(q[0], 200);
}

TEST(FormatsDType, TernaryRoundTripsExactly) {
  // A scale that fp16 holds exactly survives quantize + dequantize bit for
  // bit, for both block types and several blocks.
  for (DType t : {DType::TQ1_0, DType::TQ2_0}) {
    std::vector<float> x;
    for (uint32_t b = 0; b < 4; ++b) {
      std::vector<float> blk = ternaryBlock(10 + b, 0.0371093750f * (b + 1));
      x.insert(x.end(), blk.begin(), blk.end());
    }
    std::vector<uint8_t> q(dtypeStorageBytes(t, x.size()));
    quantizeTernary(t, x.data(), q.data(), x.size());
    std::vector<float> y(x.size());
    dequantize(t, q.data(), y.data(), y.size());
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_EQ(bits(y[i]), bits(x[i] == 0.0f ? 0.0f : x[i]))
          << dtypeName(t) << " " << i;
  }
}

TEST(FormatsDType, TernaryZeroBlockAndRounding) {
  std::vector<float> x(256, 0.0f);
  x[3] = 4.0f;
  x[4] = 2.0f;       // exactly half: rounds away from zero, to 1
  x[5] = -2.0f;      // to -1
  x[6] = 1.9999999f; // below half: 0
  std::vector<uint8_t> q(66);
  quantizeTernary(DType::TQ2_0, x.data(), q.data(), 256);
  std::vector<float> y(256);
  dequantize(DType::TQ2_0, q.data(), y.data(), 256);
  EXPECT_EQ(y[3], 4.0f);
  EXPECT_EQ(y[4], 4.0f);
  EXPECT_EQ(y[5], -4.0f);
  EXPECT_EQ(y[6], 0.0f);

  std::vector<float> zeros(256, 0.0f);
  quantizeTernary(DType::TQ1_0, zeros.data(), q.data(), 256);
  EXPECT_EQ(q[52] | (q[53] << 8), 0); // d = 0
  dequantize(DType::TQ1_0, q.data(), y.data(), 256);
  for (float v : y)
    EXPECT_EQ(v, 0.0f);
}

TEST(FormatsDType, RejectsMisuse) {
  std::vector<float> x(100);
  std::vector<uint8_t> q(66);
  EXPECT_THROW(quantizeTernary(DType::TQ2_0, x.data(), q.data(), 100),
               std::invalid_argument);
  EXPECT_THROW(quantizeTernary(DType::F32, x.data(), q.data(), 256),
               std::invalid_argument);
  EXPECT_THROW(dequantize(DType::TQ1_0, q.data(), x.data(), 100),
               std::invalid_argument);
}

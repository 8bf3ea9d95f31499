//===- DType.cpp - Element types, conversions, ternary blocks -------------===//
//
// The ternary block code follows ggml's ggml-quants.c (MIT) statement for
// statement, including its integer types, so that bitloom reads and writes
// the same bytes and values as llama.cpp.
//
//===----------------------------------------------------------------------===//
#include "formats/DType.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

namespace bitloom {

namespace {
constexpr size_t kQK = 256;        // QK_K
constexpr size_t kTQ1Bytes = 54;   // sizeof(block_tq1_0)
constexpr size_t kTQ2Bytes = 66;   // sizeof(block_tq2_0)
constexpr size_t kTQ1QsBytes = 48; // qs[(QK_K - 4 * QK_K / 64) / 5]
constexpr size_t kTQ1QhBytes = 4;  // qh[QK_K / 64]
constexpr size_t kTQ2QsBytes = 64; // qs[QK_K / 4]

uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t loadU16(const uint8_t *p) { return uint16_t(p[0] | (p[1] << 8)); }
void storeU16(uint8_t *p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}
template <typename T> T load(const uint8_t *p) {
  T v;
  std::memcpy(&v, p, sizeof(T)); // the mapping gives no alignment guarantee
  return v;
}
} // namespace

const char *dtypeName(DType t) {
  switch (t) {
  case DType::F64:
    return "F64";
  case DType::F32:
    return "F32";
  case DType::F16:
    return "F16";
  case DType::BF16:
    return "BF16";
  case DType::I64:
    return "I64";
  case DType::I32:
    return "I32";
  case DType::I16:
    return "I16";
  case DType::I8:
    return "I8";
  case DType::U8:
    return "U8";
  case DType::Bool:
    return "BOOL";
  case DType::TQ1_0:
    return "TQ1_0";
  case DType::TQ2_0:
    return "TQ2_0";
  }
  return "?";
}

std::optional<DType> dtypeFromName(const std::string &name) {
  static const DType all[] = {DType::F64,  DType::F32,   DType::F16,
                              DType::BF16, DType::I64,   DType::I32,
                              DType::I16,  DType::I8,    DType::U8,
                              DType::Bool, DType::TQ1_0, DType::TQ2_0};
  for (DType t : all)
    if (name == dtypeName(t))
      return t;
  return std::nullopt;
}

size_t dtypeSize(DType t) {
  switch (t) {
  case DType::F64:
  case DType::I64:
    return 8;
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::F16:
  case DType::BF16:
  case DType::I16:
    return 2;
  case DType::I8:
  case DType::U8:
  case DType::Bool:
    return 1;
  case DType::TQ1_0:
  case DType::TQ2_0:
    return 0;
  }
  return 0;
}

size_t dtypeBlockSize(DType t) {
  return (t == DType::TQ1_0 || t == DType::TQ2_0) ? kQK : 1;
}

size_t dtypeBlockBytes(DType t) {
  if (t == DType::TQ1_0)
    return kTQ1Bytes;
  if (t == DType::TQ2_0)
    return kTQ2Bytes;
  return dtypeSize(t);
}

size_t dtypeStorageBytes(DType t, uint64_t numElements) {
  size_t block = dtypeBlockSize(t);
  if (numElements % block != 0)
    return 0;
  return static_cast<size_t>(numElements / block * dtypeBlockBytes(t));
}

float halfToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    float v = float(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) // inf / NaN keep their payload
    return bitsFloat(sign | 0x7f800000u | (mant << 13));
  return bitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t floatToHalf(float f) {
  // Round to nearest even, as F16C's _cvtss_sh (ggml on x86) and numpy do.
  uint32_t u = floatBits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) // NaN: quiet, top payload bits kept
    return uint16_t(sign | 0x7e00 | ((u & 0x7fffffu) >> 13));
  if (u >= 0x477ff000u) // rounds to >= 65520: infinity
    return uint16_t(sign | 0x7c00);
  if (u < 0x38800000u) {
    // Result is subnormal (or zero): let the FPU round by adding 0.5, which
    // puts the half's mantissa in the low float mantissa bits.
    float v = bitsFloat(u) + 0.5f;
    return uint16_t(sign | (floatBits(v) - 0x3f000000u));
  }
  uint32_t odd = (u >> 13) & 1;
  u += (uint32_t(15 - 127) << 23) + 0xfff + odd;
  return uint16_t(sign | (u >> 13));
}

float bf16ToFloat(uint16_t h) { return bitsFloat(uint32_t(h) << 16); }

uint16_t floatToBf16(float f) {
  // c10::BFloat16's round_to_nearest_even: every NaN becomes 0x7FC0.
  if (std::isnan(f))
    return 0x7fc0;
  uint32_t u = floatBits(f);
  uint32_t bias = ((u >> 16) & 1) + 0x7fffu;
  return uint16_t((u + bias) >> 16);
}

namespace {
// ggml's dequantize_row_tq1_0.
void dequantizeTQ1(const uint8_t *x, float *y, uint64_t k) {
  static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
  const uint64_t nb = k / kQK;
  for (uint64_t i = 0; i < nb; ++i, x += kTQ1Bytes) {
    const uint8_t *qs = x;
    const uint8_t *qh = x + kTQ1QsBytes;
    const float d = halfToFloat(loadU16(x + kTQ1QsBytes + kTQ1QhBytes));
    for (size_t j = 0; j < kTQ1QsBytes - kTQ1QsBytes % 32; j += 32)
      for (size_t n = 0; n < 5; ++n)
        for (size_t m = 0; m < 32; ++m) {
          uint8_t q = uint8_t(qs[j + m] * pow3[n]);
          int16_t xi = int16_t((uint16_t(q) * 3) >> 8);
          *y++ = float(xi - 1) * d;
        }
    for (size_t j = kTQ1QsBytes - kTQ1QsBytes % 32; j < kTQ1QsBytes; j += 16)
      for (size_t n = 0; n < 5; ++n)
        for (size_t m = 0; m < 16; ++m) {
          uint8_t q = uint8_t(qs[j + m] * pow3[n]);
          int16_t xi = int16_t((uint16_t(q) * 3) >> 8);
          *y++ = float(xi - 1) * d;
        }
    for (size_t n = 0; n < 4; ++n)
      for (size_t j = 0; j < kTQ1QhBytes; ++j) {
        uint8_t q = uint8_t(qh[j] * pow3[n]);
        int16_t xi = int16_t((uint16_t(q) * 3) >> 8);
        *y++ = float(xi - 1) * d;
      }
  }
}

// ggml's dequantize_row_tq2_0.
void dequantizeTQ2(const uint8_t *x, float *y, uint64_t k) {
  const uint64_t nb = k / kQK;
  for (uint64_t i = 0; i < nb; ++i, x += kTQ2Bytes) {
    const float d = halfToFloat(loadU16(x + kTQ2QsBytes));
    for (size_t j = 0; j < kTQ2QsBytes; j += 32)
      for (size_t l = 0; l < 4; ++l)
        for (size_t m = 0; m < 32; ++m) {
          int8_t q = int8_t((x[j + m] >> (l * 2)) & 3);
          *y++ = float(q - 1) * d;
        }
  }
}

// ggml's MAX(amax, fabsf(v)) loop, NaN behaviour included.
float blockAbsMax(const float *x) {
  float amax = 0.0f;
  for (size_t j = 0; j < kQK; j++) {
    const float a = std::fabs(x[j]);
    amax = amax > a ? amax : a;
  }
  return amax;
}

// ggml's quantize_row_tq1_0_ref.
void quantizeTQ1(const float *x, uint8_t *y, uint64_t k) {
  const uint64_t nb = k / kQK;
  for (uint64_t i = 0; i < nb; i++, y += kTQ1Bytes) {
    const float d = blockAbsMax(x);
    const float id = d ? 1.0f / d : 0.0f;
    uint8_t *qs = y;
    uint8_t *qh = y + kTQ1QsBytes;
    storeU16(y + kTQ1QsBytes + kTQ1QhBytes, floatToHalf(d));

    // 5 elements per byte, along 32 bytes
    for (size_t j = 0; j < kTQ1QsBytes - kTQ1QsBytes % 32; j += 32) {
      for (size_t m = 0; m < 32; ++m) {
        uint8_t q = 0;
        for (size_t n = 0; n < 5; ++n) {
          int xi = int(std::lround(x[m + n * 32] * id)) + 1;
          q *= 3;
          q += xi;
        }
        // ceiling division (243 == pow(3, 5))
        q = uint8_t((uint16_t(q) * 256 + (243 - 1)) / 243);
        qs[j + m] = q;
      }
      x += 5 * 32;
    }
    // along 16 bytes
    for (size_t j = kTQ1QsBytes - kTQ1QsBytes % 32; j < kTQ1QsBytes; j += 16) {
      for (size_t m = 0; m < 16; ++m) {
        uint8_t q = 0;
        for (size_t n = 0; n < 5; ++n) {
          int xi = int(std::lround(x[m + n * 16] * id)) + 1;
          q *= 3;
          q += xi;
        }
        q = uint8_t((uint16_t(q) * 256 + (243 - 1)) / 243);
        qs[j + m] = q;
      }
      x += 5 * 16;
    }
    // 4 elements per byte
    for (size_t j = 0; j < kTQ1QhBytes; ++j) {
      uint8_t q = 0;
      for (size_t m = 0; m < 4; ++m) {
        int xi = int(std::lround(x[j + m * kTQ1QhBytes] * id)) + 1;
        q *= 3;
        q += xi;
      }
      // shift the first value to the most significant trit
      q *= 3;
      q = uint8_t((uint16_t(q) * 256 + (243 - 1)) / 243);
      qh[j] = q;
    }
    x += 4 * kTQ1QhBytes;
  }
}

// ggml's quantize_row_tq2_0_ref.
void quantizeTQ2(const float *x, uint8_t *y, uint64_t k) {
  const uint64_t nb = k / kQK;
  for (uint64_t i = 0; i < nb; i++, y += kTQ2Bytes) {
    const float d = blockAbsMax(x);
    const float id = d ? 1.0f / d : 0.0f;
    storeU16(y + kTQ2QsBytes, floatToHalf(d));
    for (size_t j = 0; j < kTQ2QsBytes; j += 32) {
      for (size_t m = 0; m < 32; ++m) {
        uint8_t q = 0;
        for (size_t n = 0; n < 4; ++n) {
          // -1, 0, 1 -> 0, 1, 2
          int xi = int(std::lround(x[m + n * 32] * id)) + 1;
          q += (xi & 3) << (2 * n);
        }
        y[j + m] = q;
      }
      x += 4 * 32;
    }
  }
}

void requireBlocks(DType t, uint64_t n, const char *what) {
  if (n % kQK != 0)
    throw std::invalid_argument(std::string(what) + ": " + dtypeName(t) +
                                " needs a multiple of 256 elements, got " +
                                std::to_string(n));
}
} // namespace

void dequantize(DType t, const uint8_t *src, float *dst, uint64_t n) {
  switch (t) {
  case DType::F32:
    if (n > 0) // memcpy must not see the null pointers of empty tensors
      std::memcpy(dst, src, n * 4);
    return;
  case DType::F64:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = float(load<double>(src + 8 * i));
    return;
  case DType::F16:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = halfToFloat(loadU16(src + 2 * i));
    return;
  case DType::BF16:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = bf16ToFloat(loadU16(src + 2 * i));
    return;
  case DType::I64:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = float(load<int64_t>(src + 8 * i));
    return;
  case DType::I32:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = float(load<int32_t>(src + 4 * i));
    return;
  case DType::I16:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = float(load<int16_t>(src + 2 * i));
    return;
  case DType::I8:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = float(int8_t(src[i]));
    return;
  case DType::U8:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = float(src[i]);
    return;
  case DType::Bool:
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = src[i] ? 1.0f : 0.0f;
    return;
  case DType::TQ1_0:
    requireBlocks(t, n, "dequantize");
    dequantizeTQ1(src, dst, n);
    return;
  case DType::TQ2_0:
    requireBlocks(t, n, "dequantize");
    dequantizeTQ2(src, dst, n);
    return;
  }
}

void quantizeTernary(DType t, const float *src, uint8_t *dst, uint64_t n) {
  requireBlocks(t, n, "quantizeTernary");
  if (t == DType::TQ1_0)
    quantizeTQ1(src, dst, n);
  else if (t == DType::TQ2_0)
    quantizeTQ2(src, dst, n);
  else
    throw std::invalid_argument(std::string("quantizeTernary: ") +
                                dtypeName(t) + " is not a ternary type");
}

} // namespace bitloom

//===- Checksum.cpp - XXH64 -----------------------------------------------===//
//
// Follows the XXH64 specification (xxhash.h, "XXH64 algorithm description"):
// four lanes over 32-byte stripes, then the 8/4/1-byte tail and avalanche.
// Loads are little-endian whatever the host.
//
//===----------------------------------------------------------------------===//
#include "artifact/Checksum.h"

#include <cstring>

namespace bitloom::blm {

namespace {
constexpr uint64_t P1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t P2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t P3 = 0x165667B19E3779F9ULL;
constexpr uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t P5 = 0x27D4EB2F165667C5ULL;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}
inline uint32_t load32(const uint8_t *p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  return v;
}

inline uint64_t round(uint64_t acc, uint64_t input) {
  acc += input * P2;
  acc = rotl(acc, 31);
  return acc * P1;
}
inline uint64_t mergeRound(uint64_t acc, uint64_t val) {
  acc ^= round(0, val);
  return acc * P1 + P4;
}

/// Consumes whole 32-byte stripes of [p, end); returns the first byte left.
inline const uint8_t *stripes(uint64_t acc[4], const uint8_t *p,
                              const uint8_t *end) {
  uint64_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  while (end - p >= 32) {
    a0 = round(a0, load64(p));
    a1 = round(a1, load64(p + 8));
    a2 = round(a2, load64(p + 16));
    a3 = round(a3, load64(p + 24));
    p += 32;
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
  return p;
}
} // namespace

Xxh64::Xxh64(uint64_t seed) : seed_(seed) {
  acc_[0] = seed + P1 + P2;
  acc_[1] = seed + P2;
  acc_[2] = seed;
  acc_[3] = seed - P1;
}

void Xxh64::update(const void *data, size_t size) {
  if (size == 0)
    return;
  const uint8_t *p = static_cast<const uint8_t *>(data);
  const uint8_t *end = p + size;
  total_ += size;
  if (bufSize_ + size < 32) {
    std::memcpy(buf_ + bufSize_, p, size);
    bufSize_ += size;
    return;
  }
  if (bufSize_ > 0) {
    size_t fill = 32 - bufSize_;
    std::memcpy(buf_ + bufSize_, p, fill);
    stripes(acc_, buf_, buf_ + 32);
    p += fill;
    bufSize_ = 0;
  }
  p = stripes(acc_, p, end);
  bufSize_ = size_t(end - p);
  if (bufSize_ > 0)
    std::memcpy(buf_, p, bufSize_);
}

uint64_t Xxh64::digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = rotl(acc_[0], 1) + rotl(acc_[1], 7) + rotl(acc_[2], 12) +
        rotl(acc_[3], 18);
    h = mergeRound(h, acc_[0]);
    h = mergeRound(h, acc_[1]);
    h = mergeRound(h, acc_[2]);
    h = mergeRound(h, acc_[3]);
  } else {
    h = seed_ + P5;
  }
  h += total_;
  const uint8_t *p = buf_;
  const uint8_t *end = buf_ + bufSize_;
  while (end - p >= 8) {
    h ^= round(0, load64(p));
    h = rotl(h, 27) * P1 + P4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= uint64_t(load32(p)) * P1;
    h = rotl(h, 23) * P2 + P3;
    p += 4;
  }
  while (p < end) {
    h ^= uint64_t(*p) * P5;
    h = rotl(h, 11) * P1;
    ++p;
  }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

uint64_t xxhash64(const void *data, size_t size, uint64_t seed) {
  Xxh64 h(seed);
  h.update(data, size);
  return h.digest();
}

} // namespace bitloom::blm

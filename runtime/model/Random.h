//===- Random.h - Portable, bit-exact random streams ------------*- C++ -*-===//
//
// make-model must write identical bytes for a seed on every platform and
// standard library, and must draw ~2.4e9 numbers in seconds. So: splitmix64
// seeding, xoshiro256** streams, and an approximate normal built from
// integer arithmetic only (no libm, whose last bits differ between
// platforms).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_MODEL_RANDOM_H
#define BITLOOM_MODEL_RANDOM_H

#include <cstdint>
#include <string>

namespace bitloom {

inline uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// FNV-1a, to derive a per-tensor stream from its name: a tensor's values
/// depend only on (seed, name), not on file format or write order.
inline uint64_t fnv1a64(const std::string &s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// xoshiro256** (Blackman & Vigna).
class Xoshiro256 {
public:
  explicit Xoshiro256(uint64_t seed) {
    for (uint64_t &w : s_)
      w = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Approximately standard normal: the Irwin-Hall sum of four uniform
  /// 16-bit lanes of one draw, centred and scaled to unit variance. Exact
  /// integer arithmetic plus one float multiply, so bit-identical
  /// everywhere; tails are bounded at +-3.46 sigma, which is harmless for a
  /// weight initializer.
  float normal(float stddev) {
    const uint64_t r = next();
    const int32_t sum = int32_t(r & 0xffff) + int32_t((r >> 16) & 0xffff) +
                        int32_t((r >> 32) & 0xffff) + int32_t(r >> 48);
    // Var of one lane = (65536^2 - 1) / 12 ~ 65536^2 / 12; four lanes: / 3.
    return float(sum - 131070) * (stddev * kUnit);
  }

private:
  static constexpr float kUnit = float(1.7320508075688772 / 65536.0);
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

} // namespace bitloom

#endif // BITLOOM_MODEL_RANDOM_H

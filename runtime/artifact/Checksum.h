//===- Checksum.h - XXH64, the checksum of .blm artifacts -------*- C++ -*-===//
//
// A self-contained implementation of xxHash's XXH64 (seed 0 in .blm files),
// bit-identical to the reference (libxxhash's XXH64()). It runs at memory
// speed (several GB/s) so that checking a multi-GB weight section is bounded
// by reading it, not by hashing it.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_ARTIFACT_CHECKSUM_H
#define BITLOOM_ARTIFACT_CHECKSUM_H

#include <cstddef>
#include <cstdint>

namespace bitloom::blm {

/// Streaming XXH64: update() any number of times, then digest() (which does
/// not change the state, so more update()s may follow).
class Xxh64 {
public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void *data, size_t size);
  uint64_t digest() const;

private:
  uint64_t acc_[4];
  uint64_t seed_;
  uint64_t total_ = 0;
  uint8_t buf_[32];
  size_t bufSize_ = 0;
};

/// One-shot XXH64 of `size` bytes.
uint64_t xxhash64(const void *data, size_t size, uint64_t seed = 0);

} // namespace bitloom::blm

#endif // BITLOOM_ARTIFACT_CHECKSUM_H

//===- Validate.h - Structural checks of a manifest (internal) --*- C++ -*-===//
//
// Shared by the reader (on every open) and the builder (before writing, so
// that a compiler bug is reported at compile time, not on the device).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_ARTIFACT_VALIDATE_H
#define BITLOOM_ARTIFACT_VALIDATE_H

#include "artifact/blm_generated.h"

#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::blm::detail {

template <typename T> uint32_t count(const flatbuffers::Vector<T> *v) {
  return v ? v->size() : 0;
}
inline std::string str(const flatbuffers::String *s) {
  return s ? s->str() : std::string();
}
inline bool isPowerOfTwo(uint64_t x) { return x && !(x & (x - 1)); }
/// [offset, offset + size) lies within [0, limit), without overflow.
inline bool rangeInside(uint64_t offset, uint64_t size, uint64_t limit) {
  return offset <= limit && size <= limit - offset;
}

/// How errors name each blob: "parameter <name>", "executable <i> (<name>)"
/// or "blob <i>" when nothing refers to it.
std::vector<std::string> blobOwners(const fb::Manifest &m);

/// Checks everything that does not need the blob bytes: blobs inside the data
/// section [0, dataSize) (at absolute file offset dataOffset), aligned and
/// disjoint; every index and range in executables, parameters, entry points,
/// dispatches and the memory plan; unique names; parameter byte sizes of
/// known dtypes. With `checkAliasing`, also that no two slots of one entry
/// point share arena bytes while both are live (O(n^2) in the worst case;
/// the builder does it). Throws FormatError(file, field, ...).
void validateManifest(const fb::Manifest &m, const std::string &file,
                      uint64_t dataOffset, uint64_t dataSize,
                      const std::vector<std::string> &owners,
                      bool checkAliasing);

} // namespace bitloom::blm::detail

#endif // BITLOOM_ARTIFACT_VALIDATE_H

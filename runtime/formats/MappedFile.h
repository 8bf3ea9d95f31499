//===- MappedFile.h - Read-only memory mapping of a file --------*- C++ -*-===//
#ifndef BITLOOM_FORMATS_MAPPEDFILE_H
#define BITLOOM_FORMATS_MAPPEDFILE_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace bitloom {

/// A whole file mapped read-only (PROT_READ, MAP_PRIVATE). Weight files are
/// never copied into memory: tensors point into the mapping.
class MappedFile {
public:
  /// Throws FormatError(path, "", strerror) when the file can't be opened.
  static std::shared_ptr<MappedFile> open(const std::string &path);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;

  const uint8_t *data() const { return data_; }
  size_t size() const { return size_; }
  const std::string &path() const { return path_; }

private:
  MappedFile() = default;
  std::string path_;
  const uint8_t *data_ = nullptr;
  size_t size_ = 0;
};

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename. A crash never leaves a half-written `path`.
void writeFileAtomically(const std::string &path, const void *bytes,
                         size_t size);

} // namespace bitloom

#endif // BITLOOM_FORMATS_MAPPEDFILE_H

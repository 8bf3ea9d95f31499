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
  /// An empty file maps to data() == nullptr, size() == 0.
  static std::shared_ptr<MappedFile> open(const std::string &path);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;

  const uint8_t *data() const { return data_; }
  size_t size() const { return size_; }
  const std::string &path() const { return path_; }
  /// Drops the resident pages of [p, p + n) (whole pages inside it) from
  /// this process: they read back from the file on next access. For bytes
  /// read once, e.g. to verify a checksum, so they stop counting as RSS.
  void release(const uint8_t *p, size_t n) const;

private:
  MappedFile() = default;
  std::string path_;
  const uint8_t *data_ = nullptr;
  size_t size_ = 0;
};

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename. A crash never leaves a half-written `path`.
/// Errors are FormatError(path, "", strerror).
void writeFileAtomically(const std::string &path, const void *bytes,
                         size_t size);

/// The streaming form of writeFileAtomically, for writers that must not
/// gather a whole weight file in memory: write() pieces, then commit().
/// Destroying an uncommitted writer (an exception on the way) removes the
/// temporary file and leaves `path` untouched.
class AtomicFileWriter {
public:
  explicit AtomicFileWriter(const std::string &path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter &) = delete;
  AtomicFileWriter &operator=(const AtomicFileWriter &) = delete;

  void write(const void *bytes, size_t size);
  /// Writes `n` zero bytes (alignment padding).
  void writeZeros(size_t n);
  /// Bytes written so far.
  uint64_t offset() const { return offset_; }
  /// fsync, rename over `path`, fsync the directory.
  void commit();

private:
  [[noreturn]] void fail(const std::string &what);
  std::string path_;
  std::string tmpPath_;
  int fd_ = -1;
  uint64_t offset_ = 0;
};

} // namespace bitloom

#endif // BITLOOM_FORMATS_MAPPEDFILE_H

//===- Safetensors.h - safetensors reader and writer ------------*- C++ -*-===//
//
// https://github.com/huggingface/safetensors: u64 little-endian header size N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}}, then the data buffer. Offsets are relative to
// the start of the data buffer.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_FORMATS_SAFETENSORS_H
#define BITLOOM_FORMATS_SAFETENSORS_H

#include "formats/DType.h"
#include "formats/MappedFile.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace bitloom {

struct SafetensorsTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t *data; // points into the mapping
  size_t byteSize;
  uint64_t numElements() const;
};

class SafetensorsFile {
public:
  /// Maps and validates the file: header size within the file, valid JSON,
  /// known dtypes, offsets inside the data buffer, byte size == elements ×
  /// dtype size, no overlapping tensors. Errors are FormatError naming the
  /// file and the tensor/field.
  static SafetensorsFile open(const std::string &path);

  const std::string &path() const { return file_->path(); }
  /// In the order of the header (sorted by data offset).
  const std::vector<SafetensorsTensor> &tensors() const { return tensors_; }
  /// nullptr when absent.
  const SafetensorsTensor *find(const std::string &name) const;
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }

private:
  std::shared_ptr<MappedFile> file_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, size_t> byName_;
};

/// One tensor to write; `data` must hold exactly the tensor's bytes
/// (little-endian, row-major).
struct SafetensorsEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void *data;
  size_t byteSize;
};

/// Writes a safetensors file atomically (tensors in the given order, header
/// padded with spaces to a multiple of 8 bytes, as the reference writer does).
void writeSafetensors(const std::string &path,
                      const std::vector<SafetensorsEntry> &tensors,
                      const std::map<std::string, std::string> &metadata = {});

} // namespace bitloom

#endif // BITLOOM_FORMATS_SAFETENSORS_H

//===- CheckpointWriter.h - Streaming safetensors / GGUF writers -*- C++
//-*-===//
//
// writeSafetensors and GgufWriter need every tensor's bytes in memory at
// once; a 2b4t checkpoint is 4.8 GB (bf16) or 8+ GB (F32 GGUF). These writers
// lay out the header from declared names/types/shapes first, then pull each
// tensor's bytes from a producer, in chunks, into a temporary file that is
// renamed over the destination only when complete.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_MODEL_CHECKPOINTWRITER_H
#define BITLOOM_MODEL_CHECKPOINTWRITER_H

#include "formats/DType.h"
#include "formats/Gguf.h"

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace bitloom {

/// A file written to `<path>.tmp-<pid>` and renamed onto `path` by commit();
/// destroyed uncommitted, it removes the temporary file.
class AtomicOutputFile {
public:
  explicit AtomicOutputFile(std::string path);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile &) = delete;
  AtomicOutputFile &operator=(const AtomicOutputFile &) = delete;

  void write(const void *data, size_t size);
  void writeZeros(size_t size);
  uint64_t offset() const { return offset_; }
  void commit();

private:
  std::string path_, tmpPath_;
  std::FILE *file_ = nullptr;
  uint64_t offset_ = 0;
};

/// Receives one tensor's bytes; the writer checks the total.
class TensorSink {
public:
  virtual ~TensorSink() = default;
  virtual void write(const void *data, size_t size) = 0;
};

/// Called once per declared tensor, in declaration order.
using TensorProducer = std::function<void(size_t index, TensorSink &sink)>;

class SafetensorsStreamWriter {
public:
  void setMetadata(std::map<std::string, std::string> metadata) {
    metadata_ = std::move(metadata);
  }
  void add(std::string name, DType dtype, std::vector<int64_t> shape);
  void write(const std::string &path, const TensorProducer &produce) const;

private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t byteSize;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

class GgufStreamWriter {
public:
  void set(std::string key, GgufValue value) {
    kv_.emplace_back(std::move(key), std::move(value));
  }
  /// `dims` innermost first, as GGUF stores them.
  void add(std::string name, GgmlType type, std::vector<int64_t> dims);
  void write(const std::string &path, const TensorProducer &produce) const;

private:
  struct Entry {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    uint64_t byteSize;
  };
  static constexpr uint64_t kAlignment = 32; // GGUF default general.alignment
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Entry> entries_;
};

} // namespace bitloom

#endif // BITLOOM_MODEL_CHECKPOINTWRITER_H

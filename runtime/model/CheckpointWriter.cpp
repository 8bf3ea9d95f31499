//===- CheckpointWriter.cpp - Streaming safetensors / GGUF writers --------===//
#include "model/CheckpointWriter.h"

#include "formats/Error.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <unistd.h>

namespace bitloom {

//===----------------------------------------------------------------------===//
// AtomicOutputFile
//===----------------------------------------------------------------------===//

AtomicOutputFile::AtomicOutputFile(std::string path) : path_(std::move(path)) {
  tmpPath_ = path_ + ".tmp-" + std::to_string(::getpid());
  file_ = std::fopen(tmpPath_.c_str(), "wb");
  if (!file_)
    throw FormatError(path_, "",
                      std::string("cannot create: ") + std::strerror(errno));
  // Large buffered writes: the data arrives in multi-megabyte chunks anyway.
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
}

AtomicOutputFile::~AtomicOutputFile() {
  if (file_) {
    std::fclose(file_);
    std::remove(tmpPath_.c_str());
  }
}

void AtomicOutputFile::write(const void *data, size_t size) {
  if (size && std::fwrite(data, 1, size, file_) != size)
    throw FormatError(path_, "",
                      std::string("write failed: ") + std::strerror(errno));
  offset_ += size;
}

void AtomicOutputFile::writeZeros(size_t size) {
  static const char zeros[64] = {};
  while (size) {
    size_t n = size < sizeof zeros ? size : sizeof zeros;
    write(zeros, n);
    size -= n;
  }
}

void AtomicOutputFile::commit() {
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  ok = std::fclose(file_) == 0 && ok;
  file_ = nullptr;
  if (!ok || std::rename(tmpPath_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    std::remove(tmpPath_.c_str());
    throw FormatError(path_, "",
                      std::string("cannot write: ") + std::strerror(err));
  }
}

namespace {

class CountingSink : public TensorSink {
public:
  CountingSink(AtomicOutputFile &file, const std::string &path,
               const std::string &name, uint64_t expected)
      : file_(file), path_(path), name_(name), expected_(expected) {}
  void write(const void *data, size_t size) override {
    if (written_ + size > expected_)
      throw std::logic_error(path_ + ": " + name_ +
                             ": producer wrote more "
                             "than the declared size");
    file_.write(data, size);
    written_ += size;
  }
  void finish() const {
    if (written_ != expected_)
      throw std::logic_error(path_ + ": " + name_ + ": producer wrote " +
                             std::to_string(written_) + " of " +
                             std::to_string(expected_) + " bytes");
  }

private:
  AtomicOutputFile &file_;
  const std::string &path_;
  const std::string &name_;
  uint64_t expected_;
  uint64_t written_ = 0;
};

uint64_t numElements(const std::vector<int64_t> &shape) {
  uint64_t n = 1;
  for (int64_t d : shape)
    n *= uint64_t(d);
  return n;
}

/// Little-endian byte buffer for headers.
class Bytes {
public:
  template <typename T> void put(T v) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T)); // hosts are little-endian (GGUF reader too)
    data_.insert(data_.end(), b, b + sizeof(T));
  }
  void putString(const std::string &s) {
    put<uint64_t>(s.size());
    data_.insert(data_.end(), s.begin(), s.end());
  }
  const std::vector<unsigned char> &data() const { return data_; }

private:
  std::vector<unsigned char> data_;
};

void putScalar(Bytes &b, GgufValueType type, const GgufValue &v) {
  auto asU = [&]() -> uint64_t {
    if (auto *u = std::get_if<uint64_t>(&v.value))
      return *u;
    if (auto *i = std::get_if<int64_t>(&v.value))
      return uint64_t(*i);
    throw std::logic_error("GGUF value is not an integer");
  };
  auto asF = [&]() -> double {
    if (auto *d = std::get_if<double>(&v.value))
      return *d;
    throw std::logic_error("GGUF value is not a float");
  };
  switch (type) {
  case GgufValueType::U8:
  case GgufValueType::I8:
    b.put<uint8_t>(uint8_t(asU()));
    return;
  case GgufValueType::U16:
  case GgufValueType::I16:
    b.put<uint16_t>(uint16_t(asU()));
    return;
  case GgufValueType::U32:
  case GgufValueType::I32:
    b.put<uint32_t>(uint32_t(asU()));
    return;
  case GgufValueType::U64:
  case GgufValueType::I64:
    b.put<uint64_t>(asU());
    return;
  case GgufValueType::F32:
    b.put<float>(float(asF()));
    return;
  case GgufValueType::F64:
    b.put<double>(asF());
    return;
  case GgufValueType::Bool:
    b.put<uint8_t>(std::get<bool>(v.value) ? 1 : 0);
    return;
  case GgufValueType::String:
    b.putString(std::get<std::string>(v.value));
    return;
  case GgufValueType::Array:
    break;
  }
  throw std::logic_error("nested GGUF arrays are not supported");
}

void putValue(Bytes &b, const GgufValue &v) {
  b.put<uint32_t>(uint32_t(v.type));
  if (v.type != GgufValueType::Array) {
    putScalar(b, v.type, v);
    return;
  }
  const auto &elems = std::get<std::vector<GgufValue>>(v.value);
  b.put<uint32_t>(uint32_t(v.elementType));
  b.put<uint64_t>(elems.size());
  for (const GgufValue &e : elems)
    putScalar(b, v.elementType, e);
}

} // namespace

//===----------------------------------------------------------------------===//
// Safetensors
//===----------------------------------------------------------------------===//

void SafetensorsStreamWriter::add(std::string name, DType dtype,
                                  std::vector<int64_t> shape) {
  uint64_t bytes = dtypeStorageBytes(dtype, numElements(shape));
  entries_.push_back({std::move(name), dtype, std::move(shape), bytes});
}

void SafetensorsStreamWriter::write(const std::string &path,
                                    const TensorProducer &produce) const {
  // Tensors in declaration order, contiguous, like the reference writer.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty())
    header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry &e : entries_) {
    header[e.name] = {{"dtype", dtypeName(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.byteSize}}};
    offset += e.byteSize;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' '); // data buffer 8-aligned
  AtomicOutputFile file(path);
  Bytes len;
  len.put<uint64_t>(text.size());
  file.write(len.data().data(), len.data().size());
  file.write(text.data(), text.size());
  for (size_t i = 0; i < entries_.size(); ++i) {
    CountingSink sink(file, path, entries_[i].name, entries_[i].byteSize);
    produce(i, sink);
    sink.finish();
  }
  file.commit();
}

//===----------------------------------------------------------------------===//
// GGUF
//===----------------------------------------------------------------------===//

void GgufStreamWriter::add(std::string name, GgmlType type,
                           std::vector<int64_t> dims) {
  std::optional<DType> dt = ggmlTypeToDType(uint32_t(type));
  if (!dt)
    throw std::logic_error("GgufStreamWriter: unsupported type for " + name);
  uint64_t bytes = dtypeStorageBytes(*dt, numElements(dims));
  if (bytes == 0 && numElements(dims) != 0)
    throw std::logic_error("GgufStreamWriter: " + name +
                           " is not a whole number of blocks");
  entries_.push_back({std::move(name), type, std::move(dims), bytes});
}

void GgufStreamWriter::write(const std::string &path,
                             const TensorProducer &produce) const {
  auto padded = [](uint64_t n) {
    return (n + kAlignment - 1) / kAlignment * kAlignment;
  };
  Bytes head;
  head.put<uint32_t>(0x46554747); // "GGUF"
  head.put<uint32_t>(3);
  head.put<uint64_t>(entries_.size());
  head.put<uint64_t>(kv_.size());
  for (const auto &[key, value] : kv_) {
    head.putString(key);
    putValue(head, value);
  }
  uint64_t offset = 0;
  for (const Entry &e : entries_) {
    head.putString(e.name);
    head.put<uint32_t>(uint32_t(e.dims.size()));
    for (int64_t d : e.dims)
      head.put<int64_t>(d);
    head.put<uint32_t>(uint32_t(e.type));
    head.put<uint64_t>(offset);
    offset += padded(e.byteSize);
  }
  AtomicOutputFile file(path);
  file.write(head.data().data(), head.data().size());
  file.writeZeros(padded(file.offset()) - file.offset());
  for (size_t i = 0; i < entries_.size(); ++i) {
    CountingSink sink(file, path, entries_[i].name, entries_[i].byteSize);
    produce(i, sink);
    sink.finish();
    file.writeZeros(padded(entries_[i].byteSize) - entries_[i].byteSize);
  }
  file.commit();
}

} // namespace bitloom

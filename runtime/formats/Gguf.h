//===- Gguf.h - GGUF v3 reader and writer -----------------------*- C++ -*-===//
//
// https://github.com/ggml-org/ggml/blob/master/docs/gguf.md. Little-endian
// only. Tensor dims are stored innermost first (ne[0] is the row length), so
// a [out, in] weight appears as dims {in, out}.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_FORMATS_GGUF_H
#define BITLOOM_FORMATS_GGUF_H

#include "formats/DType.h"
#include "formats/MappedFile.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace bitloom {

/// GGUF metadata value types (gguf_type).
enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12
};

/// "u8", "i32", "f32", "bool", "str", "arr", ... as gguf.cpp names them;
/// "type N" for unknown values.
std::string ggufValueTypeName(uint32_t type);

/// A metadata value. Scalars keep their GGUF type; arrays keep the element
/// type and hold their elements as a vector of values (strings for string
/// arrays). Arrays of arrays are rejected on read. `value` holds uint64_t for
/// U8/U16/U32/U64, int64_t for I8/I16/I32/I64, double for F32/F64 (an F32 is
/// exact as a double), bool, std::string, or the array's elements.
struct GgufValue {
  GgufValueType type = GgufValueType::U32;
  GgufValueType elementType = GgufValueType::U32; // for arrays
  std::variant<uint64_t, int64_t, double, bool, std::string,
               std::vector<GgufValue>>
      value;

  // Constructors for writers.
  static GgufValue u8(uint8_t v);
  static GgufValue i8(int8_t v);
  static GgufValue u16(uint16_t v);
  static GgufValue i16(int16_t v);
  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue i64(int64_t v);
  static GgufValue f32(float v);
  static GgufValue f64(double v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue stringArray(std::vector<std::string> v);
  static GgufValue f32Array(const std::vector<float> &v);
  static GgufValue i32Array(const std::vector<int32_t> &v);
  /// An array of scalars or strings; every element must have type
  /// `elementType` (checked by GgufWriter::write).
  static GgufValue array(GgufValueType elementType,
                         std::vector<GgufValue> elements);

  bool isInteger() const; // any integer type
  bool isFloat() const;   // F32 / F64
};

/// Same type (and element type for arrays) and same value.
bool operator==(const GgufValue &a, const GgufValue &b);
inline bool operator!=(const GgufValue &a, const GgufValue &b) {
  return !(a == b);
}

/// ggml tensor types that bitloom reads (ggml_type numbering).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35
};

/// "F32", "TQ2_0", ... or "type N" for unknown values.
std::string ggmlTypeName(uint32_t type);
/// The DType for F32/F16/BF16/TQ1_0/TQ2_0/I8/I16/I32/I64/F64; nullopt
/// otherwise (bitloom does not read other quantized types).
std::optional<DType> ggmlTypeToDType(uint32_t type);

struct GgufTensor {
  std::string name;
  uint32_t type;             // raw ggml_type value
  std::vector<int64_t> dims; // innermost first, as stored
  uint64_t offset;           // relative to the data section
  const uint8_t *data;       // points into the mapping
  size_t byteSize;
  uint64_t numElements() const;
};

class GgufFile {
public:
  /// Maps and validates: magic "GGUF", version 3 (2 accepted), counts and
  /// string lengths bounded by the file size (never allocate on a lying
  /// length), unique non-empty keys and tensor names, known value types,
  /// general.alignment a u32 power of two, tensor types bitloom reads, at
  /// most 4 non-negative dims, offsets aligned to general.alignment (default
  /// 32), data inside the file and not overlapping, row sizes a multiple of
  /// the block size. Errors are FormatError naming the file and the key /
  /// tensor (e.g. "m.gguf: tensor blk.0.attn_q.weight: unsupported ggml type
  /// Q4_K").
  static GgufFile open(const std::string &path);

  const std::string &path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  /// File offset of the (aligned) tensor data section.
  uint64_t dataOffset() const { return dataOffset_; }
  /// Keys in file order.
  const std::vector<std::pair<std::string, GgufValue>> &metadata() const {
    return kv_;
  }
  const GgufValue *find(const std::string &key) const;
  const std::vector<GgufTensor> &tensors() const { return tensors_; }
  const GgufTensor *findTensor(const std::string &name) const;

  // Typed getters; throw FormatError(path, key, ...) when the key is missing
  // (for the non-optional form) or has the wrong type.
  std::string getString(const std::string &key) const;
  std::optional<std::string> getOptionalString(const std::string &key) const;
  uint64_t getUInt(const std::string &key) const; // any integer type >= 0
  std::optional<uint64_t> getOptionalUInt(const std::string &key) const;
  double getFloat(const std::string &key) const; // F32/F64 (ints accepted)
  std::optional<double> getOptionalFloat(const std::string &key) const;
  std::vector<std::string> getStringArray(const std::string &key) const;
  std::vector<double> getFloatArray(const std::string &key) const;
  std::vector<int64_t> getIntArray(const std::string &key) const;

private:
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t dataOffset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t> kvIndex_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensorIndex_;
};

/// Builds a GGUF v3 file in memory order: header, metadata, tensor infos,
/// aligned data. write() is atomic and streams tensor data from the caller's
/// buffers. The layout is the one llama.cpp's gguf.cpp requires: tensor
/// offsets consecutive in tensor order, each tensor padded to
/// general.alignment (a u32 power of two, default 32), data section aligned.
/// write() throws FormatError(path, key or tensor, ...) on values llama.cpp
/// would reject (empty keys, mixed or nested arrays, more than 4 dims, names
/// of 64 bytes or more, byte sizes that don't match the dims, ...).
class GgufWriter {
public:
  /// Keeps insertion order; setting an existing key replaces its value in
  /// place.
  void set(const std::string &key, GgufValue value);
  /// `dims` innermost first; `data` must hold the tensor's bytes and stay
  /// alive until write().
  void addTensor(const std::string &name, uint32_t type,
                 std::vector<int64_t> dims, const void *data, size_t byteSize);
  void write(const std::string &path) const;

private:
  struct PendingTensor {
    std::string name;
    uint32_t type;
    std::vector<int64_t> dims;
    const void *data;
    size_t byteSize;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<PendingTensor> tensors_;
};

} // namespace bitloom

#endif // BITLOOM_FORMATS_GGUF_H

//===- Gguf.cpp - GGUF v3 reader and writer -------------------------------===//
//
// The reader trusts nothing in the file: every count and length is checked
// against the bytes that remain before anything is allocated, so a corrupt
// or hostile file ends in a FormatError, never in a crash, a hang or a huge
// allocation. The writer produces the layout llama.cpp's gguf.cpp demands.
//
//===----------------------------------------------------------------------===//
#include "formats/Gguf.h"
#include "formats/Error.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <set>

namespace bitloom {

namespace {
constexpr uint32_t kDefaultAlignment = 32;
constexpr size_t kMaxDims = 4;     // GGML_MAX_DIMS
constexpr size_t kMaxNameLen = 64; // GGML_MAX_NAME, terminator included
const char *const kAlignmentKey = "general.alignment";

bool isKnownValueType(uint32_t t) { return t <= 12; }

/// Bytes of a scalar value type; 0 for strings and arrays.
size_t scalarSize(GgufValueType t) {
  switch (t) {
  case GgufValueType::U8:
  case GgufValueType::I8:
  case GgufValueType::Bool:
    return 1;
  case GgufValueType::U16:
  case GgufValueType::I16:
    return 2;
  case GgufValueType::U32:
  case GgufValueType::I32:
  case GgufValueType::F32:
    return 4;
  case GgufValueType::U64:
  case GgufValueType::I64:
  case GgufValueType::F64:
    return 8;
  case GgufValueType::String:
  case GgufValueType::Array:
    return 0;
  }
  return 0;
}

bool isUnsignedType(GgufValueType t) {
  return t == GgufValueType::U8 || t == GgufValueType::U16 ||
         t == GgufValueType::U32 || t == GgufValueType::U64;
}
bool isSignedType(GgufValueType t) {
  return t == GgufValueType::I8 || t == GgufValueType::I16 ||
         t == GgufValueType::I32 || t == GgufValueType::I64;
}
bool isFloatType(GgufValueType t) {
  return t == GgufValueType::F32 || t == GgufValueType::F64;
}

std::string describe(const GgufValue &v) {
  if (v.type == GgufValueType::Array)
    return "array of " + ggufValueTypeName(uint32_t(v.elementType));
  return ggufValueTypeName(uint32_t(v.type));
}

/// Bounds-checked little-endian cursor over the mapping.
class Cursor {
public:
  Cursor(const std::string &path, const uint8_t *data, size_t size)
      : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(size_t n, const std::string &field, const char *what) const {
    if (n > remaining())
      throw FormatError(path_, field,
                        std::string("file is truncated: ") + what + " needs " +
                            std::to_string(n) + " bytes at offset " +
                            std::to_string(pos_) + ", only " +
                            std::to_string(remaining()) + " remain");
  }

  template <typename T> T read(const std::string &field, const char *what) {
    need(sizeof(T), field, what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string readString(const std::string &field, const char *what) {
    uint64_t len = read<uint64_t>(field, what);
    if (len > remaining())
      throw FormatError(path_, field,
                        std::string(what) + " length " + std::to_string(len) +
                            " exceeds the " + std::to_string(remaining()) +
                            " bytes left in the file");
    std::string s(reinterpret_cast<const char *>(data_ + pos_),
                  static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

private:
  const std::string &path_;
  const uint8_t *data_;
  size_t size_;
  size_t pos_ = 0;
};

GgufValue readScalar(Cursor &c, GgufValueType t, const std::string &field) {
  GgufValue v;
  v.type = t;
  switch (t) {
  case GgufValueType::U8:
    v.value = uint64_t(c.read<uint8_t>(field, "value"));
    break;
  case GgufValueType::I8:
    v.value = int64_t(c.read<int8_t>(field, "value"));
    break;
  case GgufValueType::U16:
    v.value = uint64_t(c.read<uint16_t>(field, "value"));
    break;
  case GgufValueType::I16:
    v.value = int64_t(c.read<int16_t>(field, "value"));
    break;
  case GgufValueType::U32:
    v.value = uint64_t(c.read<uint32_t>(field, "value"));
    break;
  case GgufValueType::I32:
    v.value = int64_t(c.read<int32_t>(field, "value"));
    break;
  case GgufValueType::F32:
    v.value = double(c.read<float>(field, "value"));
    break;
  case GgufValueType::Bool:
    // gguf.cpp reads any non-zero byte as true.
    v.value = c.read<uint8_t>(field, "value") != 0;
    break;
  case GgufValueType::String:
    v.value = c.readString(field, "string");
    break;
  case GgufValueType::U64:
    v.value = c.read<uint64_t>(field, "value");
    break;
  case GgufValueType::I64:
    v.value = c.read<int64_t>(field, "value");
    break;
  case GgufValueType::F64:
    v.value = c.read<double>(field, "value");
    break;
  case GgufValueType::Array:
    break; // handled by the caller
  }
  return v;
}

GgufValue readValue(Cursor &c, const std::string &path, uint32_t rawType,
                    const std::string &field) {
  if (!isKnownValueType(rawType))
    throw FormatError(path, field,
                      "unknown metadata value type " + std::to_string(rawType));
  GgufValueType type = GgufValueType(rawType);
  if (type != GgufValueType::Array)
    return readScalar(c, type, field);

  uint32_t rawElem = c.read<uint32_t>(field, "array element type");
  if (!isKnownValueType(rawElem))
    throw FormatError(path, field,
                      "unknown array element type " + std::to_string(rawElem));
  GgufValueType elem = GgufValueType(rawElem);
  if (elem == GgufValueType::Array)
    throw FormatError(path, field, "arrays of arrays are not supported");
  uint64_t count = c.read<uint64_t>(field, "array length");
  // Every element takes at least its scalar size (a string its 8-byte
  // length), so a count the remaining bytes can't hold is a lie: reject it
  // before reserving anything.
  size_t minSize = elem == GgufValueType::String ? 8 : scalarSize(elem);
  if (count > c.remaining() / minSize)
    throw FormatError(path, field,
                      "array length " + std::to_string(count) +
                          " exceeds what the " + std::to_string(c.remaining()) +
                          " bytes left in the file can hold");
  std::vector<GgufValue> elements;
  elements.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i)
    elements.push_back(readScalar(c, elem, field));
  GgufValue v;
  v.type = GgufValueType::Array;
  v.elementType = elem;
  v.value = std::move(elements);
  return v;
}

/// Integer value of a scalar as int64 when it fits; throws otherwise.
bool toInt64(const GgufValue &v, int64_t &out) {
  if (isUnsignedType(v.type)) {
    uint64_t u = std::get<uint64_t>(v.value);
    if (u > uint64_t(std::numeric_limits<int64_t>::max()))
      return false;
    out = int64_t(u);
    return true;
  }
  out = std::get<int64_t>(v.value);
  return true;
}

/// "unsupported ggml type Q4_K", or "unknown ggml type 99".
std::string unsupportedType(uint32_t type) {
  std::string name = ggmlTypeName(type);
  if (name.rfind("type ", 0) == 0)
    return "unknown ggml type " + std::to_string(type);
  return "unsupported ggml type " + name;
}

uint64_t padTo(uint64_t x, uint64_t align) {
  return (x + align - 1) / align * align;
}
} // namespace

std::string ggufValueTypeName(uint32_t type) {
  static const char *const names[] = {"u8",  "i8",  "u16",  "i16", "u32",
                                      "i32", "f32", "bool", "str", "arr",
                                      "u64", "i64", "f64"};
  if (type < sizeof(names) / sizeof(names[0]))
    return names[type];
  return "type " + std::to_string(type);
}

std::string ggmlTypeName(uint32_t type) {
  switch (type) {
  case 0:
    return "F32";
  case 1:
    return "F16";
  case 2:
    return "Q4_0";
  case 3:
    return "Q4_1";
  case 6:
    return "Q5_0";
  case 7:
    return "Q5_1";
  case 8:
    return "Q8_0";
  case 9:
    return "Q8_1";
  case 10:
    return "Q2_K";
  case 11:
    return "Q3_K";
  case 12:
    return "Q4_K";
  case 13:
    return "Q5_K";
  case 14:
    return "Q6_K";
  case 15:
    return "Q8_K";
  case 16:
    return "IQ2_XXS";
  case 17:
    return "IQ2_XS";
  case 18:
    return "IQ3_XXS";
  case 19:
    return "IQ1_S";
  case 20:
    return "IQ4_NL";
  case 21:
    return "IQ3_S";
  case 22:
    return "IQ2_S";
  case 23:
    return "IQ4_XS";
  case 24:
    return "I8";
  case 25:
    return "I16";
  case 26:
    return "I32";
  case 27:
    return "I64";
  case 28:
    return "F64";
  case 29:
    return "IQ1_M";
  case 30:
    return "BF16";
  case 34:
    return "TQ1_0";
  case 35:
    return "TQ2_0";
  case 39:
    return "MXFP4";
  default:
    return "type " + std::to_string(type);
  }
}

std::optional<DType> ggmlTypeToDType(uint32_t type) {
  switch (GgmlType(type)) {
  case GgmlType::F32:
    return DType::F32;
  case GgmlType::F16:
    return DType::F16;
  case GgmlType::BF16:
    return DType::BF16;
  case GgmlType::TQ1_0:
    return DType::TQ1_0;
  case GgmlType::TQ2_0:
    return DType::TQ2_0;
  case GgmlType::I8:
    return DType::I8;
  case GgmlType::I16:
    return DType::I16;
  case GgmlType::I32:
    return DType::I32;
  case GgmlType::I64:
    return DType::I64;
  case GgmlType::F64:
    return DType::F64;
  default:
    return std::nullopt;
  }
}

//===----------------------------------------------------------------------===//
// GgufValue
//===----------------------------------------------------------------------===//

namespace {
GgufValue makeScalar(GgufValueType t,
                     std::variant<uint64_t, int64_t, double, bool, std::string,
                                  std::vector<GgufValue>>
                         v) {
  GgufValue g;
  g.type = t;
  g.value = std::move(v);
  return g;
}
} // namespace

GgufValue GgufValue::u8(uint8_t v) {
  return makeScalar(GgufValueType::U8, uint64_t(v));
}
GgufValue GgufValue::i8(int8_t v) {
  return makeScalar(GgufValueType::I8, int64_t(v));
}
GgufValue GgufValue::u16(uint16_t v) {
  return makeScalar(GgufValueType::U16, uint64_t(v));
}
GgufValue GgufValue::i16(int16_t v) {
  return makeScalar(GgufValueType::I16, int64_t(v));
}
GgufValue GgufValue::u32(uint32_t v) {
  return makeScalar(GgufValueType::U32, uint64_t(v));
}
GgufValue GgufValue::i32(int32_t v) {
  return makeScalar(GgufValueType::I32, int64_t(v));
}
GgufValue GgufValue::u64(uint64_t v) {
  return makeScalar(GgufValueType::U64, v);
}
GgufValue GgufValue::i64(int64_t v) {
  return makeScalar(GgufValueType::I64, v);
}
GgufValue GgufValue::f32(float v) {
  return makeScalar(GgufValueType::F32, double(v));
}
GgufValue GgufValue::f64(double v) { return makeScalar(GgufValueType::F64, v); }
GgufValue GgufValue::boolean(bool v) {
  return makeScalar(GgufValueType::Bool, v);
}
GgufValue GgufValue::string(std::string v) {
  return makeScalar(GgufValueType::String, std::move(v));
}
GgufValue GgufValue::array(GgufValueType elementType,
                           std::vector<GgufValue> elements) {
  GgufValue g;
  g.type = GgufValueType::Array;
  g.elementType = elementType;
  g.value = std::move(elements);
  return g;
}
GgufValue GgufValue::stringArray(std::vector<std::string> v) {
  std::vector<GgufValue> e;
  e.reserve(v.size());
  for (std::string &s : v)
    e.push_back(string(std::move(s)));
  return array(GgufValueType::String, std::move(e));
}
GgufValue GgufValue::f32Array(const std::vector<float> &v) {
  std::vector<GgufValue> e;
  e.reserve(v.size());
  for (float f : v)
    e.push_back(f32(f));
  return array(GgufValueType::F32, std::move(e));
}
GgufValue GgufValue::i32Array(const std::vector<int32_t> &v) {
  std::vector<GgufValue> e;
  e.reserve(v.size());
  for (int32_t i : v)
    e.push_back(i32(i));
  return array(GgufValueType::I32, std::move(e));
}

bool GgufValue::isInteger() const {
  return isUnsignedType(type) || isSignedType(type);
}
bool GgufValue::isFloat() const { return isFloatType(type); }

bool operator==(const GgufValue &a, const GgufValue &b) {
  if (a.type != b.type)
    return false;
  if (a.type == GgufValueType::Array && a.elementType != b.elementType)
    return false;
  return a.value == b.value;
}

uint64_t GgufTensor::numElements() const {
  uint64_t n = 1;
  for (int64_t d : dims)
    n *= uint64_t(d);
  return n;
}

//===----------------------------------------------------------------------===//
// GgufFile
//===----------------------------------------------------------------------===//

GgufFile GgufFile::open(const std::string &path) {
  GgufFile f;
  f.file_ = MappedFile::open(path);
  const uint8_t *base = f.file_->data();
  const size_t fileSize = f.file_->size();
  Cursor c(path, base, fileSize);

  c.need(4, "magic", "the magic");
  if (std::memcmp(base, "GGUF", 4) != 0) {
    std::string shown;
    for (int i = 0; i < 4; ++i)
      shown += std::isprint(base[i]) ? char(base[i]) : '?';
    throw FormatError(path, "magic",
                      "bad magic \"" + shown + "\", expected \"GGUF\"");
  }
  c.read<uint32_t>("magic", "the magic");

  f.version_ = c.read<uint32_t>("version", "the version");
  if (f.version_ != 2 && f.version_ != 3) {
    // A byte-swapped (big-endian) v3 reads as 0x03000000.
    std::string hint =
        (f.version_ & 0xffff) == 0 ? " (a big-endian file?)" : "";
    throw FormatError(path, "version",
                      "unsupported GGUF version " + std::to_string(f.version_) +
                          hint + "; bitloom reads versions 2 and 3");
  }
  uint64_t nTensors = c.read<uint64_t>("tensor count", "the tensor count");
  uint64_t nKv = c.read<uint64_t>("metadata count", "the metadata count");
  // Smallest possible entries: a key/value is an 8-byte key length, a 4-byte
  // type and a 1-byte value; a tensor info is an 8-byte name length, a
  // 4-byte dim count, a 4-byte type and an 8-byte offset.
  if (nKv > c.remaining() / 13)
    throw FormatError(path, "metadata count",
                      std::to_string(nKv) +
                          " entries can't fit in the remaining " +
                          std::to_string(c.remaining()) + " bytes");
  if (nTensors > c.remaining() / 24)
    throw FormatError(path, "tensor count",
                      std::to_string(nTensors) +
                          " tensor infos can't fit in the remaining " +
                          std::to_string(c.remaining()) + " bytes");

  f.kv_.reserve(static_cast<size_t>(nKv));
  for (uint64_t i = 0; i < nKv; ++i) {
    const std::string entry = "metadata entry " + std::to_string(i);
    std::string key = c.readString(entry, "key");
    if (key.empty())
      throw FormatError(path, entry, "empty key");
    if (f.kvIndex_.count(key))
      throw FormatError(path, key, "key appears twice");
    uint32_t rawType = c.read<uint32_t>(key, "value type");
    GgufValue value = readValue(c, path, rawType, key);
    f.kvIndex_[key] = f.kv_.size();
    f.kv_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue *a = f.find(kAlignmentKey)) {
    // gguf.cpp insists on u32 here; a file it rejects is not one we accept.
    if (a->type != GgufValueType::U32)
      throw FormatError(path, kAlignmentKey,
                        "must be a u32, found " + describe(*a));
    uint64_t align = std::get<uint64_t>(a->value);
    if (align == 0 || (align & (align - 1)) != 0)
      throw FormatError(path, kAlignmentKey,
                        "alignment " + std::to_string(align) +
                            " is not a power of two");
    f.alignment_ = uint32_t(align);
  }

  f.tensors_.reserve(static_cast<size_t>(nTensors));
  for (uint64_t i = 0; i < nTensors; ++i) {
    std::string name = c.readString("tensor " + std::to_string(i), "name");
    const std::string field = "tensor " + name;
    if (f.tensorIndex_.count(name))
      throw FormatError(path, field, "name appears twice");
    uint32_t nDims = c.read<uint32_t>(field, "the dimension count");
    if (nDims > kMaxDims)
      throw FormatError(path, field,
                        "has " + std::to_string(nDims) +
                            " dimensions; GGUF allows at most 4");
    GgufTensor t;
    t.name = std::move(name);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nDims; ++d) {
      int64_t ne = c.read<int64_t>(field, "a dimension");
      if (ne < 0)
        throw FormatError(path, field,
                          "dimension " + std::to_string(d) + " is negative (" +
                              std::to_string(ne) + ")");
      if (ne != 0 &&
          numel > uint64_t(std::numeric_limits<int64_t>::max()) / uint64_t(ne))
        throw FormatError(path, field, "element count overflows");
      numel *= uint64_t(ne);
      t.dims.push_back(ne);
    }
    t.type = c.read<uint32_t>(field, "the type");
    std::optional<DType> dtype = ggmlTypeToDType(t.type);
    if (!dtype)
      throw FormatError(path, field, unsupportedType(t.type));
    uint64_t rowSize = t.dims.empty() ? 1 : uint64_t(t.dims[0]);
    size_t block = dtypeBlockSize(*dtype);
    if (rowSize % block != 0)
      throw FormatError(path, field,
                        "row size " + std::to_string(rowSize) +
                            " is not a multiple of " + ggmlTypeName(t.type) +
                            "'s block size " + std::to_string(block));
    uint64_t blocks = numel / block;
    if (blocks > std::numeric_limits<uint64_t>::max() / dtypeBlockBytes(*dtype))
      throw FormatError(path, field, "byte size overflows");
    uint64_t bytes = blocks * dtypeBlockBytes(*dtype);
    t.offset = c.read<uint64_t>(field, "the data offset");
    if (t.offset % f.alignment_ != 0)
      throw FormatError(path, field,
                        "data offset " + std::to_string(t.offset) +
                            " is not a multiple of the alignment " +
                            std::to_string(f.alignment_));
    if (bytes > std::numeric_limits<size_t>::max())
      throw FormatError(path, field, "byte size overflows");
    t.byteSize = static_cast<size_t>(bytes);
    t.data = nullptr;
    f.tensorIndex_[t.name] = f.tensors_.size();
    f.tensors_.push_back(std::move(t));
  }

  f.dataOffset_ = padTo(c.pos(), f.alignment_);
  if (!f.tensors_.empty() && f.dataOffset_ > fileSize)
    throw FormatError(path, "data section",
                      "starts at offset " + std::to_string(f.dataOffset_) +
                          ", past the end of the file (" +
                          std::to_string(fileSize) + " bytes)");
  const uint64_t dataSize =
      f.dataOffset_ <= fileSize ? fileSize - f.dataOffset_ : 0;
  for (GgufTensor &t : f.tensors_) {
    if (t.offset > dataSize || t.byteSize > dataSize - t.offset)
      throw FormatError(path, "tensor " + t.name,
                        "data [" + std::to_string(t.offset) + ", " +
                            std::to_string(t.offset + t.byteSize) +
                            ") lies outside the file's data section (" +
                            std::to_string(dataSize) + " bytes)");
    t.data = base + f.dataOffset_ + t.offset;
  }

  // Overlapping tensors would alias each other's weights.
  std::vector<const GgufTensor *> order;
  for (const GgufTensor &t : f.tensors_)
    if (t.byteSize > 0)
      order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const GgufTensor *a, const GgufTensor *b) {
              return a->offset < b->offset;
            });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->offset < order[i - 1]->offset + order[i - 1]->byteSize)
      throw FormatError(path, "tensor " + order[i]->name,
                        "data at offset " + std::to_string(order[i]->offset) +
                            " overlaps tensor " + order[i - 1]->name);
  return f;
}

const GgufValue *GgufFile::find(const std::string &key) const {
  auto it = kvIndex_.find(key);
  return it == kvIndex_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensor *GgufFile::findTensor(const std::string &name) const {
  auto it = tensorIndex_.find(name);
  return it == tensorIndex_.end() ? nullptr : &tensors_[it->second];
}

namespace {
[[noreturn]] void wrongType(const std::string &path, const std::string &key,
                            const char *expected, const GgufValue &v) {
  throw FormatError(path, key,
                    std::string("expected ") + expected + ", found " +
                        describe(v));
}

uint64_t scalarToUInt(const std::string &path, const std::string &key,
                      const GgufValue &v) {
  if (isUnsignedType(v.type))
    return std::get<uint64_t>(v.value);
  if (isSignedType(v.type)) {
    int64_t i = std::get<int64_t>(v.value);
    if (i < 0)
      throw FormatError(path, key,
                        "negative value " + std::to_string(i) +
                            " where a non-negative integer is expected");
    return uint64_t(i);
  }
  wrongType(path, key, "an integer", v);
}

double scalarToFloat(const std::string &path, const std::string &key,
                     const GgufValue &v) {
  if (isFloatType(v.type))
    return std::get<double>(v.value);
  if (isUnsignedType(v.type))
    return double(std::get<uint64_t>(v.value));
  if (isSignedType(v.type))
    return double(std::get<int64_t>(v.value));
  wrongType(path, key, "a number", v);
}

const std::vector<GgufValue> &arrayOf(const std::string &path,
                                      const std::string &key,
                                      const GgufValue &v,
                                      const char *expected) {
  if (v.type != GgufValueType::Array)
    wrongType(path, key, expected, v);
  return std::get<std::vector<GgufValue>>(v.value);
}
} // namespace

std::string GgufFile::getString(const std::string &key) const {
  if (std::optional<std::string> s = getOptionalString(key))
    return *s;
  throw FormatError(path(), key, "required key is missing");
}

std::optional<std::string>
GgufFile::getOptionalString(const std::string &key) const {
  const GgufValue *v = find(key);
  if (!v)
    return std::nullopt;
  if (v->type != GgufValueType::String)
    wrongType(path(), key, "a string", *v);
  return std::get<std::string>(v->value);
}

uint64_t GgufFile::getUInt(const std::string &key) const {
  if (std::optional<uint64_t> u = getOptionalUInt(key))
    return *u;
  throw FormatError(path(), key, "required key is missing");
}

std::optional<uint64_t>
GgufFile::getOptionalUInt(const std::string &key) const {
  const GgufValue *v = find(key);
  if (!v)
    return std::nullopt;
  return scalarToUInt(path(), key, *v);
}

double GgufFile::getFloat(const std::string &key) const {
  if (std::optional<double> d = getOptionalFloat(key))
    return *d;
  throw FormatError(path(), key, "required key is missing");
}

std::optional<double> GgufFile::getOptionalFloat(const std::string &key) const {
  const GgufValue *v = find(key);
  if (!v)
    return std::nullopt;
  return scalarToFloat(path(), key, *v);
}

std::vector<std::string>
GgufFile::getStringArray(const std::string &key) const {
  const GgufValue *v = find(key);
  if (!v)
    throw FormatError(path(), key, "required key is missing");
  const auto &elems = arrayOf(path(), key, *v, "an array of str");
  if (v->elementType != GgufValueType::String)
    wrongType(path(), key, "an array of str", *v);
  std::vector<std::string> out;
  out.reserve(elems.size());
  for (const GgufValue &e : elems)
    out.push_back(std::get<std::string>(e.value));
  return out;
}

std::vector<double> GgufFile::getFloatArray(const std::string &key) const {
  const GgufValue *v = find(key);
  if (!v)
    throw FormatError(path(), key, "required key is missing");
  const auto &elems = arrayOf(path(), key, *v, "an array of numbers");
  GgufValueType et = v->elementType;
  if (!isFloatType(et) && !isUnsignedType(et) && !isSignedType(et))
    wrongType(path(), key, "an array of numbers", *v);
  std::vector<double> out;
  out.reserve(elems.size());
  for (const GgufValue &e : elems)
    out.push_back(scalarToFloat(path(), key, e));
  return out;
}

std::vector<int64_t> GgufFile::getIntArray(const std::string &key) const {
  const GgufValue *v = find(key);
  if (!v)
    throw FormatError(path(), key, "required key is missing");
  const auto &elems = arrayOf(path(), key, *v, "an array of integers");
  if (!isUnsignedType(v->elementType) && !isSignedType(v->elementType))
    wrongType(path(), key, "an array of integers", *v);
  std::vector<int64_t> out;
  out.reserve(elems.size());
  for (const GgufValue &e : elems) {
    int64_t i;
    if (!toInt64(e, i))
      throw FormatError(path(), key,
                        "element " + std::to_string(out.size()) +
                            " does not fit in int64");
    out.push_back(i);
  }
  return out;
}

//===----------------------------------------------------------------------===//
// GgufWriter
//===----------------------------------------------------------------------===//

void GgufWriter::set(const std::string &key, GgufValue value) {
  for (auto &kv : kv_)
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  kv_.emplace_back(key, std::move(value));
}

void GgufWriter::addTensor(const std::string &name, uint32_t type,
                           std::vector<int64_t> dims, const void *data,
                           size_t byteSize) {
  tensors_.push_back({name, type, std::move(dims), data, byteSize});
}

namespace {
class ByteSink {
public:
  std::vector<uint8_t> bytes;
  template <typename T> void put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes.insert(bytes.end(), b, b + sizeof(T));
  }
  void putString(const std::string &s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
};

/// Serializes a scalar, checking that the stored alternative and range fit
/// the declared type.
void putScalar(ByteSink &out, const std::string &path, const std::string &key,
               GgufValueType t, const GgufValue &v) {
  auto fail = [&](const std::string &why) {
    throw FormatError(path, key, why);
  };
  if (v.type != t)
    fail("element of type " + ggufValueTypeName(uint32_t(v.type)) +
         " in an array of " + ggufValueTypeName(uint32_t(t)));
  if (isUnsignedType(t) || isSignedType(t)) {
    // Accept either integer alternative as long as the value fits.
    bool neg = false;
    uint64_t mag = 0;
    if (auto *u = std::get_if<uint64_t>(&v.value)) {
      mag = *u;
    } else if (auto *i = std::get_if<int64_t>(&v.value)) {
      neg = *i < 0;
      mag = neg ? uint64_t(0) - uint64_t(*i) : uint64_t(*i);
    } else {
      fail("value of type " + ggufValueTypeName(uint32_t(t)) +
           " holds no integer");
    }
    size_t bits = scalarSize(t) * 8;
    if (isUnsignedType(t)) {
      if (neg || (bits < 64 && mag >> bits))
        fail("value does not fit in " + ggufValueTypeName(uint32_t(t)));
    } else {
      uint64_t limit =
          neg ? (uint64_t(1) << (bits - 1)) : (uint64_t(1) << (bits - 1)) - 1;
      if (mag > limit)
        fail("value does not fit in " + ggufValueTypeName(uint32_t(t)));
    }
    uint64_t raw = neg ? uint64_t(0) - mag : mag; // two's complement
    for (size_t i = 0; i < scalarSize(t); ++i)
      out.bytes.push_back(uint8_t(raw >> (8 * i)));
    return;
  }
  switch (t) {
  case GgufValueType::F32:
  case GgufValueType::F64: {
    auto *d = std::get_if<double>(&v.value);
    if (!d)
      fail("float value holds no number");
    if (t == GgufValueType::F32)
      out.put<float>(float(*d));
    else
      out.put<double>(*d);
    return;
  }
  case GgufValueType::Bool: {
    auto *b = std::get_if<bool>(&v.value);
    if (!b)
      fail("bool value holds no bool");
    out.put<uint8_t>(*b ? 1 : 0);
    return;
  }
  case GgufValueType::String: {
    auto *s = std::get_if<std::string>(&v.value);
    if (!s)
      fail("string value holds no string");
    out.putString(*s);
    return;
  }
  default:
    fail("unknown value type " + ggufValueTypeName(uint32_t(t)));
  }
}

void putValue(ByteSink &out, const std::string &path, const std::string &key,
              const GgufValue &v) {
  if (!isKnownValueType(uint32_t(v.type)))
    throw FormatError(path, key,
                      "unknown value type " + std::to_string(uint32_t(v.type)));
  out.put<uint32_t>(uint32_t(v.type));
  if (v.type != GgufValueType::Array) {
    putScalar(out, path, key, v.type, v);
    return;
  }
  if (!isKnownValueType(uint32_t(v.elementType)) ||
      v.elementType == GgufValueType::Array)
    throw FormatError(path, key,
                      "arrays must hold scalars or strings, not " +
                          ggufValueTypeName(uint32_t(v.elementType)));
  auto *elems = std::get_if<std::vector<GgufValue>>(&v.value);
  if (!elems)
    throw FormatError(path, key, "array value holds no elements vector");
  out.put<uint32_t>(uint32_t(v.elementType));
  out.put<uint64_t>(elems->size());
  for (const GgufValue &e : *elems)
    putScalar(out, path, key, v.elementType, e);
}
} // namespace

void GgufWriter::write(const std::string &path) const {
  uint32_t alignment = kDefaultAlignment;
  ByteSink head;
  head.put<uint32_t>(0x46554747); // "GGUF"
  head.put<uint32_t>(3);
  head.put<uint64_t>(tensors_.size());
  head.put<uint64_t>(kv_.size());
  for (const auto &[key, value] : kv_) {
    if (key.empty())
      throw FormatError(path, "metadata", "empty key");
    if (key == kAlignmentKey) {
      auto *a = std::get_if<uint64_t>(&value.value);
      if (value.type != GgufValueType::U32 || !a)
        throw FormatError(path, key, "must be a u32, found " + describe(value));
      if (*a == 0 || (*a & (*a - 1)) != 0 || *a > 0xffffffffu)
        throw FormatError(path, key,
                          "alignment " + std::to_string(*a) +
                              " is not a u32 power of two");
      alignment = uint32_t(*a);
    }
    head.putString(key);
    putValue(head, path, key, value);
  }

  std::set<std::string> names;
  uint64_t offset = 0;
  std::vector<uint64_t> padded;
  for (const PendingTensor &t : tensors_) {
    const std::string field = "tensor " + t.name;
    if (t.name.empty())
      throw FormatError(path, field, "empty tensor name");
    if (t.name.size() >= kMaxNameLen)
      throw FormatError(path, field,
                        "name is " + std::to_string(t.name.size()) +
                            " bytes; llama.cpp allows at most 63");
    if (!names.insert(t.name).second)
      throw FormatError(path, field, "name given twice");
    if (t.dims.size() > kMaxDims)
      throw FormatError(path, field,
                        "has " + std::to_string(t.dims.size()) +
                            " dimensions; GGUF allows at most 4");
    std::optional<DType> dtype = ggmlTypeToDType(t.type);
    if (!dtype)
      throw FormatError(path, field, unsupportedType(t.type));
    uint64_t numel = 1;
    for (int64_t d : t.dims) {
      if (d < 0)
        throw FormatError(path, field,
                          "dimension is negative (" + std::to_string(d) + ")");
      if (d != 0 &&
          numel > uint64_t(std::numeric_limits<int64_t>::max()) / uint64_t(d))
        throw FormatError(path, field, "element count overflows");
      numel *= uint64_t(d);
    }
    uint64_t row = t.dims.empty() ? 1 : uint64_t(t.dims[0]);
    if (row % dtypeBlockSize(*dtype) != 0)
      throw FormatError(path, field,
                        "row size " + std::to_string(row) +
                            " is not a multiple of " + ggmlTypeName(t.type) +
                            "'s block size " +
                            std::to_string(dtypeBlockSize(*dtype)));
    uint64_t expected =
        numel / dtypeBlockSize(*dtype) * dtypeBlockBytes(*dtype);
    if (expected != t.byteSize)
      throw FormatError(path, field,
                        "has " + std::to_string(t.byteSize) +
                            " bytes, but its dims need " +
                            std::to_string(expected));
    if (t.byteSize > 0 && !t.data)
      throw FormatError(path, field, "has no data");
    head.putString(t.name);
    head.put<uint32_t>(uint32_t(t.dims.size()));
    for (int64_t d : t.dims)
      head.put<int64_t>(d);
    head.put<uint32_t>(t.type);
    // gguf.cpp requires each offset to be the padded end of the previous
    // tensor, so the data goes out in exactly this order.
    head.put<uint64_t>(offset);
    padded.push_back(padTo(t.byteSize, alignment));
    offset += padded.back();
  }

  AtomicFileWriter out(path);
  out.write(head.bytes.data(), head.bytes.size());
  out.writeZeros(padTo(out.offset(), alignment) - out.offset());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    out.write(tensors_[i].data, tensors_[i].byteSize);
    out.writeZeros(padded[i] - tensors_[i].byteSize);
  }
  out.commit();
}

} // namespace bitloom

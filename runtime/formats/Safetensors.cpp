//===- Safetensors.cpp - safetensors reader and writer --------------------===//
#include "formats/Safetensors.h"
#include "formats/Error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

namespace bitloom {

namespace {
using Json = nlohmann::json;

std::string quoted(const std::string &s) { return "\"" + s + "\""; }

/// numel of a shape, or an error naming the tensor when a dimension is
/// negative or the product overflows.
uint64_t checkedNumel(const std::string &path, const std::string &field,
                      const std::vector<int64_t> &shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      throw FormatError(path, field,
                        "shape has a negative dimension " + std::to_string(d));
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / uint64_t(d))
      throw FormatError(path, field, "shape's element count overflows");
    n *= uint64_t(d);
  }
  return n;
}

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// The dtypes the safetensors format defines and bitloom reads.
bool isSafetensorsDType(DType t) {
  return t != DType::TQ1_0 && t != DType::TQ2_0;
}
} // namespace

uint64_t SafetensorsTensor::numElements() const {
  uint64_t n = 1;
  for (int64_t d : shape)
    n *= uint64_t(d);
  return n;
}

SafetensorsFile SafetensorsFile::open(const std::string &path) {
  SafetensorsFile f;
  f.file_ = MappedFile::open(path);
  const uint8_t *base = f.file_->data();
  const size_t fileSize = f.file_->size();

  if (fileSize < 8)
    throw FormatError(path, "header size",
                      "file is truncated: " + std::to_string(fileSize) +
                          " bytes, the 8-byte header size does not fit");
  uint64_t headerSize = 0;
  for (int i = 7; i >= 0; --i)
    headerSize = (headerSize << 8) | base[i];
  if (headerSize > fileSize - 8)
    throw FormatError(path, "header size",
                      "header size " + std::to_string(headerSize) +
                          " is larger than the file (" +
                          std::to_string(fileSize) + " bytes)");
  const uint8_t *dataStart = base + 8 + headerSize;
  const uint64_t dataSize = fileSize - 8 - headerSize;

  // nlohmann keeps the last of duplicate keys silently; the parser callback
  // sees every top-level key so that duplicates can be reported.
  std::set<std::string> seen;
  std::string duplicate;
  auto onEvent = [&](int depth, Json::parse_event_t event, Json &parsed) {
    if (depth == 1 && event == Json::parse_event_t::key && parsed.is_string()) {
      if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty())
        duplicate = parsed.get<std::string>();
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(reinterpret_cast<const char *>(base + 8),
                         reinterpret_cast<const char *>(dataStart), onEvent);
  } catch (const Json::exception &e) {
    throw FormatError(path, "header", std::string("invalid JSON: ") + e.what());
  }
  if (!header.is_object())
    throw FormatError(path, "header", "the JSON header is not an object");
  if (!duplicate.empty())
    throw FormatError(path, "tensor " + duplicate,
                      "name appears twice in the header");

  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string &name = it.key();
    const Json &entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object())
        throw FormatError(path, "__metadata__", "must be an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          throw FormatError(path, "__metadata__." + m.key(),
                            "metadata values must be strings");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string field = "tensor " + name;
    if (!entry.is_object())
      throw FormatError(path, field, "entry is not an object");

    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string())
      throw FormatError(path, field, "missing string \"dtype\"");
    std::optional<DType> dtype = dtypeFromName(dt->get<std::string>());
    if (!dtype || !isSafetensorsDType(*dtype))
      throw FormatError(path, field,
                        "unknown dtype " + quoted(dt->get<std::string>()));

    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array())
      throw FormatError(path, field, "missing array \"shape\"");
    std::vector<int64_t> shape;
    for (const Json &d : *sh) {
      if (!d.is_number_integer())
        throw FormatError(path, field, "shape holds a non-integer " + d.dump());
      if (d.is_number_unsigned() &&
          d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        throw FormatError(path, field,
                          "shape dimension " + d.dump() + " is too large");
      shape.push_back(d.get<int64_t>());
    }
    uint64_t numel = checkedNumel(path, field, shape);

    auto off = entry.find("data_offsets");
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      throw FormatError(path, field,
                        "\"data_offsets\" must be two non-negative integers");
    uint64_t begin = (*off)[0].get<uint64_t>();
    uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end || end > dataSize)
      throw FormatError(path, field,
                        "data_offsets [" + std::to_string(begin) + ", " +
                            std::to_string(end) +
                            "] lie outside the data buffer (" +
                            std::to_string(dataSize) + " bytes)");
    size_t elemSize = dtypeSize(*dtype);
    if (numel > std::numeric_limits<uint64_t>::max() / elemSize)
      throw FormatError(
          path, field, "byte size of shape " + shapeText(shape) + " overflows");
    if (end - begin != numel * elemSize)
      throw FormatError(path, field,
                        "holds " + std::to_string(end - begin) +
                            " bytes, but shape " + shapeText(shape) + " of " +
                            dtypeName(*dtype) + " needs " +
                            std::to_string(numel * elemSize));

    SafetensorsTensor t;
    t.name = name;
    t.dtype = *dtype;
    t.shape = std::move(shape);
    t.data = dataStart + begin;
    t.byteSize = static_cast<size_t>(end - begin);
    ranges.push_back({begin, end, f.tensors_.size()});
    f.tensors_.push_back(std::move(t));
  }

  // Data-offset order is the header's order in every writer we know of
  // (the JSON object itself is unordered); it also makes overlaps adjacent.
  std::stable_sort(
      ranges.begin(), ranges.end(), [](const Range &a, const Range &b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
      });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Range &prev = ranges[i - 1];
    const Range &cur = ranges[i];
    // Empty tensors take no bytes and can't overlap anything.
    if (cur.begin < prev.end && cur.begin != cur.end)
      throw FormatError(path, "tensor " + f.tensors_[cur.index].name,
                        "data [" + std::to_string(cur.begin) + ", " +
                            std::to_string(cur.end) + ") overlaps tensor " +
                            f.tensors_[prev.index].name + " [" +
                            std::to_string(prev.begin) + ", " +
                            std::to_string(prev.end) + ")");
  }
  std::vector<SafetensorsTensor> sorted;
  sorted.reserve(ranges.size());
  for (const Range &r : ranges)
    sorted.push_back(std::move(f.tensors_[r.index]));
  f.tensors_ = std::move(sorted);
  for (size_t i = 0; i < f.tensors_.size(); ++i)
    f.byName_[f.tensors_[i].name] = i;
  return f;
}

const SafetensorsTensor *SafetensorsFile::find(const std::string &name) const {
  auto it = byName_.find(name);
  return it == byName_.end() ? nullptr : &tensors_[it->second];
}

void writeSafetensors(const std::string &path,
                      const std::vector<SafetensorsEntry> &tensors,
                      const std::map<std::string, std::string> &metadata) {
  // ordered_json keeps the reference writer's layout: __metadata__ first,
  // then the tensors in data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto &[k, v] : metadata)
      meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const SafetensorsEntry &t : tensors) {
    const std::string field = "tensor " + t.name;
    if (t.name.empty() || t.name == "__metadata__")
      throw FormatError(path, field, "is not a valid tensor name");
    if (!names.insert(t.name).second)
      throw FormatError(path, field, "name given twice");
    if (!isSafetensorsDType(t.dtype))
      throw FormatError(path, field,
                        std::string("dtype ") + dtypeName(t.dtype) +
                            " cannot be stored in safetensors");
    uint64_t numel = checkedNumel(path, field, t.shape);
    if (numel * dtypeSize(t.dtype) != t.byteSize)
      throw FormatError(path, field,
                        "has " + std::to_string(t.byteSize) +
                            " bytes, but shape " + shapeText(t.shape) + " of " +
                            dtypeName(t.dtype) + " needs " +
                            std::to_string(numel * dtypeSize(t.dtype)));
    if (t.byteSize > 0 && !t.data)
      throw FormatError(path, field, "has no data");
    nlohmann::ordered_json entry;
    entry["dtype"] = dtypeName(t.dtype);
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + t.byteSize};
    header[t.name] = entry;
    offset += t.byteSize;
  }
  std::string json = header.dump();
  // Pad with spaces so the data buffer starts 8-byte aligned, as the
  // reference writer does.
  json.append((8 - json.size() % 8) % 8, ' ');

  AtomicFileWriter out(path);
  uint8_t size[8];
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i)
    size[i] = uint8_t(n >> (8 * i));
  out.write(size, 8);
  out.write(json.data(), json.size());
  for (const SafetensorsEntry &t : tensors)
    out.write(t.data, t.byteSize);
  out.commit();
}

} // namespace bitloom

//===- ReferenceTest.cpp - Bit-exact checks against llama.cpp's gguf-py ---===//
//
// test/python/gguf_reference_fixture.py (run by ctest first) writes GGUF files
// with gguf-py's GGUFWriter and its numpy TQ1_0/TQ2_0/BF16 quantizers, a
// numpy-built safetensors file, conversion tables and a manifest. This test
// reads them with bitloom and compares bit for bit, then writes the same
// content with bitloom's writers (byte-identical files expected) for the
// script's `verify` step to read back with gguf-py.
//
//===----------------------------------------------------------------------===//
#include "formats/Gguf.h"
#include "formats/Safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

using namespace bitloom;
using Json = nlohmann::json;

namespace {
std::string fixtureDir() {
  if (const char *env = std::getenv("BITLOOM_REFERENCE_DIR"))
    return env;
  return BITLOOM_REFERENCE_DIR;
}

std::vector<uint8_t> readFile(const std::string &name) {
  std::ifstream in(fixtureDir() + "/" + name, std::ios::binary);
  if (!in)
    throw std::runtime_error("missing fixture " + fixtureDir() + "/" + name +
                             " (run the FormatsReference.generate test)");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

template <typename T> std::vector<T> readArray(const std::string &name) {
  std::vector<uint8_t> raw = readFile(name);
  std::vector<T> out(raw.size() / sizeof(T));
  if (!out.empty())
    std::memcpy(out.data(), raw.data(), out.size() * sizeof(T));
  return out;
}

const Json &manifest() {
  static const Json m = [] {
    std::vector<uint8_t> raw = readFile("manifest.json");
    return Json::parse(raw.begin(), raw.end());
  }();
  return m;
}

uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// Compares float arrays bit for bit, reporting the first few differences.
void expectSameBits(const std::vector<float> &got,
                    const std::vector<float> &want, const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < got.size() && reported < 5; ++i)
    if (bitsOf(got[i]) != bitsOf(want[i])) {
      ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " (0x" << std::hex
                    << bitsOf(got[i]) << ") vs gguf-py " << want[i] << " (0x"
                    << bitsOf(want[i]) << std::dec << ")";
      ++reported;
    }
}

GgufValue scalarFromJson(GgufValueType t, const Json &j) {
  GgufValue v;
  v.type = t;
  switch (t) {
  case GgufValueType::U8:
  case GgufValueType::U16:
  case GgufValueType::U32:
  case GgufValueType::U64:
    v.value = j.get<uint64_t>();
    break;
  case GgufValueType::I8:
  case GgufValueType::I16:
  case GgufValueType::I32:
  case GgufValueType::I64:
    v.value = j.get<int64_t>();
    break;
  case GgufValueType::F32:
    v.value = double(float(j.get<double>()));
    break;
  case GgufValueType::F64:
    v.value = j.get<double>();
    break;
  case GgufValueType::Bool:
    v.value = j.get<bool>();
    break;
  case GgufValueType::String:
    v.value = j.get<std::string>();
    break;
  case GgufValueType::Array:
    break;
  }
  return v;
}

GgufValue valueFromManifest(const Json &e) {
  GgufValueType t = GgufValueType(e["type"].get<uint32_t>());
  if (t != GgufValueType::Array)
    return scalarFromJson(t, e["value"]);
  GgufValueType sub = GgufValueType(e["sub_type"].get<uint32_t>());
  std::vector<GgufValue> elems;
  for (const Json &x : e["value"])
    elems.push_back(scalarFromJson(sub, x));
  return GgufValue::array(sub, std::move(elems));
}

/// bitloom's own bytes for a tensor, computed from the fixture's source
/// values (never copied from the reference file).
std::vector<uint8_t> ourTensorBytes(const Json &t) {
  std::vector<uint8_t> src = readFile(t["source"].get<std::string>());
  switch (GgmlType(t["ggml_type"].get<uint32_t>())) {
  case GgmlType::F16: {
    std::vector<float> x = readArray<float>(t["source"].get<std::string>());
    std::vector<uint8_t> out(x.size() * 2);
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t h = floatToHalf(x[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
    return out;
  }
  case GgmlType::BF16: {
    std::vector<float> x = readArray<float>(t["source"].get<std::string>());
    std::vector<uint8_t> out(x.size() * 2);
    for (size_t i = 0; i < x.size(); ++i) {
      uint16_t h = floatToBf16(x[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
    return out;
  }
  case GgmlType::TQ1_0:
  case GgmlType::TQ2_0: {
    DType dt = *ggmlTypeToDType(t["ggml_type"].get<uint32_t>());
    std::vector<float> x = readArray<float>(t["source"].get<std::string>());
    std::vector<uint8_t> out(dtypeStorageBytes(dt, x.size()));
    quantizeTernary(dt, x.data(), out.data(), x.size());
    return out;
  }
  default:
    return src; // F32, F64 and integers are stored as they are
  }
}
} // namespace

TEST(FormatsReference, GgufReaderMatchesGgufPy) {
  for (const Json &spec : manifest()["gguf"]) {
    std::string file = spec["file"].get<std::string>();
    SCOPED_TRACE(file);
    GgufFile f = GgufFile::open(fixtureDir() + "/" + file);
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.alignment(), spec["alignment"].get<uint32_t>());
    const auto &kv = spec["kv"];
    ASSERT_EQ(f.metadata().size(), kv.size());
    for (size_t i = 0; i < kv.size(); ++i) {
      const auto &[key, value] = f.metadata()[i];
      EXPECT_EQ(key, kv[i]["key"].get<std::string>());
      EXPECT_TRUE(value == valueFromManifest(kv[i])) << key;
    }
    EXPECT_EQ(f.getFloat("bitnet.rope.freq_base"), 500000.0);
    EXPECT_EQ(f.getStringArray("test.arr.str")[2], "\u00fcnicode");

    const auto &tensors = spec["tensors"];
    ASSERT_EQ(f.tensors().size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const GgufTensor &t = f.tensors()[i];
      const Json &ref = tensors[i];
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.name, ref["name"].get<std::string>());
      EXPECT_EQ(t.type, ref["ggml_type"].get<uint32_t>());
      EXPECT_EQ(t.dims, ref["dims"].get<std::vector<int64_t>>());
      // Values: our dequantize of gguf-py's bytes == gguf-py's dequantize.
      std::vector<float> got(t.numElements());
      dequantize(*ggmlTypeToDType(t.type), t.data, got.data(), got.size());
      expectSameBits(
          got, readArray<float>(ref["dequantized"].get<std::string>()), t.name);
      // Bytes: our conversion / quantizeTernary of the source == gguf-py's.
      std::vector<uint8_t> ours = ourTensorBytes(ref);
      ASSERT_EQ(ours.size(), t.byteSize);
      EXPECT_EQ(std::memcmp(ours.data(), t.data, t.byteSize), 0)
          << "bytes differ from gguf-py's";
    }
  }
}

TEST(FormatsReference, GgufWriterReproducesGgufPyByteForByte) {
  for (const Json &spec : manifest()["gguf"]) {
    std::string file = spec["file"].get<std::string>();
    SCOPED_TRACE(file);
    GgufWriter w;
    for (const Json &e : spec["kv"])
      w.set(e["key"].get<std::string>(), valueFromManifest(e));
    std::vector<std::vector<uint8_t>> data;
    data.reserve(spec["tensors"].size());
    for (const Json &t : spec["tensors"]) {
      data.push_back(ourTensorBytes(t));
      w.addTensor(t["name"].get<std::string>(), t["ggml_type"].get<uint32_t>(),
                  t["dims"].get<std::vector<int64_t>>(), data.back().data(),
                  data.back().size());
    }
    std::string ours = spec["ours"].get<std::string>();
    w.write(fixtureDir() + "/" + ours);
    std::vector<uint8_t> a = readFile(ours), b = readFile(file);
    ASSERT_EQ(a.size(), b.size());
    size_t first = 0;
    while (first < a.size() && a[first] == b[first])
      ++first;
    EXPECT_EQ(first, a.size()) << "first differing byte at offset " << first;
  }
}

TEST(FormatsReference, TernaryStressMatchesGgufPy) {
  const Json &s = manifest()["stress"];
  std::vector<float> src = readArray<float>(s["source"].get<std::string>());
  for (auto [dt, tag] :
       {std::pair{DType::TQ1_0, "tq1"}, std::pair{DType::TQ2_0, "tq2"}}) {
    SCOPED_TRACE(tag);
    std::vector<uint8_t> want = readFile(s[tag].get<std::string>());
    std::vector<uint8_t> got(dtypeStorageBytes(dt, src.size()));
    quantizeTernary(dt, src.data(), got.data(), src.size());
    ASSERT_EQ(got.size(), want.size());
    for (size_t b = 0; b < got.size() / dtypeBlockBytes(dt); ++b) {
      size_t bb = dtypeBlockBytes(dt);
      EXPECT_EQ(std::memcmp(&got[b * bb], &want[b * bb], bb), 0)
          << "quantized block " << b << " differs";
    }
    std::vector<float> deq(src.size());
    dequantize(dt, want.data(), deq.data(), deq.size());
    expectSameBits(
        deq, readArray<float>(s[std::string(tag) + "_deq"].get<std::string>()),
        std::string(tag) + " dequantized");
  }
}

TEST(FormatsReference, ConversionsMatchNumpyAndGgufPy) {
  const Json &c = manifest()["conversions"];
  std::vector<float> halves =
      readArray<float>(c["half_values"].get<std::string>());
  ASSERT_EQ(halves.size(), 65536u);
  std::vector<float> ours(65536);
  for (uint32_t h = 0; h < 65536; ++h)
    ours[h] = halfToFloat(uint16_t(h));
  expectSameBits(ours, halves, "halfToFloat");

  std::vector<float> in = readArray<float>(c["f16_inputs"].get<std::string>());
  std::vector<uint16_t> want =
      readArray<uint16_t>(c["f16_expected"].get<std::string>());
  ASSERT_EQ(in.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < in.size() && bad < 5; ++i)
    if (floatToHalf(in[i]) != want[i]) {
      ++bad;
      ADD_FAILURE() << "floatToHalf(" << in[i] << ") = " << floatToHalf(in[i])
                    << ", numpy " << want[i];
    }

  in = readArray<float>(c["bf16_inputs"].get<std::string>());
  want = readArray<uint16_t>(c["bf16_expected"].get<std::string>());
  ASSERT_EQ(in.size(), want.size());
  for (size_t i = 0; i < in.size() && bad < 10; ++i)
    if (floatToBf16(in[i]) != want[i]) {
      ++bad;
      ADD_FAILURE() << "floatToBf16(" << in[i] << ") = " << floatToBf16(in[i])
                    << ", gguf-py " << want[i];
    }
}

TEST(FormatsReference, SafetensorsMatchesNumpy) {
  const Json &spec = manifest()["safetensors"];
  SafetensorsFile f = SafetensorsFile::open(fixtureDir() + "/" +
                                            spec["file"].get<std::string>());
  EXPECT_EQ(f.metadata(),
            (spec["metadata"].get<std::map<std::string, std::string>>()));
  const auto &tensors = spec["tensors"];
  ASSERT_EQ(f.tensors().size(), tensors.size());
  std::vector<std::vector<uint8_t>> sources;
  std::vector<SafetensorsEntry> entries;
  sources.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsTensor &t = f.tensors()[i];
    const Json &ref = tensors[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, ref["name"].get<std::string>());
    EXPECT_STREQ(dtypeName(t.dtype), ref["dtype"].get<std::string>().c_str());
    EXPECT_EQ(t.shape, ref["shape"].get<std::vector<int64_t>>());
    sources.push_back(readFile(ref["source"].get<std::string>()));
    ASSERT_EQ(t.byteSize, sources.back().size());
    if (t.byteSize > 0)
      EXPECT_EQ(std::memcmp(t.data, sources.back().data(), t.byteSize), 0);
    std::vector<float> got(t.numElements());
    dequantize(t.dtype, t.data, got.data(), got.size());
    expectSameBits(got, readArray<float>(ref["dequantized"].get<std::string>()),
                   t.name);
    entries.push_back({t.name, t.dtype, t.shape, sources.back().data(),
                       sources.back().size()});
  }
  // Our writer, fed the same tensors, writes the same bytes.
  std::string ours = spec["ours"].get<std::string>();
  writeSafetensors(fixtureDir() + "/" + ours, entries,
                   spec["metadata"].get<std::map<std::string, std::string>>());
  EXPECT_EQ(readFile(ours), readFile(spec["file"].get<std::string>()));
}

//===- SafetensorsTest.cpp - safetensors reader and writer ----------------===//
#include "formats/Safetensors.h"
#include "FormatsTestUtil.h"

#include <gtest/gtest.h>

#include <random>

using namespace bitloom;
using namespace bitloom::test;

namespace {
/// A safetensors file from a raw header text and a data buffer.
std::vector<uint8_t> stFile(const std::string &header,
                            const std::vector<uint8_t> &data) {
  Bytes b;
  b.u64(header.size()).raw(header);
  b.b.insert(b.b.end(), data.begin(), data.end());
  return b.b;
}

std::string writeSt(const TempDir &dir, const std::string &header,
                    size_t dataBytes = 16) {
  std::string path = dir.file("t.safetensors");
  writeBytes(path, stFile(header, std::vector<uint8_t>(dataBytes, 0)));
  return path;
}
} // namespace

TEST(FormatsSafetensors, RoundTripsEveryDType) {
  TempDir dir;
  std::string path = dir.file("rt.safetensors");
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7bff};
  std::vector<uint16_t> bf16 = {0x3f80, 0xbf80};
  std::vector<double> f64 = {0.1, -1e300};
  std::vector<int64_t> i64 = {-(int64_t(1) << 40), 5};
  std::vector<int32_t> i32 = {-7, 7};
  std::vector<int16_t> i16 = {-32768, 32767};
  std::vector<int8_t> i8 = {-128, 127, 1};
  std::vector<uint8_t> u8 = {0, 255};
  std::vector<uint8_t> flags = {1, 0, 1};
  float scalar = 2.5f;
  std::vector<SafetensorsEntry> entries = {
      {"a.f32", DType::F32, {2, 3}, f32.data(), 24},
      {"a.f16", DType::F16, {3}, f16.data(), 6},
      {"a.bf16", DType::BF16, {1, 2}, bf16.data(), 4},
      {"a.f64", DType::F64, {2}, f64.data(), 16},
      {"a.i64", DType::I64, {2}, i64.data(), 16},
      {"a.i32", DType::I32, {2}, i32.data(), 8},
      {"a.i16", DType::I16, {2}, i16.data(), 4},
      {"a.i8", DType::I8, {3}, i8.data(), 3},
      {"a.u8", DType::U8, {2}, u8.data(), 2},
      {"a.bool", DType::Bool, {3}, flags.data(), 3},
      {"a.scalar", DType::F32, {}, &scalar, 4},
      {"a.empty", DType::F32, {0, 4}, nullptr, 0},
  };
  writeSafetensors(path, entries, {{"format", "pt"}, {"k", "v \u2713"}});

  // Header padded with spaces so the data starts 8-byte aligned.
  std::vector<uint8_t> raw = readBytes(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  std::string header(raw.begin() + 8, raw.begin() + 8 + n);
  EXPECT_EQ(header.find("\"__metadata__\""), 1u) << header;
  size_t end = header.find_last_not_of(' ');
  EXPECT_EQ(header[end], '}');

  SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const SafetensorsTensor &t = f.tensors()[i];
    EXPECT_EQ(t.name, entries[i].name); // data order is the given order
    EXPECT_EQ(t.dtype, entries[i].dtype);
    EXPECT_EQ(t.shape, entries[i].shape);
    ASSERT_EQ(t.byteSize, entries[i].byteSize);
    if (t.byteSize)
      EXPECT_EQ(std::memcmp(t.data, entries[i].data, t.byteSize), 0);
  }
  EXPECT_EQ(f.find("a.scalar")->numElements(), 1u);
  EXPECT_EQ(f.find("a.empty")->numElements(), 0u);
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_EQ(f.metadata().at("k"), "v \u2713");
  // Tensor data points into the mapping, right after the header.
  EXPECT_EQ(f.tensors()[0].data + 24, f.tensors()[1].data);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.tensors()[0].data) % 8, 0u);
  std::vector<float> back(6);
  dequantize(DType::F32, f.find("a.f32")->data, back.data(), 6);
  EXPECT_EQ(back, f32);
}

TEST(FormatsSafetensors, ReadsTensorsInDataOrder) {
  TempDir dir;
  std::string path =
      writeSt(dir,
              R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},)"
              R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
              8);
  SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "a");
  EXPECT_EQ(f.tensors()[1].name, "b");
  EXPECT_EQ(f.find("b")->data, f.tensors()[0].data + 4);
}

TEST(FormatsSafetensors, TruncatedFiles) {
  TempDir dir;
  std::string path = dir.file("short.safetensors");
  writeBytes(path, {1, 2, 3, 4, 5});
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(path), path, "header size",
                      "truncated");
  writeBytes(path, {});
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(path), path, "header size",
                      "truncated");
  Bytes b;
  b.u64(1000).raw("{}");
  writeBytes(path, b.b);
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(path), path, "header size",
                      "larger than the file");
  Bytes huge;
  huge.u64(~uint64_t(0)).raw("{}");
  writeBytes(path, huge.b);
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(path), path, "header size",
                      "larger than the file");
}

TEST(FormatsSafetensors, BadJson) {
  TempDir dir;
  std::string p = writeSt(dir, "{\"a\": ");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "header", "invalid JSON");
  p = writeSt(dir, "[1, 2]");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "header", "not an object");
  p = writeSt(dir, R"({"w": 5})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "not an object");
  p = writeSt(dir, R"({"__metadata__": {"k": 1}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "__metadata__.k", "strings");
  p = writeSt(dir, R"({"w": {"shape": [1], "data_offsets": [0, 4]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "dtype");
  p = writeSt(dir, R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "shape");
  p = writeSt(dir, R"({"w": {"dtype": "F32", "shape": [1]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "data_offsets");
  p = writeSt(
      dir, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "data_offsets");
}

TEST(FormatsSafetensors, UnknownDType) {
  TempDir dir;
  std::string p = writeSt(
      dir,
      R"({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w",
                      "unknown dtype \"F8_E4M3\"");
  // ggml block types are not safetensors dtypes.
  p = writeSt(
      dir,
      R"({"w": {"dtype": "TQ2_0", "shape": [256], "data_offsets": [0, 66]}})",
      66);
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w",
                      "unknown dtype \"TQ2_0\"");
}

TEST(FormatsSafetensors, BadShapes) {
  TempDir dir;
  std::string p = writeSt(
      dir,
      R"({"w": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "negative");
  p = writeSt(
      dir,
      R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "non-integer");
  p = writeSt(dir, R"({"w": {"dtype": "F32", "shape": [4611686018427387904, )"
                   R"(4611686018427387904], "data_offsets": [0, 4]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "overflows");
  p = writeSt(dir, R"({"w": {"dtype": "F64", "shape": [4611686018427387904], )"
                   R"("data_offsets": [0, 8]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "overflows");
}

TEST(FormatsSafetensors, OffsetsOutsideTheBuffer) {
  TempDir dir;
  std::string p = writeSt(
      dir,
      R"({"w": {"dtype": "U8", "shape": [100], "data_offsets": [0, 100]}})",
      16);
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w",
                      "outside the data buffer (16 bytes)");
  p = writeSt(
      dir, R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "outside");
  p = writeSt(
      dir, R"({"w": {"dtype": "U8", "shape": [1], )"
           R"("data_offsets": [18446744073709551615, 18446744073709551615]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "outside");
}

TEST(FormatsSafetensors, ByteSizeMustMatchTheShape) {
  TempDir dir;
  std::string p = writeSt(
      dir, R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "holds 8 bytes",
                      "needs 12");
}

TEST(FormatsSafetensors, OverlappingTensors) {
  TempDir dir;
  std::string p = writeSt(
      dir, R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},)"
           R"("b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor b", "overlaps",
                      "tensor a");
}

TEST(FormatsSafetensors, DuplicateNames) {
  TempDir dir;
  std::string p = writeSt(
      dir, R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
           R"("w": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})");
  EXPECT_FORMAT_ERROR(SafetensorsFile::open(p), p, "tensor w", "twice");
}

TEST(FormatsSafetensors, WriterRejectsBadEntries) {
  TempDir dir;
  std::string p = dir.file("bad.safetensors");
  std::vector<uint8_t> q(66);
  float x[4] = {};
  EXPECT_FORMAT_ERROR(
      writeSafetensors(p, {{"w", DType::TQ2_0, {256}, q.data(), 66}}), p,
      "tensor w", "cannot be stored");
  EXPECT_FORMAT_ERROR(writeSafetensors(p, {{"w", DType::F32, {3}, x, 16}}), p,
                      "tensor w", "needs 12");
  EXPECT_FORMAT_ERROR(writeSafetensors(p, {{"w", DType::F32, {-1}, x, 4}}), p,
                      "tensor w", "negative");
  EXPECT_FORMAT_ERROR(writeSafetensors(p, {{"w", DType::F32, {1}, x, 4},
                                           {"w", DType::F32, {1}, x, 4}}),
                      p, "tensor w", "twice");
  EXPECT_FORMAT_ERROR(
      writeSafetensors(p, {{"__metadata__", DType::F32, {1}, x, 4}}), p,
      "not a valid tensor name");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(FormatsSafetensors, CorruptFilesNeverCrash) {
  // Every truncation and many random byte flips of a valid file must either
  // load or throw FormatError.
  TempDir dir;
  std::string good = dir.file("good.safetensors");
  std::vector<float> a(6, 1.0f);
  std::vector<uint16_t> b(4, 0x3c00);
  writeSafetensors(good,
                   {{"a", DType::F32, {2, 3}, a.data(), 24},
                    {"b", DType::F16, {4}, b.data(), 8}},
                   {{"m", "v"}});
  std::vector<uint8_t> bytes = readBytes(good);
  std::string p = dir.file("bad.safetensors");
  for (size_t n = 0; n < bytes.size(); ++n) {
    writeBytes(p, std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
    try {
      SafetensorsFile::open(p);
    } catch (const FormatError &) {
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 500; ++i) {
    std::vector<uint8_t> c = bytes;
    for (int k = 0; k < 3; ++k)
      c[rng() % c.size()] = uint8_t(rng());
    writeBytes(p, c);
    try {
      SafetensorsFile f = SafetensorsFile::open(p);
      // Touch every byte a tensor claims (caught by ASan if out of bounds).
      unsigned sum = 0;
      for (const auto &t : f.tensors())
        for (size_t k = 0; k < t.byteSize; ++k)
          sum += t.data[k];
      (void)sum;
    } catch (const FormatError &) {
    }
  }
}

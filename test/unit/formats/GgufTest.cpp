//===- GgufTest.cpp - GGUF reader and writer ------------------------------===//
#include "formats/Gguf.h"
#include "FormatsTestUtil.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace bitloom;
using namespace bitloom::test;

namespace {
constexpr uint32_t kU32 = 4, kI32 = 5, kStr = 8, kArr = 9;

/// "GGUF", version, tensor count, metadata count.
Bytes header(uint64_t nTensors, uint64_t nKv, uint32_t version = 3) {
  Bytes b;
  b.raw("GGUF").u32(version).u64(nTensors).u64(nKv);
  return b;
}

/// A tensor info record.
void tensorInfo(Bytes &b, const std::string &name,
                const std::vector<int64_t> &dims, uint32_t type,
                uint64_t offset) {
  b.str(name).u32(uint32_t(dims.size()));
  for (int64_t d : dims)
    b.i64(d);
  b.u32(type).u64(offset);
}

std::string save(const TempDir &dir, const Bytes &b,
                 const std::string &name = "t.gguf") {
  writeBytes(dir.file(name), b.b);
  return dir.file(name);
}

/// One F32 tensor "w" of 4 floats, valid.
Bytes oneTensorFile(uint32_t type = 0, std::vector<int64_t> dims = {4},
                    uint64_t offset = 0, size_t dataBytes = 16) {
  Bytes b = header(1, 0);
  tensorInfo(b, "w", dims, type, offset);
  b.padTo(32).zeros(dataBytes);
  return b;
}
} // namespace

TEST(FormatsGguf, RoundTripsAllValueAndTensorTypes) {
  TempDir dir;
  std::string path = dir.file("rt.gguf");
  std::vector<float> f32(2 * 3);
  for (size_t i = 0; i < f32.size(); ++i)
    f32[i] = float(i) - 2.5f;
  std::vector<uint16_t> f16 = {0x3c00, 0xc000};
  std::vector<uint16_t> bf16 = {0x3f80, 0x4000, 0xbf80};
  std::vector<float> src(512);
  for (size_t i = 0; i < src.size(); ++i)
    src[i] = float(int(i % 3) - 1) * 0.5f;
  std::vector<uint8_t> tq1(dtypeStorageBytes(DType::TQ1_0, 512));
  std::vector<uint8_t> tq2(dtypeStorageBytes(DType::TQ2_0, 512));
  quantizeTernary(DType::TQ1_0, src.data(), tq1.data(), 512);
  quantizeTernary(DType::TQ2_0, src.data(), tq2.data(), 512);
  std::vector<int8_t> i8 = {-1, 2, 3};
  std::vector<int64_t> i64 = {-5};
  std::vector<double> f64 = {0.1, 0.2};

  GgufWriter w;
  w.set("general.architecture", GgufValue::string("bitnet"));
  w.set("k.u8", GgufValue::u8(200));
  w.set("k.i8", GgufValue::i8(-100));
  w.set("k.u16", GgufValue::u16(60000));
  w.set("k.i16", GgufValue::i16(-30000));
  w.set("k.u32", GgufValue::u32(4000000000u));
  w.set("k.i32", GgufValue::i32(-2000000000));
  w.set("k.f32", GgufValue::f32(0.1f));
  w.set("k.bool", GgufValue::boolean(true));
  w.set("k.str", GgufValue::string("h\u00e9llo"));
  w.set("k.u64", GgufValue::u64(~uint64_t(0)));
  w.set("k.i64", GgufValue::i64(INT64_MIN));
  w.set("k.f64", GgufValue::f64(1.0 / 3.0));
  w.set("k.strs", GgufValue::stringArray({"a", "", "c"}));
  w.set("k.f32s", GgufValue::f32Array({1.5f, -2.0f}));
  w.set("k.i32s", GgufValue::i32Array({-1, 0, 7}));
  w.set("k.u64s", GgufValue::array(GgufValueType::U64,
                                   {GgufValue::u64(1), GgufValue::u64(2)}));
  w.set("k.empty", GgufValue::array(GgufValueType::U8, {}));
  w.set("k.u32", GgufValue::u32(7)); // replaces in place
  w.addTensor("t.f32", uint32_t(GgmlType::F32), {3, 2}, f32.data(), 24);
  w.addTensor("t.f16", uint32_t(GgmlType::F16), {2}, f16.data(), 4);
  w.addTensor("t.bf16", uint32_t(GgmlType::BF16), {3}, bf16.data(), 6);
  w.addTensor("t.tq1", uint32_t(GgmlType::TQ1_0), {256, 2}, tq1.data(),
              tq1.size());
  w.addTensor("t.tq2", uint32_t(GgmlType::TQ2_0), {512}, tq2.data(),
              tq2.size());
  w.addTensor("t.i8", uint32_t(GgmlType::I8), {3}, i8.data(), 3);
  w.addTensor("t.i64", uint32_t(GgmlType::I64), {1}, i64.data(), 8);
  w.addTensor("t.f64", uint32_t(GgmlType::F64), {2}, f64.data(), 16);
  w.addTensor("t.empty", uint32_t(GgmlType::F32), {0, 3}, nullptr, 0);
  w.write(path);

  GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.dataOffset() % 32, 0u);
  ASSERT_EQ(f.metadata().size(), 18u);
  EXPECT_EQ(f.metadata()[0].first, "general.architecture");
  EXPECT_EQ(f.metadata()[5].first, "k.u32"); // kept its place
  EXPECT_EQ(f.getString("general.architecture"), "bitnet");
  EXPECT_EQ(f.getUInt("k.u8"), 200u);
  EXPECT_EQ(std::get<int64_t>(f.find("k.i8")->value), -100);
  EXPECT_EQ(f.find("k.i8")->type, GgufValueType::I8);
  EXPECT_EQ(f.getUInt("k.u16"), 60000u);
  EXPECT_EQ(std::get<int64_t>(f.find("k.i16")->value), -30000);
  EXPECT_EQ(f.getUInt("k.u32"), 7u);
  EXPECT_EQ(f.find("k.u32")->type, GgufValueType::U32);
  EXPECT_EQ(std::get<int64_t>(f.find("k.i32")->value), -2000000000);
  EXPECT_EQ(f.getFloat("k.f32"), double(0.1f));
  EXPECT_EQ(std::get<bool>(f.find("k.bool")->value), true);
  EXPECT_EQ(f.getString("k.str"), "h\u00e9llo");
  EXPECT_EQ(f.getUInt("k.u64"), ~uint64_t(0));
  EXPECT_EQ(std::get<int64_t>(f.find("k.i64")->value), INT64_MIN);
  EXPECT_EQ(f.getFloat("k.f64"), 1.0 / 3.0);
  EXPECT_EQ(f.getStringArray("k.strs"),
            (std::vector<std::string>{"a", "", "c"}));
  EXPECT_EQ(f.getFloatArray("k.f32s"), (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(f.getIntArray("k.i32s"), (std::vector<int64_t>{-1, 0, 7}));
  EXPECT_EQ(f.getIntArray("k.u64s"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(f.find("k.u64s")->elementType, GgufValueType::U64);
  EXPECT_TRUE(f.getIntArray("k.empty").empty());
  EXPECT_TRUE(f.find("k.u8")->isInteger());
  EXPECT_TRUE(f.find("k.f64")->isFloat());

  ASSERT_EQ(f.tensors().size(), 9u);
  const GgufTensor *t = f.findTensor("t.f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dims, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(t->numElements(), 6u);
  EXPECT_EQ(std::memcmp(t->data, f32.data(), 24), 0);
  // Offsets are consecutive and padded, as gguf.cpp requires.
  uint64_t expected = 0;
  for (const GgufTensor &g : f.tensors()) {
    EXPECT_EQ(g.offset, expected) << g.name;
    expected += (g.byteSize + 31) / 32 * 32;
  }
  const GgufTensor *q = f.findTensor("t.tq1");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, uint32_t(GgmlType::TQ1_0));
  EXPECT_EQ(q->byteSize, tq1.size());
  std::vector<float> back(512);
  dequantize(DType::TQ1_0, q->data, back.data(), 512);
  EXPECT_EQ(back, src);
  dequantize(DType::TQ2_0, f.findTensor("t.tq2")->data, back.data(), 512);
  EXPECT_EQ(back, src);
  EXPECT_EQ(f.findTensor("t.empty")->byteSize, 0u);
  EXPECT_EQ(f.findTensor("missing"), nullptr);
}

TEST(FormatsGguf, CustomAlignment) {
  TempDir dir;
  std::string path = dir.file("a64.gguf");
  std::vector<uint8_t> a(10, 1), b(20, 2);
  GgufWriter w;
  w.set("general.alignment", GgufValue::u32(64));
  w.addTensor("a", uint32_t(GgmlType::I8), {10}, a.data(), 10);
  w.addTensor("b", uint32_t(GgmlType::I8), {20}, b.data(), 20);
  w.write(path);
  GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.dataOffset() % 64, 0u);
  EXPECT_EQ(f.findTensor("b")->offset, 64u);
  EXPECT_EQ(f.findTensor("b")->data[19], 2);
  EXPECT_EQ(readBytes(path).size(), f.dataOffset() + 128);
}

TEST(FormatsGguf, TypedGettersReportTheKey) {
  TempDir dir;
  std::string path = dir.file("g.gguf");
  GgufWriter w;
  w.set("s", GgufValue::string("x"));
  w.set("neg", GgufValue::i32(-3));
  w.set("f", GgufValue::f32(2.5f));
  w.set("n", GgufValue::u32(4));
  w.set("strs", GgufValue::stringArray({"a"}));
  w.set("big",
        GgufValue::array(GgufValueType::U64, {GgufValue::u64(~uint64_t(0))}));
  w.write(path);
  GgufFile f = GgufFile::open(path);
  EXPECT_FORMAT_ERROR(f.getString("missing"), path, "missing", "missing");
  EXPECT_EQ(f.getOptionalString("missing"), std::nullopt);
  EXPECT_EQ(f.getOptionalUInt("missing"), std::nullopt);
  EXPECT_EQ(f.getOptionalFloat("missing"), std::nullopt);
  EXPECT_FORMAT_ERROR(f.getString("n"), path, "n: ", "expected a string",
                      "found u32");
  EXPECT_FORMAT_ERROR(f.getUInt("neg"), path, "neg", "negative value -3");
  EXPECT_FORMAT_ERROR(f.getUInt("f"), path, "f: ", "found f32");
  EXPECT_FORMAT_ERROR(f.getFloat("s"), path, "s: ", "found str");
  EXPECT_EQ(f.getFloat("n"), 4.0);
  EXPECT_EQ(f.getOptionalUInt("n"), 4u);
  EXPECT_FORMAT_ERROR(f.getStringArray("s"), path, "s: ", "array of str");
  EXPECT_FORMAT_ERROR(f.getIntArray("strs"), path, "strs",
                      "found array of str");
  EXPECT_FORMAT_ERROR(f.getFloatArray("strs"), path, "strs", "array of str");
  EXPECT_FORMAT_ERROR(f.getIntArray("big"), path, "big", "int64");
  EXPECT_FORMAT_ERROR(f.getStringArray("missing"), path, "missing");
}

TEST(FormatsGguf, TruncatedAndBadHeaders) {
  TempDir dir;
  Bytes empty;
  std::string p = save(dir, empty);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "magic", "truncated");
  Bytes magic;
  magic.raw("GGUX").u32(3).u64(0).u64(0);
  p = save(dir, magic);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "magic", "bad magic \"GGUX\"");
  Bytes shortHeader;
  shortHeader.raw("GGUF").u32(3);
  p = save(dir, shortHeader);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor count", "truncated");
  p = save(dir, header(0, 0, 1));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "version",
                      "unsupported GGUF version 1");
  p = save(dir, header(0, 0, 4));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "version",
                      "unsupported GGUF version 4");
  p = save(dir, header(0, 0, 0x03000000));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "version", "big-endian");
  // Version 2 has the same layout and is accepted.
  p = save(dir, header(0, 0, 2));
  EXPECT_EQ(GgufFile::open(p).version(), 2u);
}

TEST(FormatsGguf, LyingCountsAndLengths) {
  TempDir dir;
  std::string p = save(dir, header(0, uint64_t(1) << 60));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "metadata count", "can't fit");
  p = save(dir, header(~uint64_t(0), 0));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor count", "can't fit");

  Bytes key = header(0, 1);
  key.u64(uint64_t(1) << 63).raw("abcdefghijklmnop");
  p = save(dir, key);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "metadata entry 0",
                      "key length 9223372036854775808 exceeds");

  Bytes str = header(0, 1);
  str.str("tokenizer.chat_template").u32(kStr).u64(1000).raw("short");
  p = save(dir, str);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tokenizer.chat_template",
                      "string length 1000 exceeds");

  Bytes arr = header(0, 1);
  arr.str("tokenizer.ggml.token_type")
      .u32(kArr)
      .u32(kI32)
      .u64(uint64_t(1) << 62);
  arr.zeros(64);
  p = save(dir, arr);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tokenizer.ggml.token_type",
                      "array length 4611686018427387904 exceeds");

  Bytes strs = header(0, 1);
  strs.str("tokenizer.ggml.tokens").u32(kArr).u32(kStr).u64(100);
  strs.str("a").str("b");
  p = save(dir, strs);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tokenizer.ggml.tokens",
                      "array length 100 exceeds");

  // A string array whose count fits but whose strings lie.
  Bytes strs2 = header(0, 1);
  strs2.str("toks").u32(kArr).u32(kStr).u64(2).str("a").u64(1 << 30);
  strs2.zeros(8);
  p = save(dir, strs2);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "toks", "string length");

  Bytes name = header(1, 0);
  name.u64(uint64_t(1) << 40).zeros(32);
  p = save(dir, name);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor 0", "name length");
}

TEST(FormatsGguf, BadMetadata) {
  TempDir dir;
  Bytes unknown = header(0, 1);
  unknown.str("k").u32(13).u32(0);
  std::string p = save(dir, unknown);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p,
                      "k: ", "unknown metadata value type 13");

  Bytes elem = header(0, 1);
  elem.str("k").u32(kArr).u32(77).u64(0);
  p = save(dir, elem);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "k: ", "unknown array element");

  Bytes nested = header(0, 1);
  nested.str("k").u32(kArr).u32(kArr).u64(1).u32(kU32).u64(0);
  p = save(dir, nested);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "k: ", "arrays of arrays");

  Bytes dup = header(0, 2);
  dup.str("k").u32(kU32).u32(1).str("k").u32(kU32).u32(2);
  p = save(dir, dup);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "k: ", "appears twice");

  Bytes emptyKey = header(0, 1);
  emptyKey.str("").u32(kU32).u32(1);
  p = save(dir, emptyKey);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "metadata entry 0", "empty key");

  Bytes truncatedValue = header(0, 1);
  truncatedValue.str("k").u32(kU32).u8(1);
  p = save(dir, truncatedValue);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "k: ", "truncated");

  Bytes alignType = header(0, 1);
  alignType.str("general.alignment").u32(kI32).u32(64);
  p = save(dir, alignType);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "general.alignment",
                      "must be a u32, found i32");

  for (uint32_t bad : {0u, 48u}) {
    Bytes align = header(0, 1);
    align.str("general.alignment").u32(kU32).u32(bad);
    p = save(dir, align);
    EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "general.alignment",
                        "not a power of two");
  }
}

TEST(FormatsGguf, UnsupportedTensorTypes) {
  TempDir dir;
  Bytes q4k = header(1, 0);
  tensorInfo(q4k, "blk.0.attn_q.weight", {256, 2}, 12, 0);
  q4k.padTo(32).zeros(288);
  std::string p = save(dir, q4k);
  EXPECT_FORMAT_ERROR(GgufFile::open(p),
                      p + ": tensor blk.0.attn_q.weight: unsupported ggml "
                          "type Q4_K");
  p = save(dir, oneTensorFile(99));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w", "unknown ggml type 99");
}

TEST(FormatsGguf, BadTensorShapes) {
  TempDir dir;
  std::string p = save(dir, oneTensorFile(0, {1, 1, 1, 1, 4}));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w", "5 dimensions");
  p = save(dir, oneTensorFile(0, {4, -1}));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w",
                      "dimension 1 is negative");
  p = save(dir, oneTensorFile(0, {int64_t(1) << 40, int64_t(1) << 40}));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w", "overflows");
  p = save(dir, oneTensorFile(uint32_t(GgmlType::TQ2_0), {100, 2}));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w",
                      "row size 100 is not a multiple of TQ2_0's block size "
                      "256");
  p = save(dir, oneTensorFile(uint32_t(GgmlType::TQ1_0), {}));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w", "row size 1");
}

TEST(FormatsGguf, TruncatedTensorInfo) {
  TempDir dir;
  Bytes b = header(1, 0);
  b.str("blk.0.attn_q.weight").u32(2).i64(2560);
  std::string p = save(dir, b);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor blk.0.attn_q.weight",
                      "truncated", "a dimension needs 8 bytes");
  b.i64(2560).u32(0);
  p = save(dir, b);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor blk.0.attn_q.weight",
                      "truncated", "the data offset");
}

TEST(FormatsGguf, TensorDataPlacement) {
  TempDir dir;
  std::string p = save(dir, oneTensorFile(0, {4}, 4));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w",
                      "offset 4 is not a multiple of the alignment 32");
  p = save(dir, oneTensorFile(0, {4}, 0, 8)); // 16 bytes needed, 8 present
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w",
                      "lies outside the file's data section (8 bytes)");
  p = save(dir, oneTensorFile(0, {4}, uint64_t(1) << 63));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w", "outside");
  p = save(dir, oneTensorFile(0, {4}, ~uint64_t(31)));
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor w", "outside");

  Bytes overlap = header(2, 0);
  tensorInfo(overlap, "a", {8}, 0, 0);
  tensorInfo(overlap, "b", {8}, 0, 0);
  overlap.padTo(32).zeros(64);
  p = save(dir, overlap);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "overlaps");

  Bytes dup = header(2, 0);
  tensorInfo(dup, "a", {4}, 0, 0);
  tensorInfo(dup, "a", {4}, 0, 32);
  dup.padTo(32).zeros(64);
  p = save(dir, dup);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "tensor a", "appears twice");

  // The tensor infos end right at EOF: the aligned data section would start
  // past the end of the file.
  Bytes noData = header(1, 0);
  tensorInfo(noData, "e", {0}, 0, 0);
  p = save(dir, noData);
  EXPECT_FORMAT_ERROR(GgufFile::open(p), p, "data section", "past the end");
}

TEST(FormatsGguf, WriterRejectsWhatLlamaCppWould) {
  TempDir dir;
  std::string p = dir.file("w.gguf");
  float x[4] = {};
  auto writeOne = [&](const std::string &name, uint32_t type,
                      std::vector<int64_t> dims, size_t bytes) {
    GgufWriter w;
    w.addTensor(name, type, std::move(dims), x, bytes);
    w.write(p);
  };
  EXPECT_FORMAT_ERROR(writeOne("q", uint32_t(GgmlType::Q4_K), {256}, 144), p,
                      "tensor q", "unsupported ggml type Q4_K");
  EXPECT_FORMAT_ERROR(writeOne("w", 0, {4}, 12), p, "tensor w", "12 bytes",
                      "need 16");
  EXPECT_FORMAT_ERROR(writeOne(std::string(64, 'n'), 0, {4}, 16), p,
                      "at most 63");
  EXPECT_FORMAT_ERROR(writeOne("", 0, {4}, 16), p, "empty tensor name");
  EXPECT_FORMAT_ERROR(writeOne("w", 0, {1, 1, 1, 1, 4}, 16), p, "tensor w",
                      "at most 4");
  EXPECT_FORMAT_ERROR(writeOne("w", 0, {-4}, 16), p, "tensor w", "negative");
  EXPECT_FORMAT_ERROR(writeOne("w", uint32_t(GgmlType::TQ2_0), {128}, 33), p,
                      "tensor w", "row size 128");
  {
    GgufWriter w;
    w.addTensor("w", 0, {4}, x, 16);
    w.addTensor("w", 0, {4}, x, 16);
    EXPECT_FORMAT_ERROR(w.write(p), p, "tensor w", "twice");
  }
  auto writeKv = [&](const std::string &key, GgufValue v) {
    GgufWriter w;
    w.set(key, std::move(v));
    w.write(p);
  };
  EXPECT_FORMAT_ERROR(writeKv("general.alignment", GgufValue::u64(64)), p,
                      "general.alignment", "must be a u32");
  EXPECT_FORMAT_ERROR(writeKv("general.alignment", GgufValue::u32(24)), p,
                      "general.alignment", "power of two");
  EXPECT_FORMAT_ERROR(writeKv("", GgufValue::u32(1)), p, "empty key");
  EXPECT_FORMAT_ERROR(writeKv("mixed", GgufValue::array(GgufValueType::U32,
                                                        {GgufValue::u32(1),
                                                         GgufValue::i32(2)})),
                      p, "mixed", "element of type i32 in an array of u32");
  EXPECT_FORMAT_ERROR(
      writeKv("nested", GgufValue::array(GgufValueType::Array, {})), p,
      "nested", "arrays must hold scalars");
  GgufValue big = GgufValue::u8(0);
  big.value = uint64_t(300);
  EXPECT_FORMAT_ERROR(writeKv("big", big), p, "big", "does not fit in u8");
  GgufValue low = GgufValue::i8(0);
  low.value = int64_t(-129);
  EXPECT_FORMAT_ERROR(writeKv("low", low), p, "low", "does not fit in i8");
  GgufValue lying = GgufValue::string("x");
  lying.type = GgufValueType::F32;
  EXPECT_FORMAT_ERROR(writeKv("lying", lying), p, "lying", "holds no number");
  EXPECT_TRUE(dir.entries().empty()); // nothing half-written was left
}

TEST(FormatsGguf, WriterRangeEdges) {
  TempDir dir;
  std::string p = dir.file("edges.gguf");
  GgufWriter w;
  GgufValue i8min = GgufValue::i8(0);
  i8min.value = int64_t(-128);
  GgufValue i64min = GgufValue::i64(INT64_MIN);
  GgufValue u16 = GgufValue::u16(0);
  u16.value = int64_t(65535); // a signed alternative that fits is accepted
  w.set("a", i8min);
  w.set("b", i64min);
  w.set("c", u16);
  w.write(p);
  GgufFile f = GgufFile::open(p);
  EXPECT_EQ(std::get<int64_t>(f.find("a")->value), -128);
  EXPECT_EQ(std::get<int64_t>(f.find("b")->value), INT64_MIN);
  EXPECT_EQ(f.getUInt("c"), 65535u);
}

TEST(FormatsGguf, CorruptFilesNeverCrash) {
  // Every truncation and many random corruptions of a valid file either load
  // or throw FormatError: no crash, no hang, no giant allocation.
  TempDir dir;
  std::string good = dir.file("good.gguf");
  std::vector<float> src(256);
  for (size_t i = 0; i < src.size(); ++i)
    src[i] = float(int(i % 3) - 1);
  std::vector<uint8_t> tq2(66);
  quantizeTernary(DType::TQ2_0, src.data(), tq2.data(), 256);
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("bitnet"));
  w.set("tokenizer.ggml.tokens", GgufValue::stringArray({"a", "bc", "def"}));
  w.set("scores", GgufValue::f32Array({0.5f, 1.5f}));
  w.set("n", GgufValue::u32(3));
  w.addTensor("tq", uint32_t(GgmlType::TQ2_0), {256}, tq2.data(), 66);
  w.addTensor("f", uint32_t(GgmlType::F32), {4}, src.data(), 16);
  w.write(good);
  std::vector<uint8_t> bytes = readBytes(good);
  std::string p = dir.file("bad.gguf");
  int loaded = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    writeBytes(p, std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
    try {
      GgufFile::open(p);
      ++loaded;
    } catch (const FormatError &) {
    }
  }
  // Only cuts inside the last tensor's trailing padding can still load.
  EXPECT_LE(loaded, 31);
  std::mt19937 rng(11);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> c = bytes;
    int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t at = rng() % c.size();
      // Bias towards big values in length fields.
      c[at] = (rng() % 2) ? uint8_t(rng()) : uint8_t(0xff);
    }
    writeBytes(p, c);
    try {
      GgufFile f = GgufFile::open(p);
      unsigned sum = 0;
      for (const GgufTensor &t : f.tensors())
        for (size_t k = 0; k < t.byteSize; ++k)
          sum += t.data[k];
      (void)sum;
    } catch (const FormatError &) {
    }
  }
}

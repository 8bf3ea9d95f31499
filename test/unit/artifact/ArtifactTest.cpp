//===- ArtifactTest.cpp - Writing and reading .blm artifacts --------------===//
#include "ArtifactTestUtil.h"
#include "artifact/Describe.h"
#include "formats/MappedFile.h"

#include <gtest/gtest.h>

#include <sstream>

using namespace bitloom;
using namespace bitloom::blm;
using namespace bitloom::test;

namespace {
std::vector<uint8_t> toVector(ByteSpan s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}
std::vector<int64_t> toVector(const flatbuffers::Vector<int64_t> *v) {
  return v ? std::vector<int64_t>(v->begin(), v->end())
           : std::vector<int64_t>();
}
} // namespace

// Reference values from libxxhash 0.8.1's XXH64().
TEST(ArtifactChecksum, MatchesXxh64ReferenceValues) {
  EXPECT_EQ(xxhash64("", 0), 0xef46db3751d8e999ULL);
  EXPECT_EQ(xxhash64("a", 1), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(xxhash64("abc", 3), 0x44bc2cf5ad770999ULL);
  EXPECT_EQ(xxhash64("Nobody inspects the spammish repetition", 39),
            0xfbcea83c8a378bf1ULL);
  std::vector<uint8_t> buf(1000);
  for (size_t i = 0; i < buf.size(); ++i)
    buf[i] = uint8_t((i * 31 + 7) % 256);
  struct Case {
    size_t n;
    uint64_t seed, expected;
  };
  for (Case c :
       {Case{31, 0, 0x4a74f3a1a39ad4a1ULL}, Case{31, 42, 0xbb093c6946ef4856ULL},
        Case{32, 0, 0x8d57d6a4671cc43dULL}, Case{32, 42, 0x790fdb026db40f9bULL},
        Case{33, 0, 0x62c9fd21ed857664ULL}, Case{33, 42, 0xc03305a3e364a332ULL},
        Case{100, 0, 0xefa0ad2d3e70c151ULL},
        Case{100, 42, 0x90c54d51a572aa5bULL},
        Case{1000, 0, 0x99594f4828043d35ULL},
        Case{1000, 42, 0xebbb006470311ebcULL}}) {
    EXPECT_EQ(xxhash64(buf.data(), c.n, c.seed), c.expected) << c.n;
    // Streaming in uneven pieces gives the same digest.
    Xxh64 h(c.seed);
    size_t at = 0, step = 1;
    while (at < c.n) {
      size_t k = std::min(step, c.n - at);
      h.update(buf.data() + at, k);
      at += k;
      step = step * 3 % 41 + 1;
    }
    EXPECT_EQ(h.digest(), c.expected) << c.n;
  }
}

TEST(ArtifactHeader, EncodesLittleEndianAtFixedOffsets) {
  FileHeader h;
  h.versionMinor = 3;
  h.fileSize = 0x1122334455667788ULL;
  h.flatbufferOffset = 128;
  h.dataOffset = 0x100000000ULL;
  uint8_t bytes[kHeaderSize];
  encodeHeader(h, bytes);
  EXPECT_EQ(std::memcmp(bytes, "BLM1", 4), 0);
  EXPECT_EQ(bytes[4], 1);
  EXPECT_EQ(bytes[6], 3);
  EXPECT_EQ(bytes[8], 128);
  EXPECT_EQ(bytes[16], 0x88);
  EXPECT_EQ(bytes[23], 0x11);
  EXPECT_EQ(bytes[48 + 4], 1); // 2^32
  FileHeader back = decodeHeader(bytes);
  EXPECT_EQ(back.fileSize, h.fileSize);
  EXPECT_EQ(back.dataOffset, h.dataOffset);
  EXPECT_EQ(back.versionMinor, 3);
  EXPECT_EQ(back.headerChecksum, computeHeaderChecksum(bytes));
  for (size_t i = 92; i < kHeaderChecksumOffset; ++i)
    EXPECT_EQ(bytes[i], 0) << i;
}

TEST(Artifact, RoundTripsACompleteArtifact) {
  TempDir dir;
  std::string path = dir.file("model.blm");
  SyntheticArtifact s;
  s.write(path);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.blm"});

  auto a = Artifact::open(path);
  EXPECT_EQ(a->path(), path);
  EXPECT_EQ(a->version(), (Version{kFormatMajor, kFormatMinor}));
  EXPECT_EQ(a->fileSize(), readBytes(path).size());
  EXPECT_EQ(a->producer(), "bitloom-test 0.1");
  EXPECT_EQ(a->target(), s.target);
  EXPECT_EQ(a->modelConfig(), s.model);
  EXPECT_EQ(a->loraConfig(), s.lora);
  EXPECT_EQ(a->compileOptions(), s.options);
  std::vector<std::pair<std::string, std::string>> meta = {
      {"source", "synthetic"}, {"seed", "42"}};
  EXPECT_EQ(a->metadata(), meta);

  // Executables: bytes in place, 64-aligned, kernels as given.
  ASSERT_EQ(a->numExecutables(), 2u);
  EXPECT_EQ(toVector(a->executableData(0)), s.kernelsElf);
  EXPECT_EQ(toVector(a->executableData(1)), s.kernelsSpirv);
  const fb::Executable &e0 = a->executable(0);
  EXPECT_EQ(e0.name()->str(), "train_kernels");
  EXPECT_EQ(e0.format()->str(), "elf-relocatable");
  EXPECT_EQ(e0.target()->str(), "");
  EXPECT_EQ(a->executable(1).target()->str(), "vulkan-generic");
  ASSERT_EQ(e0.kernels()->size(), 3u);
  const fb::Kernel *k1 = e0.kernels()->Get(1);
  EXPECT_EQ(k1->name()->str(), "bitlinear_lora_fwd");
  EXPECT_EQ(k1->workgroup_count()->x(), 8u);
  EXPECT_EQ(k1->workgroup_count()->y(), 4u);
  EXPECT_EQ(k1->workgroup_size()->y(), 8u);
  EXPECT_EQ(k1->source_location()->str(), "model.mlir:22:7");
  for (size_t i = 0; i < 2; ++i)
    EXPECT_EQ(uintptr_t(a->executableData(i).data()) % 64, 0u);

  // Parameters: in place in the mapping (never copied), page-aligned.
  ASSERT_EQ(a->numParameters(), 6u);
  const uint8_t *mapBegin = a->mapping()->data();
  const uint8_t *mapEnd = mapBegin + a->mapping()->size();
  std::vector<std::vector<uint8_t>> expected = {s.embed, s.upProj, s.norm,
                                                s.loraA, s.loraB,  s.packed};
  for (size_t i = 0; i < 6; ++i) {
    ByteSpan d = a->parameterData(i);
    EXPECT_EQ(toVector(d), expected[i]) << i;
    EXPECT_GE(d.data(), mapBegin);
    EXPECT_LE(d.data() + d.size(), mapEnd);
    EXPECT_EQ(uintptr_t(d.data()) % 4096, 0u) << i;
    EXPECT_EQ(a->blob(a->parameter(i).blob()).alignment(), 4096u);
  }
  const fb::Parameter &up = a->parameter(1);
  EXPECT_EQ(up.name()->str(), SyntheticArtifact::kUpProj);
  EXPECT_EQ(up.dtype()->str(), "tq2_0");
  EXPECT_EQ(toVector(up.shape()), (std::vector<int64_t>{256, 16}));
  Span<int64_t> shape = a->parameterShape(1);
  ASSERT_EQ(shape.size(), 2u);
  EXPECT_EQ(shape[0], 256);
  EXPECT_FALSE(up.trainable());
  EXPECT_TRUE(a->parameter(3).trainable());
  EXPECT_EQ(a->findParameter(SyntheticArtifact::kUpProj), 1u);
  EXPECT_EQ(a->findParameter("nope"), std::nullopt);
  EXPECT_EQ(a->blobOwner(up.blob()),
            std::string("parameter ") + SyntheticArtifact::kUpProj);
  EXPECT_EQ(a->blobOwner(0), "executable 0 (train_kernels)");
  EXPECT_EQ(a->blobChecksum(up.blob()),
            xxhash64(s.upProj.data(), s.upProj.size()));

  // Entry points: signatures and the schedule.
  ASSERT_EQ(a->numEntryPoints(), 2u);
  const fb::EntryPoint *train = a->findEntryPoint("train_step");
  ASSERT_NE(train, nullptr);
  EXPECT_EQ(a->findEntryPoint("generate"), nullptr);
  ASSERT_EQ(train->arguments()->size(), 4u);
  const fb::TensorSig *tokens = train->arguments()->Get(0);
  EXPECT_EQ(tokens->name()->str(), "tokens");
  EXPECT_EQ(tokens->dtype()->str(), "i32");
  EXPECT_EQ(toVector(tokens->shape()), (std::vector<int64_t>{2, 64}));
  EXPECT_EQ(tokens->role(), Role::Input);
  EXPECT_EQ(train->arguments()->Get(1)->role(), Role::Hyperparameter);
  EXPECT_EQ(train->arguments()->Get(2)->role(), Role::Parameter);
  EXPECT_EQ(train->arguments()->Get(3)->role(), Role::OptimizerState);
  EXPECT_EQ(train->results()->Get(0)->role(), Role::Output);
  EXPECT_EQ(
      toVector(a->findEntryPoint("eval_step")->arguments()->Get(0)->shape()),
      (std::vector<int64_t>{-1, 64}));
  ASSERT_EQ(train->dispatches()->size(), 3u);
  const fb::Dispatch *d0 = train->dispatches()->Get(0);
  EXPECT_EQ(d0->executable(), 0u);
  EXPECT_EQ(d0->kernel(), 0u);
  EXPECT_EQ(d0->workgroup_count()->x(), 2u);
  EXPECT_EQ(d0->op()->str(), "loom.rms_norm");
  ASSERT_EQ(d0->constants()->size(), 2u);
  EXPECT_EQ(d0->constants()->Get(1), 16u);
  ASSERT_EQ(d0->bindings()->size(), 3u);
  const fb::Binding *b1 = d0->bindings()->Get(1);
  EXPECT_EQ(b1->source(), BindingSource::Parameter);
  EXPECT_EQ(b1->index(), 2u);
  EXPECT_EQ(b1->size(), 32u);
  EXPECT_EQ(b1->access(), Access::Read);
  EXPECT_EQ(d0->bindings()->Get(2)->source(), BindingSource::ArenaSlot);
  EXPECT_EQ(train->dispatches()->Get(2)->bindings()->Get(3)->source(),
            BindingSource::Result);

  // The memory plan.
  const fb::MemoryPlan *plan = a->memoryPlan();
  ASSERT_NE(plan, nullptr);
  EXPECT_EQ(plan->arena_size(), 16384u);
  EXPECT_EQ(plan->alignment(), 256u);
  ASSERT_EQ(plan->slots()->size(), 3u);
  const fb::Slot *up1 = plan->slots()->Get(1);
  EXPECT_EQ(up1->name()->str(), "up");
  EXPECT_EQ(up1->offset(), 4096u);
  EXPECT_EQ(up1->size(), 8192u);
  EXPECT_EQ(up1->lifetime_begin(), 1u);
  EXPECT_EQ(up1->lifetime_end(), 2u);
  EXPECT_EQ(up1->op()->str(), "loom.bitlinear");
  EXPECT_EQ(plan->slots()->Get(2)->entry_point(), 1u);

  a->verify(false);
  a->verify(true);
  for (size_t i = 0; i < a->numParameters(); ++i)
    a->verifyParameter(i);
  EXPECT_NO_THROW(Artifact::open(path, {/*verifyParameters=*/true}));
}

TEST(Artifact, WritingIsDeterministic) {
  TempDir dir;
  SyntheticArtifact s;
  s.write(dir.file("a.blm"));
  s.write(dir.file("b.blm"));
  EXPECT_EQ(readBytes(dir.file("a.blm")), readBytes(dir.file("b.blm")));
}

TEST(Artifact, LayoutMatchesTheHeader) {
  TempDir dir;
  std::string path = dir.file("model.blm");
  SyntheticArtifact().write(path);
  std::vector<uint8_t> bytes = readBytes(path);
  FileHeader h = decodeHeader(bytes.data());
  EXPECT_EQ(h.headerSize, kHeaderSize);
  EXPECT_EQ(h.flatbufferOffset, kHeaderSize);
  EXPECT_EQ(h.dataOffset % 4096, 0u);
  EXPECT_EQ(h.dataAlignment, 4096u);
  EXPECT_EQ(h.blobCount, 8u); // 2 executables + 6 parameters
  EXPECT_EQ(h.checksumTableOffset, h.dataOffset + h.dataSize);
  EXPECT_EQ(h.fileSize, bytes.size());
  EXPECT_EQ(h.fileSize, h.checksumTableOffset + 8 * 9);
  EXPECT_EQ(h.flatbufferChecksum,
            xxhash64(bytes.data() + h.flatbufferOffset, h.flatbufferSize));
  // The manifest carries the FlatBuffers identifier.
  EXPECT_TRUE(fb::ManifestBufferHasIdentifier(bytes.data() + kHeaderSize));
}

TEST(Artifact, StreamsParametersFromProducers) {
  TempDir dir;
  std::string path = dir.file("stream.blm");
  // A 3 MiB parameter generated in uneven chunks, never held whole.
  const uint64_t big = 3 * 1024 * 1024 + 5;
  auto byteAt = [](uint64_t i) { return uint8_t((i * 7 + (i >> 12)) & 0xff); };
  int calls = 0;
  ArtifactBuilder b;
  b.addParameter({"streamed", "u8", {int64_t(big)}, false}, big,
                 [&](BlobWriter &w) {
                   ++calls;
                   std::vector<uint8_t> chunk;
                   uint64_t at = 0;
                   size_t step = 1000;
                   while (w.remaining() > 0) {
                     size_t k = size_t(std::min<uint64_t>(step, w.remaining()));
                     chunk.resize(k);
                     for (size_t j = 0; j < k; ++j)
                       chunk[j] = byteAt(at + j);
                     w.write(chunk.data(), k);
                     at += k;
                     step = step * 2 % 70001 + 1;
                   }
                   EXPECT_EQ(w.written(), big);
                 });
  b.addParameter({"mixed", "f32", {4, 1024}, true}, 4 * 1024 * 4,
                 [](BlobWriter &w) {
                   std::vector<uint8_t> ones(4096, 1);
                   w.write(ones.data(), ones.size());
                   w.writeZeros(8192);
                   w.write(ones.data(), ones.size());
                 });
  b.addZeroParameter({"lora_B", "f32", {256, 4}, true}, 4096);
  b.write(path);
  EXPECT_EQ(calls, 1);

  auto a = Artifact::open(path, {/*verifyParameters=*/true});
  ByteSpan s = a->parameterData(0);
  ASSERT_EQ(s.size(), big);
  bool same = true;
  for (uint64_t i = 0; i < big && same; ++i)
    same = s[i] == byteAt(i);
  EXPECT_TRUE(same);
  ByteSpan m = a->parameterData(1);
  EXPECT_EQ(m[0], 1);
  EXPECT_EQ(m[4096], 0);
  EXPECT_EQ(m[4096 + 8191], 0);
  EXPECT_EQ(m[12288], 1);
  ByteSpan z = a->parameterData(2);
  EXPECT_EQ(std::vector<uint8_t>(z.begin(), z.end()),
            std::vector<uint8_t>(4096, 0));
}

TEST(Artifact, ProducerWritingTheWrongSizeLeavesNoFile) {
  TempDir dir;
  std::string path = dir.file("bad.blm");
  {
    ArtifactBuilder b;
    b.addParameter({"short", "u8", {100}, false}, 100, [](BlobWriter &w) {
      uint8_t x[10] = {};
      w.write(x, 10);
    });
    EXPECT_FORMAT_ERROR(b.write(path), path, "parameter short",
                        "the producer wrote 10 bytes",
                        "the parameter declares 100");
  }
  {
    ArtifactBuilder b;
    b.addParameter({"long", "u8", {4}, false}, 4,
                   [](BlobWriter &w) { w.writeZeros(5); });
    EXPECT_FORMAT_ERROR(b.write(path), path, "parameter long",
                        "more than the declared 4 bytes");
  }
  EXPECT_TRUE(dir.entries().empty());
}

TEST(Artifact, HonoursConfiguredAlignments) {
  TempDir dir;
  std::string path = dir.file("aligned.blm");
  ArtifactBuilder::Options opts;
  opts.executableAlignment = 128;
  opts.parameterAlignment = 65536;
  ArtifactBuilder b(opts);
  std::vector<uint8_t> code(100, 0xcc), w(10, 1);
  b.addExecutable({"a", "elf-shared", "", {}}, code);
  b.addExecutable({"b", "elf-shared", "", {}}, code);
  b.addParameter({"p0", "u8", {10}, false}, w);
  b.addParameter({"p1", "u8", {10}, false}, w);
  b.write(path);
  auto a = Artifact::open(path);
  EXPECT_EQ(a->header().dataAlignment, 65536u);
  EXPECT_EQ(a->header().dataOffset % 65536, 0u);
  EXPECT_EQ(a->blob(1).offset(), 128u);
  EXPECT_EQ(a->blob(2).offset(), 65536u);
  EXPECT_EQ(a->blob(3).offset(), 131072u);
  EXPECT_EQ(toVector(a->parameterData(1)), w);

  EXPECT_THROW(ArtifactBuilder(ArtifactBuilder::Options{32, 4096}),
               std::invalid_argument);
  EXPECT_THROW(ArtifactBuilder(ArtifactBuilder::Options{64, 3000}),
               std::invalid_argument);
}

TEST(Artifact, EmptyArtifactRoundTrips) {
  TempDir dir;
  std::string path = dir.file("empty.blm");
  ArtifactBuilder().write(path);
  auto a = Artifact::open(path, {true});
  EXPECT_EQ(a->numEntryPoints(), 0u);
  EXPECT_EQ(a->numParameters(), 0u);
  EXPECT_EQ(a->numExecutables(), 0u);
  EXPECT_EQ(a->numBlobs(), 0u);
  EXPECT_EQ(a->memoryPlan(), nullptr);
  EXPECT_EQ(a->target(), TargetInfo());
  EXPECT_EQ(a->modelConfig().vocabSize, 0u);
  EXPECT_EQ(a->loraConfig().rank, 0u);
  a->verify(true);
  EXPECT_THROW(a->parameter(0), std::out_of_range);
  std::ostringstream os;
  describeArtifact(*a, os);
  EXPECT_NE(os.str().find("memory plan: none"), std::string::npos);
}

TEST(Artifact, NewerMinorVersionsAreAccepted) {
  TempDir dir;
  std::string path = dir.file("model.blm");
  SyntheticArtifact().write(path);
  editManifest(path, [](fb::Manifest &m) {
    m.mutable_version()->mutate_minor_version(kFormatMinor + 7);
  });
  editHeader(path, [](FileHeader &h) { h.versionMinor = kFormatMinor + 7; });
  auto a = Artifact::open(path);
  EXPECT_EQ(a->version().minor, kFormatMinor + 7);
}

//===----------------------------------------------------------------------===//
// The builder refuses inconsistent manifests (compiler bugs) up front.
//===----------------------------------------------------------------------===//

namespace {
/// Expects writing `s` (after `tweak`) to fail with a message containing
/// every one of `parts`, and no file to be left behind.
template <typename F>
void expectBuilderError(F tweak, const std::vector<std::string> &parts) {
  TempDir dir;
  std::string path = dir.file("bad.blm");
  SyntheticArtifact s;
  tweak(s);
  std::vector<std::string> all = parts;
  all.push_back(path);
  EXPECT_TRUE(throwsFormatError([&] { s.write(path); }, all));
  EXPECT_TRUE(dir.entries().empty());
}
} // namespace

TEST(ArtifactBuilder, RejectsInconsistentManifests) {
  expectBuilderError(
      [](SyntheticArtifact &s) { s.train.dispatches[1].kernel = 7; },
      {"entry point train_step, dispatch 1", "kernel index 7 out of range",
       "has 3 kernels"});
  expectBuilderError(
      [](SyntheticArtifact &s) { s.eval.dispatches[0].executable = 2; },
      {"entry point eval_step, dispatch 0", "executable index 2"});
  expectBuilderError(
      [](SyntheticArtifact &s) { s.train.dispatches[0].bindings[1].size = 33; },
      {"entry point train_step, dispatch 0, binding 1",
       "exceeds its buffer (32 bytes)"});
  expectBuilderError(
      [](SyntheticArtifact &s) { s.train.dispatches[0].bindings[0].index = 4; },
      {"binding 0", "argument 4 out of range (4 arguments)"});
  expectBuilderError(
      [](SyntheticArtifact &s) { s.train.dispatches[2].bindings[0].index = 0; },
      {"dispatch 2, binding 0", "arena slot 0 is not live here"});
  expectBuilderError(
      [](SyntheticArtifact &s) { s.eval.dispatches[0].bindings[1].index = 0; },
      {"binding 1", "arena slot 0 belongs to entry point 0"});
  expectBuilderError(
      [](SyntheticArtifact &s) {
        s.plan.slots[1].offset = 2048;
        s.plan.slots[1].lifetimeBegin = 0;
      },
      {"memory plan, slot 1 (up)", "shares arena bytes with slot 0 (normed)"});
  expectBuilderError([](SyntheticArtifact &s) { s.plan.slots[1].offset = 100; },
                     {"memory plan, slot 1 (up)", "not a multiple of 256"});
  expectBuilderError(
      [](SyntheticArtifact &s) { s.plan.slots[1].offset = 12288; },
      {"memory plan, slot 1 (up)", "outside the arena (16384 bytes)"});
  expectBuilderError(
      [](SyntheticArtifact &s) { s.plan.slots[0].lifetimeEnd = 3; },
      {"memory plan, slot 0 (normed)", "lifetime 0..3", "3 dispatches"});
  expectBuilderError(
      [](SyntheticArtifact &s) { s.cpuExec.kernels[0].workgroupSize.y = 0; },
      {"executable 0 (train_kernels), kernel 0 (rms_norm_quant)",
       "zero extent"});
  // A byte count that the dtype contradicts.
  expectBuilderError([](SyntheticArtifact &s) { s.embed.resize(100); },
                     {"parameter model.embed_tokens.weight",
                      "holds 100 bytes but f32 of 512 elements takes 2048"});
}

TEST(ArtifactBuilder, InPlaceHandOverIsNotAliasing) {
  TempDir dir;
  SyntheticArtifact s;
  // Slot 1 takes over slot 0's bytes at the dispatch where slot 0 dies.
  s.plan.slots[1].offset = 0;
  s.write(dir.file("inplace.blm"));
  EXPECT_EQ(Artifact::open(dir.file("inplace.blm"))
                ->memoryPlan()
                ->slots()
                ->Get(1)
                ->offset(),
            0u);
}

TEST(ArtifactBuilder, RejectsDuplicateNames) {
  TempDir dir;
  std::string path = dir.file("dup.blm");
  {
    ArtifactBuilder b;
    b.addParameter({"w", "u8", {1}, false}, std::vector<uint8_t>{1});
    b.addParameter({"w", "u8", {1}, false}, std::vector<uint8_t>{2});
    EXPECT_FORMAT_ERROR(b.write(path), path, "parameter w",
                        "duplicate parameter name");
  }
  {
    ArtifactBuilder b;
    b.addEntryPoint({"train_step", {}, {}, {}});
    b.addEntryPoint({"train_step", {}, {}, {}});
    EXPECT_FORMAT_ERROR(b.write(path), path, "entry point train_step",
                        "duplicate entry point name");
  }
}

TEST(Artifact, DescribeListsEverything) {
  TempDir dir;
  std::string path = dir.file("model.blm");
  SyntheticArtifact().write(path);
  auto a = Artifact::open(path);
  std::ostringstream os;
  describeArtifact(*a, os);
  std::string out = os.str();
  for (const char *part : {
           ".blm 1.0",
           "produced by bitloom-test 0.1",
           "target: cpu-x86_64, cpu znver3, features +avx2,+fma",
           "model: bitnet, vocab 32, hidden 16, intermediate 256, layers 1",
           "rope theta 500000",
           "lora: rank 4, alpha 8, dropout 0.05, targets q,v,up, trainable "
           "lora",
           "seq len 64, batch 2, memory budget 3.00 GiB, optimizer adamw",
           "metadata seed = 42",
           "train_step: 4 arguments, 1 results, 3 dispatches",
           "arg 0 tokens: i32 [2, 64] Input",
           "arg 0 tokens: i32 [?, 64] Input",
           "arg 3 lora_A.exp_avg: f32 [4, 16] OptimizerState",
           "0 train_kernels: elf-relocatable, target cpu-x86_64",
           "1 gpu_kernels: spirv, target vulkan-generic",
           "kernel 1 bitlinear_lora_fwd: grid 8x4x1, workgroup 32x8x1, at "
           "model.mlir:22:7",
           "parameters (6,",
           "1 model.layers.0.mlp.up_proj.weight: tq2_0 [256, 16], 1.03 KiB",
           "f32 [4, 16], 256 B at data+",
           "trainable",
           "memory plan: arena 16.00 KiB (16384 bytes), alignment 256, 3 slots",
           "slot 1 up: [4096, 12288) 8.00 KiB, train_step dispatches 1..2, "
           "defined by loom.bitlinear",
           "schedule train_step:",
           "1 bitlinear_lora_fwd (executable 0, kernel 1) grid 8x4x1, op "
           "loom.bitlinear+loom.lora",
           "binding 1: parameter model.layers.0.mlp.up_proj.weight [+0, 1056 "
           "bytes] r",
           "binding 3: result loss [+0, 4 bytes] w",
           "binding 2: slot 1 up [+0, 8192 bytes] w",
           "constants: 64 16",
       })
    EXPECT_NE(out.find(part), std::string::npos) << "missing: " << part << "\n"
                                                 << out;
  std::ostringstream brief;
  describeArtifact(*a, brief, {/*dispatches=*/false, /*slots=*/false});
  EXPECT_EQ(brief.str().find("schedule train_step"), std::string::npos);
  EXPECT_EQ(brief.str().find("slot 1 up"), std::string::npos);
}

/// eval_step as a CPU entry point compiles it: one dispatch that takes the
/// whole arena and places its own buffers, listed as slots with positions
/// in the dispatch's schedule (see -loom-plan-arena).
static void makeScheduledEval(SyntheticArtifact &s) {
  s.eval.dispatches[0].bindings[1] = {BindingSource::Arena, 0, 0, 8192,
                                      Access::ReadWrite};
  s.eval.arenaBytes = 8192;
  s.eval.scheduleLength = 10;
  s.plan.slots[2] = {"eval_a", 0, 4096, 1, 0, 0, "a", 0, 4};
  // Same bytes, later in the schedule: no conflict.
  s.plan.slots.push_back({"eval_b", 0, 4096, 1, 0, 0, "b", 5, 9});
  s.plan.slots.push_back({"eval_c", 4096, 4096, 1, 0, 0, "c", 2, 7});
}

TEST(ArtifactBuilder, ScheduledSlotsShareBytesWhenDisjointInTime) {
  TempDir dir;
  SyntheticArtifact s;
  makeScheduledEval(s);
  s.write(dir.file("scheduled.blm"));
  std::unique_ptr<Artifact> a = Artifact::open(dir.file("scheduled.blm"));
  const fb::Slot *b = a->memoryPlan()->slots()->Get(3);
  EXPECT_EQ(b->schedule_begin(), 5u);
  EXPECT_EQ(b->schedule_end(), 9u);
  EXPECT_EQ(a->findEntryPoint("eval_step")->arena_bytes(), 8192u);
  EXPECT_EQ(a->findEntryPoint("eval_step")->schedule_length(), 10u);
  // Slots without positions keep the whole-dispatch default.
  EXPECT_EQ(a->memoryPlan()->slots()->Get(0)->schedule_end(), UINT32_MAX);
}

TEST(ArtifactBuilder, RejectsOverlappingScheduledSlots) {
  // Live at the same schedule position (even only at one shared end: an op
  // may read one buffer while writing the other) over the same bytes.
  expectBuilderError(
      [](SyntheticArtifact &s) {
        makeScheduledEval(s);
        s.plan.slots[3].scheduleBegin = 4;
      },
      {"memory plan, slot 3 (eval_b)",
       "shares arena bytes with slot 2 "
       "(eval_a)",
       "schedule positions 4..9 and 0..4"});
  expectBuilderError(
      [](SyntheticArtifact &s) {
        makeScheduledEval(s);
        s.plan.slots[4].offset = 3840; // overlaps both by 256 bytes
      },
      {"shares arena bytes", "eval_c"});
  expectBuilderError(
      [](SyntheticArtifact &s) {
        makeScheduledEval(s);
        s.plan.slots[3].scheduleEnd = 10;
      },
      {"memory plan, slot 3 (eval_b)", "schedule positions 5..10",
       "10 positions"});
  expectBuilderError(
      [](SyntheticArtifact &s) {
        makeScheduledEval(s);
        s.plan.slots[4].offset = 6144;
      },
      {"memory plan, slot 4 (eval_c)", "outside its entry point's arena "
                                       "(8192 bytes)"});
  expectBuilderError(
      [](SyntheticArtifact &s) {
        makeScheduledEval(s);
        s.eval.dispatches[0].bindings[1].size = 8448;
      },
      {"eval_step, dispatch 0, binding 1", "exceeds"});
  expectBuilderError(
      [](SyntheticArtifact &s) {
        makeScheduledEval(s);
        s.eval.dispatches[0].bindings[1].index = 1;
      },
      {"binding 1", "arena binding index 1 (must be 0)"});
}

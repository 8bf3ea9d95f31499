//===- ArtifactTestUtil.h - A synthetic artifact and file surgery -*- C++ -*-=//
#ifndef BITLOOM_TEST_ARTIFACT_TESTUTIL_H
#define BITLOOM_TEST_ARTIFACT_TESTUTIL_H

#include "artifact/Artifact.h"
#include "artifact/ArtifactBuilder.h"
#include "artifact/Checksum.h"
#include "artifact/Format.h"
#include "formats/FormatsTestUtil.h"

#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace bitloom::test {

/// Everything a complete synthetic artifact is made of; the byte vectors
/// outlive the builder's borrowed pointers.
struct SyntheticArtifact {
  blm::TargetInfo target{"cpu-x86_64", "znver3", {"+avx2", "+fma"}};
  blm::ModelConfig model;
  blm::LoraConfig lora;
  blm::CompileOptions options;
  std::vector<uint8_t> kernelsElf, kernelsSpirv;
  std::vector<uint8_t> embed, upProj, norm, loraA, loraB, packed;
  blm::ExecutableInfo cpuExec, gpuExec;
  blm::EntryPointInfo train, eval;
  blm::MemoryPlanInfo plan;

  static constexpr const char *kUpProj = "model.layers.0.mlp.up_proj.weight";

  SyntheticArtifact() {
    model.vocabSize = 32;
    model.hiddenSize = 16;
    model.intermediateSize = 256;
    model.numLayers = 1;
    model.numHeads = 4;
    model.numKvHeads = 2;
    model.headDim = 4;
    model.maxPositionEmbeddings = 128;
    model.ropeTheta = 500000.0;
    model.rmsNormEps = 1e-5;
    model.tieWordEmbeddings = true;
    model.hiddenAct = "relu2";
    model.weightQuant = "offline";
    model.bosTokenId = 1;
    model.eosTokenId = 2;
    lora.rank = 4;
    lora.alpha = 8;
    lora.dropout = 0.05;
    lora.targets = {"q", "v", "up"};
    lora.trainable = "lora";
    options.seqLen = 64;
    options.batchSize = 2;
    options.memoryBudget = 3ull << 30;
    options.optimizer = "adamw";
    options.recompute = true;

    kernelsElf = pattern(3000, 7);
    kernelsSpirv = pattern(1234, 11);
    embed = pattern(32 * 16 * 4, 1);   // f32 [32, 16]
    upProj = pattern(16 * 66, 2);      // tq2_0 [256, 16] = 16 blocks
    norm = pattern(16 * 2, 3);         // bf16 [16]
    loraA = pattern(4 * 16 * 4, 4);    // f32 [4, 16]
    loraB = pattern(256 * 4 * 4, 5);   // f32 [256, 4]
    packed = pattern(256 * 16 / 4, 6); // i2 (opaque) [256, 16]

    cpuExec.name = "train_kernels";
    cpuExec.format = "elf-relocatable";
    cpuExec.kernels = {
        {"rms_norm_quant", {2, 1, 1}, {64, 1, 1}, "model.mlir:10:5"},
        {"bitlinear_lora_fwd", {8, 4, 1}, {32, 8, 1}, "model.mlir:22:7"},
        {"adamw_multi_tensor", {1, 1, 1}, {256, 1, 1}, "fused:optimizer"},
    };
    gpuExec.name = "gpu_kernels";
    gpuExec.format = "spirv";
    gpuExec.target = "vulkan-generic";
    gpuExec.kernels = {{"matmul", {16, 16, 1}, {8, 8, 1}, ""}};

    using blm::Access;
    using blm::BindingSource;
    using blm::Role;
    train.name = "train_step";
    train.arguments = {
        {"tokens", "i32", {2, 64}, Role::Input},
        {"lr", "f32", {}, Role::Hyperparameter},
        {"lora_A", "f32", {4, 16}, Role::Parameter},
        {"lora_A.exp_avg", "f32", {4, 16}, Role::OptimizerState},
    };
    train.results = {{"loss", "f32", {}, Role::Output}};
    train.dispatches = {
        {0,
         0,
         {2, 1, 1},
         {{BindingSource::Argument, 0, 0, 512, Access::Read},
          {BindingSource::Parameter, 2, 0, 32, Access::Read},
          {BindingSource::ArenaSlot, 0, 0, 4096, Access::Write}},
         {64, 16},
         "loom.rms_norm"},
        {0,
         1,
         {8, 4, 1},
         {{BindingSource::ArenaSlot, 0, 0, 4096, Access::Read},
          {BindingSource::Parameter, 1, 0, 16 * 66, Access::Read},
          {BindingSource::ArenaSlot, 1, 0, 8192, Access::Write}},
         {},
         "loom.bitlinear+loom.lora"},
        {0,
         2,
         {1, 1, 1},
         {{BindingSource::ArenaSlot, 1, 0, 8192, Access::Read},
          {BindingSource::Argument, 2, 0, 256, Access::ReadWrite},
          {BindingSource::Argument, 3, 0, 256, Access::ReadWrite},
          {BindingSource::Result, 0, 0, 4, Access::Write}},
         {1},
         "loom.adamw"},
    };
    eval.name = "eval_step";
    eval.arguments = {{"tokens", "i32", {-1, 64}, Role::Input}};
    eval.results = {{"loss", "f32", {}, Role::Output}};
    eval.dispatches = {
        {1,
         0,
         {16, 16, 1},
         {{BindingSource::Argument, 0, 0, 512, Access::Read},
          {BindingSource::ArenaSlot, 2, 256, 1024, Access::Write},
          {BindingSource::Result, 0, 0, 4, Access::Write}},
         {},
         "loom.matmul"}};

    plan.arenaSize = 16384;
    plan.alignment = 256;
    plan.slots = {
        {"normed", 0, 4096, 0, 0, 1, "loom.rms_norm"},
        // In place of nothing live: disjoint from slot 0 while both live.
        {"up", 4096, 8192, 0, 1, 2, "loom.bitlinear"},
        // Another entry point may reuse the same bytes.
        {"eval_tmp", 0, 16384, 1, 0, 0, "loom.matmul"},
    };
  }

  static std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i)
      v[i] = uint8_t(i * 131 + seed * 17 + (i >> 8));
    return v;
  }

  /// Fills `b` with everything; parameters are (in order) embed, up_proj,
  /// norm, lora_A, lora_B, packed.
  void fill(blm::ArtifactBuilder &b) const {
    b.setProducer("bitloom-test 0.1");
    b.setTarget(target);
    b.setModelConfig(model);
    b.setLoraConfig(lora);
    b.setCompileOptions(options);
    b.addMetadata("source", "synthetic");
    b.addMetadata("seed", "42");
    b.addExecutable(cpuExec, kernelsElf);
    b.addExecutable(gpuExec, kernelsSpirv.data(), kernelsSpirv.size());
    b.addParameter({"model.embed_tokens.weight", "f32", {32, 16}, false},
                   embed.data(), embed.size());
    b.addParameter({kUpProj, "tq2_0", {256, 16}, false}, upProj);
    b.addParameter({"model.norm.weight", "bf16", {16}, false}, norm.data(),
                   norm.size());
    b.addParameter({"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
                    "f32",
                    {4, 16},
                    true},
                   loraA.data(), loraA.size());
    b.addParameter({"base_model.model.model.layers.0.mlp.up_proj.lora_B.weight",
                    "f32",
                    {256, 4},
                    true},
                   loraB.data(), loraB.size());
    b.addParameter(
        {"model.layers.0.mlp.up_proj.weight_packed", "i2", {256, 16}, false},
        packed.data(), packed.size());
    b.addEntryPoint(train);
    b.addEntryPoint(eval);
    b.setMemoryPlan(plan);
  }

  void write(const std::string &path) const {
    blm::ArtifactBuilder b;
    fill(b);
    b.write(path);
  }
};

/// Rewrites the header of `path` through `edit` (the header checksum is
/// recomputed unless `reseal` is false).
inline void editHeader(const std::string &path,
                       const std::function<void(blm::FileHeader &)> &edit,
                       bool reseal = true) {
  std::vector<uint8_t> bytes = readBytes(path);
  blm::FileHeader h = blm::decodeHeader(bytes.data());
  edit(h);
  uint64_t oldSum = blm::decodeHeader(bytes.data()).headerChecksum;
  blm::encodeHeader(h, bytes.data());
  if (!reseal)
    std::memcpy(bytes.data() + blm::kHeaderChecksumOffset, &oldSum, 8);
  writeBytes(path, bytes);
}

/// Mutates the manifest of `path` in place (fields keep their size), then
/// recomputes its checksum and the header checksum, so that only the
/// artifact's own consistency checks can catch the change.
inline void editManifest(const std::string &path,
                         const std::function<void(blm::fb::Manifest &)> &edit) {
  std::vector<uint8_t> bytes = readBytes(path);
  blm::FileHeader h = blm::decodeHeader(bytes.data());
  uint8_t *fb = bytes.data() + h.flatbufferOffset;
  edit(*blm::fb::GetMutableManifest(fb));
  h.flatbufferChecksum = blm::xxhash64(fb, h.flatbufferSize);
  blm::encodeHeader(h, bytes.data());
  writeBytes(path, bytes);
}

/// Flips one bit of the byte at `offset`.
inline void flipByte(const std::string &path, uint64_t offset) {
  std::vector<uint8_t> bytes = readBytes(path);
  bytes.at(offset) ^= 0x10;
  writeBytes(path, bytes);
}

} // namespace bitloom::test

#endif // BITLOOM_TEST_ARTIFACT_TESTUTIL_H

//===- VulkanTestArtifact.h - A small Vulkan artifact, by hand --*- C++ -*-===//
//
// What the Vulkan compiler will write, in miniature: SPIR-V executables (the
// shaders under shaders/, one kernel each, named by their SPIR-V entry
// point), one frozen weight, one trainable state tensor and two entry points
// whose dispatches bind ranges of the arena, the weight, arguments and
// results at nonzero offsets:
//
//   step(x: f32[64 + N] Input, w: f32[N] Parameter)
//       -> (y: f32[64 + N] Output, w: f32[N] (new value, in place))
//     0  add    arena[128 + i]   = bias[64 + i] + x[64 + i]
//     1  copy   y[64 + i]        = arena[128 + i]
//     2  saxpy  w[i]             = a * arena[128 + i] + w[i]
//   read_state(w: f32[N] Parameter) -> (out: f32[N] Output)
//     0  copy   out[i]           = w[i]
//
// Offsets are multiples of 256 bytes, the largest minStorageBufferOffset-
// Alignment Vulkan allows, so every device accepts them.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TEST_VULKAN_TESTARTIFACT_H
#define BITLOOM_TEST_VULKAN_TESTARTIFACT_H

#include "artifact/ArtifactBuilder.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitloom::test {

inline std::vector<uint32_t> loadShader(const std::string &name) {
  const std::string path =
      std::string(BITLOOM_VULKAN_TEST_SHADER_DIR) + "/" + name + ".spv";
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  if (bytes.empty() || bytes.size() % 4 != 0)
    throw std::runtime_error(path + " is not SPIR-V");
  std::vector<uint32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  return words;
}

/// A fresh directory, removed with everything in it at the end.
class TempDir {
public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "bitloom-vulkan-XXXXXX")
            .string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data()))
      throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string &path() const { return path_; }
  std::string operator/(const std::string &name) const {
    return path_ + "/" + name;
  }

private:
  std::string path_;
};

/// Deterministic values in [-1, 1) with full mantissas.
inline std::vector<float> testValues(size_t n, uint32_t seed) {
  std::vector<float> out(n);
  uint32_t s = seed;
  for (float &v : out) {
    s = s * 1664525u + 1013904223u;
    v = float(s >> 8) / float(1u << 23) - 1.0f;
  }
  return out;
}

struct VulkanTestArtifact {
  static constexpr uint32_t N = 200;   // not a multiple of the local size 64
  static constexpr uint64_t kPad = 64; // floats before the bound part
  static constexpr uint64_t kArenaOffset = 512;
  static constexpr float kA = 0.75f; // saxpy's factor

  std::string target = "vulkan-generic";
  std::vector<float> bias = testValues(kPad + N, 11);
  std::vector<float> initialW = testValues(N, 12);
  /// Byte offset of step's weight binding; tests make it misaligned.
  uint64_t biasOffset = kPad * 4;
  /// Byte size of step's x binding; tests make it overflow x.
  uint64_t xBindingBytes = N * 4;
  uint64_t arenaSize = 4096;

  void write(const std::string &path) const {
    using blm::Access;
    using blm::BindingSource;
    using blm::Role;
    auto bytesOf = [](const std::vector<uint32_t> &words) {
      std::vector<uint8_t> out(words.size() * 4);
      std::memcpy(out.data(), words.data(), out.size());
      return out;
    };
    auto bytesOfFloats = [](const std::vector<float> &v) {
      std::vector<uint8_t> out(v.size() * 4);
      std::memcpy(out.data(), v.data(), out.size());
      return out;
    };
    blm::ArtifactBuilder b;
    b.setProducer("bitloom-test");
    b.setTarget({target, "", {}});
    blm::ModelConfig model;
    model.vocabSize = 8;
    model.hiddenSize = N;
    model.numLayers = 1;
    model.maxPositionEmbeddings = 16;
    b.setModelConfig(model);
    blm::CompileOptions options;
    options.seqLen = 4;
    options.batchSize = 1;
    b.setCompileOptions(options);
    const blm::Dim3 local{64, 1, 1}, grid{(N + 63) / 64, 1, 1};
    uint32_t add = b.addExecutable(
        {"add", "spirv", "", {{"add", grid, local, "test:add"}}},
        bytesOf(loadShader("add")));
    uint32_t copy = b.addExecutable(
        {"copy", "spirv", "", {{"copy", grid, local, "test:copy"}}},
        bytesOf(loadShader("copy")));
    uint32_t saxpy = b.addExecutable(
        {"saxpy", "spirv", "", {{"main", grid, local, "test:saxpy"}}},
        bytesOf(loadShader("saxpy")));
    uint32_t biasIndex = b.addParameter(
        {"bias", "f32", {int64_t(kPad + N)}, false}, bytesOfFloats(bias));
    b.addParameter({"w", "f32", {int64_t(N)}, true}, bytesOfFloats(initialW));

    uint32_t aBits;
    std::memcpy(&aBits, &kA, 4);
    blm::EntryPointInfo step;
    step.name = "step";
    step.arguments = {{"x", "f32", {int64_t(kPad + N)}, Role::Input},
                      {"w", "f32", {int64_t(N)}, Role::Parameter}};
    step.results = {{"y", "f32", {int64_t(kPad + N)}, Role::Output},
                    {"w", "f32", {int64_t(N)}, Role::Parameter}};
    step.dispatches = {
        {add,
         0,
         grid,
         {{BindingSource::Parameter, biasIndex, biasOffset, N * 4,
           Access::Read},
          {BindingSource::Argument, 0, kPad * 4, xBindingBytes, Access::Read},
          {BindingSource::Arena, 0, kArenaOffset, N * 4, Access::Write}},
         {},
         "test.add"},
        {copy,
         0,
         grid,
         {{BindingSource::Arena, 0, kArenaOffset, N * 4, Access::Read},
          {BindingSource::Result, 0, kPad * 4, N * 4, Access::Write}},
         {},
         "test.copy"},
        {saxpy,
         0,
         grid,
         {{BindingSource::Arena, 0, kArenaOffset, N * 4, Access::Read},
          {BindingSource::Argument, 1, 0, N * 4, Access::ReadWrite}},
         {aBits, N},
         "test.saxpy"},
    };
    step.arenaBytes = kArenaOffset + N * 4;
    b.addEntryPoint(step);

    blm::EntryPointInfo read;
    read.name = "read_state";
    read.arguments = {{"w", "f32", {int64_t(N)}, Role::Parameter}};
    read.results = {{"out", "f32", {int64_t(N)}, Role::Output}};
    // Size 0: the rest of the tensor from the offset.
    read.dispatches = {{copy,
                        0,
                        grid,
                        {{BindingSource::Argument, 0, 0, 0, Access::Read},
                         {BindingSource::Result, 0, 0, N * 4, Access::Write}},
                        {},
                        "test.read"}};
    b.addEntryPoint(read);

    blm::MemoryPlanInfo plan;
    plan.arenaSize = arenaSize;
    plan.alignment = 64;
    plan.slots = {{"sum", kArenaOffset, N * 4, 0, 0, 2, "test.add"}};
    b.setMemoryPlan(plan);
    b.write(path);
  }

  /// step's y[kPad + i] (the sum; y's first kPad floats stay zero).
  float sum(const std::vector<float> &x, size_t i) const {
    return bias[kPad + i] + x[kPad + i];
  }
  /// w after one step from `w` with input `x`: the product rounded, then
  /// the sum (saxpy has NoContraction; volatile keeps the compiler from
  /// fusing them here).
  std::vector<float> stepW(std::vector<float> w,
                           const std::vector<float> &x) const {
    for (size_t i = 0; i < N; ++i) {
      volatile float product = kA * sum(x, i);
      w[i] = product + w[i];
    }
    return w;
  }
};

} // namespace bitloom::test

#endif // BITLOOM_TEST_VULKAN_TESTARTIFACT_H

//===- VulkanExecutorTest.cpp - Running a Vulkan .blm artifact ------------===//
//
// Builds VulkanTestArtifact.h's artifact with ArtifactBuilder and runs it
// through VulkanExecutor on device 0 (lavapipe on the build machines);
// skipped when there is no Vulkan device.
//
//===----------------------------------------------------------------------===//
#include "VulkanTestArtifact.h"

#include "artifact/Artifact.h"
#include "formats/Error.h"
#include "hal/vulkan/VulkanExecutor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

using namespace bitloom;
using namespace bitloom::vulkan;
using bitloom::test::TempDir;
using bitloom::test::testValues;
using bitloom::test::VulkanTestArtifact;

namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

class VulkanExecutorTest : public ::testing::Test {
protected:
  void SetUp() override {
    try {
      devices = enumerateDevices();
    } catch (const VulkanError &e) {
      GTEST_SKIP() << "no Vulkan: " << e.what();
    }
    if (devices.empty())
      GTEST_SKIP() << "no Vulkan device";
  }

  /// Writes `spec` and opens it.
  std::unique_ptr<blm::Artifact> make(const VulkanTestArtifact &spec,
                                      const std::string &name = "a.blm") {
    const std::string path = dir / name;
    spec.write(path);
    return blm::Artifact::open(path);
  }

  /// Options with a pipeline cache in the temporary directory and warnings
  /// collected.
  ExecutorOptions options() {
    ExecutorOptions o;
    o.pipelineCachePath = dir / "cache/pipelines.bin";
    o.warn = [this](const std::string &w) { warnings.push_back(w); };
    return o;
  }

  /// Prepares step: x and y streamed, w on the device.
  ExecutorEntry &prepareStep(VulkanExecutor &ex) {
    const uint64_t n = VulkanTestArtifact::N, pad = VulkanTestArtifact::kPad;
    BufferRange w = ex.stateBuffer("w", n * 4);
    return ex.prepare(
        "step",
        {TensorBinding::streamed((pad + n) * 4), TensorBinding::onDevice(w)},
        {TensorBinding::streamed((pad + n) * 4), TensorBinding::onDevice(w)});
  }

  std::vector<DeviceInfo> devices;
  TempDir dir;
  std::vector<std::string> warnings;
};

} // namespace

TEST_F(VulkanExecutorTest, RunsDispatchesOverRangesAndReplays) {
  VulkanTestArtifact spec;
  auto artifact = make(spec);
  VulkanExecutor ex(*artifact, options());
  EXPECT_EQ(ex.profile().name, "generic");
  EXPECT_EQ(ex.numPipelines(), 3u);

  const uint32_t n = VulkanTestArtifact::N;
  const size_t pad = VulkanTestArtifact::kPad;
  ExecutorEntry &step = prepareStep(ex);
  EXPECT_EQ(step.numDispatches(), 3u);
  EXPECT_NE(step.input(0), nullptr);
  EXPECT_EQ(step.input(1), nullptr); // w lives on the device
  EXPECT_NE(step.output(0), nullptr);
  EXPECT_EQ(step.output(1), nullptr);
  EXPECT_FALSE(step.writesArgument(0));
  EXPECT_TRUE(step.writesArgument(1)); // saxpy's ReadWrite binding
  EXPECT_EQ(ex.findEntry("step"), &step);
  EXPECT_EQ(ex.findEntry("read_state"), nullptr);

  // State up once; after that only x and y cross.
  std::vector<float> w = spec.initialW;
  ex.upload({HostCopy{*ex.findState("w"), w.data()}});
  std::vector<float> x = testValues(pad + n, 21);
  for (int replay = 0; replay < 3; ++replay) {
    SCOPED_TRACE("replay " + std::to_string(replay));
    if (replay == 2)
      x = testValues(pad + n, 22); // new input, same recorded sequence
    std::memcpy(step.input(0), x.data(), x.size() * 4);
    ex.run(step);
    w = spec.stepW(w, x);
    const float *y = static_cast<const float *>(step.output(0));
    size_t bad = 0;
    for (size_t i = 0; i < pad; ++i)
      if (y[i] != 0.0f && bad++ < 3)
        ADD_FAILURE() << "y[" << i << "] = " << y[i] << ", outside the range";
    for (size_t i = 0; i < n; ++i)
      if (y[pad + i] != spec.sum(x, i) && bad++ < 3)
        ADD_FAILURE() << "y[" << pad + i << "] = " << y[pad + i]
                      << ", expected " << spec.sum(x, i);
    EXPECT_EQ(bad, 0u);
  }
  std::vector<float> got(n);
  ex.download({HostCopy{*ex.findState("w"), got.data()}});
  EXPECT_EQ(got, w);

  // Another entry point sees the state where the first one left it.
  BufferRange state = *ex.findState("w");
  ExecutorEntry &read =
      ex.prepare("read_state", {TensorBinding::onDevice(state)},
                 {TensorBinding::streamed(n * 4)});
  ex.run(read);
  std::vector<float> out(n);
  std::memcpy(out.data(), read.output(0), n * 4);
  EXPECT_EQ(out, w);

  // The state range is shared, and fill zeroes it on the device.
  ex.fill({state});
  ex.run(read);
  std::memcpy(out.data(), read.output(0), n * 4);
  EXPECT_EQ(out, std::vector<float>(n, 0.0f));

  ExecutorMemory m = ex.memory();
  EXPECT_EQ(m.arena, spec.arenaSize);
  EXPECT_EQ(m.parameters, (pad + n) * 4); // bias only: w is never bound
  EXPECT_EQ(m.state, n * 4u);
  EXPECT_EQ(m.entries, ((pad + n) * 2 + n) * 4);
  EXPECT_GE(m.allocated, m.device());
  EXPECT_TRUE(warnings.empty());

  EXPECT_THROW(prepareStep(ex), VulkanError); // once per entry point
  EXPECT_THROW(ex.stateBuffer("w", 8), VulkanError);
}

TEST_F(VulkanExecutorTest, ProfilesEveryDispatchWithoutChangingTheStep) {
  VulkanTestArtifact spec;
  auto artifact = make(spec);
  VulkanExecutor ex(*artifact, options());
  const TimestampSupport &ts = ex.context().timestamps();
  if (!ts.supported) {
    // The reason names the device and the queue family.
    EXPECT_NE(ex.profilingProblem().find("has no timestamps"),
              std::string::npos);
    GTEST_SKIP() << ex.profilingProblem();
  }
  EXPECT_TRUE(ex.profilingProblem().empty());
  EXPECT_GT(ts.validBits, 0u);
  EXPECT_GT(ts.periodNs, 0.0);

  const uint32_t n = VulkanTestArtifact::N;
  const size_t pad = VulkanTestArtifact::kPad;
  ExecutorEntry &step = prepareStep(ex);
  ASSERT_EQ(step.dispatches().size(), 3u);
  EXPECT_EQ(step.dispatches()[0].op, "test.add");
  EXPECT_EQ(step.dispatches()[0].kernel, "add");
  EXPECT_EQ(step.dispatches()[2].kernel, "main");
  EXPECT_EQ(step.dispatches()[1].groups[0], (n + 63) / 64);
  EXPECT_EQ(step.dispatches()[1].groups[1], 1u);

  std::vector<float> w = spec.initialW;
  ex.upload({HostCopy{*ex.findState("w"), w.data()}});
  std::vector<float> x = testValues(pad + n, 31);
  std::memcpy(step.input(0), x.data(), x.size() * 4);
  // Profiled and plain replays interleaved: both do the whole step.
  for (int replay = 0; replay < 4; ++replay) {
    SCOPED_TRACE("replay " + std::to_string(replay));
    if (replay % 2 == 0) {
      EntryProfile p = ex.runProfiled(step);
      ASSERT_EQ(p.dispatchNs.size(), 3u);
      for (double ns : p.dispatchNs) {
        EXPECT_GE(ns, 0.0);
        EXPECT_LT(ns, 60e9); // not a wrapped-around counter
      }
      EXPECT_GE(p.uploadNs, 0.0);
      EXPECT_GE(p.downloadNs, 0.0);
      EXPECT_DOUBLE_EQ(p.dispatchTotalNs(),
                       p.dispatchNs[0] + p.dispatchNs[1] + p.dispatchNs[2]);
    } else {
      ex.run(step);
    }
    w = spec.stepW(w, x);
    const float *y = static_cast<const float *>(step.output(0));
    EXPECT_EQ(y[pad], spec.sum(x, 0));
    EXPECT_EQ(y[pad + n - 1], spec.sum(x, n - 1));
  }
  std::vector<float> got(n);
  ex.download({HostCopy{*ex.findState("w"), got.data()}});
  EXPECT_EQ(got, w);
}

TEST_F(VulkanExecutorTest, PipelineCacheIsWrittenAndReused) {
  VulkanTestArtifact spec;
  auto artifact = make(spec);
  const std::string cache = dir / "cache/pipelines.bin";
  {
    VulkanExecutor ex(*artifact, options());
    EXPECT_EQ(ex.pipelineCachePath(), cache);
    EXPECT_EQ(ex.pipelineCacheLoadedBytes(), 0u);
  }
  ASSERT_TRUE(fs::exists(cache));
  std::vector<uint8_t> first = readFile(cache);
  // Our header and at least the driver's (lavapipe's data is only that).
  ASSERT_GE(first.size(), 24u + 32u);
  EXPECT_EQ(std::string(first.begin(), first.begin() + 4), "BLPC");
  auto written = fs::last_write_time(cache);
  {
    VulkanExecutor ex(*artifact, options());
    EXPECT_EQ(ex.pipelineCacheLoadedBytes(), first.size() - 24);
    // The pipelines still work when they come from the cache.
    ExecutorEntry &step = prepareStep(ex);
    std::vector<float> x =
        testValues(VulkanTestArtifact::kPad + VulkanTestArtifact::N, 5);
    std::memcpy(step.input(0), x.data(), x.size() * 4);
    ex.run(step);
    const float *y = static_cast<const float *>(step.output(0));
    EXPECT_EQ(y[VulkanTestArtifact::kPad], spec.sum(x, 0));
  }
  // Nothing new to save: the file was not rewritten.
  EXPECT_EQ(fs::last_write_time(cache), written);
  EXPECT_EQ(readFile(cache), first);
  EXPECT_TRUE(warnings.empty());

  // A corrupt file is a warning; the cache is rebuilt and rewritten.
  {
    std::vector<uint8_t> bad = first;
    bad.back() ^= 0xff;
    std::ofstream(cache, std::ios::binary)
        .write(reinterpret_cast<const char *>(bad.data()),
               std::streamsize(bad.size()));
  }
  {
    VulkanExecutor ex(*artifact, options());
    EXPECT_EQ(ex.pipelineCacheLoadedBytes(), 0u);
  }
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("checksum mismatch"), std::string::npos)
      << warnings[0];
  EXPECT_EQ(readFile(cache), first);
}

TEST_F(VulkanExecutorTest, DefaultPipelineCachePathAndUnwritableDirectory) {
  VulkanTestArtifact spec;
  auto artifact = make(spec);
  const char *old = std::getenv("XDG_CACHE_HOME");
  std::string saved = old ? old : "";
  ::setenv("XDG_CACHE_HOME", dir.path().c_str(), 1);
  EXPECT_EQ(defaultPipelineCacheDir(), dir / "bitloom");
  {
    ExecutorOptions o = options();
    o.pipelineCachePath.clear();
    VulkanExecutor ex(*artifact, o);
    EXPECT_EQ(
        ex.pipelineCachePath(),
        dir / ("bitloom/pipelines-" + pipelineCacheKey(*artifact) + ".bin"));
    EXPECT_TRUE(fs::exists(ex.pipelineCachePath()));
  }
  if (old)
    ::setenv("XDG_CACHE_HOME", saved.c_str(), 1);
  else
    ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(pipelineCacheKey(*artifact).size(), 16u);

  // A cache directory that cannot be made (a file is in the way, which
  // stops root too): a warning, and the executor works.
  std::ofstream(dir / "file") << "x";
  ExecutorOptions o = options();
  o.pipelineCachePath = dir / "file/sub/pipelines.bin";
  VulkanExecutor ex(*artifact, o);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("cannot write the pipeline cache"),
            std::string::npos)
      << warnings[0];
  ExecutorEntry &step = prepareStep(ex);
  ex.run(step);

  // No disk cache at all: no file, no warning.
  warnings.clear();
  ExecutorOptions none = options();
  none.diskPipelineCache = false;
  VulkanExecutor memoryOnly(*artifact, none);
  EXPECT_EQ(memoryOnly.pipelineCachePath(), "");
  EXPECT_TRUE(warnings.empty());
}

TEST_F(VulkanExecutorTest, ProfileMismatchNamesWhatTheDeviceLacks) {
  VulkanTestArtifact spec;
  spec.target = "vulkan-nvidia";
  auto artifact = make(spec);
  if (missingCapabilities(devices[0], findProfile("nvidia")).empty())
    GTEST_SKIP() << devices[0].name << " meets the nvidia profile";
  try {
    VulkanExecutor ex(*artifact, options());
    FAIL() << "opened a vulkan-nvidia artifact on " << devices[0].name;
  } catch (const VulkanError &e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("device 0 (" + devices[0].name +
                        ") does not meet profile nvidia: "),
              std::string::npos)
        << what;
    EXPECT_NE(what.find(artifact->path()), std::string::npos) << what;
    if (devices[0].subgroupSize < 32) {
      EXPECT_NE(what.find("subgroup size " +
                          std::to_string(devices[0].subgroupSize) +
                          " < 32 required"),
                std::string::npos)
          << what;
    }
  }
}

TEST_F(VulkanExecutorTest, NotAVulkanTargetOrUnknownProfile) {
  VulkanTestArtifact spec;
  spec.target = "vulkan-foo";
  auto unknown = make(spec, "foo.blm");
  try {
    VulkanExecutor ex(*unknown, options());
    FAIL() << "opened vulkan-foo";
  } catch (const FormatError &e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("target.name: unknown device profile in "
                        "'vulkan-foo' (known: generic, "),
              std::string::npos)
        << what;
  }
  spec.target = "cpu-x86_64";
  auto cpu = make(spec, "cpu.blm");
  try {
    VulkanExecutor ex(*cpu, options());
    FAIL() << "opened a CPU artifact";
  } catch (const FormatError &e) {
    EXPECT_NE(std::string(e.what()).find("'cpu-x86_64' is not a Vulkan target"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(isVulkanTarget("vulkan-mali"));
  EXPECT_FALSE(isVulkanTarget("cpu-arm64"));
}

TEST_F(VulkanExecutorTest, MisalignedBindingOffset) {
  if (devices[0].minStorageBufferOffsetAlignment <= 4)
    GTEST_SKIP() << "the device accepts any 4-byte offset";
  VulkanTestArtifact spec;
  spec.biasOffset = 4;
  auto artifact = make(spec);
  VulkanExecutor ex(*artifact, options());
  try {
    prepareStep(ex);
    FAIL() << "bound a storage buffer at offset 4";
  } catch (const VulkanError &e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("entry point step, dispatch 0 (test.add): binding 0: "
                        "offset "),
              std::string::npos)
        << what;
    EXPECT_NE(
        what.find("is not a multiple of the device's "
                  "minStorageBufferOffsetAlignment (" +
                  std::to_string(devices[0].minStorageBufferOffsetAlignment) +
                  ")"),
        std::string::npos)
        << what;
  }
}

TEST_F(VulkanExecutorTest, BindingOutsideItsTensor) {
  VulkanTestArtifact spec;
  spec.xBindingBytes = (VulkanTestArtifact::N + 4) * 4; // past x's end
  auto artifact = make(spec);
  VulkanExecutor ex(*artifact, options());
  try {
    prepareStep(ex);
    FAIL() << "bound past the end of x";
  } catch (const FormatError &e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(artifact->path() +
                        ": entry point step, dispatch 0 (test.add), binding "
                        "1: range 256 + 816 bytes does not fit argument 0 "
                        "(x) (1056 bytes)"),
              std::string::npos)
        << what;
  }
}

TEST_F(VulkanExecutorTest, ArenaOutOfMemoryIsAnException) {
  VulkanTestArtifact spec;
  spec.arenaSize = uint64_t(1) << 50;
  auto artifact = make(spec);
  try {
    VulkanExecutor ex(*artifact, options());
    FAIL() << "allocated a 1 PiB arena";
  } catch (const VulkanOutOfMemory &e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("memory_plan.arena_size (1.00 PiB)"), std::string::npos)
        << what;
    EXPECT_NE(what.find("out of"), std::string::npos) << what;
  }
}

TEST_F(VulkanExecutorTest, DeviceIndexOutOfRange) {
  VulkanTestArtifact spec;
  auto artifact = make(spec);
  ExecutorOptions o = options();
  o.deviceIndex = uint32_t(devices.size());
  try {
    VulkanExecutor ex(*artifact, o);
    FAIL() << "opened a device that does not exist";
  } catch (const VulkanError &e) {
    EXPECT_NE(std::string(e.what()).find("no Vulkan device " +
                                         std::to_string(devices.size())),
              std::string::npos)
        << e.what();
  }
}

// Each profile's features are enabled on the device (lavapipe meets
// generic and lavapipe; the latter turns on int8, fp16, 8/16-bit storage and
// the integer dot product).
TEST_F(VulkanExecutorTest, OpensEveryProfileTheDeviceMeets) {
  for (const std::string &profile : profilesMet(devices[0])) {
    SCOPED_TRACE(profile);
    VulkanTestArtifact spec;
    spec.target = "vulkan-" + profile;
    auto artifact = make(spec, profile + ".blm");
    VulkanExecutor ex(*artifact, options());
    EXPECT_EQ(ex.profile().name, profile);
    ExecutorEntry &step = prepareStep(ex);
    std::vector<float> x =
        testValues(VulkanTestArtifact::kPad + VulkanTestArtifact::N, 8);
    std::memcpy(step.input(0), x.data(), x.size() * 4);
    ex.run(step);
    EXPECT_EQ(static_cast<const float *>(
                  step.output(0))[VulkanTestArtifact::kPad + 7],
              spec.sum(x, 7));
  }
}

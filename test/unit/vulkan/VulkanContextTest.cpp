//===- VulkanContextTest.cpp - Vulkan buffers, pipelines, replay ----------===//
//
// Needs a Vulkan driver (the build machines have Mesa's lavapipe); skipped
// when there is no Vulkan device. The shaders are SPIR-V assembly under
// shaders/, assembled and validated at build time into
// BITLOOM_VULKAN_TEST_SHADER_DIR.
//
//===----------------------------------------------------------------------===//
#include "hal/vulkan/VulkanContext.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

using namespace bitloom::vulkan;

namespace {

std::vector<uint32_t> loadShader(const std::string &name) {
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

/// saxpy.spvasm's push constants.
struct SaxpyPush {
  float a;
  uint32_t n;
};
static_assert(sizeof(SaxpyPush) == 8);

/// Deterministic values in [-1, 1) with full mantissas, so that every
/// multiply and add rounds.
std::vector<float> values(size_t n, uint32_t seed) {
  std::vector<float> out(n);
  uint32_t s = seed;
  for (float &v : out) {
    s = s * 1664525u + 1013904223u;
    v = float(s >> 8) / float(1u << 23) - 1.0f;
  }
  return out;
}

/// y = a*x + y with the shader's rounding: the product rounded to float,
/// then the sum (volatile keeps the compiler from fusing them).
void saxpyReference(float a, const std::vector<float> &x,
                    std::vector<float> &y) {
  for (size_t i = 0; i < x.size(); ++i) {
    volatile float product = a * x[i];
    y[i] = product + y[i];
  }
}

uint32_t groupsFor(uint32_t n) { return (n + 63) / 64; }

class VulkanContextTest : public ::testing::Test {
protected:
  void SetUp() override {
    try {
      if (enumerateDevices().empty())
        GTEST_SKIP() << "no Vulkan device";
      ctx = std::make_unique<VulkanContext>(0);
    } catch (const VulkanError &e) {
      GTEST_SKIP() << "no usable Vulkan device: " << e.what();
    }
  }
  std::unique_ptr<VulkanContext> ctx;
};

} // namespace

TEST(VulkanHumanBytes, Units) {
  EXPECT_EQ(humanBytes(0), "0 B");
  EXPECT_EQ(humanBytes(1023), "1023 B");
  EXPECT_EQ(humanBytes(1024), "1.00 KiB");
  EXPECT_EQ(humanBytes(uint64_t(2) << 30), "2.00 GiB");
  EXPECT_EQ(humanBytes(uint64_t(1) << 50), "1.00 PiB");
}

TEST_F(VulkanContextTest, UploadDownloadRoundTrip) {
  const size_t n = 1000;
  std::vector<float> data = values(n, 7);
  for (bool hostVisible : {false, true}) {
    SCOPED_TRACE(hostVisible ? "host-visible" : "device-local");
    Buffer buffer = ctx->allocate(n * sizeof(float), hostVisible);
    EXPECT_EQ(buffer.size(), n * sizeof(float));
    EXPECT_EQ(buffer.hostVisible(), hostVisible);
    EXPECT_EQ(buffer.mapped() != nullptr, hostVisible);
    if (!hostVisible && ctx->device().deviceLocalHeapSize > 0) {
      EXPECT_TRUE(buffer.deviceLocal());
    }
    ctx->upload(buffer, data.data(), n * sizeof(float));
    std::vector<float> back(n, 0.0f);
    ctx->download(buffer, back.data(), n * sizeof(float));
    EXPECT_EQ(back, data);

    // A partial write at an offset, then a partial read around it.
    const float patch[3] = {1.5f, -2.5f, 3.5f};
    ctx->upload(buffer, patch, sizeof patch, 10 * sizeof(float));
    float window[5] = {};
    ctx->download(buffer, window, sizeof window, 9 * sizeof(float));
    EXPECT_EQ(window[0], data[9]);
    EXPECT_EQ(window[1], 1.5f);
    EXPECT_EQ(window[2], -2.5f);
    EXPECT_EQ(window[3], 3.5f);
    EXPECT_EQ(window[4], data[13]);

    EXPECT_THROW(ctx->upload(buffer, data.data(), n * sizeof(float), 4),
                 VulkanError);
    EXPECT_THROW(ctx->download(buffer, back.data(), 8, n * sizeof(float)),
                 VulkanError);
  }
}

// The runtime's pattern: record a sequence of dispatches once, replay it.
TEST_F(VulkanContextTest, SaxpyRecordedOnceReplayedThreeTimes) {
  const uint32_t n = 100000; // not a multiple of the local size (64)
  const float a1 = 1.25f, a2 = -0.3f;
  std::vector<float> x = values(n, 1), y = values(n, 2);

  Pipeline saxpy =
      ctx->createPipeline(loadShader("saxpy"), 2, sizeof(SaxpyPush));
  EXPECT_EQ(saxpy.numBuffers(), 2u);
  EXPECT_EQ(saxpy.pushConstantBytes(), sizeof(SaxpyPush));
  Buffer xs = ctx->allocate(n * sizeof(float));
  // One float more than n: the guard in the shader must leave it alone.
  Buffer ys = ctx->allocate((n + 1) * sizeof(float));
  ctx->upload(xs, x.data(), n * sizeof(float));
  const float sentinel = 42.0f;
  ctx->upload(ys, y.data(), n * sizeof(float));
  ctx->upload(ys, &sentinel, sizeof sentinel, n * sizeof(float));

  CommandSequence step = ctx->record();
  const SaxpyPush first{a1, n}, second{a2, n};
  step.dispatch(saxpy, {xs, ys}, &first, sizeof first, groupsFor(n));
  step.dispatch(saxpy, {xs, ys}, &second, sizeof second, groupsFor(n));
  EXPECT_EQ(step.numDispatches(), 2u);
  EXPECT_FALSE(step.finished());
  for (int replay = 0; replay < 3; ++replay)
    ctx->submitAndWait(step);
  EXPECT_TRUE(step.finished());
  // A finished sequence takes no more dispatches.
  EXPECT_THROW(step.dispatch(saxpy, {xs, ys}, &first, sizeof first, 1),
               VulkanError);

  std::vector<float> expected = y;
  for (int replay = 0; replay < 3; ++replay) {
    saxpyReference(a1, x, expected);
    saxpyReference(a2, x, expected);
  }
  std::vector<float> got(n + 1);
  ctx->download(ys, got.data(), (n + 1) * sizeof(float));
  EXPECT_EQ(got[n], sentinel);
  got.resize(n);
  size_t mismatches = 0;
  for (uint32_t i = 0; i < n; ++i)
    if (got[i] != expected[i] && mismatches++ < 5)
      ADD_FAILURE() << "y[" << i << "] = " << got[i] << ", expected "
                    << expected[i];
  EXPECT_EQ(mismatches, 0u);
}

TEST_F(VulkanContextTest, OneShotDispatchOnHostVisibleBuffers) {
  const uint32_t n = 130;
  std::vector<float> x = values(n, 3), y = values(n, 4);
  Pipeline saxpy =
      ctx->createPipeline(loadShader("saxpy"), 2, sizeof(SaxpyPush));
  Buffer xs = ctx->allocate(n * sizeof(float), true);
  Buffer ys = ctx->allocate(n * sizeof(float), true);
  std::memcpy(xs.mapped(), x.data(), n * sizeof(float));
  std::memcpy(ys.mapped(), y.data(), n * sizeof(float));
  const SaxpyPush push{3.0f, n};
  ctx->dispatch(saxpy, {xs, ys}, &push, sizeof push, groupsFor(n));
  saxpyReference(3.0f, x, y);
  std::vector<float> got(n);
  std::memcpy(got.data(), ys.mapped(), n * sizeof(float));
  EXPECT_EQ(got, y);
}

TEST_F(VulkanContextTest, AbsurdAllocationThrowsOutOfMemory) {
  const uint64_t bytes = uint64_t(1) << 50;
  try {
    ctx->allocate(bytes);
    FAIL() << "allocating 1 PiB succeeded";
  } catch (const VulkanOutOfMemory &e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("out of"), std::string::npos) << what;
    EXPECT_NE(what.find("requested 1.00 PiB"), std::string::npos) << what;
  }
  EXPECT_THROW(ctx->allocate(bytes, /*hostVisible=*/true), VulkanOutOfMemory);
  // Just over the largest device-local heap: refused before the driver is
  // asked (some drivers would try).
  if (uint64_t heap = ctx->device().deviceLocalHeapSize) {
    try {
      ctx->allocate(heap + 4096);
      FAIL() << "allocating more than the largest heap succeeded";
    } catch (const VulkanOutOfMemory &e) {
      EXPECT_NE(std::string(e.what()).find("out of"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW(ctx->allocate(0), VulkanError);
  // The context is still usable afterwards.
  Buffer small = ctx->allocate(64);
  EXPECT_EQ(small.size(), 64u);
}

TEST_F(VulkanContextTest, MisuseThrows) {
  std::vector<uint32_t> spirv = loadShader("saxpy");
  EXPECT_THROW(ctx->createPipeline({1, 2, 3}, 2, 8), VulkanError);
  EXPECT_THROW(ctx->createPipeline(spirv, 2, 132), VulkanError);
  EXPECT_THROW(ctx->createPipeline(spirv, 2, 6), VulkanError);
  Pipeline saxpy = ctx->createPipeline(spirv, 2, sizeof(SaxpyPush));
  Buffer b = ctx->allocate(256);
  const SaxpyPush push{1.0f, 64};
  CommandSequence seq = ctx->record();
  EXPECT_THROW(seq.dispatch(saxpy, {b}, &push, sizeof push, 1), VulkanError);
  EXPECT_THROW(seq.dispatch(saxpy, {b, b}, &push, 4, 1), VulkanError);
  EXPECT_THROW(seq.dispatch(Pipeline(), {b, b}, &push, sizeof push, 1),
               VulkanError);
  CommandSequence empty;
  EXPECT_THROW(ctx->submitAndWait(empty), VulkanError);
  // An empty recorded sequence is fine to submit.
  ctx->submitAndWait(seq);
}

TEST_F(VulkanContextTest, ObjectsMayOutliveTheirContext) {
  Pipeline saxpy =
      ctx->createPipeline(loadShader("saxpy"), 2, sizeof(SaxpyPush));
  Buffer b = ctx->allocate(1024);
  CommandSequence seq = ctx->record();
  const SaxpyPush push{1.0f, 256};
  seq.dispatch(saxpy, {b, b}, &push, sizeof push, 4);
  ctx.reset(); // the device stays until the last object goes
  EXPECT_EQ(b.size(), 1024u);
  EXPECT_EQ(seq.numDispatches(), 1u);
}

TEST(VulkanContext, DeviceIndexOutOfRangeThrows) {
  std::vector<DeviceInfo> devices;
  try {
    devices = enumerateDevices();
  } catch (const VulkanError &e) {
    GTEST_SKIP() << "no Vulkan: " << e.what();
  }
  try {
    VulkanContext ctx(uint32_t(devices.size()));
    FAIL() << "a context on a device that does not exist";
  } catch (const VulkanError &e) {
    EXPECT_NE(std::string(e.what()).find("no Vulkan device"), std::string::npos)
        << e.what();
  }
}

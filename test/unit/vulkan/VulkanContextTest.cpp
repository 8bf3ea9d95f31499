//===- VulkanContextTest.cpp - Vulkan buffers, pipelines, replay ----------===//
//
// Needs a Vulkan driver (the build machines have Mesa's lavapipe); skipped
// when there is no Vulkan device. The shaders are SPIR-V assembly under
// shaders/, assembled and validated at build time into
// BITLOOM_VULKAN_TEST_SHADER_DIR.
//
//===----------------------------------------------------------------------===//
#include "hal/vulkan/VulkanContext.h"

#include "VulkanTestArtifact.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

using namespace bitloom::vulkan;
using bitloom::test::loadShader;

namespace {

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

// Barriers only where a dispatch depends on one since the last barrier:
// saxpy reads x (binding 0) and writes y (binding 1).
TEST_F(VulkanContextTest, BarriersOnlyBetweenDependentDispatches) {
  const uint32_t n = 4096;
  Pipeline saxpy =
      ctx->createPipeline(loadShader("saxpy"), 2, sizeof(SaxpyPush));
  Buffer x = ctx->allocate(n * 4), y1 = ctx->allocate(n * 4),
         y2 = ctx->allocate(n * 4), y3 = ctx->allocate(2 * n * 4);
  std::vector<float> xv = values(n, 11), yv = values(n, 12);
  ctx->upload(x, xv.data(), n * 4);
  for (const Buffer &b : {y1, y2})
    ctx->upload(b, yv.data(), n * 4);
  ctx->upload(y3, yv.data(), n * 4);
  ctx->upload(y3, yv.data(), n * 4, n * 4);
  const SaxpyPush push{2.0f, n};
  const std::vector<bool> readX = {false, true};
  CommandSequence step = ctx->record();
  // Both read x and write their own y: independent.
  step.dispatch(saxpy, {x, y1}, &push, sizeof push, groupsFor(n), 1, 1, readX);
  step.dispatch(saxpy, {x, y2}, &push, sizeof push, groupsFor(n), 1, 1, readX);
  EXPECT_EQ(step.numDispatchBarriers(), 0u);
  // Reads y1, written above (RAW): a barrier.
  step.dispatch(saxpy, {y1, y2}, &push, sizeof push, groupsFor(n), 1, 1, readX);
  EXPECT_EQ(step.numDispatchBarriers(), 1u);
  // Disjoint halves of one buffer do not conflict; the second write into
  // the first half (WAW) does.
  step.dispatch(saxpy, {x, BufferRange(y3, 0, n * 4)}, &push, sizeof push,
                groupsFor(n), 1, 1, readX);
  step.dispatch(saxpy, {x, BufferRange(y3, n * 4, n * 4)}, &push, sizeof push,
                groupsFor(n), 1, 1, readX);
  EXPECT_EQ(step.numDispatchBarriers(), 1u);
  step.dispatch(saxpy, {x, BufferRange(y3, 0, n * 4)}, &push, sizeof push,
                groupsFor(n), 1, 1, readX);
  EXPECT_EQ(step.numDispatchBarriers(), 2u);
  // Without write flags every binding counts as written: x (read by all
  // since the last barrier) conflicts.
  step.dispatch(saxpy, {x, y1}, &push, sizeof push, groupsFor(n));
  EXPECT_EQ(step.numDispatchBarriers(), 3u);
  ctx->submitAndWait(step);

  std::vector<float> e1 = yv, e2 = yv, e3 = yv, e3b = yv;
  saxpyReference(2.0f, xv, e1);
  saxpyReference(2.0f, xv, e2);
  saxpyReference(2.0f, e1, e2);
  saxpyReference(2.0f, xv, e3);
  saxpyReference(2.0f, xv, e3b);
  saxpyReference(2.0f, xv, e3);
  saxpyReference(2.0f, xv, e1);
  std::vector<float> got(n);
  ctx->download(y1, got.data(), n * 4);
  EXPECT_EQ(got, e1);
  ctx->download(y2, got.data(), n * 4);
  EXPECT_EQ(got, e2);
  std::vector<float> both(2 * n);
  ctx->download(y3, both.data(), 2 * n * 4);
  EXPECT_EQ(std::vector<float>(both.begin(), both.begin() + n), e3);
  EXPECT_EQ(std::vector<float>(both.begin() + n, both.end()), e3b);

  // Every dispatch ordered when asked (for timing), or when timed.
  CommandSequence ordered = ctx->record();
  ordered.orderEveryDispatch();
  ordered.dispatch(saxpy, {x, y1}, &push, sizeof push, groupsFor(n), 1, 1,
                   readX);
  ordered.dispatch(saxpy, {x, y2}, &push, sizeof push, groupsFor(n), 1, 1,
                   readX);
  EXPECT_EQ(ordered.numDispatchBarriers(), 1u);
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

TEST_F(VulkanContextTest, TimestampsBracketDispatches) {
  const TimestampSupport &ts = ctx->timestamps();
  if (!ts.supported) {
    EXPECT_FALSE(ts.problem.empty());
    EXPECT_THROW(ctx->record(2), VulkanError);
    GTEST_SKIP() << ts.problem;
  }
  const uint32_t n = 4096;
  Pipeline saxpy =
      ctx->createPipeline(loadShader("saxpy"), 2, sizeof(SaxpyPush));
  Buffer xs = ctx->allocate(n * 4), ys = ctx->allocate(n * 4);
  const SaxpyPush push{0.5f, n};
  CommandSequence seq = ctx->record(3);
  seq.timestamp();
  seq.dispatch(saxpy, {xs, ys}, &push, sizeof push, groupsFor(n));
  seq.timestamp();
  seq.dispatch(saxpy, {xs, ys}, &push, sizeof push, groupsFor(n));
  seq.timestamp();
  EXPECT_THROW(seq.timestamp(), VulkanError); // room for 3
  EXPECT_EQ(seq.numTimestamps(), 3u);
  for (int replay = 0; replay < 2; ++replay) { // queries reset every replay
    ctx->submitAndWait(seq);
    std::vector<double> t = seq.timestampsNs();
    ASSERT_EQ(t.size(), 3u);
    EXPECT_EQ(t[0], 0.0);
    EXPECT_GE(t[1], t[0]);
    EXPECT_GE(t[2], t[1]);
  }
  // A plain sequence has no queries to write into.
  CommandSequence plain = ctx->record();
  EXPECT_THROW(plain.timestamp(), VulkanError);
  EXPECT_TRUE(plain.timestampsNs().empty());
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

//===----------------------------------------------------------------------===//
// Buffer ranges, batched transfers, recorded copies, pipeline caches
//===----------------------------------------------------------------------===//

namespace {

uint64_t alignTo(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

} // namespace

// x and y live in one buffer; the dispatch binds the two ranges.
TEST_F(VulkanContextTest, DispatchOnBufferRanges) {
  const uint32_t n = 1000;
  const uint64_t align =
      std::max<uint64_t>(16, ctx->device().minStorageBufferOffsetAlignment);
  const uint64_t xOffset = align, yOffset = alignTo(xOffset + n * 4, align);
  const uint64_t total = yOffset + n * 4 + align;
  std::vector<float> x = values(n, 5), y = values(n, 6);
  std::vector<float> all(total / 4, 7.0f); // sentinels around the ranges
  std::memcpy(&all[xOffset / 4], x.data(), n * 4);
  std::memcpy(&all[yOffset / 4], y.data(), n * 4);
  Buffer buffer = ctx->allocate(total);
  ctx->upload(buffer, all.data(), total);

  Pipeline saxpy =
      ctx->createPipeline(loadShader("saxpy"), 2, sizeof(SaxpyPush));
  const SaxpyPush push{-1.5f, n};
  ctx->dispatch(saxpy,
                {BufferRange(buffer, xOffset, n * 4),
                 BufferRange(buffer, yOffset, BufferRange::kWholeSize)},
                &push, sizeof push, groupsFor(n));
  saxpyReference(-1.5f, x, y);
  std::memcpy(&all[yOffset / 4], y.data(), n * 4);
  std::vector<float> got(total / 4);
  ctx->download(buffer, got.data(), total);
  EXPECT_EQ(got, all);
  EXPECT_EQ(BufferRange(buffer, yOffset, BufferRange::kWholeSize).bytes(),
            total - yOffset);
  EXPECT_EQ(BufferRange(buffer).bytes(), total);
}

TEST_F(VulkanContextTest, BufferRangeErrorsNameTheBindingAndLimit) {
  Pipeline saxpy =
      ctx->createPipeline(loadShader("saxpy"), 2, sizeof(SaxpyPush));
  const uint64_t align = ctx->device().minStorageBufferOffsetAlignment;
  Buffer b = ctx->allocate(4096);
  const SaxpyPush push{1.0f, 16};
  auto expectError = [&](const std::vector<BufferRange> &ranges,
                         const std::string &expected) {
    CommandSequence seq = ctx->record();
    try {
      seq.dispatch(saxpy, ranges, &push, sizeof push, 1);
      ADD_FAILURE() << "no error; expected: " << expected;
    } catch (const VulkanError &e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos)
          << e.what();
    }
  };
  if (align > 4)
    expectError({BufferRange(b, 4, 64), b},
                "dispatch: binding 0: offset 4 is not a multiple of the "
                "device's minStorageBufferOffsetAlignment (" +
                    std::to_string(align) + ")");
  expectError({b, BufferRange(b, 4096 - 256, 512)},
              "dispatch: binding 1: range 3840 + 512 bytes does not fit its "
              "buffer of 4096 bytes");
  expectError({b, BufferRange(b, 0, 0)}, "dispatch: binding 1: an empty range");
  expectError({b, BufferRange(b, 4096, BufferRange::kWholeSize)},
              "dispatch: binding 1: an empty range at the end of its buffer");
  expectError({b, BufferRange()}, "dispatch: binding 1: a null buffer");

  const uint64_t maxRange = ctx->device().maxStorageBufferRange;
  if (maxRange > (uint64_t(256) << 20))
    return; // too large to allocate here just for the check
  Buffer big = ctx->allocate(maxRange + 256);
  expectError({b, big}, "dispatch: binding 1: a range of " +
                            std::to_string(maxRange + 256) + " bytes (" +
                            humanBytes(maxRange + 256) +
                            ") exceeds the device's maxStorageBufferRange (" +
                            std::to_string(maxRange) + " bytes)");
  // The same buffer bound by ranges within the limit is fine.
  CommandSequence seq = ctx->record();
  seq.dispatch(saxpy, {b, BufferRange(big, 256, maxRange)}, &push, sizeof push,
               1);
}

// Many ranges in few submissions, and transfers larger than one 64 MiB
// staging chunk.
TEST_F(VulkanContextTest, BatchedTransfersAndFill) {
  const uint64_t bigBytes = (uint64_t(64) << 20) + 4096 + 12;
  std::vector<uint8_t> big(bigBytes);
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = uint8_t(i * 7 + (i >> 12));
  std::vector<float> a = values(100, 1), b = values(300, 2);
  Buffer pool = ctx->allocate(8192);
  Buffer large = ctx->allocate(bigBytes + 100);
  ctx->upload({HostCopy{BufferRange(pool, 0, 400), a.data()},
               HostCopy{BufferRange(large, 100, bigBytes), big.data()},
               HostCopy{BufferRange(pool, 4096, 1200), b.data()}});
  std::vector<float> a2(100), b2(300);
  std::vector<uint8_t> big2(bigBytes);
  ctx->download({HostCopy{BufferRange(pool, 4096, 1200), b2.data()},
                 HostCopy{BufferRange(large, 100, bigBytes), big2.data()},
                 HostCopy{BufferRange(pool, 0, 400), a2.data()}});
  EXPECT_EQ(a2, a);
  EXPECT_EQ(b2, b);
  EXPECT_TRUE(big2 == big);

  ctx->fill({BufferRange(pool, 0, 200), BufferRange(pool, 4096 + 400, 400)});
  ctx->download({HostCopy{BufferRange(pool, 0, 400), a2.data()},
                 HostCopy{BufferRange(pool, 4096, 1200), b2.data()}});
  for (size_t i = 0; i < 100; ++i)
    EXPECT_EQ(a2[i], i < 50 ? 0.0f : a[i]) << i;
  for (size_t i = 0; i < 300; ++i)
    EXPECT_EQ(b2[i], i >= 100 && i < 200 ? 0.0f : b[i]) << i;
  EXPECT_THROW(ctx->fill({BufferRange(pool, 2, 8)}), VulkanError);
  EXPECT_THROW(ctx->upload({HostCopy{BufferRange(pool, 8000, 400), a.data()}}),
               VulkanError);
}

// The runtime's step: staged input copied in, dispatches, output copied
// out, all in one recorded sequence replayed with new host data.
TEST_F(VulkanContextTest, RecordedCopiesAroundDispatches) {
  const uint32_t n = 500;
  Pipeline saxpy =
      ctx->createPipeline(loadShader("saxpy"), 2, sizeof(SaxpyPush));
  Buffer staging = ctx->allocate(2 * n * 4, /*hostVisible=*/true);
  Buffer xs = ctx->allocate(n * 4), ys = ctx->allocate(n * 4);
  std::vector<float> y(n, 0.0f);
  ctx->upload(ys, y.data(), n * 4);
  CommandSequence step = ctx->record();
  step.copy(staging, 0, xs, 0, n * 4);
  const SaxpyPush push{2.0f, n};
  step.dispatch(saxpy, {xs, ys}, &push, sizeof push, groupsFor(n));
  step.copy(ys, 0, staging, n * 4, n * 4);
  EXPECT_THROW(step.copy(xs, 0, ys, 4, n * 4), VulkanError);
  for (int replay = 0; replay < 3; ++replay) {
    std::vector<float> x = values(n, 30 + replay);
    std::memcpy(staging.mapped(), x.data(), n * 4);
    ctx->submitAndWait(step);
    saxpyReference(2.0f, x, y);
    std::vector<float> got(n);
    std::memcpy(got.data(), static_cast<char *>(staging.mapped()) + n * 4,
                n * 4);
    EXPECT_EQ(got, y) << "replay " << replay;
  }
}

TEST_F(VulkanContextTest, PipelineCacheFile) {
  char tmpl[] = "/tmp/bitloom-pcache-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, path = dir + "/sub/cache.bin";
  std::vector<uint32_t> spirv = loadShader("saxpy");

  PipelineCache cold = ctx->createPipelineCache(path);
  EXPECT_EQ(cold.path(), path);
  EXPECT_EQ(cold.loadedBytes(), 0u);
  EXPECT_EQ(cold.loadProblem(), "");
  ctx->createPipeline(spirv, 2, sizeof(SaxpyPush), "main", cold);
  EXPECT_EQ(cold.save(), "");
  std::ifstream in(path, std::ios::binary);
  std::vector<char> file((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
  ASSERT_GE(file.size(), 24u + 32u);

  PipelineCache warm = ctx->createPipelineCache(path);
  EXPECT_EQ(warm.loadedBytes(), file.size() - 24);
  EXPECT_EQ(warm.loadProblem(), "");
  Pipeline p = ctx->createPipeline(spirv, 2, sizeof(SaxpyPush), "main", warm);
  Buffer xs = ctx->allocate(256, true), ys = ctx->allocate(256, true);
  std::memset(xs.mapped(), 0, 256);
  std::memset(ys.mapped(), 0, 256);
  static_cast<float *>(xs.mapped())[3] = 2.0f;
  const SaxpyPush push{3.0f, 64};
  ctx->dispatch(p, {xs, ys}, &push, sizeof push, 1);
  EXPECT_EQ(static_cast<float *>(ys.mapped())[3], 6.0f);

  auto rewrite = [&](std::vector<char> bytes) {
    std::ofstream(path, std::ios::binary)
        .write(bytes.data(), std::streamsize(bytes.size()));
  };
  rewrite(std::vector<char>(file.begin(), file.end() - 5));
  EXPECT_NE(ctx->createPipelineCache(path).loadProblem().find("truncated"),
            std::string::npos);
  rewrite({'G', 'G', 'U', 'F'});
  EXPECT_EQ(ctx->createPipelineCache(path).loadProblem(),
            "not a bitloom pipeline cache");
  // Another device's data (vendor ID changed, checksum made to match).
  std::vector<char> other = file;
  other[24 + 8] ^= 1;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 24; i < other.size(); ++i)
    h = (h ^ uint8_t(other[i])) * 1099511628211ull;
  std::memcpy(&other[16], &h, 8);
  rewrite(other);
  PipelineCache foreign = ctx->createPipelineCache(path);
  EXPECT_EQ(foreign.loadProblem(), "made by another device or driver version");
  EXPECT_EQ(foreign.loadedBytes(), 0u);

  PipelineCache memory = ctx->createPipelineCache();
  EXPECT_EQ(memory.path(), "");
  EXPECT_NE(memory.save(), "");
  std::filesystem::remove_all(dir);
}

TEST_F(VulkanContextTest, DeviceFeatures) {
  const DeviceInfo &d = ctx->device();
  DeviceFeatures offered;
  offered.shaderInt8 = d.shaderInt8;
  offered.shaderFloat16 = d.shaderFloat16;
  offered.storageBuffer8BitAccess = d.storageBuffer8BitAccess;
  offered.storageBuffer16BitAccess = d.storageBuffer16BitAccess;
  offered.integerDotProduct = d.integerDotProduct;
  VulkanContext withFeatures(0, nullptr, offered);
  EXPECT_EQ(withFeatures.allocate(64).size(), 64u);
  if (d.shaderInt8 && d.shaderFloat16 && d.integerDotProduct)
    GTEST_SKIP() << "the device offers every feature";
  DeviceFeatures all;
  all.shaderInt8 = all.shaderFloat16 = all.integerDotProduct = true;
  try {
    VulkanContext lacking(0, nullptr, all);
    FAIL() << "enabled a feature the device lacks";
  } catch (const VulkanError &e) {
    EXPECT_NE(std::string(e.what()).find(") lacks "), std::string::npos)
        << e.what();
  }
}

//===- VulkanSessionTest.cpp - bitloom-run's Session on Vulkan ------------===//
//
// bitloom-run's Session on VulkanTestArtifact.h's artifact: state stays on
// the device across calls and crosses only when the host reads or writes
// it. Skipped when there is no Vulkan device.
//
//===----------------------------------------------------------------------===//
#include "VulkanTestArtifact.h"

#include "KernelProfile.h"
#include "Session.h"
#include "formats/Error.h"
#include "hal/vulkan/VulkanDevices.h"

#include <gtest/gtest.h>

using namespace bitloom;
using bitloom::test::TempDir;
using bitloom::test::testValues;
using bitloom::test::VulkanTestArtifact;

namespace {

class VulkanSessionTest : public ::testing::Test {
protected:
  void SetUp() override {
    try {
      if (vulkan::enumerateDevices().empty())
        GTEST_SKIP() << "no Vulkan device";
    } catch (const vulkan::VulkanError &e) {
      GTEST_SKIP() << "no Vulkan: " << e.what();
    }
    path = dir / "model.blm";
    spec.write(path);
    options.pipelineCache = dir / "pipelines.bin";
  }

  std::vector<float> readState(run::Session &s, run::Entry &read) {
    s.run(read);
    const run::HostBuffer *out = read.result("out");
    return std::vector<float>(out->f32(), out->f32() + out->elements());
  }

  TempDir dir;
  VulkanTestArtifact spec;
  std::string path;
  run::SessionOptions options;
};

} // namespace

TEST_F(VulkanSessionTest, StateStaysOnTheDevice) {
  const size_t n = VulkanTestArtifact::N, pad = VulkanTestArtifact::kPad;
  run::Session s(path, options);
  ASSERT_TRUE(s.onVulkan());
  EXPECT_NE(s.backendDescription().find("Vulkan device 0 ("),
            std::string::npos);
  EXPECT_EQ(s.trainableNames(), std::vector<std::string>{"w"});
  run::Entry &step = s.entry("step");
  s.initFresh(0); // w from the artifact's parameter of that name

  std::vector<float> x = testValues(pad + n, 3);
  run::HostBuffer &xs = step.requireInput("x");
  std::memcpy(xs.data(), x.data(), xs.bytes());
  std::vector<float> w = spec.initialW;
  for (int i = 0; i < 3; ++i) {
    s.run(step);
    w = spec.stepW(w, x);
    const run::HostBuffer *y = step.result("y");
    ASSERT_NE(y, nullptr);
    EXPECT_EQ(y->f32()[0], 0.0f);
    EXPECT_EQ(y->f32()[pad], spec.sum(x, 0));
    EXPECT_EQ(y->f32()[pad + n - 1], spec.sum(x, n - 1));
  }
  // w went up once (after initFresh) and never came back.
  EXPECT_EQ(s.stateTransfers().uploads, 1u);
  EXPECT_EQ(s.stateTransfers().downloads, 0u);

  // Reading it (a checkpoint) fetches it, once.
  trainer::TensorMap t = s.trainables(/*loraOnly=*/false);
  ASSERT_EQ(t.count("w"), 1u);
  EXPECT_EQ(t["w"].data, w);
  s.trainables(false);
  EXPECT_EQ(s.stateTransfers().downloads, 1u);
  EXPECT_EQ(s.stateTransfers().bytesDown, n * 4);

  // Another entry point sees the device's value without a transfer.
  run::Entry &read = s.entry("read_state");
  EXPECT_EQ(readState(s, read), w);
  EXPECT_EQ(s.stateTransfers().uploads, 1u);

  // What the host writes goes up before the next call that binds it.
  std::vector<float> fresh = testValues(n, 99);
  s.setTensors({{"w", {{int64_t(n)}, fresh}}}, "test", /*requireAll=*/true);
  EXPECT_EQ(readState(s, read), fresh);
  EXPECT_EQ(s.stateTransfers().uploads, 2u);

  // zeroState zeroes on the device: no upload.
  s.zeroState("w");
  EXPECT_EQ(readState(s, read), std::vector<float>(n, 0.0f));
  EXPECT_EQ(s.stateTransfers().uploads, 2u);

  // A mutable state() access: downloaded, changed, uploaded.
  s.run(step); // w = a * sum
  run::HostBuffer *ws = s.state("w");
  ASSERT_NE(ws, nullptr);
  EXPECT_EQ(ws->f32()[0], spec.stepW(std::vector<float>(n, 0.0f), x)[0]);
  ws->f32()[0] = 42.0f;
  EXPECT_EQ(readState(s, read)[0], 42.0f);

  // Device memory: the arena, the weight step binds, w, x, y and out.
  EXPECT_EQ(s.plannedBytes(),
            spec.arenaSize + (pad + n) * 4 + n * 4 + ((pad + n) * 2 + n) * 4);
}

TEST_F(VulkanSessionTest, DeviceOptionIsForVulkanArtifactsOnly) {
  VulkanTestArtifact cpu;
  cpu.target = "cpu-x86_64";
  const std::string cpuPath = dir / "cpu.blm";
  cpu.write(cpuPath);
  run::SessionOptions o;
  o.device = 0;
  try {
    run::Session s(cpuPath, o);
    FAIL() << "--device accepted for a CPU artifact";
  } catch (const FormatError &e) {
    EXPECT_NE(std::string(e.what()).find("--device: selects a Vulkan device, "
                                         "but " +
                                         cpuPath + " targets cpu-x86_64"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(run::deviceOptions(-2), FormatError);
  EXPECT_FALSE(run::deviceOptions(-1).device.has_value());
  EXPECT_EQ(run::deviceOptions(1).device, 1u);

  options.device = 1000;
  EXPECT_THROW(run::Session(path, options), vulkan::VulkanError);
}

TEST_F(VulkanSessionTest, ProfiledCallsSumByOpToTheWholeStep) {
  const size_t n = VulkanTestArtifact::N, pad = VulkanTestArtifact::kPad;
  run::Session s(path, options);
  if (!s.profilingProblem().empty())
    GTEST_SKIP() << s.profilingProblem();
  run::Entry &step = s.entry("step");
  s.initFresh(0);
  std::vector<float> x = testValues(pad + n, 5);
  run::HostBuffer &xs = step.requireInput("x");
  std::memcpy(xs.data(), x.data(), xs.bytes());

  std::vector<run::StepProfile> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(s.runProfiled(step));
    // The call did its work: y came back.
    EXPECT_EQ(step.result("y")->f32()[pad], spec.sum(x, 0));
  }
  ASSERT_EQ(calls[0].dispatches.size(), 3u);
  EXPECT_EQ(calls[0].dispatches[2].op, "test.saxpy");
  EXPECT_EQ(calls[0].dispatches[2].kernel, "main");
  EXPECT_EQ(calls[0].dispatches[2].groups[0], (n + 63) / 64);
  for (const run::StepProfile &c : calls)
    for (const run::DispatchTime &d : c.dispatches)
      EXPECT_GE(d.ns, 0.0);

  run::KernelProfile kp = run::summarizeProfiles(calls);
  EXPECT_EQ(kp.steps, 3u);
  ASSERT_EQ(kp.dispatches.size(), 3u);
  ASSERT_EQ(kp.ops.size(), 3u); // test.add, test.copy, test.saxpy
  ASSERT_EQ(kp.byTime.size(), 3u);
  double opShares = 0, dispatchShares = 0;
  for (const run::KernelProfile::Op &op : kp.ops)
    opShares += kp.share(op.ns);
  for (const run::DispatchTime &d : kp.dispatches)
    dispatchShares += kp.share(d.ns);
  if (kp.totalNs > 0) { // a coarse clock might see nothing at all
    EXPECT_NEAR(opShares, 1.0, 1e-9);
    EXPECT_NEAR(dispatchShares, 1.0, 1e-9);
  }
  for (size_t i = 1; i < kp.ops.size(); ++i)
    EXPECT_GE(kp.ops[i - 1].ns, kp.ops[i].ns);
  for (size_t i = 1; i < kp.byTime.size(); ++i)
    EXPECT_GE(kp.dispatches[kp.byTime[i - 1]].ns,
              kp.dispatches[kp.byTime[i]].ns);
  EXPECT_EQ(s.memoryUse().total(), s.plannedBytes());
  EXPECT_TRUE(s.memoryUse().device);
}

TEST(VulkanKernelProfile, MeansSumByOpKind) {
  auto call = [](double a, double b, double c) {
    run::StepProfile p;
    p.dispatches.resize(3);
    p.dispatches[0].op = "bitloom_uk_matmul model.layers.0.q";
    p.dispatches[1].op = "loss_kernel";
    p.dispatches[2].op = "bitloom_uk_matmul model.layers.1.q";
    p.dispatches[0].ns = a;
    p.dispatches[1].ns = b;
    p.dispatches[2].ns = c;
    p.uploadNs = 10;
    return p;
  };
  run::KernelProfile kp =
      run::summarizeProfiles({call(100, 500, 300), call(300, 700, 100)});
  EXPECT_DOUBLE_EQ(kp.totalNs, 1000.0); // means 200 + 600 + 200
  EXPECT_DOUBLE_EQ(kp.uploadNs, 10.0);
  ASSERT_EQ(kp.ops.size(), 2u);
  EXPECT_EQ(kp.ops[0].name, "loss_kernel");
  EXPECT_DOUBLE_EQ(kp.share(kp.ops[0].ns), 0.6);
  EXPECT_EQ(kp.ops[1].name, "bitloom_uk_matmul"); // both layers together
  EXPECT_EQ(kp.ops[1].dispatches, 2u);
  EXPECT_DOUBLE_EQ(kp.share(kp.ops[1].ns), 0.4);
  EXPECT_EQ(kp.byTime, (std::vector<size_t>{1, 0, 2})); // ties: in order
  EXPECT_DOUBLE_EQ(kp.rest(1).ns, 400.0);
  EXPECT_EQ(kp.rest(1).dispatches, 2u);

  run::StepProfile shorter = call(1, 2, 3);
  shorter.dispatches.pop_back();
  EXPECT_THROW(run::summarizeProfiles({call(1, 2, 3), shorter}), FormatError);
  EXPECT_EQ(run::summarizeProfiles({}).totalNs, 0.0);
}

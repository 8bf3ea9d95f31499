//===- AttentionKernelsTest.cpp - GPU attention vs the CPU ukernels -------===//
//
// The kernels of AttentionKernels.cpp on the Vulkan device against
// bitloom_uk_attention / bitloom_uk_attention_grad on random data: GQA
// (4 heads over 2 kv heads), causal and not, queries = keys and fewer
// queries than keys (and more, where causal rows see no key), sequence
// lengths that leave partial tiles, on the device's limits and on the
// generic profile's (128 invocations, 16 KiB: smaller tiles). Every output
// must be within 1e-4 of the CPU's, relative to its largest magnitude.
//
//===----------------------------------------------------------------------===//
#include "KernelHarnessTest.h"

#include "ukernels/Attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

using bitloom::codegen::vulkan::KernelTarget;
using namespace bitloom::test;

namespace {

struct AttentionCase {
  int64_t batch, queries, keys, heads, kvHeads, headDim;
  bool causal;
};

std::string describe(const AttentionCase &c, const KernelTarget &t) {
  return "B " + std::to_string(c.batch) + " T " + std::to_string(c.queries) +
         " S " + std::to_string(c.keys) + " H " + std::to_string(c.heads) +
         "/" + std::to_string(c.kvHeads) + " D " + std::to_string(c.headDim) +
         (c.causal ? " causal" : " full") + " target{invocations " +
         std::to_string(t.maxWorkgroupInvocations) + ", shared " +
         std::to_string(t.sharedMemoryBytes) + "}";
}

std::string memref3(int64_t a, int64_t b, int64_t c) {
  return "memref<" + std::to_string(a) + "x" + std::to_string(b) + "x" +
         std::to_string(c) + "xf32>";
}

class AttentionKernelsTest : public KernelHarnessTest {
protected:
  KernelTarget device() const { return harness->deviceTarget(); }
  /// The generic profile: 128 invocations, 16 KiB of shared memory.
  static KernelTarget generic() {
    KernelTarget t;
    t.float64 = false;
    return t;
  }

  std::vector<float> random(size_t n, float amplitude) {
    std::uniform_real_distribution<float> u(-amplitude, amplitude);
    std::vector<float> v(n);
    for (float &x : v)
      x = u(rng);
    return v;
  }

  std::vector<HarnessOperand> scalars(const AttentionCase &c, float scale) {
    return {HarnessOperand::i64(c.batch),   HarnessOperand::i64(c.queries),
            HarnessOperand::i64(c.keys),    HarnessOperand::i64(c.heads),
            HarnessOperand::i64(c.kvHeads), HarnessOperand::i64(c.headDim),
            HarnessOperand::f32(scale),     HarnessOperand::i32(c.causal)};
  }

  void checkForward(const AttentionCase &c, const KernelTarget &target) {
    SCOPED_TRACE(describe(c, target));
    int64_t qn = c.batch * c.queries * c.heads * c.headDim,
            kn = c.batch * c.keys * c.kvHeads * c.headDim;
    // Large enough scores that the softmax is far from uniform.
    std::vector<float> q = random(qn, 2.0f), k = random(kn, 2.0f),
                       v = random(kn, 1.0f);
    float scale = 1.0f / std::sqrt(float(c.headDim));
    std::vector<float> want(qn);
    bitloom_uk_attention(q.data(), k.data(), v.data(), want.data(), c.batch,
                         c.queries, c.keys, c.heads, c.kvHeads, c.headDim,
                         scale, c.causal);
    std::string qType = memref3(c.batch, c.queries, c.heads * c.headDim);
    std::string kType = memref3(c.batch, c.keys, c.kvHeads * c.headDim);
    std::vector<HarnessOperand> operands = {
        HarnessOperand::buffer(0), HarnessOperand::buffer(1),
        HarnessOperand::buffer(2), HarnessOperand::buffer(3)};
    for (const HarnessOperand &s : scalars(c, scale))
      operands.push_back(s);
    HarnessResult r = harness->run("bitloom_uk_attention",
                                   {{qType, toBytes(q)},
                                    {kType, toBytes(k)},
                                    {kType, toBytes(v)},
                                    {qType, {}}},
                                   operands, target);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.kernelIR;
    ASSERT_EQ(r.kernels.size(), 1u);
    expectClose(fromBytes<float>(r.buffers[3]), want, 1e-4, "out");
  }

  void checkGrad(const AttentionCase &c, const KernelTarget &target) {
    SCOPED_TRACE(describe(c, target));
    int64_t qn = c.batch * c.queries * c.heads * c.headDim,
            kn = c.batch * c.keys * c.kvHeads * c.headDim;
    std::vector<float> q = random(qn, 2.0f), k = random(kn, 2.0f),
                       v = random(kn, 1.0f), dout = random(qn, 1.0f);
    float scale = 1.0f / std::sqrt(float(c.headDim));
    std::vector<float> dq(qn), dk(kn), dv(kn);
    bitloom_uk_attention_grad(q.data(), k.data(), v.data(), dout.data(),
                              dq.data(), dk.data(), dv.data(), c.batch,
                              c.queries, c.keys, c.heads, c.kvHeads, c.headDim,
                              scale, c.causal);
    std::string qType = memref3(c.batch, c.queries, c.heads * c.headDim);
    std::string kType = memref3(c.batch, c.keys, c.kvHeads * c.headDim);
    std::vector<HarnessOperand> operands;
    for (unsigned i = 0; i < 7; ++i)
      operands.push_back(HarnessOperand::buffer(i));
    for (const HarnessOperand &s : scalars(c, scale))
      operands.push_back(s);
    // The outputs start as garbage: the kernels must overwrite them.
    std::vector<float> junkQ(qn, 7.0f), junkK(kn, -3.0f);
    HarnessResult r = harness->run("bitloom_uk_attention_grad",
                                   {{qType, toBytes(q)},
                                    {kType, toBytes(k)},
                                    {kType, toBytes(v)},
                                    {qType, toBytes(dout)},
                                    {qType, toBytes(junkQ)},
                                    {kType, toBytes(junkK)},
                                    {kType, toBytes(junkK)}},
                                   operands, target);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.kernelIR;
    ASSERT_EQ(r.kernels.size(), 3u);
    expectClose(fromBytes<float>(r.buffers[4]), dq, 1e-4, "dq");
    expectClose(fromBytes<float>(r.buffers[5]), dk, 1e-4, "dk");
    expectClose(fromBytes<float>(r.buffers[6]), dv, 1e-4, "dv");
  }

  std::mt19937 rng{20240611};
};

// Partial query and key tiles everywhere (37, 20, 45 are no multiples of a
// power-of-two tile).
const AttentionCase kCases[] = {
    {2, 37, 37, 4, 2, 16, true}, {2, 37, 37, 4, 2, 16, false},
    {2, 20, 45, 4, 2, 16, true}, {2, 20, 45, 4, 2, 16, false},
    {2, 37, 37, 4, 2, 32, true}, {2, 37, 37, 4, 2, 32, false},
    {2, 20, 45, 4, 2, 32, true}, {2, 20, 45, 4, 2, 32, false},
    {1, 64, 64, 4, 2, 32, true},
};

TEST_F(AttentionKernelsTest, ForwardMatchesCpu) {
  for (const AttentionCase &c : kCases) {
    checkForward(c, device());
    checkForward(c, generic());
  }
}

TEST_F(AttentionKernelsTest, GradMatchesCpu) {
  for (const AttentionCase &c : kCases) {
    checkGrad(c, device());
    checkGrad(c, generic());
  }
}

// More queries than keys, causal: the first rows see no key at all (their
// output and gradients are 0); with one kv head (MQA) and head_dim 8.
TEST_F(AttentionKernelsTest, RowsWithoutKeys) {
  AttentionCase c{2, 24, 10, 4, 1, 8, true};
  checkForward(c, device());
  checkGrad(c, device());
  checkGrad(c, generic());
}

// The 2B model's head_dim (128) with its 4:1 grouping: the tiles the real
// shapes get (smaller sequence to keep lavapipe quick).
TEST_F(AttentionKernelsTest, HeadDim128) {
  AttentionCase c{1, 40, 40, 4, 1, 128, true};
  checkForward(c, device());
  checkGrad(c, device());
  checkForward(c, generic());
  checkGrad(c, generic());
}

TEST_F(AttentionKernelsTest, RejectsOddShapes) {
  // heads not a multiple of kv heads: a clear failure, not a kernel.
  AttentionCase c{1, 4, 4, 3, 2, 8, false};
  std::string qType = memref3(1, 4, 24), kType = memref3(1, 4, 16);
  std::vector<HarnessOperand> operands = {
      HarnessOperand::buffer(0), HarnessOperand::buffer(1),
      HarnessOperand::buffer(2), HarnessOperand::buffer(3)};
  for (const HarnessOperand &s : scalars(c, 0.5f))
    operands.push_back(s);
  HarnessResult r = harness->run(
      "bitloom_uk_attention",
      {{qType, {}}, {kType, {}}, {kType, {}}, {qType, {}}}, operands, device());
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("unsupported shape"), std::string::npos) << r.error;
}

} // namespace

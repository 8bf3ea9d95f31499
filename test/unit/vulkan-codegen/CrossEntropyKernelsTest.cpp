//===- CrossEntropyKernelsTest.cpp - GPU LM head + CE vs the CPU ukernels -===//
//
// The kernels of CrossEntropyKernels.cpp on the Vulkan device against
// bitloom_uk_linear_cross_entropy[_bf16w] on random data: training (loss
// and input gradient) and loss-only forms, f32 and bf16 heads, blocks of
// rows that do and do not divide the rows, masks with holes, all-masked
// blocks and an all-zero mask, labels outside the vocabulary, on the
// device's limits and the generic profile's. The loss must be within 1e-5
// of the CPU's (relative), the gradient within 1e-4 of its largest
// magnitude.
//
//===----------------------------------------------------------------------===//
#include "KernelHarnessTest.h"

#include "ukernels/Ukernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

using bitloom::codegen::vulkan::KernelTarget;
using namespace bitloom::test;

namespace {

enum class MaskKind { Holes, AllZero, AllOne, FirstBlockOut };

struct CrossEntropyCase {
  int64_t n, v, k, blockRows;
  bool bf16, training;
  MaskKind mask = MaskKind::Holes;
  bool badLabels = false; // some masked-in labels outside [0, v)
};

std::string describe(const CrossEntropyCase &c, const KernelTarget &t) {
  static const char *masks[] = {"holes", "all-zero", "all-one",
                                "first-block-out"};
  return "n " + std::to_string(c.n) + " v " + std::to_string(c.v) + " k " +
         std::to_string(c.k) + " blockRows " + std::to_string(c.blockRows) +
         (c.bf16 ? " bf16" : " f32") + (c.training ? " training" : " loss") +
         " mask " + masks[int(c.mask)] + (c.badLabels ? " bad-labels" : "") +
         " target{invocations " + std::to_string(t.maxWorkgroupInvocations) +
         ", shared " + std::to_string(t.sharedMemoryBytes) + "}";
}

std::string memref(std::initializer_list<int64_t> shape,
                   const std::string &elt) {
  std::string s = "memref<";
  for (int64_t d : shape)
    s += std::to_string(d) + "x";
  return s + elt + ">";
}

class CrossEntropyKernelsTest : public KernelHarnessTest {
protected:
  KernelTarget device() const { return harness->deviceTarget(); }
  static KernelTarget generic() {
    KernelTarget t;
    t.float64 = false;
    return t;
  }

  void check(const CrossEntropyCase &c, const KernelTarget &target) {
    SCOPED_TRACE(describe(c, target));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> x(c.n * c.k), wf(c.v * c.k);
    for (float &e : x)
      e = 2.0f * u(rng);
    for (float &e : wf)
      e = u(rng);
    // bf16 weights: the top halves of random floats (what the CPU widens).
    std::vector<uint16_t> wb(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &wf[i], sizeof bits);
      wb[i] = uint16_t(bits >> 16);
    }
    std::vector<int32_t> labels(c.n);
    std::uniform_int_distribution<int32_t> label(0, int32_t(c.v - 1));
    for (int32_t &l : labels)
      l = label(rng);
    if (c.badLabels) {
      labels[0] = int32_t(c.v) + 5;
      labels[c.n / 2] = -3;
    }
    std::vector<float> mask(c.n, 1.0f);
    std::bernoulli_distribution hole(0.3);
    for (int64_t i = 0; i < c.n; ++i) {
      switch (c.mask) {
      case MaskKind::Holes:
        mask[i] = hole(rng) ? 0.0f : 1.0f;
        break;
      case MaskKind::AllZero:
        mask[i] = 0.0f;
        break;
      case MaskKind::AllOne:
        break;
      case MaskKind::FirstBlockOut:
        mask[i] = i < c.blockRows ? 0.0f : 1.0f;
        break;
      }
    }
    if (c.badLabels) {
      mask[0] = 1.0f;
      mask[c.n / 2] = 1.0f;
    }
    float lossGrad = 1.75f;

    // The CPU's answer.
    float wantLoss = -1;
    std::vector<float> wantGrad(c.training ? c.n * c.k : 0);
    std::vector<float> cpuScratch(c.blockRows * c.v);
    float *gradPtr = c.training ? wantGrad.data() : nullptr;
    const float *lossGradPtr = c.training ? &lossGrad : nullptr;
    if (c.bf16)
      bitloom_uk_linear_cross_entropy_bf16w(
          x.data(), wb.data(), labels.data(), mask.data(), lossGradPtr,
          &wantLoss, gradPtr, cpuScratch.data(), c.n, c.v, c.k, c.blockRows);
    else
      bitloom_uk_linear_cross_entropy(
          x.data(), wf.data(), labels.data(), mask.data(), lossGradPtr,
          &wantLoss, gradPtr, cpuScratch.data(), c.n, c.v, c.k, c.blockRows);

    // The GPU's: buffers x, w, labels, mask, [lossGrad], loss, [xGrad],
    // scratch (garbage in the outputs and the scratch at first).
    std::vector<HarnessBuffer> buffers = {
        {memref({c.n, c.k}, "f32"), toBytes(x)},
        c.bf16 ? HarnessBuffer{memref({c.v, c.k}, "bf16"), toBytes(wb)}
               : HarnessBuffer{memref({c.v, c.k}, "f32"), toBytes(wf)},
        {memref({c.n}, "i32"), toBytes(labels)},
        {memref({c.n}, "f32"), toBytes(mask)}};
    std::vector<float> junkLoss = {123.0f};
    if (c.training)
      buffers.push_back({"memref<f32>", toBytes(std::vector<float>{lossGrad})});
    unsigned lossIndex = buffers.size();
    buffers.push_back({"memref<f32>", toBytes(junkLoss)});
    unsigned gradIndex = buffers.size();
    if (c.training)
      buffers.push_back({memref({c.n, c.k}, "f32"),
                         toBytes(std::vector<float>(c.n * c.k, 9.0f))});
    buffers.push_back({memref({c.blockRows, c.v}, "f32"),
                       toBytes(std::vector<float>(c.blockRows * c.v, -5.0f))});
    std::vector<HarnessOperand> operands;
    for (unsigned i = 0; i < buffers.size(); ++i)
      operands.push_back(HarnessOperand::buffer(i));
    for (int64_t s : {c.n, c.v, c.k, c.blockRows})
      operands.push_back(HarnessOperand::i64(s));
    std::string callee = std::string("bitloom_uk_linear_cross_entropy") +
                         (c.bf16 ? "_bf16w" : "") + (c.training ? "" : "_loss");
    HarnessResult r = harness->run(callee, buffers, operands, target);
    ASSERT_TRUE(r.ok) << r.error;

    float gotLoss = fromBytes<float>(r.buffers[lossIndex])[0];
    if (wantLoss == 0.0f)
      EXPECT_EQ(gotLoss, 0.0f);
    else
      EXPECT_NEAR(gotLoss, wantLoss, 1e-5 * std::fabs(wantLoss));
    if (!c.training)
      return;
    std::vector<float> gotGrad = fromBytes<float>(r.buffers[gradIndex]);
    if (std::all_of(wantGrad.begin(), wantGrad.end(),
                    [](float g) { return g == 0.0f; })) {
      for (float g : gotGrad)
        ASSERT_EQ(g, 0.0f) << "xGrad must be 0 without masked-in rows";
      return;
    }
    expectClose(gotGrad, wantGrad, 1e-4, "xGrad");
  }

  std::mt19937 rng{777};
};

TEST_F(CrossEntropyKernelsTest, TrainingF32) {
  for (auto target : {device(), generic()}) {
    check({13, 300, 40, 5, false, true}, target);  // 5 does not divide 13
    check({12, 300, 40, 4, false, true}, target);  // 4 divides 12
    check({13, 300, 40, 13, false, true}, target); // one block
  }
}

TEST_F(CrossEntropyKernelsTest, TrainingBf16) {
  for (auto target : {device(), generic()}) {
    check({13, 300, 40, 5, true, true}, target);
    check({12, 258, 34, 4, true, true}, target);
  }
}

TEST_F(CrossEntropyKernelsTest, LossOnly) {
  for (auto target : {device(), generic()}) {
    check({13, 300, 40, 5, false, false}, target);
    check({12, 300, 40, 4, false, false}, target);
    check({13, 300, 40, 5, true, false}, target);
    check({12, 258, 34, 12, true, false}, target);
  }
}

TEST_F(CrossEntropyKernelsTest, Masks) {
  for (bool training : {true, false})
    for (bool bf16 : {false, true}) {
      check({13, 300, 40, 5, bf16, training, MaskKind::AllZero}, device());
      check({13, 300, 40, 5, bf16, training, MaskKind::AllOne}, device());
      check({13, 300, 40, 5, bf16, training, MaskKind::FirstBlockOut},
            device());
    }
}

TEST_F(CrossEntropyKernelsTest, LabelsOutsideTheVocabulary) {
  check({13, 300, 40, 5, false, true, MaskKind::Holes, true}, device());
  check({13, 300, 40, 5, false, false, MaskKind::Holes, true}, device());
}

// Several GEMM tiles in every dimension, with partial ones.
TEST_F(CrossEntropyKernelsTest, LargerShapes) {
  check({150, 1100, 136, 64, false, true}, device());
  check({150, 1100, 136, 64, true, true}, device());
  check({150, 1100, 136, 150, true, false}, generic());
}

/// Sets an environment variable for one scope.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name(name) {
    setenv(name, value, 1);
  }
  ~ScopedEnv() { unsetenv(name); }

private:
  const char *name;
};

// Both products with K split over thread groups (their partial tiles added
// in shared memory at the end), partial tiles in every dimension.
TEST_F(CrossEntropyKernelsTest, SplitK) {
  ScopedEnv logits("BITLOOM_VULKAN_CE_LOGITS_TILE", "32,64,8,16,4");
  ScopedEnv xgrad("BITLOOM_VULKAN_CE_XGRAD_TILE", "16,32,8,16,8");
  for (auto target : {device(), generic()}) {
    check({70, 1100, 136, 32, false, true}, target);
    check({70, 1100, 136, 32, true, true}, target);
  }
}

TEST_F(CrossEntropyKernelsTest, RejectsOddBf16Rows) {
  CrossEntropyCase c{4, 16, 7, 4, true, false};
  std::vector<HarnessBuffer> buffers = {
      {memref({c.n, c.k}, "f32"), {}},
      {memref({c.v, c.k}, "bf16"), {}},
      {memref({c.n}, "i32"), {}},
      {memref({c.n}, "f32"), {}},
      {"memref<f32>", {}},
      {memref({c.blockRows, c.v}, "f32"), {}}};
  std::vector<HarnessOperand> operands;
  for (unsigned i = 0; i < buffers.size(); ++i)
    operands.push_back(HarnessOperand::buffer(i));
  for (int64_t s : {c.n, c.v, c.k, c.blockRows})
    operands.push_back(HarnessOperand::i64(s));
  HarnessResult r = harness->run("bitloom_uk_linear_cross_entropy_bf16w_loss",
                                 buffers, operands, device());
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("is odd"), std::string::npos) << r.error;
}

} // namespace

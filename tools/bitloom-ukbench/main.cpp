//===- main.cpp - bitloom-ukbench: GFLOP/s of the CPU ukernels ------------===//
//
// Times each ukernel at the shapes one training step of a small BitNet model
// (hidden 768, ffn 2048, vocab 32000, LoRA rank 16) runs at 128 tokens, for
// each thread count, and prints a table. A multiply-add counts as two
// operations, the ternary forward's int8 ones included.
//
//   bitloom-ukbench [--threads 1,2] [--isa avx512] [--min-time 0.5]
//
// The lce_* rows time the bf16 LM head with the loss and its input gradient:
// bitloom_uk_linear_cross_entropy_bf16w against the unfused composition
// (GEMM, the generated code's cross-entropy and gradient passes, GEMM).
//
//===----------------------------------------------------------------------===//
#include "ukernels/Internal.h"
#include "ukernels/Ukernels.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace bitloom::uk;

namespace {

struct Case {
  std::string kernel;
  int64_t m, n, k;
  int transA = 0, transB = 0;
  int64_t blockRows = 0; // lce_fused_*: rows per block
};

/// Best time of one call in seconds, over repetitions filling `minTime`.
double timeIt(const std::function<void()> &fn, double minTime) {
  using Clock = std::chrono::steady_clock;
  fn(); // warm up caches, scratch buffers and the pool
  double best = 1e30, total = 0;
  for (int reps = 0; reps < 3 || total < minTime; ++reps) {
    auto start = Clock::now();
    fn();
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::min(best, s);
    total += s;
  }
  return best;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"bitloom-ukbench: GFLOP/s of the CPU ukernels"};
  std::vector<int32_t> threadCounts = {1, 2};
  std::string isaFlag;
  double minTime = 0.5;
  app.add_option("--threads", threadCounts, "Thread counts to measure")
      ->delimiter(',');
  app.add_option("--isa", isaFlag,
                 "Force an ISA (scalar, avx2, avx512, neon, neon-dotprod)");
  app.add_option("--min-time", minTime, "Seconds to repeat each case for");
  CLI11_PARSE(app, argc, argv);

  if (!isaFlag.empty()) {
    bool found = false;
    for (Isa isa : availableIsas())
      if (isaFlag == isaName(isa))
        found = forceIsa(isa);
    if (!found) {
      std::fprintf(stderr, "error: ISA '%s' is not available here\n",
                   isaFlag.c_str());
      return 1;
    }
  }

  const std::vector<Case> cases = {
      {"ternary_matmul", 128, 2048, 768},
      {"ternary_matmul", 128, 768, 2048},
      {"ternary_matmul", 128, 768, 768},
      {"ternary_matmul_t", 128, 2048, 768},
      {"ternary_matmul_t", 128, 768, 2048},
      {"ternary_matmul_t", 128, 768, 768},
      {"matmul_f32", 128, 32000, 768, 0, 1},
      {"matmul_f32", 128, 768, 32000, 0, 0},
      {"matmul_f32", 768, 32000, 128, 1, 0},
      // LoRA (rank 16) products: small enough that waking the pool matters.
      {"matmul_f32", 128, 16, 768, 0, 1},
      {"matmul_f32", 128, 768, 16, 0, 1},
      // The bf16 LM head with the loss and input gradient (m rows, n vocab,
      // k hidden), fused in blocks of 128 rows (16 MiB, the pass's default
      // budget) and 32, and as the unfused GEMM → cross-entropy → gradient →
      // GEMM (full logits).
      {"lce_fused_bf16", 128, 32000, 768, 0, 0, 128},
      {"lce_fused_bf16", 128, 32000, 768, 0, 0, 32},
      {"lce_unfused_bf16", 128, 32000, 768},
  };

  std::mt19937 rng(1);
  std::printf("isa: %s\n", isaName(activeIsa()));
  std::printf("%-17s %5s %6s %6s %6s %7s %10s %9s\n", "kernel", "m", "n", "k",
              "trans", "threads", "ms", "GFLOP/s");
  for (const Case &c : cases) {
    std::function<void()> fn;
    std::vector<int8_t> xq, w;
    std::vector<uint8_t> packed;
    std::vector<float> a, b, out, factor;
    auto randomFloats = [&](int64_t count) {
      std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
      std::vector<float> v(static_cast<size_t>(count));
      for (float &x : v)
        x = dist(rng);
      return v;
    };
    std::vector<uint16_t> wBf16;
    std::vector<int32_t> labels;
    std::vector<float> mask, logits;
    float loss = 0, dloss = 1.0f;
    bool lce = c.kernel.rfind("lce_", 0) == 0;
    if (lce) {
      a = randomFloats(c.m * c.k);
      std::vector<float> wf = randomFloats(c.n * c.k);
      wBf16.resize(wf.size());
      for (size_t i = 0; i < wf.size(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, &wf[i], 4);
        wBf16[i] = uint16_t(bits >> 16);
      }
      std::uniform_int_distribution<int32_t> label(0, int32_t(c.n - 1));
      for (int64_t i = 0; i < c.m; ++i) {
        labels.push_back(label(rng));
        mask.push_back(i % 8 == 0 ? 0.0f : 1.0f);
      }
      out.resize(size_t(c.m * c.k));
    }
    if (c.kernel == "lce_fused_bf16") {
      int64_t blockRows = c.blockRows;
      logits.resize(size_t(blockRows * c.n));
      fn = [&, blockRows] {
        bitloom_uk_linear_cross_entropy_bf16w(
            a.data(), wBf16.data(), labels.data(), mask.data(), &dloss, &loss,
            out.data(), logits.data(), c.m, c.n, c.k, blockRows);
      };
    } else if (c.kernel == "lce_unfused_bf16") {
      logits.resize(size_t(c.m * c.n));
      b.resize(size_t(c.m * c.n)); // dlogits
      fn = [&] {
        int64_t m = c.m, n = c.n;
        bitloom_uk_matmul_f32_bf16b(a.data(), wBf16.data(), logits.data(), m, n,
                                    c.k, 0, 1, 0);
        // The generated loops' passes: max, Σ exp, loss; then the gradient
        // recomputes max and Σ exp and writes a separate [m, n] tensor.
        double total = 0, count = 0;
        for (int pass = 0; pass < 2; ++pass)
          for (int64_t i = 0; i < m; ++i) {
            const float *l = logits.data() + i * n;
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; ++j)
              mx = std::max(mx, l[j]);
            double sum = 0;
            for (int64_t j = 0; j < n; ++j)
              sum += double(std::exp(l[j] - mx));
            float logSum = std::log(float(sum));
            if (pass == 0) {
              if (mask[size_t(i)] != 0.0f) {
                total -= double((l[labels[size_t(i)]] - mx) - logSum);
                count += 1;
              }
              continue;
            }
            float g = dloss / float(count);
            float *d = b.data() + i * n;
            for (int64_t j = 0; j < n; ++j) {
              float p = std::exp((l[j] - mx) - logSum);
              d[j] = mask[size_t(i)] == 0.0f
                         ? 0.0f
                         : g * (p - (j == labels[size_t(i)] ? 1.0f : 0.0f));
            }
          }
        loss = float(total / count);
        bitloom_uk_matmul_f32_bf16b(b.data(), wBf16.data(), out.data(), m, c.k,
                                    n, 0, 0, 0);
      };
    }
    if (!lce && c.kernel != "matmul_f32") {
      std::uniform_int_distribution<int> tern(-1, 1), byte(-128, 127);
      w.resize(size_t(c.n * c.k));
      for (int8_t &v : w)
        v = int8_t(tern(rng));
      packed.resize(size_t(c.n * bitloom_uk_packed_row_bytes(c.k)));
      bitloom_uk_pack_ternary(w.data(), c.n, c.k, packed.data());
    }
    if (c.kernel == "ternary_matmul") {
      std::uniform_int_distribution<int> byte(-128, 127);
      xq.resize(size_t(c.m * c.k));
      for (int8_t &v : xq)
        v = int8_t(byte(rng));
      factor = randomFloats(c.m);
      out.resize(size_t(c.m * c.n));
      fn = [&] {
        bitloom_uk_ternary_matmul(xq.data(), packed.data(), factor.data(),
                                  out.data(), c.m, c.n, c.k);
      };
    } else if (c.kernel == "ternary_matmul_t") {
      a = randomFloats(c.m * c.n);
      out.resize(size_t(c.m * c.k));
      fn = [&] {
        bitloom_uk_ternary_matmul_t(a.data(), packed.data(), 0.5f, out.data(),
                                    c.m, c.n, c.k);
      };
    } else if (!lce) {
      a = randomFloats(c.m * c.k);
      b = randomFloats(c.k * c.n);
      out.resize(size_t(c.m * c.n));
      fn = [&] {
        bitloom_uk_matmul_f32(a.data(), b.data(), out.data(), c.m, c.n, c.k,
                              c.transA, c.transB, 0);
      };
    }
    std::string trans =
        c.kernel == "matmul_f32"
            ? std::string(c.transA ? "T" : "N") + (c.transB ? "T" : "N")
        : c.blockRows ? "R" + std::to_string(c.blockRows)
                      : "-";
    for (int32_t threads : threadCounts) {
      bitloom_uk_set_threads(threads);
      double s = timeIt(fn, minTime);
      // The LM-head cases run two products.
      double gflops =
          (lce ? 4.0 : 2.0) * double(c.m) * double(c.n) * double(c.k) / s / 1e9;
      std::printf("%-17s %5lld %6lld %6lld %6s %7d %10.3f %9.1f\n",
                  c.kernel.c_str(), (long long)c.m, (long long)c.n,
                  (long long)c.k, trans.c_str(), threads, s * 1e3, gflops);
      std::fflush(stdout);
    }
  }
  bitloom_uk_set_threads(1);
  return 0;
}

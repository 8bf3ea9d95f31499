// Runs the float reference kernels on deterministic random inputs and writes
// inputs and outputs to a directory, for kernels_vs_torch.py to recompute with
// PyTorch (HF BitNet / PEFT / torch.optim code) and compare.
//
// Output: <dir>/manifest.txt with one line per entry,
//   tensor <name> <f32|i32> <rank> <dims...>   (data in <dir>/<name>.bin,
//                                               little-endian, row-major)
//   scalar <name> <value>
#include "codegen/reference/Kernels.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace ref = bitloom::reference;

namespace {

class Dump {
public:
  explicit Dump(std::string dir)
      : dir_(std::move(dir)), manifest_(dir_ + "/manifest.txt") {
    if (!manifest_)
      throw std::runtime_error("cannot write " + dir_ + "/manifest.txt");
  }

  template <typename E>
  void tensor(const std::string &name, const std::vector<E> &data,
              std::vector<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims)
      n *= d;
    if (n != static_cast<int64_t>(data.size()))
      throw std::runtime_error("shape mismatch for " + name);
    manifest_ << "tensor " << name << ' '
              << (std::is_same_v<E, float> ? "f32" : "i32") << ' '
              << dims.size();
    for (int64_t d : dims)
      manifest_ << ' ' << d;
    manifest_ << '\n';
    std::ofstream out(dir_ + "/" + name + ".bin", std::ios::binary);
    out.write(reinterpret_cast<const char *>(data.data()),
              static_cast<std::streamsize>(data.size() * sizeof(E)));
  }

  void scalar(const std::string &name, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    manifest_ << "scalar " << name << ' ' << buf << '\n';
  }

private:
  std::string dir_;
  std::ofstream manifest_;
};

std::mt19937 rng(20240607);

std::vector<float> randn(size_t n, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float &e : v)
    e = dist(rng);
  return v;
}

using FV = std::vector<float>;

void quantizers(Dump &d) {
  const int64_t N = 6, I = 64, O = 16;
  FV x = randn(N * I, 3.0f), W = randn(O * I, 0.02f);
  FV xq(N * I), wq(O * I);
  ref::quantizeActivations(x.data(), N, I, true, xq.data());
  ref::quantizeWeightOnline(W.data(), O, I, true, wq.data());
  d.tensor("qa_x", x, {N, I});
  d.tensor("qa_out", xq, {N, I});
  d.tensor("qw_w", W, {O, I});
  d.tensor("qw_out", wq, {O, I});
  // Full online AutoBitLinear + LoRA: forward and STE / LoRA gradients.
  const int64_t R = 4;
  const double scaling = 8.0 / R;
  FV A = randn(R * I, 0.1f), B = randn(O * R, 0.1f), dy = randn(N * O);
  FV base(N * O), y(N * O), dx(N * I), dW(O * I), dA(R * I), dB(O * R);
  ref::bitlinear(xq.data(), wq.data(), N, I, O, base.data());
  ref::lora(base.data(), x.data(), A.data(), B.data(), N, I, O, R, scaling,
            y.data());
  ref::bitlinearGradInput(dy.data(), wq.data(), N, I, O, dx.data());
  ref::loraGradInputAccumulate(dy.data(), A.data(), B.data(), N, I, O, R,
                               scaling, dx.data());
  ref::bitlinearGradWeight(dy.data(), xq.data(), N, I, O, dW.data());
  ref::loraGradParams(dy.data(), x.data(), A.data(), B.data(), N, I, O, R,
                      scaling, dA.data(), dB.data());
  d.scalar("lora_scaling", scaling);
  d.tensor("lora_A", A, {R, I});
  d.tensor("lora_B", B, {O, R});
  d.tensor("bl_dy", dy, {N, O});
  d.tensor("bl_y", y, {N, O});
  d.tensor("bl_dx", dx, {N, I});
  d.tensor("bl_dW", dW, {O, I});
  d.tensor("lora_dA", dA, {R, I});
  d.tensor("lora_dB", dB, {O, R});
}

void rmsNorm(Dump &d) {
  const int64_t N = 6, C = 96;
  const double eps = 1e-5;
  FV x = randn(N * C, 2.0f), w = randn(C, 0.3f), dy = randn(N * C);
  for (float &e : w)
    e += 1.0f;
  FV y(N * C), dx(N * C), dw(C);
  ref::rmsNorm(x.data(), w.data(), N, C, eps, y.data());
  ref::rmsNormGradInput(dy.data(), x.data(), w.data(), N, C, eps, dx.data());
  ref::rmsNormGradWeight(dy.data(), x.data(), N, C, eps, dw.data());
  d.scalar("rms_eps", eps);
  d.tensor("rms_x", x, {N, C});
  d.tensor("rms_w", w, {C});
  d.tensor("rms_dy", dy, {N, C});
  d.tensor("rms_y", y, {N, C});
  d.tensor("rms_dx", dx, {N, C});
  d.tensor("rms_dw", dw, {C});
}

void rope(Dump &d) {
  const int64_t B = 2, T = 7, H = 3, D = 16;
  const double theta = 500000.0;
  std::vector<int32_t> pos = {0,   1,   2,   3,    4,    5,    6,
                              100, 101, 517, 1023, 2048, 3999, 4095};
  FV x = randn(B * T * H * D), y(x.size()), yi(x.size());
  ref::rope(x.data(), pos.data(), B, T, H, D, theta, false, y.data());
  ref::rope(x.data(), pos.data(), B, T, H, D, theta, true, yi.data());
  d.scalar("rope_theta", theta);
  d.tensor("rope_pos", pos, {B, T});
  d.tensor("rope_x", x, {B, T, H * D});
  d.tensor("rope_y", y, {B, T, H * D});
  d.tensor("rope_yinv", yi, {B, T, H * D});
}

void attention(Dump &d) {
  const int64_t B = 2, T = 7, S = 7, Hq = 4, Hkv = 2, D = 8;
  const double scale = std::pow(static_cast<double>(D), -0.5);
  FV q = randn(B * T * Hq * D), k = randn(B * S * Hkv * D),
     v = randn(B * S * Hkv * D), dout = randn(B * T * Hq * D);
  FV out(q.size()), dq(q.size()), dk(k.size()), dv(v.size());
  ref::attention(q.data(), k.data(), v.data(), B, T, S, Hq, Hkv, D, scale, true,
                 out.data());
  ref::attentionGrad(dout.data(), q.data(), k.data(), v.data(), B, T, S, Hq,
                     Hkv, D, scale, true, dq.data(), dk.data(), dv.data());
  d.scalar("attn_heads", Hq);
  d.scalar("attn_kv_heads", Hkv);
  d.scalar("attn_head_dim", D);
  d.tensor("attn_q", q, {B, T, Hq * D});
  d.tensor("attn_k", k, {B, S, Hkv * D});
  d.tensor("attn_v", v, {B, S, Hkv * D});
  d.tensor("attn_dout", dout, {B, T, Hq * D});
  d.tensor("attn_out", out, {B, T, Hq * D});
  d.tensor("attn_dq", dq, {B, T, Hq * D});
  d.tensor("attn_dk", dk, {B, S, Hkv * D});
  d.tensor("attn_dv", dv, {B, S, Hkv * D});
}

void crossEntropy(Dump &d) {
  const int64_t N = 9, V = 50;
  FV logits = randn(N * V, 2.0f);
  std::vector<int32_t> labels = {3, -100, 49, 0, 17, -100, 8, 8, 21};
  FV mask = {1, 0, 1, 1, 1, 0, 1, 1, 1};
  int64_t count = 0;
  float loss = ref::crossEntropy(logits.data(), labels.data(), mask.data(), N,
                                 V, &count);
  FV dl(N * V);
  ref::crossEntropyGrad(logits.data(), labels.data(), mask.data(), N, V, 1.0,
                        dl.data());
  d.tensor("ce_logits", logits, {N, V});
  d.tensor("ce_labels", labels, {N});
  d.tensor("ce_loss", FV{loss}, {1});
  d.tensor("ce_dlogits", dl, {N, V});
  d.scalar("ce_count", static_cast<double>(count));
}

void optimizers(Dump &d) {
  const int64_t n = 33;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  FV p0 = randn(n), p = p0, m(n, 0.0f), v(n, 0.0f);
  FV ps = p0, buf(n, 0.0f);
  d.tensor("opt_p0", p0, {n});
  for (int step = 1; step <= 3; ++step) {
    FV g = randn(n, 0.5f);
    ref::adamw(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd,
               step);
    ref::sgd(ps.data(), g.data(), buf.data(), n, 0.05, 0.9, 0.1, step == 1);
    const std::string s = std::to_string(step);
    d.tensor("opt_g" + s, g, {n});
    d.tensor("adamw_p" + s, p, {n});
    d.tensor("adamw_m" + s, m, {n});
    d.tensor("adamw_v" + s, v, {n});
    d.tensor("sgd_p" + s, ps, {n});
  }
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " <output-dir>\n";
    return 2;
  }
  try {
    Dump d(argv[1]);
    quantizers(d);
    rmsNorm(d);
    rope(d);
    attention(d);
    crossEntropy(d);
    optimizers(d);
  } catch (const std::exception &e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
  return 0;
}

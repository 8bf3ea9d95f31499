//===- AdapterTest.cpp - PEFT and llama.cpp GGUF LoRA export/import -------===//

#include "TrainerTestUtil.h"

#include "formats/Gguf.h"
#include "formats/Safetensors.h"
#include "model/Model.h"
#include "trainer/Adapter.h"
#include "trainer/Dataset.h"

#include <cmath>

using namespace bitloom;
using namespace bitloom::trainer;

namespace {

std::string errorOf(const std::function<void()> &f) {
  try {
    f();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

// The tiny preset's shape (make-model): hidden 64, ffn 160, 2 layers, 4
// heads of 16, 2 kv heads.
ModelConfig tinyConfig() {
  ModelConfig c;
  c.vocabSize = 512;
  c.hiddenSize = 64;
  c.intermediateSize = 160;
  c.numLayers = 2;
  c.numHeads = 4;
  c.numKvHeads = 2;
  c.headDim = 16;
  c.maxPositionEmbeddings = 256;
  return c;
}

LoraConfig lora(std::vector<std::string> targets, int64_t rank = 4) {
  LoraConfig l;
  l.rank = rank;
  l.alpha = 16;
  l.dropout = 0.05;
  l.targets = std::move(targets);
  l.baseModel = "microsoft/bitnet-b1.58-2B-4T-bf16";
  return l;
}

TensorMap randomAdapter(const ModelConfig &m, const LoraConfig &l,
                        uint64_t seed) {
  TensorMap t;
  SplitMix64 rng(seed);
  for (const LoraTensorSpec &s : loraTensorSpecs(m, l)) {
    FloatTensor f;
    f.shape = s.shape;
    f.data.resize(size_t(f.numElements()));
    for (float &v : f.data)
      v = float(double(rng.next() >> 11) / double(1ull << 53) - 0.5);
    t[s.name] = std::move(f);
  }
  return t;
}

void expectTensorsNear(const TensorMap &a, const TensorMap &b, float tol) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto &[n, t] : a) {
    ASSERT_TRUE(b.count(n)) << n;
    EXPECT_EQ(t.shape, b.at(n).shape) << n;
    ASSERT_EQ(t.data.size(), b.at(n).data.size());
    for (size_t i = 0; i < t.data.size(); ++i)
      if (std::fabs(t.data[i] - b.at(n).data[i]) >
          tol * std::fabs(t.data[i]) + 1e-7f) {
        ADD_FAILURE() << n << "[" << i << "] " << t.data[i] << " vs "
                      << b.at(n).data[i];
        return;
      }
  }
}

} // namespace

TEST(Adapter, TargetsAndNames) {
  EXPECT_EQ(normalizeLoraTargets({"v_proj", "q", "mlp.down_proj", "q_proj"}),
            (std::vector<std::string>{"q", "v", "down"}));
  EXPECT_EQ(normalizeLoraTargets({"all-linear"}).size(), 7u);
  EXPECT_EQ(normalizeLoraTargets({"ffn", "attn_q"}),
            (std::vector<std::string>{"q", "gate", "up", "down"}));
  EXPECT_EQ(errorOf([] { normalizeLoraTargets({"lm_head"}, "c.json"); }),
            "c.json: target_modules: unknown LoRA target \"lm_head\" (use q k "
            "v o gate up down, their PEFT names q_proj ... down_proj, attn, "
            "ffn or all)");
  const ProjectionName &o = projectionNames()[3];
  EXPECT_EQ(peftLoraName(7, o, true),
            "base_model.model.model.layers.7.self_attn.o_proj.lora_A.weight");
  EXPECT_EQ(ggufLoraName(7, o, false), "blk.7.attn_output.weight.lora_b");

  auto specs = loraTensorSpecs(tinyConfig(), lora({"q", "k", "o", "down"}, 8));
  ASSERT_EQ(specs.size(), 2u * 4u * 2u);
  EXPECT_EQ(specs[0].shape, (std::vector<int64_t>{8, 64}));  // q A [r, in]
  EXPECT_EQ(specs[1].shape, (std::vector<int64_t>{64, 8}));  // q B [out, r]
  EXPECT_EQ(specs[3].shape, (std::vector<int64_t>{32, 8}));  // k B: kv 2 x 16
  EXPECT_EQ(specs[6].shape, (std::vector<int64_t>{8, 160})); // down A
  EXPECT_EQ(specs[7].shape, (std::vector<int64_t>{64, 8}));
}

TEST(Adapter, PeftRoundTrip) {
  test::TempDir dir;
  ModelConfig m = tinyConfig();
  LoraConfig l = lora({"q", "k", "v", "o", "gate", "up", "down"});
  TensorMap t = randomAdapter(m, l, 1);
  exportPeftAdapter(dir.file("peft"), l, t, m);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.file("peft")),
                          std::filesystem::directory_iterator()),
            2); // no temporary files left

  nlohmann::json cfg = test::readJson(dir.file("peft/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_TRUE(cfg["lora_alpha"].is_number_integer());
  EXPECT_EQ(cfg["lora_alpha"], 16);
  EXPECT_DOUBLE_EQ(cfg["lora_dropout"].get<double>(), 0.05);
  EXPECT_EQ(cfg["target_modules"],
            nlohmann::json({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                            "up_proj", "down_proj"}));
  EXPECT_EQ(cfg["bias"], "none");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["base_model_name_or_path"],
            "microsoft/bitnet-b1.58-2B-4T-bf16");
  EXPECT_EQ(cfg["fan_in_fan_out"], false);
  EXPECT_EQ(cfg["use_rslora"], false);

  SafetensorsFile st =
      SafetensorsFile::open(dir.file("peft/adapter_model.safetensors"));
  EXPECT_EQ(st.tensors().size(), 2u * 7u * 2u);
  EXPECT_EQ(st.metadata().at("format"), "pt");
  const SafetensorsTensor *a =
      st.find("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 160}));

  for (const ModelConfig *withModel :
       std::vector<const ModelConfig *>{&m, nullptr}) {
    LoadedAdapter back = importAdapter(dir.file("peft"), withModel);
    EXPECT_EQ(back.format, AdapterFormat::Peft);
    EXPECT_EQ(back.config.rank, 4);
    EXPECT_EQ(back.config.alpha, 16);
    EXPECT_EQ(back.config.targets, l.targets);
    EXPECT_EQ(back.config.baseModel, l.baseModel);
    expectTensorsNear(t, back.tensors, 0);
  }
  // adapter_config.json's own path works too.
  EXPECT_EQ(importAdapter(dir.file("peft/adapter_config.json")).tensors.size(),
            28u);

  // Half precision: rounding only.
  exportPeftAdapter(dir.file("peft16"), l, t, m, DType::F16);
  expectTensorsNear(t, importAdapter(dir.file("peft16"), &m).tensors, 1e-3f);
  exportPeftAdapter(dir.file("peftbf"), l, t, m, DType::BF16);
  expectTensorsNear(t, importAdapter(dir.file("peftbf"), &m).tensors, 8e-3f);
}

TEST(Adapter, GgufRoundTripAsConvertLoraToGgufWritesIt) {
  test::TempDir dir;
  ModelConfig m = tinyConfig();
  LoraConfig l = lora({"q", "v", "up"}, 8);
  l.alpha = 12.5;
  TensorMap t = randomAdapter(m, l, 2);
  exportGgufLoraAdapter(dir.file("lora.gguf"), l, t, m, DType::F32,
                        "tiny-lora");

  GgufFile g = GgufFile::open(dir.file("lora.gguf"));
  EXPECT_EQ(g.getString("general.architecture"), "bitnet");
  EXPECT_EQ(g.getString("general.type"), "adapter");
  EXPECT_EQ(g.getString("adapter.type"), "lora");
  EXPECT_EQ(g.find("adapter.lora.alpha")->type, GgufValueType::F32);
  EXPECT_DOUBLE_EQ(g.getFloat("adapter.lora.alpha"), 12.5);
  EXPECT_EQ(g.getString("general.name"), "tiny-lora");
  EXPECT_EQ(g.tensors().size(), 2u * 3u * 2u);
  const GgufTensor *a = g.findTensor("blk.1.attn_v.weight.lora_a");
  const GgufTensor *b = g.findTensor("blk.1.attn_v.weight.lora_b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  // ne {in, r} and {r, out}: what llama-adapter.cpp checks against the base
  // tensor blk.1.attn_v.weight's ne {64, 32}.
  EXPECT_EQ(a->dims, (std::vector<int64_t>{64, 8}));
  EXPECT_EQ(b->dims, (std::vector<int64_t>{8, 32}));
  EXPECT_EQ(a->type, uint32_t(GgmlType::F32));
  // The data is the PEFT matrix unchanged (row-major [r, in]).
  const float *ad = reinterpret_cast<const float *>(a->data);
  const FloatTensor &peftA =
      t.at("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight");
  EXPECT_TRUE(std::equal(peftA.data.begin(), peftA.data.end(), ad));

  LoadedAdapter back = importAdapter(dir.file("lora.gguf"), &m);
  EXPECT_EQ(back.format, AdapterFormat::Gguf);
  EXPECT_EQ(back.config.rank, 8);
  EXPECT_DOUBLE_EQ(back.config.alpha, 12.5);
  EXPECT_EQ(back.config.targets, l.targets);
  expectTensorsNear(t, back.tensors, 0);

  exportGgufLoraAdapter(dir.file("lora16.gguf"), l, t, m, DType::F16);
  GgufFile g16 = GgufFile::open(dir.file("lora16.gguf"));
  EXPECT_EQ(g16.tensors()[0].type, uint32_t(GgmlType::F16));
  EXPECT_EQ(g16.getUInt("general.file_type"), 1u);
  expectTensorsNear(t, importAdapter(dir.file("lora16.gguf")).tensors, 1e-3f);

  // PEFT -> GGUF -> PEFT keeps everything a PEFT adapter says (but dropout,
  // which GGUF has no key for).
  exportPeftAdapter(dir.file("peft"), back.config, back.tensors, m);
  LoadedAdapter again = importAdapter(dir.file("peft"), &m);
  expectTensorsNear(t, again.tensors, 0);
  EXPECT_EQ(errorOf([&] {
              exportGgufLoraAdapter(dir.file("x.gguf"), l, t, m, DType::BF16);
            }),
            dir.file("x.gguf") + ": dtype: llama.cpp LoRA adapters are F32 or "
                                 "F16, not BF16");
}

TEST(Adapter, ValidationNamesTheTensorAndTheShapes) {
  test::TempDir dir;
  ModelConfig m = tinyConfig();
  LoraConfig l = lora({"q", "down"});
  TensorMap t = randomAdapter(m, l, 3);
  const std::string qA =
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  TensorMap wrong = t;
  wrong[qA].shape = {8, 32};
  EXPECT_EQ(errorOf([&] { validateAdapter(l, wrong, m, "adapter"); }),
            "adapter: " + qA +
                ": shape [8, 32] but rank 4 and the model's self_attn.q_proj "
                "[64, 64] need [4, 64] (A is [r, in])");
  TensorMap missing = t;
  missing.erase(qA);
  EXPECT_EQ(errorOf([&] { validateAdapter(l, missing, m, "adapter"); }),
            "adapter: " + qA + ": missing");
  TensorMap extra = t;
  extra["base_model.model.model.layers.2.mlp.down_proj.lora_A.weight"] =
      t.at("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
  EXPECT_EQ(errorOf([&] { validateAdapter(l, extra, m, "adapter"); }),
            "adapter: base_model.model.model.layers.2.mlp.down_proj.lora_A."
            "weight: not a LoRA tensor of this model and configuration (2 "
            "layers, targets q,down)");
  EXPECT_NE(errorOf([&] { exportPeftAdapter(dir.file("p"), l, wrong, m); }),
            "");
  EXPECT_FALSE(std::filesystem::exists(dir.file("p/adapter_config.json")));

  // An adapter of a different model is refused at import.
  exportPeftAdapter(dir.file("p"), l, t, m);
  ModelConfig bigger = m;
  bigger.hiddenSize = 128;
  bigger.headDim = 32;
  EXPECT_NE(errorOf([&] { importAdapter(dir.file("p"), &bigger); })
                .find(": shape [4, 64] but rank 4 and the model's "
                      "self_attn.q_proj [128, 128] need [4, 128]"),
            std::string::npos);
}

TEST(Adapter, ImportRefusesWhatItCannotRepresent) {
  test::TempDir dir;
  ModelConfig m = tinyConfig();
  LoraConfig l = lora({"q"});
  TensorMap t = randomAdapter(m, l, 4);
  exportPeftAdapter(dir.file("p"), l, t, m);
  const std::string cfgPath = dir.file("p/adapter_config.json");
  nlohmann::json cfg = test::readJson(cfgPath);
  auto withConfig = [&](const std::function<void(nlohmann::json &)> &edit) {
    nlohmann::json c = cfg;
    edit(c);
    test::writeText(cfgPath, c.dump());
    return errorOf([&] { importAdapter(dir.file("p"), &m); });
  };
  EXPECT_EQ(withConfig([](nlohmann::json &c) { c["use_rslora"] = true; }),
            cfgPath + ": use_rslora: rank-stabilized LoRA is not supported");
  EXPECT_EQ(withConfig([](nlohmann::json &c) { c["use_dora"] = true; }),
            cfgPath + ": use_dora: DoRA is not supported");
  EXPECT_EQ(withConfig([](nlohmann::json &c) { c["peft_type"] = "IA3"; }),
            cfgPath + ": peft_type: must be \"LORA\"");
  EXPECT_EQ(withConfig(
                [](nlohmann::json &c) { c["target_modules"] = ".*\\.q_proj"; }),
            cfgPath + ": target_modules: unknown LoRA target \".*\\.q_proj\" "
                      "(use q k v o gate up down, their PEFT names q_proj ... "
                      "down_proj, attn, ffn or all)");
  EXPECT_EQ(withConfig([](nlohmann::json &c) { c["r"] = 8; }),
            dir.file("p/adapter_model.safetensors") +
                ": base_model.model.model.layers.0.self_attn.q_proj.lora_A."
                "weight: shape [4, 64] but rank 8 and the model's "
                "self_attn.q_proj [64, 64] need [8, 64] (A is [r, in])");
  test::writeText(cfgPath, cfg.dump());

  // GGUF files that are not bitnet LoRA adapters.
  auto gguf = [&](const std::function<void(GgufWriter &)> &edit) {
    GgufWriter w;
    w.set("general.architecture", GgufValue::string("bitnet"));
    w.set("general.type", GgufValue::string("adapter"));
    w.set("adapter.type", GgufValue::string("lora"));
    edit(w);
    w.write(dir.file("x.gguf"));
    return errorOf([&] { importAdapter(dir.file("x.gguf")); });
  };
  EXPECT_EQ(gguf([](GgufWriter &w) {
              w.set("general.type", GgufValue::string("model"));
            }),
            dir.file("x.gguf") + ": general.type: must be \"adapter\" (is "
                                 "this a model, not a LoRA?)");
  EXPECT_EQ(gguf([](GgufWriter &w) {
              w.set("general.architecture", GgufValue::string("llama"));
            }),
            dir.file("x.gguf") + ": general.architecture: \"llama\", but "
                                 "bitloom adapts \"bitnet\" models");
  static const float zeros[64 * 4] = {};
  EXPECT_EQ(gguf([](GgufWriter &w) {
              w.addTensor("blk.0.attn_q.weight.lora_a", 0, {64, 4}, zeros,
                          sizeof zeros);
            }),
            dir.file("x.gguf") + ": base_model.model.model.layers.0.self_attn."
                                 "q_proj.lora_B.weight: missing (its A/B "
                                 "partner is present)");
  EXPECT_EQ(gguf([](GgufWriter &w) {
              w.addTensor("blk.0.attn_norm.weight", 0, {64}, zeros, 256);
            }),
            dir.file("x.gguf") + ": blk.0.attn_norm.weight: not a LoRA tensor "
                                 "bitloom knows (expected "
                                 "blk.N.<attn_q|...|ffn_down>.weight.lora_a/"
                                 "lora_b)");
  // Without adapter.lora.alpha llama.cpp scales by 1: alpha = rank.
  std::string err = gguf([](GgufWriter &w) {
    w.addTensor("blk.0.attn_q.weight.lora_a", 0, {64, 4}, zeros, sizeof zeros);
    w.addTensor("blk.0.attn_q.weight.lora_b", 0, {4, 64}, zeros, sizeof zeros);
  });
  EXPECT_EQ(err, "");
  EXPECT_EQ(importAdapter(dir.file("x.gguf")).config.alpha, 4.0);

  EXPECT_EQ(errorOf([&] { importAdapter(dir.path()); }),
            dir.path() + ": a directory without adapter_config.json is not a "
                         "PEFT adapter");
  test::writeText(dir.file("junk.bin"), "nothing");
  EXPECT_EQ(errorOf([&] { importAdapter(dir.file("junk.bin")); }),
            dir.file("junk.bin") +
                ": neither a PEFT adapter directory nor a GGUF LoRA file");
}

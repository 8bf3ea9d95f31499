//===- ModelTest.cpp - make-model and Model::open -------------------------===//
//
// Every checkpoint here is written by makeModel, then opened with
// Model::open; the error tests damage one thing in a good checkpoint and
// check that the message names the file and the field or tensor.
//
//===----------------------------------------------------------------------===//
#include "model/Model.h"
#include "formats/DType.h"
#include "formats/Error.h"
#include "formats/Gguf.h"
#include "formats/MappedFile.h"
#include "formats/Safetensors.h"
#include "model/MakeModel.h"
#include "model/TernaryWeights.h"
#include "tokenizer/Tokenizer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <unistd.h>

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace bitloom;

namespace {

/// A fresh directory per test, removed afterwards.
class TempDir {
public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("bitloom-model-test-" + std::to_string(::getpid()) + "-" +
             std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path operator/(const std::string &name) const { return path_ / name; }
  const fs::path &path() const { return path_; }

private:
  fs::path path_;
};

std::string makeHf(const fs::path &dir, const std::string &preset = "tiny",
                   bool packed = false, uint64_t seed = 7) {
  MakeModelOptions o;
  o.preset = preset;
  o.format = CheckpointFormat::HuggingFace;
  o.packed = packed;
  o.seed = seed;
  makeModel(o, dir.string());
  return dir.string();
}

std::string makeGguf(const fs::path &file, const std::string &type,
                     const std::string &preset = "tiny", uint64_t seed = 7) {
  MakeModelOptions o;
  o.preset = preset;
  o.format = CheckpointFormat::Gguf;
  o.ggufProjectionType = type;
  o.seed = seed;
  makeModel(o, file.string());
  return file.string();
}

std::string readFile(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFile(const fs::path &p, const std::string &text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

json readJson(const fs::path &p) { return json::parse(readFile(p)); }
void writeJson(const fs::path &p, const json &j) { writeFile(p, j.dump(2)); }

/// Runs `f`, expects a FormatError, and returns its message.
std::string errorOf(const std::function<void()> &f) {
  try {
    f();
  } catch (const FormatError &e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a FormatError";
  return "";
}

#define EXPECT_CONTAINS(haystack, needle)                                      \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos)             \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

std::vector<float> values(const Model &m, const std::string &name) {
  const ModelTensor *t = m.find(name);
  EXPECT_NE(t, nullptr) << name;
  if (!t)
    return {};
  std::vector<float> v(t->numElements());
  m.dequantize(*t, v.data());
  return v;
}

float bf16Round(float x) { return bf16ToFloat(floatToBf16(x)); }
float f16Round(float x) { return halfToFloat(floatToHalf(x)); }

/// Rewrites a safetensors file through `edit`, which may change, drop or add
/// entries (`keep` owns any new bytes).
void rewriteSafetensors(
    const fs::path &path,
    const std::function<void(std::vector<SafetensorsEntry> &,
                             std::vector<std::vector<uint8_t>> &keep)> &edit) {
  SafetensorsFile f = SafetensorsFile::open(path.string());
  std::vector<SafetensorsEntry> entries;
  for (const SafetensorsTensor &t : f.tensors())
    entries.push_back({t.name, t.dtype, t.shape, t.data, t.byteSize});
  std::vector<std::vector<uint8_t>> keep;
  edit(entries, keep);
  writeSafetensors(path.string(), entries, f.metadata());
}

/// Rewrites a GGUF file: `editKv` may change metadata, `dropTensor` names a
/// tensor to leave out.
void rewriteGguf(const fs::path &path,
                 const std::function<void(GgufWriter &)> &editKv,
                 const std::string &dropTensor = "") {
  GgufFile f = GgufFile::open(path.string());
  GgufWriter w;
  for (const auto &kv : f.metadata())
    w.set(kv.first, kv.second);
  editKv(w);
  for (const GgufTensor &t : f.tensors())
    if (t.name != dropTensor)
      w.addTensor(t.name, t.type, t.dims, t.data, t.byteSize);
  w.write(path.string());
}

const char *kLayer0[] = {
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.self_attn.attn_sub_norm.weight",
    "model.layers.0.self_attn.o_proj.weight",
    "model.layers.0.post_attention_layernorm.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.ffn_sub_norm.weight",
    "model.layers.0.mlp.down_proj.weight",
};

} // namespace

//===----------------------------------------------------------------------===//
// Presets and options
//===----------------------------------------------------------------------===//

TEST(MakeModel, Presets) {
  ModelConfig t = presetConfig("tiny");
  EXPECT_EQ(t.vocabSize, 512);
  EXPECT_EQ(t.hiddenSize, 64);
  EXPECT_EQ(t.intermediateSize, 160);
  EXPECT_EQ(t.numLayers, 2);
  EXPECT_EQ(t.numHeads, 4);
  EXPECT_EQ(t.numKvHeads, 2);
  EXPECT_EQ(t.headDim, 16);
  EXPECT_EQ(t.maxPositionEmbeddings, 256);
  EXPECT_EQ(t.ropeTheta, 10000.0);
  ModelConfig s = presetConfig("small");
  EXPECT_EQ(s.vocabSize, 32000);
  EXPECT_EQ(s.hiddenSize, 768);
  EXPECT_EQ(s.numKvHeads, 4);
  EXPECT_EQ(s.ropeTheta, 500000.0);
  ModelConfig b = presetConfig("2b4t");
  EXPECT_EQ(b.vocabSize, 128256);
  EXPECT_EQ(b.hiddenSize, 2560);
  EXPECT_EQ(b.intermediateSize, 6912);
  EXPECT_EQ(b.numLayers, 30);
  EXPECT_EQ(b.numHeads, 20);
  EXPECT_EQ(b.numKvHeads, 5);
  EXPECT_EQ(b.headDim, 128);
  EXPECT_EQ(b.maxPositionEmbeddings, 4096);
  EXPECT_TRUE(b.tieWordEmbeddings);
  EXPECT_EQ(b.rmsNormEps, 1e-5);
  for (const char *name : {"tiny", "tiny256", "small", "2b4t"})
    EXPECT_NO_THROW(presetConfig(name).validate(name));
  EXPECT_CONTAINS(errorOf([] { presetConfig("huge"); }),
                  "--preset: unknown preset 'huge'");
}

TEST(MakeModel, OptionErrors) {
  TempDir dir;
  MakeModelOptions o;
  o.format = CheckpointFormat::Gguf;
  o.packed = true;
  EXPECT_CONTAINS(errorOf([&] { makeModel(o, (dir / "m.gguf").string()); }),
                  "--packed");
  o.packed = false;
  o.ggufProjectionType = "Q4_0";
  EXPECT_CONTAINS(errorOf([&] { makeModel(o, (dir / "m.gguf").string()); }),
                  "--gguf-type: unknown projection type 'Q4_0'");
}

TEST(MakeModel, Ternarize) {
  const float w[] = {0.3f, -0.1f, 0.05f, -0.6f, 0.0f, 0.15f};
  int8_t codes[6];
  float s = ternarizeAbsmean(w, 6, codes);
  EXPECT_FLOAT_EQ(s, 1.2f / 6);
  const int8_t want[] = {1, 0, 0, -1, 0, 1}; // 0.15 * 5 = 0.75 -> 1
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(codes[i], want[i]) << i;
  const float zeros[4] = {};
  EXPECT_FLOAT_EQ(ternarizeAbsmean(zeros, 4, codes), 1e-5f);
}

//===----------------------------------------------------------------------===//
// Hugging Face
//===----------------------------------------------------------------------===//

TEST(ModelHf, TinyBf16) {
  TempDir dir;
  std::string path = makeHf(dir / "tiny");
  for (const char *f : {"config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "generation_config.json"})
    EXPECT_TRUE(fs::is_regular_file(dir / "tiny" / f)) << f;

  json config = readJson(dir / "tiny" / "config.json");
  EXPECT_EQ(config["model_type"], "bitnet");
  EXPECT_EQ(config["architectures"][0], "BitNetForCausalLM");
  EXPECT_EQ(config["quantization_config"]["quantization_mode"], "online");
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  json tc = readJson(dir / "tiny" / "tokenizer_config.json");
  EXPECT_EQ(tc["bos_token"], "<|begin_of_text|>");
  EXPECT_EQ(tc["eos_token"], "<|eot_id|>");
  EXPECT_CONTAINS(tc["chat_template"].get<std::string>(),
                  "<|start_header_id|>");

  auto m = Model::open(path);
  EXPECT_EQ(m->format(), ModelFormat::HuggingFace);
  const ModelConfig &c = m->config();
  EXPECT_EQ(c.vocabSize, 512);
  EXPECT_EQ(c.hiddenSize, 64);
  EXPECT_EQ(c.intermediateSize, 160);
  EXPECT_EQ(c.numLayers, 2);
  EXPECT_EQ(c.numHeads, 4);
  EXPECT_EQ(c.numKvHeads, 2);
  EXPECT_EQ(c.headDim, 16);
  EXPECT_EQ(c.maxPositionEmbeddings, 256);
  EXPECT_EQ(c.ropeTheta, 10000.0);
  EXPECT_EQ(c.rmsNormEps, 1e-5);
  EXPECT_TRUE(c.tieWordEmbeddings);
  EXPECT_EQ(c.weightQuant, WeightQuant::Online);
  ASSERT_TRUE(c.bosTokenId && c.eosTokenId);
  EXPECT_EQ(*c.bosTokenId, config["bos_token_id"].get<int64_t>());
  EXPECT_EQ(*c.eosTokenId, config["eos_token_id"].get<int64_t>());

  const auto &ts = m->tensors();
  ASSERT_EQ(ts.size(), 1u + 2 * 11 + 1);
  EXPECT_EQ(ts[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(ts[0].shape, (std::vector<int64_t>{512, 64}));
  for (size_t i = 0; i < 11; ++i)
    EXPECT_EQ(ts[1 + i].name, kLayer0[i]);
  EXPECT_EQ(ts.back().name, "model.norm.weight");
  EXPECT_EQ(m->find("model.layers.0.self_attn.k_proj.weight")->shape,
            (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(m->find("model.layers.1.mlp.down_proj.weight")->shape,
            (std::vector<int64_t>{64, 160}));
  EXPECT_EQ(m->find("model.layers.1.mlp.ffn_sub_norm.weight")->shape,
            (std::vector<int64_t>{160}));
  EXPECT_EQ(m->find("lm_head.weight"), nullptr);
  for (const ModelTensor &t : ts) {
    EXPECT_EQ(t.dtype, DType::BF16) << t.name;
    EXPECT_EQ(t.packing, TensorPacking::Plain) << t.name;
    EXPECT_EQ(t.outputScale, 1.0f) << t.name;
    EXPECT_EQ(t.isProjection, t.name.find("_proj") != std::string::npos);
  }

  // Plausible init: weights ~N(0, 0.02), norms ~1.
  std::vector<float> q = values(*m, "model.layers.0.self_attn.q_proj.weight");
  double sum = 0, sq = 0;
  for (float v : q) {
    sum += v;
    sq += double(v) * v;
  }
  EXPECT_NEAR(sum / q.size(), 0.0, 0.002);
  EXPECT_NEAR(std::sqrt(sq / q.size()), 0.02, 0.002);
  for (float v : values(*m, "model.norm.weight"))
    EXPECT_NEAR(v, 1.0f, 0.1f);

  // Metadata carries the config for `inspect`.
  bool sawType = false;
  for (const auto &kv : m->metadata())
    sawType |= kv.first == "model_type" && kv.second == "bitnet";
  EXPECT_TRUE(sawType);
}

TEST(ModelHf, PackedMatchesTernarizedMaster) {
  TempDir dir;
  auto master = Model::open(makeHf(dir / "bf16", "tiny", false, 11));
  auto packed = Model::open(makeHf(dir / "packed", "tiny", true, 11));
  EXPECT_EQ(packed->config().weightQuant, WeightQuant::Offline);
  EXPECT_EQ(readJson(dir / "packed" /
                     "config.json")["quantization_config"]["quantization_mode"],
            "offline");
  ASSERT_EQ(master->tensors().size(), packed->tensors().size());
  int projections = 0;
  for (const ModelTensor &t : packed->tensors()) {
    std::vector<float> want = values(*master, t.name);
    std::vector<float> got = values(*packed, t.name);
    ASSERT_EQ(want.size(), got.size());
    if (!t.isProjection) {
      EXPECT_EQ(t.packing, TensorPacking::Plain);
      EXPECT_EQ(want, got) << t.name;
      continue;
    }
    ++projections;
    EXPECT_EQ(t.packing, TensorPacking::HfUint8) << t.name;
    EXPECT_EQ(t.dtype, DType::U8);
    std::vector<int8_t> codes(want.size());
    float s = ternarizeAbsmean(want.data(), want.size(), codes.data());
    EXPECT_EQ(t.outputScale, bf16Round(s)) << t.name;
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], float(codes[i]) * bf16Round(s)) << t.name << " " << i;
    // Any row range agrees with the whole.
    const int64_t cols = t.shape[1];
    std::vector<float> rows(size_t(5 * cols));
    packed->dequantizeRows(t, 9, 14, rows.data());
    for (size_t i = 0; i < rows.size(); ++i)
      ASSERT_EQ(rows[i], got[size_t(9 * cols) + i]);
  }
  EXPECT_EQ(projections, 14);
}

TEST(ModelHf, BitLinearScaleIsReciprocal) {
  // transformers' BitLinear divides by weight_scale: linear_class bitlinear
  // stores 1/s.
  TempDir dir;
  auto packed = Model::open(makeHf(dir / "m", "tiny", true));
  float s = packed->find("model.layers.0.mlp.up_proj.weight")->outputScale;
  json config = readJson(dir / "m" / "config.json");
  config["quantization_config"] = {{"quant_method", "bitnet"},
                                   {"linear_class", "bitlinear"},
                                   {"quantization_mode", "offline"}};
  writeJson(dir / "m" / "config.json", config);
  auto bl = Model::open((dir / "m").string());
  EXPECT_FLOAT_EQ(bl->find("model.layers.0.mlp.up_proj.weight")->outputScale,
                  1.0f / s);
}

TEST(ModelHf, Deterministic) {
  TempDir dir;
  makeHf(dir / "a", "tiny", false, 3);
  makeHf(dir / "b", "tiny", false, 3);
  makeHf(dir / "c", "tiny", false, 4);
  for (const char *f : {"config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "generation_config.json"})
    EXPECT_EQ(readFile(dir / "a" / f), readFile(dir / "b" / f)) << f;
  EXPECT_NE(readFile(dir / "a" / "model.safetensors"),
            readFile(dir / "c" / "model.safetensors"));
  makeHf(dir / "p", "tiny", true, 3);
  makeHf(dir / "q", "tiny", true, 3);
  EXPECT_EQ(readFile(dir / "p" / "model.safetensors"),
            readFile(dir / "q" / "model.safetensors"));
}

TEST(ModelHf, Sharded) {
  TempDir dir;
  std::string path = makeHf(dir / "m");
  auto whole = Model::open(path);
  // Split into two shards with an index, as save_pretrained does.
  json weightMap = json::object();
  {
    SafetensorsFile f =
        SafetensorsFile::open((dir / "m" / "model.safetensors").string());
    std::vector<SafetensorsEntry> a, b;
    for (const SafetensorsTensor &t : f.tensors()) {
      bool first = t.name.find("layers.1.") == std::string::npos &&
                   t.name != "model.norm.weight";
      (first ? a : b).push_back({t.name, t.dtype, t.shape, t.data, t.byteSize});
      weightMap[t.name] = first ? "model-00001-of-00002.safetensors"
                                : "model-00002-of-00002.safetensors";
    }
    writeSafetensors((dir / "m" / "model-00001-of-00002.safetensors").string(),
                     a, {{"format", "pt"}});
    writeSafetensors((dir / "m" / "model-00002-of-00002.safetensors").string(),
                     b, {{"format", "pt"}});
  }
  fs::remove(dir / "m" / "model.safetensors");
  const fs::path index = dir / "m" / "model.safetensors.index.json";
  writeJson(index,
            {{"metadata", {{"total_size", 0}}}, {"weight_map", weightMap}});
  auto sharded = Model::open(path);
  ASSERT_EQ(sharded->tensors().size(), whole->tensors().size());
  for (const ModelTensor &t : whole->tensors())
    EXPECT_EQ(values(*whole, t.name), values(*sharded, t.name)) << t.name;
  EXPECT_CONTAINS(sharded->find("model.norm.weight")->filePath,
                  "model-00002-of-00002.safetensors");

  // Missing shard: names the index, the tensor and the shard.
  fs::rename(dir / "m" / "model-00002-of-00002.safetensors",
             dir / "m" / "gone.safetensors");
  std::string msg = errorOf([&] { Model::open(path); });
  EXPECT_CONTAINS(msg, index.string());
  EXPECT_CONTAINS(msg, "model.layers.1.");
  EXPECT_CONTAINS(msg, "model-00002-of-00002.safetensors does not exist");
  fs::rename(dir / "m" / "gone.safetensors",
             dir / "m" / "model-00002-of-00002.safetensors");

  // Bad index files.
  writeFile(index, "{\"weight_map\": ");
  msg = errorOf([&] { Model::open(path); });
  EXPECT_CONTAINS(msg, index.string() + ": invalid JSON");
  writeJson(index, {{"metadata", json::object()}});
  EXPECT_CONTAINS(errorOf([&] { Model::open(path); }),
                  index.string() + ": weight_map: missing required key");
  writeJson(index, {{"weight_map", {1, 2}}});
  EXPECT_CONTAINS(errorOf([&] { Model::open(path); }),
                  index.string() + ": weight_map: expected an object");
  json bad = weightMap;
  bad["model.norm.weight"] = 3;
  writeJson(index, {{"weight_map", bad}});
  EXPECT_CONTAINS(errorOf([&] { Model::open(path); }),
                  index.string() +
                      ": weight_map[\"model.norm.weight\"]: expected a shard "
                      "file name");
  bad["model.norm.weight"] = "../../etc/model.safetensors";
  writeJson(index, {{"weight_map", bad}});
  EXPECT_CONTAINS(errorOf([&] { Model::open(path); }),
                  "must be a relative path inside the model directory");
  // A tensor the index places in the wrong shard.
  bad["model.norm.weight"] = "model-00001-of-00002.safetensors";
  writeJson(index, {{"weight_map", bad}});
  msg = errorOf([&] { Model::open(path); });
  EXPECT_CONTAINS(msg, "model-00001-of-00002.safetensors: model.norm.weight: "
                       "missing tensor");
}

TEST(ModelHf, ConfigErrors) {
  TempDir dir;
  std::string path = makeHf(dir / "m");
  const fs::path cfgPath = dir / "m" / "config.json";
  const json good = readJson(cfgPath);
  auto withConfig = [&](const std::function<void(json &)> &edit) {
    json j = good;
    edit(j);
    writeJson(cfgPath, j);
    return errorOf([&] { Model::open(path); });
  };
  const std::string cfg = cfgPath.string();
  EXPECT_CONTAINS(withConfig([](json &j) { j.erase("hidden_size"); }),
                  cfg + ": hidden_size: missing required key");
  EXPECT_CONTAINS(withConfig([](json &j) { j.erase("num_key_value_heads"); }),
                  cfg + ": num_key_value_heads: missing required key");
  EXPECT_CONTAINS(withConfig([](json &j) { j.erase("model_type"); }),
                  cfg + ": model_type: missing required key");
  EXPECT_CONTAINS(
      withConfig([](json &j) { j["model_type"] = "llama"; }),
      cfg + ": model_type: unsupported architecture 'llama' (bitloom reads "
            "bitnet)");
  EXPECT_CONTAINS(withConfig([](json &j) { j["vocab_size"] = "512"; }),
                  cfg + ": vocab_size: expected an integer, got string");
  EXPECT_CONTAINS(withConfig([](json &j) { j["num_key_value_heads"] = 3; }),
                  cfg + ": num_key_value_heads: 3 does not divide");
  EXPECT_CONTAINS(withConfig([](json &j) { j["hidden_act"] = "silu"; }),
                  cfg + ": hidden_act: unsupported activation 'silu'");
  EXPECT_CONTAINS(
      withConfig([](json &j) {
        j["quantization_config"]["quant_method"] = "bitsandbytes";
      }),
      cfg + ": quantization_config.quant_method: unsupported quantization "
            "method 'bitsandbytes'");
  EXPECT_CONTAINS(withConfig([](json &j) {
                    j["quantization_config"]["quantization_mode"] = "sometimes";
                  }),
                  cfg + ": quantization_config.quantization_mode");
  EXPECT_CONTAINS(withConfig([](json &j) {
                    j["rope_scaling"] = {{"rope_type", "yarn"},
                                         {"factor", 4.0}};
                  }),
                  cfg + ": rope_scaling: unsupported RoPE scaling 'yarn'");
  // BitNetConfig defaults tie_word_embeddings to false: lm_head required.
  EXPECT_CONTAINS(withConfig([](json &j) { j.erase("tie_word_embeddings"); }),
                  "model.safetensors: lm_head.weight: missing tensor "
                  "(config.json has tie_word_embeddings false)");
  // Shape mismatch reported on the first tensor that disagrees.
  EXPECT_CONTAINS(withConfig([](json &j) { j["intermediate_size"] = 192; }),
                  "model.safetensors: model.layers.0.mlp.gate_proj.weight: "
                  "shape [160, 64] but config says [192, 64]");
  // Online config over bf16 weights is fine; offline needs uint8.
  EXPECT_CONTAINS(withConfig([](json &j) {
                    j["quantization_config"]["quantization_mode"] = "offline";
                  }),
                  "model.layers.0.self_attn.q_proj.weight: dtype BF16 but "
                  "quantization_config says offline");
  writeFile(cfgPath, "{ not json");
  EXPECT_CONTAINS(errorOf([&] { Model::open(path); }), cfg + ": invalid JSON");
  fs::remove(cfgPath);
  EXPECT_CONTAINS(errorOf([&] { Model::open(path); }), cfg + ": missing");
}

TEST(ModelHf, ConfigVariants) {
  TempDir dir;
  std::string path = makeHf(dir / "m");
  const fs::path cfgPath = dir / "m" / "config.json";
  json j = readJson(cfgPath);
  // Newer writers: rope_parameters; eos as a list; explicit head_dim;
  // no quantization_config at all (online master weights).
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_theta", 123456.0}, {"rope_type", "default"}};
  j["eos_token_id"] = {5, 6};
  j["head_dim"] = 16;
  j.erase("quantization_config");
  writeJson(cfgPath, j);
  ModelConfig c = parseHfConfig(cfgPath.string());
  EXPECT_EQ(c.ropeTheta, 123456.0);
  EXPECT_EQ(*c.eosTokenId, 5);
  EXPECT_EQ(c.headDim, 16);
  EXPECT_EQ(c.weightQuant, WeightQuant::Online);
  EXPECT_NO_THROW(Model::open(path));
  EXPECT_NO_THROW(Model::open(cfgPath.string())); // config.json path works
  j["head_dim"] = 8;
  writeJson(cfgPath, j);
  EXPECT_CONTAINS(errorOf([&] { parseHfConfig(cfgPath.string()); }),
                  cfgPath.string() +
                      ": head_dim: 8 x 4 heads != hidden_size 64");
}

TEST(ModelHf, TensorErrors) {
  TempDir dir;
  std::string path = makeHf(dir / "m");
  const fs::path st = dir / "m" / "model.safetensors";
  const std::string original = readFile(st);
  auto withTensors =
      [&](const std::function<void(std::vector<SafetensorsEntry> &,
                                   std::vector<std::vector<uint8_t>> &)>
              &edit) {
        writeFile(st, original);
        rewriteSafetensors(st, edit);
        return errorOf([&] { Model::open(path); });
      };
  auto erase = [](std::vector<SafetensorsEntry> &e, const std::string &name) {
    for (size_t i = 0; i < e.size(); ++i)
      if (e[i].name == name) {
        e.erase(e.begin() + long(i));
        return;
      }
    FAIL() << name;
  };
  auto replace = [](std::vector<SafetensorsEntry> &e,
                    std::vector<std::vector<uint8_t>> &keep,
                    const std::string &name, DType dt,
                    std::vector<int64_t> shape) {
    uint64_t n = 1;
    for (int64_t d : shape)
      n *= uint64_t(d);
    keep.emplace_back(dtypeStorageBytes(dt, n), 0);
    for (SafetensorsEntry &x : e)
      if (x.name == name)
        x = {name, dt, shape, keep.back().data(), keep.back().size()};
  };
  const std::string file = st.string();
  EXPECT_CONTAINS(withTensors([&](auto &e, auto &) {
                    erase(e, "model.layers.1.mlp.down_proj.weight");
                  }),
                  file +
                      ": model.layers.1.mlp.down_proj.weight: missing tensor");
  EXPECT_CONTAINS(
      withTensors([&](auto &e, auto &keep) {
        replace(e, keep, "model.layers.0.self_attn.q_proj.weight", DType::BF16,
                {64, 32});
      }),
      file + ": model.layers.0.self_attn.q_proj.weight: shape [64, 32] but "
             "config says [64, 64]");
  EXPECT_CONTAINS(withTensors([&](auto &e, auto &keep) {
                    replace(e, keep, "model.norm.weight", DType::F64, {64});
                  }),
                  file + ": model.norm.weight: dtype F64 but expected BF16, "
                         "F16 or F32");
  EXPECT_CONTAINS(withTensors([&](auto &e, auto &keep) {
                    replace(e, keep, "model.layers.0.mlp.up_proj.weight",
                            DType::U8, {40, 64});
                  }),
                  "model.layers.0.mlp.up_proj.weight: dtype U8 but expected "
                  "BF16, F16 or F32 (packed weights need quantization_config "
                  "quantization_mode offline)");
  // Extra tensors are ignored but listed.
  writeFile(st, original);
  rewriteSafetensors(st, [&](auto &e, auto &keep) {
    keep.emplace_back(8, 0);
    e.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq",
                 DType::F32,
                 {2},
                 keep.back().data(),
                 8});
  });
  auto m = Model::open(path);
  bool listed = false;
  for (const auto &kv : m->metadata())
    listed |= kv.first == "ignored_tensors" &&
              kv.second.find("rotary_emb.inv_freq") != std::string::npos;
  EXPECT_TRUE(listed);
}

TEST(ModelHf, PackedTensorErrors) {
  TempDir dir;
  std::string path = makeHf(dir / "m", "tiny", true);
  const fs::path st = dir / "m" / "model.safetensors";
  const std::string original = readFile(st);
  const std::string file = st.string();
  auto edit =
      [&](const std::function<void(std::vector<SafetensorsEntry> &,
                                   std::vector<std::vector<uint8_t>> &)> &f) {
        writeFile(st, original);
        rewriteSafetensors(st, f);
        return errorOf([&] { Model::open(path); });
      };
  const std::string scale = "model.layers.0.self_attn.v_proj.weight_scale";
  EXPECT_CONTAINS(edit([&](auto &e, auto &) {
                    for (size_t i = 0; i < e.size(); ++i)
                      if (e[i].name == scale)
                        e.erase(e.begin() + long(i));
                  }),
                  file + ": " + scale + ": missing tensor");
  EXPECT_CONTAINS(edit([&](auto &e, auto &keep) {
                    keep.emplace_back(8, 0);
                    for (auto &x : e)
                      if (x.name == scale)
                        x = {scale, DType::BF16, {4}, keep.back().data(), 8};
                  }),
                  file + ": " + scale + ": shape [4] but a per-tensor scale");
  EXPECT_CONTAINS(
      edit([&](auto &e, auto &keep) {
        keep.emplace_back(32 * 64, 0);
        for (auto &x : e)
          if (x.name == "model.layers.0.self_attn.q_proj.weight")
            x = {x.name,
                 DType::U8,
                 {32, 64},
                 keep.back().data(),
                 keep.back().size()};
      }),
      "model.layers.0.self_attn.q_proj.weight: shape [32, 64] but "
      "config says [16, 64] (packed uint8 [out/4, in] of [64, 64])");
}

//===----------------------------------------------------------------------===//
// GGUF
//===----------------------------------------------------------------------===//

namespace {

/// GGUF projections hold the converter's {-v, 0, v}, v = bf16(1/(1/s)).
float ggufTernaryValue(float s) { return bf16Round(1.0f / (1.0f / s)); }

/// Checks a GGUF model against the bf16 HF model of the same seed.
void checkGgufAgainstMaster(const Model &gguf, const Model &master,
                            DType projType, DType embType) {
  EXPECT_EQ(gguf.config().weightQuant, WeightQuant::Offline);
  ASSERT_EQ(gguf.tensors().size(), master.tensors().size());
  for (size_t i = 0; i < gguf.tensors().size(); ++i) {
    const ModelTensor &t = gguf.tensors()[i];
    EXPECT_EQ(t.name, master.tensors()[i].name);
    EXPECT_EQ(t.shape, master.tensors()[i].shape) << t.name;
    std::vector<float> want = values(master, t.name);
    std::vector<float> got = values(gguf, t.name);
    ASSERT_EQ(want.size(), got.size());
    if (!t.isProjection) {
      bool embedding = t.name == "model.embed_tokens.weight";
      EXPECT_EQ(t.dtype, embedding ? embType : DType::F32) << t.name;
      for (size_t k = 0; k < got.size(); ++k)
        ASSERT_EQ(got[k], embedding && embType == DType::F16 ? f16Round(want[k])
                                                             : want[k])
            << t.name << " " << k;
      continue;
    }
    EXPECT_EQ(t.dtype, projType) << t.name;
    std::vector<int8_t> codes(want.size());
    float v = ggufTernaryValue(
        ternarizeAbsmean(want.data(), want.size(), codes.data()));
    // TQ blocks keep the scale as fp16, F16 tensors the values.
    if (projType == DType::TQ1_0 || projType == DType::TQ2_0 ||
        projType == DType::F16)
      v = f16Round(v);
    for (size_t k = 0; k < got.size(); ++k)
      ASSERT_EQ(got[k], float(codes[k]) * v) << t.name << " " << k;
  }
}

} // namespace

TEST(ModelGguf, TinyF32) {
  TempDir dir;
  auto master = Model::open(makeHf(dir / "hf"));
  auto m = Model::open(makeGguf(dir / "tiny.gguf", "F32"));
  EXPECT_EQ(m->format(), ModelFormat::Gguf);
  ASSERT_NE(m->gguf(), nullptr);
  const ModelConfig &c = m->config();
  const ModelConfig &h = master->config();
  EXPECT_EQ(c.vocabSize, h.vocabSize);
  EXPECT_EQ(c.hiddenSize, h.hiddenSize);
  EXPECT_EQ(c.intermediateSize, h.intermediateSize);
  EXPECT_EQ(c.numLayers, h.numLayers);
  EXPECT_EQ(c.numHeads, h.numHeads);
  EXPECT_EQ(c.numKvHeads, h.numKvHeads);
  EXPECT_EQ(c.headDim, h.headDim);
  EXPECT_EQ(c.maxPositionEmbeddings, h.maxPositionEmbeddings);
  EXPECT_EQ(c.ropeTheta, 10000.0);
  EXPECT_NEAR(c.rmsNormEps, 1e-5, 1e-12);
  EXPECT_TRUE(c.tieWordEmbeddings);
  EXPECT_EQ(c.bosTokenId, h.bosTokenId);
  EXPECT_EQ(c.eosTokenId, h.eosTokenId);
  EXPECT_EQ(m->find("model.layers.0.self_attn.o_proj.weight")->fileName,
            "blk.0.attn_output.weight");
  EXPECT_EQ(m->find("model.embed_tokens.weight")->fileName,
            "token_embd.weight");
  EXPECT_EQ(m->find("model.norm.weight")->fileName, "output_norm.weight");
  checkGgufAgainstMaster(*m, *master, DType::F32, DType::F32);

  std::map<std::string, std::string> md(m->metadata().begin(),
                                        m->metadata().end());
  EXPECT_EQ(md["general.architecture"], "bitnet");
  EXPECT_EQ(md["tokenizer.ggml.tokens"], "[512 strings]");
  EXPECT_EQ(md["bitnet.block_count"], "2");
  EXPECT_EQ(md["tokenizer.ggml.pre"], "llama-bpe");
}

TEST(ModelGguf, TinyTqFallsBackToF16) {
  // tiny's input dims (64, 160) are not whole 256-weight blocks.
  TempDir dir;
  auto master = Model::open(makeHf(dir / "hf"));
  auto m = Model::open(makeGguf(dir / "tiny.gguf", "TQ2_0"));
  checkGgufAgainstMaster(*m, *master, DType::F16, DType::F16);
  auto b = Model::open(makeGguf(dir / "bf.gguf", "bf16"));
  checkGgufAgainstMaster(*b, *master, DType::BF16, DType::BF16);
}

TEST(ModelGguf, TernaryBlocks) {
  TempDir dir;
  auto master = Model::open(makeHf(dir / "hf", "tiny256"));
  for (auto [name, dt] : {std::pair<const char *, DType>{"TQ2_0", DType::TQ2_0},
                          {"TQ1_0", DType::TQ1_0}}) {
    SCOPED_TRACE(name);
    auto m = Model::open(
        makeGguf(dir / (std::string(name) + ".gguf"), name, "tiny256"));
    checkGgufAgainstMaster(*m, *master, dt, DType::F16);
    const ModelTensor *t = m->find("model.layers.1.mlp.down_proj.weight");
    EXPECT_EQ(t->packing,
              dt == DType::TQ2_0 ? TensorPacking::TQ2_0 : TensorPacking::TQ1_0);
    std::vector<float> all = values(*m, t->name);
    std::vector<float> rows(size_t(3 * t->shape[1]));
    m->dequantizeRows(*t, 5, 8, rows.data());
    for (size_t i = 0; i < rows.size(); ++i)
      ASSERT_EQ(rows[i], all[size_t(5 * t->shape[1]) + i]);
  }
  // Same seed, same bytes.
  makeGguf(dir / "again.gguf", "TQ1_0", "tiny256");
  EXPECT_EQ(readFile(dir / "TQ1_0.gguf"), readFile(dir / "again.gguf"));
}

TEST(ModelGguf, OutputScaleAndUntied) {
  TempDir dir;
  const fs::path path = dir / "m.gguf";
  makeGguf(path, "F32");
  auto before = Model::open(path.string());
  std::vector<float> q =
      values(*before, "model.layers.0.self_attn.q_proj.weight");
  std::vector<float> embd = values(*before, "model.embed_tokens.weight");
  before.reset();
  {
    // Add blk.0.attn_q.scale = 0.5 and an untied output.weight.
    GgufFile f = GgufFile::open(path.string());
    GgufWriter w;
    for (const auto &kv : f.metadata())
      w.set(kv.first, kv.second);
    for (const GgufTensor &t : f.tensors())
      w.addTensor(t.name, t.type, t.dims, t.data, t.byteSize);
    static const float half = 0.5f;
    w.addTensor("blk.0.attn_q.scale", uint32_t(GgmlType::F32), {1}, &half, 4);
    const GgufTensor *e = f.findTensor("token_embd.weight");
    w.addTensor("output.weight", e->type, e->dims, e->data, e->byteSize);
    w.write((dir / "scaled.gguf").string());
  }
  auto m = Model::open((dir / "scaled.gguf").string());
  const ModelTensor *t = m->find("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(t->outputScale, 0.5f);
  std::vector<float> scaled = values(*m, t->name);
  for (size_t i = 0; i < q.size(); ++i)
    ASSERT_EQ(scaled[i], q[i] * 0.5f);
  EXPECT_FALSE(m->config().tieWordEmbeddings);
  ASSERT_NE(m->find("lm_head.weight"), nullptr);
  EXPECT_EQ(m->find("lm_head.weight")->fileName, "output.weight");
  EXPECT_EQ(values(*m, "lm_head.weight"), embd);
}

TEST(ModelGguf, Errors) {
  TempDir dir;
  const fs::path path = dir / "m.gguf";
  makeGguf(path, "F32");
  const std::string original = readFile(path);
  const std::string file = path.string();
  auto withGguf = [&](const std::function<void(GgufWriter &)> &kv,
                      const std::string &drop = "") {
    writeFile(path, original);
    rewriteGguf(path, kv, drop);
    return errorOf([&] { Model::open(file); });
  };
  EXPECT_CONTAINS(withGguf([](GgufWriter &w) {
                    w.set("general.architecture", GgufValue::string("llama"));
                  }),
                  file + ": general.architecture: unsupported architecture "
                         "'llama' (bitloom reads bitnet)");
  EXPECT_CONTAINS(withGguf([](GgufWriter &) {}, "blk.1.ffn_down.weight"),
                  file + ": blk.1.ffn_down.weight: missing tensor "
                         "(model.layers.1.mlp.down_proj.weight)");
  EXPECT_CONTAINS(withGguf([](GgufWriter &w) {
                    w.set("bitnet.feed_forward_length", GgufValue::u32(192));
                  }),
                  file + ": blk.0.ffn_gate.weight: shape [160, 64] (GGUF dims "
                         "[64, 160]) but config says [192, 64]");
  EXPECT_CONTAINS(withGguf([](GgufWriter &w) {
                    w.set("bitnet.rope.dimension_count", GgufValue::u32(8));
                  }),
                  file + ": bitnet.rope.dimension_count");
  // A required key missing is reported by name.
  writeFile(path, original);
  {
    GgufFile f = GgufFile::open(file);
    GgufWriter w;
    for (const auto &kv : f.metadata())
      if (kv.first != "bitnet.embedding_length")
        w.set(kv.first, kv.second);
    for (const GgufTensor &t : f.tensors())
      w.addTensor(t.name, t.type, t.dims, t.data, t.byteSize);
    w.write(file);
  }
  EXPECT_CONTAINS(errorOf([&] { Model::open(file); }),
                  "bitnet.embedding_length");
  // rope.freq_base absent: llama.cpp's default 10000.
  writeFile(path, original);
  {
    GgufFile f = GgufFile::open(file);
    GgufWriter w;
    for (const auto &kv : f.metadata())
      if (kv.first != "bitnet.rope.freq_base")
        w.set(kv.first, kv.second);
    for (const GgufTensor &t : f.tensors())
      w.addTensor(t.name, t.type, t.dims, t.data, t.byteSize);
    w.write(file);
  }
  EXPECT_EQ(Model::open(file)->config().ropeTheta, 10000.0);
}

TEST(Model, OpenErrors) {
  TempDir dir;
  EXPECT_CONTAINS(errorOf([&] { Model::open((dir / "nope").string()); }),
                  (dir / "nope").string() + ": no such file or directory");
  writeFile(dir / "junk.bin", "hello world");
  EXPECT_CONTAINS(errorOf([&] { Model::open((dir / "junk.bin").string()); }),
                  "neither a GGUF file nor a Hugging Face model directory");
  fs::create_directories(dir / "empty");
  writeJson(dir / "empty" / "config.json",
            readJson(fs::path(makeHf(dir / "ok")) / "config.json"));
  EXPECT_CONTAINS(errorOf([&] { Model::open((dir / "empty").string()); }),
                  "model.safetensors: missing");
}

TEST(MakeModel, TokenizerFilesAgree) {
  // The HF tokenizer.json and the GGUF vocabulary of one preset are the same
  // tokenizer; the chat template's special tokens are single tokens.
  TempDir dir;
  auto hf = Model::open(makeHf(dir / "hf"));
  auto gg = Model::open(makeGguf(dir / "m.gguf", "F32"));
  auto a = Tokenizer::fromHfJson((dir / "hf" / "tokenizer.json").string());
  auto b = Tokenizer::fromGguf(*gg->gguf());
  EXPECT_EQ(a->vocabSize(), 512u);
  EXPECT_EQ(b->vocabSize(), 512u);
  const std::string text = "The river reaches the sea.\nIt's 42 degrees!";
  std::vector<int32_t> ids = a->encode(text, true);
  EXPECT_EQ(ids, b->encode(text, true));
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], *hf->config().bosTokenId);
  EXPECT_EQ(a->decode(ids, true), text);
  const std::string chat =
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
  std::vector<int32_t> chatIds = a->encode(chat, false);
  EXPECT_EQ(chatIds, b->encode(chat, false));
  EXPECT_EQ(chatIds.front(), *a->tokenToId("<|start_header_id|>"));
  EXPECT_EQ(chatIds.back(), *hf->config().eosTokenId);
  EXPECT_EQ(a->idToToken(int32_t(*hf->config().eosTokenId)), "<|eot_id|>");
}

// Frozen bf16 weights reach compiled CPU code as stored (packing "bf16"):
// the tensor's raw bytes, which widen exactly to the dequantized values. A
// tensor stored otherwise is refused.
TEST(CpuWeightSource, Bf16AsStored) {
  TempDir dir;
  auto m = Model::open(makeHf(dir / "hf"));
  std::vector<std::string> names = bf16WeightNames(*m);
  EXPECT_NE(std::find(names.begin(), names.end(), "model.embed_tokens.weight"),
            names.end());
  const ModelTensor &t = *m->find("model.embed_tokens.weight");
  CpuWeightSource source(*m);
  std::vector<uint8_t> raw = source.bytes(t.name, "bf16");
  ASSERT_EQ(raw.size(), t.numElements() * 2);
  EXPECT_EQ(std::memcmp(raw.data(), t.data, raw.size()), 0);
  std::vector<uint8_t> values = source.bytes(t.name, "");
  ASSERT_EQ(values.size(), t.numElements() * 4);
  for (size_t i = 0; i < t.numElements(); ++i) {
    uint32_t bits = uint32_t(raw[2 * i] | raw[2 * i + 1] << 8) << 16;
    float widened, value;
    std::memcpy(&widened, &bits, 4);
    std::memcpy(&value, values.data() + 4 * i, 4);
    ASSERT_EQ(widened, value) << "element " << i;
  }

  // TQ2_0 GGUF: token_embd is F16.
  auto g = Model::open(makeGguf(dir / "tiny.gguf", "TQ2_0"));
  EXPECT_TRUE(bf16WeightNames(*g).empty());
  CpuWeightSource gs(*g);
  EXPECT_CONTAINS(
      errorOf([&] { gs.bytes("model.embed_tokens.weight", "bf16"); }),
      "packing 'bf16' needs a tensor stored as bf16, this one is F16");
}

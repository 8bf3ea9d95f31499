//===- Model.cpp - Open and validate BitNet b1.58 checkpoints -------------===//
//
// Both readers build the list of tensors the config implies, then look each
// one up in the file(s) and check presence, shape and storage type before
// anything else touches the weights. Nothing is copied: ModelTensor points
// into the read-only mappings owned by the SafetensorsFile / GgufFile.
//
//===----------------------------------------------------------------------===//
#include "model/Model.h"
#include "model/ModelLayout.h"

#include "formats/Error.h"
#include "formats/Gguf.h"
#include "formats/Safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace bitloom {

//===----------------------------------------------------------------------===//
// Small helpers
//===----------------------------------------------------------------------===//

namespace {

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t product(const std::vector<int64_t> &shape) {
  uint64_t n = 1;
  for (int64_t d : shape)
    n *= uint64_t(d);
  return n;
}

std::string readTextFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw FormatError(path, "",
                      std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    throw FormatError(path, "", "read error");
  return ss.str();
}

json parseJsonFile(const std::string &path) {
  std::string text = readTextFile(path);
  try {
    return json::parse(text);
  } catch (const json::exception &e) {
    throw FormatError(path, "", std::string("invalid JSON: ") + e.what());
  }
}

bool isFloatDType(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

/// Reads the single element of a scale tensor as float.
float readScalar(DType t, const uint8_t *data) {
  float v = 0;
  bitloom::dequantize(t, data, &v, 1);
  return v;
}

std::string formatDouble(double v, int precision) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

/// "name1, name2, ... (N total)": keeps `inspect` output bounded.
std::string summarizeNames(const std::vector<std::string> &names) {
  constexpr size_t kShown = 8;
  std::string s;
  for (size_t i = 0; i < names.size() && i < kShown; ++i)
    s += (i ? ", " : "") + names[i];
  if (names.size() > kShown)
    s += ", ... (" + std::to_string(names.size()) + " total)";
  return s;
}

using detail::TensorRole;
using detail::TensorSpec;
using Role = TensorRole;

//===----------------------------------------------------------------------===//
// config.json
//===----------------------------------------------------------------------===//

/// What parseHfConfig learns beyond ModelConfig.
struct HfConfigExtras {
  /// linear_class "bitlinear": transformers' BitLinear divides the output by
  /// weight_scale (y = x_q·W_t / (weight_scale · a)), so the stored value is
  /// 1/s; "autobitlinear" offline multiplies by it.
  bool reciprocalScale = false;
};

const json *findKey(const json &j, const char *key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    return nullptr;
  return &*it;
}

int64_t toInt(const json &v, const std::string &path, const std::string &key) {
  if (v.is_number_integer())
    return v.get<int64_t>();
  // Some writers emit 2560.0; accept integral floats.
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::floor(d) == d && std::fabs(d) < 9e15)
      return int64_t(d);
  }
  throw FormatError(path, key,
                    std::string("expected an integer, got ") + v.type_name() +
                        " " + v.dump());
}

int64_t requireInt(const json &j, const char *key, const std::string &path) {
  const json *v = findKey(j, key);
  if (!v)
    throw FormatError(path, key, "missing required key");
  return toInt(*v, path, key);
}

double toDouble(const json &v, const std::string &path,
                const std::string &key) {
  if (!v.is_number())
    throw FormatError(path, key,
                      std::string("expected a number, got ") + v.type_name());
  return v.get<double>();
}

std::string toString(const json &v, const std::string &path,
                     const std::string &key) {
  if (!v.is_string())
    throw FormatError(path, key,
                      std::string("expected a string, got ") + v.type_name());
  return v.get<std::string>();
}

bool toBool(const json &v, const std::string &path, const std::string &key) {
  if (!v.is_boolean())
    throw FormatError(path, key,
                      std::string("expected a boolean, got ") + v.type_name());
  return v.get<bool>();
}

/// bos/eos may be an int or (eos, in newer configs) a list: keep the first.
std::optional<int64_t> optionalTokenId(const json &j, const char *key,
                                       const std::string &path) {
  const json *v = findKey(j, key);
  if (!v)
    return std::nullopt;
  if (v->is_array()) {
    if (v->empty())
      return std::nullopt;
    return toInt((*v)[0], path, std::string(key) + "[0]");
  }
  return toInt(*v, path, key);
}

/// RoPE variants other than the plain one change the model's math.
void checkRopeScaling(const json &j, const char *key, const std::string &path) {
  const json *rs = findKey(j, key);
  if (!rs)
    return;
  if (!rs->is_object())
    throw FormatError(
        path, key, std::string("expected an object, got ") + rs->type_name());
  std::string type = "default";
  if (const json *t = findKey(*rs, "rope_type"))
    type = toString(*t, path, std::string(key) + ".rope_type");
  else if (const json *legacy = findKey(*rs, "type"))
    type = toString(*legacy, path, std::string(key) + ".type");
  double factor = 1.0;
  if (const json *fct = findKey(*rs, "factor"))
    factor = toDouble(*fct, path, std::string(key) + ".factor");
  if (type == "default" || (type == "linear" && factor == 1.0))
    return;
  throw FormatError(path, key,
                    "unsupported RoPE scaling '" + type +
                        "' (bitloom implements the plain rotate-half RoPE)");
}

ModelConfig parseHfConfigJson(const json &j, const std::string &path,
                              HfConfigExtras *extras) {
  if (!j.is_object())
    throw FormatError(path, "", "expected a JSON object");
  const json *mt = findKey(j, "model_type");
  if (!mt)
    throw FormatError(path, "model_type", "missing required key");
  std::string modelType = toString(*mt, path, "model_type");
  if (modelType != "bitnet")
    throw FormatError(path, "model_type",
                      "unsupported architecture '" + modelType +
                          "' (bitloom reads bitnet)");

  ModelConfig c;
  c.vocabSize = requireInt(j, "vocab_size", path);
  c.hiddenSize = requireInt(j, "hidden_size", path);
  c.intermediateSize = requireInt(j, "intermediate_size", path);
  c.numLayers = requireInt(j, "num_hidden_layers", path);
  c.numHeads = requireInt(j, "num_attention_heads", path);
  // The remaining keys default as BitNetConfig does, except where its
  // default is the 2B-4T value of an architecture field (kv heads, which
  // we require rather than silently assume 5).
  if (auto it = j.find("num_key_value_heads"); it == j.end())
    throw FormatError(path, "num_key_value_heads", "missing required key");
  else if (it->is_null())
    c.numKvHeads = c.numHeads; // BitNetConfig: None means MHA
  else
    c.numKvHeads = toInt(*it, path, "num_key_value_heads");

  if (const json *v = findKey(j, "head_dim")) {
    c.headDim = toInt(*v, path, "head_dim");
  } else {
    if (c.numHeads <= 0)
      throw FormatError(path, "num_attention_heads", "must be positive");
    if (c.hiddenSize % c.numHeads != 0)
      throw FormatError(
          path, "num_attention_heads",
          std::to_string(c.numHeads) + " does not divide hidden_size " +
              std::to_string(c.hiddenSize) + " and head_dim is absent");
    c.headDim = c.hiddenSize / c.numHeads;
  }
  c.maxPositionEmbeddings = 2048; // BitNetConfig default
  if (const json *v = findKey(j, "max_position_embeddings"))
    c.maxPositionEmbeddings = toInt(*v, path, "max_position_embeddings");
  c.rmsNormEps = 1e-5;
  if (const json *v = findKey(j, "rms_norm_eps"))
    c.rmsNormEps = toDouble(*v, path, "rms_norm_eps");

  // rope_theta: top level (older writers) or rope_parameters (newer).
  c.ropeTheta = 500000.0; // BitNetConfig.default_theta
  if (const json *v = findKey(j, "rope_theta")) {
    c.ropeTheta = toDouble(*v, path, "rope_theta");
  } else if (const json *rp = findKey(j, "rope_parameters")) {
    if (!rp->is_object())
      throw FormatError(path, "rope_parameters",
                        std::string("expected an object, got ") +
                            rp->type_name());
    if (const json *t = findKey(*rp, "rope_theta"))
      c.ropeTheta = toDouble(*t, path, "rope_parameters.rope_theta");
  }
  checkRopeScaling(j, "rope_parameters", path);
  checkRopeScaling(j, "rope_scaling", path);

  c.tieWordEmbeddings = false; // BitNetConfig default (2B-4T sets true)
  if (const json *v = findKey(j, "tie_word_embeddings"))
    c.tieWordEmbeddings = toBool(*v, path, "tie_word_embeddings");
  c.hiddenAct = "relu2";
  if (const json *v = findKey(j, "hidden_act"))
    c.hiddenAct = toString(*v, path, "hidden_act");
  if (const json *v = findKey(j, "attention_bias"))
    if (toBool(*v, path, "attention_bias"))
      throw FormatError(path, "attention_bias",
                        "attention biases are not supported (BitNet has none)");
  c.bosTokenId = optionalTokenId(j, "bos_token_id", path);
  c.eosTokenId = optionalTokenId(j, "eos_token_id", path);

  // quantization_config: absent means plain master weights (online).
  c.weightQuant = WeightQuant::Online;
  if (const json *qc = findKey(j, "quantization_config")) {
    const std::string k = "quantization_config";
    if (!qc->is_object())
      throw FormatError(
          path, k, std::string("expected an object, got ") + qc->type_name());
    const json *qm = findKey(*qc, "quant_method");
    if (!qm)
      throw FormatError(path, k + ".quant_method", "missing required key");
    std::string method = toString(*qm, path, k + ".quant_method");
    if (method != "bitnet")
      throw FormatError(path, k + ".quant_method",
                        "unsupported quantization method '" + method +
                            "' (bitloom reads bitnet)");
    // BitNetQuantConfig defaults: linear_class bitlinear, mode offline.
    std::string linearClass = "bitlinear", mode = "offline";
    if (const json *v = findKey(*qc, "linear_class"))
      linearClass = toString(*v, path, k + ".linear_class");
    if (const json *v = findKey(*qc, "quantization_mode"))
      mode = toString(*v, path, k + ".quantization_mode");
    if (mode != "online" && mode != "offline")
      throw FormatError(path, k + ".quantization_mode",
                        "expected 'online' or 'offline', got '" + mode + "'");
    if (linearClass == "autobitlinear") {
      c.weightQuant =
          mode == "online" ? WeightQuant::Online : WeightQuant::Offline;
    } else if (linearClass == "bitlinear") {
      // transformers' BitLinear always reads packed weights.
      c.weightQuant = WeightQuant::Offline;
      if (extras)
        extras->reciprocalScale = true;
    } else {
      throw FormatError(path, k + ".linear_class",
                        "expected 'bitlinear' or 'autobitlinear', got '" +
                            linearClass + "'");
    }
    if (const json *v = findKey(*qc, "use_rms_norm"))
      if (toBool(*v, path, k + ".use_rms_norm"))
        throw FormatError(path, k + ".use_rms_norm",
                          "BitLinear input RMSNorm is not supported");
    if (const json *v = findKey(*qc, "modules_to_not_convert")) {
      if (!v->is_array())
        throw FormatError(path, k + ".modules_to_not_convert",
                          "expected a list");
      for (const json &m : *v) {
        std::string name = toString(m, path, k + ".modules_to_not_convert");
        // Only the (never ternary) lm_head may stay dense.
        if (name.rfind("lm_head", 0) != 0)
          throw FormatError(path, k + ".modules_to_not_convert",
                            "'" + name +
                                "' would leave a projection unquantized, "
                                "which bitloom does not support");
      }
    }
  }
  c.validate(path);
  return c;
}

void flattenJson(const json &j, const std::string &prefix,
                 std::vector<std::pair<std::string, std::string>> &out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it->is_object())
      flattenJson(*it, key, out);
    else if (it->is_string())
      out.emplace_back(key, it->get<std::string>());
    else
      out.emplace_back(key, it->dump());
  }
}

//===----------------------------------------------------------------------===//
// GGUF metadata as text
//===----------------------------------------------------------------------===//

const char *ggufTypeName(GgufValueType t) {
  switch (t) {
  case GgufValueType::U8:
    return "u8";
  case GgufValueType::I8:
    return "i8";
  case GgufValueType::U16:
    return "u16";
  case GgufValueType::I16:
    return "i16";
  case GgufValueType::U32:
    return "u32";
  case GgufValueType::I32:
    return "i32";
  case GgufValueType::F32:
    return "f32";
  case GgufValueType::Bool:
    return "bool";
  case GgufValueType::String:
    return "string";
  case GgufValueType::Array:
    return "array";
  case GgufValueType::U64:
    return "u64";
  case GgufValueType::I64:
    return "i64";
  case GgufValueType::F64:
    return "f64";
  }
  return "?";
}

std::string escapeForDisplay(const std::string &s, size_t limit) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    char ch = s[i];
    if (ch == '\n')
      out += "\\n";
    else if (ch == '\t')
      out += "\\t";
    else if (ch == '\r')
      out += "\\r";
    else
      out += ch;
  }
  return out;
}

/// Long strings (chat templates) and arrays (vocabularies) are summarized so
/// that `inspect` stays readable.
std::string formatGgufValue(const GgufValue &v) {
  constexpr size_t kMaxArray = 16, kMaxString = 160;
  if (auto *arr = std::get_if<std::vector<GgufValue>>(&v.value)) {
    if (arr->size() > kMaxArray) {
      std::string what = v.elementType == GgufValueType::String
                             ? "strings"
                             : std::string(ggufTypeName(v.elementType));
      return "[" + std::to_string(arr->size()) + " " + what + "]";
    }
    std::string s = "[";
    for (size_t i = 0; i < arr->size(); ++i)
      s += (i ? ", " : "") + formatGgufValue((*arr)[i]);
    return s + "]";
  }
  if (auto *str = std::get_if<std::string>(&v.value)) {
    if (str->size() > kMaxString)
      return escapeForDisplay(*str, 100) + "... (" +
             std::to_string(str->size()) + " chars)";
    return escapeForDisplay(*str, str->size());
  }
  if (auto *u = std::get_if<uint64_t>(&v.value))
    return std::to_string(*u);
  if (auto *i = std::get_if<int64_t>(&v.value))
    return std::to_string(*i);
  if (auto *d = std::get_if<double>(&v.value))
    return formatDouble(*d, v.type == GgufValueType::F32 ? 7 : 17);
  if (auto *b = std::get_if<bool>(&v.value))
    return *b ? "true" : "false";
  return "?";
}

} // namespace

//===----------------------------------------------------------------------===//
// Public helpers
//===----------------------------------------------------------------------===//

uint64_t ModelTensor::numElements() const { return product(shape); }

const std::vector<ProjectionName> &projectionNames() {
  static const std::vector<ProjectionName> names = {
      {"q", "self_attn.q_proj", "attn_q"},
      {"k", "self_attn.k_proj", "attn_k"},
      {"v", "self_attn.v_proj", "attn_v"},
      {"o", "self_attn.o_proj", "attn_output"},
      {"gate", "mlp.gate_proj", "ffn_gate"},
      {"up", "mlp.up_proj", "ffn_up"},
      {"down", "mlp.down_proj", "ffn_down"},
  };
  return names;
}

std::vector<detail::TensorSpec> detail::tensorLayout(const ModelConfig &c) {
  const int64_t h = c.hiddenSize, f = c.intermediateSize, v = c.vocabSize;
  const int64_t qDim = c.numHeads * c.headDim;
  const int64_t kvDim = c.numKvHeads * c.headDim;
  const auto &proj = projectionNames();
  // Shapes of q k v o gate up down, in projectionNames() order.
  const std::vector<int64_t> projShapes[] = {
      {qDim, h}, {kvDim, h}, {kvDim, h}, {h, qDim}, {f, h}, {f, h}, {h, f}};
  std::vector<TensorSpec> out;
  out.push_back({"model.embed_tokens.weight",
                 "token_embd.weight",
                 {v, h},
                 TensorRole::Embedding});
  for (int64_t l = 0; l < c.numLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string g = "blk." + std::to_string(l) + ".";
    auto projection = [&](size_t i) {
      out.push_back({p + proj[i].hfModule + ".weight",
                     g + proj[i].ggufName + ".weight", projShapes[i],
                     TensorRole::Projection});
    };
    auto norm = [&](const std::string &hf, const std::string &gg,
                    int64_t size) {
      out.push_back({p + hf, g + gg, {size}, TensorRole::Norm});
    };
    norm("input_layernorm.weight", "attn_norm.weight", h);
    projection(0); // q
    projection(1); // k
    projection(2); // v
    norm("self_attn.attn_sub_norm.weight", "attn_sub_norm.weight", qDim);
    projection(3); // o
    norm("post_attention_layernorm.weight", "ffn_norm.weight", h);
    projection(4); // gate
    projection(5); // up
    norm("mlp.ffn_sub_norm.weight", "ffn_sub_norm.weight", f);
    projection(6); // down
  }
  out.push_back(
      {"model.norm.weight", "output_norm.weight", {h}, TensorRole::Norm});
  if (!c.tieWordEmbeddings)
    out.push_back(
        {"lm_head.weight", "output.weight", {v, h}, TensorRole::LmHead});
  return out;
}

void ModelConfig::validate(const std::string &file) const {
  auto positive = [&](int64_t v, const char *field) {
    if (v <= 0)
      throw FormatError(file, field,
                        "must be positive, got " + std::to_string(v));
  };
  positive(vocabSize, "vocab_size");
  positive(hiddenSize, "hidden_size");
  positive(intermediateSize, "intermediate_size");
  positive(numLayers, "num_hidden_layers");
  positive(numHeads, "num_attention_heads");
  positive(numKvHeads, "num_key_value_heads");
  positive(headDim, "head_dim");
  positive(maxPositionEmbeddings, "max_position_embeddings");
  if (numHeads % numKvHeads != 0)
    throw FormatError(file, "num_key_value_heads",
                      std::to_string(numKvHeads) +
                          " does not divide num_attention_heads " +
                          std::to_string(numHeads));
  // attn_sub_norm is sized hidden_size in BitNet and normalizes the
  // concatenated heads, so the heads must span exactly hidden_size.
  if (numHeads * headDim != hiddenSize)
    throw FormatError(file, "head_dim",
                      std::to_string(headDim) + " x " +
                          std::to_string(numHeads) + " heads != hidden_size " +
                          std::to_string(hiddenSize));
  if (headDim % 2 != 0)
    throw FormatError(file, "head_dim",
                      "must be even for rotate-half RoPE, got " +
                          std::to_string(headDim));
  if (!(rmsNormEps > 0) || !std::isfinite(rmsNormEps))
    throw FormatError(file, "rms_norm_eps",
                      "must be a positive number, got " +
                          formatDouble(rmsNormEps, 9));
  if (!(ropeTheta > 0) || !std::isfinite(ropeTheta))
    throw FormatError(file, "rope_theta",
                      "must be a positive number, got " +
                          formatDouble(ropeTheta, 9));
  if (hiddenAct != "relu2")
    throw FormatError(file, "hidden_act",
                      "unsupported activation '" + hiddenAct +
                          "' (BitNet b1.58 uses relu2)");
  auto tokenId = [&](const std::optional<int64_t> &id, const char *field) {
    if (id && (*id < 0 || *id >= vocabSize))
      throw FormatError(file, field,
                        std::to_string(*id) +
                            " is outside the vocabulary [0, " +
                            std::to_string(vocabSize) + ")");
  };
  tokenId(bosTokenId, "bos_token_id");
  tokenId(eosTokenId, "eos_token_id");
}

ModelConfig parseHfConfig(const std::string &path) {
  return parseHfConfigJson(parseJsonFile(path), path, nullptr);
}

//===----------------------------------------------------------------------===//
// Loader
//===----------------------------------------------------------------------===//

class ModelLoader {
public:
  static std::unique_ptr<Model> openHf(const fs::path &dir);
  static std::unique_ptr<Model> openGguf(const std::string &path);

private:
  static void finish(Model &m) {
    for (size_t i = 0; i < m.tensors_.size(); ++i)
      m.byName_[m.tensors_[i].name] = i;
  }
};

std::unique_ptr<Model> ModelLoader::openHf(const fs::path &dir) {
  std::unique_ptr<Model> m(new Model());
  m->format_ = ModelFormat::HuggingFace;
  m->path_ = dir.string();

  const std::string configPath = (dir / "config.json").string();
  std::error_code ec;
  if (!fs::is_regular_file(configPath, ec))
    throw FormatError(configPath, "",
                      "missing (a Hugging Face model directory needs "
                      "config.json)");
  json configJson = parseJsonFile(configPath);
  HfConfigExtras extras;
  m->config_ = parseHfConfigJson(configJson, configPath, &extras);
  const ModelConfig &c = m->config_;

  // Locate every tensor: one file, or shards listed by the index. Like
  // transformers, a single model.safetensors wins over an index.
  struct Located {
    const SafetensorsTensor *tensor;
    std::string file;
  };
  std::map<std::string, Located> byName;
  const std::string single = (dir / "model.safetensors").string();
  const std::string indexPath = (dir / "model.safetensors.index.json").string();
  std::string weightsFile; // named in "missing tensor" errors
  std::string weightsDesc;
  if (fs::is_regular_file(single, ec)) {
    weightsFile = single;
    weightsDesc = "model.safetensors";
    m->shards_.push_back(
        std::make_unique<SafetensorsFile>(SafetensorsFile::open(single)));
    for (const SafetensorsTensor &t : m->shards_.back()->tensors())
      byName[t.name] = {&t, single};
  } else if (fs::is_regular_file(indexPath, ec)) {
    weightsFile = indexPath;
    json index = parseJsonFile(indexPath);
    if (!index.is_object())
      throw FormatError(indexPath, "", "expected a JSON object");
    auto wm = index.find("weight_map");
    if (wm == index.end() || wm->is_null())
      throw FormatError(indexPath, "weight_map", "missing required key");
    if (!wm->is_object())
      throw FormatError(indexPath, "weight_map",
                        std::string("expected an object mapping tensor names "
                                    "to shard files, got ") +
                            wm->type_name());
    if (wm->empty())
      throw FormatError(indexPath, "weight_map", "is empty");
    std::map<std::string, size_t> shardIndex;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      const std::string field = "weight_map[\"" + it.key() + "\"]";
      if (!it->is_string())
        throw FormatError(indexPath, field,
                          std::string("expected a shard file name, got ") +
                              it->type_name());
      const std::string shardName = it->get<std::string>();
      fs::path rel(shardName);
      bool escapes = shardName.empty() || rel.is_absolute();
      for (const fs::path &part : rel)
        escapes = escapes || part == "..";
      if (escapes)
        throw FormatError(indexPath, field,
                          "shard name '" + shardName +
                              "' must be a relative path inside the model "
                              "directory");
      auto found = shardIndex.find(shardName);
      if (found == shardIndex.end()) {
        const std::string shardPath = (dir / rel).string();
        if (!fs::is_regular_file(shardPath, ec))
          throw FormatError(indexPath, field,
                            "shard " + shardPath + " does not exist");
        m->shards_.push_back(std::make_unique<SafetensorsFile>(
            SafetensorsFile::open(shardPath)));
        found = shardIndex.emplace(shardName, m->shards_.size() - 1).first;
      }
      const SafetensorsFile &shard = *m->shards_[found->second];
      const SafetensorsTensor *t = shard.find(it.key());
      if (!t)
        throw FormatError(shard.path(), it.key(),
                          "missing tensor (listed in " + indexPath +
                              " weight_map)");
      byName[it.key()] = {t, shard.path()};
    }
    weightsDesc = "model.safetensors.index.json (" +
                  std::to_string(m->shards_.size()) + " shards)";
  } else {
    throw FormatError(dir.string(), "model.safetensors",
                      "missing (neither model.safetensors nor "
                      "model.safetensors.index.json exists)");
  }

  std::set<std::string> used;
  for (const TensorSpec &e : detail::tensorLayout(c)) {
    auto it = byName.find(e.hfName);
    if (it == byName.end())
      throw FormatError(weightsFile, e.hfName,
                        e.role == Role::LmHead
                            ? "missing tensor (config.json has "
                              "tie_word_embeddings false)"
                            : "missing tensor");
    const SafetensorsTensor &st = *it->second.tensor;
    const std::string &file = it->second.file;
    used.insert(e.hfName);

    ModelTensor t;
    t.name = e.hfName;
    t.fileName = e.hfName;
    t.filePath = file;
    t.dtype = st.dtype;
    t.shape = e.shape;
    t.data = st.data;
    t.byteSize = st.byteSize;
    t.isProjection = e.role == Role::Projection;
    t.packing = TensorPacking::Plain;

    if (t.isProjection && c.weightQuant == WeightQuant::Offline) {
      if (st.dtype != DType::U8)
        throw FormatError(file, e.hfName,
                          std::string("dtype ") + dtypeName(st.dtype) +
                              " but quantization_config says offline: "
                              "expected U8 (packed ternary)");
      if (e.shape[0] % 4 != 0)
        throw FormatError(file, e.hfName,
                          "out dimension " + std::to_string(e.shape[0]) +
                              " is not a multiple of 4 and cannot be packed");
      std::vector<int64_t> packed = {e.shape[0] / 4, e.shape[1]};
      if (st.shape != packed)
        throw FormatError(file, e.hfName,
                          "shape " + shapeString(st.shape) +
                              " but config says " + shapeString(packed) +
                              " (packed uint8 [out/4, in] of " +
                              shapeString(e.shape) + ")");
      t.packing = TensorPacking::HfUint8;
      const std::string scaleName =
          e.hfName.substr(0, e.hfName.size() - std::string("weight").size()) +
          "weight_scale";
      auto sit = byName.find(scaleName);
      if (sit == byName.end())
        throw FormatError(weightsFile, scaleName,
                          "missing tensor (offline projections need a "
                          "weight_scale)");
      const SafetensorsTensor &scale = *sit->second.tensor;
      if (scale.numElements() != 1)
        throw FormatError(sit->second.file, scaleName,
                          "shape " + shapeString(scale.shape) +
                              " but a per-tensor scale has one element");
      if (!isFloatDType(scale.dtype))
        throw FormatError(sit->second.file, scaleName,
                          std::string("dtype ") + dtypeName(scale.dtype) +
                              " but expected BF16, F16 or F32");
      float v = readScalar(scale.dtype, scale.data);
      if (!(v > 0) || !std::isfinite(v))
        throw FormatError(sit->second.file, scaleName,
                          "must be a positive finite number, got " +
                              formatDouble(v, 9));
      t.outputScale = extras.reciprocalScale ? 1.0f / v : v;
      used.insert(scaleName);
    } else {
      if (!isFloatDType(st.dtype))
        throw FormatError(
            file, e.hfName,
            std::string("dtype ") + dtypeName(st.dtype) +
                " but expected BF16, F16 or F32" +
                (t.isProjection && st.dtype == DType::U8
                     ? " (packed weights need quantization_config "
                       "quantization_mode offline)"
                     : ""));
      if (st.shape != e.shape)
        throw FormatError(file, e.hfName,
                          "shape " + shapeString(st.shape) +
                              " but config says " + shapeString(e.shape));
    }
    m->tensors_.push_back(std::move(t));
  }
  finish(*m);

  // Metadata for `inspect`.
  auto &md = m->metadata_;
  md.emplace_back("format", "Hugging Face");
  md.emplace_back("weights", weightsDesc);
  md.emplace_back("weight_quant",
                  c.weightQuant == WeightQuant::Online
                      ? "online (float master weights, ternarized per forward)"
                  : extras.reciprocalScale
                      ? "offline (packed uint8, weight_scale = 1/s: "
                        "BitLinear)"
                      : "offline (packed uint8 + weight_scale)");
  uint64_t params = 0;
  for (const ModelTensor &t : m->tensors_)
    params += t.numElements();
  md.emplace_back("parameters", std::to_string(params));
  md.emplace_back("head_dim", std::to_string(c.headDim));
  md.emplace_back("tokenizer", fs::is_regular_file(dir / "tokenizer.json", ec)
                                   ? "tokenizer.json"
                                   : "(none)");
  flattenJson(configJson, "", md);
  // Extra tensors (e.g. rotary inv_freq buffers, a tied lm_head copy) are
  // not needed; list them so a surprising checkpoint is visible.
  std::vector<std::string> ignored;
  for (const auto &kv : byName)
    if (!used.count(kv.first))
      ignored.push_back(kv.first);
  if (!ignored.empty())
    md.emplace_back("ignored_tensors", summarizeNames(ignored));
  return m;
}

std::unique_ptr<Model> ModelLoader::openGguf(const std::string &path) {
  std::unique_ptr<Model> m(new Model());
  m->format_ = ModelFormat::Gguf;
  m->path_ = path;
  m->gguf_ = std::make_unique<GgufFile>(GgufFile::open(path));
  const GgufFile &g = *m->gguf_;

  std::optional<std::string> arch = g.getOptionalString("general.architecture");
  if (!arch)
    throw FormatError(path, "general.architecture", "missing required key");
  if (*arch != "bitnet")
    throw FormatError(path, "general.architecture",
                      "unsupported architecture '" + *arch +
                          "' (bitloom reads bitnet)");

  const std::string p = "bitnet.";
  ModelConfig &c = m->config_;
  c.numLayers = int64_t(g.getUInt(p + "block_count"));
  c.maxPositionEmbeddings = int64_t(g.getUInt(p + "context_length"));
  c.hiddenSize = int64_t(g.getUInt(p + "embedding_length"));
  c.intermediateSize = int64_t(g.getUInt(p + "feed_forward_length"));
  c.numHeads = int64_t(g.getUInt(p + "attention.head_count"));
  c.numKvHeads = int64_t(g.getOptionalUInt(p + "attention.head_count_kv")
                             .value_or(uint64_t(c.numHeads)));
  c.rmsNormEps = g.getFloat(p + "attention.layer_norm_rms_epsilon");
  // llama.cpp's default base applies only when the key is absent.
  c.ropeTheta = g.getOptionalFloat(p + "rope.freq_base").value_or(10000.0);
  if (c.numHeads <= 0)
    throw FormatError(path, p + "attention.head_count", "must be positive");
  if (auto kl = g.getOptionalUInt(p + "attention.key_length")) {
    c.headDim = int64_t(*kl);
  } else {
    if (c.hiddenSize % c.numHeads != 0)
      throw FormatError(path, p + "attention.head_count",
                        std::to_string(c.numHeads) +
                            " does not divide embedding_length " +
                            std::to_string(c.hiddenSize));
    c.headDim = c.hiddenSize / c.numHeads;
  }
  if (auto rd = g.getOptionalUInt(p + "rope.dimension_count"))
    if (int64_t(*rd) != c.headDim)
      throw FormatError(path, p + "rope.dimension_count",
                        std::to_string(*rd) + " != head dim " +
                            std::to_string(c.headDim) +
                            " (partial RoPE is not supported)");
  if (auto st = g.getOptionalString(p + "rope.scaling.type")) {
    double factor = g.getOptionalFloat(p + "rope.scaling.factor").value_or(1.0);
    if (!(*st == "none" || (*st == "linear" && factor == 1.0)))
      throw FormatError(path, p + "rope.scaling.type",
                        "unsupported RoPE scaling '" + *st + "'");
  }
  const GgufTensor *embd = g.findTensor("token_embd.weight");
  if (auto vs = g.getOptionalUInt(p + "vocab_size")) {
    c.vocabSize = int64_t(*vs);
  } else if (const GgufValue *tokens = g.find("tokenizer.ggml.tokens");
             tokens &&
             std::holds_alternative<std::vector<GgufValue>>(tokens->value)) {
    c.vocabSize =
        int64_t(std::get<std::vector<GgufValue>>(tokens->value).size());
  } else if (embd && embd->dims.size() == 2) {
    c.vocabSize = embd->dims[1];
  } else {
    throw FormatError(path, p + "vocab_size",
                      "missing (and no tokenizer.ggml.tokens to count)");
  }
  if (auto id = g.getOptionalUInt("tokenizer.ggml.bos_token_id"))
    c.bosTokenId = int64_t(*id);
  if (auto id = g.getOptionalUInt("tokenizer.ggml.eos_token_id"))
    c.eosTokenId = int64_t(*id);
  // Upstream llama.cpp always ties; an output.weight means untied.
  c.tieWordEmbeddings = g.findTensor("output.weight") == nullptr;
  c.hiddenAct = "relu2"; // arch bitnet has no activation key: see DESIGN.md
  c.weightQuant = WeightQuant::Offline;
  c.validate(path);

  std::set<std::string> used;
  for (const TensorSpec &e : detail::tensorLayout(c)) {
    const GgufTensor *gt = g.findTensor(e.ggufName);
    if (!gt)
      throw FormatError(path, e.ggufName, "missing tensor (" + e.hfName + ")");
    used.insert(e.ggufName);
    std::optional<DType> dt = ggmlTypeToDType(gt->type);
    const bool projection = e.role == Role::Projection;
    const bool typeOk =
        dt && (isFloatDType(*dt) ||
               (projection && (*dt == DType::TQ1_0 || *dt == DType::TQ2_0)));
    if (!typeOk)
      throw FormatError(path, e.ggufName,
                        "type " + ggmlTypeName(gt->type) +
                            (projection ? " but expected F32, F16, BF16, "
                                          "TQ1_0 or TQ2_0"
                                        : " but expected F32, F16 or BF16"));
    std::vector<int64_t> shape(gt->dims.rbegin(), gt->dims.rend());
    if (shape != e.shape) {
      throw FormatError(path, e.ggufName,
                        "shape " + shapeString(shape) + " (GGUF dims " +
                            shapeString(gt->dims) + ") but config says " +
                            shapeString(e.shape) + " (" + e.hfName + ")");
    }
    ModelTensor t;
    t.name = e.hfName;
    t.fileName = e.ggufName;
    t.filePath = path;
    t.dtype = *dt;
    t.shape = e.shape;
    t.data = gt->data;
    t.byteSize = gt->byteSize;
    t.isProjection = projection;
    t.packing = *dt == DType::TQ1_0   ? TensorPacking::TQ1_0
                : *dt == DType::TQ2_0 ? TensorPacking::TQ2_0
                                      : TensorPacking::Plain;
    if (projection) {
      // Optional per-tensor output scale (llama.cpp: wq_s etc.).
      const std::string scaleName =
          e.ggufName.substr(0,
                            e.ggufName.size() - std::string("weight").size()) +
          "scale";
      if (const GgufTensor *st = g.findTensor(scaleName)) {
        std::optional<DType> sdt = ggmlTypeToDType(st->type);
        if (!sdt || !isFloatDType(*sdt))
          throw FormatError(path, scaleName,
                            "type " + ggmlTypeName(st->type) +
                                " but expected F32, F16 or BF16");
        if (st->numElements() != 1)
          throw FormatError(path, scaleName,
                            "dims " + shapeString(st->dims) +
                                " but a per-tensor scale has one element");
        float v = readScalar(*sdt, st->data);
        if (!std::isfinite(v))
          throw FormatError(path, scaleName, "is not finite");
        t.outputScale = v;
        used.insert(scaleName);
      }
    }
    m->tensors_.push_back(std::move(t));
  }
  finish(*m);

  auto &md = m->metadata_;
  md.emplace_back("format", "GGUF v" + std::to_string(g.version()));
  uint64_t params = 0;
  for (const ModelTensor &t : m->tensors_)
    params += t.numElements();
  md.emplace_back("parameters", std::to_string(params));
  for (const auto &kv : g.metadata())
    md.emplace_back(kv.first, formatGgufValue(kv.second));
  std::vector<std::string> ignored;
  for (const GgufTensor &t : g.tensors())
    if (!used.count(t.name))
      ignored.push_back(t.name);
  if (!ignored.empty())
    md.emplace_back("ignored_tensors", summarizeNames(ignored));
  return m;
}

//===----------------------------------------------------------------------===//
// Model
//===----------------------------------------------------------------------===//

Model::Model() = default;
Model::~Model() = default;

std::unique_ptr<Model> Model::open(const std::string &path) {
  std::error_code ec;
  fs::path p(path);
  if (fs::is_directory(p, ec))
    return ModelLoader::openHf(p);
  if (!fs::exists(p, ec))
    throw FormatError(path, "", "no such file or directory");
  if (p.filename() == "config.json")
    return ModelLoader::openHf(p.has_parent_path() ? p.parent_path()
                                                   : fs::path("."));
  char magic[4] = {0, 0, 0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    in.read(magic, 4);
  }
  if (std::memcmp(magic, "GGUF", 4) == 0)
    return ModelLoader::openGguf(path);
  if (p.extension() == ".safetensors")
    throw FormatError(path, "",
                      "a .safetensors file alone is not a model: pass the "
                      "directory that holds it and config.json");
  throw FormatError(path, "",
                    "neither a GGUF file nor a Hugging Face model directory");
}

const ModelTensor *Model::find(const std::string &hfName) const {
  auto it = byName_.find(hfName);
  return it == byName_.end() ? nullptr : &tensors_[it->second];
}

void Model::dequantize(const ModelTensor &t, float *out) const {
  dequantizeRows(t, 0, t.shape.empty() ? 1 : t.shape[0], out);
}

void Model::dequantizeRows(const ModelTensor &t, int64_t rowBegin,
                           int64_t rowEnd, float *out) const {
  const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
  const uint64_t cols =
      t.shape.size() <= 1
          ? 1
          : product(std::vector<int64_t>(t.shape.begin() + 1, t.shape.end()));
  if (rowBegin < 0 || rowBegin > rowEnd || rowEnd > rows)
    throw std::out_of_range("dequantizeRows: rows [" +
                            std::to_string(rowBegin) + ", " +
                            std::to_string(rowEnd) + ") of " + t.name +
                            " with " + std::to_string(rows) + " rows");
  const uint64_t n = uint64_t(rowEnd - rowBegin) * cols;
  switch (t.packing) {
  case TensorPacking::Plain:
    bitloom::dequantize(t.dtype,
                        t.data + uint64_t(rowBegin) * cols * dtypeSize(t.dtype),
                        out, n);
    break;
  case TensorPacking::TQ1_0:
  case TensorPacking::TQ2_0:
    // Blocks run along the row (the input dim), rows are contiguous.
    bitloom::dequantize(
        t.dtype, t.data + uint64_t(rowBegin) * dtypeStorageBytes(t.dtype, cols),
        out, n);
    break;
  case TensorPacking::HfUint8: {
    // Packed row r holds logical rows r + i*P (P = rows/4) in bits 2i..2i+1;
    // value = code - 1, as transformers' unpack_weights (code 3 reads 2).
    const int64_t packedRows = rows / 4;
    const float s = t.outputScale;
    for (int64_t r = rowBegin; r < rowEnd; ++r) {
      const int64_t lane = r / packedRows;
      const uint8_t *src = t.data + uint64_t(r % packedRows) * cols;
      float *dst = out + uint64_t(r - rowBegin) * cols;
      const int shift = int(2 * lane);
      for (uint64_t col = 0; col < cols; ++col)
        dst[col] = float(int((src[col] >> shift) & 3) - 1) * s;
    }
    return;
  }
  }
  if (t.outputScale != 1.0f)
    for (uint64_t i = 0; i < n; ++i)
      out[i] *= t.outputScale;
}

} // namespace bitloom

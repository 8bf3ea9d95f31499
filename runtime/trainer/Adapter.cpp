//===- Adapter.cpp - LoRA adapters in PEFT and llama.cpp formats ----------===//

#include "trainer/Adapter.h"

#include "formats/Error.h"
#include "formats/Gguf.h"
#include "formats/MappedFile.h"
#include "formats/Safetensors.h"
#include "model/Model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace bitloom::trainer {

int64_t FloatTensor::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

namespace {

std::string shapeStr(const std::vector<int64_t> &s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i)
    o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

// "self_attn.q_proj" -> "q_proj".
std::string moduleLeaf(const ProjectionName &p) {
  std::string m = p.hfModule;
  return m.substr(m.find('.') + 1);
}

const ProjectionName *projectionByShort(const std::string &s) {
  for (const ProjectionName &p : projectionNames())
    if (s == p.shortName)
      return &p;
  return nullptr;
}

// [out, in] of a projection.
std::pair<int64_t, int64_t> projectionShape(const ModelConfig &c,
                                            const ProjectionName &p) {
  const int64_t h = c.hiddenSize, f = c.intermediateSize;
  const int64_t q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  std::string s = p.shortName;
  if (s == "q")
    return {q, h};
  if (s == "k" || s == "v")
    return {kv, h};
  if (s == "o")
    return {h, q};
  if (s == "gate" || s == "up")
    return {f, h};
  return {h, f}; // down
}

std::string readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

std::vector<std::string>
normalizeLoraTargets(const std::vector<std::string> &names,
                     const std::string &source, const std::string &field) {
  std::set<std::string> chosen;
  for (const std::string &raw : names) {
    std::string n = raw;
    if (n == "all" || n == "all-linear") {
      for (const ProjectionName &p : projectionNames())
        chosen.insert(p.shortName);
      continue;
    }
    if (n == "attn") {
      for (const char *s : {"q", "k", "v", "o"})
        chosen.insert(s);
      continue;
    }
    if (n == "ffn" || n == "mlp") {
      for (const char *s : {"gate", "up", "down"})
        chosen.insert(s);
      continue;
    }
    const ProjectionName *hit = nullptr;
    for (const ProjectionName &p : projectionNames())
      if (n == p.shortName || n == p.hfModule || n == moduleLeaf(p) ||
          n == p.ggufName)
        hit = &p;
    if (!hit)
      throw FormatError(source, field,
                        "unknown LoRA target \"" + raw +
                            "\" (use q k v o gate up down, their PEFT names "
                            "q_proj ... down_proj, attn, ffn or all)");
    chosen.insert(hit->shortName);
  }
  std::vector<std::string> out;
  for (const ProjectionName &p : projectionNames())
    if (chosen.count(p.shortName))
      out.push_back(p.shortName);
  return out;
}

std::string peftLoraName(int64_t layer, const ProjectionName &p, bool isA) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." +
         p.hfModule + (isA ? ".lora_A.weight" : ".lora_B.weight");
}

std::string ggufLoraName(int64_t layer, const ProjectionName &p, bool isA) {
  return "blk." + std::to_string(layer) + "." + p.ggufName +
         (isA ? ".weight.lora_a" : ".weight.lora_b");
}

std::vector<LoraTensorSpec> loraTensorSpecs(const ModelConfig &model,
                                            const LoraConfig &lora) {
  std::vector<LoraTensorSpec> out;
  for (int64_t l = 0; l < model.numLayers; ++l)
    for (const ProjectionName &p : projectionNames()) {
      if (std::find(lora.targets.begin(), lora.targets.end(), p.shortName) ==
          lora.targets.end())
        continue;
      auto [o, i] = projectionShape(model, p);
      out.push_back({peftLoraName(l, p, true), {lora.rank, i}, l, &p, true});
      out.push_back({peftLoraName(l, p, false), {o, lora.rank}, l, &p, false});
    }
  return out;
}

void validateAdapter(const LoraConfig &lora, const TensorMap &tensors,
                     const ModelConfig &model, const std::string &source) {
  if (lora.rank <= 0)
    throw FormatError(source, "r", "LoRA rank must be positive");
  if (lora.targets.empty())
    throw FormatError(source, "target_modules", "no LoRA targets");
  std::set<std::string> expected;
  for (const LoraTensorSpec &s : loraTensorSpecs(model, lora)) {
    expected.insert(s.name);
    auto it = tensors.find(s.name);
    if (it == tensors.end())
      throw FormatError(source, s.name, "missing");
    const FloatTensor &t = it->second;
    if (t.shape != s.shape) {
      auto [o, i] = projectionShape(model, *s.projection);
      throw FormatError(source, s.name,
                        "shape " + shapeStr(t.shape) + " but rank " +
                            std::to_string(lora.rank) + " and the model's " +
                            s.projection->hfModule + " " + shapeStr({o, i}) +
                            " need " + shapeStr(s.shape) +
                            (s.isA ? " (A is [r, in])" : " (B is [out, r])"));
    }
    if (int64_t(t.data.size()) != t.numElements())
      throw FormatError(source, s.name,
                        "holds " + std::to_string(t.data.size()) +
                            " values for shape " + shapeStr(t.shape));
  }
  for (const auto &[name, t] : tensors)
    if (!expected.count(name))
      throw FormatError(
          source, name,
          "not a LoRA tensor of this model and configuration "
          "(" +
              std::to_string(model.numLayers) + " layers, targets " +
              [&] {
                std::string s;
                for (const std::string &x : lora.targets)
                  s += (s.empty() ? "" : ",") + x;
                return s;
              }() +
              ")");
}

//===----------------------------------------------------------------------===//
// Export
//===----------------------------------------------------------------------===//

namespace {

// Converted bytes of a tensor in `dtype`.
std::vector<uint8_t> encodeTensor(const FloatTensor &t, DType dtype) {
  std::vector<uint8_t> out;
  if (dtype == DType::F32) {
    out.resize(t.data.size() * 4);
    std::memcpy(out.data(), t.data.data(), out.size());
    return out;
  }
  out.resize(t.data.size() * 2);
  for (size_t i = 0; i < t.data.size(); ++i) {
    uint16_t h =
        dtype == DType::F16 ? floatToHalf(t.data[i]) : floatToBf16(t.data[i]);
    out[2 * i] = uint8_t(h);
    out[2 * i + 1] = uint8_t(h >> 8);
  }
  return out;
}

nlohmann::json number(double v) {
  // PEFT writes integers for integral values (lora_alpha: 16).
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15)
    return nlohmann::json(int64_t(v));
  return nlohmann::json(v);
}

} // namespace

void exportPeftAdapter(const std::string &dir, const LoraConfig &lora,
                       const TensorMap &tensors, const ModelConfig &model,
                       DType dtype) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw FormatError(dir, "dtype",
                      std::string("PEFT adapters are F32, F16 or BF16, not ") +
                          dtypeName(dtype));
  validateAdapter(lora, tensors, model, dir);
  fs::create_directories(dir);
  std::vector<LoraTensorSpec> specs = loraTensorSpecs(model, lora);
  std::vector<std::vector<uint8_t>> bytes;
  bytes.reserve(specs.size());
  std::vector<SafetensorsEntry> entries;
  for (const LoraTensorSpec &s : specs) {
    bytes.push_back(encodeTensor(tensors.at(s.name), dtype));
    entries.push_back(
        {s.name, dtype, s.shape, bytes.back().data(), bytes.back().size()});
  }
  writeSafetensors((fs::path(dir) / "adapter_model.safetensors").string(),
                   entries, {{"format", "pt"}});

  nlohmann::json targets = nlohmann::json::array();
  for (const std::string &t : lora.targets)
    targets.push_back(moduleLeaf(*projectionByShort(t)));
  // Keys as PEFT's LoraConfig.save_pretrained writes them (sorted).
  nlohmann::ordered_json config = {
      {"alpha_pattern", nlohmann::json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", lora.baseModel},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"lora_alpha", number(lora.alpha)},
      {"lora_dropout", number(lora.dropout)},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", lora.rank},
      {"rank_pattern", nlohmann::json::object()},
      {"revision", nullptr},
      {"target_modules", targets},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", false},
      {"use_rslora", false},
  };
  std::string text = config.dump(2) + "\n";
  writeFileAtomically((fs::path(dir) / "adapter_config.json").string(),
                      text.data(), text.size());
}

void exportGgufLoraAdapter(const std::string &path, const LoraConfig &lora,
                           const TensorMap &tensors, const ModelConfig &model,
                           DType dtype, const std::string &name) {
  if (dtype != DType::F32 && dtype != DType::F16)
    throw FormatError(path, "dtype",
                      std::string("llama.cpp LoRA adapters are F32 or F16, "
                                  "not ") +
                          dtypeName(dtype));
  validateAdapter(lora, tensors, model, path);
  GgufWriter w;
  // convert_lora_to_gguf.py: the base model's architecture, the adapter
  // type keys, the alpha as f32 (llama-adapter.cpp reads it with
  // gguf_get_val_f32), and the file type the converter's ModelBase adds.
  w.set("general.architecture", GgufValue::string("bitnet"));
  w.set("general.type", GgufValue::string("adapter"));
  if (!name.empty())
    w.set("general.name", GgufValue::string(name));
  w.set("general.file_type", GgufValue::u32(dtype == DType::F32 ? 0 : 1));
  w.set("adapter.type", GgufValue::string("lora"));
  w.set("adapter.lora.alpha", GgufValue::f32(float(lora.alpha)));
  w.set("general.quantization_version", GgufValue::u32(2));
  std::vector<LoraTensorSpec> specs = loraTensorSpecs(model, lora);
  std::vector<std::vector<uint8_t>> bytes;
  bytes.reserve(specs.size());
  for (const LoraTensorSpec &s : specs) {
    bytes.push_back(encodeTensor(tensors.at(s.name), dtype));
    // numpy [rows, cols] is ggml ne {cols, rows}.
    w.addTensor(ggufLoraName(s.layer, *s.projection, s.isA),
                uint32_t(dtype == DType::F32 ? GgmlType::F32 : GgmlType::F16),
                {s.shape[1], s.shape[0]}, bytes.back().data(),
                bytes.back().size());
  }
  w.write(path);
}

//===----------------------------------------------------------------------===//
// Import
//===----------------------------------------------------------------------===//

namespace {

FloatTensor toFloat(DType dtype, const std::vector<int64_t> &shape,
                    const uint8_t *data, uint64_t n, const std::string &file,
                    const std::string &name) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw FormatError(file, name,
                      std::string("dtype ") + dtypeName(dtype) +
                          " (LoRA weights must be F32, F16 or BF16)");
  FloatTensor t;
  t.shape = shape;
  t.data.resize(n);
  dequantize(dtype, data, t.data.data(), n);
  return t;
}

// Parses base_model.model.model.layers.{i}.{module}.lora_{A,B}.weight.
bool parsePeftName(const std::string &name, int64_t &layer,
                   const ProjectionName *&proj, bool &isA) {
  const std::string prefix = "base_model.model.model.layers.";
  if (name.rfind(prefix, 0) != 0)
    return false;
  size_t p = prefix.size(), dot = name.find('.', p);
  if (dot == std::string::npos || dot == p)
    return false;
  std::string num = name.substr(p, dot - p);
  if (num.find_first_not_of("0123456789") != std::string::npos ||
      num.size() > 6)
    return false;
  layer = std::stoll(num);
  std::string rest = name.substr(dot + 1);
  for (const ProjectionName &pn : projectionNames())
    for (bool a : {true, false})
      if (rest == std::string(pn.hfModule) +
                      (a ? ".lora_A.weight" : ".lora_B.weight")) {
        proj = &pn;
        isA = a;
        return true;
      }
  return false;
}

bool parseGgufName(const std::string &name, int64_t &layer,
                   const ProjectionName *&proj, bool &isA) {
  if (name.rfind("blk.", 0) != 0)
    return false;
  size_t dot = name.find('.', 4);
  if (dot == std::string::npos || dot == 4)
    return false;
  std::string num = name.substr(4, dot - 4);
  if (num.find_first_not_of("0123456789") != std::string::npos ||
      num.size() > 6)
    return false;
  layer = std::stoll(num);
  std::string rest = name.substr(dot + 1);
  for (const ProjectionName &pn : projectionNames())
    for (bool a : {true, false})
      if (rest == std::string(pn.ggufName) +
                      (a ? ".weight.lora_a" : ".weight.lora_b")) {
        proj = &pn;
        isA = a;
        return true;
      }
  return false;
}

// Checks an adapter read without a model: A/B pairs complete, one rank,
// shapes agreeing per projection type, layers 0..n-1; fills targets.
void checkSelfConsistent(LoadedAdapter &a, const std::string &source) {
  struct Pair {
    const FloatTensor *A = nullptr, *B = nullptr;
  };
  std::map<std::pair<int64_t, std::string>, Pair> pairs;
  std::set<std::string> targets;
  int64_t maxLayer = -1;
  for (const auto &[name, t] : a.tensors) {
    int64_t layer;
    const ProjectionName *p;
    bool isA;
    if (!parsePeftName(name, layer, p, isA))
      throw FormatError(source, name, "not a LoRA tensor name bitloom knows");
    if (t.shape.size() != 2)
      throw FormatError(source, name, "not a matrix: " + shapeStr(t.shape));
    (isA ? pairs[{layer, p->shortName}].A : pairs[{layer, p->shortName}].B) =
        &t;
    targets.insert(p->shortName);
    maxLayer = std::max(maxLayer, layer);
  }
  if (pairs.empty())
    throw FormatError(source, "", "no LoRA tensors");
  std::map<std::string, std::pair<int64_t, int64_t>> ioByTarget;
  for (const auto &[key, pr] : pairs) {
    const ProjectionName *p = projectionByShort(key.second);
    if (!pr.A || !pr.B)
      throw FormatError(source, peftLoraName(key.first, *p, !pr.A),
                        "missing (its A/B partner is present)");
    int64_t r = pr.A->shape[0];
    if (a.config.rank == 0)
      a.config.rank = r;
    if (r != a.config.rank || pr.B->shape[1] != a.config.rank)
      throw FormatError(
          source, peftLoraName(key.first, *p, r != a.config.rank),
          "rank " + std::to_string(r == a.config.rank ? pr.B->shape[1] : r) +
              " differs from the adapter's rank " +
              std::to_string(a.config.rank));
    std::pair<int64_t, int64_t> io = {pr.A->shape[1], pr.B->shape[0]};
    auto [it, fresh] = ioByTarget.emplace(key.second, io);
    if (!fresh && it->second != io)
      throw FormatError(source, peftLoraName(key.first, *p, true),
                        "shape differs from the same projection in other "
                        "layers");
  }
  for (int64_t l = 0; l <= maxLayer; ++l)
    for (const std::string &t : targets)
      if (!pairs.count({l, t}))
        throw FormatError(source, peftLoraName(l, *projectionByShort(t), true),
                          "missing (other layers adapt this projection)");
  a.config.targets = normalizeLoraTargets(
      std::vector<std::string>(targets.begin(), targets.end()), source);
}

} // namespace

LoadedAdapter importPeftAdapter(const std::string &dir,
                                const ModelConfig *model) {
  const std::string cfgPath = (fs::path(dir) / "adapter_config.json").string();
  const std::string wPath =
      (fs::path(dir) / "adapter_model.safetensors").string();
  if (!fs::exists(cfgPath))
    throw FormatError(cfgPath, "", "missing (not a PEFT adapter directory)");
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(readText(cfgPath));
  } catch (const std::exception &e) {
    throw FormatError(cfgPath, "", std::string("invalid JSON: ") + e.what());
  }
  if (!cfg.is_object())
    throw FormatError(cfgPath, "", "not a JSON object");
  LoadedAdapter a;
  a.format = AdapterFormat::Peft;
  if (cfg.value("peft_type", "") != "LORA")
    throw FormatError(cfgPath, "peft_type", "must be \"LORA\"");
  auto numberOf = [&](const char *key) -> double {
    if (!cfg.contains(key) || !cfg[key].is_number())
      throw FormatError(cfgPath, key, "missing or not a number");
    return cfg[key].get<double>();
  };
  double r = numberOf("r");
  if (r <= 0 || r != std::floor(r))
    throw FormatError(cfgPath, "r", "must be a positive integer");
  int64_t rank = int64_t(r);
  a.config.alpha = numberOf("lora_alpha");
  a.config.dropout =
      cfg.contains("lora_dropout") && cfg["lora_dropout"].is_number()
          ? cfg["lora_dropout"].get<double>()
          : 0.0;
  if (cfg.contains("base_model_name_or_path") &&
      cfg["base_model_name_or_path"].is_string())
    a.config.baseModel = cfg["base_model_name_or_path"].get<std::string>();
  // Options that change what the matrices mean, which bitloom does not
  // implement: refuse rather than load an adapter that would compute
  // something else.
  auto mustBe = [&](const char *key, const nlohmann::json &ok,
                    const char *why) {
    if (cfg.contains(key) && !cfg[key].is_null() && cfg[key] != ok)
      throw FormatError(cfgPath, key, why);
  };
  mustBe("use_rslora", false, "rank-stabilized LoRA is not supported");
  mustBe("use_dora", false, "DoRA is not supported");
  mustBe("fan_in_fan_out", false, "fan_in_fan_out adapters are not supported");
  mustBe("bias", "none", "LoRA biases are not supported (bias must be none)");
  for (const char *key : {"rank_pattern", "alpha_pattern"})
    if (cfg.contains(key) && !cfg[key].is_null() &&
        !(cfg[key].is_object() && cfg[key].empty()))
      throw FormatError(cfgPath, key,
                        "per-module ranks / alphas are not supported");
  if (cfg.contains("modules_to_save") && !cfg["modules_to_save"].is_null() &&
      !(cfg["modules_to_save"].is_array() && cfg["modules_to_save"].empty()))
    throw FormatError(cfgPath, "modules_to_save",
                      "fully trained modules are not supported");
  if (cfg.contains("layers_to_transform") &&
      !cfg["layers_to_transform"].is_null())
    throw FormatError(cfgPath, "layers_to_transform",
                      "adapters of some layers only are not supported");
  if (!cfg.contains("target_modules"))
    throw FormatError(cfgPath, "target_modules", "missing");
  std::vector<std::string> names;
  const nlohmann::json &tm = cfg["target_modules"];
  if (tm.is_string()) {
    names.push_back(tm.get<std::string>()); // a regex unless a plain name
  } else if (tm.is_array()) {
    for (const auto &x : tm) {
      if (!x.is_string())
        throw FormatError(cfgPath, "target_modules", "not a list of names");
      names.push_back(x.get<std::string>());
    }
  } else {
    throw FormatError(cfgPath, "target_modules", "not a list of names");
  }
  std::vector<std::string> targets =
      normalizeLoraTargets(names, cfgPath, "target_modules");

  SafetensorsFile st = SafetensorsFile::open(wPath);
  for (const SafetensorsTensor &t : st.tensors())
    a.tensors[t.name] =
        toFloat(t.dtype, t.shape, t.data, t.numElements(), wPath, t.name);
  if (model) {
    a.config.rank = rank;
    a.config.targets = targets;
    validateAdapter(a.config, a.tensors, *model, wPath);
    return a;
  }
  checkSelfConsistent(a, wPath);
  if (a.config.rank != rank)
    throw FormatError(
        wPath, "",
        "tensors have rank " + std::to_string(a.config.rank) +
            " but adapter_config.json says r = " + std::to_string(rank));
  if (a.config.targets != targets)
    throw FormatError(wPath, "",
                      "tensors adapt other modules than adapter_config.json's "
                      "target_modules");
  return a;
}

LoadedAdapter importGgufLoraAdapter(const std::string &path,
                                    const ModelConfig *model) {
  GgufFile g = GgufFile::open(path);
  if (g.getOptionalString("general.type").value_or("") != "adapter")
    throw FormatError(path, "general.type",
                      "must be \"adapter\" (is this a model, not a LoRA?)");
  if (g.getOptionalString("adapter.type").value_or("") != "lora")
    throw FormatError(path, "adapter.type", "must be \"lora\"");
  std::string arch = g.getOptionalString("general.architecture").value_or("");
  if (arch != "bitnet")
    throw FormatError(path, "general.architecture",
                      "\"" + arch + "\", but bitloom adapts \"bitnet\" models");
  LoadedAdapter a;
  a.format = AdapterFormat::Gguf;
  std::optional<double> alpha = g.getOptionalFloat("adapter.lora.alpha");
  for (const GgufTensor &t : g.tensors()) {
    int64_t layer;
    const ProjectionName *p;
    bool isA;
    if (!parseGgufName(t.name, layer, p, isA))
      throw FormatError(path, t.name,
                        "not a LoRA tensor bitloom knows (expected "
                        "blk.N.<attn_q|...|ffn_down>.weight.lora_a/lora_b)");
    std::optional<DType> dt = ggmlTypeToDType(t.type);
    if (!dt || t.dims.size() != 2)
      throw FormatError(path, t.name,
                        "must be a 2-D F32, F16 or BF16 tensor (is " +
                            ggmlTypeName(t.type) + " " + shapeStr(t.dims) +
                            ")");
    // ggml ne {cols, rows} -> [rows, cols].
    a.tensors[peftLoraName(layer, *p, isA)] = toFloat(
        *dt, {t.dims[1], t.dims[0]}, t.data, t.numElements(), path, t.name);
  }
  checkSelfConsistent(a, path);
  // llama.cpp scales by alpha / rank, or by 1 when alpha is absent (0).
  a.config.alpha = alpha && *alpha != 0.0 ? *alpha : double(a.config.rank);
  if (model)
    validateAdapter(a.config, a.tensors, *model, path);
  return a;
}

LoadedAdapter importAdapter(const std::string &path, const ModelConfig *model) {
  if (fs::is_directory(path)) {
    if (!fs::exists(fs::path(path) / "adapter_config.json"))
      throw FormatError(path, "",
                        "a directory without adapter_config.json is not a "
                        "PEFT adapter");
    return importPeftAdapter(path, model);
  }
  if (fs::is_regular_file(path)) {
    std::ifstream in(path, std::ios::binary);
    char magic[4] = {};
    in.read(magic, 4);
    if (std::string(magic, 4) == "GGUF")
      return importGgufLoraAdapter(path, model);
    if (fs::path(path).filename() == "adapter_config.json" ||
        fs::path(path).filename() == "adapter_model.safetensors")
      return importPeftAdapter(fs::path(path).parent_path().string(), model);
    throw FormatError(path, "",
                      "neither a PEFT adapter directory nor a GGUF LoRA file");
  }
  throw FormatError(path, "", "no such adapter file or directory");
}

} // namespace bitloom::trainer

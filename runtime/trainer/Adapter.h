//===- Adapter.h - LoRA adapters in PEFT and llama.cpp formats --*- C++ -*-===//
//
// A trained LoRA adapter leaves bitloom in the two formats people load:
//
//  - PEFT: a directory with adapter_model.safetensors (tensors named
//    base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight, A
//    [r, in], B [out, r]) and adapter_config.json (peft_type LORA, r,
//    lora_alpha, lora_dropout, target_modules as Hugging Face module names,
//    bias none, task_type CAUSAL_LM, base_model_name_or_path, fan_in_fan_out
//    false, use_rslora false).
//  - llama.cpp GGUF LoRA, as convert_lora_to_gguf.py writes it:
//    general.architecture "bitnet", general.type "adapter", adapter.type
//    "lora", adapter.lora.alpha (f32), tensors blk.{i}.attn_q.weight.lora_a
//    and .lora_b holding the PEFT matrices unchanged - numpy shape [r, in]
//    and [out, r], i.e. ggml ne {in, r} and {r, out}, which is what
//    llama-adapter.cpp checks against the base tensor's ne {in, out} - in
//    F32 or F16.
//
// Inside bitloom adapters always carry PEFT names (the names loom IR uses);
// GGUF names are mapped with projectionNames().
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TRAINER_ADAPTER_H
#define BITLOOM_TRAINER_ADAPTER_H

#include "formats/DType.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bitloom {
struct ModelConfig;
struct ProjectionName;
} // namespace bitloom

namespace bitloom::trainer {

/// A host float32 tensor, row-major.
struct FloatTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  int64_t numElements() const;
};
using TensorMap = std::map<std::string, FloatTensor>;

struct LoraConfig {
  int64_t rank = 0;
  double alpha = 8.0; // PEFT's LoraConfig default
  double dropout = 0.0;
  /// Short projection names in projectionNames() order (q k v o gate up
  /// down).
  std::vector<std::string> targets;
  /// adapter_config.json base_model_name_or_path.
  std::string baseModel;
};

/// Accepts short names (q, gate), PEFT module names (q_proj,
/// self_attn.q_proj, mlp.up_proj), and the groups all / all-linear / attn /
/// ffn; returns short names in canonical order without duplicates. Throws
/// FormatError(source, field, ...) naming the unknown entry.
std::vector<std::string>
normalizeLoraTargets(const std::vector<std::string> &names,
                     const std::string &source = "",
                     const std::string &field = "target_modules");

/// base_model.model.model.layers.{layer}.{hfModule}.lora_{A,B}.weight
std::string peftLoraName(int64_t layer, const ProjectionName &p, bool isA);
/// blk.{layer}.{ggufName}.weight.lora_{a,b}
std::string ggufLoraName(int64_t layer, const ProjectionName &p, bool isA);

/// Every tensor a LoRA config implies for a model, with its shape, in
/// layer / projection / A-then-B order.
struct LoraTensorSpec {
  std::string name; // PEFT name
  std::vector<int64_t> shape;
  int64_t layer;
  const ProjectionName *projection;
  bool isA;
};
std::vector<LoraTensorSpec> loraTensorSpecs(const ModelConfig &model,
                                            const LoraConfig &lora);

/// Checks that `tensors` are exactly the ones loraTensorSpecs() lists, with
/// those shapes and the right element counts; FormatError(source, tensor,
/// ...) otherwise ("missing", "not a LoRA tensor of this model", "shape [..]
/// but rank r and the model's q projection [out, in] need [..]").
void validateAdapter(const LoraConfig &lora, const TensorMap &tensors,
                     const ModelConfig &model, const std::string &source);

/// Writes dir/adapter_model.safetensors (in `dtype`: F32, F16 or BF16) and
/// dir/adapter_config.json, each atomically, after validateAdapter().
void exportPeftAdapter(const std::string &dir, const LoraConfig &lora,
                       const TensorMap &tensors, const ModelConfig &model,
                       DType dtype = DType::F32);

/// Writes a llama.cpp LoRA GGUF (`dtype` F32 or F16) atomically, after
/// validateAdapter(). `name` goes to general.name when not empty.
void exportGgufLoraAdapter(const std::string &path, const LoraConfig &lora,
                           const TensorMap &tensors, const ModelConfig &model,
                           DType dtype = DType::F32,
                           const std::string &name = "");

enum class AdapterFormat { Peft, Gguf };

struct LoadedAdapter {
  AdapterFormat format;
  LoraConfig config;
  TensorMap tensors; // PEFT names, float32
};

/// Reads a PEFT directory (the one holding adapter_config.json) or a .gguf
/// LoRA file, chosen by what `path` is. With `model`, the adapter is
/// validated against it (validateAdapter); without, its tensors are checked
/// to be consistent among themselves (pairs complete, one rank).
LoadedAdapter importAdapter(const std::string &path,
                            const ModelConfig *model = nullptr);
LoadedAdapter importPeftAdapter(const std::string &dir,
                                const ModelConfig *model = nullptr);
LoadedAdapter importGgufLoraAdapter(const std::string &path,
                                    const ModelConfig *model = nullptr);

} // namespace bitloom::trainer

#endif // BITLOOM_TRAINER_ADAPTER_H

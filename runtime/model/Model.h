//===- Model.h - A BitNet b1.58 checkpoint, whatever its format -*- C++ -*-===//
//
// Opens a Hugging Face directory (config.json + model.safetensors or a
// sharded model.safetensors.index.json, tokenizer.json) or a GGUF file of
// arch "bitnet", validates it completely, and presents the weights under the
// Hugging Face tensor names (the canonical names in loom IR and in PEFT
// adapters), without copying them: tensors point into memory mappings.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_MODEL_MODEL_H
#define BITLOOM_MODEL_MODEL_H

#include "formats/DType.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bitloom {

class MappedFile;
class SafetensorsFile;
class GgufFile;

enum class ModelFormat { HuggingFace, Gguf };

/// How projection weights are stored.
///  - Online: float master weights, quantized to ternary at every forward
///    (HF quantization_config.quantization_mode "online", or no
///    quantization_config).
///  - Offline: already ternary (HF packed uint8 + weight_scale; every GGUF).
enum class WeightQuant { Online, Offline };

struct ModelConfig {
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0; // hidden / heads unless given
  int64_t maxPositionEmbeddings = 0;
  double rmsNormEps = 1e-5;
  double ropeTheta = 500000.0;
  bool tieWordEmbeddings = true;
  std::string hiddenAct = "relu2";
  WeightQuant weightQuant = WeightQuant::Online;
  std::optional<int64_t> bosTokenId, eosTokenId;

  /// Throws FormatError(file, field, ...) on inconsistent values (heads not
  /// dividing hidden when head_dim is absent, heads % kv_heads != 0,
  /// non-positive sizes, unsupported hidden_act).
  void validate(const std::string &file) const;
};

/// Parses a Hugging Face config.json (model_type must be "bitnet"; reads
/// rope_theta at top level or under rope_parameters).
ModelConfig parseHfConfig(const std::string &path);

/// How one tensor is stored in its file.
enum class TensorPacking {
  Plain,   // a float tensor (bf16/f16/f32), stored [rows, cols] row-major
  HfUint8, // HF offline: uint8 [out/4, in]; row r bits 2i..2i+1 = row r+i*out/4
  TQ1_0,   // ggml block types along the input dim
  TQ2_0,
};

/// One weight of the model under its Hugging Face name.
struct ModelTensor {
  std::string name;           // HF name, e.g. model.layers.0.mlp.up_proj.weight
  std::string fileName;       // name inside the file (GGUF: blk.0.ffn_up.weight)
  std::string filePath;       // the file that holds it
  DType dtype;                // storage element type
  TensorPacking packing;
  std::vector<int64_t> shape; // logical shape, HF order: [out, in] / [vocab, hidden] / [hidden]
  const uint8_t *data;        // into the mapping
  size_t byteSize;
  bool isProjection = false;  // a BitLinear weight (q,k,v,o,gate,up,down)
  /// Per-tensor scale of an offline projection: HF `weight_scale`, or a GGUF
  /// `<name>.scale` tensor (which multiplies the output). 1 when absent.
  float outputScale = 1.0f;
  uint64_t numElements() const;
};

class Model {
public:
  /// `path` is a directory (Hugging Face) or a .gguf file. Validates config,
  /// every expected tensor (presence, shape, dtype), and reports the first
  /// problem as a FormatError naming the file and the field/tensor.
  static std::unique_ptr<Model> open(const std::string &path);
  ~Model();

  ModelFormat format() const { return format_; }
  const std::string &path() const { return path_; }
  const ModelConfig &config() const { return config_; }
  /// In canonical order: embed, per layer (input_layernorm, q, k, v,
  /// attn_sub_norm, o, post_attention_layernorm, gate, up, ffn_sub_norm,
  /// down), model.norm, lm_head (only when untied).
  const std::vector<ModelTensor> &tensors() const { return tensors_; }
  const ModelTensor *find(const std::string &hfName) const;
  /// Format-level metadata for `inspect` (GGUF keys, config.json fields).
  const std::vector<std::pair<std::string, std::string>> &metadata() const {
    return metadata_;
  }

  /// The float values the model computes with: master weights as stored for
  /// online projections and norms/embeddings; for offline projections the
  /// ternary pattern × scale (per tensor, or per block for TQ types), times
  /// outputScale. `out` holds numElements() floats in HF [out, in] order.
  void dequantize(const ModelTensor &t, float *out) const;
  /// Same, but only rows [rowBegin, rowEnd) of the first dimension (used for
  /// embeddings so a 128k-row table is never expanded whole).
  void dequantizeRows(const ModelTensor &t, int64_t rowBegin, int64_t rowEnd,
                      float *out) const;

  /// GGUF only: the open file (for tokenizer metadata); nullptr for HF.
  const GgufFile *gguf() const { return gguf_.get(); }

private:
  Model();
  ModelFormat format_ = ModelFormat::HuggingFace;
  std::string path_;
  ModelConfig config_;
  std::vector<ModelTensor> tensors_;
  std::map<std::string, size_t> byName_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::unique_ptr<GgufFile> gguf_;
  friend class ModelLoader;
};

/// Hugging Face name of a projection (e.g. "self_attn.q_proj") <-> the
/// llama.cpp name ("attn_q"); used by the GGUF loader and adapter export.
/// Names: q k v o gate up down.
struct ProjectionName {
  const char *shortName; // "q"
  const char *hfModule;  // "self_attn.q_proj"
  const char *ggufName;  // "attn_q"
};
const std::vector<ProjectionName> &projectionNames();

} // namespace bitloom

#endif // BITLOOM_MODEL_MODEL_H

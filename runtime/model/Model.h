//===- Model.h - A BitNet b1.58 checkpoint, whatever its format -*- C++ -*-===//
//
// Opens a Hugging Face directory (config.json + model.safetensors or a
// sharded model.safetensors.index.json, tokenizer.json) or a GGUF file of
// arch "bitnet", validates it completely, and presents the weights under the
// Hugging Face tensor names (the canonical names in loom IR and in PEFT
// adapters), without copying them: tensors point into memory mappings.
// Opening reads only config/headers (a 2.4B-parameter model opens in
// milliseconds with a few MB resident).
//
// Hugging Face: config keys default as transformers' BitNetConfig does
// (max_position_embeddings 2048, rms_norm_eps 1e-5, rope_theta 500000,
// hidden_act relu2, tie_word_embeddings *false*), except the architecture
// sizes (vocab, hidden, intermediate, layers, heads, kv heads), which are
// required. quantization_config (quant_method "bitnet"): absent or
// autobitlinear/online = float master weights; autobitlinear/offline =
// packed uint8 whose weight_scale multiplies the output (AutoBitLinear);
// linear_class "bitlinear" (BitNetQuantConfig's default) = packed uint8
// whose weight_scale *divides* the output, as transformers' BitLinear does,
// so outputScale = 1 / weight_scale. A single model.safetensors wins over
// an index, as in transformers. Tensors the config does not imply (rotary
// buffers, a tied lm_head copy, ...) are ignored and listed in metadata()
// under "ignored_tensors".
//
// GGUF (general.architecture "bitnet"): hyper-parameters from bitnet.*
// (head_count_kv defaults to head_count, rope.freq_base to 10000 only when
// absent, head dim from attention.key_length or embedding/heads and
// rope.dimension_count must equal it, vocab from vocab_size, else the token
// list, else token_embd), activation relu2 (no GGUF key; see DESIGN.md),
// tied unless an output.weight exists, projections always Offline (already
// ternary x scale, whatever their type) with optional blk.N.<proj>.scale.
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
  /// non-positive sizes, heads x head_dim != hidden (attn_sub_norm spans
  /// hidden), odd head_dim, unsupported hidden_act, bos/eos outside the
  /// vocabulary). Field names are the config.json keys.
  void validate(const std::string &file) const;
};

/// Parses a Hugging Face config.json (model_type must be "bitnet"; reads
/// rope_theta at top level or under rope_parameters; an eos_token_id list
/// gives its first id; RoPE scaling other than none/linear x1 is rejected).
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
  std::string name;     // HF name, e.g. model.layers.0.mlp.up_proj.weight
  std::string fileName; // name inside the file (GGUF: blk.0.ffn_up.weight)
  std::string filePath; // the file that holds it
  DType dtype;          // storage element type
  TensorPacking packing;
  std::vector<int64_t>
      shape; // logical shape, HF order: [out, in] / [vocab, hidden] / [hidden]
  const uint8_t *data; // into the mapping
  size_t byteSize;
  bool isProjection = false; // a BitLinear weight (q,k,v,o,gate,up,down)
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
  /// Format-level metadata for `inspect`: format, parameters, then for HF
  /// weights/weight_quant/head_dim/tokenizer and every config.json field
  /// (nested objects flattened as "quantization_config.quant_method"); for
  /// GGUF every KV in file order, arrays over 16 elements summarized as
  /// "[N strings]" / "[N i32]" and strings over 160 chars cut with their
  /// length. "ignored_tensors" lists unused tensors when there are any.
  const std::vector<std::pair<std::string, std::string>> &metadata() const {
    return metadata_;
  }

  /// The float values the model computes with: master weights as stored for
  /// online projections and norms/embeddings; for offline projections the
  /// ternary pattern × scale (per tensor, or per block for TQ types), times
  /// outputScale. `out` holds numElements() floats in HF [out, in] order.
  /// HF packed codes read as code - 1, like transformers' unpack_weights.
  void dequantize(const ModelTensor &t, float *out) const;
  /// Same, but only rows [rowBegin, rowEnd) of the first dimension (used for
  /// embeddings so a 128k-row table is never expanded whole). Any range
  /// works for every packing, HfUint8 included. Throws std::out_of_range.
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

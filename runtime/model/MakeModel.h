//===- MakeModel.h - Seeded random BitNet checkpoints -----------*- C++ -*-===//
#ifndef BITLOOM_MODEL_MAKEMODEL_H
#define BITLOOM_MODEL_MAKEMODEL_H

#include "model/Model.h"

#include <cstdint>
#include <string>

namespace bitloom {

enum class CheckpointFormat { HuggingFace, Gguf };

/// Presets: tiny (a few layers, for tests: vocab 512, hidden 64, ffn 160,
/// 2 layers, 4 heads, 2 kv heads), small (12 layers, hidden 768, ffn 2048,
/// 12 heads, 4 kv heads, vocab 32000), 2b4t (bitnet-b1.58-2B-4T's shape).
/// Throws FormatError("", "--preset", ...) for unknown names.
ModelConfig presetConfig(const std::string &preset);

struct MakeModelOptions {
  std::string preset = "tiny";
  CheckpointFormat format = CheckpointFormat::HuggingFace;
  uint64_t seed = 0;
  /// HF only: write projections packed (uint8 + weight_scale, quantization
  /// mode offline) instead of bf16 master weights.
  bool packed = false;
  /// GGUF only: projection type (TQ2_0 default, TQ1_0, F32, F16, BF16).
  std::string ggufProjectionType = "TQ2_0";
};

/// Writes a complete checkpoint to `out` (a directory for HF: config.json,
/// model.safetensors, tokenizer.json, tokenizer_config.json,
/// generation_config.json; a .gguf file for GGUF, with tokenizer metadata).
/// Weights are seeded random (normal, std 0.02 like HF init; norms 1).
void makeModel(const MakeModelOptions &options, const std::string &out);

} // namespace bitloom

#endif // BITLOOM_MODEL_MAKEMODEL_H

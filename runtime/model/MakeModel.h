//===- MakeModel.h - Seeded random BitNet checkpoints -----------*- C++ -*-===//
#ifndef BITLOOM_MODEL_MAKEMODEL_H
#define BITLOOM_MODEL_MAKEMODEL_H

#include "model/Model.h"

#include <cstdint>
#include <string>

namespace bitloom {

enum class CheckpointFormat { HuggingFace, Gguf };

/// Presets (all: tied embeddings, relu2, rms eps 1e-5, head_dim =
/// hidden / heads):
///   tiny:  vocab 512, hidden 64, ffn 160, 2 layers, 4 heads, 2 kv heads,
///          max pos 256, theta 10000 (for tests)
///   small: vocab 32000, hidden 768, ffn 2048, 12 layers, 12 heads, 4 kv,
///          max pos 2048, theta 500000
///   2b4t:  bitnet-b1.58-2B-4T's shape: vocab 128256, hidden 2560, ffn 6912,
///          30 layers, 20 heads, 5 kv, max pos 4096, theta 500000
/// plus the unadvertised "tiny256" (tiny with hidden 256, ffn 512) whose
/// input dims fit TQ1_0/TQ2_0 blocks. bos/eos ids are left unset: they come
/// from the generated tokenizer. Throws FormatError("", "--preset", ...) for
/// unknown names.
ModelConfig presetConfig(const std::string &preset);

struct MakeModelOptions {
  std::string preset = "tiny";
  CheckpointFormat format = CheckpointFormat::HuggingFace;
  uint64_t seed = 0;
  /// HF only: write projections packed (uint8 [out/4, in] + bf16
  /// weight_scale = s, quantization_config autobitlinear / offline) instead
  /// of bf16 master weights (autobitlinear / online). FormatError("",
  /// "--packed", ...) with the GGUF format.
  bool packed = false;
  /// Every 65536-value block of a tensor repeats its first: the same shapes
  /// and value distribution, but files that compress to almost nothing (for
  /// shipping a large model to a benchmark machine).
  bool repeatBlocks = false;
  /// GGUF only: projection type (TQ2_0 default, TQ1_0, F32, F16, BF16; case
  /// insensitive). Values are the master's absmean ternarization as
  /// llama.cpp's converter computes it, whatever the type. As in the
  /// converter, a projection whose input dim is not a multiple of 256 (all
  /// of tiny's) is written F16 when a TQ type is asked for; token_embd is F16
  /// for TQ types and the projection type otherwise; norms are F32.
  std::string ggufProjectionType = "TQ2_0";
};

/// Writes a complete checkpoint to `out` (a directory for HF: config.json,
/// model.safetensors, tokenizer.json, tokenizer_config.json with a Llama-3
/// chat template, generation_config.json; a .gguf file for GGUF, with
/// tokenizer.ggml.* metadata and the chat template). Every file is written
/// atomically. Tensors are generated and streamed one at a time (2b4t never
/// sits in memory).
///
/// Weights: master values are an approximate normal (Irwin-Hall sum of four
/// uniforms, bit-exact on every platform; see Random.h) with std 0.02, norms
/// 1 + that noise, rounded to bf16. A tensor's values depend only on (seed,
/// HF name), so the HF (bf16 or packed) and GGUF files of one seed hold the
/// same model, and one seed always gives the same bytes.
///
/// Tokenizer: byte-level BPE (Llama-3 pre-tokenizer) trained on a bundled
/// English corpus up to the preset's vocab size, with special tokens
/// <|begin_of_text|> (bos), <|end_of_text|>, <|start_header_id|>,
/// <|end_header_id|>, <|eot_id|> (eos in config.json and GGUF;
/// generation_config lists end_of_text and eot_id) as the last five ids. The
/// corpus supports only a few thousand merges: the rest of the vocabulary
/// (all of it but 256 bytes + specials for tiny) is the trainer's
/// <|reserved_special_token_N|> padding, as in Llama-3.
void makeModel(const MakeModelOptions &options, const std::string &out);

/// BitNet b1.58's absmean ternarization in float32 as transformers'
/// WeightQuant and llama.cpp's converter compute it: s = max(mean|w|, 1e-5)
/// (the mean accumulated in double in a fixed blocked order, so results never
/// depend on thread count), codes = clamp(round(w * (1/s)),
/// -1, 1) with round half to even. Returns s.
float ternarizeAbsmean(const float *w, uint64_t n, int8_t *codes);

} // namespace bitloom

#endif // BITLOOM_MODEL_MAKEMODEL_H

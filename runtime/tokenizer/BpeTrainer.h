//===- BpeTrainer.h - Byte-level BPE training for generated models -*- C++
//-*-===//
//
// `bitloom make-model` gives its seeded random checkpoints a real tokenizer:
// a byte-level BPE learned from a small corpus, written as a tokenizer.json
// that Hugging Face tokenizers loads unchanged, or as GGUF tokenizer.ggml.*
// metadata that llama.cpp reads.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TOKENIZER_BPETRAINER_H
#define BITLOOM_TOKENIZER_BPETRAINER_H

#include "tokenizer/Tokenizer.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bitloom {

class GgufWriter;

struct BpeVocab {
  /// Id order. Byte-level encoded strings like HF ("Ġ" for a space) except
  /// special tokens, which are their literal text.
  std::vector<std::string> tokens;
  /// In rank order, byte-level encoded.
  std::vector<std::pair<std::string, std::string>> merges;
  /// Ascending; always the last ids (reserved padding, then the given
  /// special tokens).
  std::vector<int32_t> specialIds;
  PreTokenizer pre = PreTokenizer::Llama3;
};

/// Learns a byte-level BPE from `corpus` (split with `pre`; occurrences of
/// the special tokens are cut out first). Ids: the 256 byte tokens in GPT-2
/// bytes_to_unicode order, then one token per merge until the vocabulary
/// without the special tokens is full or no pair occurs twice, then
/// "<|reserved_special_token_N|>" padding (special, like Llama-3), then
/// `specialTokens`; exactly `vocabSize` tokens. Deterministic: the most
/// frequent pair wins, ties go to the lexicographically smallest
/// (left, right) byte strings. A merge whose result would equal a special
/// token is never taken. Throws std::invalid_argument when `vocabSize` is
/// below 256 + specialTokens.size() or a special token is empty/duplicated.
BpeVocab trainByteLevelBpe(const std::string &corpus, size_t vocabSize,
                           PreTokenizer pre,
                           const std::vector<std::string> &specialTokens);

/// A tokenizer.json as HF tokenizers serializes it (pretty, 2 spaces):
/// Llama3 gives the Llama-3 layout (Split + ByteLevel(use_regex false),
/// ignore_merges true, special tokens only in added_tokens); Gpt2 gives
/// ByteLevel(use_regex true), ignore_merges false. With `bosToken` (one of
/// the special tokens) the post-processor is a TemplateProcessing adding it;
/// without, a plain ByteLevel. Throws std::invalid_argument for a bosToken
/// that is not special, or specials that are not the last ids.
std::string toHfTokenizerJson(const BpeVocab &v,
                              std::optional<std::string> bosToken);

/// Sets tokenizer.ggml.* as convert_hf_to_gguf.py does for such a vocab:
/// model "gpt2", pre "llama-bpe" / "gpt-2", tokens, token_type (1 normal,
/// 3 control for specials), merges "left right", bos/eos ids and
/// add_bos_token (true iff bosToken is given).
void writeGgufTokenizerMetadata(GgufWriter &writer, const BpeVocab &v,
                                std::optional<std::string> bosToken,
                                std::optional<std::string> eosToken);

} // namespace bitloom

#endif // BITLOOM_TOKENIZER_BPETRAINER_H

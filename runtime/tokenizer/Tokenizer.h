//===- Tokenizer.h - Byte-level BPE and SentencePiece-BPE -------*- C++ -*-===//
//
// Produces the same ids as Hugging Face tokenizers (tokenizer.json with a
// BPE model and ByteLevel / Split pre-tokenizers, GPT-2 and Llama-3 style)
// and as llama.cpp for GGUF vocabularies (tokenizer.ggml.model "gpt2" with
// tokenizer.ggml.pre, and "llama" SentencePiece BPE with scores).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TOKENIZER_TOKENIZER_H
#define BITLOOM_TOKENIZER_TOKENIZER_H

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bitloom {

class GgufFile;

/// Pre-tokenization regex family.
enum class PreTokenizer {
  Gpt2,   // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
          // ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Llama3, // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
          // ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
};

class Tokenizer {
public:
  /// tokenizer.json (Hugging Face tokenizers); `path` may also be the
  /// directory holding it. A tokenizer_config.json next to it, when present,
  /// supplies bos_token / eos_token. truncation / padding are ignored (the
  /// caller handles lengths). Throws FormatError naming the file and field
  /// for anything it cannot represent exactly.
  static std::unique_ptr<Tokenizer> fromHfJson(const std::string &path);
  /// The same from tokenizer.json text; `sourceName` is used in errors.
  static std::unique_ptr<Tokenizer>
  fromHfJsonString(const std::string &json,
                   const std::string &sourceName = "tokenizer.json");
  /// GGUF tokenizer.ggml.* metadata.
  static std::unique_ptr<Tokenizer> fromGguf(const GgufFile &gguf);
  ~Tokenizer();

  /// Ids for `text`; special/added tokens written literally in the text are
  /// matched as single tokens (as HF does with split_special_tokens=false,
  /// and llama.cpp with parse_special=true).
  /// `addSpecial` adds the BOS token when the tokenizer's post-processor /
  /// tokenizer.ggml.add_bos_token says so.
  std::vector<int32_t> encode(const std::string &text,
                              bool addSpecial = false) const;
  /// Text for `ids` (HF: the decoder, without clean_up_tokenization_spaces;
  /// GGUF: llama.cpp's detokenize without its space clean-up). Invalid UTF-8
  /// becomes U+FFFD; unknown ids are dropped.
  std::string decode(const std::vector<int32_t> &ids,
                     bool skipSpecial = false) const;

  /// Number of ids (the largest id + 1).
  size_t vocabSize() const;
  std::optional<int32_t> tokenToId(const std::string &token) const;
  /// The token's text ("" for an id without one).
  std::string idToToken(int32_t id) const;
  /// Special tokens (HF: added tokens marked special; GGUF: control).
  bool isSpecial(int32_t id) const;
  std::optional<int32_t> bosId() const;
  std::optional<int32_t> eosId() const;

  struct Impl;

private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

} // namespace bitloom

#endif // BITLOOM_TOKENIZER_TOKENIZER_H

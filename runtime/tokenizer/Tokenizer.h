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
  Gpt2,   // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Llama3, // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
};

class Tokenizer {
public:
  /// tokenizer.json (Hugging Face tokenizers). Throws FormatError naming
  /// the file and field for anything it cannot represent exactly.
  static std::unique_ptr<Tokenizer> fromHfJson(const std::string &path);
  /// GGUF tokenizer.ggml.* metadata.
  static std::unique_ptr<Tokenizer> fromGguf(const GgufFile &gguf);
  ~Tokenizer();

  /// Ids for `text`; special/added tokens written literally in the text are
  /// matched as single tokens (as HF does with split_special_tokens=false).
  /// `addSpecial` adds the BOS token when the tokenizer's post-processor /
  /// tokenizer.ggml.add_bos_token says so.
  std::vector<int32_t> encode(const std::string &text,
                              bool addSpecial = false) const;
  std::string decode(const std::vector<int32_t> &ids,
                     bool skipSpecial = false) const;

  size_t vocabSize() const;
  std::optional<int32_t> tokenToId(const std::string &token) const;
  std::string idToToken(int32_t id) const;
  std::optional<int32_t> bosId() const;
  std::optional<int32_t> eosId() const;

  struct Impl;

private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

} // namespace bitloom

#endif // BITLOOM_TOKENIZER_TOKENIZER_H

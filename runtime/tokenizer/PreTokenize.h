//===- PreTokenize.h - Hand-written GPT-2 / Llama-3 split regexes -*- C++
//-*-===//
//
// Internal to bitloom_tokenizer. Reproduces what Oniguruma's find_iter gives
// for the two patterns (leftmost-first alternation with backtracking), so
// no regex engine is needed.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TOKENIZER_PRETOKENIZE_H
#define BITLOOM_TOKENIZER_PRETOKENIZE_H

#include "tokenizer/Tokenizer.h"

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace bitloom::pretok {

/// The exact pattern strings as they appear in tokenizer.json.
extern const char *const kGpt2Pattern;
extern const char *const kLlama3Pattern;

struct SplitOptions {
  /// (?i:...) contractions fold U+017F (long s) to 's' as Oniguruma does;
  /// llama.cpp's rewrite ('[sS]) does not.
  bool foldLongS = true;
};

/// Appends the [begin, end) byte ranges of the matches of `pattern` in
/// text[begin, end). Matches cover the whole range.
void split(PreTokenizer pattern, const std::string &text, size_t begin,
           size_t end, std::vector<std::pair<size_t, size_t>> &out,
           const SplitOptions &options = {});

} // namespace bitloom::pretok

#endif // BITLOOM_TOKENIZER_PRETOKENIZE_H

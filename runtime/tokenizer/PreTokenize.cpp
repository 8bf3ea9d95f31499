//===- PreTokenize.cpp - Hand-written GPT-2 / Llama-3 split regexes -------===//

#include "tokenizer/PreTokenize.h"

#include "tokenizer/Unicode.h"

namespace bitloom::pretok {

const char *const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char *const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

using unicode::CodePoint;

struct Cursor {
  const std::vector<CodePoint> &cps;
  size_t n;
  uint8_t cls(size_t i) const {
    uint32_t cp = cps[i].cp;
    return cp == unicode::kInvalid ? 0 : unicode::flags(cp);
  }
  uint32_t cp(size_t i) const { return cps[i].cp; }
  bool isL(size_t i) const { return i < n && (cls(i) & unicode::kLetter); }
  bool isN(size_t i) const { return i < n && (cls(i) & unicode::kNumber); }
  bool isS(size_t i) const { return i < n && (cls(i) & unicode::kWhitespace); }
  // [^\s\p{L}\p{N}]
  bool isOther(size_t i) const {
    return i < n && !(cls(i) & (unicode::kLetter | unicode::kNumber |
                                unicode::kWhitespace));
  }
  bool isCrLf(size_t i) const {
    return i < n && (cps[i].cp == '\r' || cps[i].cp == '\n');
  }
  size_t runL(size_t j) const {
    while (isL(j))
      ++j;
    return j;
  }
  size_t runN(size_t j) const {
    while (isN(j))
      ++j;
    return j;
  }
  size_t runOther(size_t j) const {
    while (isOther(j))
      ++j;
    return j;
  }
  size_t runS(size_t j) const {
    while (isS(j))
      ++j;
    return j;
  }
};

// Length in code points of 's|'t|'re|'ve|'m|'ll|'d at i, 0 if none.
size_t contraction(const Cursor &c, size_t i, bool caseInsensitive,
                   bool foldLongS) {
  if (c.cp(i) != '\'' || i + 1 >= c.n)
    return 0;
  auto fold = [&](uint32_t cp) -> uint32_t {
    if (!caseInsensitive)
      return cp;
    if (cp >= 'A' && cp <= 'Z')
      return cp + 32;
    if (cp == 0x17F && foldLongS)
      return 's';
    return cp;
  };
  uint32_t a = fold(c.cp(i + 1));
  if (a == 's' || a == 't' || a == 'm' || a == 'd')
    return 2;
  if (i + 2 >= c.n)
    return 0;
  uint32_t b = fold(c.cp(i + 2));
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
      (a == 'l' && b == 'l'))
    return 3;
  return 0;
}

// \s+(?!\S)|\s+ at a whitespace position i.
size_t whitespaceTail(const Cursor &c, size_t i) {
  size_t j = c.runS(i);
  if (j == c.n || j - i == 1)
    return j;
  return j - 1; // leave the last space to prefix the next word
}

size_t matchGpt2(const Cursor &c, size_t i) {
  if (size_t k = contraction(c, i, false, false))
    return i + k;
  bool space = c.cp(i) == ' ';
  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
  if (c.isL(i))
    return c.runL(i);
  if (space && c.isL(i + 1))
    return c.runL(i + 1);
  if (c.isN(i))
    return c.runN(i);
  if (space && c.isN(i + 1))
    return c.runN(i + 1);
  if (c.isOther(i))
    return c.runOther(i);
  if (space && c.isOther(i + 1))
    return c.runOther(i + 1);
  return whitespaceTail(c, i);
}

size_t matchLlama3(const Cursor &c, size_t i, bool foldLongS) {
  if (size_t k = contraction(c, i, true, foldLongS))
    return i + k;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c.isL(i))
    return c.runL(i);
  if (!c.isCrLf(i) && !c.isN(i) && c.isL(i + 1))
    return c.runL(i + 1);
  // \p{N}{1,3}
  if (c.isN(i)) {
    size_t j = i + 1;
    while (j < i + 3 && c.isN(j))
      ++j;
    return j;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  size_t j = c.isOther(i)                           ? i
             : (c.cp(i) == ' ' && c.isOther(i + 1)) ? i + 1
                                                    : c.n + 1;
  if (j <= c.n) {
    j = c.runOther(j);
    while (c.isCrLf(j))
      ++j;
    return j;
  }
  // \s*[\r\n]+ : up to and including the last CR/LF of the whitespace run.
  size_t end = c.runS(i);
  for (size_t k = end; k > i; --k)
    if (c.isCrLf(k - 1))
      return k;
  return whitespaceTail(c, i);
}

} // namespace

void split(PreTokenizer pattern, const std::string &text, size_t begin,
           size_t end, std::vector<std::pair<size_t, size_t>> &out,
           const SplitOptions &options) {
  thread_local std::vector<CodePoint> cps;
  cps.clear();
  unicode::decodeUtf8(text, begin, end, cps);
  Cursor c{cps, cps.size()};
  size_t i = 0;
  while (i < c.n) {
    size_t j = pattern == PreTokenizer::Gpt2
                   ? matchGpt2(c, i)
                   : matchLlama3(c, i, options.foldLongS);
    size_t from = cps[i].offset;
    size_t to = j < c.n ? cps[j].offset : end;
    out.emplace_back(from, to);
    i = j;
  }
}

} // namespace bitloom::pretok

//===- Tokenizer.cpp - Byte-level BPE and SentencePiece-BPE ---------------===//
//
// Two sources, one runtime:
//  - tokenizer.json follows Hugging Face tokenizers (added-token extraction,
//    ByteLevel / Split pre-tokenizers, BPE merge loop, ids assigned to added
//    tokens the way its deserializer re-adds them).
//  - GGUF follows llama.cpp's llama-vocab.cpp (special-token partition by
//    descending length, BPE with tokenizer.ggml.pre, SPM with scores).
//
//===----------------------------------------------------------------------===//

#include "tokenizer/Tokenizer.h"

#include "formats/Error.h"
#include "formats/Gguf.h"
#include "tokenizer/PreTokenize.h"
#include "tokenizer/TokenTrie.h"
#include "tokenizer/Unicode.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <iterator>
#include <mutex>
#include <queue>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace bitloom {

using json = nlohmann::json;

namespace {

//===----------------------------------------------------------------------===//
// BPE merge loop
//===----------------------------------------------------------------------===//

struct MergeInfo {
  int32_t rank;
  int32_t newId;
};
using MergeMap = std::unordered_map<uint64_t, MergeInfo>;

inline uint64_t pairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) |
         static_cast<uint32_t>(b);
}

/// Merges `ids` in place: lowest rank first, leftmost on ties (HF's
/// Word::merge_all and llama.cpp's bigram queue agree on this order). A
/// queued merge is stale unless the pair still merges into the same token;
/// HF checks the pair against the merge map, llama.cpp compares the texts.
void mergeWord(std::vector<int32_t> &ids, const MergeMap &merges,
               const std::vector<std::string> *textsForLlamaCheck) {
  const int n = static_cast<int>(ids.size());
  if (n < 2)
    return;
  struct Sym {
    int32_t id, prev, next;
    bool alive;
  };
  struct Cand {
    int32_t rank, pos, newId;
    bool operator<(const Cand &o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Sym> syms;
  thread_local std::vector<Cand> heap;
  syms.resize(n);
  heap.clear();
  for (int i = 0; i < n; ++i)
    syms[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  auto consider = [&](int pos) {
    int next = syms[pos].next;
    auto it = merges.find(pairKey(syms[pos].id, syms[next].id));
    if (it != merges.end()) {
      heap.push_back({it->second.rank, pos, it->second.newId});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (int i = 0; i + 1 < n; ++i)
    consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Cand top = heap.back();
    heap.pop_back();
    Sym &left = syms[top.pos];
    if (!left.alive || left.next < 0)
      continue;
    Sym &right = syms[left.next];
    if (textsForLlamaCheck) {
      const auto &t = *textsForLlamaCheck;
      const std::string &a = t[left.id], &b = t[right.id], &m = t[top.newId];
      if (a.size() + b.size() != m.size() || m.compare(0, a.size(), a) != 0 ||
          m.compare(a.size(), b.size(), b) != 0)
        continue;
    } else {
      auto it = merges.find(pairKey(left.id, right.id));
      if (it == merges.end() || it->second.newId != top.newId)
        continue;
    }
    left.id = top.newId;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0)
      syms[right.next].prev = top.pos;
    if (left.prev >= 0)
      consider(left.prev);
    if (left.next >= 0)
      consider(top.pos);
  }
  ids.clear();
  for (int i = 0; i >= 0; i = syms[i].next)
    ids.push_back(syms[i].id);
}

//===----------------------------------------------------------------------===//
// Small helpers
//===----------------------------------------------------------------------===//

// The code point ending just before `pos` (pos > begin); kInvalid for a
// stray byte.
uint32_t codePointBefore(const std::string &s, size_t begin, size_t pos,
                         size_t *start) {
  size_t p = pos - 1;
  size_t limit = pos >= begin + 4 ? pos - 4 : begin;
  while (p > limit && (static_cast<uint8_t>(s[p]) & 0xC0) == 0x80)
    --p;
  std::vector<unicode::CodePoint> cps;
  unicode::decodeUtf8(s, p, pos, cps);
  if (cps.empty() || cps.back().offset + cps.back().len != pos) {
    *start = pos - 1;
    return unicode::kInvalid;
  }
  *start = cps.back().offset;
  return cps.back().cp;
}

uint32_t codePointAt(const std::string &s, size_t pos, size_t end,
                     size_t *len) {
  std::vector<unicode::CodePoint> cps;
  unicode::decodeUtf8(s, pos, std::min(end, pos + 4), cps);
  *len = cps.empty() ? 1 : cps[0].len;
  return cps.empty() ? unicode::kInvalid : cps[0].cp;
}

bool hasFlag(uint32_t cp, uint8_t flag) {
  return cp != unicode::kInvalid && (unicode::flags(cp) & flag);
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw FormatError(path, "", "cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string dirOf(const std::string &path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".")
                                    : path.substr(0, slash == 0 ? 1 : slash);
}

bool isDirectory(const std::string &path) {
  std::ifstream probe(path + "/tokenizer.json");
  return static_cast<bool>(probe);
}

// llama.cpp token attributes (llama_token_attr).
enum : uint32_t {
  kAttrUnknown = 1 << 0,
  kAttrUnused = 1 << 1,
  kAttrNormal = 1 << 2,
  kAttrControl = 1 << 3,
  kAttrUserDefined = 1 << 4,
  kAttrByte = 1 << 5,
};

} // namespace

//===----------------------------------------------------------------------===//
// Impl
//===----------------------------------------------------------------------===//

struct Tokenizer::Impl {
  enum class Kind { Hf, GgufBpe, GgufSpm };
  Kind kind = Kind::Hf;
  std::string source;

  // id -> text, with holes allowed (HF vocabularies need not be dense).
  std::vector<std::string> idText;
  std::vector<uint8_t> idPresent;
  // HF: the model vocabulary only; GGUF: every token.
  std::unordered_map<std::string, int32_t> vocab;

  // BPE
  MergeMap merges;
  std::array<int32_t, 256> byteIds{}; // id of each byte's byte-level char
  bool ignoreMerges = false;
  std::optional<int32_t> unkId;
  bool fuseUnk = false;
  struct PreStep {
    bool byteLevel;       // else a regex Split
    PreTokenizer pattern; // Split pattern
    bool addPrefixSpace;  // ByteLevel
    bool useRegex;        // ByteLevel: GPT-2 regex
  };
  std::vector<PreStep> steps;
  pretok::SplitOptions splitOptions;

  // HF added tokens.
  struct AddedToken {
    std::string content;
    bool singleWord = false, lstrip = false, rstrip = false, normalized = true,
         special = false;
    bool operator==(const AddedToken &o) const {
      return content == o.content && singleWord == o.singleWord &&
             lstrip == o.lstrip && rstrip == o.rstrip &&
             normalized == o.normalized && special == o.special;
    }
  };
  std::unordered_map<std::string, int32_t> addedIds;
  std::unordered_map<int32_t, AddedToken> addedById;
  std::unordered_set<std::string> specialContents;
  TokenTrie rawTrie, normalizedTrie; // value = token id

  // Post-processing and decoding.
  std::vector<int32_t> prefixIds, suffixIds;
  bool byteLevelDecoder = true;
  std::optional<int32_t> bos, eos;

  // GGUF
  std::vector<uint32_t> attrs;
  std::vector<float> scores;
  std::vector<int32_t> specialOrder; // llama.cpp's cache_special_tokens
  TokenTrie specialTrie;             // value = index into specialOrder
  bool addBos = false, addEos = false, addSpacePrefix = false;

  // Pre-token -> ids cache (HF and GGUF BPE).
  mutable std::mutex cacheMutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void setToken(int32_t id, const std::string &text) {
    if (static_cast<size_t>(id) >= idText.size()) {
      idText.resize(id + 1);
      idPresent.resize(id + 1, 0);
    }
    idText[id] = text;
    idPresent[id] = 1;
  }
  bool present(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < idPresent.size() &&
           idPresent[id];
  }

  std::vector<int32_t> encode(const std::string &text, bool addSpecial) const;
  std::string decode(const std::vector<int32_t> &ids, bool skipSpecial) const;

  // HF
  struct Segment {
    size_t begin, end;
    int32_t id; // -1: text still to tokenize
  };
  void findAddedTokens(const std::string &text, size_t begin, size_t end,
                       const TokenTrie &trie, std::vector<Segment> &out) const;
  void encodeText(const std::string &text, size_t begin, size_t end,
                  std::vector<int32_t> &out) const;
  void encodePiece(const std::string &piece, std::vector<int32_t> &out) const;
  // GGUF
  void partitionSpecial(const std::string &text,
                        std::vector<Segment> &out) const;
  void encodeSpm(const std::string &text, std::vector<int32_t> &out) const;
  std::string tokenToPiece(int32_t id, bool special) const;
};

//===----------------------------------------------------------------------===//
// Encoding: HF added tokens
//===----------------------------------------------------------------------===//

// AddedVocabulary::find_matches on the sentence text[begin, end):
// leftmost-longest matches, single_word / lstrip / rstrip applied per match.
void Tokenizer::Impl::findAddedTokens(const std::string &text, size_t begin,
                                      size_t end, const TokenTrie &trie,
                                      std::vector<Segment> &out) const {
  size_t startOffset = begin;
  size_t pos = begin;
  while (pos < end) {
    auto [len, id] = trie.longest(text, pos, end);
    if (len == 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + len;
    pos = stop; // the match iterator resumes after the match, used or not
    const AddedToken &tok = addedById.at(id);
    if (tok.singleWord) {
      bool startSpace = true, stopSpace = true;
      if (start > begin) {
        size_t cpStart;
        startSpace = !hasFlag(codePointBefore(text, begin, start, &cpStart),
                              unicode::kWord);
      }
      if (stop < end) {
        size_t cpLen;
        stopSpace =
            !hasFlag(codePointAt(text, stop, end, &cpLen), unicode::kWord);
      }
      if (!startSpace || !stopSpace)
        continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > begin) {
        size_t cpStart;
        if (!hasFlag(codePointBefore(text, begin, s, &cpStart),
                     unicode::kWhitespace))
          break;
        s = cpStart;
      }
      start = std::max(s, startOffset);
    }
    if (tok.rstrip) {
      while (stop < end) {
        size_t cpLen;
        if (!hasFlag(codePointAt(text, stop, end, &cpLen),
                     unicode::kWhitespace))
          break;
        stop += cpLen;
      }
    }
    if (startOffset < start)
      out.push_back({startOffset, start, -1});
    out.push_back({start, stop, id});
    startOffset = stop;
  }
  if (startOffset < end)
    out.push_back({startOffset, end, -1});
}

//===----------------------------------------------------------------------===//
// Encoding: pre-tokenization and BPE
//===----------------------------------------------------------------------===//

void Tokenizer::Impl::encodeText(const std::string &text, size_t begin,
                                 size_t end, std::vector<int32_t> &out) const {
  if (begin >= end)
    return;
  thread_local std::vector<std::string> pieces, next;
  thread_local std::vector<std::pair<size_t, size_t>> ranges;
  pieces.assign(1, text.substr(begin, end - begin));
  for (const PreStep &step : steps) {
    next.clear();
    for (std::string &p : pieces) {
      if (step.byteLevel && step.addPrefixSpace && p[0] != ' ')
        p.insert(p.begin(), ' ');
      bool useRegex = step.byteLevel ? step.useRegex : true;
      if (!useRegex) {
        next.push_back(std::move(p));
        continue;
      }
      ranges.clear();
      pretok::split(step.byteLevel ? PreTokenizer::Gpt2 : step.pattern, p, 0,
                    p.size(), ranges, splitOptions);
      for (auto [b, e] : ranges)
        if (e > b)
          next.push_back(p.substr(b, e - b));
    }
    pieces.swap(next);
  }
  for (const std::string &p : pieces)
    encodePiece(p, out);
}

void Tokenizer::Impl::encodePiece(const std::string &piece,
                                  std::vector<int32_t> &out) const {
  if (piece.empty())
    return;
  constexpr size_t kMaxCached = 256, kMaxCacheEntries = 1 << 17;
  if (piece.size() < kMaxCached) {
    std::lock_guard<std::mutex> lock(cacheMutex);
    auto it = cache.find(piece);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  bool done = false;
  if (ignoreMerges) {
    auto it = vocab.find(unicode::byteLevelEncode(piece));
    if (it != vocab.end()) {
      ids.push_back(it->second);
      done = true;
    }
  }
  if (!done) {
    ids.reserve(piece.size());
    bool lastWasUnk = false;
    for (unsigned char b : piece) {
      int32_t id = byteIds[b];
      if (id >= 0) {
        ids.push_back(id);
        lastWasUnk = false;
      } else if (unkId) {
        // HF: unknown chars become unk (fused when fuse_unk); without an
        // unk token they are dropped.
        if (!(fuseUnk && lastWasUnk))
          ids.push_back(*unkId);
        lastWasUnk = true;
      }
    }
    mergeWord(ids, merges, kind == Kind::GgufBpe ? &idText : nullptr);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (piece.size() < kMaxCached) {
    std::lock_guard<std::mutex> lock(cacheMutex);
    if (cache.size() >= kMaxCacheEntries)
      cache.clear();
    cache.emplace(piece, std::move(ids));
  }
}

//===----------------------------------------------------------------------===//
// Encoding: GGUF special tokens and SPM
//===----------------------------------------------------------------------===//

// llama.cpp's tokenizer_st_partition: each special token, longest first,
// splits every remaining text fragment at its occurrences. Only tokens that
// occur somewhere in the text can split anything, so those are found first
// with the trie.
void Tokenizer::Impl::partitionSpecial(const std::string &text,
                                       std::vector<Segment> &out) const {
  out.clear();
  if (text.empty())
    return;
  out.push_back({0, text.size(), -1});
  if (specialOrder.empty())
    return;
  std::vector<int32_t> occurring; // indices into specialOrder
  for (size_t i = 0; i < text.size(); ++i)
    specialTrie.forEachPrefix(text, i, text.size(),
                              [&](int32_t k) { occurring.push_back(k); });
  std::sort(occurring.begin(), occurring.end());
  occurring.erase(std::unique(occurring.begin(), occurring.end()),
                  occurring.end());
  std::vector<Segment> next;
  for (int32_t k : occurring) {
    int32_t id = specialOrder[k];
    const std::string &tok = idText[id];
    next.clear();
    for (const Segment &seg : out) {
      if (seg.id >= 0) {
        next.push_back(seg);
        continue;
      }
      size_t pos = seg.begin;
      while (pos < seg.end) {
        size_t m = std::string_view(text.data(), seg.end).find(tok, pos);
        if (m == std::string::npos)
          break;
        // GGUF carries no lstrip/rstrip attributes, so nothing is stripped.
        if (m > pos)
          next.push_back({pos, m, -1});
        next.push_back({m, m + tok.size(), id});
        pos = m + tok.size();
      }
      if (pos < seg.end)
        next.push_back({pos, seg.end, -1});
    }
    out.swap(next);
  }
}

// llama.cpp's SPM session: merge the best-scoring adjacent pair that forms a
// vocabulary token until none does; leftovers become <0xXX> byte tokens.
void Tokenizer::Impl::encodeSpm(const std::string &text,
                                std::vector<int32_t> &out) const {
  struct Sym {
    int prev, next;
    size_t off, n;
  };
  struct Bigram {
    int left, right;
    float score;
    size_t size;
    bool operator<(const Bigram &o) const {
      return score < o.score || (score == o.score && left > o.left);
    }
  };
  std::vector<Sym> syms;
  for (size_t off = 0; off < text.size();) {
    auto lead = static_cast<uint8_t>(text[off]);
    size_t len = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    len = std::min(len, text.size() - off);
    int idx = static_cast<int>(syms.size());
    syms.push_back(
        {idx - 1, off + len == text.size() ? -1 : idx + 1, off, len});
    off += len;
  }
  std::priority_queue<Bigram> queue;
  auto tryAdd = [&](int left, int right) {
    if (left < 0 || right < 0)
      return;
    auto it =
        vocab.find(text.substr(syms[left].off, syms[left].n + syms[right].n));
    if (it == vocab.end())
      return;
    queue.push({left, right, scores[it->second], syms[left].n + syms[right].n});
  };
  for (int i = 1; i < static_cast<int>(syms.size()); ++i)
    tryAdd(i - 1, i);
  while (!queue.empty()) {
    Bigram b = queue.top();
    queue.pop();
    Sym &l = syms[b.left];
    Sym &r = syms[b.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size)
      continue;
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0)
      syms[r.next].prev = b.left;
    tryAdd(l.prev, b.left);
    tryAdd(b.left, l.next);
  }
  static const char *hex = "0123456789ABCDEF";
  for (int i = syms.empty() ? -1 : 0; i != -1; i = syms[i].next) {
    std::string piece = text.substr(syms[i].off, syms[i].n);
    auto it = vocab.find(piece);
    if (it != vocab.end()) {
      out.push_back(it->second);
      continue;
    }
    for (unsigned char c : piece) {
      const char buf[7] = {'<', '0', 'x', hex[c >> 4], hex[c & 15], '>', 0};
      auto bt = vocab.find(buf);
      if (bt == vocab.end())
        bt = vocab.find(std::string(1, static_cast<char>(c)));
      if (bt == vocab.end())
        throw FormatError(source, "tokenizer.ggml.tokens",
                          std::string("no byte token ") + buf +
                              " for a character outside the vocabulary");
      out.push_back(bt->second);
    }
  }
}

std::vector<int32_t> Tokenizer::Impl::encode(const std::string &text,
                                             bool addSpecial) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (kind == Kind::Hf) {
    if (addSpecial)
      out = prefixIds;
    std::vector<Segment> first, second;
    findAddedTokens(text, 0, text.size(), rawTrie, first);
    for (const Segment &s : first) {
      if (s.id >= 0) {
        out.push_back(s.id);
        continue;
      }
      second.clear();
      findAddedTokens(text, s.begin, s.end, normalizedTrie, second);
      for (const Segment &t : second) {
        if (t.id >= 0)
          out.push_back(t.id);
        else
          encodeText(text, t.begin, t.end, out);
      }
    }
    if (addSpecial)
      out.insert(out.end(), suffixIds.begin(), suffixIds.end());
    return out;
  }

  std::vector<Segment> segments;
  partitionSpecial(text, segments);
  if (addSpecial && addBos)
    out.push_back(*bos);
  bool prevSpecial = true; // SPM prefixes a space after BOS / specials
  for (const Segment &s : segments) {
    if (s.id >= 0) {
      out.push_back(s.id);
      prevSpecial = true;
      continue;
    }
    if (kind == Kind::GgufSpm) {
      std::string t = addSpacePrefix && prevSpecial ? " " : "";
      t.append(text, s.begin, s.end - s.begin);
      std::string escaped;
      escaped.reserve(t.size() + 8);
      for (char c : t) {
        if (c == ' ')
          escaped += "\xE2\x96\x81";
        else
          escaped += c;
      }
      encodeSpm(escaped, out);
    } else {
      encodeText(text, s.begin, s.end, out);
    }
    prevSpecial = false;
  }
  if (addSpecial && addEos)
    out.push_back(*eos);
  return out;
}

//===----------------------------------------------------------------------===//
// Decoding
//===----------------------------------------------------------------------===//

// llama.cpp's token_to_piece.
std::string Tokenizer::Impl::tokenToPiece(int32_t id, bool special) const {
  uint32_t attr = attrs[id];
  const std::string &text = idText[id];
  if (!special && (attr & (kAttrUnknown | kAttrControl)))
    return "";
  if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined))
    return text;
  if (attr & kAttrByte) {
    if (text.size() == 6 && text.compare(0, 3, "<0x") == 0)
      return std::string(
          1, static_cast<char>(std::stoi(text.substr(3, 2), nullptr, 16)));
    return "";
  }
  if (!(attr & kAttrNormal))
    return "";
  std::string result;
  if (kind == Kind::GgufSpm) {
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
        result += ' ';
        i += 3;
      } else {
        result += text[i++];
      }
    }
    return result;
  }
  std::vector<unicode::CodePoint> cps;
  unicode::decodeUtf8(text, 0, text.size(), cps);
  for (const auto &c : cps) {
    int b = c.cp == unicode::kInvalid ? -1 : unicode::unicodeToByte(c.cp);
    if (b >= 0) {
      result += static_cast<char>(b);
      continue;
    }
    result += "[UNK_BYTE_0x";
    static const char *hex = "0123456789abcdef";
    for (size_t k = 0; k < c.len; ++k) {
      auto v = static_cast<uint8_t>(text[c.offset + k]);
      result += hex[v >> 4];
      result += hex[v & 15];
    }
    result += text + "]";
  }
  return result;
}

std::string Tokenizer::Impl::decode(const std::vector<int32_t> &ids,
                                    bool skipSpecial) const {
  if (kind == Kind::Hf) {
    std::string bytes;
    bool first = true;
    for (int32_t id : ids) {
      if (!present(id))
        continue;
      const std::string &tok = idText[id];
      if (skipSpecial && specialContents.count(tok))
        continue;
      if (!byteLevelDecoder) {
        // No decoder: HF joins the tokens with spaces.
        if (!first)
          bytes += ' ';
        bytes += tok;
        first = false;
        continue;
      }
      // ByteLevel decoder: a token maps back to bytes only if every char
      // is in the byte table; otherwise its UTF-8 is kept as is.
      std::vector<unicode::CodePoint> cps;
      unicode::decodeUtf8(tok, 0, tok.size(), cps);
      std::string mapped;
      bool ok = true;
      for (const auto &c : cps) {
        int b = c.cp == unicode::kInvalid ? -1 : unicode::unicodeToByte(c.cp);
        if (b < 0) {
          ok = false;
          break;
        }
        mapped += static_cast<char>(b);
      }
      bytes += ok ? mapped : tok;
    }
    return unicode::utf8Lossy(bytes);
  }

  size_t begin = 0, end = ids.size();
  bool removeSpace = addSpacePrefix;
  if (skipSpecial && addBos && end > 0 && bos && ids[0] == *bos) {
    removeSpace = false;
    ++begin;
  }
  if (skipSpecial && addEos && end > begin && eos && ids[end - 1] == *eos)
    --end;
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    if (!present(ids[i]))
      continue;
    std::string piece = tokenToPiece(ids[i], !skipSpecial);
    if (removeSpace && !piece.empty() && piece[0] == ' ')
      piece.erase(0, 1);
    removeSpace = false;
    out += piece;
  }
  return unicode::utf8Lossy(out);
}

//===----------------------------------------------------------------------===//
// Loading tokenizer.json
//===----------------------------------------------------------------------===//

namespace {

class JsonReader {
public:
  explicit JsonReader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string &field,
                         const std::string &msg) const {
    throw FormatError(file_, field, msg);
  }
  const json *get(const json &obj, const std::string &key) const {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
  }
  const json &require(const json &obj, const std::string &key,
                      const std::string &field) const {
    const json *v = get(obj, key);
    if (!v)
      fail(field, "missing");
    return *v;
  }
  const json &object(const json &v, const std::string &field) const {
    if (!v.is_object())
      fail(field, "expected an object");
    return v;
  }
  std::string string(const json &v, const std::string &field) const {
    if (!v.is_string())
      fail(field, "expected a string");
    return v.get<std::string>();
  }
  bool boolean(const json &obj, const std::string &key,
               const std::string &field, std::optional<bool> def) const {
    const json *v = get(obj, key);
    if (!v || v->is_null()) {
      if (!def)
        fail(field, "missing");
      return *def;
    }
    if (!v->is_boolean())
      fail(field, "expected a boolean");
    return v->get<bool>();
  }
  int32_t id(const json &v, const std::string &field) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > INT32_MAX)
      fail(field, "expected a non-negative 32-bit integer id");
    return static_cast<int32_t>(v.get<int64_t>());
  }
  std::string type(const json &v, const std::string &field) const {
    object(v, field);
    return string(require(v, "type", field + ".type"), field + ".type");
  }

private:
  std::string file_;
};

std::optional<PreTokenizer> patternKind(const std::string &p) {
  if (p == pretok::kGpt2Pattern)
    return PreTokenizer::Gpt2;
  if (p == pretok::kLlama3Pattern)
    return PreTokenizer::Llama3;
  return std::nullopt;
}

void parsePreTokenizer(const JsonReader &r, const json &v,
                       const std::string &field,
                       std::vector<Tokenizer::Impl::PreStep> &steps) {
  std::string type = r.type(v, field);
  if (type == "Sequence") {
    const json &list = r.require(v, "pretokenizers", field + ".pretokenizers");
    if (!list.is_array())
      r.fail(field + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      parsePreTokenizer(r, list[i],
                        field + ".pretokenizers[" + std::to_string(i) + "]",
                        steps);
    return;
  }
  if (type == "ByteLevel") {
    Tokenizer::Impl::PreStep s{};
    s.byteLevel = true;
    s.addPrefixSpace = r.boolean(v, "add_prefix_space",
                                 field + ".add_prefix_space", std::nullopt);
    s.useRegex = r.boolean(v, "use_regex", field + ".use_regex", true);
    steps.push_back(s);
    return;
  }
  if (type == "Split") {
    const json &pat = r.object(r.require(v, "pattern", field + ".pattern"),
                               field + ".pattern");
    const json *re = r.get(pat, "Regex");
    if (!re)
      r.fail(field + ".pattern",
             "only Regex patterns are supported (String patterns are not)");
    std::string p = r.string(*re, field + ".pattern.Regex");
    auto kind = patternKind(p);
    if (!kind)
      r.fail(field + ".pattern.Regex",
             "unsupported split regex (only the GPT-2 and Llama-3 patterns "
             "are implemented): " +
                 p);
    std::string behavior = r.string(
        r.require(v, "behavior", field + ".behavior"), field + ".behavior");
    if (behavior != "Isolated")
      r.fail(field + ".behavior",
             "unsupported split behavior '" + behavior + "' (only Isolated)");
    if (r.boolean(v, "invert", field + ".invert", false))
      r.fail(field + ".invert", "inverted splits are not supported");
    Tokenizer::Impl::PreStep s{};
    s.byteLevel = false;
    s.pattern = *kind;
    steps.push_back(s);
    return;
  }
  r.fail(field + ".type", "unsupported pre-tokenizer '" + type + "'");
}

// Adds the ids a post-processor puts around sequence A.
void parsePostProcessor(const JsonReader &r, const json &v,
                        const std::string &field, std::vector<int32_t> &prefix,
                        std::vector<int32_t> &suffix) {
  std::string type = r.type(v, field);
  if (type == "ByteLevel")
    return;
  if (type == "Sequence") {
    const json &list = r.require(v, "processors", field + ".processors");
    if (!list.is_array())
      r.fail(field + ".processors", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      parsePostProcessor(r, list[i],
                         field + ".processors[" + std::to_string(i) + "]",
                         prefix, suffix);
    return;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto tokenId = [&](const char *key) {
      const json &p = r.require(v, key, field + "." + key);
      if (!p.is_array() || p.size() != 2)
        r.fail(field + "." + key, "expected [token, id]");
      return r.id(p[1], field + "." + key + "[1]");
    };
    int32_t cls = tokenId("cls"), sep = tokenId("sep");
    prefix.insert(prefix.begin(), cls);
    suffix.push_back(sep);
    return;
  }
  if (type == "TemplateProcessing") {
    const json &single = r.require(v, "single", field + ".single");
    if (!single.is_array())
      r.fail(field + ".single", "expected an array");
    const json &specials =
        r.object(r.require(v, "special_tokens", field + ".special_tokens"),
                 field + ".special_tokens");
    std::vector<int32_t> pre, post;
    bool seenA = false;
    for (size_t i = 0; i < single.size(); ++i) {
      std::string f = field + ".single[" + std::to_string(i) + "]";
      const json &piece = r.object(single[i], f);
      if (const json *seq = r.get(piece, "Sequence")) {
        std::string which = r.string(r.require(r.object(*seq, f + ".Sequence"),
                                               "id", f + ".Sequence.id"),
                                     f + ".Sequence.id");
        if (which != "A" || seenA)
          r.fail(f + ".Sequence.id", "a single template must use A once");
        seenA = true;
        continue;
      }
      const json *sp = r.get(piece, "SpecialToken");
      if (!sp)
        r.fail(f, "expected Sequence or SpecialToken");
      std::string name = r.string(r.require(r.object(*sp, f + ".SpecialToken"),
                                            "id", f + ".SpecialToken.id"),
                                  f + ".SpecialToken.id");
      const json *entry = r.get(specials, name);
      if (!entry)
        r.fail(field + ".special_tokens",
               "no entry for template token '" + name + "'");
      const json &ids =
          r.require(r.object(*entry, field + ".special_tokens." + name), "ids",
                    field + ".special_tokens." + name + ".ids");
      if (!ids.is_array())
        r.fail(field + ".special_tokens." + name + ".ids", "expected an array");
      for (const json &x : ids)
        (seenA ? post : pre)
            .push_back(r.id(x, field + ".special_tokens." + name + ".ids"));
    }
    if (!seenA)
      r.fail(field + ".single", "template has no $A");
    prefix.insert(prefix.begin(), pre.begin(), pre.end());
    suffix.insert(suffix.end(), post.begin(), post.end());
    return;
  }
  r.fail(field + ".type", "unsupported post-processor '" + type + "'");
}

// bos_token / eos_token of a tokenizer_config.json: a string or an
// AddedToken object.
std::optional<std::string> configToken(const json &cfg, const char *key) {
  auto it = cfg.find(key);
  if (it == cfg.end())
    return std::nullopt;
  if (it->is_string())
    return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string())
      return c->get<std::string>();
  }
  return std::nullopt;
}

std::unique_ptr<Tokenizer::Impl> loadHf(const json &root,
                                        const std::string &src) {
  JsonReader r(src);
  auto impl = std::make_unique<Tokenizer::Impl>();
  impl->kind = Tokenizer::Impl::Kind::Hf;
  impl->source = src;
  r.object(root, "");

  if (const json *v = r.get(root, "version")) {
    if (r.string(*v, "version") != "1.0")
      r.fail("version",
             "unknown tokenizer version '" + v->get<std::string>() + "'");
  }
  if (const json *n = r.get(root, "normalizer"); n && !n->is_null())
    r.fail("normalizer", "unsupported normalizer '" +
                             (n->is_object() && n->contains("type") &&
                                      (*n)["type"].is_string()
                                  ? (*n)["type"].get<std::string>()
                                  : n->dump()) +
                             "' (only null)");

  // Model.
  const json &model = r.object(r.require(root, "model", "model"), "model");
  if (const json *t = r.get(model, "type")) {
    std::string type = r.string(*t, "model.type");
    if (type != "BPE")
      r.fail("model.type", "unsupported model type '" + type + "' (only BPE)");
  }
  if (const json *d = r.get(model, "dropout"); d && !d->is_null()) {
    if (!d->is_number() || d->get<double>() != 0.0)
      r.fail("model.dropout", "BPE dropout is not supported");
  }
  for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json *v = r.get(model, key);
    if (v && !v->is_null() &&
        !(v->is_string() && v->get<std::string>().empty()))
      r.fail(std::string("model.") + key, "only null or \"\" is supported");
  }
  if (r.boolean(model, "byte_fallback", "model.byte_fallback", false))
    r.fail("model.byte_fallback", "byte_fallback is not supported");
  impl->fuseUnk = r.boolean(model, "fuse_unk", "model.fuse_unk", false);
  impl->ignoreMerges =
      r.boolean(model, "ignore_merges", "model.ignore_merges", false);

  const json &vocab =
      r.object(r.require(model, "vocab", "model.vocab"), "model.vocab");
  impl->vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    int32_t id = r.id(it.value(), "model.vocab[\"" + it.key() + "\"]");
    if (impl->present(id))
      r.fail("model.vocab[\"" + it.key() + "\"]", "id " + std::to_string(id) +
                                                      " is also used by '" +
                                                      impl->idText[id] + "'");
    impl->vocab.emplace(it.key(), id);
    impl->setToken(id, it.key());
  }
  if (const json *u = r.get(model, "unk_token"); u && !u->is_null()) {
    std::string unk = r.string(*u, "model.unk_token");
    auto it = impl->vocab.find(unk);
    if (it == impl->vocab.end())
      r.fail("model.unk_token", "'" + unk + "' is not in model.vocab");
    impl->unkId = it->second;
  }

  const json &merges = r.require(model, "merges", "model.merges");
  if (!merges.is_array())
    r.fail("model.merges", "expected an array");
  impl->merges.reserve(merges.size());
  int32_t rank = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    std::string f = "model.merges[" + std::to_string(i) + "]";
    std::string a, b;
    const json &m = merges[i];
    if (m.is_string()) {
      std::string line = m.get<std::string>();
      if (line.rfind("#version", 0) == 0)
        continue; // skipped without taking a rank, as HF does
      size_t sp = line.find(' ');
      if (sp == std::string::npos ||
          line.find(' ', sp + 1) != std::string::npos)
        r.fail(f, "expected \"left right\"");
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() &&
               m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      r.fail(f, "expected \"left right\" or [left, right]");
    }
    auto ia = impl->vocab.find(a), ib = impl->vocab.find(b),
         im = impl->vocab.find(a + b);
    if (ia == impl->vocab.end())
      r.fail(f, "token '" + a + "' is not in model.vocab");
    if (ib == impl->vocab.end())
      r.fail(f, "token '" + b + "' is not in model.vocab");
    if (im == impl->vocab.end())
      r.fail(f, "merged token '" + a + b + "' is not in model.vocab");
    // Later duplicates win, as when HF collects the merges into a map.
    impl->merges[pairKey(ia->second, ib->second)] = {rank++, im->second};
  }
  for (int b = 0; b < 256; ++b) {
    auto it =
        impl->vocab.find(unicode::byteToUnicodeUtf8(static_cast<uint8_t>(b)));
    impl->byteIds[b] = it == impl->vocab.end() ? -1 : it->second;
  }

  // Added tokens, re-added one by one as HF's deserializer does: a token
  // already in the vocabulary keeps that id, a new one takes the next free
  // id after the model vocabulary. The ids stored in the file are only
  // checked by HF (with a warning), so they are not trusted here either.
  const size_t modelSize = impl->vocab.size();
  std::vector<Tokenizer::Impl::AddedToken> specialList, classicList;
  if (const json *added = r.get(root, "added_tokens");
      added && !added->is_null()) {
    if (!added->is_array())
      r.fail("added_tokens", "expected an array");
    int32_t maxAdded = -1;
    for (size_t i = 0; i < added->size(); ++i) {
      std::string f = "added_tokens[" + std::to_string(i) + "]";
      const json &t = r.object((*added)[i], f);
      Tokenizer::Impl::AddedToken tok;
      r.id(r.require(t, "id", f + ".id"), f + ".id");
      tok.content =
          r.string(r.require(t, "content", f + ".content"), f + ".content");
      tok.special = r.boolean(t, "special", f + ".special", false);
      tok.singleWord = r.boolean(t, "single_word", f + ".single_word", false);
      tok.lstrip = r.boolean(t, "lstrip", f + ".lstrip", false);
      tok.rstrip = r.boolean(t, "rstrip", f + ".rstrip", false);
      tok.normalized =
          r.boolean(t, "normalized", f + ".normalized", !tok.special);
      if (tok.special && !tok.content.empty() &&
          !impl->specialContents.count(tok.content)) {
        specialList.push_back(tok);
        impl->specialContents.insert(tok.content);
      }
      if (tok.content.empty())
        continue;
      // An identical token (all flags equal) is ignored; it can only sit at
      // the id its content already has.
      if (auto a = impl->addedIds.find(tok.content);
          a != impl->addedIds.end()) {
        auto t = impl->addedById.find(a->second);
        if (t != impl->addedById.end() && t->second == tok)
          continue;
      }
      int32_t newId;
      if (auto a = impl->addedIds.find(tok.content); a != impl->addedIds.end())
        newId = a->second;
      else if (auto v = impl->vocab.find(tok.content); v != impl->vocab.end())
        newId = v->second;
      else if (maxAdded < 0)
        newId = static_cast<int32_t>(modelSize);
      else if (static_cast<size_t>(maxAdded) >= modelSize || modelSize == 0)
        newId = maxAdded + 1;
      else
        newId = static_cast<int32_t>(modelSize);
      impl->addedIds[tok.content] = newId;
      maxAdded = std::max(maxAdded, newId);
      impl->addedById[newId] = tok;
      impl->setToken(newId, tok.content);
      if (!impl->specialContents.count(tok.content))
        classicList.push_back(tok);
    }
  }
  std::vector<std::pair<std::string, int32_t>> raw, normalized;
  for (const auto *list : {&specialList, &classicList})
    for (const auto &tok : *list)
      (tok.normalized ? normalized : raw)
          .emplace_back(tok.content, impl->addedIds.at(tok.content));
  impl->rawTrie.build(std::move(raw));
  impl->normalizedTrie.build(std::move(normalized));

  // Pre-tokenizer: optional regex splits, then ByteLevel.
  const json *pre = r.get(root, "pre_tokenizer");
  if (!pre || pre->is_null())
    r.fail("pre_tokenizer", "missing (only byte-level BPE is supported)");
  parsePreTokenizer(r, *pre, "pre_tokenizer", impl->steps);
  size_t byteLevels = 0;
  for (const auto &s : impl->steps)
    byteLevels += s.byteLevel;
  if (byteLevels != 1 || !impl->steps.back().byteLevel)
    r.fail("pre_tokenizer",
           "must end with exactly one ByteLevel (only byte-level BPE is "
           "supported)");

  if (const json *post = r.get(root, "post_processor");
      post && !post->is_null())
    parsePostProcessor(r, *post, "post_processor", impl->prefixIds,
                       impl->suffixIds);
  for (int32_t id : impl->prefixIds)
    if (!impl->present(id))
      r.fail("post_processor", "id " + std::to_string(id) + " has no token");
  for (int32_t id : impl->suffixIds)
    if (!impl->present(id))
      r.fail("post_processor", "id " + std::to_string(id) + " has no token");
  if (!impl->prefixIds.empty())
    impl->bos = impl->prefixIds.front();

  if (const json *dec = r.get(root, "decoder"); dec && !dec->is_null()) {
    std::string type = r.type(*dec, "decoder");
    if (type != "ByteLevel")
      r.fail("decoder.type", "unsupported decoder '" + type + "'");
    impl->byteLevelDecoder = true;
  } else {
    impl->byteLevelDecoder = false;
  }
  return impl;
}

} // namespace

//===----------------------------------------------------------------------===//
// Loading GGUF
//===----------------------------------------------------------------------===//

namespace {

bool ggufBool(const GgufFile &g, const std::string &key, bool def) {
  const GgufValue *v = g.find(key);
  if (!v)
    return def;
  if (v->type != GgufValueType::Bool)
    throw FormatError(g.path(), key, "expected a bool");
  return std::get<bool>(v->value);
}

// Token texts llama.cpp treats as control tokens whatever their type says
// (its EOT / EOM / FIM / EOG auto-detection).
bool forcedControl(const std::string &t) {
  static const char *const kNames[] = {"<|eot_id|>",
                                       "<|im_end|>",
                                       "<|end|>",
                                       "<end_of_turn>",
                                       "<|endoftext|>",
                                       "<|end_of_text|>",
                                       "<EOT>",
                                       "_<EOT>",
                                       "[EOT]",
                                       "<｜end▁of▁sentence｜>",
                                       "<end_of_utterance>",
                                       "<|eom_id|>",
                                       "<|return|>",
                                       "<|call|>",
                                       "<|flush|>",
                                       "<|calls|>",
                                       "</s>",
                                       "[EOS]",
                                       "<eos>",
                                       "<turn|>",
                                       "<|tool_response>",
                                       "[e~[",
                                       "<|fim_prefix|>",
                                       "<fim-prefix>",
                                       "<fim_prefix>",
                                       "<｜fim▁begin｜>",
                                       "<PRE>",
                                       "▁<PRE>",
                                       "<|code_prefix|>",
                                       "<|prefix|>",
                                       "<|fim_suffix|>",
                                       "<fim-suffix>",
                                       "<fim_suffix>",
                                       "<｜fim▁hole｜>",
                                       "<SUF>",
                                       "▁<SUF>",
                                       "<|code_suffix|>",
                                       "<|suffix|>",
                                       "<|fim_middle|>",
                                       "<fim-middle>",
                                       "<fim_middle>",
                                       "<｜fim▁end｜>",
                                       "<MID>",
                                       "▁<MID>",
                                       "<|code_middle|>",
                                       "<|middle|>",
                                       "<|fim_pad|>",
                                       "<fim-pad>",
                                       "<fim_pad>",
                                       "<PAD>",
                                       "[PAD]",
                                       "<|fim_repo|>",
                                       "<|repo_name|>",
                                       "<fim-repo>",
                                       "<REPO>",
                                       "<reponame>",
                                       "<|file_sep|>"};
  static const std::unordered_set<std::string> names(std::begin(kNames),
                                                     std::end(kNames));
  return names.count(t) > 0;
}

std::unique_ptr<Tokenizer::Impl> loadGguf(const GgufFile &g) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  impl->source = g.path();
  const std::string model = g.getString("tokenizer.ggml.model");
  bool spm;
  if (model == "llama")
    spm = true;
  else if (model == "gpt2")
    spm = false;
  else
    throw FormatError(g.path(), "tokenizer.ggml.model",
                      "unsupported tokenizer model '" + model +
                          "' (only gpt2 and llama)");
  impl->kind =
      spm ? Tokenizer::Impl::Kind::GgufSpm : Tokenizer::Impl::Kind::GgufBpe;

  std::vector<std::string> tokens = g.getStringArray("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  std::vector<int64_t> types;
  if (g.find("tokenizer.ggml.token_type")) {
    types = g.getIntArray("tokenizer.ggml.token_type");
    if (types.size() < n)
      throw FormatError(g.path(), "tokenizer.ggml.token_type",
                        "has " + std::to_string(types.size()) +
                            " entries for " + std::to_string(n) + " tokens");
  }
  if (g.find("tokenizer.ggml.scores")) {
    std::vector<double> s = g.getFloatArray("tokenizer.ggml.scores");
    if (s.size() < n)
      throw FormatError(g.path(), "tokenizer.ggml.scores",
                        "has " + std::to_string(s.size()) + " entries for " +
                            std::to_string(n) + " tokens");
    impl->scores.assign(s.begin(), s.begin() + n);
  } else {
    impl->scores.assign(n, 0.0f);
  }

  impl->attrs.resize(n);
  impl->vocab.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string t = tokens[i];
    if (t.empty())
      t = "[EMPTY_" + std::to_string(i) + "]";
    if (!impl->vocab.emplace(t, static_cast<int32_t>(i)).second)
      throw FormatError(g.path(), "tokenizer.ggml.tokens",
                        "duplicate token '" + t + "' at ids " +
                            std::to_string(impl->vocab[t]) + " and " +
                            std::to_string(i));
    impl->setToken(static_cast<int32_t>(i), t);
    uint32_t attr = kAttrNormal;
    if (!types.empty()) {
      switch (types[i]) {
      case 1:
        attr = kAttrNormal;
        break;
      case 2:
        attr = kAttrUnknown;
        break;
      case 3:
        attr = kAttrControl;
        break;
      case 4:
        attr = kAttrUserDefined;
        break;
      case 5:
        attr = kAttrUnused;
        break;
      case 6:
        attr = kAttrByte;
        break;
      default:
        attr = 0;
        break;
      }
    }
    if (forcedControl(t))
      attr |= kAttrControl;
    if (t == "<|channel|>" || t == "<|message|>" || t == "<|start|>" ||
        t == "<|constrain|>")
      attr = kAttrUserDefined;
    impl->attrs[i] = attr;
  }

  int64_t bos = -1, eos = -1;
  if (spm) {
    bos = 1;
    eos = 2;
    impl->addBos = true;
    impl->addSpacePrefix = true;
  } else {
    // llama.cpp's defaults for BPE vocabularies.
    bos = 11;
    eos = 11;
    const std::string pre =
        g.getOptionalString("tokenizer.ggml.pre").value_or("default");
    if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe") {
      impl->steps.push_back({false, PreTokenizer::Llama3, false, false});
      impl->ignoreMerges = true;
      impl->addBos = true;
    } else if (pre == "gpt-2" || pre == "default") {
      impl->steps.push_back({false, PreTokenizer::Gpt2, false, false});
    } else {
      throw FormatError(g.path(), "tokenizer.ggml.pre",
                        "unsupported pre-tokenizer '" + pre +
                            "' (only llama-bpe/llama3/llama-v3, gpt-2, "
                            "default)");
    }
    impl->steps.push_back({true, PreTokenizer::Gpt2, false, false});
    impl->splitOptions.foldLongS = false; // llama.cpp uses '[sS]

    std::vector<std::string> merges = g.getStringArray("tokenizer.ggml.merges");
    impl->merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string &m = merges[i];
      size_t sp = m.find(' ', 1);
      std::string a = sp == std::string::npos ? "" : m.substr(0, sp);
      std::string b = sp == std::string::npos ? "" : m.substr(sp + 1);
      auto ia = impl->vocab.find(a), ib = impl->vocab.find(b),
           im = impl->vocab.find(a + b);
      if (sp == std::string::npos || ia == impl->vocab.end() ||
          ib == impl->vocab.end() || im == impl->vocab.end())
        throw FormatError(
            g.path(), "tokenizer.ggml.merges[" + std::to_string(i) + "]",
            "'" + m + "' is not a merge of two tokens into a token");
      // First occurrence wins (llama.cpp emplaces).
      impl->merges.emplace(pairKey(ia->second, ib->second),
                           MergeInfo{static_cast<int32_t>(i), im->second});
    }
    for (int b = 0; b < 256; ++b) {
      auto it =
          impl->vocab.find(unicode::byteToUnicodeUtf8(static_cast<uint8_t>(b)));
      impl->byteIds[b] = it == impl->vocab.end() ? -1 : it->second;
    }
  }
  impl->addSpacePrefix =
      ggufBool(g, "tokenizer.ggml.add_space_prefix", impl->addSpacePrefix);
  // Default ids out of range are disabled; keys out of range are ignored.
  if (bos >= static_cast<int64_t>(n))
    bos = -1;
  if (eos >= static_cast<int64_t>(n))
    eos = -1;
  if (auto v = g.getOptionalUInt("tokenizer.ggml.bos_token_id"); v && *v < n)
    bos = static_cast<int64_t>(*v);
  if (auto v = g.getOptionalUInt("tokenizer.ggml.eos_token_id"); v && *v < n)
    eos = static_cast<int64_t>(*v);
  if (bos >= 0)
    impl->bos = static_cast<int32_t>(bos);
  if (eos >= 0)
    impl->eos = static_cast<int32_t>(eos);
  impl->addBos = ggufBool(g, "tokenizer.ggml.add_bos_token", impl->addBos);
  impl->addEos = ggufBool(g, "tokenizer.ggml.add_eos_token", impl->addEos);
  if (impl->addBos && !impl->bos)
    throw FormatError(g.path(), "tokenizer.ggml.add_bos_token",
                      "is true, but tokenizer.ggml.bos_token_id is not set");
  if (impl->addEos && !impl->eos)
    throw FormatError(g.path(), "tokenizer.ggml.add_eos_token",
                      "is true, but tokenizer.ggml.eos_token_id is not set");

  // Special tokens matched in text, longest first.
  for (size_t i = 0; i < n; ++i)
    if (impl->attrs[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown))
      impl->specialOrder.push_back(static_cast<int32_t>(i));
  std::stable_sort(impl->specialOrder.begin(), impl->specialOrder.end(),
                   [&](int32_t a, int32_t b) {
                     return impl->idText[a].size() > impl->idText[b].size();
                   });
  std::vector<std::pair<std::string, int32_t>> entries;
  for (size_t k = 0; k < impl->specialOrder.size(); ++k)
    entries.emplace_back(impl->idText[impl->specialOrder[k]],
                         static_cast<int32_t>(k));
  impl->specialTrie.build(std::move(entries));
  return impl;
}

} // namespace

//===----------------------------------------------------------------------===//
// Tokenizer
//===----------------------------------------------------------------------===//

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::fromHfJson(const std::string &path) {
  std::string file = isDirectory(path) ? path + "/tokenizer.json" : path;
  std::string text = readFile(file);
  auto tok = fromHfJsonString(text, file);
  // bos/eos names from tokenizer_config.json, when there is one.
  std::string cfgPath = dirOf(file) + "/tokenizer_config.json";
  std::ifstream probe(cfgPath);
  if (probe) {
    json cfg;
    try {
      cfg = json::parse(readFile(cfgPath));
    } catch (const json::exception &e) {
      throw FormatError(cfgPath, "", std::string("invalid JSON: ") + e.what());
    }
    if (cfg.is_object()) {
      if (auto b = configToken(cfg, "bos_token")) {
        auto id = tok->tokenToId(*b);
        if (!id)
          throw FormatError(cfgPath, "bos_token",
                            "'" + *b + "' is not a token of " + file);
        tok->impl_->bos = *id;
      }
      if (auto e = configToken(cfg, "eos_token")) {
        auto id = tok->tokenToId(*e);
        if (!id)
          throw FormatError(cfgPath, "eos_token",
                            "'" + *e + "' is not a token of " + file);
        tok->impl_->eos = *id;
      }
    }
  }
  return tok;
}

std::unique_ptr<Tokenizer>
Tokenizer::fromHfJsonString(const std::string &text,
                            const std::string &sourceName) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception &e) {
    throw FormatError(sourceName, "", std::string("invalid JSON: ") + e.what());
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(loadHf(root, sourceName)));
}

std::unique_ptr<Tokenizer> Tokenizer::fromGguf(const GgufFile &gguf) {
  return std::unique_ptr<Tokenizer>(new Tokenizer(loadGguf(gguf)));
}

std::vector<int32_t> Tokenizer::encode(const std::string &text,
                                       bool addSpecial) const {
  return impl_->encode(text, addSpecial);
}

std::string Tokenizer::decode(const std::vector<int32_t> &ids,
                              bool skipSpecial) const {
  return impl_->decode(ids, skipSpecial);
}

size_t Tokenizer::vocabSize() const { return impl_->idText.size(); }

std::optional<int32_t> Tokenizer::tokenToId(const std::string &token) const {
  if (impl_->kind == Impl::Kind::Hf) {
    auto a = impl_->addedIds.find(token);
    if (a != impl_->addedIds.end())
      return a->second;
  }
  auto it = impl_->vocab.find(token);
  if (it == impl_->vocab.end())
    return std::nullopt;
  return it->second;
}

std::string Tokenizer::idToToken(int32_t id) const {
  return impl_->present(id) ? impl_->idText[id] : std::string();
}

bool Tokenizer::isSpecial(int32_t id) const {
  if (!impl_->present(id))
    return false;
  if (impl_->kind == Impl::Kind::Hf)
    return impl_->specialContents.count(impl_->idText[id]) > 0;
  return (impl_->attrs[id] & kAttrControl) != 0;
}

std::optional<int32_t> Tokenizer::bosId() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eosId() const { return impl_->eos; }

} // namespace bitloom

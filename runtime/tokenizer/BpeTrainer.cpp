//===- BpeTrainer.cpp - Byte-level BPE training for generated models ------===//

#include "tokenizer/BpeTrainer.h"

#include "formats/Gguf.h"
#include "tokenizer/PreTokenize.h"
#include "tokenizer/TokenTrie.h"
#include "tokenizer/Unicode.h"

#include <algorithm>
#include <array>
#include <map>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace bitloom {
namespace {

inline uint64_t pairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) |
         static_cast<uint32_t>(b);
}

struct Trainer {
  std::vector<std::string> &tokens;
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  std::unordered_map<uint64_t, int64_t> pairCount;
  std::unordered_map<uint64_t, std::vector<int32_t>> pairWords;

  struct Entry {
    int64_t count;
    int32_t a, b;
  };
  std::vector<Entry> heap;
  // Max-heap order: higher count first, then smaller (left, right) strings.
  bool lower(const Entry &x, const Entry &y) const {
    if (x.count != y.count)
      return x.count < y.count;
    int c = tokens[x.a].compare(tokens[y.a]);
    if (c != 0)
      return c > 0;
    return tokens[x.b].compare(tokens[y.b]) > 0;
  }
  void push(uint64_t key, int64_t count) {
    heap.push_back({count, static_cast<int32_t>(key >> 32),
                    static_cast<int32_t>(key & 0xFFFFFFFF)});
    std::push_heap(
        heap.begin(), heap.end(),
        [this](const Entry &x, const Entry &y) { return lower(x, y); });
  }
  Entry pop() {
    std::pop_heap(
        heap.begin(), heap.end(),
        [this](const Entry &x, const Entry &y) { return lower(x, y); });
    Entry e = heap.back();
    heap.pop_back();
    return e;
  }

  void addPairs(int32_t w, int64_t sign, std::vector<uint64_t> *dirty) {
    const auto &s = words[w];
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = pairKey(s[i], s[i + 1]);
      pairCount[k] += sign * counts[w];
      if (sign > 0)
        pairWords[k].push_back(w);
      if (dirty)
        dirty->push_back(k);
    }
  }
};

// Splits `corpus` at the special tokens (leftmost-longest) and appends the
// text between them.
std::vector<std::string> cutSpecials(const std::string &corpus,
                                     const std::vector<std::string> &specials) {
  TokenTrie trie;
  std::vector<std::pair<std::string, int32_t>> entries;
  for (size_t i = 0; i < specials.size(); ++i)
    entries.emplace_back(specials[i], static_cast<int32_t>(i));
  trie.build(std::move(entries));
  std::vector<std::string> out;
  size_t start = 0, pos = 0;
  while (pos < corpus.size()) {
    size_t len = trie.longest(corpus, pos, corpus.size()).first;
    if (len == 0) {
      ++pos;
      continue;
    }
    if (pos > start)
      out.push_back(corpus.substr(start, pos - start));
    pos += len;
    start = pos;
  }
  if (start < corpus.size())
    out.push_back(corpus.substr(start));
  return out;
}

void jsonString(std::string &out, const std::string &s) {
  static const char *hex = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    default:
      if (c < 0x20) {
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 15];
      } else {
        out += static_cast<char>(c);
      }
    }
  }
  out += '"';
}

} // namespace

BpeVocab trainByteLevelBpe(const std::string &corpus, size_t vocabSize,
                           PreTokenizer pre,
                           const std::vector<std::string> &specialTokens) {
  std::unordered_set<std::string> specialSet;
  for (const std::string &s : specialTokens) {
    if (s.empty())
      throw std::invalid_argument("trainByteLevelBpe: empty special token");
    if (!specialSet.insert(s).second)
      throw std::invalid_argument(
          "trainByteLevelBpe: duplicate special token '" + s + "'");
  }
  if (vocabSize < 256 + specialTokens.size())
    throw std::invalid_argument(
        "trainByteLevelBpe: vocab size " + std::to_string(vocabSize) +
        " leaves no room for 256 byte tokens and " +
        std::to_string(specialTokens.size()) + " special tokens");
  const size_t target = vocabSize - specialTokens.size();

  BpeVocab v;
  v.pre = pre;
  std::array<int32_t, 256> byteId{};
  for (uint8_t b : unicode::byteLevelOrder()) {
    byteId[b] = static_cast<int32_t>(v.tokens.size());
    v.tokens.push_back(unicode::byteToUnicodeUtf8(b));
  }
  std::unordered_map<std::string, int32_t> index;
  for (size_t i = 0; i < v.tokens.size(); ++i)
    index.emplace(v.tokens[i], static_cast<int32_t>(i));

  // Word counts over the pre-tokenized corpus; sorted for determinism.
  std::map<std::string, int64_t> wordCounts;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (const std::string &chunk : cutSpecials(corpus, specialTokens)) {
    ranges.clear();
    pretok::split(pre, chunk, 0, chunk.size(), ranges);
    for (auto [b, e] : ranges)
      ++wordCounts[chunk.substr(b, e - b)];
  }

  Trainer t{v.tokens, {}, {}, {}, {}, {}};
  t.words.reserve(wordCounts.size());
  for (const auto &[word, count] : wordCounts) {
    std::vector<int32_t> syms;
    syms.reserve(word.size());
    for (unsigned char c : word)
      syms.push_back(byteId[c]);
    t.words.push_back(std::move(syms));
    t.counts.push_back(count);
  }
  for (int32_t w = 0; w < static_cast<int32_t>(t.words.size()); ++w)
    t.addPairs(w, +1, nullptr);
  for (const auto &[k, c] : t.pairCount)
    if (c >= 2)
      t.push(k, c);

  // The byte-level spelling of special tokens, so merges never recreate one.
  std::unordered_set<std::string> forbiddenText;
  for (const std::string &s : specialTokens)
    forbiddenText.insert(unicode::byteLevelEncode(s));

  std::unordered_set<uint64_t> forbidden;
  std::vector<int32_t> stamp(t.words.size(), -1);
  std::vector<uint64_t> dirty;
  int32_t step = 0;
  while (v.tokens.size() < target && !t.heap.empty()) {
    Trainer::Entry top = t.pop();
    uint64_t key = pairKey(top.a, top.b);
    auto pc = t.pairCount.find(key);
    if (pc == t.pairCount.end() || pc->second != top.count)
      continue; // stale
    if (top.count < 2)
      break;
    if (forbidden.count(key))
      continue;
    std::string merged = v.tokens[top.a] + v.tokens[top.b];
    if (forbiddenText.count(merged)) {
      forbidden.insert(key);
      continue;
    }
    int32_t newId;
    if (auto it = index.find(merged); it != index.end()) {
      newId = it->second; // another pair already spelled this token
    } else {
      newId = static_cast<int32_t>(v.tokens.size());
      v.tokens.push_back(merged);
      index.emplace(merged, newId);
    }
    v.merges.emplace_back(v.tokens[top.a], v.tokens[top.b]);

    dirty.clear();
    std::vector<int32_t> affected = std::move(t.pairWords[key]);
    t.pairWords.erase(key);
    ++step;
    for (int32_t w : affected) {
      if (stamp[w] == step)
        continue;
      stamp[w] = step;
      auto &s = t.words[w];
      bool has = false;
      for (size_t i = 0; i + 1 < s.size() && !has; ++i)
        has = s[i] == top.a && s[i + 1] == top.b;
      if (!has)
        continue;
      t.addPairs(w, -1, &dirty);
      std::vector<int32_t> out;
      out.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == top.a && s[i + 1] == top.b) {
          out.push_back(newId);
          ++i;
        } else {
          out.push_back(s[i]);
        }
      }
      s = std::move(out);
      t.addPairs(w, +1, &dirty);
    }
    std::sort(dirty.begin(), dirty.end());
    dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
    for (uint64_t k : dirty) {
      auto it = t.pairCount.find(k);
      if (it->second == 0) {
        t.pairCount.erase(it);
        t.pairWords.erase(k);
      } else if (it->second >= 2) {
        t.push(k, it->second);
      }
    }
  }

  for (size_t n = 0; v.tokens.size() < target; ++n) {
    std::string name = "<|reserved_special_token_" + std::to_string(n) + "|>";
    if (specialSet.count(name) || index.count(name))
      continue;
    v.specialIds.push_back(static_cast<int32_t>(v.tokens.size()));
    v.tokens.push_back(name);
  }
  for (const std::string &s : specialTokens) {
    v.specialIds.push_back(static_cast<int32_t>(v.tokens.size()));
    v.tokens.push_back(s);
  }
  return v;
}

std::string toHfTokenizerJson(const BpeVocab &v,
                              std::optional<std::string> bosToken) {
  const size_t n = v.tokens.size();
  const size_t firstSpecial = n - v.specialIds.size();
  for (size_t k = 0; k < v.specialIds.size(); ++k)
    if (v.specialIds[k] != static_cast<int32_t>(firstSpecial + k))
      throw std::invalid_argument(
          "toHfTokenizerJson: special tokens must be the last ids");
  std::optional<int32_t> bosId;
  if (bosToken) {
    for (size_t i = firstSpecial; i < n; ++i)
      if (v.tokens[i] == *bosToken)
        bosId = static_cast<int32_t>(i);
    if (!bosId)
      throw std::invalid_argument("toHfTokenizerJson: bos token '" + *bosToken +
                                  "' is not a special token");
  }
  const bool llama3 = v.pre == PreTokenizer::Llama3;

  std::string o;
  o.reserve(n * 64 + v.merges.size() * 48);
  o += "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n"
       "  \"padding\": null,\n  \"added_tokens\": [";
  for (size_t i = firstSpecial; i < n; ++i) {
    o += i == firstSpecial ? "\n" : ",\n";
    o += "    {\n      \"id\": " + std::to_string(i) + ",\n      \"content\": ";
    jsonString(o, v.tokens[i]);
    o += ",\n      \"single_word\": false,\n      \"lstrip\": false,\n"
         "      \"rstrip\": false,\n      \"normalized\": false,\n"
         "      \"special\": true\n    }";
  }
  o += firstSpecial < n ? "\n  ],\n" : "],\n";
  o += "  \"normalizer\": null,\n";
  if (llama3) {
    o += "  \"pre_tokenizer\": {\n    \"type\": \"Sequence\",\n"
         "    \"pretokenizers\": [\n      {\n        \"type\": \"Split\",\n"
         "        \"pattern\": {\n          \"Regex\": ";
    jsonString(o, pretok::kLlama3Pattern);
    o += "\n        },\n        \"behavior\": \"Isolated\",\n"
         "        \"invert\": false\n      },\n      {\n"
         "        \"type\": \"ByteLevel\",\n"
         "        \"add_prefix_space\": false,\n"
         "        \"trim_offsets\": true,\n        \"use_regex\": false\n"
         "      }\n    ]\n  },\n";
  } else {
    o += "  \"pre_tokenizer\": {\n    \"type\": \"ByteLevel\",\n"
         "    \"add_prefix_space\": false,\n    \"trim_offsets\": true,\n"
         "    \"use_regex\": true\n  },\n";
  }
  const char *byteLevelPost =
      "\"type\": \"ByteLevel\",\n%I\"add_prefix_space\": "
      "true,\n%I\"trim_offsets\": false,\n"
      "%I\"use_regex\": true";
  auto indent = [](const char *tmpl, const std::string &pad) {
    std::string s;
    for (const char *p = tmpl; *p; ++p) {
      if (p[0] == '%' && p[1] == 'I') {
        s += pad;
        ++p;
      } else {
        s += *p;
      }
    }
    return s;
  };
  if (bosId) {
    std::string name;
    jsonString(name, *bosToken);
    std::string tpl;
    auto special = [&](const std::string &pad, int typeId) {
      return pad + "{\n" + pad + "  \"SpecialToken\": {\n" + pad +
             "    \"id\": " + name + ",\n" + pad +
             "    \"type_id\": " + std::to_string(typeId) + "\n" + pad +
             "  }\n" + pad + "}";
    };
    auto sequence = [&](const std::string &pad, const char *id, int typeId) {
      return pad + "{\n" + pad + "  \"Sequence\": {\n" + pad +
             "    \"id\": \"" + id + "\",\n" + pad +
             "    \"type_id\": " + std::to_string(typeId) + "\n" + pad +
             "  }\n" + pad + "}";
    };
    auto templ = [&](const std::string &pad) {
      std::string p2 = pad + "  ";
      std::string s = pad + "\"type\": \"TemplateProcessing\",\n" + pad +
                      "\"single\": [\n" + special(p2, 0) + ",\n" +
                      sequence(p2, "A", 0) + "\n" + pad + "],\n" + pad +
                      "\"pair\": [\n" + special(p2, 0) + ",\n" +
                      sequence(p2, "A", 0) + ",\n" + special(p2, 1) + ",\n" +
                      sequence(p2, "B", 1) + "\n" + pad + "],\n" + pad +
                      "\"special_tokens\": {\n" + p2 + name + ": {\n" + p2 +
                      "  \"id\": " + name + ",\n" + p2 + "  \"ids\": [\n" + p2 +
                      "    " + std::to_string(*bosId) + "\n" + p2 + "  ],\n" +
                      p2 + "  \"tokens\": [\n" + p2 + "    " + name + "\n" +
                      p2 + "  ]\n" + p2 + "}\n" + pad + "}";
      return s;
    };
    if (llama3) {
      o += "  \"post_processor\": {\n    \"type\": \"Sequence\",\n"
           "    \"processors\": [\n      {\n        " +
           indent(byteLevelPost, "        ") + "\n      },\n      {\n" +
           templ("        ") + "\n      }\n    ]\n  },\n";
    } else {
      o += "  \"post_processor\": {\n" + templ("    ") + "\n  },\n";
    }
  } else {
    o += "  \"post_processor\": {\n    " + indent(byteLevelPost, "    ") +
         "\n  },\n";
  }
  o += "  \"decoder\": {\n    \"type\": \"ByteLevel\",\n"
       "    \"add_prefix_space\": true,\n    \"trim_offsets\": true,\n"
       "    \"use_regex\": true\n  },\n";
  o += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
       "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n"
       "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
       "    \"byte_fallback\": false,\n    \"ignore_merges\": ";
  o += llama3 ? "true" : "false";
  o += ",\n    \"vocab\": {";
  for (size_t i = 0; i < firstSpecial; ++i) {
    o += i == 0 ? "\n      " : ",\n      ";
    jsonString(o, v.tokens[i]);
    o += ": " + std::to_string(i);
  }
  o += firstSpecial ? "\n    },\n" : "},\n";
  o += "    \"merges\": [";
  for (size_t i = 0; i < v.merges.size(); ++i) {
    o += i == 0 ? "\n      [\n        " : ",\n      [\n        ";
    jsonString(o, v.merges[i].first);
    o += ",\n        ";
    jsonString(o, v.merges[i].second);
    o += "\n      ]";
  }
  o += v.merges.empty() ? "]\n" : "\n    ]\n";
  o += "  }\n}";
  return o;
}

void writeGgufTokenizerMetadata(GgufWriter &writer, const BpeVocab &v,
                                std::optional<std::string> bosToken,
                                std::optional<std::string> eosToken) {
  std::vector<int32_t> types(v.tokens.size(), 1);
  for (int32_t id : v.specialIds)
    types[id] = 3;
  auto find = [&](const std::string &t) -> uint32_t {
    for (int32_t id : v.specialIds)
      if (v.tokens[id] == t)
        return static_cast<uint32_t>(id);
    throw std::invalid_argument("writeGgufTokenizerMetadata: '" + t +
                                "' is not a special token");
  };
  std::vector<std::string> merges;
  merges.reserve(v.merges.size());
  for (const auto &[a, b] : v.merges)
    merges.push_back(a + " " + b);
  writer.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
  writer.set(
      "tokenizer.ggml.pre",
      GgufValue::string(v.pre == PreTokenizer::Llama3 ? "llama-bpe" : "gpt-2"));
  writer.set("tokenizer.ggml.tokens", GgufValue::stringArray(v.tokens));
  writer.set("tokenizer.ggml.token_type", GgufValue::i32Array(types));
  writer.set("tokenizer.ggml.merges", GgufValue::stringArray(merges));
  if (bosToken)
    writer.set("tokenizer.ggml.bos_token_id", GgufValue::u32(find(*bosToken)));
  if (eosToken)
    writer.set("tokenizer.ggml.eos_token_id", GgufValue::u32(find(*eosToken)));
  writer.set("tokenizer.ggml.add_bos_token",
             GgufValue::boolean(bosToken.has_value()));
}

} // namespace bitloom

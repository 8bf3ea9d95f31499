//===- TokenTrie.h - Byte trie for literal token matching -------*- C++ -*-===//
//
// Internal to bitloom_tokenizer. A compact trie (sorted edge arrays) over
// token strings, built once; a Llama-3 sized list of reserved special tokens
// (128k entries) stays a few MB.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TOKENIZER_TOKENTRIE_H
#define BITLOOM_TOKENIZER_TOKENTRIE_H

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace bitloom {

class TokenTrie {
public:
  /// Empty strings are ignored; for duplicates the first entry wins.
  void build(std::vector<std::pair<std::string, int32_t>> entries) {
    nodes_.assign(1, Node{});
    edgeByte_.clear();
    edgeChild_.clear();
    first_.fill(false);
    entries.erase(std::remove_if(entries.begin(), entries.end(),
                                 [](const auto &e) { return e.first.empty(); }),
                  entries.end());
    std::stable_sort(
        entries.begin(), entries.end(),
        [](const auto &a, const auto &b) { return a.first < b.first; });
    for (const auto &e : entries)
      first_[static_cast<uint8_t>(e.first[0])] = true;
    struct Work {
      uint32_t node;
      size_t lo, hi, depth;
    };
    std::vector<Work> stack{{0, 0, entries.size(), 0}};
    while (!stack.empty()) {
      Work w = stack.back();
      stack.pop_back();
      size_t lo = w.lo;
      // Sorted order puts the entry equal to the prefix first.
      while (lo < w.hi && entries[lo].first.size() == w.depth) {
        if (nodes_[w.node].value < 0)
          nodes_[w.node].value = entries[lo].second;
        ++lo;
      }
      nodes_[w.node].edgeBegin = static_cast<uint32_t>(edgeByte_.size());
      uint32_t count = 0;
      for (size_t i = lo; i < w.hi;) {
        auto b = static_cast<uint8_t>(entries[i].first[w.depth]);
        size_t j = i;
        while (j < w.hi && static_cast<uint8_t>(entries[j].first[w.depth]) == b)
          ++j;
        auto child = static_cast<uint32_t>(nodes_.size());
        nodes_.push_back(Node{});
        edgeByte_.push_back(b);
        edgeChild_.push_back(child);
        ++count;
        stack.push_back({child, i, j, w.depth + 1});
        i = j;
      }
      nodes_[w.node].edgeCount = count;
    }
  }

  bool empty() const {
    return nodes_.size() <= 1 && (nodes_.empty() || nodes_[0].value < 0);
  }

  /// Longest entry that is a prefix of s[pos, end): {length, value}, or
  /// {0, -1} when none is.
  std::pair<size_t, int32_t> longest(const std::string &s, size_t pos,
                                     size_t end) const {
    std::pair<size_t, int32_t> best{0, -1};
    if (nodes_.empty() || pos >= end || !first_[static_cast<uint8_t>(s[pos])])
      return best;
    uint32_t node = 0;
    for (size_t i = pos; i < end; ++i) {
      node = child(node, static_cast<uint8_t>(s[i]));
      if (node == kNone)
        break;
      if (nodes_[node].value >= 0)
        best = {i + 1 - pos, nodes_[node].value};
    }
    return best;
  }

  /// Calls f(value) for every entry that is a prefix of s[pos, end).
  template <typename F>
  void forEachPrefix(const std::string &s, size_t pos, size_t end, F f) const {
    if (nodes_.empty() || pos >= end || !first_[static_cast<uint8_t>(s[pos])])
      return;
    uint32_t node = 0;
    for (size_t i = pos; i < end; ++i) {
      node = child(node, static_cast<uint8_t>(s[i]));
      if (node == kNone)
        break;
      if (nodes_[node].value >= 0)
        f(nodes_[node].value);
    }
  }

private:
  static constexpr uint32_t kNone = 0xFFFFFFFF;
  struct Node {
    int32_t value = -1;
    uint32_t edgeBegin = 0;
    uint32_t edgeCount = 0;
  };

  uint32_t child(uint32_t node, uint8_t b) const {
    const Node &n = nodes_[node];
    auto begin = edgeByte_.begin() + n.edgeBegin;
    auto end = begin + n.edgeCount;
    auto it = std::lower_bound(begin, end, b);
    if (it == end || *it != b)
      return kNone;
    return edgeChild_[it - edgeByte_.begin()];
  }

  std::vector<Node> nodes_;
  std::vector<uint8_t> edgeByte_;
  std::vector<uint32_t> edgeChild_;
  std::array<bool, 256> first_{};
};

} // namespace bitloom

#endif // BITLOOM_TOKENIZER_TOKENTRIE_H

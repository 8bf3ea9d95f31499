//===- TrainerTestUtil.h - Helpers for the trainer tests --------*- C++ -*-===//
#ifndef BITLOOM_TEST_TRAINER_TESTUTIL_H
#define BITLOOM_TEST_TRAINER_TESTUTIL_H

#include "formats/Error.h"
#include "tokenizer/Tokenizer.h"
#include "trainer/ChatTemplate.h"

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace bitloom::test {

inline std::string dataPath(const std::string &rel) {
  return std::string(BITLOOM_TEST_DATA_DIR) + "/" + rel;
}

inline std::string readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void writeText(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

inline nlohmann::json readJson(const std::string &path) {
  return nlohmann::json::parse(readText(path));
}

/// A fresh directory under /tmp, removed with everything in it.
class TempDir {
public:
  TempDir() {
    char tmpl[] = "/tmp/bitloom-trainer-XXXXXX";
    const char *p = ::mkdtemp(tmpl);
    if (!p)
      throw std::runtime_error("mkdtemp failed");
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string &name) const { return path_ + "/" + name; }
  const std::string &path() const { return path_; }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto &e : std::filesystem::directory_iterator(path_))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

private:
  std::string path_;
};

/// The conversations every template fixture renders.
inline std::vector<std::vector<trainer::ChatMessage>> fixtureConversations() {
  std::vector<std::vector<trainer::ChatMessage>> out;
  std::istringstream in(readText(dataPath("trainer/chat_conversations.jsonl")));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    std::vector<trainer::ChatMessage> c;
    nlohmann::json j = nlohmann::json::parse(line);
    for (const auto &m : j["messages"])
      c.push_back(
          {m["role"].get<std::string>(), m["content"].get<std::string>()});
    out.push_back(std::move(c));
  }
  return out;
}

inline const nlohmann::json &findTemplate(const nlohmann::json &templates,
                                          const std::string &name) {
  for (const auto &t : templates)
    if (t["name"] == name)
      return t;
  throw std::runtime_error("no template fixture " + name);
}

inline trainer::ChatTemplate templateFixture(const std::string &name) {
  static const nlohmann::json templates =
      readJson(dataPath("trainer/chat_templates.json"));
  const nlohmann::json &t = findTemplate(templates, name);
  return trainer::ChatTemplate::fromSource(
      t["chat_template"].get<std::string>(), t["bos_token"].get<std::string>(),
      t["eos_token"].get<std::string>(), "tokenizer_config.json",
      "chat_template");
}

/// The llama3-style test tokenizer (byte-level BPE, Llama-3 pre-tokenizer)
/// with every chat family's special tokens added, and bos/eos as given.
/// Written to `dir` as tokenizer.json + tokenizer_config.json.
inline std::unique_ptr<Tokenizer> chatTokenizer(const std::string &dir,
                                                const std::string &bos,
                                                const std::string &eos,
                                                bool addBos = true) {
  nlohmann::json tok =
      readJson(dataPath("tokenizer/llama3-style/tokenizer.json"));
  int id = 0;
  for (const auto &t : tok["added_tokens"])
    id = std::max(id, t["id"].get<int>() + 1);
  for (const auto &[k, v] : tok["model"]["vocab"].items())
    id = std::max(id, v.get<int>() + 1);
  const char *extra[] = {"<|im_start|>",  "<|im_end|>", "<start_of_turn>",
                         "<end_of_turn>", "<|system|>", "<|user|>",
                         "<|assistant|>", "<|end|>",    "<|endoftext|>",
                         "<s>",           "</s>",       "<bos>",
                         "<eos>"};
  for (const char *e : extra)
    tok["added_tokens"].push_back({{"id", id++},
                                   {"content", e},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", false},
                                   {"special", true}});
  // The post-processor adds <|begin_of_text|>; point it at `bos`.
  std::string post = tok["post_processor"].dump();
  auto replaceAll = [](std::string s, const std::string &a,
                       const std::string &b) {
    for (size_t p = s.find(a); p != std::string::npos;
         p = s.find(a, p + b.size()))
      s.replace(p, a.size(), b);
    return s;
  };
  nlohmann::json bosJson = bos;
  post = replaceAll(post, "\"<|begin_of_text|>\"", bosJson.dump());
  tok["post_processor"] =
      addBos ? nlohmann::json::parse(post) : nlohmann::json();
  // The replaced special token's id in the post-processor's table.
  if (addBos) {
    int bosId = -1;
    for (const auto &t : tok["added_tokens"])
      if (t["content"] == bos)
        bosId = t["id"];
    std::function<void(nlohmann::json &)> fix = [&](nlohmann::json &j) {
      if (j.is_object()) {
        if (j.contains("special_tokens") && j["special_tokens"].contains(bos)) {
          j["special_tokens"][bos]["ids"] = {bosId};
          j["special_tokens"][bos]["tokens"] = {bos};
        }
        for (auto &[k, v] : j.items())
          fix(v);
      } else if (j.is_array()) {
        for (auto &v : j)
          fix(v);
      }
    };
    nlohmann::json &pp = tok["post_processor"];
    fix(pp);
  }
  writeText(dir + "/tokenizer.json", tok.dump());
  writeText(dir + "/tokenizer_config.json",
            nlohmann::json({{"bos_token", bos}, {"eos_token", eos}}).dump());
  return Tokenizer::fromHfJson(dir);
}

} // namespace bitloom::test

#endif // BITLOOM_TEST_TRAINER_TESTUTIL_H

//===- TrainerTest.cpp - Byte-level BPE trainer ---------------------------===//

#include "tokenizer/BpeTrainer.h"
#include "tokenizer/Tokenizer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>

using namespace bitloom;
using json = nlohmann::json;

namespace {

std::string corpus() {
  std::ifstream in(BITLOOM_TEST_DATA_DIR "/tokenizer/corpus.txt",
                   std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::vector<std::string> kSpecials = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>"};

} // namespace

TEST(BpeTrainer, SizeOrderAndSpecials) {
  BpeVocab v =
      trainByteLevelBpe(corpus(), 4000, PreTokenizer::Llama3, kSpecials);
  ASSERT_EQ(v.tokens.size(), 4000u);
  // GPT-2 bytes_to_unicode order.
  EXPECT_EQ(v.tokens[0], "!");
  EXPECT_EQ(v.tokens[187], "\xC3\xBF"); // ÿ
  EXPECT_EQ(v.tokens[188], "\xC4\x80"); // Ā (byte 0)
  EXPECT_EQ(v.tokens[220], "\xC4\xA0"); // Ġ (space)
  EXPECT_EQ(v.tokens[3995], kSpecials[0]);
  EXPECT_EQ(v.tokens[3999], kSpecials[4]);
  // The corpus runs out of pairs that occur twice: reserved padding.
  size_t learned = v.tokens.size() - v.specialIds.size();
  EXPECT_LT(learned, 3995u);
  EXPECT_GT(v.merges.size(), 500u);
  EXPECT_EQ(v.tokens[learned], "<|reserved_special_token_0|>");
  for (size_t k = 0; k < v.specialIds.size(); ++k)
    EXPECT_EQ(v.specialIds[k], static_cast<int32_t>(learned + k));
  // Every merge spells a token; no token twice.
  std::set<std::string> all(v.tokens.begin(), v.tokens.end());
  EXPECT_EQ(all.size(), v.tokens.size());
  for (const auto &[a, b] : v.merges) {
    EXPECT_TRUE(all.count(a)) << a;
    EXPECT_TRUE(all.count(b)) << b;
    EXPECT_TRUE(all.count(a + b)) << a + b;
  }
  // The most frequent pair of this corpus (indentation) comes first.
  EXPECT_EQ(v.merges[0],
            (std::pair<std::string, std::string>{"\xC4\xA0", "\xC4\xA0"}));
}

TEST(BpeTrainer, StopsAtVocabSize) {
  BpeVocab v =
      trainByteLevelBpe(corpus(), 300, PreTokenizer::Gpt2, {"<|endoftext|>"});
  ASSERT_EQ(v.tokens.size(), 300u);
  EXPECT_EQ(v.specialIds, (std::vector<int32_t>{299}));
  EXPECT_EQ(v.merges.size(), 43u);
}

TEST(BpeTrainer, Deterministic) {
  std::string c = corpus();
  BpeVocab a = trainByteLevelBpe(c, 2000, PreTokenizer::Llama3, kSpecials);
  BpeVocab b = trainByteLevelBpe(c, 2000, PreTokenizer::Llama3, kSpecials);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_EQ(toHfTokenizerJson(a, kSpecials[0]),
            toHfTokenizerJson(b, kSpecials[0]));
}

TEST(BpeTrainer, SpecialTokensAreCutOutAndNeverLearned) {
  std::string c;
  for (int i = 0; i < 50; ++i)
    c += "<|eot_id|>hello<|eot_id|> eot_id eot_id ";
  BpeVocab v =
      trainByteLevelBpe(c, 400, PreTokenizer::Llama3, {"<|eot_id|>", "eot"});
  for (size_t i = 0; i + 2 < v.tokens.size(); ++i) {
    EXPECT_NE(v.tokens[i], "<|");
    EXPECT_NE(v.tokens[i], "eot"); // the special token's text is not merged
  }
  EXPECT_EQ(v.tokens.back(), "eot");
}

TEST(BpeTrainer, RejectsBadArguments) {
  EXPECT_THROW(trainByteLevelBpe("abc", 257, PreTokenizer::Gpt2, {"a", "b"}),
               std::invalid_argument);
  EXPECT_THROW(trainByteLevelBpe("abc", 600, PreTokenizer::Gpt2, {"a", "a"}),
               std::invalid_argument);
  EXPECT_THROW(trainByteLevelBpe("abc", 600, PreTokenizer::Gpt2, {""}),
               std::invalid_argument);
  BpeVocab v = trainByteLevelBpe("abc", 300, PreTokenizer::Gpt2, {"<s>"});
  EXPECT_THROW(toHfTokenizerJson(v, std::string("<nope>")),
               std::invalid_argument);
}

TEST(BpeTrainer, HfJsonLayout) {
  BpeVocab v =
      trainByteLevelBpe(corpus(), 1200, PreTokenizer::Llama3, kSpecials);
  json j = json::parse(toHfTokenizerJson(v, kSpecials[0]));
  EXPECT_EQ(j["version"], "1.0");
  EXPECT_TRUE(j["truncation"].is_null());
  EXPECT_TRUE(j["normalizer"].is_null());
  EXPECT_EQ(j["added_tokens"].size(), v.specialIds.size());
  EXPECT_EQ(j["added_tokens"][0]["id"], v.specialIds[0]);
  EXPECT_EQ(j["added_tokens"][0]["special"], true);
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][1]["use_regex"], false);
  EXPECT_EQ(j["post_processor"]["processors"][1]["type"], "TemplateProcessing");
  const json &m = j["model"];
  EXPECT_EQ(m["type"], "BPE");
  EXPECT_EQ(m["ignore_merges"], true);
  EXPECT_TRUE(m["continuing_subword_prefix"].is_null());
  EXPECT_EQ(m["vocab"].size(), v.tokens.size() - v.specialIds.size());
  EXPECT_EQ(m["merges"].size(), v.merges.size());
  EXPECT_EQ(m["merges"][0],
            json::array({v.merges[0].first, v.merges[0].second}));

  BpeVocab g =
      trainByteLevelBpe(corpus(), 500, PreTokenizer::Gpt2, {"<|endoftext|>"});
  json gj = json::parse(toHfTokenizerJson(g, std::nullopt));
  EXPECT_EQ(gj["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(gj["post_processor"]["type"], "ByteLevel");
  EXPECT_EQ(gj["model"]["ignore_merges"], false);
}

TEST(BpeTrainer, RoundTripThroughTokenizer) {
  std::string c = corpus();
  for (PreTokenizer pre : {PreTokenizer::Llama3, PreTokenizer::Gpt2}) {
    BpeVocab v = trainByteLevelBpe(c, 1500, pre, kSpecials);
    auto tok = Tokenizer::fromHfJsonString(toHfTokenizerJson(v, kSpecials[0]));
    EXPECT_EQ(tok->vocabSize(), 1500u);
    std::vector<int32_t> ids = tok->encode(c);
    EXPECT_LT(ids.size(), c.size() / 2); // the merges compress
    EXPECT_EQ(tok->decode(ids), c);
    std::vector<int32_t> withBos = tok->encode("<|start_header_id|>hi", true);
    ASSERT_GE(withBos.size(), 2u);
    EXPECT_EQ(withBos[0], tok->tokenToId(kSpecials[0]));
    EXPECT_EQ(withBos[1], tok->tokenToId(kSpecials[2]));
    for (size_t i = 0; i < v.tokens.size(); ++i)
      EXPECT_EQ(tok->idToToken(static_cast<int32_t>(i)), v.tokens[i]);
  }
}

TEST(BpeTrainer, FastForLlama3SizedVocab) {
  std::string base = corpus(), c;
  // ~50 KB: the corpus, and variants so that the text is not one repeat.
  for (int i = 0; c.size() < 50000; ++i)
    c += std::to_string(i) + " " + base;
  auto t0 = std::chrono::steady_clock::now();
  BpeVocab v = trainByteLevelBpe(c, 128256, PreTokenizer::Llama3, kSpecials);
  double train =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::string j = toHfTokenizerJson(v, kSpecials[0]);
  double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("train %.3f s, +json %.3f s (%zu merges, %zu bytes)\n", train,
              total, v.merges.size(), j.size());
  EXPECT_EQ(v.tokens.size(), 128256u);
#ifdef NDEBUG
  EXPECT_LT(train, 1.0);
#endif
  auto tok = Tokenizer::fromHfJsonString(j);
  EXPECT_EQ(tok->vocabSize(), 128256u);
  EXPECT_EQ(tok->encode("<|reserved_special_token_1000|>").size(), 1u);
  EXPECT_EQ(tok->decode(tok->encode(base)), base);
}

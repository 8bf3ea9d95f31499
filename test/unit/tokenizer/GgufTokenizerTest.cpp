//===- GgufTokenizerTest.cpp - tokenizer.ggml.* vocabularies --------------===//
//
// GGUF vocabularies follow llama.cpp. For a byte-level BPE written by
// writeGgufTokenizerMetadata, llama.cpp and HF agree on every fixture case,
// so the HF tokenizer of the same vocabulary is the reference; SPM is
// checked against hand-derived ids.
//
//===----------------------------------------------------------------------===//

#include "formats/Error.h"
#include "formats/Gguf.h"
#include "tokenizer/BpeTrainer.h"
#include "tokenizer/Tokenizer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace bitloom;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> caseTexts() {
  std::vector<std::string> out;
  std::istringstream in(slurp(BITLOOM_TEST_DATA_DIR "/tokenizer/cases.jsonl"));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty())
      out.push_back(nlohmann::json::parse(line).get<std::string>());
  return out;
}

std::string tempPath(const std::string &name) {
  fs::path dir = fs::temp_directory_path() / "bitloom-tokenizer-test";
  fs::create_directories(dir);
  return (dir / name).string();
}

const std::vector<std::string> kSpecials = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>"};

void compareWithHf(PreTokenizer pre, const std::string &file) {
  BpeVocab v =
      trainByteLevelBpe(slurp(BITLOOM_TEST_DATA_DIR "/tokenizer/corpus.txt"),
                        2000, pre, kSpecials);
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  writeGgufTokenizerMetadata(w, v, kSpecials[0], kSpecials[4]);
  w.write(tempPath(file));
  GgufFile g = GgufFile::open(tempPath(file));
  auto gguf = Tokenizer::fromGguf(g);
  auto hf = Tokenizer::fromHfJsonString(toHfTokenizerJson(v, kSpecials[0]));
  EXPECT_EQ(gguf->vocabSize(), hf->vocabSize());
  EXPECT_EQ(gguf->bosId(), hf->tokenToId(kSpecials[0]));
  EXPECT_EQ(gguf->eosId(), hf->tokenToId(kSpecials[4]));
  for (const std::string &text : caseTexts()) {
    SCOPED_TRACE(nlohmann::json(text).dump());
    EXPECT_EQ(gguf->encode(text), hf->encode(text));
    EXPECT_EQ(gguf->encode(text, true), hf->encode(text, true));
    EXPECT_EQ(gguf->decode(gguf->encode(text)), text);
  }
  EXPECT_TRUE(gguf->isSpecial(*gguf->bosId()));
  EXPECT_EQ(gguf->decode(gguf->encode("<|eot_id|>hi", true), true), "hi");
}

// A small SentencePiece-BPE vocabulary: <unk> <s> </s>, 256 byte tokens,
// then pieces whose scores favour longer merges.
struct SpmVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int32_t add(const std::string &t, float score, int32_t type = 1) {
    tokens.push_back(t);
    scores.push_back(score);
    types.push_back(type);
    return static_cast<int32_t>(tokens.size() - 1);
  }
};

} // namespace

TEST(GgufTokenizer, Llama3BpeMatchesHf) {
  compareWithHf(PreTokenizer::Llama3, "llama3.gguf");
}

TEST(GgufTokenizer, Gpt2BpeMatchesHf) {
  compareWithHf(PreTokenizer::Gpt2, "gpt2.gguf");
}

TEST(GgufTokenizer, SentencePieceBpe) {
  SpmVocab s;
  s.add("<unk>", 0, 2);
  s.add("<s>", 0, 3);
  s.add("</s>", 0, 3);
  static const char *hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b)
    s.add(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, 6);
  const std::string sp = "\xE2\x96\x81"; // ▁
  int32_t space = s.add(sp, -1);
  for (const char *c : {"h", "e", "l", "o", "w", "r", "d"})
    s.add(c, -2);
  s.add(sp + "h", -3);
  s.add(sp + "he", -4);
  s.add("ll", -3.5f);
  s.add(sp + "hell", -5);
  int32_t hello = s.add(sp + "hello", -6);
  s.add(sp + "w", -3);
  s.add(sp + "wo", -4);
  s.add("rl", -4);
  s.add(sp + "worl", -7);
  int32_t world = s.add(sp + "world", -8);
  int32_t user = s.add("<user>", 0, 4);

  GgufWriter w;
  w.set("tokenizer.ggml.model", GgufValue::string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::stringArray(s.tokens));
  w.set("tokenizer.ggml.scores", GgufValue::f32Array(s.scores));
  w.set("tokenizer.ggml.token_type", GgufValue::i32Array(s.types));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(1));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(2));
  w.write(tempPath("spm.gguf"));
  GgufFile g = GgufFile::open(tempPath("spm.gguf"));
  auto tok = Tokenizer::fromGguf(g);

  EXPECT_EQ(tok->bosId(), 1);
  EXPECT_EQ(tok->eosId(), 2);
  EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{hello, world}));
  EXPECT_EQ(tok->encode("hello world", true),
            (std::vector<int32_t>{1, hello, world}));
  // Characters outside the vocabulary fall back to byte tokens (3 + byte).
  EXPECT_EQ(tok->encode("h\xC3\xA9"),
            (std::vector<int32_t>{space + 8, 3 + 0xC3, 3 + 0xA9})); // ▁h
  // Control and user-defined tokens are matched in text; a space prefix
  // follows every special token.
  EXPECT_EQ(tok->encode("<s>hello<user>world"),
            (std::vector<int32_t>{1, hello, user, world}));
  EXPECT_EQ(tok->decode({hello, world}), "hello world");
  EXPECT_EQ(tok->decode({1, hello, world}), "<s> hello world");
  // As llama.cpp: removing BOS also keeps the space of the next piece.
  EXPECT_EQ(tok->decode({1, hello, world}, true), " hello world");
  EXPECT_EQ(tok->decode({3 + 0xC3, 3 + 0xA9}), "\xC3\xA9");
}

TEST(GgufTokenizer, Errors) {
  auto errorOf = [](GgufWriter &w, const std::string &name) -> std::string {
    w.write(tempPath(name));
    try {
      GgufFile g = GgufFile::open(tempPath(name));
      Tokenizer::fromGguf(g);
    } catch (const FormatError &e) {
      return e.what();
    }
    return "no error";
  };
  {
    GgufWriter w;
    w.set("tokenizer.ggml.model", GgufValue::string("bert"));
    w.set("tokenizer.ggml.tokens", GgufValue::stringArray({"a"}));
    std::string msg = errorOf(w, "bert.gguf");
    EXPECT_NE(msg.find("tokenizer.ggml.model"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bert"), std::string::npos) << msg;
  }
  {
    GgufWriter w;
    w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
    w.set("tokenizer.ggml.pre", GgufValue::string("qwen2"));
    w.set("tokenizer.ggml.tokens", GgufValue::stringArray({"a"}));
    w.set("tokenizer.ggml.merges", GgufValue::stringArray({}));
    std::string msg = errorOf(w, "qwen.gguf");
    EXPECT_NE(msg.find("tokenizer.ggml.pre"), std::string::npos) << msg;
  }
  {
    GgufWriter w;
    w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
    w.set("tokenizer.ggml.pre", GgufValue::string("gpt-2"));
    w.set("tokenizer.ggml.tokens", GgufValue::stringArray({"a", "b"}));
    w.set("tokenizer.ggml.merges", GgufValue::stringArray({"a c"}));
    std::string msg = errorOf(w, "merge.gguf");
    EXPECT_NE(msg.find("tokenizer.ggml.merges[0]"), std::string::npos) << msg;
  }
  {
    GgufWriter w;
    w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
    std::string msg = errorOf(w, "notokens.gguf");
    EXPECT_NE(msg.find("tokenizer.ggml.tokens"), std::string::npos) << msg;
  }
}

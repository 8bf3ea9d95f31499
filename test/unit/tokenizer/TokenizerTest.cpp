//===- TokenizerTest.cpp - tokenizer.json against reference ids -----------===//
//
// The expected.jsonl fixtures come from tokenizers.js (the tokenizer core of
// transformers.js, which mirrors HF tokenizers); see
// tools/tokenizer-reference/make-fixtures.sh. Behaviour where tokenizers.js
// differs from the Rust library (Oniguruma's \s includes U+0085, (?i)
// folds U+017F, single_word) is checked by hand below.
//
//===----------------------------------------------------------------------===//

#include "tokenizer/Tokenizer.h"
#include "formats/Error.h"
#include "tokenizer/PreTokenize.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <sstream>

using namespace bitloom;
using json = nlohmann::json;

namespace {

const std::string kDataDir = BITLOOM_TEST_DATA_DIR "/tokenizer";

std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Case {
  std::string text;
  std::vector<int32_t> ids, idsWithSpecial;
  std::string decoded;
};

std::vector<Case> loadExpected(const std::string &path) {
  std::vector<Case> cases;
  std::istringstream in(slurp(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    json j = json::parse(line);
    cases.push_back({j["text"].get<std::string>(),
                     j["ids"].get<std::vector<int32_t>>(),
                     j["ids_with_special"].get<std::vector<int32_t>>(),
                     j["decoded"].get<std::string>()});
  }
  return cases;
}

std::string describe(const std::vector<int32_t> &ids) {
  std::string s;
  for (int32_t id : ids)
    s += std::to_string(id) + " ";
  return s;
}

// Ids, ids with the post-processor's tokens, and decoding, case by case.
void checkFixture(const std::string &name, bool roundTrip) {
  auto tok = Tokenizer::fromHfJson(kDataDir + "/" + name);
  std::vector<Case> cases =
      loadExpected(kDataDir + "/" + name + "/expected.jsonl");
  ASSERT_GT(cases.size(), 5u);
  for (const Case &c : cases) {
    SCOPED_TRACE(name + ": " + json(c.text).dump());
    std::vector<int32_t> ids = tok->encode(c.text);
    EXPECT_EQ(ids, c.ids) << "got " << describe(ids) << "\nwant "
                          << describe(c.ids);
    EXPECT_EQ(tok->encode(c.text, true), c.idsWithSpecial);
    EXPECT_EQ(tok->decode(c.ids), c.decoded);
    if (roundTrip) {
      EXPECT_EQ(tok->decode(tok->encode(c.text)), c.text);
    }
  }
}

std::vector<std::string> splitPieces(PreTokenizer p, const std::string &text,
                                     pretok::SplitOptions o = {}) {
  std::vector<std::pair<size_t, size_t>> ranges;
  pretok::split(p, text, 0, text.size(), ranges, o);
  std::vector<std::string> out;
  for (auto [b, e] : ranges)
    out.push_back(text.substr(b, e - b));
  return out;
}

using Pieces = std::vector<std::string>;

// A byte-level tokenizer.json with the 256 byte tokens, optional merges and
// added tokens, for targeted tests.
json byteLevelJson() {
  json vocab = json::object();
  // GPT-2 order: the printable bytes keep their code point.
  int id = 0;
  std::vector<int> direct;
  for (int b = '!'; b <= '~'; ++b)
    direct.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b)
    direct.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b)
    direct.push_back(b);
  auto utf8 = [](uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
    return s;
  };
  std::vector<bool> isDirect(256);
  for (int b : direct) {
    isDirect[b] = true;
    vocab[utf8(b)] = id++;
  }
  int next = 256;
  for (int b = 0; b < 256; ++b)
    if (!isDirect[b])
      vocab[utf8(next++)] = id++;
  return json{{"version", "1.0"},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer",
               {{"type", "ByteLevel"},
                {"add_prefix_space", false},
                {"trim_offsets", true},
                {"use_regex", true}}},
              {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model",
               {{"type", "BPE"},
                {"vocab", vocab},
                {"merges", json::array()},
                {"ignore_merges", false}}}};
}

std::string errorOf(const json &j) {
  try {
    Tokenizer::fromHfJsonString(j.dump(), "tok.json");
  } catch (const FormatError &e) {
    return e.what();
  }
  return "no error";
}

} // namespace

TEST(TokenizerFixtures, Gpt2StyleTrained) { checkFixture("gpt2-style", true); }
TEST(TokenizerFixtures, Llama3StyleTrained) {
  checkFixture("llama3-style", true);
}
TEST(TokenizerFixtures, Gpt2RealVocabulary) { checkFixture("gpt2-real", true); }
// lstrip/rstrip tokens swallow spaces, so no round trip there.
TEST(TokenizerFixtures, AddedTokenFlags) {
  checkFixture("llama3-added", false);
}

TEST(TokenizerFixtures, Gpt2RealKnownIds) {
  // Well-known GPT-2 ids, independent of the generated reference.
  auto tok = Tokenizer::fromHfJson(kDataDir + "/gpt2-real/tokenizer.json");
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok->encode("<|endoftext|>"), (std::vector<int32_t>{50256}));
  EXPECT_EQ(tok->vocabSize(), 50257u);
  EXPECT_EQ(tok->idToToken(220), "\xC4\xA0"); // "Ġ"
  EXPECT_TRUE(tok->isSpecial(50256));
  EXPECT_FALSE(tok->bosId());
}

TEST(TokenizerFixtures, ConfigSuppliesBosEos) {
  auto tok = Tokenizer::fromHfJson(kDataDir + "/llama3-style");
  ASSERT_TRUE(tok->bosId());
  ASSERT_TRUE(tok->eosId());
  EXPECT_EQ(tok->idToToken(*tok->bosId()), "<|begin_of_text|>");
  EXPECT_EQ(tok->idToToken(*tok->eosId()), "<|eot_id|>");
  std::vector<int32_t> ids = tok->encode("Hi", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], *tok->bosId());
  EXPECT_EQ(tok->decode(ids, /*skipSpecial=*/true), "Hi");
  EXPECT_EQ(tok->decode(ids), "<|begin_of_text|>Hi");
}

TEST(PreTokenize, Gpt2Pattern) {
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, "Hello world"),
            (Pieces{"Hello", " world"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, "  hi"), (Pieces{" ", " hi"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, "a\n\nb"),
            (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, "it's 1234 x  "),
            (Pieces{"it", "'s", " 1234", " x", "  "}));
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, "IT'S"), (Pieces{"IT", "'", "S"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, " !!x"), (Pieces{" !!", "x"}));
}

TEST(PreTokenize, Llama3Pattern) {
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "a\n\nb"),
            (Pieces{"a", "\n\n", "b"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "1234567"),
            (Pieces{"123", "456", "7"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "IT'S (hello)"),
            (Pieces{"IT", "'S", " (", "hello", ")"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "x  \n  y"),
            (Pieces{"x", "  \n", " ", " y"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "end.\n\n  z"),
            (Pieces{"end", ".\n\n", " ", " z"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "\tword"), (Pieces{"\tword"}));
}

TEST(PreTokenize, OnigurumaSemantics) {
  // U+0085 (NEL) is \s for Oniguruma and Rust (tokenizers.js' JS \s misses
  // it); U+FEFF is not.
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, "a\xC2\x85\xC2\x85z"),
            (Pieces{"a", "\xC2\x85", "\xC2\x85", "z"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, "a\xEF\xBB\xBFz"),
            (Pieces{"a", "\xEF\xBB\xBF", "z"}));
  // (?i:'s) also matches 'ſ (U+017F folds to s) in Oniguruma; llama.cpp's
  // '[sS] rewrite does not.
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "x'\xC5\xBF"),
            (Pieces{"x", "'\xC5\xBF"}));
  pretok::SplitOptions llamaCpp;
  llamaCpp.foldLongS = false;
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "x'\xC5\xBF", llamaCpp),
            (Pieces{"x", "'\xC5\xBF"})); // ' + letter via [^\r\n\pL\pN]?\pL+
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3,
                        "x'\xC5\xBF"
                        "a",
                        llamaCpp),
            (Pieces{"x", "'\xC5\xBF"
                         "a"}));
  EXPECT_EQ(splitPieces(PreTokenizer::Llama3, "x'\xC5\xBF"
                                              "a"),
            (Pieces{"x", "'\xC5\xBF", "a"}));
  // Invalid UTF-8 bytes count as "other" characters and are kept.
  EXPECT_EQ(splitPieces(PreTokenizer::Gpt2, "a\xFF\xFE b"),
            (Pieces{"a", "\xFF\xFE", " b"}));
}

TEST(Tokenizer, InvalidUtf8DecodesToReplacement) {
  auto tok = Tokenizer::fromHfJsonString(byteLevelJson().dump());
  std::vector<int32_t> ids = tok->encode("a\xFFz");
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(tok->decode(ids), "a\xEF\xBF\xBDz");
  // A truncated sequence is one maximal subpart: one U+FFFD.
  EXPECT_EQ(tok->decode(tok->encode("\xE4\xB8")), "\xEF\xBF\xBD");
}

TEST(Tokenizer, AddedTokenIdsFollowHfAssignment) {
  // HF re-adds added tokens on load: ids in the file are not used; a new
  // token takes the next id after the model vocabulary.
  json j = byteLevelJson();
  j["added_tokens"] =
      json::array({{{"id", 9000}, {"content", "<a>"}, {"special", true}},
                   {{"id", 9001}, {"content", "<b>"}, {"special", false}},
                   {{"id", 7}, {"content", "!"}, {"special", true}}});
  auto tok = Tokenizer::fromHfJsonString(j.dump());
  EXPECT_EQ(tok->tokenToId("<a>"), 256);
  EXPECT_EQ(tok->tokenToId("<b>"), 257);
  EXPECT_EQ(tok->tokenToId("!"), 0); // already in the vocabulary
  EXPECT_EQ(tok->vocabSize(), 258u);
  EXPECT_TRUE(tok->isSpecial(256));
  EXPECT_FALSE(tok->isSpecial(257));
  EXPECT_EQ(tok->encode("x<a>y<b>!"),
            (std::vector<int32_t>{87, 256, 88, 257, 0}));
  EXPECT_EQ(tok->decode(tok->encode("x<a>y<b>!"), true), "xy<b>");
}

TEST(Tokenizer, SingleWordAddedTokens) {
  // HF's test_single_word_is_correct, without the lowercase normalizer.
  json j = byteLevelJson();
  j["added_tokens"] = json::array({{{"id", 256},
                                    {"content", "<mask>"},
                                    {"single_word", true},
                                    {"special", false}}});
  auto tok = Tokenizer::fromHfJsonString(j.dump());
  std::vector<int32_t> ids =
      tok->encode("<mask> My name <mask> A<mask> <mask>ony <mask>");
  std::vector<size_t> at;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == 256)
      at.push_back(i);
  ASSERT_EQ(at.size(), 3u);
  EXPECT_EQ(at[0], 0u);
  EXPECT_EQ(at[2], ids.size() - 1);
  EXPECT_EQ(tok->decode(ids), "<mask> My name <mask> A<mask> <mask>ony <mask>");
  // A combining mark is a word character, "-" is not.
  ids = tok->encode("<mask>, <mask>- \xCC\xB0<mask>");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 256), 2);
}

TEST(Tokenizer, LstripRstripUnicodeSpace) {
  // HF's test_lstrip_unicode_space: \s is Unicode White_Space.
  json j = byteLevelJson();
  j["added_tokens"] = json::array({{{"id", 256},
                                    {"content", "<mask>"},
                                    {"single_word", true},
                                    {"lstrip", true},
                                    {"rstrip", true},
                                    {"special", false}}});
  auto tok = Tokenizer::fromHfJsonString(j.dump());
  std::vector<int32_t> ids =
      tok->encode("Hi <mask> there\t<mask>\t<mask>\xE2\x80\x80");
  EXPECT_EQ(tok->decode(ids), "Hi<mask>there<mask><mask>");
}

TEST(Tokenizer, MergesAndIgnoreMerges) {
  json j = byteLevelJson();
  auto &vocab = j["model"]["vocab"];
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  vocab["bc"] = 258;
  j["model"]["merges"] = json::array({"b c", json::array({"a", "b"}), "ab c"});
  auto tok = Tokenizer::fromHfJsonString(j.dump());
  // "b c" has the lowest rank: a + bc, and (a, bc) is no merge.
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{64, 258}));
  j["model"]["ignore_merges"] = true;
  tok = Tokenizer::fromHfJsonString(j.dump());
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{257}));
  EXPECT_EQ(tok->encode("abcab"), (std::vector<int32_t>{64, 258, 256}));
}

TEST(Tokenizer, PostProcessors) {
  json j = byteLevelJson();
  j["model"]["vocab"]["<s>"] = 256;
  j["model"]["vocab"]["</s>"] = 257;
  j["post_processor"] = {{"type", "RobertaProcessing"},
                         {"sep", {"</s>", 257}},
                         {"cls", {"<s>", 256}}};
  auto tok = Tokenizer::fromHfJsonString(j.dump());
  EXPECT_EQ(tok->encode("a", true), (std::vector<int32_t>{256, 64, 257}));
  EXPECT_EQ(tok->bosId(), 256);
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
      {"special_tokens",
       {{"<s>", {{"id", "<s>"}, {"ids", {256}}, {"tokens", {"<s>"}}}},
        {"</s>", {{"id", "</s>"}, {"ids", {257}}, {"tokens", {"</s>"}}}}}}};
  tok = Tokenizer::fromHfJsonString(j.dump());
  EXPECT_EQ(tok->encode("a", true), (std::vector<int32_t>{256, 64, 257}));
  EXPECT_EQ(tok->encode("a", false), (std::vector<int32_t>{64}));
}

TEST(Tokenizer, AddPrefixSpace) {
  json j = byteLevelJson();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  auto tok = Tokenizer::fromHfJsonString(j.dump());
  // Ġ is id 220 in GPT-2 byte order.
  EXPECT_EQ(tok->encode("a"), (std::vector<int32_t>{220, 64}));
  EXPECT_EQ(tok->encode(" a"), (std::vector<int32_t>{220, 64}));
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(TokenizerErrors, NameTheField) {
  auto expectError = [](const json &j, const std::string &needle) {
    std::string msg = errorOf(j);
    EXPECT_NE(msg.find(needle), std::string::npos)
        << "message: " << msg << "\nexpected to contain: " << needle;
    EXPECT_EQ(msg.rfind("tok.json: ", 0), 0u) << msg;
  };
  json j = byteLevelJson();
  j.erase("model");
  expectError(j, "model: missing");

  j = byteLevelJson();
  j["model"]["type"] = "WordPiece";
  expectError(j, "model.type: unsupported model type 'WordPiece'");

  j = byteLevelJson();
  j["model"]["merges"] = json::array({"a b", "x zzz"});
  expectError(j, "model.merges[0]: merged token 'ab' is not in model.vocab");
  j["model"]["vocab"]["ab"] = 256;
  expectError(j, "model.merges[1]: token 'zzz' is not in model.vocab");

  j = byteLevelJson();
  j["model"]["merges"] = json::array({"a b c"});
  expectError(j, "model.merges[0]: expected");

  j = byteLevelJson();
  j["model"]["vocab"]["zz"] = -3;
  expectError(j, "model.vocab[\"zz\"]");

  j = byteLevelJson();
  j["model"]["byte_fallback"] = true;
  expectError(j, "model.byte_fallback");

  j = byteLevelJson();
  j["normalizer"] = {{"type", "NFC"}};
  expectError(j, "normalizer: unsupported normalizer 'NFC'");

  j = byteLevelJson();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expectError(j, "pre_tokenizer.type: unsupported pre-tokenizer 'Whitespace'");

  j = byteLevelJson();
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", "\\d+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}}}}};
  expectError(j, "pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported");

  j = byteLevelJson();
  j["pre_tokenizer"].erase("add_prefix_space");
  expectError(j, "pre_tokenizer.add_prefix_space: missing");

  j = byteLevelJson();
  j["added_tokens"] = json::array({{{"id", 300}}});
  expectError(j, "added_tokens[0].content: missing");

  j = byteLevelJson();
  j["decoder"] = {{"type", "WordPiece"}};
  expectError(j, "decoder.type: unsupported decoder 'WordPiece'");

  j = byteLevelJson();
  j["version"] = "2.0";
  expectError(j, "version: unknown tokenizer version");

  EXPECT_NE(std::string([] {
              try {
                Tokenizer::fromHfJsonString("{not json", "tok.json");
              } catch (const FormatError &e) {
                return std::string(e.what());
              }
              return std::string();
            }())
                .find("tok.json: invalid JSON"),
            std::string::npos);
  EXPECT_THROW(Tokenizer::fromHfJson(kDataDir + "/no-such-dir/tokenizer.json"),
               FormatError);
}

TEST(TokenizerPerformance, OneMegabyte) {
  std::string corpus = slurp(kDataDir + "/corpus.txt");
  std::string text;
  while (text.size() < (1u << 20))
    text += corpus;
  for (const char *name : {"llama3-style", "gpt2-real"}) {
    auto tok = Tokenizer::fromHfJson(kDataDir + "/" + name);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<int32_t> ids = tok->encode(text);
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    std::printf("%s: %zu bytes -> %zu tokens in %.3f s\n", name, text.size(),
                ids.size(), s);
    EXPECT_EQ(tok->decode(ids), text);
#ifdef NDEBUG
    EXPECT_LT(s, 1.0);
#endif
  }
}

//===- DatasetTest.cpp - Text windows, chat masks, splits, batching -------===//

#include "TrainerTestUtil.h"

#include "model/MakeModel.h"
#include "model/Model.h"
#include "trainer/Dataset.h"

#include <map>
#include <set>

using namespace bitloom;
using namespace bitloom::trainer;
using bitloom::test::dataPath;
using bitloom::test::readJson;

namespace {

std::string errorOf(const std::function<void()> &f) {
  try {
    f();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

const Tokenizer &llama3Tokenizer() {
  static std::unique_ptr<Tokenizer> t =
      Tokenizer::fromHfJson(dataPath("tokenizer/llama3-style"));
  return *t;
}

// A tokenizer with every family's special tokens, bos/eos as the template
// fixture says; cached per (bos, eos).
const Tokenizer &familyTokenizer(const std::string &bos,
                                 const std::string &eos) {
  static std::map<
      std::pair<std::string, std::string>,
      std::pair<std::unique_ptr<test::TempDir>, std::unique_ptr<Tokenizer>>>
      cache;
  auto key = std::make_pair(bos, eos);
  auto it = cache.find(key);
  if (it == cache.end()) {
    auto dir = std::make_unique<test::TempDir>();
    std::string b = bos.empty() ? "<|begin_of_text|>" : bos;
    std::string e = eos.empty() ? "<|eot_id|>" : eos;
    auto tok = test::chatTokenizer(dir->path(), b, e);
    it = cache.emplace(key, std::make_pair(std::move(dir), std::move(tok)))
             .first;
  }
  return *it->second.second;
}

std::string jsonlOf(const std::vector<std::vector<ChatMessage>> &convs) {
  std::string s;
  for (const auto &c : convs) {
    nlohmann::json m = nlohmann::json::array();
    for (const auto &x : c)
      m.push_back({{"role", x.role}, {"content", x.content}});
    s += nlohmann::json({{"messages", m}}).dump() + "\n";
  }
  return s;
}

std::string longText(int words) {
  std::string s;
  for (int i = 0; i < words; ++i)
    s += (i ? " " : "") + std::string(i % 3 ? "river" : "stone") +
         std::to_string(i % 7);
  return s;
}

} // namespace

TEST(Dataset, TextWindowsCoverEveryTokenOnceAndPadTheTail) {
  const Tokenizer &tok = llama3Tokenizer();
  std::string text = test::readText(dataPath("tokenizer/corpus.txt"));
  std::vector<int32_t> all = tok.encode(text, true);
  ASSERT_EQ(all.front(), *tok.bosId()); // BOS once, from the post-processor
  DatasetOptions o;
  o.seqLen = 37;
  Dataset ds = Dataset::fromText(text, "corpus.txt", tok, o);
  const auto &S = ds.samples();
  // Windows of 37 sharing one token: ceil((n - 1) / 36) of them.
  EXPECT_EQ(int64_t(S.size()), int64_t((all.size() - 1 + 35) / 36));
  std::vector<int32_t> rebuilt;
  int64_t targets = 0;
  for (size_t w = 0; w < S.size(); ++w) {
    const Sample &s = S[w];
    ASSERT_EQ(s.ids.size(), 37u);
    EXPECT_EQ(s.mask[0], 0);
    for (int t = 1; t < s.realTokens; ++t)
      EXPECT_EQ(s.mask[t], 1);
    for (int t = s.realTokens; t < 37; ++t) {
      EXPECT_EQ(s.ids[t], ds.padId());
      EXPECT_EQ(s.mask[t], 0);
    }
    if (w > 0) {
      EXPECT_EQ(s.ids[0], S[w - 1].ids[36]); // shared token
    }
    rebuilt.insert(rebuilt.end(), s.ids.begin() + (w ? 1 : 0),
                   s.ids.begin() + s.realTokens);
    targets += s.targets();
  }
  EXPECT_EQ(rebuilt, all);
  EXPECT_EQ(targets, int64_t(all.size()) - 1); // every token but BOS, once
  EXPECT_EQ(ds.stats().targetTokens, targets);
  EXPECT_LT(S.back().realTokens, 37); // the tail is kept, padded
  EXPECT_EQ(ds.stats().droppedWindows, 0);
  EXPECT_EQ(ds.padId(), *tok.eosId());
}

TEST(Dataset, ChatMasksCoverExactlyTheAssistantSpansForEveryTemplate) {
  const nlohmann::json templates =
      readJson(dataPath("trainer/chat_templates.json"));
  const nlohmann::json fixtures =
      readJson(dataPath("trainer/chat_fixtures.json"));
  auto convs = test::fixtureConversations();
  int checked = 0;
  std::set<std::string> families;
  for (const auto &f : fixtures) {
    if (f.contains("error"))
      continue;
    std::string name = f["template"];
    const auto &t = test::findTemplate(templates, name);
    SCOPED_TRACE(name + " conversation " +
                 std::to_string(f["conversation"].get<int>()));
    const Tokenizer &tok = familyTokenizer(t["bos_token"], t["eos_token"]);
    ChatTemplate ct = test::templateFixture(name);
    std::vector<ChatPiece> pieces =
        ct.render(convs.at(f["conversation"].get<size_t>()));
    TokenizedChat tc = tokenizeChat(pieces, tok, ChatBos::Template);
    // The ids are the tokenizer's on the whole rendered string (specials
    // matched as specials), and decode back to the Jinja2 rendering.
    const std::string text = f["text"];
    EXPECT_EQ(tc.ids, tok.encode(text, false));
    EXPECT_EQ(tok.decode(tc.ids), text);
    // Runs of masked tokens decode to the fixture's loss spans.
    std::vector<std::string> runs;
    for (size_t i = 0; i < tc.ids.size(); ++i) {
      if (!tc.mask[i])
        continue;
      size_t j = i;
      while (j < tc.ids.size() && tc.mask[j])
        ++j;
      runs.push_back(tok.decode(
          std::vector<int32_t>(tc.ids.begin() + i, tc.ids.begin() + j)));
      i = j;
    }
    const auto &targets = f["targets"];
    ASSERT_EQ(runs.size(), targets.size());
    for (size_t k = 0; k < runs.size(); ++k) {
      std::string want = targets[k]["text"];
      if (tc.inexact == 0) {
        EXPECT_EQ(runs[k], want);
      } else {
        // A token merged across the span's start trains: the run is the
        // span plus that token's leading whitespace.
        ASSERT_GE(runs[k].size(), want.size());
        EXPECT_EQ(runs[k].substr(runs[k].size() - want.size()), want);
        EXPECT_EQ(pythonStrip(runs[k].substr(0, runs[k].size() - want.size())),
                  "");
      }
    }
    // Llama-3 and Gemma headers end in a newline the pre-tokenizer never
    // merges with the content; elsewhere a header's trailing space or
    // newline can merge with the content's first token (BitNet's
    // "Assistant: " + "Hi" is the token " Hi"), which then trains.
    if (t["family"] == "llama3" || t["family"] == "gemma") {
      EXPECT_EQ(tc.inexact, 0);
    }
    families.insert(t["family"].get<std::string>());
    ++checked;
  }
  EXPECT_EQ(families.size(), 6u);
  EXPECT_GE(checked, 100);
}

TEST(Dataset, ChatBosPolicy) {
  const Tokenizer &tok = familyTokenizer("<|begin_of_text|>", "<|eot_id|>");
  auto conv = test::fixtureConversations().at(1);
  // BitNet's template has no bos_token; the tokenizer's post-processor adds
  // BOS, so AddIfMissing prepends it (as llama.cpp does) and Template keeps
  // the rendering as transformers tokenizes it.
  auto pieces = test::templateFixture("bitnet-2b4t").render(conv);
  TokenizedChat keep = tokenizeChat(pieces, tok, ChatBos::Template);
  TokenizedChat add = tokenizeChat(pieces, tok, ChatBos::AddIfMissing);
  EXPECT_NE(keep.ids.front(), *tok.bosId());
  EXPECT_TRUE(add.bosAdded);
  ASSERT_EQ(add.ids.size(), keep.ids.size() + 1);
  EXPECT_EQ(add.ids.front(), *tok.bosId());
  EXPECT_EQ(add.mask.front(), 0);
  EXPECT_TRUE(
      std::equal(keep.mask.begin(), keep.mask.end(), add.mask.begin() + 1));
  // Llama-3's template writes BOS itself: never doubled.
  auto l3 = tokenizeChat(test::templateFixture("llama3").render(conv), tok,
                         ChatBos::AddIfMissing);
  EXPECT_FALSE(l3.bosAdded);
  EXPECT_EQ(l3.ids[0], *tok.bosId());
  EXPECT_NE(l3.ids[1], *tok.bosId());
}

TEST(Dataset, LongChatSamplesAreTruncatedOrSplitAndCounted) {
  test::TempDir dir;
  const Tokenizer &tok = familyTokenizer("<|begin_of_text|>", "<|eot_id|>");
  ChatTemplate ct = test::templateFixture("llama3");
  std::vector<std::vector<ChatMessage>> convs = {
      {{"user", "Short?"}, {"assistant", "Short."}},
      {{"user", "Tell me a long story."}, {"assistant", longText(60)}},
      {{"user", longText(80)}, {"assistant", "ok"}},
      {{"user", "again"},
       {"assistant", longText(30)},
       {"user", "more"},
       {"assistant", longText(40)}},
      {{"system", "Nothing to learn here."}, {"user", "hello?"}},
  };
  std::string jsonl = jsonlOf(convs);
  DatasetOptions o;
  o.seqLen = 48;

  // Reference tokenizations of each conversation.
  std::vector<TokenizedChat> full;
  for (const auto &c : convs)
    full.push_back(tokenizeChat(ct.render(c), tok, ChatBos::AddIfMissing));
  std::vector<int> longOnes;
  for (size_t i = 0; i < full.size(); ++i)
    if (full[i].ids.size() > 48)
      longOnes.push_back(int(i));
  ASSERT_EQ(longOnes, (std::vector<int>{1, 2, 3}));

  o.longSamples = LongSamplePolicy::Truncate;
  Dataset tr = Dataset::fromJsonl(jsonl, "chats.jsonl", tok, ct, o);
  EXPECT_EQ(tr.stats().truncated, 3);
  EXPECT_EQ(
      tr.stats().truncatedTokens,
      int64_t(full[1].ids.size() + full[2].ids.size() + full[3].ids.size()) -
          3 * 48);
  // Conversation 3 (line 3) keeps no assistant token within 48: skipped and
  // counted, as is the conversation without an assistant turn.
  EXPECT_EQ(tr.stats().droppedWindows, 1);
  EXPECT_EQ(tr.stats().noTargetSamples, 1);
  EXPECT_EQ(tr.stats().samples, 3);
  EXPECT_NE(tr.stats().summary().find("3 truncated"), std::string::npos);
  EXPECT_NE(tr.stats().summary().find("without an assistant turn"),
            std::string::npos);

  o.longSamples = LongSamplePolicy::Split;
  Dataset sp = Dataset::fromJsonl(jsonl, "chats.jsonl", tok, ct, o);
  EXPECT_EQ(sp.stats().split, 3);
  EXPECT_EQ(sp.stats().truncated, 0);
  // Windows of a split conversation reassemble into its tokens and mask.
  std::map<int64_t, std::vector<const Sample *>> bySource;
  for (const Sample &s : sp.samples())
    bySource[s.source].push_back(&s);
  int64_t windows = 0, dropped = 0;
  for (int c : longOnes) {
    const TokenizedChat &f = full[size_t(c)];
    size_t n = f.ids.size();
    size_t expectWindows = (n - 1 + 46) / 47;
    const auto &ws = bySource[c + 1]; // line numbers are 1-based
    std::vector<uint8_t> mask(n, 0);
    for (const Sample *s : ws) {
      size_t start = size_t(s->window) * 47;
      for (int t = 0; t < s->realTokens; ++t) {
        EXPECT_EQ(s->ids[t], f.ids[start + t]);
        if (t > 0)
          mask[start + t] = s->mask[t];
      }
    }
    windows += int64_t(ws.size());
    dropped += int64_t(expectWindows - ws.size());
    for (size_t t = 1; t < n; ++t) {
      if (f.mask[t]) { // a target is kept unless its window was skipped
        EXPECT_TRUE(mask[t] ||
                    std::none_of(ws.begin(), ws.end(), [&](const Sample *s) {
                      return size_t(s->window) == (t - 1) / 47;
                    }));
      }
    }
    int64_t targets = 0;
    for (const Sample *s : ws)
      targets += s->targets();
    EXPECT_EQ(targets, std::count(f.mask.begin() + 1, f.mask.end(), 1));
  }
  EXPECT_EQ(sp.stats().splitWindows, windows);
  EXPECT_EQ(sp.stats().droppedWindows, dropped);
  EXPECT_GT(dropped, 0); // conversation 3's long user turn
}

TEST(Dataset, BadLinesNameFileAndLine) {
  const Tokenizer &tok = familyTokenizer("<bos>", "<eos>");
  ChatTemplate gemma = test::templateFixture("gemma");
  DatasetOptions o;
  o.seqLen = 32;
  auto err = [&](const std::string &jsonl) {
    return errorOf(
        [&] { Dataset::fromJsonl(jsonl, "d.jsonl", tok, gemma, o); });
  };
  std::string ok = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                   "{\"role\": \"assistant\", \"content\": \"yo\"}]}\n";
  EXPECT_EQ(err(ok + "\n" + "{\"messages\": [}\n").substr(0, 30),
            "d.jsonl: line 3: invalid JSON:");
  EXPECT_EQ(
      err(ok + "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}"),
      "d.jsonl: line 2: messages[0].role: \"tool\" (supported: system, "
      "user, assistant)");
  EXPECT_EQ(err("{\"text\": \"x\"}\n"),
            "d.jsonl: line 1: expected {\"messages\": [{\"role\": ..., "
            "\"content\": ...}, ...]}");
  EXPECT_EQ(err(ok + "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}"),
            "d.jsonl: line 2: messages[0]: expected {\"role\": string, "
            "\"content\": string}");
  EXPECT_EQ(err("{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, "
                "{\"role\": \"user\", \"content\": \"u\"}]}"),
            "d.jsonl: line 1: the chat template (gemma) raises: System role "
            "not supported");
  EXPECT_EQ(err("\n\n"), "d.jsonl: no training samples (chat dataset (chat "
                         "template gemma): 0 conversations -> 0 samples; 0 "
                         "tokens, 0 loss targets, 0 padding)");
  EXPECT_EQ(errorOf([&] {
              DatasetOptions bad;
              bad.seqLen = 1;
              Dataset::fromText("abc", "t.txt", tok, bad);
            }),
            "t.txt: seq_len: must be at least 2 (one token predicts the next)");
}

TEST(Dataset, LoadPicksTheFormatFromTheExtension) {
  test::TempDir dir;
  const Tokenizer &tok = familyTokenizer("<|begin_of_text|>", "<|eot_id|>");
  ChatTemplate ct = test::templateFixture("llama3");
  test::writeText(dir.file("chats.jsonl"),
                  test::readText(dataPath("trainer/chat_conversations.jsonl")));
  test::writeText(dir.file("book.txt"), longText(100));
  DatasetOptions o;
  o.seqLen = 64;
  Dataset chat = Dataset::load(dir.file("chats.jsonl"), tok, &ct, o);
  EXPECT_EQ(chat.stats().format, "chat");
  EXPECT_EQ(chat.stats().sources, 9);
  Dataset text = Dataset::load(dir.file("book.txt"), tok, nullptr, o);
  EXPECT_EQ(text.stats().format, "text");
  EXPECT_NE(errorOf([&] {
              Dataset::load(dir.file("chats.jsonl"), tok, nullptr, o);
            }).find("needs the model's chat template"),
            std::string::npos);
  EXPECT_EQ(
      errorOf([&] { Dataset::load(dir.file("none.txt"), tok, nullptr, o); }),
      dir.file("none.txt") + ": cannot open");
}

TEST(Dataset, ValidationSplitIsSeededAndKeepsSourcesTogether) {
  const Tokenizer &tok = familyTokenizer("<|begin_of_text|>", "<|eot_id|>");
  ChatTemplate ct = test::templateFixture("llama3");
  std::vector<std::vector<ChatMessage>> convs;
  for (int i = 0; i < 40; ++i)
    convs.push_back({{"user", "question " + std::to_string(i)},
                     {"assistant", i % 5 ? "short" : longText(40)}});
  DatasetOptions o;
  o.seqLen = 40;
  Dataset ds = Dataset::fromJsonl(jsonlOf(convs), "c.jsonl", tok, ct, o);
  ASSERT_GT(ds.stats().split, 0);
  DatasetSplit a = splitValidation(ds, 0.25, 7);
  DatasetSplit b = splitValidation(ds, 0.25, 7);
  DatasetSplit c = splitValidation(ds, 0.25, 8);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.validation, b.validation);
  EXPECT_NE(a.validation, c.validation);
  std::set<int64_t> valSources, trainSources;
  for (int64_t i : a.validation)
    valSources.insert(ds.samples()[i].source);
  for (int64_t i : a.train)
    trainSources.insert(ds.samples()[i].source);
  EXPECT_EQ(valSources.size(), 10u); // round(0.25 * 40) conversations
  for (int64_t s : valSources)
    EXPECT_EQ(trainSources.count(s), 0u);
  EXPECT_EQ(a.train.size() + a.validation.size(), ds.samples().size());
  EXPECT_TRUE(std::is_sorted(a.train.begin(), a.train.end()));
  EXPECT_EQ(splitValidation(ds, 0.0, 7).validation.size(), 0u);
  EXPECT_EQ(splitValidation(ds, 0.001, 7).validation.size() > 0, true);
}

TEST(Dataset, SplitMix64MatchesTheReferenceSequence) {
  // Vigna's splitmix64.c with seed 1234567.
  SplitMix64 r(1234567);
  EXPECT_EQ(r.next(), 6457827717110365317ull);
  EXPECT_EQ(r.next(), 3203168211198807973ull);
  EXPECT_EQ(r.next(), 9817491932198370423ull);
  EXPECT_EQ(r.next(), 4593380528125082431ull);
  EXPECT_EQ(r.next(), 16408922859458223821ull);
}

namespace {
Dataset smallDataset(int n) {
  const Tokenizer &tok = llama3Tokenizer();
  DatasetOptions o;
  o.seqLen = 8;
  std::string text;
  for (int i = 0; i < n * 7; ++i)
    text += " w" + std::to_string(i);
  return Dataset::fromText(text, "t.txt", tok, o);
}
std::vector<int64_t> iota(size_t n) {
  std::vector<int64_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = int64_t(i);
  return v;
}
} // namespace

TEST(Batcher, EpochsAreSeededShufflesCoveringEverySampleOnce) {
  Dataset ds = smallDataset(30);
  const size_t n = ds.samples().size();
  Batcher b(ds, iota(n), 4, 42);
  EXPECT_EQ(b.batchesPerEpoch(), int64_t((n + 3) / 4));
  std::vector<std::vector<int64_t>> epochs(3);
  for (int e = 0; e < 3; ++e)
    for (int64_t k = 0; k < b.batchesPerEpoch(); ++k) {
      Batch batch = b.next();
      EXPECT_EQ(batch.epoch, uint64_t(e));
      ASSERT_EQ(batch.ids.size(), size_t(4 * 8));
      for (int64_t r = 0; r < 4; ++r) {
        int64_t si = batch.sampleIndex[r];
        if (si < 0) { // filler rows only in the last batch, all masked out
          EXPECT_EQ(k, b.batchesPerEpoch() - 1);
          for (int t = 0; t < 8; ++t)
            EXPECT_EQ(batch.lossMask[r * 8 + t], 0.0f);
          continue;
        }
        epochs[e].push_back(si);
        for (int t = 0; t < 8; ++t)
          EXPECT_EQ(batch.ids[r * 8 + t], ds.samples()[si].ids[t]);
      }
    }
  for (auto &e : epochs) {
    std::vector<int64_t> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, iota(n));
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  EXPECT_NE(epochs[0], iota(n));
  // Same seed, same order; another seed, another.
  Batcher again(ds, iota(n), 4, 42), other(ds, iota(n), 4, 43);
  EXPECT_EQ(again.next().sampleIndex,
            Batcher(ds, iota(n), 4, 42).next().sampleIndex);
  EXPECT_NE(other.next().sampleIndex,
            Batcher(ds, iota(n), 4, 42).next().sampleIndex);
}

TEST(Batcher, ResumeContinuesWithExactlyTheSameBatches) {
  Dataset ds = smallDataset(25);
  const size_t n = ds.samples().size();
  DatasetSplit split = splitValidation(ds, 0.2, 3);
  for (int stopAt : {0, 1, 5, 7, 13}) {
    SCOPED_TRACE(stopAt);
    Batcher run(ds, split.train, 3, 99);
    for (int i = 0; i < stopAt; ++i)
      run.next();
    // What a checkpoint stores, through its JSON form.
    std::string saved = run.position().toJson().dump();
    Batcher resumed(ds, split.train, 3, 12345); // seed is irrelevant now
    resumed.restore(
        DataPosition::fromJson(nlohmann::json::parse(saved), "ckpt"), "ckpt");
    EXPECT_EQ(resumed.position(), run.position());
    for (int i = 0; i < 20; ++i) { // across several epoch boundaries
      Batch x = run.next(), y = resumed.next();
      EXPECT_EQ(x.sampleIndex, y.sampleIndex);
      EXPECT_EQ(x.ids, y.ids);
      EXPECT_EQ(x.lossMask, y.lossMask);
      EXPECT_EQ(x.epoch, y.epoch);
    }
  }
  (void)n;
  // A position into another split, dataset or batch size is refused.
  Batcher a(ds, split.train, 3, 1);
  Batcher otherSplit(ds, split.validation, 3, 1);
  EXPECT_NE(errorOf([&] {
              otherSplit.restore(a.position(), "ckpt");
            }).find("ckpt: data_position: saved for a different dataset"),
            std::string::npos);
  Batcher otherSize(ds, split.train, 4, 1);
  EXPECT_EQ(errorOf([&] { otherSize.restore(a.position(), "ckpt"); }),
            "ckpt: data_position: saved with batch size 3, now 4");
  Dataset bigger = smallDataset(26);
  Batcher otherData(bigger, split.train, 3, 1);
  EXPECT_NE(errorOf([&] { otherData.restore(a.position(), "ckpt"); }), "");
  EXPECT_EQ(errorOf([&] {
              DataPosition::fromJson({{"epoch", 1}}, "ckpt/manifest.json");
            }),
            "ckpt/manifest.json: data_position.index: missing");
}

TEST(Dataset, EndToEndWithAMakeModelCheckpoint) {
  // make-model's tiny preset (HF and GGUF) carries a Llama-3 chat template
  // and a tokenizer with its special tokens: both paths must give the same
  // samples.
  test::TempDir dir;
  MakeModelOptions hf;
  makeModel(hf, dir.file("hf"));
  MakeModelOptions gg;
  gg.format = CheckpointFormat::Gguf;
  makeModel(gg, dir.file("m.gguf"));
  auto hfModel = Model::open(dir.file("hf"));
  auto ggModel = Model::open(dir.file("m.gguf"));
  ChatTemplate a = ChatTemplate::fromModel(*hfModel);
  ChatTemplate b = ChatTemplate::fromModel(*ggModel);
  EXPECT_EQ(a.variant(), "llama3");
  EXPECT_EQ(b.variant(), "llama3");
  EXPECT_EQ(a.bosToken(), b.bosToken());
  auto hfTok = Tokenizer::fromHfJson(dir.file("hf"));
  auto ggTok = Tokenizer::fromGguf(*ggModel->gguf());
  DatasetOptions o;
  o.seqLen = 64;
  std::string jsonl =
      test::readText(dataPath("trainer/chat_conversations.jsonl"));
  Dataset x = Dataset::fromJsonl(jsonl, "c.jsonl", *hfTok, a, o);
  Dataset y = Dataset::fromJsonl(jsonl, "c.jsonl", *ggTok, b, o);
  EXPECT_EQ(x.fingerprint(), y.fingerprint());
  EXPECT_GT(x.stats().targetTokens, 0);
  // Every sample starts with the template's BOS, never two.
  for (const Sample &s : x.samples())
    if (s.window == 0) {
      EXPECT_EQ(s.ids[0], *hfTok->bosId());
      EXPECT_NE(s.ids[1], *hfTok->bosId());
    }
}

//===- ChatTemplateTest.cpp - Chat template recognition and rendering -----===//
//
// Every supported template (test/data/trainer/chat_templates.json, the real
// templates of the models named there) is rendered over every conversation
// and compared byte for byte with Python Jinja2's rendering under
// transformers' settings (chat_fixtures.json, made by
// runtime/trainer/tools/chat-template-reference, which also checks
// @huggingface/jinja). The loss spans are compared with the spans the
// fixture script derives from the templates themselves.
//
//===----------------------------------------------------------------------===//

#include "TrainerTestUtil.h"

#include "formats/Gguf.h"
#include "trainer/ChatTemplate.h"

using namespace bitloom;
using namespace bitloom::trainer;
using bitloom::test::dataPath;
using bitloom::test::readJson;

namespace {

const nlohmann::json &templates() {
  static const nlohmann::json t =
      readJson(dataPath("trainer/chat_templates.json"));
  return t;
}

std::string errorOf(const std::function<void()> &f) {
  try {
    f();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST(ChatTemplate, RecognizesEveryFixtureTemplateAsItsVariant) {
  int supported = 0;
  for (const auto &t : templates()) {
    SCOPED_TRACE(t["name"].get<std::string>());
    auto make = [&] {
      return ChatTemplate::fromSource(t["chat_template"].get<std::string>(),
                                      t["bos_token"].get<std::string>(),
                                      t["eos_token"].get<std::string>(),
                                      "tokenizer_config.json", "chat_template");
    };
    if (t.contains("refuse")) {
      std::string err = errorOf([&] { make(); });
      EXPECT_NE(err.find("tokenizer_config.json: chat_template: "),
                std::string::npos)
          << err;
      EXPECT_NE(err.find(t["refuse"].get<std::string>()), std::string::npos)
          << err;
      continue;
    }
    ++supported;
    ChatTemplate ct = make();
    EXPECT_EQ(chatFamilyName(ct.family()), t["family"].get<std::string>());
    EXPECT_EQ(ct.variant(), t["variant"].get<std::string>());
  }
  EXPECT_GE(supported, 15);
}

TEST(ChatTemplate, UnknownTemplateNamesFileFieldAndFamilies) {
  std::string err = errorOf([] {
    ChatTemplate::fromSource("{{ messages }}", "", "", "tokenizer_config.json",
                             "chat_template");
  });
  EXPECT_EQ(err, "tokenizer_config.json: chat_template: unrecognized chat "
                 "template family (supported: llama3, bitnet, chatml, llama2, "
                 "gemma, phi3)");
}

TEST(ChatTemplate, RendersLikeJinja2ByteForByte) {
  const nlohmann::json fixtures =
      readJson(dataPath("trainer/chat_fixtures.json"));
  auto conversations = test::fixtureConversations();
  int checked = 0, errors = 0;
  for (const auto &f : fixtures) {
    std::string name = f["template"];
    int c = f["conversation"];
    SCOPED_TRACE(name + " conversation " + std::to_string(c));
    ChatTemplate ct = test::templateFixture(name);
    const auto &msgs = conversations.at(c);
    if (f.contains("error")) {
      ++errors;
      std::string err = errorOf([&] { ct.render(msgs); });
      EXPECT_EQ(err, f["error"].get<std::string>());
      continue;
    }
    ++checked;
    EXPECT_EQ(ct.renderText(msgs, false), f["text"].get<std::string>());
    EXPECT_EQ(ct.renderText(msgs, true),
              f["text_generation"].get<std::string>());

    // Loss spans: one contiguous run of target pieces per assistant message,
    // at the fixture's byte offset.
    std::vector<ChatPiece> pieces = ct.render(msgs);
    std::vector<std::pair<int, std::pair<size_t, std::string>>> spans;
    size_t offset = 0;
    for (const ChatPiece &p : pieces) {
      if (p.target) {
        if (!spans.empty() && spans.back().first == p.message &&
            spans.back().second.first + spans.back().second.second.size() ==
                offset)
          spans.back().second.second += p.text;
        else
          spans.push_back({p.message, {offset, p.text}});
        EXPECT_EQ(msgs.at(p.message).role, "assistant");
      }
      offset += p.text.size();
    }
    const auto &targets = f["targets"];
    ASSERT_EQ(spans.size(), targets.size());
    for (size_t i = 0; i < spans.size(); ++i) {
      EXPECT_EQ(spans[i].first, targets[i]["message"].get<int>());
      EXPECT_EQ(spans[i].second.first, targets[i]["start"].get<size_t>());
      EXPECT_EQ(spans[i].second.second, targets[i]["text"].get<std::string>());
    }
  }
  EXPECT_GE(checked, 100);
  EXPECT_GE(errors, 10);
}

TEST(ChatTemplate, VariantNamesSelectCanonicalTemplates) {
  auto conv = test::fixtureConversations().at(0);
  ChatTemplate byName = ChatTemplate::fromSource(
      "llama3", "<|begin_of_text|>", "<|eot_id|>", "x", "chat_template");
  EXPECT_EQ(byName.renderText(conv),
            test::templateFixture("llama3").renderText(conv));
  ChatTemplate qwen = ChatTemplate::fromSource("chatml-default-system", "",
                                               "<|im_end|>", "x", "y");
  EXPECT_EQ(qwen.renderText(test::fixtureConversations().at(1)),
            test::templateFixture("qwen2").renderText(
                test::fixtureConversations().at(1)));
  for (const std::string &v : ChatTemplate::supportedVariants())
    EXPECT_EQ(ChatTemplate::fromSource(v, "<s>", "</s>", "x", "y").variant(),
              v);
}

TEST(ChatTemplate, NormalizationIgnoresLayoutNotMeaning) {
  // Whitespace, trim markers, quotes, escapes, literal concatenation and
  // .strip() do not change the normal form...
  EXPECT_EQ(ChatTemplate::normalize("{{ 'a' + '\\n' }}"),
            ChatTemplate::normalize("{{- \"a\n\" -}}"));
  EXPECT_EQ(ChatTemplate::normalize("{{ x.strip() }}"),
            ChatTemplate::normalize("{{ x | trim }}"));
  EXPECT_EQ(ChatTemplate::normalize("{{ message.content }}"),
            ChatTemplate::normalize("{{ message['content'] }}"));
  // ...trim_blocks / lstrip_blocks drop layout around statements...
  EXPECT_EQ(ChatTemplate::normalize("{% if x %}\n  {% endif %}\n"),
            ChatTemplate::normalize("{% if x %}{% endif %}"));
  // ...but text that Jinja would output stays, and so does precedence.
  EXPECT_NE(ChatTemplate::normalize("{% if x %} {% endif %}"),
            ChatTemplate::normalize("{% if x %}{% endif %}"));
  EXPECT_NE(ChatTemplate::normalize("{{ 'a' + 'b' | trim }}"),
            ChatTemplate::normalize("{{ 'ab' | trim }}"));
  EXPECT_NE(ChatTemplate::normalize("{{ x }}\n"),
            ChatTemplate::normalize("{{ x }}\n\n"));
}

TEST(ChatTemplate, BitNetGgufPlaceholderGetsAHint) {
  // What Microsoft's converter writes into ggml-model-i2_s.gguf.
  std::string err = errorOf([] {
    ChatTemplate::fromSource(
        "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% "
        "endif %}{% if message['role'] == 'user' %}{{ 'Human: ' + "
        "message['content'] + '\\n\\nBITNETAssistant: ' + eos_token }}{% "
        "elif message['role'] == 'assistant' %}{{ message['content'] + "
        "eos_token }}{% endif %}{% endfor %}",
        "<|begin_of_text|>", "<|end_of_text|>", "m.gguf",
        "tokenizer.chat_template");
  });
  EXPECT_NE(err.find("m.gguf: tokenizer.chat_template: the placeholder "
                     "template"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("use the \"bitnet\" template"), std::string::npos);
}

TEST(ChatTemplate, LookalikeWithExtraOutputIsRefused) {
  // The 2B4T template with a literal system preamble, as a fine-tune wrote
  // it: same family, different bytes, so it must not render as "bitnet".
  const auto &t = test::findTemplate(templates(), "bitnet-2b4t");
  std::string src =
      "System: A chat.<|eot_id|>" + t["chat_template"].get<std::string>();
  std::string err = errorOf([&] {
    ChatTemplate::fromSource(src, "", "", "tokenizer_config.json",
                             "chat_template");
  });
  EXPECT_NE(err.find("bitnet family, but not a variant"), std::string::npos)
      << err;
}

TEST(ChatTemplate, PythonStripMatchesStrIsspace) {
  EXPECT_EQ(pythonStrip(" \t\n\x0b\x0c\r\x1c\x1f a b \xc2\x85"), "a b");
  EXPECT_EQ(pythonStrip("\xc2\xa0\xe3\x80\x80x\xe2\x80\xaf"),
            "x"); // NBSP, U+3000, U+202F
  EXPECT_EQ(pythonStrip("\xef\xbb\xbfx"), "\xef\xbb\xbfx"); // U+FEFF is not
  EXPECT_EQ(pythonStrip("\xe2\x80\x8bx"), "\xe2\x80\x8bx"); // U+200B is not
  EXPECT_EQ(pythonStrip("   "), "");
  EXPECT_EQ(pythonStrip("\xe6\xbc\xa2"), "\xe6\xbc\xa2");
}

TEST(ChatTemplate, RejectsRolesOutsideSystemUserAssistant) {
  ChatTemplate ct = test::templateFixture("chatml-openhermes");
  std::string err = errorOf([&] { ct.render({{"tool", "x"}}); });
  EXPECT_NE(err.find("role \"tool\""), std::string::npos);
}

TEST(ChatTemplate, FromHfDirectoryReadsConfigAndJinjaFile) {
  test::TempDir dir;
  const auto &t = test::findTemplate(templates(), "llama3");
  nlohmann::json cfg = {
      {"bos_token", {{"content", "<|begin_of_text|>"}, {"lstrip", false}}},
      {"eos_token", "<|eot_id|>"},
      {"chat_template", t["chat_template"]}};
  test::writeText(dir.file("tokenizer_config.json"), cfg.dump());
  ChatTemplate a = ChatTemplate::fromHfDirectory(dir.path());
  EXPECT_EQ(a.variant(), "llama3");
  EXPECT_EQ(a.bosToken(), "<|begin_of_text|>");

  // A list of named templates: "default" is used.
  cfg["chat_template"] = nlohmann::json::array(
      {{{"name", "tool_use"}, {"template", "{{ nonsense }}"}},
       {{"name", "default"}, {"template", t["chat_template"]}}});
  test::writeText(dir.file("tokenizer_config.json"), cfg.dump());
  EXPECT_EQ(ChatTemplate::fromHfDirectory(dir.path()).variant(), "llama3");

  // chat_template.jinja beside a config without the key.
  cfg.erase("chat_template");
  test::writeText(dir.file("tokenizer_config.json"), cfg.dump());
  test::writeText(dir.file("chat_template.jinja"),
                  test::findTemplate(templates(), "gemma")["chat_template"]
                          .get<std::string>() +
                      "\n");
  EXPECT_EQ(ChatTemplate::fromHfDirectory(dir.path()).variant(), "gemma");

  std::filesystem::remove(dir.file("chat_template.jinja"));
  std::string err = errorOf([&] { ChatTemplate::fromHfDirectory(dir.path()); });
  EXPECT_NE(err.find("tokenizer_config.json: chat_template: missing"),
            std::string::npos)
      << err;
}

TEST(ChatTemplate, FromGgufUsesTokenTexts) {
  test::TempDir dir;
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("bitnet"));
  w.set("tokenizer.ggml.tokens",
        GgufValue::stringArray({"a", "<|begin_of_text|>", "<|eot_id|>"}));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(1));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(2));
  w.set("tokenizer.chat_template",
        GgufValue::string(
            test::findTemplate(templates(), "bitnet-2b4t")["chat_template"]
                .get<std::string>()));
  w.write(dir.file("m.gguf"));
  ChatTemplate ct = ChatTemplate::fromGguf(GgufFile::open(dir.file("m.gguf")));
  EXPECT_EQ(ct.family(), ChatFamily::BitNet);
  EXPECT_EQ(ct.bosToken(), "<|begin_of_text|>");
  EXPECT_EQ(ct.eosToken(), "<|eot_id|>");

  GgufWriter bad;
  bad.set("general.architecture", GgufValue::string("bitnet"));
  bad.set("tokenizer.chat_template",
          GgufValue::string("{% for m in messages %}Human: {{ m.content }}"
                            "{% endfor %}"));
  bad.write(dir.file("bad.gguf"));
  std::string err = errorOf(
      [&] { ChatTemplate::fromGguf(GgufFile::open(dir.file("bad.gguf"))); });
  EXPECT_NE(err.find("bad.gguf: tokenizer.chat_template: unrecognized chat "
                     "template family"),
            std::string::npos)
      << err;
}

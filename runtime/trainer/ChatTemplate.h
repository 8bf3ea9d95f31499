//===- ChatTemplate.h - Chat templates without a Jinja engine ---*- C++ -*-===//
//
// A model's chat template is a Jinja program (tokenizer_config.json
// "chat_template", a chat_template.jinja file, or GGUF
// tokenizer.chat_template). bitloom does not interpret Jinja: like llama.cpp's
// llm_chat_detect_template it recognizes the template's family by distinctive
// substrings, and then - unlike llama.cpp, because training needs the exact
// bytes - pins the variant by matching the whole template, after a lexical
// normalization (whitespace and trim markers inside tags, quote style,
// string-literal escapes, 'a' + 'b' folding, .strip() vs |trim, message.role
// vs message['role']), against the variants it renders. Each variant is
// rendered by hand-written code that reproduces Python Jinja2 under
// transformers' apply_chat_template settings byte for byte; the tests compare
// with Jinja2 and @huggingface/jinja renderings of the real templates
// (test/data/trainer/chat_fixtures.json). A template of a known family but an
// unknown variant, or of no known family, is refused with a FormatError that
// names the file and field: rendering it approximately would silently train
// the model on a format it never sees at inference.
//
// Rendering yields pieces marked as loss targets or not: the assistant
// turns' content and their end-of-turn token are targets; headers, other
// roles and separators after the end of turn are not.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TRAINER_CHATTEMPLATE_H
#define BITLOOM_TRAINER_CHATTEMPLATE_H

#include <stdexcept>
#include <string>
#include <vector>

namespace bitloom {
class GgufFile;
class Model;
} // namespace bitloom

namespace bitloom::trainer {

enum class ChatFamily { Llama3, BitNet, ChatML, Llama2, Gemma, Phi3 };

/// "llama3", "bitnet", "chatml", "llama2", "gemma", "phi3".
const char *chatFamilyName(ChatFamily f);

struct ChatMessage {
  std::string role; // system | user | assistant
  std::string content;
};

/// A run of rendered text; `target` marks assistant content + end of turn.
/// `message` is the index of the message the piece belongs to (-1 for text
/// outside messages: BOS, a default system prompt, the generation prompt).
struct ChatPiece {
  std::string text;
  bool target = false;
  int message = -1;
};

/// What a template's raise_exception would raise for a conversation (roles
/// that don't alternate, a system message where none is supported, ...).
class ChatTemplateError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class ChatTemplate {
public:
  /// Recognizes `source` (the Jinja text) or, when `source` is exactly a
  /// variant name ("llama3", "chatml", "mistral", ... as listed by
  /// supportedVariants(); llama.cpp accepts names the same way), that
  /// variant. `bosToken` / `eosToken` are the strings the template sees as
  /// bos_token / eos_token ("" when the tokenizer has none). Errors are
  /// FormatError(file, field, "unrecognized chat template family (supported:
  /// ...)") or "... chat template of the X family, but not a variant bitloom
  /// renders exactly (supported X variants: ...)".
  static ChatTemplate fromSource(const std::string &source,
                                 const std::string &bosToken,
                                 const std::string &eosToken,
                                 const std::string &file,
                                 const std::string &field);
  /// From a Hugging Face model directory: tokenizer_config.json
  /// "chat_template" (a string, or a list of {name, template} where "default"
  /// is used), else chat_template.jinja; bos/eos from tokenizer_config.json
  /// (strings or {"content": ...}). FormatError when there is no template.
  static ChatTemplate fromHfDirectory(const std::string &dir);
  /// From GGUF tokenizer.chat_template, with bos/eos from
  /// tokenizer.ggml.bos_token_id / eos_token_id and tokenizer.ggml.tokens.
  static ChatTemplate fromGguf(const GgufFile &gguf);
  /// fromHfDirectory(model.path()) or fromGguf(*model.gguf()).
  static ChatTemplate fromModel(const Model &model);

  ChatFamily family() const { return family_; }
  /// The matched variant ("llama3", "chatml", "chatml-default-system",
  /// "llama2", "mistral", "gemma", "phi3", "phi3-user-opens-assistant", ...).
  const std::string &variant() const { return variant_; }
  const std::string &bosToken() const { return bos_; }
  const std::string &eosToken() const { return eos_; }

  /// Renders `messages` as apply_chat_template(messages,
  /// add_generation_prompt=...) would. Roles must be system, user or
  /// assistant. Throws ChatTemplateError with the template's own message
  /// where the Jinja template raises.
  std::vector<ChatPiece> render(const std::vector<ChatMessage> &messages,
                                bool addGenerationPrompt = false) const;
  /// The concatenated text of render().
  std::string renderText(const std::vector<ChatMessage> &messages,
                         bool addGenerationPrompt = false) const;

  /// "llama3, bitnet, chatml, llama2, gemma, phi3".
  static std::string supportedFamilies();
  /// Every variant name, in the order they are tried.
  static std::vector<std::string> supportedVariants();

  /// The lexical normal form used for matching (exposed for tests).
  static std::string normalize(const std::string &source);

private:
  ChatTemplate() = default;
  ChatFamily family_ = ChatFamily::ChatML;
  std::string variant_;
  std::string bos_, eos_;
  // Variant parameters.
  bool bosFirst_ = false;               // bos_token before everything
  std::string defaultSystem_;           // ChatML default system prompt
  bool hasDefaultSystem_ = false;       //
  bool skipEmptySystem_ = false;        // Phi-3.5: `system and content`
  bool eosWhenNoGeneration_ = false;    // Phi-3: {% else %}{{ eos_token }}
  bool genUnlessLastAssistant_ = false; // Phi-3-vision
  bool spaceAfterEos_ = false;          // Mistral v0.1: eos_token + ' '
};

/// Python's str.strip() (what Jinja2's trim filter and .strip() call):
/// removes Unicode whitespace (str.isspace) at both ends of UTF-8 text.
std::string pythonStrip(const std::string &s);

} // namespace bitloom::trainer

#endif // BITLOOM_TRAINER_CHATTEMPLATE_H

//===- ChatTemplate.cpp - Chat templates without a Jinja engine -----------===//

#include "trainer/ChatTemplate.h"

#include "formats/Error.h"
#include "formats/Gguf.h"
#include "model/Model.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

namespace fs = std::filesystem;

namespace bitloom::trainer {

const char *chatFamilyName(ChatFamily f) {
  switch (f) {
  case ChatFamily::Llama3:
    return "llama3";
  case ChatFamily::BitNet:
    return "bitnet";
  case ChatFamily::ChatML:
    return "chatml";
  case ChatFamily::Llama2:
    return "llama2";
  case ChatFamily::Gemma:
    return "gemma";
  case ChatFamily::Phi3:
    return "phi3";
  }
  return "?";
}

//===----------------------------------------------------------------------===//
// Python's str.strip()
//===----------------------------------------------------------------------===//

namespace {

// Decodes one UTF-8 code point at s[i]; returns its length (1 for invalid
// bytes, which are never whitespace).
size_t decodeUtf8(const std::string &s, size_t i, uint32_t &cp) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len = c < 0x80         ? 1
               : (c >> 5) == 6  ? 2
               : (c >> 4) == 14 ? 3
               : (c >> 3) == 30 ? 4
                                : 0;
  if (len == 0 || i + len > s.size()) {
    cp = 0xFFFFFFFF;
    return 1;
  }
  cp = len == 1 ? c : c & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) {
      cp = 0xFFFFFFFF;
      return 1;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  return len;
}

// str.isspace(): the characters with bidirectional type WS, B or S, or
// general category Zs (CPython's _PyUnicode_IsWhitespace table).
bool isPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 ||
         c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

} // namespace

std::string pythonStrip(const std::string &s) {
  size_t begin = 0;
  while (begin < s.size()) {
    uint32_t cp;
    size_t len = decodeUtf8(s, begin, cp);
    if (!isPythonSpace(cp))
      break;
    begin += len;
  }
  size_t end = begin;
  // Scan forward remembering the end of the last non-space code point, so
  // that multi-byte characters are never split.
  for (size_t i = begin; i < s.size();) {
    uint32_t cp;
    size_t len = decodeUtf8(s, i, cp);
    i += len;
    if (!isPythonSpace(cp))
      end = i;
  }
  return s.substr(begin, end - begin);
}

//===----------------------------------------------------------------------===//
// Normalization
//===----------------------------------------------------------------------===//

namespace {

struct Tok {
  enum Kind { Lit, Ident, Punct } kind;
  std::string text; // literal value (decoded) / identifier / punctuation
};

[[noreturn]] void lexError(const std::string &what) {
  throw std::invalid_argument(what);
}

// Decodes a Jinja string literal's escapes as Python's string literal rules
// do for the escapes templates use.
std::string unescapeLiteral(const std::string &body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\' || i + 1 == body.size()) {
      out += c;
      continue;
    }
    char e = body[++i];
    auto hex = [&](size_t digits) {
      if (i + digits >= body.size())
        lexError("truncated escape");
      uint32_t v = 0;
      for (size_t k = 1; k <= digits; ++k) {
        char h = body[i + k];
        v = v * 16 + (h >= '0' && h <= '9'   ? h - '0'
                      : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                             : (lexError("bad hex escape"), 0));
      }
      i += digits;
      // UTF-8 encode.
      if (v < 0x80) {
        out += char(v);
      } else if (v < 0x800) {
        out += char(0xC0 | (v >> 6));
        out += char(0x80 | (v & 0x3F));
      } else if (v < 0x10000) {
        out += char(0xE0 | (v >> 12));
        out += char(0x80 | ((v >> 6) & 0x3F));
        out += char(0x80 | (v & 0x3F));
      } else {
        out += char(0xF0 | (v >> 18));
        out += char(0x80 | ((v >> 12) & 0x3F));
        out += char(0x80 | ((v >> 6) & 0x3F));
        out += char(0x80 | (v & 0x3F));
      }
    };
    switch (e) {
    case 'n':
      out += '\n';
      break;
    case 't':
      out += '\t';
      break;
    case 'r':
      out += '\r';
      break;
    case '\\':
      out += '\\';
      break;
    case '\'':
      out += '\'';
      break;
    case '"':
      out += '"';
      break;
    case '\n': // line continuation
      break;
    case 'x':
      hex(2);
      break;
    case 'u':
      hex(4);
      break;
    default: // Python keeps unknown escapes verbatim
      out += '\\';
      out += e;
    }
  }
  return out;
}

bool isIdentStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool isIdentChar(char c) { return isIdentStart(c) || (c >= '0' && c <= '9'); }

std::vector<Tok> lexBody(const std::string &body) {
  std::vector<Tok> toks;
  for (size_t i = 0; i < body.size();) {
    char c = body[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
    } else if (c == '\'' || c == '"') {
      size_t j = i + 1;
      while (j < body.size() && body[j] != c)
        j += body[j] == '\\' ? 2 : 1;
      if (j >= body.size())
        lexError("unterminated string literal");
      toks.push_back(
          {Tok::Lit, unescapeLiteral(body.substr(i + 1, j - i - 1))});
      i = j + 1;
    } else if (isIdentChar(c)) {
      size_t j = i;
      while (j < body.size() && isIdentChar(body[j]))
        ++j;
      toks.push_back({Tok::Ident, body.substr(i, j - i)});
      i = j;
    } else {
      toks.push_back({Tok::Punct, std::string(1, c)});
      ++i;
    }
  }
  return toks;
}

bool isPunct(const std::vector<Tok> &t, size_t i, const char *p) {
  return i < t.size() && t[i].kind == Tok::Punct && t[i].text == p;
}

// Rewrites that do not change what a template renders for string contents:
// x.strip() -> x|trim, .role/.content -> ['role']/['content'], 'a' + 'b' ->
// 'ab' (only between operands that can't bind tighter than +).
void rewrite(std::vector<Tok> &t) {
  std::vector<Tok> out;
  for (size_t i = 0; i < t.size(); ++i) {
    if (isPunct(t, i, ".") && i + 1 < t.size() && t[i + 1].kind == Tok::Ident &&
        t[i + 1].text == "strip" && isPunct(t, i + 2, "(") &&
        isPunct(t, i + 3, ")")) {
      out.push_back({Tok::Punct, "|"});
      out.push_back({Tok::Ident, "trim"});
      i += 3;
      continue;
    }
    if (isPunct(t, i, ".") && i + 1 < t.size() && t[i + 1].kind == Tok::Ident &&
        (t[i + 1].text == "role" || t[i + 1].text == "content") &&
        !isPunct(t, i + 2, "(") && !out.empty() &&
        (out.back().kind == Tok::Ident || isPunct(out, out.size() - 1, "]"))) {
      out.push_back({Tok::Punct, "["});
      out.push_back({Tok::Lit, t[i + 1].text});
      out.push_back({Tok::Punct, "]"});
      ++i;
      continue;
    }
    out.push_back(t[i]);
  }
  // Fold literal + literal.
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t i = 0; i + 2 < out.size(); ++i) {
      if (out[i].kind != Tok::Lit || !isPunct(out, i + 1, "+") ||
          out[i + 2].kind != Tok::Lit)
        continue;
      bool leftOk = i == 0 || isPunct(out, i - 1, "+") ||
                    isPunct(out, i - 1, "(") || isPunct(out, i - 1, "=") ||
                    isPunct(out, i - 1, ",");
      bool rightOk = i + 3 == out.size() || isPunct(out, i + 3, "+") ||
                     isPunct(out, i + 3, ")") || isPunct(out, i + 3, ",");
      if (!leftOk || !rightOk)
        continue;
      out[i].text += out[i + 2].text;
      out.erase(out.begin() + i + 1, out.begin() + i + 3);
      changed = true;
      break;
    }
  }
  t = std::move(out);
}

std::string serialize(const std::vector<Tok> &t) {
  std::string s;
  for (const Tok &k : t) {
    if (k.kind != Tok::Lit) {
      s += k.text;
      continue;
    }
    s += '\'';
    for (char c : k.text) {
      if (c == '\\' || c == '\'')
        s += '\\';
      s += c;
    }
    s += '\'';
  }
  return s;
}

std::string serializeLiteral(const std::string &v) {
  return serialize({{Tok::Lit, v}});
}

bool isBlankChar(char c) { return c == ' ' || c == '\t'; }
bool isSpaceChar(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

} // namespace

std::string ChatTemplate::normalize(const std::string &sourceIn) {
  // Jinja2's keep_trailing_newline=False.
  std::string source = sourceIn;
  if (!source.empty() && source.back() == '\n')
    source.pop_back();

  struct Tag {
    char kind; // '{' expression, '%' statement, '#' comment
    bool trimLeft = false, trimRight = false, noLstrip = false;
    std::string body;
  };
  std::vector<std::string> raws; // raws[i] precedes tags[i]; one extra at end
  std::vector<Tag> tags;
  size_t pos = 0;
  while (true) {
    size_t open = std::string::npos;
    for (size_t i = pos; i + 1 < source.size(); ++i)
      if (source[i] == '{' && (source[i + 1] == '{' || source[i + 1] == '%' ||
                               source[i + 1] == '#')) {
        open = i;
        break;
      }
    if (open == std::string::npos) {
      raws.push_back(source.substr(pos));
      break;
    }
    raws.push_back(source.substr(pos, open - pos));
    Tag tag;
    tag.kind = source[open + 1];
    size_t i = open + 2;
    if (i < source.size() && (source[i] == '-' || source[i] == '+')) {
      tag.trimLeft = source[i] == '-';
      tag.noLstrip = source[i] == '+';
      ++i;
    }
    char closeChar = tag.kind == '{' ? '}' : tag.kind;
    size_t bodyBegin = i, closeAt = std::string::npos;
    while (i < source.size()) {
      char c = source[i];
      if (tag.kind != '#' && (c == '\'' || c == '"')) {
        size_t j = i + 1;
        while (j < source.size() && source[j] != c)
          j += source[j] == '\\' ? 2 : 1;
        i = j + 1;
        continue;
      }
      if (c == closeChar && i + 1 < source.size() && source[i + 1] == '}') {
        closeAt = i;
        break;
      }
      ++i;
    }
    if (closeAt == std::string::npos)
      lexError("unterminated tag");
    size_t bodyEnd = closeAt;
    if (bodyEnd > bodyBegin &&
        (source[bodyEnd - 1] == '-' || source[bodyEnd - 1] == '+')) {
      tag.trimRight = source[bodyEnd - 1] == '-';
      --bodyEnd;
    }
    tag.body = source.substr(bodyBegin, bodyEnd - bodyBegin);
    tags.push_back(std::move(tag));
    pos = closeAt + 2;
  }

  // Effective raw output under trim_blocks / lstrip_blocks / trim markers.
  std::string out;
  for (size_t k = 0; k < raws.size(); ++k) {
    std::string raw = raws[k];
    const Tag *prev = k > 0 ? &tags[k - 1] : nullptr;
    const Tag *next = k < tags.size() ? &tags[k] : nullptr;
    // lstrip_blocks first: the line start it looks for may be a newline
    // that trim_blocks removes next.
    if (next && next->trimLeft) {
      while (!raw.empty() && isSpaceChar(raw.back()))
        raw.pop_back();
    } else if (next && next->kind != '{' && !next->noLstrip) {
      // Blanks from the start of the line up to the block tag.
      size_t nl = raw.rfind('\n');
      bool lineStart = nl != std::string::npos || k == 0;
      size_t from = nl == std::string::npos ? 0 : nl + 1;
      bool blanks = true;
      for (size_t i = from; i < raw.size(); ++i)
        blanks &= isBlankChar(raw[i]);
      if (lineStart && blanks)
        raw.erase(from);
    }
    if (prev && prev->trimRight) {
      size_t b = 0;
      while (b < raw.size() && isSpaceChar(raw[b]))
        ++b;
      raw.erase(0, b);
    } else if (prev && prev->kind != '{' && !raw.empty() && raw[0] == '\n') {
      raw.erase(0, 1); // trim_blocks
    } else if (prev && prev->kind != '{' && raw.size() >= 2 && raw[0] == '\r' &&
               raw[1] == '\n') {
      raw.erase(0, 2);
    }
    if (!raw.empty())
      out += "{{" + serializeLiteral(raw) + "}}";
    if (next && next->kind != '#') {
      std::vector<Tok> toks = lexBody(next->body);
      rewrite(toks);
      out += next->kind == '{' ? "{{" : "{%";
      out += serialize(toks);
      out += next->kind == '{' ? "}}" : "%}";
    }
  }
  return out;
}

//===----------------------------------------------------------------------===//
// Variants
//===----------------------------------------------------------------------===//

namespace {

// A variant is a sequence of elements, each a list of alternative template
// fragments (normalized like the template); an optional element may match
// nothing. A fragment may hold kCapture inside a string literal: it matches
// any literal text (no unescaped quote) and is captured.
constexpr char kCapture = '\x01';

struct Element {
  std::vector<std::string> alternatives;
  bool optional = false;
  std::string flag; // set when the element (or alternative > 0) matched
};

struct VariantDef {
  const char *name;
  ChatFamily family;
  std::vector<Element> elements;
};

Element req(std::vector<std::string> alts) {
  return {std::move(alts), false, ""};
}
Element opt(std::string frag, std::string flag) {
  return {{std::move(frag)}, true, std::move(flag)};
}
Element alt(std::vector<std::string> alts, std::string flag) {
  return {std::move(alts), false, std::move(flag)};
}

const char *const kAlternate =
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}";

const std::vector<VariantDef> &variantDefs() {
  static const std::vector<VariantDef> defs = [] {
    std::vector<VariantDef> d;
    const std::string cap(1, kCapture);
    // meta-llama/Meta-Llama-3-8B-Instruct.
    d.push_back(
        {"llama3",
         ChatFamily::Llama3,
         {req({"{% set loop_messages = messages %}{% for message in "
               "loop_messages %}{% set content = '<|start_header_id|>' + "
               "message['role'] + '<|end_header_id|>\\n\\n'+ "
               "message['content'] | trim + '<|eot_id|>' %}"}),
          opt("{% if loop.index0 == 0 %}{% set content = bos_token + content "
              "%}{% endif %}",
              "bos"),
          req({"{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
               "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% "
               "endif %}"})}});
    // microsoft/bitnet-b1.58-2B-4T (Llama-3's, with "Role: " headers).
    d.push_back(
        {"bitnet",
         ChatFamily::BitNet,
         {req({"{% set loop_messages = messages %}{% for message in "
               "loop_messages %}{% set content = message['role'] | "
               "capitalize + ': '+ message['content'] | trim + '<|eot_id|>' "
               "%}"}),
          opt("{% if loop.index0 == 0 %}{% set content = bos_token + content "
              "%}{% endif %}",
              "bos"),
          req({"{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
               "'Assistant: ' }}{% endif %}"})}});
    // teknium/OpenHermes-2.5 and the many ChatML fine-tunes; Qwen1.5 / Qwen2
    // add a default system prompt when the first message isn't one.
    const std::string chatmlHead =
        "{% if not add_generation_prompt is defined %}{% set "
        "add_generation_prompt = false %}{% endif %}";
    const std::string chatmlTurn =
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
        "'<|im_start|>assistant\\n' }}{% endif %}";
    d.push_back({"chatml",
                 ChatFamily::ChatML,
                 {opt(chatmlHead, ""), opt("{{ bos_token }}", "bos"),
                  req({"{% for message in messages %}" + chatmlTurn})}});
    d.push_back(
        {"chatml-default-system",
         ChatFamily::ChatML,
         {opt(chatmlHead, ""), opt("{{ bos_token }}", "bos"),
          req({"{% for message in messages %}{% if loop.first and "
               "messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n" +
               cap + "<|im_end|>\\n' }}{% endif %}" + chatmlTurn})}});
    // meta-llama/Llama-2-*-chat-hf, codellama/CodeLlama-*-Instruct-hf.
    d.push_back(
        {"llama2",
         ChatFamily::Llama2,
         {req({std::string(
                   "{% if messages[0]['role'] == 'system' %}{% set "
                   "loop_messages = messages[1:] %}{% set system_message = "
                   "messages[0]['content'] %}{% else %}{% set loop_messages = "
                   "messages %}{% set system_message = false %}{% endif %}{% "
                   "for message in loop_messages %}") +
               kAlternate +
               "{% if loop.index0 == 0 and system_message != false %}{% set "
               "content = '<<SYS>>\\n' + system_message + "
               "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set "
               "content = message['content'] %}{% endif %}{% if "
               "message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
               "content.strip() + ' [/INST]' }}{% elif message['role'] == "
               "'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% "
               "endif %}{% endfor %}"})}});
    // mistralai/Mistral-7B-Instruct-v0.1 / v0.2, Mixtral-8x7B-Instruct-v0.1.
    d.push_back(
        {"mistral",
         ChatFamily::Llama2,
         {req({std::string("{{ bos_token }}{% for message in messages %}") +
               kAlternate +
               "{% if message['role'] == 'user' %}{{ '[INST] ' + "
               "message['content'] + ' [/INST]' }}{% elif message['role'] == "
               "'assistant' %}"}),
          alt({"{{ message['content'] + eos_token}}",
               "{{ message['content'] + eos_token + ' ' }}"},
              "space_after_eos"),
          req({"{% else %}{{ raise_exception('Only user and assistant roles "
               "are supported!') }}{% endif %}{% endfor %}"})}});
    // google/gemma-*-it (1 and 2).
    d.push_back(
        {"gemma",
         ChatFamily::Gemma,
         {opt("{{ bos_token }}", "bos"),
          req({std::string("{% if messages[0]['role'] == 'system' %}{{ "
                           "raise_exception('System role not supported') }}{% "
                           "endif %}{% for message in messages %}") +
               kAlternate +
               "{% if (message['role'] == 'assistant') %}{% set role = "
               "'model' %}{% else %}{% set role = message['role'] %}{% endif "
               "%}{{ '<start_of_turn>' + role + '\\n' + message['content'] | "
               "trim + '<end_of_turn>\\n' }}{% endfor %}{% if "
               "add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif "
               "%}"})}});
    // microsoft/Phi-3-mini-4k-instruct, Phi-3.5-mini-instruct (skips an empty
    // system message), Phi-3-small (bos, any role), Phi-3-vision.
    const std::string phiEnd = "{% endfor %}";
    const std::vector<std::string> phiGen = {
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ "
        "eos_token }}{% endif %}",
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
        "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' "
        "%}{{ '<|assistant|>\\n' }}{% endif %}"};
    const std::string phiHead =
        "{% for message in messages %}{% if message['role'] == 'system'";
    d.push_back(
        {"phi3",
         ChatFamily::Phi3,
         {opt("{{ bos_token }}", "bos"),
          alt({phiHead + " %}", phiHead + " and message['content'] %}"},
              "skip_empty_system"),
          req({"{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% "
               "elif message['role'] == 'user' %}{{'<|user|>\\n' + "
               "message['content'] + '<|end|>\\n'}}{% elif message['role'] == "
               "'assistant' %}{{'<|assistant|>\\n' + message['content'] + "
               "'<|end|>\\n'}}{% endif %}" +
               phiEnd}),
          alt(phiGen, "gen")}});
    d.push_back({"phi3-any-role",
                 ChatFamily::Phi3,
                 {opt("{{ bos_token }}", "bos"),
                  req({"{% for message in messages %}{{'<|' + "
                       "message['role'] + '|>' + '\\n' + message['content'] + "
                       "'<|end|>\\n' }}" +
                       phiEnd}),
                  alt(phiGen, "gen")}});
    // Phi-3-medium and the first Phi-3-mini: the user turn opens the
    // assistant's; system messages are dropped; no generation prompt.
    d.push_back(
        {"phi3-user-opens-assistant",
         ChatFamily::Phi3,
         {opt("{{ bos_token }}", "bos"),
          req({"{% for message in messages %}{% if (message['role'] == "
               "'user') %}{{'<|user|>' + '\\n' + message['content'] + "
               "'<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}{% elif "
               "(message['role'] == 'assistant') %}{{message['content'] + "
               "'<|end|>' + '\\n'}}{% endif %}{% endfor %}"})}});
    // Normalize every fragment once; capture markers sit inside literals
    // and survive normalization unchanged.
    for (VariantDef &v : d)
      for (Element &e : v.elements)
        for (std::string &a : e.alternatives)
          a = ChatTemplate::normalize(a);
    return d;
  }();
  return defs;
}

struct MatchResult {
  std::vector<int> chosen; // alternative per element, -1 = optional skipped
  std::vector<std::string> captures;
};

// Matches fragment `f` at t[pos...]; returns the end or npos.
size_t matchFragment(const std::string &t, size_t pos, const std::string &f,
                     std::vector<std::string> &caps) {
  size_t i = pos;
  for (size_t k = 0; k < f.size(); ++k) {
    if (f[k] != kCapture) {
      if (i >= t.size() || t[i] != f[k])
        return std::string::npos;
      ++i;
      continue;
    }
    // Capture literal text up to the rest of the fragment's literal (its
    // tail up to and including the closing quote); the capture itself may
    // not leave the literal.
    size_t close = f.find('\'', k + 1);
    const std::string tail = f.substr(k + 1, close - k);
    std::string value;
    while (t.compare(i, tail.size(), tail) != 0) {
      if (i >= t.size() || t[i] == '\'')
        return std::string::npos;
      if (t[i] == '\\' && i + 1 < t.size()) {
        value += t[i + 1];
        i += 2;
        continue;
      }
      value += t[i++];
    }
    caps.push_back(value);
  }
  return i;
}

bool matchElements(const std::string &t, size_t pos,
                   const std::vector<Element> &els, size_t e, MatchResult &r) {
  if (e == els.size())
    return pos == t.size();
  const Element &el = els[e];
  for (size_t a = 0; a < el.alternatives.size(); ++a) {
    size_t capsBefore = r.captures.size();
    size_t end = matchFragment(t, pos, el.alternatives[a], r.captures);
    if (end != std::string::npos) {
      r.chosen[e] = int(a);
      if (matchElements(t, end, els, e + 1, r))
        return true;
    }
    r.captures.resize(capsBefore);
  }
  if (el.optional) {
    r.chosen[e] = -1;
    if (matchElements(t, pos, els, e + 1, r))
      return true;
  }
  return false;
}

// llama.cpp-style family detection on the raw template, for diagnostics and
// to pick the variants to try.
std::optional<ChatFamily> detectFamily(const std::string &t) {
  auto has = [&](const char *s) { return t.find(s) != std::string::npos; };
  if (has("<|im_start|>") && !has("<|im_sep|>") && !has("<end_of_utterance>"))
    return ChatFamily::ChatML;
  if (has("[INST]"))
    return ChatFamily::Llama2;
  if (has("<|assistant|>") && has("<|end|>"))
    return ChatFamily::Phi3;
  if (has("<start_of_turn>"))
    return ChatFamily::Gemma;
  if (has("<|start_header_id|>") && has("<|end_header_id|>"))
    return ChatFamily::Llama3;
  if (has("<|eot_id|>") && has("capitalize"))
    return ChatFamily::BitNet;
  return std::nullopt;
}

std::string join(const std::vector<std::string> &v, const char *sep) {
  std::string s;
  for (const std::string &x : v)
    s += (s.empty() ? "" : sep) + x;
  return s;
}

} // namespace

std::string ChatTemplate::supportedFamilies() {
  return "llama3, bitnet, chatml, llama2, gemma, phi3";
}

std::vector<std::string> ChatTemplate::supportedVariants() {
  std::vector<std::string> v;
  for (const VariantDef &d : variantDefs())
    v.push_back(d.name);
  return v;
}

ChatTemplate ChatTemplate::fromSource(const std::string &source,
                                      const std::string &bosToken,
                                      const std::string &eosToken,
                                      const std::string &file,
                                      const std::string &field) {
  ChatTemplate t;
  t.bos_ = bosToken;
  t.eos_ = eosToken;
  const std::vector<VariantDef> &defs = variantDefs();

  // A bare variant name selects it with its canonical options (llama.cpp's
  // --chat-template NAME).
  for (const VariantDef &d : defs) {
    if (source != d.name)
      continue;
    const std::string v = d.name;
    t.family_ = d.family;
    t.variant_ = v;
    // The options of the model each variant comes from.
    t.bosFirst_ =
        v == "llama3" || v == "mistral" || v == "gemma" || v == "phi3-any-role";
    t.eosWhenNoGeneration_ = v == "phi3" || v == "phi3-any-role";
    if (v == "chatml-default-system") {
      t.hasDefaultSystem_ = true;
      t.defaultSystem_ = "You are a helpful assistant.";
    }
    return t;
  }

  std::optional<ChatFamily> family = detectFamily(source);
  if (!family && source.find("BITNETAssistant") != std::string::npos)
    throw FormatError(
        file, field,
        "the placeholder template (\"Human: ... BITNETAssistant: ...\") that "
        "Microsoft's BitNet GGUF converter embeds, not the one "
        "bitnet-b1.58-2B-4T was trained with; use the \"bitnet\" template "
        "(its tokenizer_config.json's) instead");
  if (!family)
    throw FormatError(file, field,
                      "unrecognized chat template family (supported: " +
                          supportedFamilies() + ")");
  std::string norm;
  try {
    norm = normalize(source);
  } catch (const std::invalid_argument &e) {
    throw FormatError(file, field,
                      std::string("chat template does not lex as Jinja: ") +
                          e.what());
  }
  std::vector<std::string> tried;
  for (const VariantDef &d : defs) {
    if (d.family != *family)
      continue;
    tried.push_back(d.name);
    MatchResult r;
    r.chosen.assign(d.elements.size(), -1);
    if (!matchElements(norm, 0, d.elements, 0, r))
      continue;
    t.family_ = d.family;
    t.variant_ = d.name;
    for (size_t e = 0; e < d.elements.size(); ++e) {
      const std::string &flag = d.elements[e].flag;
      int c = r.chosen[e];
      if (flag == "bos")
        t.bosFirst_ = c >= 0;
      else if (flag == "space_after_eos")
        t.spaceAfterEos_ = c == 1;
      else if (flag == "skip_empty_system")
        t.skipEmptySystem_ = c == 1;
      else if (flag == "gen") {
        t.eosWhenNoGeneration_ = c == 0;
        t.genUnlessLastAssistant_ = c == 2;
      }
    }
    // Llama-2 puts bos_token in every user turn rather than first.
    if (t.variant_ == "llama2")
      t.bosFirst_ = false;
    if (t.variant_ == "mistral")
      t.bosFirst_ = true;
    if (t.variant_ == "chatml-default-system") {
      t.hasDefaultSystem_ = true;
      t.defaultSystem_ = r.captures.at(0);
    }
    return t;
  }
  throw FormatError(
      file, field,
      std::string("chat template of the ") + chatFamilyName(*family) +
          " family, but not a variant bitloom renders exactly (supported " +
          chatFamilyName(*family) + " variants: " + join(tried, ", ") +
          "); rendering it approximately would train on a format the model "
          "never sees");
}

namespace {

std::string readFile(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// tokenizer_config.json special tokens are strings or AddedToken objects.
std::string tokenText(const nlohmann::json &v) {
  if (v.is_string())
    return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return "";
}

} // namespace

ChatTemplate ChatTemplate::fromHfDirectory(const std::string &dir) {
  fs::path cfgPath = fs::path(dir) / "tokenizer_config.json";
  std::string cfgFile = cfgPath.string();
  nlohmann::json cfg = nlohmann::json::object();
  if (fs::exists(cfgPath)) {
    try {
      cfg = nlohmann::json::parse(readFile(cfgPath));
    } catch (const std::exception &e) {
      throw FormatError(cfgFile, "", std::string("invalid JSON: ") + e.what());
    }
  }
  std::string bos =
      cfg.contains("bos_token") ? tokenText(cfg["bos_token"]) : "";
  std::string eos =
      cfg.contains("eos_token") ? tokenText(cfg["eos_token"]) : "";
  if (cfg.contains("chat_template")) {
    const nlohmann::json &ct = cfg["chat_template"];
    if (ct.is_string())
      return fromSource(ct.get<std::string>(), bos, eos, cfgFile,
                        "chat_template");
    if (ct.is_array()) {
      for (const nlohmann::json &e : ct)
        if (e.is_object() && e.value("name", "") == "default" &&
            e.contains("template") && e["template"].is_string())
          return fromSource(e["template"].get<std::string>(), bos, eos, cfgFile,
                            "chat_template");
      throw FormatError(cfgFile, "chat_template",
                        "a list of templates without a \"default\" one");
    }
    throw FormatError(cfgFile, "chat_template", "not a string");
  }
  // transformers >= 4.43 saves the template beside the config.
  fs::path jinja = fs::path(dir) / "chat_template.jinja";
  if (fs::exists(jinja))
    return fromSource(readFile(jinja), bos, eos, jinja.string(), "");
  throw FormatError(cfgFile, "chat_template",
                    "missing (and no chat_template.jinja): the model has no "
                    "chat template; chat datasets need one");
}

ChatTemplate ChatTemplate::fromGguf(const GgufFile &gguf) {
  std::optional<std::string> source =
      gguf.getOptionalString("tokenizer.chat_template");
  if (!source)
    throw FormatError(gguf.path(), "tokenizer.chat_template",
                      "missing: the model has no chat template; chat datasets "
                      "need one");
  std::string bos, eos;
  if (gguf.find("tokenizer.ggml.tokens")) {
    std::vector<std::string> tokens =
        gguf.getStringArray("tokenizer.ggml.tokens");
    auto text = [&](const char *key) -> std::string {
      std::optional<uint64_t> id = gguf.getOptionalUInt(key);
      return id && *id < tokens.size() ? tokens[*id] : std::string();
    };
    bos = text("tokenizer.ggml.bos_token_id");
    eos = text("tokenizer.ggml.eos_token_id");
  }
  return fromSource(*source, bos, eos, gguf.path(), "tokenizer.chat_template");
}

ChatTemplate ChatTemplate::fromModel(const Model &model) {
  if (model.format() == ModelFormat::Gguf)
    return fromGguf(*model.gguf());
  return fromHfDirectory(model.path());
}

//===----------------------------------------------------------------------===//
// Rendering
//===----------------------------------------------------------------------===//

std::vector<ChatPiece>
ChatTemplate::render(const std::vector<ChatMessage> &messages,
                     bool addGenerationPrompt) const {
  for (const ChatMessage &m : messages)
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      throw ChatTemplateError("role \"" + m.role +
                              "\" (supported: system, user, assistant)");
  std::vector<ChatPiece> out;
  auto emit = [&](std::string text, bool target, int message) {
    if (text.empty())
      return;
    if (!out.empty() && out.back().target == target &&
        out.back().message == message)
      out.back().text += text;
    else
      out.push_back({std::move(text), target, message});
  };
  auto assistant = [&](size_t i) { return messages[i].role == "assistant"; };
  auto alternate = [&](size_t loopIndex, const std::string &role) {
    if ((role == "user") != (loopIndex % 2 == 0))
      throw ChatTemplateError("Conversation roles must alternate "
                              "user/assistant/user/assistant/...");
  };
  if (bosFirst_)
    emit(bos_, false, -1);

  switch (family_) {
  case ChatFamily::Llama3:
  case ChatFamily::BitNet:
    for (size_t i = 0; i < messages.size(); ++i) {
      const ChatMessage &m = messages[i];
      std::string header =
          family_ == ChatFamily::Llama3
              ? "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n"
              : std::string(1, char(m.role[0] - 'a' + 'A')) + m.role.substr(1) +
                    ": ";
      emit(header, false, int(i));
      emit(pythonStrip(m.content) + "<|eot_id|>", assistant(i), int(i));
    }
    if (addGenerationPrompt)
      emit(family_ == ChatFamily::Llama3
               ? "<|start_header_id|>assistant<|end_header_id|>\n\n"
               : "Assistant: ",
           false, -1);
    break;

  case ChatFamily::ChatML:
    for (size_t i = 0; i < messages.size(); ++i) {
      const ChatMessage &m = messages[i];
      if (i == 0 && hasDefaultSystem_ && m.role != "system")
        emit("<|im_start|>system\n" + defaultSystem_ + "<|im_end|>\n", false,
             -1);
      emit("<|im_start|>" + m.role + "\n", false, int(i));
      emit(m.content + "<|im_end|>", assistant(i), int(i));
      emit("\n", false, int(i));
    }
    if (addGenerationPrompt)
      emit("<|im_start|>assistant\n", false, -1);
    break;

  case ChatFamily::Llama2:
    if (variant_ == "llama2") {
      size_t first = 0;
      bool hasSystem = false;
      std::string system;
      if (messages.empty())
        throw ChatTemplateError("no messages");
      if (messages[0].role == "system") {
        first = 1;
        hasSystem = true;
        system = messages[0].content;
      }
      for (size_t i = first; i < messages.size(); ++i) {
        size_t loopIndex = i - first;
        const ChatMessage &m = messages[i];
        alternate(loopIndex, m.role);
        std::string content =
            loopIndex == 0 && hasSystem
                ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + m.content
                : m.content;
        if (m.role == "user") {
          emit(bos_ + "[INST] " + pythonStrip(content) + " [/INST]", false,
               int(i));
        } else if (m.role == "assistant") {
          emit(" ", false, int(i));
          emit(pythonStrip(content) + " " + eos_, true, int(i));
        }
      }
    } else { // mistral
      for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage &m = messages[i];
        alternate(i, m.role);
        if (m.role == "user") {
          emit("[INST] " + m.content + " [/INST]", false, int(i));
        } else if (m.role == "assistant") {
          emit(m.content + eos_, true, int(i));
          if (spaceAfterEos_)
            emit(" ", false, int(i));
        } else {
          throw ChatTemplateError(
              "Only user and assistant roles are supported!");
        }
      }
    }
    break; // neither Llama-2 variant has a generation prompt

  case ChatFamily::Gemma:
    if (!messages.empty() && messages[0].role == "system")
      throw ChatTemplateError("System role not supported");
    for (size_t i = 0; i < messages.size(); ++i) {
      const ChatMessage &m = messages[i];
      alternate(i, m.role);
      emit("<start_of_turn>" + std::string(assistant(i) ? "model" : m.role) +
               "\n",
           false, int(i));
      emit(pythonStrip(m.content) + "<end_of_turn>", assistant(i), int(i));
      emit("\n", false, int(i));
    }
    if (addGenerationPrompt)
      emit("<start_of_turn>model\n", false, -1);
    break;

  case ChatFamily::Phi3:
    if (variant_ == "phi3-user-opens-assistant") {
      for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage &m = messages[i];
        if (m.role == "user") {
          emit("<|user|>\n" + m.content + "<|end|>\n<|assistant|>\n", false,
               int(i));
        } else if (m.role == "assistant") {
          emit(m.content + "<|end|>", true, int(i));
          emit("\n", false, int(i));
        }
      }
      break;
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      const ChatMessage &m = messages[i];
      if (m.role == "system" && skipEmptySystem_ && m.content.empty())
        continue;
      emit("<|" + m.role + "|>\n", false, int(i));
      emit(m.content + "<|end|>", assistant(i), int(i));
      emit("\n", false, int(i));
    }
    if (addGenerationPrompt) {
      if (!genUnlessLastAssistant_ || messages.empty() ||
          messages.back().role != "assistant")
        emit("<|assistant|>\n", false, -1);
    } else if (eosWhenNoGeneration_) {
      emit(eos_, false, -1);
    }
    break;
  }
  return out;
}

std::string ChatTemplate::renderText(const std::vector<ChatMessage> &messages,
                                     bool addGenerationPrompt) const {
  std::string s;
  for (const ChatPiece &p : render(messages, addGenerationPrompt))
    s += p.text;
  return s;
}

} // namespace bitloom::trainer

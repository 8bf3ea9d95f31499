//===- GenerateCommand.cpp - bitloom-run generate -------------------------===//
//
// Text generation with the artifact's generate_step: a KV-cached forward
// that takes one token and its position and returns the next-token logits,
// the caches being state the Session keeps between calls. The prompt is fed
// token by token, then each sampled token (greedy by default; temperature
// and top-p as `bitloom generate`, trainer/Sampling.h) until EOS or
// --max-new-tokens. With --chat the prompt is a user message rendered with
// the artifact's chat template and an assistant header.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Session.h"

#include "formats/Error.h"
#include "tokenizer/Tokenizer.h"
#include "trainer/Sampling.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <set>

namespace bitloom::run {

void addGenerateCommand(CLI::App &app, GenerateArgs &a) {
  auto *cmd = app.add_subcommand("generate",
                                 "generate text with an optional LoRA adapter");
  cmd->add_option("artifact", a.artifact, ".blm from bitloom compile")
      ->required();
  cmd->add_option("--prompt", a.prompt, "prompt text")->required();
  cmd->add_option("--adapter", a.adapter,
                  "PEFT directory or GGUF LoRA file (default: none)");
  cmd->add_option("--max-new-tokens", a.maxNewTokens, "tokens to generate")
      ->capture_default_str();
  cmd->add_option("--temperature", a.temperature, "0: greedy")
      ->capture_default_str();
  cmd->add_option("--top-p", a.topP, "nucleus sampling mass")
      ->capture_default_str();
  cmd->add_option("--seed", a.seed, "sampling seed")->capture_default_str();
  cmd->add_flag("--chat", a.chat,
                "render the prompt as a user turn with the chat template");
  cmd->add_flag("--ids", a.printIds, "also print the generated ids");
  cmd->add_option("--threads", a.threads, "micro-kernel threads (0: default)")
      ->capture_default_str();
  addDeviceOption(*cmd, a.device);
}

int runGenerate(const GenerateArgs &a) {
  if (a.maxNewTokens < 1)
    throw FormatError("", "--max-new-tokens", "must be at least 1");
  if (!(a.topP > 0.0 && a.topP <= 1.0))
    throw FormatError("", "--top-p", "must be in (0, 1]");
  if (!(a.temperature >= 0.0))
    throw FormatError("", "--temperature", "must not be negative");
  applyThreads(a.threads);
  Session session(a.artifact, deviceOptions(a.device));
  Entry &gen = session.entry("generate_step");
  HostBuffer &tokens = gen.requireInput("tokens");
  HostBuffer *positions = gen.input("positions");
  HostBuffer *logits = gen.result("logits");
  if (tokens.elements() != 1 || !logits || logits->dtype() != "f32")
    throw FormatError(a.artifact, "generate_step",
                      "expected one token per call and f32 logits (tokens " +
                          shapeText(tokens.shape()) + ")");
  const int64_t vocab = logits->elements();
  // The KV caches bound the positions.
  int64_t capacity = session.modelConfig().maxPositionEmbeddings;
  for (const blm::fb::TensorSig *sig : *gen.signature().arguments()) {
    std::string name = sig->name()->str();
    if (name.rfind("key_cache.", 0) == 0 && sig->shape() &&
        sig->shape()->size() >= 2)
      capacity = sig->shape()->Get(1);
  }
  session.initFresh(a.seed); // LoRA B = 0 and empty caches
  if (!a.adapter.empty())
    session.loadAdapter(a.adapter);

  const Tokenizer &tokenizer = session.tokenizer();
  std::vector<int32_t> prompt;
  std::set<int32_t> stop;
  if (std::optional<int32_t> eos = tokenizer.eosId())
    stop.insert(*eos);
  if (session.modelConfig().eosTokenId)
    stop.insert(int32_t(*session.modelConfig().eosTokenId));
  if (a.chat) {
    const trainer::ChatTemplate *chat = session.chatTemplate();
    if (!chat)
      throw FormatError(a.artifact, "chat_template",
                        "the artifact carries no chat template (--chat)");
    prompt = trainer::tokenizeChat(chat->render({{"user", a.prompt}}, true),
                                   tokenizer, trainer::ChatBos::AddIfMissing)
                 .ids;
    // The end of an assistant turn stops generation too.
    if (!chat->eosToken().empty()) {
      std::vector<int32_t> ids = tokenizer.encode(chat->eosToken(), false);
      if (ids.size() == 1)
        stop.insert(ids[0]);
    }
  } else {
    prompt = tokenizer.encode(a.prompt, true);
  }
  if (prompt.empty())
    throw FormatError("", "--prompt", "tokenizes to nothing");
  if (int64_t(prompt.size()) + a.maxNewTokens > capacity)
    throw FormatError("", "--max-new-tokens",
                      "the prompt (" + std::to_string(prompt.size()) +
                          " tokens) and " + std::to_string(a.maxNewTokens) +
                          " new tokens exceed the artifact's " +
                          std::to_string(capacity) + " positions");

  std::mt19937_64 rng(a.seed);
  int64_t position = 0;
  auto feed = [&](int32_t id) {
    tokens.i32()[0] = id;
    if (positions)
      positions->i32()[0] = int32_t(position);
    session.run(gen);
    ++position;
  };
  auto t0 = std::chrono::steady_clock::now();
  for (int32_t id : prompt)
    feed(id);
  auto t1 = std::chrono::steady_clock::now();
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < a.maxNewTokens; ++i) {
    int32_t next =
        trainer::sampleToken(logits->f32(), vocab, a.temperature, a.topP, rng);
    generated.push_back(next);
    if (stop.count(next) || i + 1 == a.maxNewTokens)
      break;
    feed(next);
  }
  auto t2 = std::chrono::steady_clock::now();
  std::string text = tokenizer.decode(generated, /*skipSpecial=*/true);
  if (a.chat)
    std::printf("%s\n", text.c_str());
  else
    std::printf("%s%s\n", a.prompt.c_str(), text.c_str());
  if (a.printIds) {
    for (size_t i = 0; i < generated.size(); ++i)
      std::printf("%s%d", i ? " " : "", generated[i]);
    std::printf("\n");
  }
  double promptS = std::chrono::duration<double>(t1 - t0).count();
  double genS = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr,
               "prompt: %zu tokens in %.3f s; generated %zu tokens, %.1f "
               "tokens/s\n",
               prompt.size(), promptS, generated.size(),
               genS > 0 ? double(generated.size()) / genS : 0.0);
  return 0;
}

} // namespace bitloom::run

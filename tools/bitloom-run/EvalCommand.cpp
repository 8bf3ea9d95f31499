//===- EvalCommand.cpp - bitloom-run eval ---------------------------------===//
//
// Mean loss and perplexity of a text or JSONL chat file under the artifact's
// model, with its fresh adapter (LoRA B = 0: the base model) or a trained
// one: eval_step over every sample in order, the loss averaged over every
// target token (each batch's mean weighted by its token_count), perplexity
// = exp(that mean).
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Session.h"

#include "formats/Error.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>

namespace bitloom::run {

void addEvalCommand(CLI::App &app, EvalArgs &a) {
  auto *cmd = app.add_subcommand(
      "eval", "mean loss and perplexity over a data file (eval_step)");
  cmd->add_option("artifact", a.artifact, ".blm from bitloom compile")
      ->required();
  cmd->add_option("--data", a.data, "text or JSONL chat file")->required();
  cmd->add_option("--format", a.format, "auto | text | jsonl")
      ->capture_default_str();
  cmd->add_option("--adapter", a.adapter,
                  "PEFT directory or GGUF LoRA file (default: none)");
  cmd->add_option("--threads", a.threads, "micro-kernel threads (0: default)")
      ->capture_default_str();
  addDeviceOption(*cmd, a.device);
  cmd->add_flag("--json", a.json, "print one JSON object");
}

int runEval(const EvalArgs &a) {
  int threads = applyThreads(a.threads);
  Session session(a.artifact, deviceOptions(a.device));
  Entry &eval = session.entry("eval_step");
  trainer::Dataset dataset = session.loadDataset(a.data, a.format);
  session.initFresh(0); // LoRA B = 0: exactly the base model
  if (!a.adapter.empty())
    session.loadAdapter(a.adapter);

  std::vector<int64_t> all(dataset.samples().size());
  for (size_t i = 0; i < all.size(); ++i)
    all[i] = int64_t(i);
  trainer::Batcher batcher(dataset, all, session.batchSize(), 0,
                           /*shuffle=*/false);
  double sum = 0, count = 0;
  int64_t batches = batcher.batchesPerEpoch();
  for (int64_t b = 0; b < batches; ++b) {
    eval.setBatch(batcher.next());
    session.run(eval);
    double n = eval.scalar("token_count");
    if (n > 0) {
      sum += double(eval.scalar("loss")) * n;
      count += n;
    }
  }
  if (count <= 0)
    throw FormatError(a.data, "", "no target tokens to evaluate");
  double loss = sum / count, ppl = std::exp(loss);
  if (a.json) {
    nlohmann::ordered_json j;
    j["artifact"] = a.artifact;
    j["data"] = a.data;
    j["adapter"] = a.adapter;
    j["samples"] = dataset.samples().size();
    j["batches"] = batches;
    j["tokens"] = int64_t(std::llround(count));
    j["loss"] = std::isfinite(loss) ? nlohmann::ordered_json(loss) : nullptr;
    j["perplexity"] =
        std::isfinite(ppl) ? nlohmann::ordered_json(ppl) : nullptr;
    j["threads"] = threads;
    if (session.onVulkan())
      j["device"] = session.backendDescription();
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s\n", dataset.stats().summary().c_str());
    std::printf("eval: loss %.6f, perplexity %.4f over %lld target tokens "
                "(%zu samples, %lld batches)\n",
                loss, ppl, (long long)std::llround(count),
                dataset.samples().size(), (long long)batches);
  }
  return 0;
}

} // namespace bitloom::run

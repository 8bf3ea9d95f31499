//===- TrainCommand.cpp - `bitloom train`: LoRA training from a text file -===//
//
// Fine-tunes a LoRA adapter on plain text with the reference executor: the
// text is tokenized once, cut into windows of --seq-len tokens, batched,
// and trained for --steps or --epochs; the adapter is saved in PEFT format.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Training.h"

#include "formats/Error.h"
#include "formats/Gguf.h"
#include "formats/MappedFile.h"
#include "tokenizer/Tokenizer.h"
#include "trainer/LearningRate.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

namespace fs = std::filesystem;

namespace bitloom {

std::unique_ptr<Tokenizer> openTokenizer(const std::string &modelPath) {
  if (fs::is_directory(modelPath))
    return Tokenizer::fromHfJson(
        (fs::path(modelPath) / "tokenizer.json").string());
  if (fs::path(modelPath).extension() == ".json")
    return Tokenizer::fromHfJson(modelPath);
  GgufFile gguf = GgufFile::open(modelPath);
  return Tokenizer::fromGguf(gguf);
}

void addTrainCommand(CLI::App &app, TrainArgs &args) {
  auto *cmd = app.add_subcommand(
      "train", "fine-tune a LoRA adapter on a text file (reference target)");
  args.command = cmd;
  cmd->add_option("model", args.model, "model directory or .gguf file")
      ->required();
  cmd->add_option("--target", args.target,
                  "reference | cpu-x86_64 | cpu-arm64 (compiled for this CPU)")
      ->capture_default_str();
  cmd->add_option("--data", args.data, "plain text file")->required();
  cmd->add_option("--seq-len", args.seqLen, "tokens per sequence")
      ->capture_default_str();
  cmd->add_option("--batch", args.batch, "sequences per step")
      ->capture_default_str();
  cmd->add_option("--steps", args.steps, "optimizer steps (0: use --epochs)")
      ->capture_default_str();
  cmd->add_option("--epochs", args.epochs, "passes over the data")
      ->capture_default_str();
  cmd->add_option("--lr", args.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--lr-schedule", args.schedule, "constant | linear | cosine")
      ->capture_default_str();
  cmd->add_option("--grad-accum", args.gradAccum,
                  "micro-batches of --batch per optimizer step")
      ->capture_default_str();
  cmd->add_option("--warmup", args.warmup, "warmup steps")
      ->capture_default_str();
  addLoRAOptions(cmd, args.lora, args.targets);
  addOptimizerOptions(cmd, args.optimizer, args.optimizer.weightDecay,
                      /*showDecayDefault=*/true);
  cmd->add_option("--seed", args.seed, "seed (LoRA init, data order)")
      ->capture_default_str();
  cmd->add_option("--metrics", args.metrics,
                  "JSON-lines metrics log (default: OUT/metrics.jsonl)");
  cmd->add_option("--out", args.out, "adapter output directory")->required();
}

int runTrain(TrainArgs &args) {
  requireExecutableTarget(args.target);
  if (args.seqLen < 2)
    throw FormatError("", "--seq-len", "must be at least 2");
  if (args.batch < 1)
    throw FormatError("", "--batch", "must be at least 1");
  std::unique_ptr<Model> model = Model::open(args.model);
  std::unique_ptr<Tokenizer> tokenizer = openTokenizer(args.model);

  std::ifstream in(args.data, std::ios::binary);
  if (!in)
    throw FormatError(args.data, "", "cannot open");
  std::stringstream text;
  text << in.rdbuf();
  std::vector<int32_t> ids = tokenizer->encode(text.str(), true);
  // Whole windows only; the remainder becomes a last window padded with
  // masked-out tokens so that no text is silently dropped.
  std::vector<std::vector<int32_t>> windows, masks;
  for (size_t i = 0; i < ids.size(); i += size_t(args.seqLen)) {
    std::vector<int32_t> w(ids.begin() + i,
                           ids.begin() +
                               std::min(ids.size(), i + size_t(args.seqLen)));
    std::vector<int32_t> m(w.size(), 1);
    if (w.size() < 2)
      break; // a lone trailing token has nothing to predict
    int32_t pad = tokenizer->eosId().value_or(0);
    while (int64_t(w.size()) < args.seqLen) {
      w.push_back(pad);
      m.push_back(0);
    }
    windows.push_back(std::move(w));
    masks.push_back(std::move(m));
  }
  if (windows.empty())
    throw FormatError(args.data, "", "too little text for one sequence");
  if (args.gradAccum < 1)
    throw FormatError("", "--grad-accum", "must be at least 1");
  int64_t perStep = args.batch * args.gradAccum;
  int64_t stepsPerEpoch = (int64_t(windows.size()) + perStep - 1) / perStep;
  int64_t total = args.steps > 0 ? args.steps : args.epochs * stepsPerEpoch;
  if (total < 1)
    throw FormatError("", "--steps",
                      "nothing to do (give --steps or --epochs)");
  std::printf("data: %zu tokens, %zu windows of %lld, %lld steps of batch "
              "%lld x %lld micro-batches\n",
              ids.size(), windows.size(), (long long)args.seqLen,
              (long long)total, (long long)args.batch,
              (long long)args.gradAccum);

  LoRAOptions lora = args.lora;
  lora.targets = parseLoRATargets(args.targets);
  ExecutionTarget target{args.target, args.batch, args.seqLen};
  if (args.gradAccum > 1)
    target.entries = {"accumulate_step", "apply_step"};
  TrainingSession session(*model, lora, args.optimizer, {}, args.seed, target);

  fs::create_directories(args.out);
  std::string metricsPath =
      args.metrics.empty() ? (fs::path(args.out) / "metrics.jsonl").string()
                           : args.metrics;
  std::ofstream metrics(metricsPath);
  if (!metrics)
    throw FormatError(metricsPath, "", "cannot write");

  std::mt19937_64 rng(args.seed);
  std::vector<size_t> order(windows.size());
  size_t cursor = order.size();
  for (int64_t step = 0; step < total; ++step) {
    std::vector<Batch> microBatches;
    for (int64_t micro = 0; micro < args.gradAccum; ++micro) {
      std::vector<std::vector<int32_t>> batchIds, batchMask;
      while (int64_t(batchIds.size()) < args.batch) {
        if (cursor == order.size()) { // a new epoch, in a new seeded order
          std::iota(order.begin(), order.end(), 0);
          std::shuffle(order.begin(), order.end(), rng);
          cursor = 0;
        }
        batchIds.push_back(windows[order[cursor]]);
        batchMask.push_back(masks[order[cursor]]);
        ++cursor;
      }
      microBatches.push_back(makeBatch(batchIds, &batchMask));
    }
    double lr = trainer::scheduledLearningRate(args.schedule, args.lr, step,
                                               args.warmup, total);
    TrainingSession::StepResult r =
        session.stepAccumulated(microBatches, float(lr));
    nlohmann::json line = {{"step", step + 1},
                           {"loss", r.loss},
                           {"lr", lr},
                           {"grad_norm", r.gradNorm},
                           {"epoch", double(step + 1) / double(stepsPerEpoch)}};
    metrics << line.dump() << "\n";
    metrics.flush();
    if (step == 0 || (step + 1) % 10 == 0 || step + 1 == total)
      std::printf("step %5lld/%lld  loss %.4f  lr %.2e  grad_norm %.3f\n",
                  (long long)step + 1, (long long)total, r.loss, lr,
                  r.gradNorm);
  }
  std::map<std::string, HostTensor> adapter;
  for (const auto &[name, value] : session.parameters())
    if (name.find(".lora_") != std::string::npos)
      adapter[name] = value;
  savePeftAdapter(args.out, lora, adapter, fs::absolute(args.model).string(),
                  model->config());
  std::printf("saved PEFT adapter to %s (metrics: %s)\n", args.out.c_str(),
              metricsPath.c_str());
  return 0;
}

} // namespace bitloom

//===- StepCommand.cpp - `bitloom step`: N steps on one fixed batch -------===//
//
// The debugging door for parity checks: runs N optimizer steps on one batch
// and writes the loss before each step, the first step's gradients and the
// final parameters, all float32, under PEFT's tensor names.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Training.h"

#include "formats/Error.h"
#include "formats/Safetensors.h"

#include <cstdio>

namespace bitloom {

void addStepCommand(CLI::App &app, StepArgs &args) {
  auto *cmd = app.add_subcommand(
      "step", "run N optimizer steps on one fixed batch; write loss, "
              "gradients and parameters");
  args.command = cmd;
  cmd->add_option("model", args.model, "model directory or .gguf file")
      ->required();
  cmd->add_option("--target", args.target,
                  "reference | cpu-x86_64 | cpu-arm64 (compiled for this CPU)")
      ->capture_default_str();
  cmd->add_option("--tokens", args.tokens,
                  "ids, one sequence per line, space-separated")
      ->required();
  cmd->add_option("--mask", args.mask,
                  "0/1 per token; 0 at i removes token i as a target");
  cmd->add_option("--adapter", args.adapter,
                  "start from a PEFT adapter directory");
  addLoRAOptions(cmd, args.lora, args.targets);
  cmd->add_option("--steps", args.steps, "optimizer steps")
      ->capture_default_str();
  cmd->add_option("--lr", args.lr, "learning rate")->capture_default_str();
  cmd->add_option("--grad-accum", args.gradAccum,
                  "split the batch into K micro-batches; one update")
      ->capture_default_str();
  cmd->add_option("--recompute-layers", args.recomputeLayers,
                  "recompute the activations of the first N decoder layers "
                  "in the backward instead of keeping them (-1: all)")
      ->capture_default_str();
  addOptimizerOptions(cmd, args.optimizer, args.weightDecay,
                      /*showDecayDefault=*/false,
                      "weight decay (default: 0.01 for adamw, 0 for sgd)");
  cmd->add_option("--seed", args.seed, "seed for LoRA initialization")
      ->capture_default_str();
  cmd->add_option("--out", args.out, "output .safetensors")->required();
}

void addLoRAOptions(CLI::App *cmd, LoRAOptions &lora, std::string &targets) {
  cmd->add_option("--lora-rank", lora.rank, "LoRA rank")->capture_default_str();
  cmd->add_option("--lora-alpha", lora.alpha, "LoRA alpha")
      ->capture_default_str();
  cmd->add_option("--lora-targets", targets,
                  "q,k,v,o,gate,up,down | attn | ffn | all")
      ->capture_default_str();
}

void addOptimizerOptions(CLI::App *cmd, OptimizerOptions &optimizer,
                         double &weightDecay, bool showDecayDefault,
                         const std::string &decayHelp) {
  cmd->add_option("--trainable", optimizer.trainable, "lora | lora+norm | all")
      ->capture_default_str();
  cmd->add_option("--optimizer", optimizer.optimizer, "adamw | sgd")
      ->capture_default_str();
  auto *decay = cmd->add_option("--weight-decay", weightDecay, decayHelp);
  if (showDecayDefault)
    decay->capture_default_str();
  cmd->add_option("--momentum", optimizer.momentum, "SGD momentum")
      ->capture_default_str();
  cmd->add_option("--max-grad-norm", optimizer.maxGradNorm,
                  "clip the global gradient norm (0: off)")
      ->capture_default_str();
}

/// Targets `bitloom step` can run on today; compiled targets join as they
/// arrive.
void requireReferenceTarget(const std::string &target) {
  if (target != "reference")
    throw FormatError("", "--target",
                      "'" + target + "' is not available yet (reference)");
}

void requireExecutableTarget(const std::string &target) {
  if (target != "reference" && target != "cpu-x86_64" && target != "cpu-arm64")
    throw FormatError("", "--target",
                      "'" + target +
                          "' is not available yet (reference, cpu-x86_64, "
                          "cpu-arm64)");
}

int runStep(StepArgs &args) {
  requireExecutableTarget(args.target);
  if (args.steps < 1)
    throw FormatError("", "--steps", "must be at least 1");
  if (args.recomputeLayers < -1)
    throw FormatError("", "--recompute-layers",
                      "must be -1 (all) or at least 0");
  std::unique_ptr<Model> model = Model::open(args.model);
  std::vector<std::vector<int32_t>> ids = readIntRows(args.tokens);
  std::vector<std::vector<int32_t>> mask;
  if (!args.mask.empty()) {
    mask = readIntRows(args.mask);
    if (mask.size() != ids.size() || mask.front().size() != ids.front().size())
      throw FormatError(args.mask, "", "shape differs from --tokens");
  }
  for (const auto &row : ids)
    for (int32_t id : row)
      if (id < 0 || id >= model->config().vocabSize)
        throw FormatError(args.tokens, "",
                          "token id " + std::to_string(id) +
                              " is outside the vocabulary (" +
                              std::to_string(model->config().vocabSize) + ")");
  if (args.gradAccum < 1 || int64_t(ids.size()) % args.gradAccum != 0)
    throw FormatError("", "--grad-accum",
                      "must divide the number of sequences (" +
                          std::to_string(ids.size()) + ")");
  std::vector<Batch> microBatches;
  size_t rowsPerMicro = ids.size() / size_t(args.gradAccum);
  for (size_t r = 0; r < ids.size(); r += rowsPerMicro) {
    std::vector<std::vector<int32_t>> microIds(ids.begin() + r,
                                               ids.begin() + r + rowsPerMicro);
    std::vector<std::vector<int32_t>> microMask;
    if (!mask.empty())
      microMask.assign(mask.begin() + r, mask.begin() + r + rowsPerMicro);
    microBatches.push_back(
        makeBatch(microIds, mask.empty() ? nullptr : &microMask));
  }

  LoRAOptions lora = args.lora;
  std::map<std::string, HostTensor> initial;
  if (!args.adapter.empty()) {
    Adapter adapter = loadPeftAdapter(args.adapter);
    lora = adapter.options;
    initial = std::move(adapter.tensors);
  } else if (args.optimizer.trainable == "lora" || lora.rank > 0) {
    lora.targets = parseLoRATargets(args.targets);
  }
  OptimizerOptions optimizer = args.optimizer;
  // torch's defaults: AdamW decays by 0.01, SGD not at all.
  optimizer.weightDecay = args.weightDecay >= 0.0        ? args.weightDecay
                          : optimizer.optimizer == "sgd" ? 0.0
                                                         : 0.01;

  std::unique_ptr<TrainingSession> sessionPtr;
  try {
    ExecutionTarget target{args.target, int64_t(rowsPerMicro),
                           int64_t(ids.front().size())};
    if (args.gradAccum > 1)
      target.entries = {"accumulate_step", "apply_step"};
    target.recomputeLayers = args.recomputeLayers;
    sessionPtr = std::make_unique<TrainingSession>(*model, lora, optimizer,
                                                   initial, args.seed, target);
  } catch (const FormatError &e) {
    if (args.adapter.empty())
      throw;
    // Adapter tensors that don't fit: name the file they came from.
    throw FormatError(args.adapter + "/adapter_model.safetensors", "",
                      e.what());
  }
  TrainingSession &session = *sessionPtr;
  std::vector<float> losses;
  std::map<std::string, HostTensor> firstGrads;
  for (int64_t s = 0; s < args.steps; ++s) {
    TrainingSession::StepResult r =
        session.stepAccumulated(microBatches, float(args.lr));
    losses.push_back(r.loss);
    if (s == 0)
      firstGrads = std::move(r.grads);
    std::printf("step %lld  loss %.6f  grad_norm %.6f\n", (long long)s + 1,
                r.loss, r.gradNorm);
  }

  std::vector<SafetensorsEntry> entries;
  entries.push_back({"loss",
                     DType::F32,
                     {int64_t(losses.size())},
                     losses.data(),
                     losses.size() * sizeof(float)});
  for (const auto &[name, t] : firstGrads)
    entries.push_back({name, DType::F32, t.shape, t.data.data(),
                       t.data.size() * sizeof(float)});
  for (const auto &[name, t] : session.parameters())
    entries.push_back({name, DType::F32, t.shape, t.data.data(),
                       t.data.size() * sizeof(float)});
  writeSafetensors(args.out, entries);
  std::printf("wrote %s\n", args.out.c_str());
  return 0;
}

} // namespace bitloom

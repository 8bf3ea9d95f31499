//===- Commands.h - bitloom subcommands defined outside main.cpp -*- C++
//-*-===//
#ifndef BITLOOM_TOOLS_BITLOOM_COMMANDS_H
#define BITLOOM_TOOLS_BITLOOM_COMMANDS_H

#include "ImportModel.h"
#include "Training.h"

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

namespace bitloom {

/// --lora-rank, --lora-alpha, --lora-targets: shared by every command that
/// builds adapters.
void addLoRAOptions(CLI::App *cmd, LoRAOptions &lora, std::string &targets);
/// --trainable, --optimizer, --weight-decay (into `weightDecay`; its default
/// is shown when `showDecayDefault`), --momentum, --max-grad-norm.
void addOptimizerOptions(CLI::App *cmd, OptimizerOptions &optimizer,
                         double &weightDecay, bool showDecayDefault,
                         const std::string &decayHelp = "weight decay");

struct StepArgs {
  CLI::App *command = nullptr;
  std::string model, target = "reference", tokens, mask, adapter, out;
  LoRAOptions lora{/*rank=*/8, /*alpha=*/8.0, /*dropout=*/0.0, {}};
  std::string targets = "all";
  int64_t steps = 1, gradAccum = 1;
  int64_t recomputeLayers = 0; // -loom-recompute's layers
  double lr = 1e-3;
  double weightDecay = -1.0; // < 0: the optimizer's default
  OptimizerOptions optimizer;
  uint64_t seed = 0;
};
void addStepCommand(CLI::App &app, StepArgs &args);
int runStep(StepArgs &args);
void requireReferenceTarget(const std::string &target);
/// reference, or a CPU target whose code `bitloom` compiles and runs itself.
void requireExecutableTarget(const std::string &target);

struct TrainArgs {
  CLI::App *command = nullptr;
  std::string model, target = "reference", data, out, metrics;
  int64_t seqLen = 64, batch = 4, steps = 0, epochs = 1, warmup = 0,
          gradAccum = 1;
  double lr = 2e-3;
  std::string schedule = "constant";
  LoRAOptions lora{/*rank=*/8, /*alpha=*/16.0, /*dropout=*/0.0, {}};
  std::string targets = "all";
  OptimizerOptions optimizer;
  uint64_t seed = 0;
};
void addTrainCommand(CLI::App &app, TrainArgs &args);
int runTrain(TrainArgs &args);

struct GenerateArgs {
  CLI::App *command = nullptr;
  std::string model, target = "reference", adapter, prompt;
  int64_t maxNewTokens = 32;
  double temperature = 0.0, topP = 1.0;
  uint64_t seed = 0;
  bool printIds = false;
};
void addGenerateCommand(CLI::App &app, GenerateArgs &args);
int runGenerate(GenerateArgs &args);

struct CompileArgs {
  CLI::App *command = nullptr;
  std::string model, target = "reference", output, dumpPhases;
  std::string compileTo = "generate";
  std::string cpu;               // CPU targets: native, generic or a name
  int64_t seqLen = 0, batch = 0; // CPU targets compile one shape
  LoRAOptions lora{/*rank=*/8, /*alpha=*/8.0, /*dropout=*/0.0, {}};
  std::string targets = "all";
  OptimizerOptions optimizer;
  int64_t maxTokens = 256;
  std::string memoryBudget;       // CPU targets: "1.5GiB", "800MiB", bytes
  std::string storageBufferRange; // Vulkan: largest binding, "64MiB", bytes
  int64_t recomputeLayers = -2;   // -2: chosen for the budget; -1: all
  bool planOnly = false;
};
void addCompileCommand(CLI::App &app, CompileArgs &args);
int runCompile(CompileArgs &args);

class Tokenizer;
/// The tokenizer of a model: tokenizer.json beside a HF checkpoint, or the
/// vocabulary inside a GGUF file.
std::unique_ptr<Tokenizer> openTokenizer(const std::string &modelPath);

} // namespace bitloom

#endif // BITLOOM_TOOLS_BITLOOM_COMMANDS_H

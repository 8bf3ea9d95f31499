//===- Training.h - Training steps on the reference executor ----*- C++ -*-===//
//
// What `bitloom step` and `bitloom train` share: batches from files, LoRA
// adapters in PEFT format (load, initialize, save), and a session that runs
// the compiled @train_step / @eval_step of a module step after step.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TOOLS_BITLOOM_TRAINING_H
#define BITLOOM_TOOLS_BITLOOM_TRAINING_H

#include "ImportModel.h"
#include "codegen/reference/Interpreter.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bitloom {

using reference::HostTensor;

/// One batch as @train_step takes it, built the way Hugging Face's causal-LM
/// loss sees `input_ids` + `labels`: labels[t] = ids[t + 1]; a 0 in the
/// user's mask at position i removes token i as a prediction target.
struct Batch {
  HostTensor tokens, positions, labels, lossMask;
  int64_t batchSize() const { return tokens.shape[0]; }
  int64_t seqLen() const { return tokens.shape[1]; }
};

Batch makeBatch(const std::vector<std::vector<int32_t>> &ids,
                const std::vector<std::vector<int32_t>> *mask);

/// Reads one sequence per line, integers separated by spaces. All lines must
/// have the same length. Errors name the file and line.
std::vector<std::vector<int32_t>> readIntRows(const std::string &path);

/// A LoRA adapter as PEFT stores it.
struct Adapter {
  LoRAOptions options;
  std::map<std::string, HostTensor> tensors; // PEFT names
};

/// Reads a PEFT adapter directory or a llama.cpp GGUF LoRA file (the
/// runtime trainer's importAdapter); tensors under PEFT names, which GGUF
/// base models share through their Hugging Face names. With `model`, shapes
/// are validated against it.
Adapter loadPeftAdapter(const std::string &path,
                        const ModelConfig *model = nullptr);

/// Writes `dir`/adapter_model.safetensors and adapter_config.json (each
/// atomically), validated against `model`.
void savePeftAdapter(const std::string &dir, const LoRAOptions &options,
                     const std::map<std::string, HostTensor> &tensors,
                     const std::string &baseModel, const ModelConfig &model);

struct OptimizerOptions {
  std::string trainable = "lora"; // lora | lora+norm | all
  std::string optimizer = "adamw";
  double weightDecay = 0.01;
  double momentum = 0.0;
  double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8;
  double maxGradNorm = 0.0;
};

/// Where a session runs: the reference executor, or native code compiled for
/// this CPU ("cpu-x86_64" / "cpu-arm64") at one batch shape.
struct ExecutionTarget {
  std::string name = "reference";
  int64_t batch = 0, seqLen = 0; // native targets only
  /// Native targets compile only the entry points the command runs.
  std::vector<std::string> entries = {"train_step"};
  /// Decoder layers whose activations the backward recomputes
  /// (-loom-recompute; -1: all, 0: none).
  int64_t recomputeLayers = 0;
};

/// Builds train_step/eval_step for a model and runs them.
class TrainingSession {
public:
  /// `initial` gives starting values for trainable tensors by name; LoRA
  /// tensors not given are initialized as PEFT does (A kaiming-uniform with
  /// a = sqrt(5) from `seed`, B zero); other trainables start from the
  /// model's weights.
  TrainingSession(const Model &model, const LoRAOptions &lora,
                  const OptimizerOptions &optimizer,
                  const std::map<std::string, HostTensor> &initial,
                  uint64_t seed, const ExecutionTarget &target = {});
  ~TrainingSession();

  struct StepResult {
    float loss = 0, gradNorm = 0;
    std::map<std::string, HostTensor> grads; // "<name>.grad"
  };
  /// One optimizer step on `batch` with learning rate `lr`.
  StepResult step(const Batch &batch, float lr);
  /// One optimizer step over several micro-batches: their gradients are
  /// averaged (each scaled by 1 / count) before one clipped update, as
  /// gradient accumulation does. The loss is the micro-batches' mean.
  StepResult stepAccumulated(const std::vector<Batch> &microBatches, float lr);
  /// Mean loss and number of targets, no update.
  std::pair<float, float> evaluate(const Batch &batch);

  const std::vector<std::string> &trainableNames() const { return names_; }
  const std::map<std::string, HostTensor> &parameters() const {
    return params_;
  }
  int64_t stepCount() const { return steps_; }

private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
  std::vector<std::string> names_;
  std::map<std::string, HostTensor> params_, state_;
  std::vector<std::string> stateNames_;
  int64_t steps_ = 0;
};

} // namespace bitloom

#endif // BITLOOM_TOOLS_BITLOOM_TRAINING_H

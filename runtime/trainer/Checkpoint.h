//===- Checkpoint.h - Crash-safe training checkpoints -----------*- C++ -*-===//
//
// A checkpoint is a directory:
//
//   state.safetensors  adapter tensors ("adapter/<PEFT name>") and optimizer
//                      state ("optimizer/<name>"), float32; its metadata holds
//                      the step, data position and identity too
//   manifest.json      format/version, step, data position, identity, free
//                      trainer state (LR schedule, RNG, ...), and every
//                      file's size and FNV-1a 64 hash
//
// Saving never leaves a state where neither the previous nor the new
// checkpoint is complete: the new one is written into DIR.tmp-XXXXXX (files
// fsync'ed, then the directory), the previous one is renamed to
// DIR.old-XXXXXX, the new one renamed to DIR (parent fsync'ed after each
// rename), and the old one deleted. recoverCheckpoint() - run by save and
// load - finishes or undoes an interrupted save from what is on disk: when
// DIR is missing, the complete candidate with the highest step among
// DIR.tmp-* / DIR.old-* becomes DIR; leftovers are removed.
//
// The identity block (artifact hash, model hash, LoRA and optimizer
// configuration, free extra fields) makes loading refuse a checkpoint that
// belongs to another run, naming each field that differs.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TRAINER_CHECKPOINT_H
#define BITLOOM_TRAINER_CHECKPOINT_H

#include "trainer/Adapter.h"
#include "trainer/Dataset.h"

#include <nlohmann/json.hpp>

#include <exception>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace bitloom::trainer {

/// What makes optimizer state meaningful; the learning rate and its schedule
/// may change on resume (put them in `extra` of the identity to pin them).
struct OptimizerConfig {
  std::string name = "adamw";
  double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8, weightDecay = 0.01;
  double momentum = 0.0; // sgd
};

struct CheckpointIdentity {
  std::string artifactHash; // the .blm the run executes
  std::string modelHash;    // the base weights
  LoraConfig lora;          // rank, alpha, dropout, targets (not baseModel)
  OptimizerConfig optimizer;
  std::map<std::string, std::string> extra; // seq_len, batch size, dataset...
  /// Flattened "key" -> canonical value text, in a fixed order.
  std::vector<std::pair<std::string, std::string>> fields() const;
  nlohmann::json toJson() const;
  /// FormatError(source, "identity...", ...) on a malformed block.
  static CheckpointIdentity fromJson(const nlohmann::json &j,
                                     const std::string &source);
};

/// "" when equal; else "lora.rank: checkpoint 8, now 16; model_hash:
/// checkpoint 1a2b..., now 3c4d..." listing every differing field.
std::string identityDifference(const CheckpointIdentity &saved,
                               const CheckpointIdentity &current);

struct Checkpoint {
  int64_t step = 0; // optimizer steps done
  DataPosition data;
  CheckpointIdentity identity;
  TensorMap adapter;   // PEFT names
  TensorMap optimizer; // e.g. "<PEFT name>.exp_avg" / ".exp_avg_sq"
  nlohmann::json state = nlohmann::json::object(); // LR schedule, RNG, ...
};

/// Writes `c` to `dir` as described above. Errors are FormatError(dir, ...);
/// on an error the previous checkpoint is left (or put back) in place.
void saveCheckpoint(const std::string &dir, const Checkpoint &c);

/// Loads `dir` after recoverCheckpoint(), verifying sizes and hashes, the
/// safetensors copy of the identity against the manifest's, and - when
/// `expected` is given - that the identity equals it: FormatError(dir +
/// "/manifest.json", "identity", "checkpoint belongs to another run: " +
/// identityDifference()).
Checkpoint loadCheckpoint(const std::string &dir,
                          const CheckpointIdentity *expected = nullptr);

/// True when `dir` (after recovery) holds a checkpoint.
bool checkpointExists(const std::string &dir);

/// Completes or rolls back an interrupted saveCheckpoint() next to `dir`;
/// returns what it did ("" when nothing was left over).
std::string recoverCheckpoint(const std::string &dir);

namespace faults {
/// Thrown by a fail hook to simulate the process dying at a point: the
/// saver neither cleans up nor rolls back, as after a real crash.
struct SimulatedCrash : std::exception {
  const char *what() const noexcept override { return "simulated crash"; }
};
/// Called with each point name saveCheckpoint() passes: "tmp-created",
/// "state-written", "files-written", "old-moved", "new-in-place", "done".
using FailHook = std::function<void(const std::string &point)>;
void setCheckpointFailHook(FailHook hook);
} // namespace faults

} // namespace bitloom::trainer

#endif // BITLOOM_TRAINER_CHECKPOINT_H

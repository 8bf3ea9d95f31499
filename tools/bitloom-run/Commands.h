//===- Commands.h - bitloom-run subcommands ---------------------*- C++ -*-===//
#ifndef BITLOOM_RUN_COMMANDS_H
#define BITLOOM_RUN_COMMANDS_H

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
} // namespace CLI

namespace bitloom::run {

struct TrainArgs {
  std::string artifact, data, out = "adapter", format = "auto";
  int64_t steps = 0, epochs = 1, warmup = 0, gradAccum = 1;
  double lr = 2e-3, valSplit = 0.0;
  std::string schedule = "constant";
  uint64_t seed = 0;
  int64_t saveEvery = 0, stopAfter = 0, logEvery = 10;
  std::string resume, adapter, progress = "auto";
  bool exportGguf = false;
  int threads = 0;
  int64_t device = -1; ///< --device; -1: not given
};

struct EvalArgs {
  std::string artifact, data, adapter, format = "auto";
  bool json = false;
  int threads = 0;
  int64_t device = -1; ///< --device; -1: not given
};

struct BenchArgs {
  std::string artifact;
  std::vector<std::string> entries;
  int64_t steps = 10, warmup = 2;
  /// --profile-kernels [N]: the N most expensive ops and dispatches; 0: no
  /// profile.
  int64_t profileTop = 0;
  /// Profiled calls after the timed ones (--profile-steps).
  int64_t profileSteps = 3;
  uint64_t seed = 0;
  bool json = false;
  int threads = 0;
  int64_t device = -1; ///< --device; -1: not given
};

struct GenerateArgs {
  std::string artifact, prompt, adapter;
  int64_t maxNewTokens = 64;
  double temperature = 0.0, topP = 1.0;
  uint64_t seed = 0;
  bool chat = false, printIds = false;
  int threads = 0;
  int64_t device = -1; ///< --device; -1: not given
};

struct DevicesArgs {
  bool json = false;
  std::string profile;
};

void addTrainCommand(CLI::App &app, TrainArgs &args);
void addEvalCommand(CLI::App &app, EvalArgs &args);
void addBenchCommand(CLI::App &app, BenchArgs &args);
void addGenerateCommand(CLI::App &app, GenerateArgs &args);
void addDevicesCommand(CLI::App &app, DevicesArgs &args);
int runTrain(const TrainArgs &args);
int runEval(const EvalArgs &args);
int runBench(const BenchArgs &args);
int runGenerate(const GenerateArgs &args);
int runDevices(const DevicesArgs &args);

/// --threads: sets the micro-kernels' thread count (0: their default) and
/// returns the count in effect.
int applyThreads(int threads);

/// --device N: the Vulkan device a vulkan-* artifact runs on.
void addDeviceOption(CLI::App &cmd, int64_t &device);

} // namespace bitloom::run

#endif // BITLOOM_RUN_COMMANDS_H

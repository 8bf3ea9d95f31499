//===- Commands.h - bitloom subcommands defined outside main.cpp -*- C++ -*-===//
#ifndef BITLOOM_TOOLS_BITLOOM_COMMANDS_H
#define BITLOOM_TOOLS_BITLOOM_COMMANDS_H

#include "ImportModel.h"
#include "Training.h"

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

namespace bitloom {

struct StepArgs {
  CLI::App *command = nullptr;
  std::string model, target = "reference", tokens, mask, adapter, out;
  LoRAOptions lora{/*rank=*/8, /*alpha=*/8.0, /*dropout=*/0.0, {}};
  std::string targets = "all";
  int64_t steps = 1;
  double lr = 1e-3;
  double weightDecay = -1.0; // < 0: the optimizer's default
  OptimizerOptions optimizer;
  uint64_t seed = 0;
};
void addStepCommand(CLI::App &app, StepArgs &args);
int runStep(StepArgs &args);
void requireReferenceTarget(const std::string &target);

} // namespace bitloom

#endif // BITLOOM_TOOLS_BITLOOM_COMMANDS_H

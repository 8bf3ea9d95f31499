//===- main.cpp - bitloom-run: the device runtime's command line ----------===//
//
// The device side. Links the runtime only (no MLIR/LLVM): opens a .blm
// (weights stay in the mapping), loads its native code (CPU artifacts) or
// opens its Vulkan device (vulkan-* artifacts), and runs its entry points.
//
//   bitloom-run train model.blm --data FILE [--steps N | --epochs E] ...
//   bitloom-run eval  model.blm --data FILE [--adapter PATH] [--json]
//   bitloom-run bench model.blm [--entry train_step] [--steps N] [--json]
//   bitloom-run generate model.blm --prompt TEXT [--adapter PATH] [--chat]
//   bitloom-run devices [--json] [--profile NAME]
//
// train, eval, bench and generate take --device N for vulkan-* artifacts.
//
// Every error in user input prints one line "error: <file>: <field>: <what>"
// and exits with status 1. docs/runtime.md describes the commands.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "formats/Error.h"

#include <CLI/CLI.hpp>

#include <cstdio>

#ifdef BITLOOM_RUN_HAVE_UKERNELS
#include "ukernels/Ukernels.h"
#endif

namespace bitloom::run {

int applyThreads(int threads) {
  if (threads < 0)
    throw FormatError("", "--threads", "must not be negative");
#ifdef BITLOOM_RUN_HAVE_UKERNELS
  if (threads > 0)
    bitloom_uk_set_threads(threads);
  return int(bitloom_uk_threads());
#else
  if (threads > 1)
    throw FormatError("", "--threads",
                      "this bitloom-run was built without the micro-kernel "
                      "library; only 1 thread");
  return 1;
#endif
}

void addDeviceOption(CLI::App &cmd, int64_t &device) {
  cmd.add_option("--device", device,
                 "Vulkan device of a vulkan-* artifact (default 0; "
                 "`bitloom-run devices` lists them)");
}

} // namespace bitloom::run

int main(int argc, char **argv) {
  using namespace bitloom::run;
  CLI::App app{"bitloom-run: run a compiled bitloom artifact (train, eval, "
               "bench, generate, devices)"};
  app.require_subcommand(1);
  TrainArgs train;
  EvalArgs eval;
  BenchArgs bench;
  GenerateArgs generate;
  DevicesArgs devices;
  addTrainCommand(app, train);
  addEvalCommand(app, eval);
  addBenchCommand(app, bench);
  addGenerateCommand(app, generate);
  addDevicesCommand(app, devices);
  CLI11_PARSE(app, argc, argv);
  try {
    if (app.got_subcommand("train"))
      return runTrain(train);
    if (app.got_subcommand("eval"))
      return runEval(eval);
    if (app.got_subcommand("bench"))
      return runBench(bench);
    if (app.got_subcommand("generate"))
      return runGenerate(generate);
    if (app.got_subcommand("devices"))
      return runDevices(devices);
  } catch (const std::exception &e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 1;
}

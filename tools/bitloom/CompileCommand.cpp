//===- CompileCommand.cpp - `bitloom compile`: the phase pipeline ---------===//
//
// Runs the compiler's phases in order and writes the result. Each phase can
// be the last one (--compile-to) and every phase's output can be dumped
// (--dump-phases DIR), so anyone can see where a decision was made:
//
//   import    @forward from the model files (with LoRA adapters)
//   autodiff  + @train_step, @eval_step, @accumulate_step, @apply_step
//   generate  + @generate_step (KV-cached forward for sampling)
//
// The reference target's "artifact" is the final module: the reference
// executor runs it directly. Native targets will add lowering phases.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "formats/Error.h"
#include "formats/MappedFile.h"
#include "passes/Passes.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>
#include <filesystem>

namespace fs = std::filesystem;

namespace bitloom {

static const char *const kPhases[] = {"import", "autodiff", "generate"};

void addCompileCommand(CLI::App &app, CompileArgs &args) {
  auto *cmd = app.add_subcommand(
      "compile", "compile a model's training step for a target");
  args.command = cmd;
  cmd->add_option("model", args.model, "model directory or .gguf file")
      ->required();
  cmd->add_option("--target", args.target, "reference")->capture_default_str();
  cmd->add_option("--lora-rank", args.lora.rank, "LoRA rank")
      ->capture_default_str();
  cmd->add_option("--lora-alpha", args.lora.alpha, "LoRA alpha")
      ->capture_default_str();
  cmd->add_option("--lora-targets", args.targets,
                  "q,k,v,o,gate,up,down | attn | ffn | all")
      ->capture_default_str();
  cmd->add_option("--trainable", args.optimizer.trainable,
                  "lora | lora+norm | all")
      ->capture_default_str();
  cmd->add_option("--optimizer", args.optimizer.optimizer, "adamw | sgd")
      ->capture_default_str();
  cmd->add_option("--weight-decay", args.optimizer.weightDecay, "weight decay")
      ->capture_default_str();
  cmd->add_option("--momentum", args.optimizer.momentum, "SGD momentum")
      ->capture_default_str();
  cmd->add_option("--max-grad-norm", args.optimizer.maxGradNorm,
                  "clip the global gradient norm (0: off)")
      ->capture_default_str();
  cmd->add_option("--max-tokens", args.maxTokens,
                  "KV cache length of @generate_step")
      ->capture_default_str();
  cmd->add_option("--compile-to", args.compileTo,
                  "last phase: import | autodiff | generate")
      ->capture_default_str();
  cmd->add_option("--dump-phases", args.dumpPhases,
                  "write each phase's IR to DIR/<n>-<phase>.mlir");
  cmd->add_option("-o,--output", args.output, "output file")->required();
}

static std::string printModule(mlir::ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  return text;
}

int runCompile(CompileArgs &args) {
  requireReferenceTarget(args.target);
  int last = -1;
  for (int i = 0; i < 3; ++i)
    if (args.compileTo == kPhases[i])
      last = i;
  if (last < 0)
    throw FormatError("", "--compile-to",
                      "unknown phase '" + args.compileTo +
                          "' (import, autodiff or generate)");
  std::unique_ptr<Model> model = Model::open(args.model);
  LoRAOptions lora = args.lora;
  if (lora.rank > 0)
    lora.targets = parseLoRATargets(args.targets);

  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module = importModel(context, *model, lora);
  if (!args.dumpPhases.empty())
    fs::create_directories(args.dumpPhases);
  auto dump = [&](int phase) {
    if (args.dumpPhases.empty())
      return;
    std::string text = printModule(*module);
    std::string path =
        (fs::path(args.dumpPhases) /
         (std::to_string(phase) + "-" + kPhases[phase] + ".mlir"))
            .string();
    writeFileAtomically(path, text.data(), text.size());
  };
  for (int phase = 0; phase <= last; ++phase) {
    mlir::PassManager pm(&context);
    if (phase == 0) {
      pm.addPass(createLoomVerifyModel());
    } else if (phase == 1) {
      LoomAutodiffOptions options;
      options.trainable = args.optimizer.trainable;
      options.optimizer = args.optimizer.optimizer;
      options.weightDecay = args.optimizer.weightDecay;
      options.momentum = args.optimizer.momentum;
      options.maxGradNorm = args.optimizer.maxGradNorm;
      pm.addPass(createLoomAutodiff(options));
    } else {
      LoomBuildGenerateOptions options;
      options.maxTokens = args.maxTokens;
      pm.addPass(createLoomBuildGenerate(options));
    }
    if (mlir::failed(pm.run(*module)))
      throw FormatError(args.model, kPhases[phase],
                        "the phase failed (see the diagnostics above)");
    dump(phase);
  }
  std::string text = printModule(*module);
  writeFileAtomically(args.output, text.data(), text.size());
  std::printf("compiled %s for %s (through %s) to %s\n", args.model.c_str(),
              args.target.c_str(), kPhases[last], args.output.c_str());
  return 0;
}

} // namespace bitloom

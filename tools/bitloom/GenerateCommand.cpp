//===- GenerateCommand.cpp - `bitloom generate` on the reference target ---===//
//
// Runs @generate_step (a KV-cached forward built by -loom-build-generate):
// once over the prompt, then once per new token, sampling on the host
// (greedy, or temperature with nucleus/top-p).
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Training.h"

#include "formats/Error.h"
#include "passes/Passes.h"
#include "tokenizer/Tokenizer.h"
#include "trainer/Sampling.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

namespace bitloom {

void addGenerateCommand(CLI::App &app, GenerateArgs &args) {
  auto *cmd = app.add_subcommand(
      "generate", "generate text with an optional LoRA adapter (reference)");
  args.command = cmd;
  cmd->add_option("model", args.model, "model directory or .gguf file")
      ->required();
  cmd->add_option("--target", args.target, "reference")->capture_default_str();
  cmd->add_option("--adapter", args.adapter, "PEFT adapter directory");
  cmd->add_option("--prompt", args.prompt, "prompt text")->required();
  cmd->add_option("--max-new-tokens", args.maxNewTokens, "tokens to generate")
      ->capture_default_str();
  cmd->add_option("--temperature", args.temperature, "0: greedy")
      ->capture_default_str();
  cmd->add_option("--top-p", args.topP, "nucleus sampling mass")
      ->capture_default_str();
  cmd->add_option("--seed", args.seed, "sampling seed")->capture_default_str();
  cmd->add_flag("--ids", args.printIds, "also print the generated ids");
}

int runGenerate(GenerateArgs &args) {
  requireReferenceTarget(args.target);
  if (args.maxNewTokens < 1)
    throw FormatError("", "--max-new-tokens", "must be at least 1");
  if (args.topP <= 0.0 || args.topP > 1.0)
    throw FormatError("", "--top-p", "must be in (0, 1]");
  std::unique_ptr<Model> model = Model::open(args.model);
  std::unique_ptr<Tokenizer> tokenizer = openTokenizer(args.model);
  LoRAOptions lora;
  lora.rank = 0;
  std::map<std::string, HostTensor> adapterTensors;
  if (!args.adapter.empty()) {
    Adapter adapter = loadPeftAdapter(args.adapter);
    lora = adapter.options;
    adapterTensors = std::move(adapter.tensors);
  }
  std::vector<int32_t> prompt = tokenizer->encode(args.prompt, true);
  if (prompt.empty())
    throw FormatError("", "--prompt", "tokenizes to nothing");
  int64_t maxTokens = int64_t(prompt.size()) + args.maxNewTokens;

  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module = importModel(context, *model, lora);
  mlir::PassManager pm(&context);
  pm.addPass(createLoomVerifyModel());
  LoomBuildGenerateOptions options;
  options.maxTokens = maxTokens;
  pm.addPass(createLoomBuildGenerate(options));
  if (mlir::failed(pm.run(*module)))
    throw FormatError(args.model, "", "could not build the generation step");
  reference::Interpreter interpreter(*module, *model);

  std::map<std::string, HostTensor> state;
  for (const std::string &name : interpreter.argumentNames("generate_step")) {
    if (name == "tokens" || name == "positions")
      continue;
    if (name.rfind("key_cache.", 0) == 0 ||
        name.rfind("value_cache.", 0) == 0) {
      const ModelConfig &c = model->config();
      state[name] =
          HostTensor::floats({1, maxTokens, c.numKvHeads * c.headDim});
      continue;
    }
    auto it = adapterTensors.find(name);
    if (it == adapterTensors.end())
      throw FormatError(args.adapter, name, "missing from the adapter");
    state[name] = it->second;
  }

  std::mt19937_64 rng(args.seed);
  std::vector<int32_t> generated, chunk = prompt;
  int64_t position = 0;
  int64_t vocab = model->config().vocabSize;
  for (int64_t i = 0; i < args.maxNewTokens; ++i) {
    std::vector<int32_t> positions(chunk.size());
    std::iota(positions.begin(), positions.end(), int32_t(position));
    std::map<std::string, HostTensor> inputs = state;
    inputs["tokens"] = HostTensor::int32s({1, int64_t(chunk.size())}, chunk);
    inputs["positions"] =
        HostTensor::int32s({1, int64_t(chunk.size())}, positions);
    std::map<std::string, HostTensor> out =
        interpreter.run("generate_step", inputs);
    for (auto &[name, value] : state)
      if (out.count(name))
        value = std::move(out.at(name));
    const HostTensor &logits = out.at("logits");
    const float *last = logits.data.data() + (chunk.size() - 1) * vocab;
    int32_t next =
        trainer::sampleToken(last, vocab, args.temperature, args.topP, rng);
    position += int64_t(chunk.size());
    generated.push_back(next);
    if (tokenizer->eosId() && next == *tokenizer->eosId())
      break;
    chunk = {next};
  }
  std::printf("%s%s\n", args.prompt.c_str(),
              tokenizer->decode(generated, /*skipSpecial=*/true).c_str());
  if (args.printIds) {
    for (size_t i = 0; i < generated.size(); ++i)
      std::printf("%s%d", i ? " " : "", generated[i]);
    std::printf("\n");
  }
  return 0;
}

} // namespace bitloom

//===- main.cpp - bitloom-run: train with a compiled .blm
//------------------===//
//
// The device side. Links the runtime only (no MLIR/LLVM): opens the
// artifact (weights stay in the mapping), loads its native code, and runs
// its entry points from the data pipeline, saving a PEFT adapter.
//
//   bitloom-run train model.blm --data FILE [--steps N | --epochs E] ...
//
//===----------------------------------------------------------------------===//
#include "artifact/Artifact.h"
#include "formats/Error.h"
#include "hal/cpu/NativeLibrary.h"
#include "model/Model.h"
#include "tokenizer/Tokenizer.h"
#include "trainer/Adapter.h"
#include "trainer/ChatTemplate.h"
#include "trainer/Dataset.h"
#include "trainer/LearningRate.h"
#include "trainer/Metrics.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>

using namespace bitloom;
namespace fs = std::filesystem;

namespace {

struct TrainArgs {
  std::string artifact, data, out = "adapter", format = "auto";
  int64_t steps = 0, epochs = 1, warmup = 0;
  double lr = 2e-3;
  std::string schedule = "constant";
  uint64_t seed = 0;
};

/// A buffer for one argument or result of an entry point.
struct Buffer {
  std::string name;
  blm::Role role;
  bool isInt = false;
  std::vector<float> f;
  std::vector<int32_t> i;
  void *data() { return isInt ? (void *)i.data() : (void *)f.data(); }
};

std::string metadata(const blm::Artifact &artifact, const std::string &key) {
  for (auto &[k, v] : artifact.metadata())
    if (k == key)
      return v;
  return "";
}

int runTrain(const TrainArgs &args) {
  std::unique_ptr<blm::Artifact> artifact = blm::Artifact::open(args.artifact);
  const blm::fb::EntryPoint *entry = artifact->findEntryPoint("train_step");
  if (!entry || !entry->dispatches() || entry->dispatches()->size() != 1)
    throw FormatError(args.artifact, "train_step",
                      "no single-dispatch train_step entry point");
  blm::CompileOptions shape = artifact->compileOptions();
  blm::ModelConfig mc = artifact->modelConfig();

  std::string tokenizerJson = metadata(*artifact, "tokenizer.json");
  if (tokenizerJson.empty())
    throw FormatError(args.artifact, "tokenizer.json",
                      "the artifact carries no tokenizer");
  std::unique_ptr<Tokenizer> tokenizer =
      Tokenizer::fromHfJsonString(tokenizerJson, args.artifact);
  std::optional<trainer::ChatTemplate> chat;
  std::string chatTemplate = metadata(*artifact, "chat_template");
  if (!chatTemplate.empty())
    chat = trainer::ChatTemplate::fromSource(
        chatTemplate, metadata(*artifact, "bos_token"),
        metadata(*artifact, "eos_token"), args.artifact, "chat_template");
  trainer::DatasetOptions options;
  options.seqLen = int64_t(shape.seqLen);
  if (args.format == "text")
    options.format = trainer::DatasetFormat::Text;
  else if (args.format == "jsonl")
    options.format = trainer::DatasetFormat::Chat;
  trainer::Dataset dataset = trainer::Dataset::load(
      args.data, *tokenizer, chat ? &*chat : nullptr, options);
  std::printf("%s\n", dataset.stats().summary().c_str());
  std::vector<int64_t> indices(dataset.samples().size());
  for (size_t k = 0; k < indices.size(); ++k)
    indices[k] = int64_t(k);
  trainer::Batcher batcher(dataset, indices, int64_t(shape.batchSize),
                           args.seed);
  int64_t total =
      args.steps > 0 ? args.steps : args.epochs * batcher.batchesPerEpoch();

  // Buffers for every argument and result; LoRA A kaiming-uniform as PEFT
  // initializes it, B and optimizer state zero.
  std::mt19937_64 rng(args.seed);
  std::vector<Buffer> argsBuf, resultsBuf;
  auto makeBuffer = [](const blm::fb::TensorSig *sig) {
    Buffer b;
    b.name = sig->name()->str();
    b.role = sig->role();
    b.isInt = sig->dtype()->str() == "i32";
    int64_t n = 1;
    for (int64_t d : *sig->shape())
      n *= d;
    if (b.isInt)
      b.i.assign(size_t(n), 0);
    else
      b.f.assign(size_t(n), 0.0f);
    return b;
  };
  for (const auto *sig : *entry->arguments()) {
    Buffer b = makeBuffer(sig);
    if (b.role == blm::Role::Parameter &&
        b.name.find(".lora_A.") != std::string::npos) {
      double bound = 1.0 / std::sqrt(double(sig->shape()->Get(1)));
      std::uniform_real_distribution<double> u(-bound, bound);
      for (float &v : b.f)
        v = float(u(rng));
    }
    argsBuf.push_back(std::move(b));
  }
  for (const auto *sig : *entry->results())
    resultsBuf.push_back(makeBuffer(sig));
  std::map<std::string, size_t> argIndex, resultIndex;
  for (size_t k = 0; k < argsBuf.size(); ++k)
    argIndex[argsBuf[k].name] = k;
  for (size_t k = 0; k < resultsBuf.size(); ++k)
    resultIndex[resultsBuf[k].name] = k;

  const blm::fb::Dispatch *dispatch = entry->dispatches()->Get(0);
  blm::ByteSpan code = artifact->executableData(dispatch->executable());
  auto library = hal::cpu::NativeLibrary::load(
      args.artifact + ": executable " + std::to_string(dispatch->executable()),
      code.data(), code.size());
  const auto *kernel = artifact->executable(dispatch->executable())
                           .kernels()
                           ->Get(dispatch->kernel());
  hal::cpu::PackedEntry run = library->lookup(kernel->name()->str());
  std::vector<void *> bindings;
  for (const auto *binding : *dispatch->bindings()) {
    switch (binding->source()) {
    case blm::BindingSource::Parameter:
      // Frozen weights are read in place from the mapping.
      bindings.push_back(const_cast<uint8_t *>(
          artifact->parameterData(binding->index()).data()));
      break;
    case blm::BindingSource::Argument:
      bindings.push_back(argsBuf.at(binding->index()).data());
      break;
    case blm::BindingSource::Result:
      bindings.push_back(resultsBuf.at(binding->index()).data());
      break;
    default:
      throw FormatError(args.artifact, "train_step",
                        "arena bindings need a memory plan (not yet)");
    }
  }

  fs::create_directories(args.out);
  trainer::MetricsLog metrics((fs::path(args.out) / "metrics.jsonl").string());
  auto start = std::chrono::steady_clock::now();
  int64_t seqLen = int64_t(shape.seqLen), rows = int64_t(shape.batchSize);
  for (int64_t step = 0; step < total; ++step) {
    trainer::Batch batch = batcher.next();
    // Hugging Face's causal-LM shift: position t predicts token t + 1.
    Buffer &tokens = argsBuf[argIndex.at("tokens")];
    Buffer &positions = argsBuf[argIndex.at("positions")];
    Buffer &labels = argsBuf[argIndex.at("labels")];
    Buffer &mask = argsBuf[argIndex.at("loss_mask")];
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = 0; t < seqLen; ++t) {
        size_t k = size_t(r * seqLen + t);
        tokens.i[k] = batch.ids[k];
        positions.i[k] = int32_t(t);
        labels.i[k] = t + 1 < seqLen ? batch.ids[k + 1] : 0;
        mask.f[k] = t + 1 < seqLen ? batch.lossMask[k + 1] : 0.0f;
      }
    double lr = trainer::scheduledLearningRate(args.schedule, args.lr, step,
                                               args.warmup, total);
    argsBuf[argIndex.at("lr")].f[0] = float(lr);
    argsBuf[argIndex.at("step")].f[0] = float(step + 1);
    run(bindings.data());
    // Updated parameters and optimizer state feed the next step.
    for (Buffer &a : argsBuf)
      if (a.role == blm::Role::Parameter || a.role == blm::Role::OptimizerState)
        a.f = resultsBuf[resultIndex.at(a.name)].f;
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    trainer::TrainRecord record;
    record.step = step + 1;
    record.epoch = double(step + 1) / double(batcher.batchesPerEpoch());
    record.loss = resultsBuf[resultIndex.at("loss")].f[0];
    record.learningRate = lr;
    record.gradNorm = resultsBuf[resultIndex.at("grad_norm")].f[0];
    record.tokens = rows * seqLen;
    record.seconds = seconds;
    record.tokensPerSecond = double((step + 1) * rows * seqLen) / seconds;
    metrics.logTrain(record);
    if (step == 0 || (step + 1) % 10 == 0 || step + 1 == total)
      std::printf("step %5lld/%lld  loss %.4f  lr %.2e  %.0f tokens/s\n",
                  (long long)step + 1, (long long)total, record.loss, lr,
                  record.tokensPerSecond);
  }
  metrics.writePlot();

  trainer::LoraConfig lora;
  blm::LoraConfig lc = artifact->loraConfig();
  lora.rank = lc.rank;
  lora.alpha = lc.alpha;
  lora.dropout = lc.dropout;
  lora.targets = lc.targets;
  lora.baseModel = metadata(*artifact, "source_model");
  trainer::TensorMap tensors;
  for (const Buffer &a : argsBuf)
    if (a.role == blm::Role::Parameter &&
        a.name.find(".lora_") != std::string::npos) {
      const auto *sig = entry->arguments()->Get(argIndex.at(a.name));
      tensors[a.name] = {
          std::vector<int64_t>(sig->shape()->begin(), sig->shape()->end()),
          a.f};
    }
  ModelConfig model;
  model.vocabSize = int64_t(mc.vocabSize);
  model.hiddenSize = int64_t(mc.hiddenSize);
  model.intermediateSize = int64_t(mc.intermediateSize);
  model.numLayers = int64_t(mc.numLayers);
  model.numHeads = int64_t(mc.numHeads);
  model.numKvHeads = int64_t(mc.numKvHeads);
  model.headDim = int64_t(mc.headDim);
  trainer::exportPeftAdapter(args.out, lora, tensors, model);
  std::printf("saved PEFT adapter to %s (metrics %s, plot %s)\n",
              args.out.c_str(), metrics.path().c_str(),
              metrics.plotPath().c_str());
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"bitloom-run: train with a compiled bitloom artifact"};
  app.require_subcommand(1);
  TrainArgs train;
  auto *cmd = app.add_subcommand("train", "fine-tune a LoRA adapter");
  cmd->add_option("artifact", train.artifact, ".blm from bitloom compile")
      ->required();
  cmd->add_option("--data", train.data, "text or JSONL chat file")->required();
  cmd->add_option("--format", train.format, "auto | text | jsonl")
      ->capture_default_str();
  cmd->add_option("--steps", train.steps, "optimizer steps (0: --epochs)")
      ->capture_default_str();
  cmd->add_option("--epochs", train.epochs, "passes over the data")
      ->capture_default_str();
  cmd->add_option("--lr", train.lr, "peak learning rate")
      ->capture_default_str();
  cmd->add_option("--lr-schedule", train.schedule, "constant | linear | cosine")
      ->capture_default_str();
  cmd->add_option("--warmup", train.warmup, "warmup steps")
      ->capture_default_str();
  cmd->add_option("--seed", train.seed, "seed")->capture_default_str();
  cmd->add_option("--out", train.out, "adapter directory")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return runTrain(train);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

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

#include "artifact/ArtifactBuilder.h"
#include "artifact/MemoryReport.h"
#include "codegen/cpu/CompileCpu.h"
#include "codegen/vulkan/CompileVulkan.h"
#include "formats/Error.h"
#include "formats/MappedFile.h"
#include "model/TernaryWeights.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_ostream.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace bitloom {

static const char *const kPhases[] = {"import", "autodiff", "generate"};

void addCompileCommand(CLI::App &app, CompileArgs &args) {
  auto *cmd = app.add_subcommand(
      "compile", "compile a model's training step for a target");
  args.command = cmd;
  cmd->add_option("model", args.model, "model directory or .gguf file")
      ->required();
  cmd->add_option("--target", args.target,
                  "reference (a .mlir) | cpu-x86_64 | cpu-arm64 | vulkan | "
                  "vulkan-<profile: generic, adreno, mali, nvidia, lavapipe> "
                  "(a .blm)")
      ->capture_default_str();
  cmd->add_option("--cpu", args.cpu,
                  "CPU to tune for: native | generic | an LLVM CPU name");
  cmd->add_option("--seq-len", args.seqLen,
                  "tokens per sequence (CPU and Vulkan targets)");
  cmd->add_option("--batch", args.batch,
                  "sequences per step (CPU and Vulkan targets)");
  addLoRAOptions(cmd, args.lora, args.targets);
  addOptimizerOptions(cmd, args.optimizer, args.optimizer.weightDecay,
                      /*showDecayDefault=*/true);
  cmd->add_option("--max-tokens", args.maxTokens,
                  "KV cache length of @generate_step")
      ->capture_default_str();
  cmd->add_option("--compile-to", args.compileTo,
                  "last phase: import | autodiff | generate")
      ->capture_default_str();
  cmd->add_option("--dump-phases", args.dumpPhases,
                  "write each phase's IR to DIR/<n>-<phase>.mlir");
  cmd->add_option("--memory-budget", args.memoryBudget,
                  "CPU and Vulkan targets: most bytes a training run may hold "
                  "(weights, trainable state, step inputs/outputs and the "
                  "arena), e.g. 1.5GiB; the compiler recomputes the fewest "
                  "decoder layers that make the plan fit (default: 8GiB for "
                  "cpu-x86_64, vulkan-nvidia and vulkan-lavapipe, 4GiB for "
                  "cpu-arm64 and the other Vulkan profiles)");
  cmd->add_option(
      "--recompute-layers", args.recomputeLayers,
      "CPU and Vulkan targets: recompute this many decoder layers in the "
      "backward (-1: all) instead of choosing for the budget");
  cmd->add_option(
      "--storage-buffer-range", args.storageBufferRange,
      "Vulkan targets: the largest range one buffer binding may cover, for "
      "a device below its profile's (default: the profile's, e.g. 128MiB "
      "for generic); larger tensors are split into several bindings");
  cmd->add_flag(
      "--plan-only", args.planOnly,
      "CPU and Vulkan targets: print the memory plan's totals and stop "
      "(no code generation, no output file)");
  cmd->add_option("-o,--output", args.output, "output file");
}

/// "1.5GiB", "800MiB", "64KiB", "2G", "123456": bytes.
static uint64_t parseBytes(const std::string &text, const std::string &flag) {
  static const std::pair<const char *, double> units[] = {
      {"GiB", 1024.0 * 1024 * 1024},
      {"MiB", 1024.0 * 1024},
      {"KiB", 1024.0},
      {"G", 1024.0 * 1024 * 1024},
      {"M", 1024.0 * 1024},
      {"K", 1024.0},
      {"B", 1.0},
      {"", 1.0}};
  for (const auto &[suffix, scale] : units) {
    std::string unit(suffix);
    if (text.size() <= unit.size() ||
        text.compare(text.size() - unit.size(), unit.size(), unit) != 0)
      continue;
    std::string number = text.substr(0, text.size() - unit.size());
    char *end = nullptr;
    double value = std::strtod(number.c_str(), &end);
    if (end && *end == '\0' && value > 0 && std::isfinite(value))
      return uint64_t(value * scale);
    break;
  }
  throw FormatError("", flag,
                    "'" + text +
                        "' is not a size (e.g. 1.5GiB, 800MiB or "
                        "a number of bytes)");
}

static std::string printModule(mlir::ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  return text;
}

/// @generate_step's KV caches: state the runtime owns across calls.
static bool isKvCache(const std::string &name) {
  return name.rfind("key_cache.", 0) == 0 || name.rfind("value_cache.", 0) == 0;
}

/// Arguments' roles in the artifact, from their loom.name.
static blm::Role roleOf(const std::string &name) {
  // Persistent runtime-owned state, zeroed at the start of a sequence and
  // threaded from the result of the same name, like optimizer state.
  if (isKvCache(name))
    return blm::Role::OptimizerState;
  if (name == "tokens" || name == "positions" || name == "labels" ||
      name == "loss_mask")
    return blm::Role::Input;
  if (name == "lr" || name == "step" || name == "grad_scale")
    return blm::Role::Hyperparameter;
  if (name.rfind("exp_avg", 0) == 0 || name.rfind("momentum_buffer.", 0) == 0 ||
      name.rfind("grad.", 0) == 0)
    return blm::Role::OptimizerState;
  return blm::Role::Parameter;
}

/// What a training run holds with a compiled step, from its signatures and
/// plans: the same accounting as `bitloom inspect --memory`.
struct PlannedMemory {
  uint64_t weights = 0, state = 0, io = 0, arena = 0;
  uint64_t total() const { return weights + state + io + arena; }
};

static PlannedMemory
plannedMemory(const std::vector<codegen::cpu::FunctionSignature> &sigs) {
  PlannedMemory m;
  std::set<std::string> weights;
  for (const codegen::cpu::FunctionSignature &f : sigs) {
    m.arena = std::max(m.arena, uint64_t(f.arenaBytes));
    for (const codegen::cpu::TensorSignature &a : f.args)
      if (a.isWeight && weights.insert(a.name).second)
        m.weights += uint64_t(a.byteSize());
    if (f.name != "train_step")
      continue;
    std::set<std::string> args;
    for (const codegen::cpu::TensorSignature &a : f.args) {
      if (a.isWeight)
        continue;
      args.insert(a.name);
      blm::Role role = roleOf(a.name);
      (role == blm::Role::Parameter || role == blm::Role::OptimizerState
           ? m.state
           : m.io) += uint64_t(a.byteSize());
    }
    for (const codegen::cpu::TensorSignature &r : f.results)
      if (!args.count(r.name))
        m.io += uint64_t(r.byteSize());
  }
  return m;
}

/// The buffers live at the peak of the entry point with the largest arena,
/// largest first: what `--plan-only` shows so a budget can be judged.
static void
printPeakBuffers(const std::vector<codegen::cpu::FunctionSignature> &sigs) {
  const codegen::cpu::FunctionSignature *top = nullptr;
  for (const codegen::cpu::FunctionSignature &f : sigs)
    if (!top || f.arenaBytes > top->arenaBytes)
      top = &f;
  if (!top || top->buffers.empty())
    return;
  std::vector<blm::Lifetime> lifetimes;
  for (const codegen::cpu::PlannedBuffer &b : top->buffers)
    lifetimes.push_back(
        {uint64_t(b.size), uint32_t(b.first), uint32_t(b.last)});
  uint32_t peak = 0;
  std::vector<uint64_t> live =
      blm::liveBytes(lifetimes, uint32_t(top->scheduleLength), peak);
  std::vector<const codegen::cpu::PlannedBuffer *> atPeak;
  for (const codegen::cpu::PlannedBuffer &b : top->buffers)
    if (b.first <= int64_t(peak) && int64_t(peak) <= b.last)
      atPeak.push_back(&b);
  std::stable_sort(atPeak.begin(), atPeak.end(),
                   [](auto *x, auto *y) { return x->size > y->size; });
  std::printf("@%s: arena %lld bytes, peak live %lld bytes at schedule "
              "position %lld of %lld; largest live buffers there:\n",
              top->name.c_str(), (long long)top->arenaBytes,
              (long long)live[peak], (long long)peak,
              (long long)top->scheduleLength);
  for (size_t i = 0; i < atPeak.size() && i < 10; ++i)
    std::printf("  %12lld bytes  live %lld..%lld  %s\n",
                (long long)atPeak[i]->size, (long long)atPeak[i]->first,
                (long long)atPeak[i]->last, atPeak[i]->owner.c_str());
}

/// Runs -loom-recompute for `layers` decoder layers (0: none, -1: all).
static void recompute(mlir::ModuleOp module, int64_t layers,
                      const std::string &model) {
  if (layers == 0)
    return;
  mlir::PassManager pm(module.getContext());
  LoomRecomputeOptions options;
  options.layers = layers;
  pm.addPass(createLoomRecompute(options));
  if (mlir::failed(pm.run(module)))
    throw FormatError(model, "recompute", "the phase failed");
}

/// "3 of 30 layers recomputed".
static std::string recomputeLabel(int64_t layers, int64_t numLayers) {
  return std::to_string(layers) + " of " + std::to_string(numLayers) +
         " layers recomputed";
}

/// How many decoder layers to recompute: the fewest (recompute costs a
/// second forward of each) whose plan fits `budget`; a compile error names
/// the shortfall when even recomputing all of them does not fit.
static int64_t chooseRecompute(mlir::ModuleOp module, int64_t numLayers,
                               const std::vector<std::string> &entries,
                               const std::vector<std::string> &bf16,
                               uint64_t budget, const std::string &model,
                               bool verbose) {
  std::map<int64_t, PlannedMemory> tried;
  auto plan = [&](int64_t layers) {
    auto it = tried.find(layers);
    if (it != tried.end())
      return it->second;
    mlir::OwningOpRef<mlir::ModuleOp> trial(module.clone());
    recompute(*trial, layers, model);
    PlannedMemory m =
        plannedMemory(codegen::cpu::planForCpu(*trial, entries, bf16));
    if (verbose)
      std::printf("plan: %s: %s (arena %s)\n",
                  recomputeLabel(layers, numLayers).c_str(),
                  blm::formatGiB(m.total()).c_str(),
                  blm::formatGiB(m.arena).c_str());
    return tried[layers] = m;
  };
  if (plan(0).total() <= budget)
    return 0;
  PlannedMemory all = plan(numLayers);
  if (all.total() > budget)
    throw FormatError(
        model, "--memory-budget",
        "the step needs " + std::to_string(all.total()) + " bytes (" +
            blm::formatGiB(all.total()) + ") even recomputing all " +
            std::to_string(numLayers) +
            " layers: " + std::to_string(all.total() - budget) +
            " bytes over the budget of " + std::to_string(budget) +
            " (weights " + blm::formatGiB(all.weights) + ", trainable state " +
            blm::formatGiB(all.state) + ", arena " + blm::formatGiB(all.arena) +
            ")");
  // The peak falls as layers are recomputed: binary search the fewest.
  int64_t lo = 1, hi = numLayers;
  while (lo < hi) {
    int64_t mid = (lo + hi) / 2;
    if (plan(mid).total() <= budget)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

static bool isVulkanTarget(const std::string &target);

/// What a training run may hold when no --memory-budget is given: phones
/// and small GPUs get 4 GiB, desktops and data-centre GPUs 8 GiB.
static uint64_t defaultMemoryBudget(const std::string &target) {
  bool small = target == "cpu-arm64" || target == "vulkan" ||
               target == "vulkan-generic" || target == "vulkan-adreno" ||
               target == "vulkan-mali";
  return (small ? 4ull : 8ull) << 30;
}

static bool isVulkanTarget(const std::string &target) {
  return target == "vulkan" || llvm::StringRef(target).starts_with("vulkan-");
}

/// "vulkan" means the baseline profile.
static std::string vulkanProfile(const std::string &target) {
  return target == "vulkan" ? "generic" : target.substr(strlen("vulkan-"));
}

/// CPU targets: train/eval/accumulate/apply compiled to one shared object,
/// frozen weights (projections packed 2 bits per weight), signatures and a
/// one-dispatch schedule per entry point, written as a .blm. Vulkan targets:
/// one SPIR-V shader per kernel and the whole step as a schedule of
/// dispatches over weights, inputs, outputs and ranges of one arena.
static int compileArtifact(CompileArgs &args, const Model &model,
                           mlir::ModuleOp module) {
  bool vulkan = isVulkanTarget(args.target);
  if (args.seqLen < 2 || args.batch < 1)
    throw FormatError("", "--seq-len",
                      "CPU and Vulkan targets compile for one shape: give "
                      "--seq-len (>= 2) and --batch");
  mlir::PassManager pm(module.getContext());
  LoomSpecializeShapesOptions shapes;
  shapes.batch = args.batch;
  shapes.seqLen = args.seqLen;
  pm.addPass(createLoomSpecializeShapes(shapes));
  if (mlir::failed(pm.run(module)))
    throw FormatError(args.model, "specialize", "the phase failed");
  // train_step's "<name>.grad" results are `bitloom step`'s debugging door;
  // no runtime reads them, so the artifact does not pay a buffer and a copy
  // per trainable tensor for them (the optimizer still uses the gradients).
  if (auto train = module.lookupSymbol<mlir::func::FuncOp>("train_step")) {
    llvm::BitVector gradients(train.getNumResults());
    for (unsigned i = 0; i < train.getNumResults(); ++i)
      if (auto name =
              train.getResultAttrOfType<mlir::StringAttr>(i, "loom.name");
          name && name.getValue().ends_with(".grad"))
        gradients.set(i);
    train.getBody().back().getTerminator()->eraseOperands(gradients);
    if (mlir::failed(train.eraseResults(gradients)))
      throw FormatError(args.model, "train_step", "cannot drop .grad results");
  }
  std::vector<std::string> entries = {"train_step", "eval_step",
                                      "accumulate_step", "apply_step"};
  if (module.lookupSymbol("generate_step"))
    entries.push_back("generate_step");

  // Memory: recompute the fewest decoder layers that fit the budget.
  uint64_t budget = !args.memoryBudget.empty()
                        ? parseBytes(args.memoryBudget, "--memory-budget")
                        : defaultMemoryBudget(args.target);
  int64_t numLayers = model.config().numLayers;
  std::vector<std::string> bf16 = bf16WeightNames(model);
  if (args.recomputeLayers < -2)
    throw FormatError("", "--recompute-layers",
                      "must be a number of layers, or -1 for all");
  int64_t layers =
      args.recomputeLayers == -2
          ? chooseRecompute(module, numLayers, entries, bf16, budget,
                            args.model, args.planOnly)
          : std::min(args.recomputeLayers < 0 ? numLayers
                                              : args.recomputeLayers,
                     numLayers);
  recompute(module, layers, args.model);
  if (layers != 0 && !args.planOnly)
    std::printf("to fit the memory budget (%s): %s in the backward\n",
                blm::formatGiB(budget).c_str(),
                recomputeLabel(layers, numLayers).c_str());
  if (args.planOnly) {
    std::vector<codegen::cpu::FunctionSignature> sigs =
        codegen::cpu::planForCpu(module, entries, bf16);
    PlannedMemory m = plannedMemory(sigs);
    printPeakBuffers(sigs);
    std::printf("planned peak total: %llu bytes (%s) with %s: weights %llu, "
                "trainable state %llu, step inputs/outputs %llu, arena %llu\n",
                (unsigned long long)m.total(),
                blm::formatGiB(m.total()).c_str(),
                recomputeLabel(layers, numLayers).c_str(),
                (unsigned long long)m.weights, (unsigned long long)m.state,
                (unsigned long long)m.io, (unsigned long long)m.arena);
    return 0;
  }
  if (args.output.empty())
    throw FormatError("", "--output", "give -o FILE (or --plan-only)");
  blm::ArtifactBuilder builder;
  builder.setProducer("bitloom");
  blm::TargetInfo info;
  info.name = args.target == "vulkan" ? "vulkan-generic" : args.target;
  codegen::cpu::CompiledCpuModule compiled;
  codegen::vulkan::CompiledVulkanModule gpu;
  if (vulkan) {
    std::string profile = vulkanProfile(args.target);
    codegen::vulkan::KernelTarget kernelTarget =
        codegen::vulkan::kernelTargetForProfile(profile);
    if (!args.storageBufferRange.empty()) {
      uint64_t range =
          parseBytes(args.storageBufferRange, "--storage-buffer-range");
      if (range < 4096 || range > kernelTarget.maxStorageBufferRange)
        throw FormatError(
            "", "--storage-buffer-range",
            "'" + args.storageBufferRange + "' is outside 4KiB.." +
                std::to_string(kernelTarget.maxStorageBufferRange) +
                " bytes (the " + profile + " profile's range)");
      kernelTarget.maxStorageBufferRange = range;
    }
    gpu =
        codegen::vulkan::compileForVulkan(module, kernelTarget, entries, bf16);
    compiled.functions = gpu.functions;
    info.cpu = profile;
  } else {
    native::NativeTarget target = native::resolveNativeTarget(
        args.target, args.cpu.empty() ? "generic" : args.cpu);
    compiled = codegen::cpu::compileForCpu(module, target, entries,
                                           /*withAssembly=*/false,
                                           /*withBitcode=*/true, bf16);
    info.cpu = target.cpu;
    llvm::SmallVector<llvm::StringRef> features;
    llvm::StringRef(target.features).split(features, ',', -1, false);
    for (llvm::StringRef f : features)
      info.features.push_back(f.str());
  }
  builder.setTarget(info);
  const ModelConfig &c = model.config();
  blm::ModelConfig mc;
  mc.vocabSize = c.vocabSize;
  mc.hiddenSize = c.hiddenSize;
  mc.intermediateSize = c.intermediateSize;
  mc.numLayers = c.numLayers;
  mc.numHeads = c.numHeads;
  mc.numKvHeads = c.numKvHeads;
  mc.headDim = c.headDim;
  mc.maxPositionEmbeddings = c.maxPositionEmbeddings;
  mc.ropeTheta = c.ropeTheta;
  mc.rmsNormEps = c.rmsNormEps;
  mc.tieWordEmbeddings = c.tieWordEmbeddings;
  mc.hiddenAct = c.hiddenAct;
  mc.weightQuant = c.weightQuant == WeightQuant::Online ? "online" : "offline";
  mc.bosTokenId = c.bosTokenId.value_or(-1);
  mc.eosTokenId = c.eosTokenId.value_or(-1);
  builder.setModelConfig(mc);
  blm::LoraConfig lc;
  lc.rank = uint32_t(args.lora.rank);
  lc.alpha = args.lora.alpha;
  lc.dropout = args.lora.dropout;
  lc.targets = args.lora.rank > 0 ? parseLoRATargets(args.targets)
                                  : std::vector<std::string>{};
  lc.trainable = args.optimizer.trainable;
  builder.setLoraConfig(lc);
  blm::CompileOptions co;
  co.seqLen = uint64_t(args.seqLen);
  co.batchSize = uint64_t(args.batch);
  co.optimizer = args.optimizer.optimizer;
  co.memoryBudget = budget;
  co.recompute = layers != 0;
  builder.setCompileOptions(co);
  builder.addMetadata("recompute", recomputeLabel(layers, numLayers));
  builder.addMetadata("source_model", fs::absolute(args.model).string());
  // The device needs the tokenizer and the chat template to read data.
  if (fs::is_directory(args.model)) {
    auto slurp = [](const fs::path &path) {
      std::ifstream in(path, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      return ss.str();
    };
    fs::path dir(args.model);
    if (fs::exists(dir / "tokenizer.json"))
      builder.addMetadata("tokenizer.json", slurp(dir / "tokenizer.json"));
    if (fs::exists(dir / "tokenizer_config.json")) {
      nlohmann::json config = nlohmann::json::parse(
          slurp(dir / "tokenizer_config.json"), nullptr, false);
      auto text = [&](const char *key) -> std::string {
        if (!config.is_object() || !config.contains(key))
          return "";
        const nlohmann::json &v = config[key];
        if (v.is_string())
          return v.get<std::string>();
        if (v.is_object() && v.contains("content") && v["content"].is_string())
          return v["content"].get<std::string>();
        return "";
      };
      for (const char *key : {"chat_template", "bos_token", "eos_token"})
        if (!text(key).empty())
          builder.addMetadata(key, text(key));
    }
  }

  uint32_t exeIndex = 0;
  if (vulkan) {
    // One SPIR-V module per kernel, its single entry point named after it.
    for (const codegen::vulkan::SpirvKernel &k : gpu.kernels) {
      blm::ExecutableInfo exe;
      exe.name = k.name;
      exe.format = "spirv";
      exe.kernels.push_back(
          {k.entryPoint,
           {1, 1, 1},
           {uint32_t(k.workgroupSize[0]), uint32_t(k.workgroupSize[1]),
            uint32_t(k.workgroupSize[2])},
           fs::absolute(args.model).string()});
      builder.addExecutable(exe, k.words.data(), k.words.size() * 4);
    }
  } else {
    blm::ExecutableInfo exe;
    exe.name = "train";
    exe.format = "elf-shared";
    for (const std::string &entry : entries)
      exe.kernels.push_back(
          {entry + "_packed",
           {1, 1, 1},
           {1, 1, 1},
           fs::absolute(args.model).string() + ": @" + entry});
    exeIndex = builder.addExecutable(exe, compiled.sharedObject);
    // The optimized LLVM IR of the same code under the same kernel names,
    // for `bitloom inspect --dump-kernels`. No dispatch names it, so a
    // runtime never loads it.
    blm::ExecutableInfo ir = exe;
    ir.name = "train-ir";
    ir.format = "llvm-bc";
    builder.addExecutable(ir, compiled.bitcode.data(), compiled.bitcode.size());
  }

  // Frozen weights in the form the code takes them (f32, bf16 as stored, or
  // packed ternary plus multiplier), prepared and streamed tensor by tensor.
  std::map<std::string, uint32_t> weightIndex;
  CpuWeightSource weights(model);
  for (const codegen::cpu::FunctionSignature &f : compiled.functions)
    for (const codegen::cpu::TensorSignature &a : f.args) {
      if (!a.isWeight || weightIndex.count(a.name))
        continue;
      std::string dtype = a.packing == "i2x128" ? "i2x128"
                          : a.packing == "bf16" ? "bf16"
                                                : "f32";
      std::vector<int64_t> shape = a.shape;
      if (a.packing == "i2x128") {
        const ModelTensor *t = model.find(a.name);
        if (!t)
          throw FormatError(model.path(), a.name, "weight not in the model");
        shape = t->shape; // the logical [out, in]
      }
      weightIndex[a.name] = builder.addParameter(
          {a.name, dtype, shape, false}, uint64_t(a.byteSize()),
          [&weights, a](blm::BlobWriter &out) {
            std::vector<uint8_t> bytes = weights.bytes(a.name, a.packing);
            out.write(bytes.data(), bytes.size());
          });
    }

  for (size_t e = 0; e < entries.size(); ++e) {
    const codegen::cpu::FunctionSignature &f = compiled.functions[e];
    blm::EntryPointInfo entry;
    entry.name = f.name;
    blm::DispatchInfo dispatch;
    dispatch.executable = exeIndex;
    dispatch.kernel = uint32_t(e);
    dispatch.op = "@" + f.name;
    auto sig = [](const codegen::cpu::TensorSignature &t, blm::Role role) {
      return blm::TensorSignature{t.name, t.isInt ? "i32" : "f32", t.shape,
                                  role};
    };
    for (const codegen::cpu::TensorSignature &a : f.args) {
      uint64_t size = uint64_t(a.byteSize());
      if (a.isWeight) {
        dispatch.bindings.push_back({blm::BindingSource::Parameter,
                                     weightIndex.at(a.name), 0, size,
                                     blm::Access::Read});
        continue;
      }
      // The step updates a KV cache argument in place (see roleOf).
      dispatch.bindings.push_back(
          {blm::BindingSource::Argument, uint32_t(entry.arguments.size()), 0,
           size,
           isKvCache(a.name) ? blm::Access::ReadWrite : blm::Access::Read});
      entry.arguments.push_back(sig(a, roleOf(a.name)));
    }
    for (const codegen::cpu::TensorSignature &r : f.results) {
      dispatch.bindings.push_back(
          {blm::BindingSource::Result, uint32_t(entry.results.size()), 0,
           uint64_t(r.numElements()) * 4, blm::Access::Write});
      entry.results.push_back(sig(r, blm::Role::Output));
    }
    // The code places its own buffers at the planned offsets (see
    // -loom-plan-arena): it takes the arena's base.
    dispatch.bindings.push_back({blm::BindingSource::Arena, 0, 0,
                                 uint64_t(f.arenaBytes),
                                 blm::Access::ReadWrite});
    entry.arenaBytes = uint64_t(f.arenaBytes);
    entry.scheduleLength = uint32_t(f.scheduleLength);
    if (vulkan) {
      // The CPU dispatch's bindings are the function's arguments, results
      // and arena in order: each GPU binding takes its source from there.
      size_t numArgs = f.args.size();
      for (const codegen::vulkan::GpuDispatch &d : gpu.dispatches[e]) {
        blm::DispatchInfo g;
        g.executable = d.kernel;
        g.kernel = 0;
        g.workgroupCount = {d.workgroups[0], d.workgroups[1], d.workgroups[2]};
        g.op = d.op;
        for (const codegen::vulkan::GpuBinding &b : d.bindings) {
          using Source = codegen::vulkan::GpuBinding::Source;
          size_t position = b.source == Source::Argument ? b.index
                            : b.source == Source::Result
                                ? numArgs + b.index
                                : dispatch.bindings.size() - 1;
          blm::BindingInfo binding = dispatch.bindings.at(position);
          binding.offset = b.offset;
          binding.size = b.size;
          // What this kernel does with the range (the runtime orders only
          // dependent dispatches), not what the entry point does with it.
          binding.access =
              b.written ? blm::Access::ReadWrite : blm::Access::Read;
          g.bindings.push_back(binding);
        }
        entry.dispatches.push_back(std::move(g));
      }
    } else {
      entry.dispatches.push_back(std::move(dispatch));
    }
    builder.addEntryPoint(std::move(entry));
  }
  // The memory plan: every transient buffer of every entry point at its
  // offset, live over positions of its entry point's schedule. Entry points
  // never run at once, so they share the arena from offset 0.
  blm::MemoryPlanInfo plan;
  for (size_t e = 0; e < entries.size(); ++e) {
    const codegen::cpu::FunctionSignature &f = compiled.functions[e];
    plan.arenaSize = std::max(plan.arenaSize, uint64_t(f.arenaBytes));
    for (const codegen::cpu::PlannedBuffer &b : f.buffers) {
      blm::SlotInfo slot;
      slot.name = f.name + "#" + std::to_string(b.first);
      slot.offset = uint64_t(b.offset);
      slot.size = uint64_t(b.size);
      slot.entryPoint = uint32_t(e);
      slot.op = b.owner;
      if (vulkan) {
        // Live over the dispatches of the ops of its schedule positions.
        const std::vector<codegen::vulkan::GpuDispatch> &list =
            gpu.dispatches[e];
        int64_t begin = -1, end = -1;
        for (size_t d = 0; d < list.size(); ++d)
          if (list[d].schedulePosition >= b.first &&
              list[d].schedulePosition <= b.last) {
            if (begin < 0)
              begin = int64_t(d);
            end = int64_t(d);
          }
        if (begin < 0)
          continue; // only ever named, never touched by a kernel
        slot.lifetimeBegin = uint32_t(begin);
        slot.lifetimeEnd = uint32_t(end);
      } else {
        slot.scheduleBegin = uint32_t(b.first);
        slot.scheduleEnd = uint32_t(b.last);
      }
      plan.slots.push_back(std::move(slot));
    }
  }
  builder.setMemoryPlan(std::move(plan));
  builder.write(args.output);
  if (vulkan) {
    size_t dispatches = 0, words = 0;
    for (const auto &list : gpu.dispatches)
      dispatches += list.size();
    for (const codegen::vulkan::SpirvKernel &k : gpu.kernels)
      words += k.words.size();
    std::printf("compiled %s for %s to %s: %zu entry points, %zu dispatches, "
                "%zu SPIR-V kernels (%zu bytes)\n",
                args.model.c_str(), info.name.c_str(), args.output.c_str(),
                entries.size(), dispatches, gpu.kernels.size(), words * 4);
    return 0;
  }
  std::printf("compiled %s for %s (%s) to %s: %zu entry points, %zu bytes of "
              "native code, %zu bytes of LLVM bitcode\n",
              args.model.c_str(), args.target.c_str(), info.cpu.c_str(),
              args.output.c_str(), entries.size(), compiled.sharedObject.size(),
              compiled.bitcode.size());
  return 0;
}

int runCompile(CompileArgs &args) {
  // Targets that compile to a .blm (and plan memory); the rest is a .mlir.
  bool artifact = args.target == "cpu-x86_64" || args.target == "cpu-arm64" ||
                  isVulkanTarget(args.target);
  if (isVulkanTarget(args.target))
    // An unknown profile fails here, before the model is read.
    codegen::vulkan::kernelTargetForProfile(vulkanProfile(args.target));
  else if (args.target != "reference" && !artifact)
    throw FormatError("", "--target",
                      "'" + args.target +
                          "' is not available yet (reference, cpu-x86_64, "
                          "cpu-arm64, vulkan, vulkan-<profile>)");
  if (!isVulkanTarget(args.target) && !args.storageBufferRange.empty())
    throw FormatError("", "--storage-buffer-range",
                      "only Vulkan targets bind storage buffers");
  if (!artifact && (args.planOnly || !args.memoryBudget.empty() ||
                    args.recomputeLayers != -2))
    throw FormatError("",
                      args.planOnly               ? "--plan-only"
                      : args.memoryBudget.empty() ? "--recompute-layers"
                                                  : "--memory-budget",
                      "only CPU and Vulkan targets plan memory");
  if (args.output.empty() && !(artifact && args.planOnly))
    throw FormatError("", "--output", "give -o FILE");
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
  if (artifact)
    return compileArtifact(args, *model, *module);
  std::string text = printModule(*module);
  writeFileAtomically(args.output, text.data(), text.size());
  std::printf("compiled %s for %s (through %s) to %s\n", args.model.c_str(),
              args.target.c_str(), kPhases[last], args.output.c_str());
  return 0;
}

} // namespace bitloom

//===- Training.cpp - Training steps on the reference executor ------------===//
#include "Training.h"

#include "NativeExecutor.h"
#include "formats/Error.h"
#include "formats/MappedFile.h"
#include "formats/Safetensors.h"
#include "passes/Passes.h"
#include "trainer/Adapter.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace fs = std::filesystem;

namespace bitloom {

//===----------------------------------------------------------------------===//
// Batches
//===----------------------------------------------------------------------===//

std::vector<std::vector<int32_t>> readIntRows(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    throw FormatError(path, "", "cannot open file");
  std::vector<std::vector<int32_t>> rows;
  std::string line;
  int lineNo = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    if (line.find_first_not_of(" \t\r") == std::string::npos)
      continue;
    std::vector<int32_t> row;
    std::istringstream ss(line);
    std::string word;
    while (ss >> word) {
      char *end = nullptr;
      long long v = std::strtoll(word.c_str(), &end, 10);
      if (*end != '\0' || v < INT32_MIN || v > INT32_MAX)
        throw FormatError(path, "line " + std::to_string(lineNo),
                          "'" + word + "' is not an integer");
      row.push_back(int32_t(v));
    }
    if (!rows.empty() && row.size() != rows.front().size())
      throw FormatError(path, "line " + std::to_string(lineNo),
                        "has " + std::to_string(row.size()) +
                            " values but the first line has " +
                            std::to_string(rows.front().size()));
    rows.push_back(std::move(row));
  }
  if (rows.empty())
    throw FormatError(path, "", "no sequences");
  if (rows.front().size() < 2)
    throw FormatError(path, "line 1",
                      "a sequence needs at least 2 tokens to predict one");
  return rows;
}

Batch makeBatch(const std::vector<std::vector<int32_t>> &ids,
                const std::vector<std::vector<int32_t>> *mask) {
  int64_t b = ids.size(), t = ids.front().size();
  std::vector<int32_t> tokens, positions, labels;
  std::vector<float> lossMask;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < t; ++j) {
      tokens.push_back(ids[i][j]);
      positions.push_back(int32_t(j));
      // Position j predicts token j + 1, unless that token is masked out
      // (label -100 in Hugging Face terms) or there is none.
      bool target = j + 1 < t && (!mask || (*mask)[i][j + 1] != 0);
      labels.push_back(j + 1 < t ? ids[i][j + 1] : 0);
      lossMask.push_back(target ? 1.0f : 0.0f);
    }
  Batch batch;
  batch.tokens = HostTensor::int32s({b, t}, tokens);
  batch.positions = HostTensor::int32s({b, t}, positions);
  batch.labels = HostTensor::int32s({b, t}, labels);
  batch.lossMask = HostTensor::floats({b, t});
  batch.lossMask.data = lossMask;
  return batch;
}

//===----------------------------------------------------------------------===//
// PEFT adapters
//===----------------------------------------------------------------------===//

Adapter loadPeftAdapter(const std::string &path, const ModelConfig *model) {
  trainer::LoadedAdapter loaded = trainer::importAdapter(path, model);
  Adapter adapter;
  adapter.options.rank = loaded.config.rank;
  adapter.options.alpha = loaded.config.alpha;
  adapter.options.dropout = loaded.config.dropout;
  adapter.options.targets = loaded.config.targets;
  for (auto &[name, t] : loaded.tensors) {
    HostTensor tensor = HostTensor::floats(t.shape);
    tensor.data = std::move(t.data);
    adapter.tensors[name] = std::move(tensor);
  }
  return adapter;
}

void savePeftAdapter(const std::string &dir, const LoRAOptions &options,
                     const std::map<std::string, HostTensor> &tensors,
                     const std::string &baseModel, const ModelConfig &model) {
  trainer::LoraConfig lora;
  lora.rank = options.rank;
  lora.alpha = options.alpha;
  lora.dropout = options.dropout;
  lora.targets = options.targets;
  lora.baseModel = baseModel;
  trainer::TensorMap map;
  for (const auto &[name, t] : tensors)
    map[name] = {t.shape, t.data};
  trainer::exportPeftAdapter(dir, lora, map, model);
}

//===----------------------------------------------------------------------===//
// TrainingSession
//===----------------------------------------------------------------------===//

/// The module and whichever executor runs it: the reference interpreter, or
/// compiled native code (CPU targets).
struct TrainingSession::Compiled {
  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::unique_ptr<reference::Interpreter> interpreter;
  std::unique_ptr<NativeExecutor> native;

  std::map<std::string, HostTensor>
  run(const std::string &function,
      const std::map<std::string, HostTensor> &args) {
    return native ? native->run(function, args)
                  : interpreter->run(function, args);
  }
};

TrainingSession::TrainingSession(
    const Model &model, const LoRAOptions &lora,
    const OptimizerOptions &optimizer,
    const std::map<std::string, HostTensor> &initial, uint64_t seed,
    const ExecutionTarget &target)
    : compiled_(std::make_unique<Compiled>()) {
  compiled_->module = importModel(compiled_->context, model, lora);
  mlir::PassManager pm(&compiled_->context);
  pm.addPass(createLoomVerifyModel());
  LoomAutodiffOptions autodiff;
  autodiff.trainable = optimizer.trainable;
  autodiff.optimizer = optimizer.optimizer;
  autodiff.beta1 = optimizer.beta1;
  autodiff.beta2 = optimizer.beta2;
  autodiff.epsilon = optimizer.epsilon;
  autodiff.weightDecay = optimizer.weightDecay;
  autodiff.momentum = optimizer.momentum;
  autodiff.maxGradNorm = optimizer.maxGradNorm;
  pm.addPass(createLoomAutodiff(autodiff));
  if (target.recomputeLayers != 0) {
    LoomRecomputeOptions recompute;
    recompute.layers = target.recomputeLayers;
    pm.addPass(createLoomRecompute(recompute));
  }
  if (target.name != "reference") {
    // Native code is compiled for one batch shape.
    LoomSpecializeShapesOptions shapes;
    shapes.batch = target.batch;
    shapes.seqLen = target.seqLen;
    pm.addPass(createLoomSpecializeShapes(shapes));
  }
  if (mlir::failed(pm.run(*compiled_->module)))
    throw FormatError(model.path(), "",
                      "could not build the training step (see above)");
  if (target.name == "reference") {
    compiled_->interpreter =
        std::make_unique<reference::Interpreter>(*compiled_->module, model);
  } else {
    codegen::cpu::CompiledCpuModule code = codegen::cpu::compileForCpu(
        *compiled_->module, native::resolveNativeTarget(target.name, "native"),
        target.entries, /*withAssembly=*/false, /*withBitcode=*/false,
        bf16WeightNames(model));
    compiled_->native =
        std::make_unique<NativeExecutor>(std::move(code), model);
  }

  // Trainable tensors are the leading arguments of @train_step that have a
  // ".grad" result; their types come from the IR.
  auto func = compiled_->module->lookupSymbol<mlir::func::FuncOp>("eval_step");
  std::mt19937_64 rng(seed);
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    auto name = func.getArgAttrOfType<mlir::StringAttr>(i, "loom.name");
    if (name.getValue() == "tokens")
      break;
    auto type = llvm::cast<mlir::RankedTensorType>(func.getArgumentTypes()[i]);
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    std::string n = name.str();
    names_.push_back(n);
    auto it = initial.find(n);
    if (it != initial.end()) {
      if (it->second.shape != shape) {
        auto format = [](const std::vector<int64_t> &dims) {
          std::string text = "[";
          for (size_t d = 0; d < dims.size(); ++d)
            text += (d ? ", " : "") + std::to_string(dims[d]);
          return text + "]";
        };
        throw FormatError("", n,
                          "shape " + format(it->second.shape) +
                              " does not fit this model (needs " +
                              format(shape) + ")");
      }
      params_[n] = it->second;
      continue;
    }
    HostTensor t = HostTensor::floats(shape);
    if (n.find(".lora_A.") != std::string::npos) {
      // PEFT: kaiming_uniform_(a=sqrt(5)) -> U(-1/sqrt(fan_in), +).
      double bound = 1.0 / std::sqrt(double(shape[1]));
      std::uniform_real_distribution<double> uniform(-bound, bound);
      for (float &v : t.data)
        v = float(uniform(rng));
    } else if (n.find(".lora_B.") == std::string::npos) {
      const ModelTensor *w = model.find(n);
      if (!w)
        throw FormatError(model.path(), n, "trainable tensor not in model");
      model.dequantize(*w, t.data.data());
    }
    params_[n] = std::move(t);
  }
  for (const auto &[name, value] : initial)
    if (!params_.count(name))
      throw FormatError("", name,
                        "adapter tensor matches no trainable parameter of this "
                        "model and configuration");
  auto trainStep =
      compiled_->module->lookupSymbol<mlir::func::FuncOp>("train_step");
  for (unsigned i = 0; i < trainStep.getNumArguments(); ++i) {
    std::string name =
        trainStep.getArgAttrOfType<mlir::StringAttr>(i, "loom.name").str();
    if (!params_.count(name) && name.find('.') != std::string::npos) {
      stateNames_.push_back(name);
      size_t dot = name.find('.');
      state_[name] = HostTensor::floats(params_.at(name.substr(dot + 1)).shape);
    }
  }
}

TrainingSession::~TrainingSession() = default;

TrainingSession::StepResult TrainingSession::step(const Batch &batch,
                                                  float lr) {
  std::map<std::string, HostTensor> args = params_;
  for (auto &[name, value] : state_)
    args[name] = value;
  args["tokens"] = batch.tokens;
  args["positions"] = batch.positions;
  args["labels"] = batch.labels;
  args["loss_mask"] = batch.lossMask;
  args["lr"] = HostTensor::scalar(lr);
  args["step"] = HostTensor::scalar(float(steps_ + 1));
  std::map<std::string, HostTensor> out = compiled_->run("train_step", args);
  StepResult result;
  result.loss = out.at("loss").data[0];
  result.gradNorm = out.at("grad_norm").data[0];
  for (const std::string &name : names_) {
    params_[name] = std::move(out.at(name));
    result.grads[name + ".grad"] = std::move(out.at(name + ".grad"));
  }
  for (const std::string &name : stateNames_)
    state_[name] = std::move(out.at(name));
  ++steps_;
  return result;
}

TrainingSession::StepResult
TrainingSession::stepAccumulated(const std::vector<Batch> &microBatches,
                                 float lr) {
  if (microBatches.size() == 1)
    return step(microBatches.front(), lr);
  std::map<std::string, HostTensor> accumulators;
  for (const std::string &name : names_)
    accumulators["grad." + name] = HostTensor::floats(params_.at(name).shape);
  StepResult result;
  float scale = 1.0f / float(microBatches.size());
  for (const Batch &batch : microBatches) {
    std::map<std::string, HostTensor> args = params_;
    for (auto &[name, value] : accumulators)
      args[name] = value;
    args["tokens"] = batch.tokens;
    args["positions"] = batch.positions;
    args["labels"] = batch.labels;
    args["loss_mask"] = batch.lossMask;
    args["grad_scale"] = HostTensor::scalar(scale);
    std::map<std::string, HostTensor> out =
        compiled_->run("accumulate_step", args);
    result.loss += out.at("loss").data[0] * scale;
    for (auto &[name, value] : accumulators)
      value = std::move(out.at(name));
  }
  std::map<std::string, HostTensor> args = params_;
  for (auto &[name, value] : state_)
    args[name] = value;
  for (auto &[name, value] : accumulators)
    args[name] = value;
  args["lr"] = HostTensor::scalar(lr);
  args["step"] = HostTensor::scalar(float(steps_ + 1));
  std::map<std::string, HostTensor> out = compiled_->run("apply_step", args);
  result.gradNorm = out.at("grad_norm").data[0];
  for (const std::string &name : names_) {
    params_[name] = std::move(out.at(name));
    result.grads[name + ".grad"] = std::move(accumulators.at("grad." + name));
  }
  for (const std::string &name : stateNames_)
    state_[name] = std::move(out.at(name));
  ++steps_;
  return result;
}

std::pair<float, float> TrainingSession::evaluate(const Batch &batch) {
  std::map<std::string, HostTensor> args = params_;
  args["tokens"] = batch.tokens;
  args["positions"] = batch.positions;
  args["labels"] = batch.labels;
  args["loss_mask"] = batch.lossMask;
  std::map<std::string, HostTensor> out = compiled_->run("eval_step", args);
  return {out.at("loss").data[0], out.at("token_count").data[0]};
}

} // namespace bitloom

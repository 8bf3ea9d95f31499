//===- main.cpp - The bitloom host tool -----------------------------------===//
//
// bitloom make-model | import | inspect | tokenize. Every user error ends as
// one "error: <file>: <field>: <what>" line and exit status 1.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "ImportModel.h"

#include "artifact/Artifact.h"
#include "artifact/Describe.h"
#include "dialects/loom/LoomDialect.h"
#include "formats/Error.h"
#include "formats/Gguf.h"
#include "formats/MappedFile.h"
#include "model/MakeModel.h"
#include "model/Model.h"
#include "passes/Passes.h"
#include "tokenizer/Tokenizer.h"

#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_ostream.h"

#include <CLI/CLI.hpp>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

using namespace bitloom;

namespace {

std::string joinShape(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const char *packingName(TensorPacking p) {
  switch (p) {
  case TensorPacking::Plain:
    return "plain";
  case TensorPacking::HfUint8:
    return "hf_u8";
  case TensorPacking::TQ1_0:
    return "tq1_0";
  case TensorPacking::TQ2_0:
    return "tq2_0";
  }
  return "?";
}

//===----------------------------------------------------------------------===//
// make-model
//===----------------------------------------------------------------------===//

struct MakeModelArgs {
  MakeModelOptions options;
  std::string format = "hf";
  std::string out;
};

int runMakeModel(MakeModelArgs &args) {
  if (args.format == "hf")
    args.options.format = CheckpointFormat::HuggingFace;
  else if (args.format == "gguf")
    args.options.format = CheckpointFormat::Gguf;
  else
    throw FormatError("", "--format",
                      "unknown format '" + args.format + "' (hf or gguf)");
  makeModel(args.options, args.out);
  std::printf("wrote %s model (%s) to %s\n", args.options.preset.c_str(),
              args.format.c_str(), args.out.c_str());
  return 0;
}

//===----------------------------------------------------------------------===//
// import
//===----------------------------------------------------------------------===//

struct ImportArgs {
  std::string model;
  std::string output;
  int64_t loraRank = 0;
  double loraAlpha = 8.0;
  double loraDropout = 0.0;
  std::string loraTargets = "all";
  bool summary = false;
};

/// A short description of the graph: what a user checks after import.
void printSummary(mlir::ModuleOp module, const Model &model) {
  std::map<std::string, int64_t> opCounts;
  int64_t frozen = 0, trainable = 0, loraTensors = 0;
  std::map<std::string, bool> seen;
  module.walk([&](mlir::Operation *op) {
    if (op->getDialect() && op->getDialect()->getNamespace() == "loom")
      ++opCounts[op->getName().getStringRef().str()];
    auto param = llvm::dyn_cast<loom::ParamOp>(op);
    if (!param || seen[param.getName().str()])
      return;
    seen[param.getName().str()] = true;
    llvm::ArrayRef<int64_t> shape;
    if (auto t = llvm::dyn_cast<loom::TernaryType>(param.getType()))
      shape = t.getShape();
    else
      shape = llvm::cast<mlir::RankedTensorType>(param.getType()).getShape();
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    if (param.getKind() == loom::ParamKind::weight) {
      frozen += n;
    } else {
      trainable += n;
      ++loraTensors;
    }
  });
  const ModelConfig &c = model.config();
  std::printf("model: %s (%s)\n", model.path().c_str(),
              model.format() == ModelFormat::Gguf ? "gguf" : "huggingface");
  std::printf("  layers %" PRId64 ", hidden %" PRId64 ", ffn %" PRId64
              ", heads %" PRId64 " (kv %" PRId64 ", head_dim %" PRId64
              "), vocab %" PRId64 ", rope_theta %g, weights %s\n",
              c.numLayers, c.hiddenSize, c.intermediateSize, c.numHeads,
              c.numKvHeads, c.headDim, c.vocabSize, c.ropeTheta,
              c.weightQuant == WeightQuant::Online ? "online (master)"
                                                   : "offline (ternary)");
  std::printf("graph @forward:\n");
  for (auto &[name, count] : opCounts)
    std::printf("  %-20s %6" PRId64 "\n", name.c_str(), count);
  std::printf("parameters: %" PRId64 " frozen, %" PRId64
              " trainable in %" PRId64 " LoRA tensors\n",
              frozen, trainable, loraTensors);
}

int runImport(const ImportArgs &args) {
  std::unique_ptr<Model> model = Model::open(args.model);
  LoRAOptions lora;
  lora.rank = args.loraRank;
  lora.alpha = args.loraAlpha;
  lora.dropout = args.loraDropout;
  if (lora.rank < 0)
    throw FormatError("", "--lora-rank", "must be >= 0");
  if (lora.rank > 0)
    lora.targets = parseLoRATargets(args.loraTargets);

  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module = importModel(context, *model, lora);
  mlir::PassManager pm(&context);
  pm.addPass(createLoomVerifyModel());
  if (mlir::failed(mlir::verify(*module)) || mlir::failed(pm.run(*module)))
    throw FormatError(args.model, "", "the imported graph does not verify");

  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  os.flush();
  if (args.output.empty() || args.output == "-")
    std::fwrite(text.data(), 1, text.size(), stdout);
  else
    writeFileAtomically(args.output, text.data(), text.size());
  if (args.summary)
    printSummary(*module, *model);
  return 0;
}

//===----------------------------------------------------------------------===//
// inspect
//===----------------------------------------------------------------------===//

int runInspect(const std::string &path, bool stats) {
  if (std::filesystem::path(path).extension() == ".blm") {
    std::unique_ptr<blm::Artifact> artifact = blm::Artifact::open(path);
    if (stats)
      artifact->verify(/*full=*/true); // every weight's checksum
    blm::describeArtifact(*artifact, std::cout);
    return 0;
  }
  std::unique_ptr<Model> model = Model::open(path);
  std::printf("format: %s\n",
              model->format() == ModelFormat::Gguf ? "gguf" : "huggingface");
  std::printf("metadata:\n");
  for (auto &[key, value] : model->metadata())
    std::printf("  %s = %s\n", key.c_str(), value.c_str());
  std::printf("tensors: %zu\n", model->tensors().size());
  std::vector<float> buffer;
  for (const ModelTensor &t : model->tensors()) {
    std::printf("  %s  %s/%s  %s", t.name.c_str(), dtypeName(t.dtype),
                packingName(t.packing), joinShape(t.shape).c_str());
    if (t.fileName != t.name)
      std::printf("  (%s)", t.fileName.c_str());
    if (stats) {
      // Row blocks keep memory flat whatever the tensor's size.
      int64_t rows = t.shape.empty() ? 1 : t.shape[0];
      int64_t rowSize = rows ? int64_t(t.numElements()) / rows : 0;
      int64_t rowsPerChunk =
          std::max<int64_t>(1, (1 << 22) / std::max<int64_t>(1, rowSize));
      double sum = 0, sumSq = 0;
      for (int64_t r = 0; r < rows; r += rowsPerChunk) {
        int64_t end = std::min(rows, r + rowsPerChunk);
        buffer.resize(size_t((end - r) * rowSize));
        if (t.shape.size() <= 1)
          model->dequantize(t, buffer.data());
        else
          model->dequantizeRows(t, r, end, buffer.data());
        for (float v : buffer) {
          sum += double(v);
          sumSq += double(v) * double(v);
        }
      }
      std::printf("  count=%" PRIu64 " sum=%.17g sumsq=%.17g", t.numElements(),
                  sum, sumSq);
    }
    std::printf("\n");
  }
  return 0;
}

//===----------------------------------------------------------------------===//
// tokenize
//===----------------------------------------------------------------------===//

int runTokenize(const std::string &modelPath, const std::string &text,
                const std::string &file, bool noSpecial) {
  std::unique_ptr<Tokenizer> tokenizer = openTokenizer(modelPath);
  std::string input = text;
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in)
      throw FormatError(file, "", "cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    input = ss.str();
    if (!input.empty() && input.back() == '\n')
      input.pop_back();
  }
  std::string out;
  std::stringstream lines(input);
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<int32_t> ids = tokenizer->encode(line, !noSpecial);
    for (size_t i = 0; i < ids.size(); ++i)
      out += (i ? " " : "") + std::to_string(ids[i]);
    out += "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"bitloom: compile BitNet b1.58 + LoRA training for devices"};
  app.require_subcommand(1);

  MakeModelArgs makeArgs;
  auto *make = app.add_subcommand(
      "make-model", "write a seeded random BitNet checkpoint (HF or GGUF)");
  make->add_option("--preset", makeArgs.options.preset, "tiny | small | 2b4t")
      ->capture_default_str();
  make->add_option("--format", makeArgs.format, "hf | gguf")
      ->capture_default_str();
  make->add_option("--seed", makeArgs.options.seed, "random seed")
      ->capture_default_str();
  make->add_flag("--packed", makeArgs.options.packed,
                 "HF: store projections packed (uint8 + weight_scale)");
  make->add_option("--gguf-type", makeArgs.options.ggufProjectionType,
                   "GGUF projection type: TQ2_0 | TQ1_0 | F32 | F16 | BF16")
      ->capture_default_str();
  make->add_option("--out", makeArgs.out, "output directory (hf) or file")
      ->required();

  ImportArgs importArgs;
  auto *imp = app.add_subcommand("import",
                                 "read a model (HF dir or GGUF) into loom IR");
  imp->add_option("model", importArgs.model, "model directory or .gguf file")
      ->required();
  imp->add_option("-o,--output", importArgs.output,
                  "output .mlir (- = stdout)");
  imp->add_option("--lora-rank", importArgs.loraRank, "LoRA rank (0 = none)")
      ->capture_default_str();
  imp->add_option("--lora-alpha", importArgs.loraAlpha, "LoRA alpha")
      ->capture_default_str();
  imp->add_option("--lora-dropout", importArgs.loraDropout, "LoRA dropout")
      ->capture_default_str();
  imp->add_option("--lora-targets", importArgs.loraTargets,
                  "q,k,v,o,gate,up,down | attn | ffn | all")
      ->capture_default_str();
  imp->add_flag("--summary", importArgs.summary, "print a graph summary");

  std::string inspectPath;
  bool inspectStats = false;
  auto *inspect =
      app.add_subcommand("inspect", "list a model's metadata and tensors");
  inspect
      ->add_option("model", inspectPath,
                   "model directory, .gguf file or compiled .blm")
      ->required();
  inspect->add_flag("--stats", inspectStats,
                    "count, sum and sum of squares of dequantized values");

  std::string tokModel, tokText, tokFile;
  bool tokNoSpecial = false;
  auto *tokenize =
      app.add_subcommand("tokenize", "print token ids, one line per line");
  tokenize
      ->add_option("model", tokModel,
                   "model directory, tokenizer.json or .gguf file")
      ->required();
  auto *textOpt = tokenize->add_option("--text", tokText, "text to tokenize");
  auto *fileOpt = tokenize->add_option("--file", tokFile, "file to tokenize");
  textOpt->excludes(fileOpt);
  tokenize->add_flag("--no-special", tokNoSpecial,
                     "do not add BOS/special tokens");

  StepArgs stepArgs;
  addStepCommand(app, stepArgs);
  TrainArgs trainArgs;
  addTrainCommand(app, trainArgs);
  GenerateArgs generateArgs;
  addGenerateCommand(app, generateArgs);
  CompileArgs compileArgs;
  addCompileCommand(app, compileArgs);

  CLI11_PARSE(app, argc, argv);
  try {
    if (*make)
      return runMakeModel(makeArgs);
    if (*imp)
      return runImport(importArgs);
    if (*inspect)
      return runInspect(inspectPath, inspectStats);
    if (*stepArgs.command)
      return runStep(stepArgs);
    if (*trainArgs.command)
      return runTrain(trainArgs);
    if (*generateArgs.command)
      return runGenerate(generateArgs);
    if (*compileArgs.command)
      return runCompile(compileArgs);
    if (*tokenize) {
      if (textOpt->count() == 0 && fileOpt->count() == 0)
        throw FormatError("", "tokenize", "give --text or --file");
      return runTokenize(tokModel, tokText, tokFile, tokNoSpecial);
    }
  } catch (const std::exception &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

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
#include "artifact/MemoryReport.h"
#include "codegen/native/NativeEmitter.h"
#include "codegen/vulkan/Spirv.h"
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
#include "llvm/Bitcode/BitcodeReader.h"
#include "llvm/IR/InstIterator.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Transforms/Utils/Cloning.h"

#include <CLI/CLI.hpp>

#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include <unistd.h>

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

/// The code of one kernel in the artifact's llvm-bc executable: the kernel
/// (`<entry>_packed`), the entry point it calls and every function LLVM's
/// loop extractor made of a loop nest that they call, transitively.
struct KernelCode {
  std::string kernel;
  std::vector<llvm::Function *> functions; // definitions, the kernel first
  int64_t loopFunctions = 0;               // internal ones (extracted loops)
  std::map<std::string, int64_t> ukernelCalls; // bitloom_uk_* call sites
  int64_t numUkernelCalls() const {
    int64_t n = 0;
    for (auto &[name, calls] : ukernelCalls)
      n += calls;
    return n;
  }
};

/// The optimized LLVM module a CPU artifact carries beside its shared object
/// (CompileCommand.cpp), with each kernel's functions.
struct ArtifactIR {
  size_t executable = 0;
  llvm::LLVMContext context;
  std::unique_ptr<llvm::Module> module;
  std::vector<KernelCode> kernels;
};

KernelCode kernelCode(llvm::Module &module, const std::string &kernel,
                      const std::string &where) {
  KernelCode code;
  code.kernel = kernel;
  llvm::Function *root = module.getFunction(kernel);
  if (!root || root->isDeclaration())
    throw FormatError(where, kernel, "the LLVM module does not define it");
  std::set<llvm::Function *> seen = {root};
  code.functions.push_back(root);
  for (size_t i = 0; i < code.functions.size(); ++i)
    for (llvm::Instruction &inst : llvm::instructions(*code.functions[i]))
      for (llvm::Value *operand : inst.operands()) {
        auto *callee = llvm::dyn_cast<llvm::Function>(operand);
        if (!callee)
          continue;
        auto *call = llvm::dyn_cast<llvm::CallBase>(&inst);
        if (call && call->getCalledOperand() == callee &&
            callee->getName().starts_with("bitloom_uk_"))
          ++code.ukernelCalls[callee->getName().str()];
        if (!callee->isDeclaration() && seen.insert(callee).second) {
          code.functions.push_back(callee);
          if (callee->hasLocalLinkage())
            ++code.loopFunctions;
        }
      }
  return code;
}

/// Parses the artifact's llvm-bc executable; null when it has none (an
/// artifact from before it was added).
std::unique_ptr<ArtifactIR> readArtifactIR(const blm::Artifact &artifact) {
  for (size_t i = 0; i < artifact.numExecutables(); ++i) {
    const blm::fb::Executable &exe = artifact.executable(i);
    if (exe.format()->str() != "llvm-bc")
      continue;
    std::string where = artifact.path() + ": executable " + std::to_string(i);
    auto ir = std::make_unique<ArtifactIR>();
    ir->executable = i;
    blm::ByteSpan bytes = artifact.executableData(i);
    llvm::MemoryBufferRef buffer(
        llvm::StringRef(reinterpret_cast<const char *>(bytes.data()),
                        bytes.size()),
        where);
    llvm::Expected<std::unique_ptr<llvm::Module>> module =
        llvm::parseBitcodeFile(buffer, ir->context);
    if (!module)
      throw FormatError(where, "llvm-bc", llvm::toString(module.takeError()));
    ir->module = std::move(*module);
    for (uint32_t k = 0; exe.kernels() && k < exe.kernels()->size(); ++k)
      ir->kernels.push_back(
          kernelCode(*ir->module, exe.kernels()->Get(k)->name()->str(), where));
    return ir;
  }
  return nullptr;
}

/// A module of just `code`'s functions, the globals they use and
/// declarations of what they call.
std::unique_ptr<llvm::Module> kernelModule(const llvm::Module &module,
                                           const KernelCode &code) {
  std::set<const llvm::GlobalValue *> keep(code.functions.begin(),
                                           code.functions.end());
  llvm::ValueToValueMapTy map;
  std::unique_ptr<llvm::Module> result =
      llvm::CloneModule(module, map, [&](const llvm::GlobalValue *value) {
        return !llvm::isa<llvm::Function>(value) || keep.count(value);
      });
  for (bool changed = true; changed;) {
    changed = false;
    for (llvm::Function &f : llvm::make_early_inc_range(result->functions())) {
      f.removeDeadConstantUsers();
      if (f.isDeclaration() && f.use_empty()) {
        f.eraseFromParent();
        changed = true;
      }
    }
    for (llvm::GlobalVariable &g :
         llvm::make_early_inc_range(result->globals())) {
      g.removeDeadConstantUsers();
      if (g.use_empty()) {
        g.eraseFromParent();
        changed = true;
      }
    }
  }
  return result;
}

/// Kernel names become file names.
std::string fileStem(const std::string &kernel) {
  llvm::StringRef name(kernel);
  name.consume_back("_packed");
  std::string stem;
  for (char c : name)
    stem += std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
                    c == '-' || c == '.'
                ? c
                : '_';
  return stem.empty() || stem[0] == '.' ? "_" + stem : stem;
}

/// Writes DIR/<entry>.ll and DIR/<entry>.s per kernel and DIR/index.txt.
void dumpKernels(const blm::Artifact &artifact, ArtifactIR &ir,
                 const std::string &dir) {
  blm::TargetInfo info = artifact.target();
  const blm::fb::Executable &exe = artifact.executable(ir.executable);
  std::string targetName =
      exe.target() && exe.target()->size() ? exe.target()->str() : info.name;
  native::NativeTarget target =
      native::resolveNativeTarget(targetName, info.cpu);
  for (size_t i = 0; i < info.features.size(); ++i)
    target.features += (i ? "," : "") + info.features[i];
  std::unique_ptr<llvm::TargetMachine> machine =
      native::createTargetMachine(target);

  namespace fs = std::filesystem;
  std::string index =
      "# bitloom inspect --dump-kernels\nartifact: " + artifact.path() +
      "\ntarget: " + targetName + " (" + target.triple + "), cpu " +
      target.cpu + (target.features.empty() ? "" : ", features ") +
      target.features + "\n";
  for (const KernelCode &code : ir.kernels) {
    std::string stem = fileStem(code.kernel);
    std::unique_ptr<llvm::Module> module = kernelModule(*ir.module, code);
    std::string text;
    llvm::raw_string_ostream os(text);
    module->print(os, nullptr);
    writeFileAtomically((fs::path(dir) / (stem + ".ll")).string(), text.data(),
                        text.size());

    module->setDataLayout(machine->createDataLayout());
    llvm::SmallString<0> assembly;
    llvm::raw_svector_ostream asmStream(assembly);
    llvm::legacy::PassManager pm;
    if (machine->addPassesToEmitFile(pm, asmStream, nullptr,
                                     llvm::CodeGenFileType::AssemblyFile))
      throw FormatError(artifact.path(), code.kernel,
                        "LLVM cannot emit assembly for " + targetName);
    pm.run(*module);
    writeFileAtomically((fs::path(dir) / (stem + ".s")).string(),
                        assembly.data(), assembly.size());

    index +=
        "kernel " + code.kernel + ": " + stem + ".ll " + stem + ".s, " +
        std::to_string(code.functions.size()) + " functions, " +
        std::to_string(code.loopFunctions) + " extracted loop functions, " +
        std::to_string(code.numUkernelCalls()) + " bitloom_uk_* call sites\n";
    for (auto &[name, calls] : code.ukernelCalls)
      index += "  " + name + ": " + std::to_string(calls) + " call sites\n";
  }
  writeFileAtomically((fs::path(dir) / "index.txt").string(), index.data(),
                      index.size());
  std::printf("wrote the LLVM IR and assembly of %zu kernels to %s\n",
              ir.kernels.size(), dir.c_str());
}

/// Vulkan artifacts: DIR/<kernel>.spv (the binary the device loads) and
/// DIR/<kernel>.spvasm (its disassembly) per SPIR-V executable, and
/// DIR/index.txt (workgroup size and dispatches per kernel).
void dumpSpirvKernels(const blm::Artifact &artifact, const std::string &dir) {
  namespace fs = std::filesystem;
  std::map<uint32_t, size_t> uses;
  const blm::fb::Manifest &m = artifact.manifest();
  if (m.entry_points())
    for (const blm::fb::EntryPoint *entry : *m.entry_points())
      if (entry->dispatches())
        for (const blm::fb::Dispatch *d : *entry->dispatches())
          ++uses[d->executable()];
  std::string index =
      "# bitloom inspect --dump-kernels\nartifact: " + artifact.path() +
      "\ntarget: " + artifact.target().name + "\n";
  size_t written = 0;
  for (size_t i = 0; i < artifact.numExecutables(); ++i) {
    const blm::fb::Executable &exe = artifact.executable(i);
    if (exe.format()->str() != "spirv")
      continue;
    blm::ByteSpan bytes = artifact.executableData(i);
    std::string name = exe.name() ? exe.name()->str() : std::to_string(i);
    std::string stem = fileStem(name);
    writeFileAtomically((fs::path(dir) / (stem + ".spv")).string(),
                        bytes.data(), bytes.size());
    std::vector<uint32_t> words(bytes.size() / 4);
    std::memcpy(words.data(), bytes.data(), words.size() * 4);
    std::string text = codegen::vulkan::disassembleSpirv(words);
    writeFileAtomically((fs::path(dir) / (stem + ".spvasm")).string(),
                        text.data(), text.size());
    const blm::fb::Kernel *k = exe.kernels() && exe.kernels()->size()
                                   ? exe.kernels()->Get(0)
                                   : nullptr;
    std::string size = k && k->workgroup_size()
                           ? std::to_string(k->workgroup_size()->x()) + "x" +
                                 std::to_string(k->workgroup_size()->y()) +
                                 "x" + std::to_string(k->workgroup_size()->z())
                           : "?";
    index += "kernel " + name + ": " + stem + ".spv " + stem +
             ".spvasm, workgroup " + size + ", " +
             std::to_string(bytes.size()) + " bytes, " +
             std::to_string(uses[uint32_t(i)]) + " dispatches\n";
    ++written;
  }
  writeFileAtomically((fs::path(dir) / "index.txt").string(), index.data(),
                      index.size());
  std::printf("wrote the SPIR-V binary and disassembly of %zu kernels to %s\n",
              written, dir.c_str());
}

int runInspect(const std::string &path, bool stats, const std::string &dumpDir,
               bool memory, const std::string &svgPath) {
  if (std::filesystem::path(path).extension() == ".blm") {
    std::unique_ptr<blm::Artifact> artifact = blm::Artifact::open(path);
    if (memory || !svgPath.empty()) {
      blm::MemoryReport report = blm::memoryReport(*artifact);
      if (memory)
        blm::printMemoryReport(*artifact, report, std::cout);
      if (!svgPath.empty()) {
        std::string tmp = svgPath + ".tmp";
        {
          std::ofstream out(tmp, std::ios::binary);
          out << blm::memorySvg(*artifact, report);
          if (!out.flush())
            throw FormatError(svgPath, "--svg", "cannot write the file");
        }
        std::filesystem::rename(tmp, svgPath);
      }
      return 0;
    }
    if (stats)
      artifact->verify(/*full=*/true); // every weight's checksum
    bool spirv = llvm::StringRef(artifact->target().name).starts_with("vulkan");
    std::unique_ptr<ArtifactIR> ir;
    try {
      // SPIR-V artifacts carry their kernels' code as SPIR-V, no LLVM IR.
      if (!spirv)
        ir = readArtifactIR(*artifact);
    } catch (const FormatError &e) {
      // Only --dump-kernels needs the IR (e.g. bitcode of a newer LLVM).
      if (!dumpDir.empty())
        throw;
      std::fprintf(stderr, "warning: %s\n", e.what());
    }
    if (!dumpDir.empty()) {
      if (!ir && !spirv)
        throw FormatError(path, "--dump-kernels",
                          "the artifact has no llvm-bc executable (it was "
                          "compiled before bitloom kept its LLVM IR); "
                          "compile it again");
      std::error_code error;
      std::filesystem::create_directories(dumpDir, error);
      if (!std::filesystem::is_directory(dumpDir))
        throw FormatError(dumpDir, "--dump-kernels",
                          "cannot create the directory" +
                              (error ? ": " + error.message() : ""));
      if (::access(dumpDir.c_str(), W_OK | X_OK) != 0)
        throw FormatError(dumpDir, "--dump-kernels",
                          "the directory is not writable");
    }
    blm::DescribeOptions options;
    // A step has hundreds of buffers: --memory lists those that matter.
    options.slots = false;
    if (ir)
      for (const KernelCode &code : ir->kernels)
        options.kernelNotes[code.kernel] =
            "code (executable " + std::to_string(ir->executable) +
            ", llvm-bc): " + std::to_string(code.loopFunctions) +
            " extracted loop functions, " +
            std::to_string(code.numUkernelCalls()) + " bitloom_uk_* call sites";
    blm::describeArtifact(*artifact, std::cout, options);
    std::cout.flush();
    if (!dumpDir.empty()) {
      if (spirv)
        dumpSpirvKernels(*artifact, dumpDir);
      else
        dumpKernels(*artifact, *ir, dumpDir);
    }
    return 0;
  }
  if (!dumpDir.empty())
    throw FormatError(path, "--dump-kernels",
                      "only a compiled .blm artifact has kernels");
  if (memory || !svgPath.empty())
    throw FormatError(path, memory ? "--memory" : "--svg",
                      "only a compiled .blm artifact has a memory plan");
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
  make->add_flag("--repeat-blocks", makeArgs.options.repeatBlocks,
                 "every 65536-value block of a tensor repeats the first: "
                 "files that compress to almost nothing (benchmark models)");
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
      app.add_subcommand("inspect", "list a model's metadata and tensors, or "
                                    "a compiled artifact's entry points, "
                                    "kernels and parameters");
  inspect
      ->add_option("model", inspectPath,
                   "model directory, .gguf file or compiled .blm")
      ->required();
  inspect->add_flag("--stats", inspectStats,
                    "count, sum and sum of squares of dequantized values");
  std::string inspectDumpKernels;
  inspect->add_option("--dump-kernels", inspectDumpKernels,
                      ".blm: write each kernel's LLVM IR and assembly to "
                      "DIR/<entry>.ll, DIR/<entry>.s and DIR/index.txt");
  bool inspectMemory = false;
  std::string inspectSvg;
  inspect->add_flag("--memory", inspectMemory,
                    ".blm: the memory a training run holds (first line: "
                    "`peak total: N bytes`), per entry point the arena and "
                    "the largest buffers live at its peak");
  inspect->add_option("--svg", inspectSvg,
                      ".blm: draw live memory over each entry point's "
                      "schedule to FILE (SVG)");

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
      return runInspect(inspectPath, inspectStats, inspectDumpKernels,
                        inspectMemory, inspectSvg);
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

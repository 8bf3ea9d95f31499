//===- CpuLoweringTest.cpp - JIT-compiled steps vs the reference ----------===//
//
// Imports a seeded tiny BitNet (2 layers, GQA 4/2 heads, LoRA on every
// projection), builds the training functions with -loom-autodiff, fixes the
// shapes, lowers them through codegen/cpu's pipeline to LLVM, JIT-compiles
// them with mlir::ExecutionEngine and compares every result with the
// reference executor run on the same loom IR and the same inputs.
//
//===----------------------------------------------------------------------===//
#include "codegen/cpu/Pipeline.h"
#include "codegen/reference/Interpreter.h"
#include "dialects/loom/LoomDialect.h"
#include "model/MakeModel.h"
#include "model/Model.h"
#include "passes/Passes.h"
#include "test/unit/codegen/JitArgs.h"
#include "tools/bitloom/ImportModel.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/TargetSelect.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

using namespace mlir;
using bitloom::reference::HostTensor;

namespace {

namespace fs = std::filesystem;

constexpr int64_t kBatch = 2, kSeqLen = 5;

struct TensorSig {
  std::string name;
  std::vector<int64_t> shape;
  bool isInt = false;
  bool isParam = false; // a frozen weight appended by -loom-lower-to-linalg
};

struct Signature {
  std::vector<TensorSig> args, results;
};

TensorSig describe(Type type, std::string name, bool isParam) {
  auto tensor = cast<RankedTensorType>(type);
  return {std::move(name),
          {tensor.getShape().begin(), tensor.getShape().end()},
          tensor.getElementType().isInteger(32),
          isParam};
}

Signature signatureOf(func::FuncOp func) {
  Signature sig;
  for (unsigned i = 0; i < func.getNumArguments(); ++i)
    sig.args.push_back(
        describe(func.getArgumentTypes()[i],
                 func.getArgAttrOfType<StringAttr>(i, "loom.name").str(),
                 bool(func.getArgAttr(i, "loom.param"))));
  for (unsigned i = 0; i < func.getNumResults(); ++i)
    sig.results.push_back(describe(
        func.getResultTypes()[i],
        func.getResultAttrOfType<StringAttr>(i, "loom.name").str(), false));
  return sig;
}

/// Inputs that exercise every path: masked-out rows (with an ignored -100
/// label), non-trivial LoRA B (PEFT starts it at zero), optimizer state.
HostTensor makeInput(const TensorSig &sig, int64_t vocab, std::mt19937 &rng) {
  const std::string &n = sig.name;
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  if (sig.isInt) {
    std::vector<int32_t> values;
    for (int64_t b = 0; b < sig.shape[0]; ++b)
      for (int64_t t = 0; t < sig.shape[1]; ++t)
        values.push_back(n == "positions" ? int32_t(t)
                         : n == "labels" && t == 0
                             ? -100
                             : int32_t(rng() % uint32_t(vocab)));
    return HostTensor::int32s(sig.shape, values);
  }
  HostTensor t = HostTensor::floats(sig.shape);
  for (size_t i = 0; i < t.data.size(); ++i) {
    float u = uniform(rng);
    if (n == "loss_mask")
      t.data[i] = i % kSeqLen == 0 ? 0.0f : 1.0f;
    else if (n == "lr")
      t.data[i] = 1e-2f;
    else if (n == "step")
      t.data[i] = 3.0f;
    else if (n == "grad_scale")
      t.data[i] = 0.5f;
    else if (n.rfind("exp_avg_sq.", 0) == 0)
      t.data[i] = 1e-4f * (u + 1.0f);
    else if (n.size() > 11 && n.compare(n.size() - 11, 11, "norm.weight") == 0)
      t.data[i] = 1.0f + 0.1f * u;
    else
      t.data[i] = 0.1f * u;
  }
  return t;
}

using bitloom::test::PackedArgs;

struct Error {
  double normRelative = 0;    // max |jit - ref| / max |ref|
  double elementRelative = 0; // max |jit - ref| / |ref| where |ref| > 1e-3·max
  double maxRef = 0;
  size_t differing = 0; // elements not bit-identical
};

Error compare(const std::vector<float> &jit, const std::vector<float> &ref) {
  double maxRef = 0, maxDiff = 0;
  for (float r : ref)
    maxRef = std::max(maxRef, double(std::abs(r)));
  Error e;
  e.maxRef = maxRef;
  for (size_t i = 0; i < ref.size(); ++i) {
    double diff = std::abs(double(jit[i]) - double(ref[i]));
    // NaN never compares: count any non-finite value as a mismatch.
    if (!std::isfinite(double(jit[i])) || !std::isfinite(double(ref[i])))
      diff = INFINITY;
    e.differing += jit[i] != ref[i];
    maxDiff = std::max(maxDiff, diff);
    if (std::abs(ref[i]) > 1e-3 * maxRef)
      e.elementRelative =
          std::max(e.elementRelative, diff / std::abs(double(ref[i])));
  }
  e.normRelative = maxRef == 0 ? maxDiff : maxDiff / maxRef;
  return e;
}

class CpuLoweringTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    root_ =
        new fs::path(fs::temp_directory_path() /
                     ("bitloom-cpu-lowering-" + std::to_string(::getpid())));
    fs::create_directories(*root_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }

  /// Lowers `functions` of the model at `preset` (packed: offline ternary
  /// weights) trained with `autodiff`, runs each on the JIT and the reference
  /// executor, and checks every result.
  void check(bool packed, bitloom::LoomAutodiffOptions autodiff,
             const std::vector<std::string> &functions) {
    bitloom::MakeModelOptions make;
    make.preset = "tiny";
    make.seed = 11;
    make.packed = packed;
    std::string dir = (*root_ / (packed ? "packed" : "online")).string();
    if (!fs::exists(dir))
      bitloom::makeModel(make, dir);
    std::unique_ptr<bitloom::Model> model = bitloom::Model::open(dir);

    DialectRegistry registry;
    bitloom::codegen::cpu::registerCpuLoweringDependencies(registry);
    MLIRContext context(registry);
    context.loadAllAvailableDialects();
    bitloom::LoRAOptions lora;
    lora.rank = 4;
    lora.targets = bitloom::parseLoRATargets("all");
    OwningOpRef<ModuleOp> module = bitloom::importModel(context, *model, lora);
    ASSERT_TRUE(module);

    PassManager prepare(&context);
    prepare.addPass(bitloom::createLoomAutodiff(autodiff));
    bitloom::LoomSpecializeShapesOptions shapes;
    shapes.batch = kBatch;
    shapes.seqLen = kSeqLen;
    prepare.addPass(bitloom::createLoomSpecializeShapes(shapes));
    ASSERT_TRUE(succeeded(prepare.run(*module)));
    OwningOpRef<ModuleOp> reference = module->clone();

    PassManager toLinalg(&context);
    toLinalg.addPass(bitloom::createLoomLowerToLinalg());
    ASSERT_TRUE(succeeded(toLinalg.run(*module)));
    std::map<std::string, Signature> signatures;
    for (const std::string &name : functions)
      signatures[name] = signatureOf(module->lookupSymbol<func::FuncOp>(name));

    PassManager lower(&context);
    bitloom::codegen::cpu::buildCpuLoweringPipeline(lower);
    ASSERT_TRUE(succeeded(lower.run(*module)));
    auto engine = ExecutionEngine::create(*module);
    ASSERT_TRUE(bool(engine)) << llvm::toString(engine.takeError());

    bitloom::reference::Interpreter interpreter(*reference, *model);
    std::mt19937 rng(5);
    int64_t vocab = model->config().vocabSize;
    for (const std::string &name : functions) {
      const Signature &sig = signatures[name];
      std::map<std::string, HostTensor> inputs, params;
      for (const TensorSig &arg : sig.args) {
        if (arg.isParam) {
          const bitloom::ModelTensor *t = model->find(arg.name);
          ASSERT_NE(t, nullptr) << arg.name;
          HostTensor w = HostTensor::floats(arg.shape);
          model->dequantize(*t, w.data.data());
          params[arg.name] = std::move(w);
        } else {
          inputs[arg.name] = makeInput(arg, vocab, rng);
        }
      }
      std::map<std::string, HostTensor> expected =
          interpreter.run(name, inputs);

      PackedArgs packedArgs;
      for (const TensorSig &arg : sig.args) {
        HostTensor &t = arg.isParam ? params[arg.name] : inputs[arg.name];
        packedArgs.add(t.isInt ? static_cast<void *>(t.ints.data())
                               : static_cast<void *>(t.data.data()),
                       arg.shape);
      }
      std::vector<std::vector<float>> outputs;
      for (const TensorSig &result : sig.results) {
        int64_t count = 1;
        for (int64_t d : result.shape)
          count *= d;
        outputs.emplace_back(size_t(count), NAN);
      }
      for (size_t i = 0; i < sig.results.size(); ++i)
        packedArgs.add(outputs[i].data(), sig.results[i].shape);
      packedArgs.addArena(*module, name);
      llvm::Error error = (*engine)->invokePacked(name, packedArgs.pointers());
      ASSERT_FALSE(bool(error)) << llvm::toString(std::move(error));

      for (size_t i = 0; i < sig.results.size(); ++i) {
        const std::string &result = sig.results[i].name;
        ASSERT_TRUE(expected.count(result)) << result;
        Error e = compare(outputs[i], expected[result].data);
        std::printf("  @%s %s: max|ref| %.3e, norm-rel %.2e, elem-rel %.2e, "
                    "%zu/%zu not bit-identical\n",
                    name.c_str(), result.c_str(), e.maxRef, e.normRelative,
                    e.elementRelative, e.differing, outputs[i].size());
        EXPECT_LE(e.normRelative, 1e-4) << "@" << name << " " << result;
      }
    }
  }

  static fs::path *root_;
};

fs::path *CpuLoweringTest::root_ = nullptr;

// LoRA on master (online) weights with AdamW: the default training setup.
TEST_F(CpuLoweringTest, LoRAAdamWOnline) {
  bitloom::LoomAutodiffOptions autodiff;
  check(/*packed=*/false, autodiff, {"eval_step", "train_step"});
}

// Frozen ternary weights (!loom.ternary, passed dequantized), with gradient
// accumulation.
TEST_F(CpuLoweringTest, LoRAOfflineTernaryAccumulation) {
  bitloom::LoomAutodiffOptions autodiff;
  check(/*packed=*/true, autodiff,
        {"eval_step", "train_step", "accumulate_step", "apply_step"});
}

// Quantization-aware training of everything (embedding, norm and bitlinear
// weight gradients) with SGD momentum and gradient clipping.
TEST_F(CpuLoweringTest, AllSGDClipped) {
  bitloom::LoomAutodiffOptions autodiff;
  autodiff.trainable = "all";
  autodiff.optimizer = "sgd";
  autodiff.momentum = 0.9;
  autodiff.maxGradNorm = 0.5;
  check(/*packed=*/false, autodiff, {"train_step"});
}

} // namespace

//===- CpuGenerateTest.cpp - JIT-compiled @generate_step vs the reference -===//
//
// Builds @generate_step (-loom-build-generate) for a seeded tiny BitNet with
// LoRA on every projection, specializes it to the decoder step (one token
// per call at a runtime position), lowers it through codegen/cpu's pipeline,
// JIT-compiles it and runs a prompt token by token followed by greedy
// decoding, as `bitloom compile`'s artifacts run it. Each call's logits are
// compared with the reference executor's @generate_step on the same inputs,
// the greedy tokens of both must agree, and the last prompt token's logits
// must match a reference prefill of the whole prompt in one call.
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
#include <numeric>
#include <random>

using namespace mlir;
using bitloom::reference::HostTensor;

namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxTokens = 12;

struct TensorSig {
  std::string name;
  std::vector<int64_t> shape;
  bool isParam = false; // a frozen weight appended by -loom-lower-to-linalg
  int64_t numElements() const {
    return std::accumulate(shape.begin(), shape.end(), int64_t(1),
                           std::multiplies<int64_t>());
  }
};

TensorSig describe(Type type, StringAttr name, bool isParam) {
  auto tensor = cast<RankedTensorType>(type);
  return {name.str(),
          {tensor.getShape().begin(), tensor.getShape().end()},
          isParam};
}

using bitloom::test::PackedArgs;

/// max |jit - ref| / max |ref| (infinite when either is not finite).
double normRelative(const float *jit, const float *ref, size_t n) {
  double maxRef = 0, maxDiff = 0;
  for (size_t i = 0; i < n; ++i) {
    maxRef = std::max(maxRef, double(std::abs(ref[i])));
    double diff = std::abs(double(jit[i]) - double(ref[i]));
    if (!std::isfinite(double(jit[i])) || !std::isfinite(double(ref[i])))
      diff = INFINITY;
    maxDiff = std::max(maxDiff, diff);
  }
  return maxRef == 0 ? maxDiff : maxDiff / maxRef;
}

int32_t argmax(const float *logits, int64_t vocab) {
  return int32_t(std::max_element(logits, logits + vocab) - logits);
}

class CpuGenerateTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    root_ =
        new fs::path(fs::temp_directory_path() /
                     ("bitloom-cpu-generate-" + std::to_string(::getpid())));
    fs::create_directories(*root_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }

  /// Prefills `prompt` token by token, then decodes `newTokens` greedily.
  /// `aliasCaches`: bind one buffer per KV cache to both its argument and
  /// its result (the artifact's in-place contract); otherwise the result
  /// goes to a separate buffer that is copied back for the next call.
  void check(bool packed, bool aliasCaches, const std::vector<int32_t> &prompt,
             int64_t newTokens) {
    bitloom::MakeModelOptions make;
    make.preset = "tiny";
    make.seed = 7;
    make.packed = packed;
    std::string dir = (*root_ / (packed ? "packed" : "online")).string();
    if (!fs::exists(dir))
      bitloom::makeModel(make, dir);
    std::unique_ptr<bitloom::Model> model = bitloom::Model::open(dir);
    int64_t vocab = model->config().vocabSize;

    DialectRegistry registry;
    bitloom::codegen::cpu::registerCpuLoweringDependencies(registry);
    MLIRContext context(registry);
    context.loadAllAvailableDialects();
    bitloom::LoRAOptions lora;
    lora.rank = 4;
    lora.targets = bitloom::parseLoRATargets("all");
    OwningOpRef<ModuleOp> module = bitloom::importModel(context, *model, lora);
    ASSERT_TRUE(module);

    PassManager build(&context);
    bitloom::LoomBuildGenerateOptions generate;
    generate.maxTokens = kMaxTokens;
    build.addPass(bitloom::createLoomBuildGenerate(generate));
    ASSERT_TRUE(succeeded(build.run(*module)));
    // Dynamic shapes: the reference's prefill of a whole prompt in one call.
    OwningOpRef<ModuleOp> dynamic = module->clone();
    PassManager specialize(&context);
    bitloom::LoomSpecializeShapesOptions shapes;
    shapes.batch = 2; // the training shape; @generate_step gets [1, 1]
    shapes.seqLen = 5;
    specialize.addPass(bitloom::createLoomSpecializeShapes(shapes));
    ASSERT_TRUE(succeeded(specialize.run(*module)));
    OwningOpRef<ModuleOp> reference = module->clone();

    for (auto func : llvm::make_early_inc_range(module->getOps<func::FuncOp>()))
      if (func.getName() != "generate_step")
        func.erase();
    PassManager toLinalg(&context);
    toLinalg.addPass(bitloom::createLoomLowerToLinalg());
    ASSERT_TRUE(succeeded(toLinalg.run(*module)));
    auto func = module->lookupSymbol<func::FuncOp>("generate_step");
    std::vector<TensorSig> args, results;
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      args.push_back(describe(func.getArgumentTypes()[i],
                              func.getArgAttrOfType<StringAttr>(i, "loom.name"),
                              bool(func.getArgAttr(i, "loom.param"))));
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      results.push_back(describe(
          func.getResultTypes()[i],
          func.getResultAttrOfType<StringAttr>(i, "loom.name"), false));
    ASSERT_EQ(results.front().name, "logits");
    EXPECT_EQ(results.front().shape, (std::vector<int64_t>{1, 1, vocab}));

    PassManager lower(&context);
    bitloom::codegen::cpu::buildCpuLoweringPipeline(lower);
    ASSERT_TRUE(succeeded(lower.run(*module)));
    auto engine = ExecutionEngine::create(*module);
    ASSERT_TRUE(bool(engine)) << llvm::toString(engine.takeError());

    // Buffers by name: LoRA matrices (random, B non-zero), zeroed caches,
    // dequantized weights; tokens and positions are filled per call.
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::map<std::string, HostTensor> state, weights;
    int64_t caches = 0;
    for (const TensorSig &arg : args) {
      if (arg.isParam) {
        const bitloom::ModelTensor *t = model->find(arg.name);
        ASSERT_NE(t, nullptr) << arg.name;
        HostTensor w = HostTensor::floats(arg.shape);
        model->dequantize(*t, w.data.data());
        weights[arg.name] = std::move(w);
      } else if (arg.name == "tokens" || arg.name == "positions") {
        EXPECT_EQ(arg.shape, (std::vector<int64_t>{1, 1})) << arg.name;
        state[arg.name] = HostTensor::int32s({1, 1}, {0});
      } else if (arg.name.find("_cache.") != std::string::npos) {
        EXPECT_EQ(arg.shape[0], 1);
        EXPECT_EQ(arg.shape[1], kMaxTokens);
        state[arg.name] = HostTensor::floats(arg.shape, 0.0f);
        ++caches;
      } else {
        HostTensor t = HostTensor::floats(arg.shape);
        for (float &v : t.data)
          v = 0.1f * uniform(rng);
        state[arg.name] = std::move(t);
      }
    }
    EXPECT_EQ(caches, 2 * model->config().numLayers);
    std::map<std::string, HostTensor> refState = state;
    bitloom::reference::Interpreter interpreter(*reference, *model);

    std::map<std::string, std::vector<float>> outputs;
    for (const TensorSig &r : results)
      if (!aliasCaches || r.name == "logits")
        outputs[r.name].assign(size_t(r.numElements()), NAN);
    PackedArgs packedArgs;
    for (const TensorSig &arg : args) {
      HostTensor &t = arg.isParam ? weights[arg.name] : state[arg.name];
      packedArgs.add(t.isInt ? static_cast<void *>(t.ints.data())
                             : static_cast<void *>(t.data.data()),
                     arg.shape);
    }
    for (const TensorSig &r : results)
      packedArgs.add(outputs.count(r.name) ? outputs[r.name].data()
                                           : state[r.name].data.data(),
                     r.shape);
    packedArgs.addArena(*module, "generate_step");

    std::vector<int32_t> jitTokens, refTokens;
    int32_t jitNext = 0, refNext = 0;
    std::vector<float> lastPromptLogits;
    int64_t steps = int64_t(prompt.size()) + newTokens - 1;
    ASSERT_LE(steps, kMaxTokens);
    for (int64_t position = 0; position < steps; ++position) {
      bool prefill = position < int64_t(prompt.size());
      state["tokens"].ints[0] = prefill ? prompt[position] : jitNext;
      state["positions"].ints[0] = int32_t(position);
      llvm::Error error =
          (*engine)->invokePacked("generate_step", packedArgs.pointers());
      ASSERT_FALSE(bool(error)) << llvm::toString(std::move(error));
      if (!aliasCaches)
        for (auto &[name, value] : outputs)
          if (name != "logits")
            state[name].data = value;

      refState["tokens"] =
          HostTensor::int32s({1, 1}, {prefill ? prompt[position] : refNext});
      refState["positions"] = HostTensor::int32s({1, 1}, {int32_t(position)});
      std::map<std::string, HostTensor> expected =
          interpreter.run("generate_step", refState);
      for (auto &[name, value] : refState)
        if (name != "tokens" && name != "positions" && expected.count(name))
          value = expected.at(name);

      const std::vector<float> &logits = outputs["logits"];
      const std::vector<float> &refLogits = expected.at("logits").data;
      double error1 = normRelative(logits.data(), refLogits.data(), vocab);
      std::printf("  position %lld: logits norm-rel %.2e\n",
                  (long long)position, error1);
      EXPECT_LE(error1, 1e-4) << "logits at position " << position;
      jitNext = argmax(logits.data(), vocab);
      refNext = argmax(refLogits.data(), vocab);
      if (position + 1 == int64_t(prompt.size()))
        lastPromptLogits = logits;
      if (!prefill || position + 1 == int64_t(prompt.size())) {
        jitTokens.push_back(jitNext);
        refTokens.push_back(refNext);
      }
    }
    EXPECT_EQ(jitTokens, refTokens);
    ASSERT_EQ(int64_t(jitTokens.size()), newTokens);

    // The caches the JIT threaded equal the reference's.
    for (auto &[name, value] : state)
      if (name.find("_cache.") != std::string::npos)
        EXPECT_LE(normRelative(value.data.data(), refState.at(name).data.data(),
                               value.data.size()),
                  1e-4)
            << name;

    // Token-by-token prefill equals the reference's one-call prefill.
    bitloom::reference::Interpreter whole(*dynamic, *model);
    std::map<std::string, HostTensor> inputs;
    for (auto &[name, value] : state)
      inputs[name] = name.find("_cache.") != std::string::npos
                         ? HostTensor::floats(value.shape, 0.0f)
                         : value;
    int64_t n = int64_t(prompt.size());
    std::vector<int32_t> positions(prompt.size());
    std::iota(positions.begin(), positions.end(), 0);
    inputs["tokens"] = HostTensor::int32s({1, n}, prompt);
    inputs["positions"] = HostTensor::int32s({1, n}, positions);
    std::map<std::string, HostTensor> prefill =
        whole.run("generate_step", inputs);
    const float *chunkLast = prefill.at("logits").data.data() + (n - 1) * vocab;
    EXPECT_LE(normRelative(lastPromptLogits.data(), chunkLast, vocab), 1e-4);
  }

  static fs::path *root_;
};

fs::path *CpuGenerateTest::root_ = nullptr;

// Master (online) weights; caches updated in place through one buffer each.
TEST_F(CpuGenerateTest, OnlineInPlaceCaches) {
  check(/*packed=*/false, /*aliasCaches=*/true, {1, 17, 42, 5}, 5);
}

// Offline ternary weights; caches in separate argument and result buffers.
TEST_F(CpuGenerateTest, OfflineTernarySeparateCaches) {
  check(/*packed=*/true, /*aliasCaches=*/false, {3, 99, 7}, 6);
}

} // namespace

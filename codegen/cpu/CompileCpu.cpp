//===- CompileCpu.cpp - A trained step to a native shared object ----------===//
#include "codegen/cpu/CompileCpu.h"

#include "codegen/cpu/Pipeline.h"
#include "formats/Error.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Pass/PassManager.h"

#include <algorithm>
#include <set>

using namespace mlir;

namespace bitloom::codegen::cpu {

int64_t TensorSignature::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int64_t TensorSignature::byteSize() const {
  return numElements() * (dtype == "i8" ? 1 : dtype == "bf16" ? 2 : 4);
}

const FunctionSignature *
CompiledCpuModule::find(const std::string &name) const {
  for (const FunctionSignature &f : functions)
    if (f.name == name)
      return &f;
  return nullptr;
}

static TensorSignature signatureOf(Type type, StringAttr name, bool isWeight,
                                   StringAttr packing) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape())
    throw FormatError("", "compile",
                      "entry points need static shapes (specialize first)");
  TensorSignature sig;
  sig.name = name ? name.str() : "";
  sig.shape.assign(tensor.getShape().begin(), tensor.getShape().end());
  sig.isInt = tensor.getElementType().isInteger(32);
  sig.dtype = sig.isInt                              ? "i32"
              : tensor.getElementType().isInteger(8) ? "i8"
              : tensor.getElementType().isBF16()     ? "bf16"
                                                     : "f32";
  sig.isWeight = isWeight;
  sig.packing = packing ? packing.str() : "";
  return sig;
}

/// The names in `names` that are still loom.param (frozen) in `module`.
static std::vector<std::string>
frozenAmong(ModuleOp module, const std::vector<std::string> &names) {
  std::set<std::string> wanted(names.begin(), names.end()), found;
  module.walk([&](loom::ParamOp p) {
    if (wanted.count(p.getName().str()))
      found.insert(p.getName().str());
  });
  return {found.begin(), found.end()};
}

namespace {

/// Reads (and removes) what -loom-plan-arena recorded on `func`.
void takeMemoryPlan(Operation *func, FunctionSignature &sig) {
  auto arena =
      func ? func->getAttrOfType<IntegerAttr>("loom.arena_bytes") : nullptr;
  if (!arena)
    throw FormatError("", sig.name, "the step has no memory plan");
  sig.arenaBytes = arena.getInt();
  if (auto steps = func->getAttrOfType<IntegerAttr>("loom.schedule_length"))
    sig.scheduleLength = steps.getInt();
  if (auto plan = func->getAttrOfType<ArrayAttr>("loom.memory_plan"))
    for (auto entry : plan.getAsRange<DictionaryAttr>()) {
      auto num = [&](StringRef key) {
        return cast<IntegerAttr>(entry.get(key)).getInt();
      };
      sig.buffers.push_back({num("offset"), num("size"), num("first"),
                             num("last"),
                             cast<StringAttr>(entry.get("owner")).str()});
    }
  for (StringRef attr :
       {"loom.arena_bytes", "loom.schedule_length", "loom.memory_plan"})
    func->removeAttr(attr);
}

/// The planner's promise, checked independently of how it placed anything:
/// every buffer inside the arena, and no two buffers live at a common
/// schedule position share a byte. Throws (a compiler bug) otherwise.
void checkMemoryPlan(const FunctionSignature &sig) {
  std::vector<const PlannedBuffer *> order;
  for (const PlannedBuffer &b : sig.buffers) {
    if (b.offset < 0 || b.size < 0 || b.offset + b.size > sig.arenaBytes ||
        b.first > b.last)
      throw FormatError("", sig.name,
                        "memory plan: a buffer of " + b.owner +
                            " lies outside the arena");
    if (b.size > 0)
      order.push_back(&b);
  }
  std::sort(order.begin(), order.end(),
            [](auto *x, auto *y) { return x->offset < y->offset; });
  for (size_t i = 0; i < order.size(); ++i)
    for (size_t j = i + 1; j < order.size() &&
                           order[j]->offset < order[i]->offset + order[i]->size;
         ++j)
      if (order[i]->first <= order[j]->last &&
          order[j]->first <= order[i]->last)
        throw FormatError("", sig.name,
                          "memory plan: buffers of " + order[i]->owner +
                              " and " + order[j]->owner +
                              " share bytes while both are live");
}

/// The entry points of `source` lowered through -loom-plan-arena (and, with
/// `toLLVM`, on to the LLVM dialect), with their signatures and plans.
OwningOpRef<ModuleOp>
lowerEntries(ModuleOp source, const std::vector<std::string> &entries,
             const std::vector<std::string> &bf16Weights, bool toLLVM,
             std::vector<FunctionSignature> &signatures,
             bool ukernelMemrefs = false, int64_t logitsBlockBytes = 0) {
  MLIRContext *context = source.getContext();
  DialectRegistry registry;
  registerCpuLoweringDependencies(registry);
  context->appendDialectRegistry(registry);
  context->loadAllAvailableDialects();

  OwningOpRef<ModuleOp> module(source.clone());
  for (auto func : llvm::make_early_inc_range(module->getOps<func::FuncOp>()))
    if (std::find(entries.begin(), entries.end(), func.getName().str()) ==
        entries.end())
      func.erase();

  // Weights become trailing arguments here; record the signatures the
  // runtime binds before bufferization turns results into out-params.
  {
    PassManager pm(context);
    LoomLowerToLinalgOptions lowering;
    lowering.ukernels = true;
    lowering.ukernelMemrefs = ukernelMemrefs;
    for (std::string &name : frozenAmong(*module, bf16Weights))
      lowering.bf16Params.push_back(std::move(name));
    LoomFuseLinearCrossEntropyOptions fuse;
    if (logitsBlockBytes > 0)
      fuse.blockBytes = logitsBlockBytes;
    pm.addPass(createLoomFuseLinearCrossEntropy(fuse));
    pm.addPass(createLoomLowerToLinalg(lowering));
    if (failed(pm.run(*module)))
      throw FormatError("", "compile", "lowering to linalg failed");
  }
  for (const std::string &entry : entries) {
    auto func = module->lookupSymbol<func::FuncOp>(entry);
    if (!func)
      throw FormatError("", "compile", "no entry point @" + entry);
    FunctionSignature sig;
    sig.name = entry;
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      sig.args.push_back(
          signatureOf(func.getArgumentTypes()[i],
                      func.getArgAttrOfType<StringAttr>(i, "loom.name"),
                      bool(func.getArgAttr(i, "loom.param")),
                      func.getArgAttrOfType<StringAttr>(i, "loom.packing")));
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      sig.results.push_back(
          signatureOf(func.getResultTypes()[i],
                      func.getResultAttrOfType<StringAttr>(i, "loom.name"),
                      false, nullptr));
    signatures.push_back(std::move(sig));
  }

  // The signatures are recorded: drop loom.* argument attributes, which the
  // LLVM IR translation would otherwise warn about, printing each function.
  for (auto func : module->getOps<func::FuncOp>()) {
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      func.setArgAttrs(i, DictionaryAttr::get(context));
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      func.setResultAttrs(i, DictionaryAttr::get(context));
  }

  PassManager pm(context);
  if (toLLVM)
    buildCpuLoweringPipeline(pm, /*barePointers=*/true, /*ukernels=*/true);
  else
    buildCpuPlanningPipeline(pm, /*ukernels=*/true);
  if (failed(pm.run(*module)))
    throw FormatError("", "compile",
                      toLLVM ? "lowering to the LLVM dialect failed"
                             : "planning the step's memory failed");
  for (FunctionSignature &sig : signatures) {
    takeMemoryPlan(module->lookupSymbol(sig.name), sig);
    checkMemoryPlan(sig);
  }
  return module;
}

} // namespace

OwningOpRef<ModuleOp> planModule(ModuleOp source,
                                 const std::vector<std::string> &entries,
                                 const std::vector<std::string> &bf16Weights,
                                 bool ukernelMemrefs,
                                 std::vector<FunctionSignature> &signatures,
                                 int64_t logitsBlockBytes) {
  return lowerEntries(source, entries, bf16Weights, /*toLLVM=*/false,
                      signatures, ukernelMemrefs, logitsBlockBytes);
}

std::vector<FunctionSignature>
planForCpu(ModuleOp source, const std::vector<std::string> &entries,
           const std::vector<std::string> &bf16Weights) {
  std::vector<FunctionSignature> signatures;
  lowerEntries(source, entries, bf16Weights, /*toLLVM=*/false, signatures);
  return signatures;
}

CompiledCpuModule compileForCpu(ModuleOp source,
                                const native::NativeTarget &target,
                                const std::vector<std::string> &entries,
                                bool withAssembly, bool withBitcode,
                                const std::vector<std::string> &bf16Weights) {
  CompiledCpuModule compiled;
  OwningOpRef<ModuleOp> module = lowerEntries(
      source, entries, bf16Weights, /*toLLVM=*/true, compiled.functions);
  native::addPackedEntryPoints(*module);
  compiled.sharedObject = native::emitSharedObject(
      *module, target, withAssembly ? &compiled.assembly : nullptr,
      withBitcode ? &compiled.bitcode : nullptr);
  return compiled;
}

} // namespace bitloom::codegen::cpu

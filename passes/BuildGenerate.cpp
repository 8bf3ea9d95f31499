//===- BuildGenerate.cpp - @forward to a KV-cached @generate_step ---------===//
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/StringSet.h"

namespace bitloom {
#define GEN_PASS_DEF_LOOMBUILDGENERATE
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;
using namespace bitloom::loom;

namespace {

class BuildGenerate
    : public bitloom::impl::LoomBuildGenerateBase<BuildGenerate> {
public:
  using LoomBuildGenerateBase::LoomBuildGenerateBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("loom-build-generate needs a @forward function");
      return signalPassFailure();
    }
    if (maxTokens <= 0) {
      module.emitError("max-tokens must be positive");
      return signalPassFailure();
    }
    if (auto existing = module.lookupSymbol<func::FuncOp>("generate_step"))
      existing.erase();
    Block &body = forward.getBody().front();

    // Arguments: LoRA parameters (as in eval_step, the host owns them), one
    // cache pair per attention, then tokens and positions.
    SmallVector<ParamOp> loraParams;
    llvm::StringSet<> seen;
    SmallVector<AttentionOp> attentions;
    for (Operation &op : body) {
      if (auto param = dyn_cast<ParamOp>(op))
        if (param.getKind() != ParamKind::weight &&
            seen.insert(param.getName()).second)
          loraParams.push_back(param);
      if (auto attention = dyn_cast<AttentionOp>(op))
        attentions.push_back(attention);
    }
    OpBuilder b(module.getContext());
    SmallVector<Type> inputs;
    SmallVector<std::string> names;
    for (ParamOp p : loraParams) {
      inputs.push_back(p.getType());
      names.push_back(p.getName().str());
    }
    SmallVector<RankedTensorType> cacheTypes;
    for (auto [layer, attention] : llvm::enumerate(attentions)) {
      auto keyType = cast<RankedTensorType>(attention.getKey().getType());
      auto cacheType = RankedTensorType::get(
          {keyType.getDimSize(0), maxTokens, keyType.getDimSize(2)},
          keyType.getElementType());
      cacheTypes.push_back(cacheType);
      for (StringRef kind : {"key_cache.", "value_cache."}) {
        inputs.push_back(cacheType);
        names.push_back((kind + Twine(layer)).str());
      }
    }
    FunctionType forwardType = forward.getFunctionType();
    inputs.append({forwardType.getInput(0), forwardType.getInput(1)});
    names.append({"tokens", "positions"});

    b.setInsertionPointToEnd(module.getBody());
    auto func = func::FuncOp::create(b, forward.getLoc(), "generate_step",
                                     b.getFunctionType(inputs, {}));
    Block *entry = func.addEntryBlock();
    for (unsigned i = 0; i < names.size(); ++i)
      func.setArgAttr(i, "loom.name", b.getStringAttr(names[i]));

    IRMapping mapping;
    llvm::StringMap<Value> loraArgs;
    for (auto [i, p] : llvm::enumerate(loraParams))
      loraArgs[p.getName()] = entry->getArgument(i);
    unsigned cacheStart = loraParams.size();
    unsigned dataStart = cacheStart + 2 * attentions.size();
    mapping.map(body.getArgument(0), entry->getArgument(dataStart));
    mapping.map(body.getArgument(1), entry->getArgument(dataStart + 1));

    b.setInsertionPointToStart(entry);
    SmallVector<Value> newCaches;
    unsigned layer = 0;
    Operation *terminator = body.getTerminator();
    Value logits = terminator->getOperand(0);
    for (Operation &op : body.without_terminator()) {
      if (auto param = dyn_cast<ParamOp>(op))
        if (Value arg = loraArgs.lookup(param.getName())) {
          mapping.map(param.getResult(), arg);
          continue;
        }
      if (isa<CrossEntropyOp>(op))
        continue; // generation has no labels and no loss
      if (auto attention = dyn_cast<AttentionOp>(op)) {
        Value keyCache = entry->getArgument(cacheStart + 2 * layer);
        Value valueCache = entry->getArgument(cacheStart + 2 * layer + 1);
        auto cached = CachedAttentionOp::create(
            b, attention.getLoc(), attention.getType(), cacheTypes[layer],
            cacheTypes[layer], mapping.lookup(attention.getQuery()),
            mapping.lookup(attention.getKey()),
            mapping.lookup(attention.getValue()), keyCache, valueCache,
            entry->getArgument(dataStart + 1), attention.getNumHeadsAttr(),
            attention.getNumKvHeadsAttr(), attention.getHeadDimAttr(),
            attention.getScaleAttr());
        mapping.map(attention.getResult(), cached.getResult());
        newCaches.append({cached.getNewKeyCache(), cached.getNewValueCache()});
        ++layer;
        continue;
      }
      b.clone(op, mapping);
    }
    SmallVector<Value> results = {mapping.lookup(logits)};
    results.append(newCaches);
    func::ReturnOp::create(b, forward.getLoc(), results);
    SmallVector<Type> resultTypes;
    for (Value v : results)
      resultTypes.push_back(v.getType());
    func.setType(b.getFunctionType(inputs, resultTypes));
    func.setResultAttr(0, "loom.name", b.getStringAttr("logits"));
    for (unsigned i = 0; i < newCaches.size(); ++i)
      func.setResultAttr(i + 1, "loom.name",
                         b.getStringAttr(names[cacheStart + i]));
  }
};

} // namespace

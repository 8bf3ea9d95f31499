//===- VerifyModel.cpp - Whole-module consistency checks ------------------===//
#include "passes/Passes.h"

#include "llvm/ADT/StringMap.h"

namespace bitloom {
#define GEN_PASS_DEF_LOOMVERIFYMODEL
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;
using namespace bitloom::loom;

namespace {

struct LoomVerifyModelPass
    : bitloom::impl::LoomVerifyModelBase<LoomVerifyModelPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    llvm::StringMap<ParamOp> firstUse;
    llvm::StringMap<int> loraHalves; // name without lora_A/lora_B -> bits
    bool ok = true;
    module.walk([&](ParamOp param) {
      auto [it, inserted] = firstUse.try_emplace(param.getName(), param);
      if (!inserted && it->second.getType() != param.getType()) {
        param.emitError("parameter '")
            << param.getName() << "' is used with type " << param.getType()
            << " here but " << it->second.getType() << " elsewhere";
        ok = false;
      }
      if (param.getKind() == ParamKind::weight)
        return;
      StringRef name = param.getName();
      StringRef marker =
          param.getKind() == ParamKind::lora_a ? ".lora_A." : ".lora_B.";
      size_t pos = name.find(marker);
      if (pos == StringRef::npos) {
        param.emitError("LoRA parameter '")
            << name << "' must be named as PEFT saves it (contains '" << marker
            << "')";
        ok = false;
        return;
      }
      loraHalves[name.substr(0, pos)] |=
          param.getKind() == ParamKind::lora_a ? 1 : 2;
    });
    for (auto &entry : loraHalves)
      if (entry.second != 3) {
        module.emitError("LoRA adapter '")
            << entry.first() << "' has only its "
            << (entry.second == 1 ? "A" : "B") << " matrix";
        ok = false;
      }
    if (auto forward = module.lookupSymbol<func::FuncOp>("forward")) {
      FunctionType type = forward.getFunctionType();
      if (type.getNumResults() != 2 ||
          cast<ShapedType>(type.getResult(1)).getRank() != 0) {
        forward.emitError("@forward must return (logits, scalar loss)");
        ok = false;
      }
    }
    if (!ok)
      signalPassFailure();
  }
};

} // namespace

//===- Autodiff.cpp - @forward to @train_step and @eval_step --------------===//
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringSet.h"

namespace bitloom {
#define GEN_PASS_DEF_LOOMAUTODIFF
#include "passes/Passes.h.inc"
} // namespace bitloom

using namespace mlir;
using namespace bitloom::loom;

namespace {

struct Parameter {
  std::string name;
  RankedTensorType type;
};

StringAttr nameAttr(OpBuilder &b, StringRef name) {
  return b.getStringAttr(name);
}

/// A copy of @forward's body in a new function whose trainable parameters
/// are arguments. Returns the mapping from forward values to new values.
struct ClonedBody {
  func::FuncOp func;
  IRMapping mapping;
  Value logits, loss;
  SmallVector<Value> paramArgs;
  Value tokens, positions, labels, lossMask;
};

class Autodiff : public bitloom::impl::LoomAutodiffBase<Autodiff> {
public:
  using LoomAutodiffBase::LoomAutodiffBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("loom-autodiff needs a @forward function");
      return signalPassFailure();
    }
    if (trainable != "lora" && trainable != "lora+norm" && trainable != "all") {
      module.emitError("unknown trainable set '")
          << trainable << "' (lora, lora+norm or all)";
      return signalPassFailure();
    }
    if (optimizer != "adamw" && optimizer != "sgd") {
      module.emitError("unknown optimizer '") << optimizer << "' (adamw, sgd)";
      return signalPassFailure();
    }
    for (StringRef name :
         {"train_step", "eval_step", "accumulate_step", "apply_step"})
      if (auto existing = module.lookupSymbol<func::FuncOp>(name))
        existing.erase();

    std::vector<Parameter> params = collectTrainable(forward);
    if (params.empty()) {
      forward.emitError("nothing to train: no parameter matches trainable=")
          << trainable << " (import with --lora-rank to add adapters)";
      return signalPassFailure();
    }
    if (failed(checkDropout(forward)))
      return signalPassFailure();
    buildEvalStep(module, forward, params);
    if (failed(buildTrainStep(module, forward, params)))
      return signalPassFailure();
    buildAccumulation(module, forward, params);
  }

private:
  bool isTrainable(ParamOp param) {
    if (param.getKind() != ParamKind::weight)
      return true;
    auto type = dyn_cast<RankedTensorType>(param.getType());
    if (!type) // ternary weights are frozen by construction
      return false;
    if (trainable == "all")
      return true;
    StringRef name = param.getName();
    return trainable == "lora+norm" && type.getRank() == 1 &&
           (name.ends_with("norm.weight") ||
            name.ends_with("layernorm.weight"));
  }

  std::vector<Parameter> collectTrainable(func::FuncOp forward) {
    std::vector<Parameter> params;
    llvm::StringSet<> seen;
    forward.walk([&](ParamOp param) {
      if (isTrainable(param) && seen.insert(param.getName()).second)
        params.push_back(
            {param.getName().str(), cast<RankedTensorType>(param.getType())});
    });
    return params;
  }

  LogicalResult checkDropout(func::FuncOp forward) {
    WalkResult result = forward.walk([&](LoRAOp lora) {
      if (lora.getDropout().convertToDouble() != 0.0) {
        lora.emitError("LoRA dropout is not supported by the training step "
                       "yet; import with --lora-dropout 0");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    return failure(result.wasInterrupted());
  }

  /// Creates `name` with `params` as leading arguments followed by `extra`,
  /// and clones @forward's body into it.
  ClonedBody cloneForward(ModuleOp module, func::FuncOp forward, StringRef name,
                          const std::vector<Parameter> &params,
                          ArrayRef<std::pair<std::string, Type>> stateArgs,
                          ArrayRef<std::pair<std::string, Type>> trailingArgs) {
    OpBuilder b(module.getContext());
    b.setInsertionPointToEnd(module.getBody());
    SmallVector<Type> inputs;
    SmallVector<std::string> names;
    for (const Parameter &p : params) {
      inputs.push_back(p.type);
      names.push_back(p.name);
    }
    for (auto &[argName, type] : stateArgs) {
      inputs.push_back(type);
      names.push_back(argName);
    }
    FunctionType forwardType = forward.getFunctionType();
    static const char *dataNames[] = {"tokens", "positions", "labels",
                                      "loss_mask"};
    for (unsigned i = 0; i < 4; ++i) {
      inputs.push_back(forwardType.getInput(i));
      names.push_back(dataNames[i]);
    }
    for (auto &[argName, type] : trailingArgs) {
      inputs.push_back(type);
      names.push_back(argName);
    }
    ClonedBody body;
    body.func = func::FuncOp::create(b, forward.getLoc(), name,
                                     b.getFunctionType(inputs, {}));
    Block *entry = body.func.addEntryBlock();
    for (unsigned i = 0; i < names.size(); ++i)
      body.func.setArgAttr(i, "loom.name", nameAttr(b, names[i]));
    llvm::StringMap<Value> paramArgs;
    for (unsigned i = 0; i < params.size(); ++i) {
      paramArgs[params[i].name] = entry->getArgument(i);
      body.paramArgs.push_back(entry->getArgument(i));
    }
    unsigned dataStart = params.size() + stateArgs.size();
    Block &forwardBlock = forward.getBody().front();
    for (unsigned i = 0; i < 4; ++i)
      body.mapping.map(forwardBlock.getArgument(i),
                       entry->getArgument(dataStart + i));
    body.tokens = entry->getArgument(dataStart);
    body.positions = entry->getArgument(dataStart + 1);
    body.labels = entry->getArgument(dataStart + 2);
    body.lossMask = entry->getArgument(dataStart + 3);

    b.setInsertionPointToStart(entry);
    for (Operation &op : forwardBlock.without_terminator()) {
      if (auto param = dyn_cast<ParamOp>(op))
        if (Value arg = paramArgs.lookup(param.getName())) {
          body.mapping.map(param.getResult(), arg);
          continue;
        }
      b.clone(op, body.mapping);
    }
    Operation *ret = forwardBlock.getTerminator();
    body.logits = body.mapping.lookup(ret->getOperand(0));
    body.loss = body.mapping.lookup(ret->getOperand(1));
    return body;
  }

  static void finish(func::FuncOp func, ArrayRef<Value> results,
                     ArrayRef<std::string> resultNames) {
    OpBuilder b = OpBuilder::atBlockEnd(&func.getBody().front());
    func::ReturnOp::create(b, func.getLoc(), results);
    SmallVector<Type> types;
    for (Value v : results)
      types.push_back(v.getType());
    func.setType(b.getFunctionType(func.getArgumentTypes(), types));
    for (unsigned i = 0; i < resultNames.size(); ++i)
      func.setResultAttr(i, "loom.name", b.getStringAttr(resultNames[i]));
  }

  void buildEvalStep(ModuleOp module, func::FuncOp forward,
                     const std::vector<Parameter> &params) {
    ClonedBody body =
        cloneForward(module, forward, "eval_step", params, {}, {});
    OpBuilder b = OpBuilder::atBlockEnd(&body.func.getBody().front());
    Value count = TokenCountOp::create(b, body.func.getLoc(),
                                       body.loss.getType(), body.lossMask);
    finish(body.func, {body.loss, count}, {"loss", "token_count"});
  }

  /// Reverse mode over the cloned forward: the gradient of the loss with
  /// respect to each trainable parameter argument.
  SmallVector<Value> buildBackward(ClonedBody &body,
                                   const std::vector<Parameter> &params) {
    Block &entry = body.func.getBody().front();
    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    Location loc = body.func.getLoc();
    auto scalar = RankedTensorType::get({}, b.getF32Type());

    // Which values depend on a trainable parameter.
    llvm::DenseSet<Value> requiresGrad(body.paramArgs.begin(),
                                       body.paramArgs.end());
    SmallVector<Operation *> forwardOps;
    for (Operation &op : entry) {
      forwardOps.push_back(&op);
      if (llvm::any_of(op.getOperands(),
                       [&](Value v) { return requiresGrad.contains(v); }))
        for (Value r : op.getResults())
          requiresGrad.insert(r);
    }

    llvm::DenseMap<Value, Value> grads;
    auto accumulate = [&](Value v, Value g) {
      auto it = grads.find(v);
      if (it == grads.end())
        grads[v] = g;
      else
        it->second = AddOp::create(b, loc, it->second, g);
    };
    grads[body.loss] =
        ConstantOp::create(b, loc, scalar, b.getF64FloatAttr(1.0));

    for (Operation *op : llvm::reverse(forwardOps)) {
      auto differentiable = dyn_cast<DifferentiableOpInterface>(op);
      if (!differentiable)
        continue;
      SmallVector<Value> resultGrads;
      bool any = false;
      for (Value r : op->getResults()) {
        resultGrads.push_back(grads.lookup(r));
        any |= bool(resultGrads.back());
      }
      SmallVector<bool> needsGrad;
      for (Value operand : op->getOperands())
        needsGrad.push_back(requiresGrad.contains(operand));
      if (!any || llvm::none_of(needsGrad, [](bool x) { return x; }))
        continue;
      SmallVector<Value> operandGrads =
          differentiable.buildAdjoint(b, resultGrads, needsGrad);
      for (auto [operand, g] : llvm::zip(op->getOperands(), operandGrads))
        if (g)
          accumulate(operand, g);
    }

    sinkLoRAInputGradients(entry);

    SmallVector<Value> paramGrads;
    for (auto [p, arg] : llvm::zip(params, body.paramArgs)) {
      Value g = grads.lookup(arg);
      if (!g) // the parameter does not reach the loss
        g = ConstantOp::create(b, loc, p.type, b.getF64FloatAttr(0.0));
      paramGrads.push_back(g);
    }
    return paramGrads;
  }

  /// A LoRA's input gradient ([tokens × in features]) is summed with its
  /// bitlinear's, which the reverse order builds only after the LoRA's
  /// adjoint: moved right before that sum, it is not held while the
  /// bitlinear's gradient (and any recomputation) runs. Its operands are the
  /// output gradient, which the bitlinear's adjoint reads just before the
  /// sum, and the LoRA matrices (arguments), so no other lifetime grows.
  static void sinkLoRAInputGradients(Block &entry) {
    for (auto grad :
         llvm::make_early_inc_range(entry.getOps<LoRAGradInputOp>())) {
      Operation *first = nullptr;
      for (Operation *user : grad->getUsers())
        if (user->getBlock() == &entry &&
            (!first || user->isBeforeInBlock(first)))
          first = user;
      if (first && grad->getNextNode() != first)
        grad->moveBefore(first);
    }
  }

  /// Optimizer state arguments: one (SGD) or two (AdamW) per parameter,
  /// named "<kind>.<parameter>".
  SmallVector<std::pair<std::string, Type>>
  optimizerState(const std::vector<Parameter> &params) {
    SmallVector<std::pair<std::string, Type>> state;
    SmallVector<std::string> kinds =
        optimizer == "adamw" ? SmallVector<std::string>{"exp_avg", "exp_avg_sq"}
                             : SmallVector<std::string>{"momentum_buffer"};
    for (const std::string &kind : kinds)
      for (const Parameter &p : params)
        state.push_back({kind + "." + p.name, p.type});
    return state;
  }

  struct Update {
    Value gradNorm;
    SmallVector<Value> newParams, newState;
  };

  /// Global norm, optional clipping, and the optimizer update of every
  /// parameter; `state` holds the state arguments in optimizerState order.
  Update buildUpdate(OpBuilder &b, Location loc, ValueRange paramValues,
                     SmallVector<Value> grads, ValueRange state, Value lr,
                     Value step) {
    auto scalar = RankedTensorType::get({}, b.getF32Type());
    Update u;
    u.gradNorm = GlobalNormOp::create(b, loc, scalar, grads);
    if (maxGradNorm > 0.0)
      for (Value &g : grads)
        g = ClipByNormOp::create(b, loc, g.getType(), g, u.gradNorm,
                                 b.getF64FloatAttr(maxGradNorm));
    unsigned n = paramValues.size();
    u.newState.resize(state.size());
    for (unsigned i = 0; i < n; ++i) {
      Value p = paramValues[i];
      if (optimizer == "adamw") {
        auto update = AdamWOp::create(
            b, loc, p.getType(), p.getType(), p.getType(), p, grads[i],
            state[i], state[n + i], lr, step, b.getF64FloatAttr(beta1),
            b.getF64FloatAttr(beta2), b.getF64FloatAttr(epsilon),
            b.getF64FloatAttr(weightDecay));
        u.newParams.push_back(update.getNewParam());
        u.newState[i] = update.getNewExpAvg();
        u.newState[n + i] = update.getNewExpAvgSq();
      } else {
        auto update = SGDOp::create(
            b, loc, p.getType(), p.getType(), p, grads[i], state[i], lr, step,
            b.getF64FloatAttr(momentum), b.getF64FloatAttr(weightDecay));
        u.newParams.push_back(update.getNewParam());
        u.newState[i] = update.getNewMomentumBuffer();
      }
    }
    return u;
  }

  /// @train_step: one micro-batch, backward and update in one function.
  LogicalResult buildTrainStep(ModuleOp module, func::FuncOp forward,
                               const std::vector<Parameter> &params) {
    auto scalar =
        RankedTensorType::get({}, Float32Type::get(module.getContext()));
    auto state = optimizerState(params);
    ClonedBody body = cloneForward(module, forward, "train_step", params, state,
                                   {{"lr", scalar}, {"step", scalar}});
    SmallVector<Value> grads = buildBackward(body, params);
    Block &entry = body.func.getBody().front();
    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    unsigned n = params.size();
    Update u = buildUpdate(b, body.func.getLoc(), body.paramArgs, grads,
                           entry.getArguments().slice(n, state.size()),
                           entry.getArgument(entry.getNumArguments() - 2),
                           entry.getArgument(entry.getNumArguments() - 1));

    SmallVector<Value> results = {body.loss};
    SmallVector<std::string> names = {"loss"};
    for (unsigned i = 0; i < n; ++i) {
      results.push_back(u.newParams[i]);
      names.push_back(params[i].name);
    }
    for (unsigned i = 0; i < state.size(); ++i) {
      results.push_back(u.newState[i]);
      names.push_back(state[i].first);
    }
    results.push_back(u.gradNorm);
    names.push_back("grad_norm");
    // Gradients are results too, under "<name>.grad": the debugging door
    // (`bitloom step`) and parity tests read them; `bitloom compile` drops
    // them from CPU artifacts.
    for (unsigned i = 0; i < n; ++i) {
      results.push_back(grads[i]);
      names.push_back(params[i].name + ".grad");
    }
    finish(body.func, results, names);
    return success();
  }

  /// Gradient accumulation over micro-batches, as two functions the host
  /// alternates: @accumulate_step adds `grad_scale` × this micro-batch's
  /// gradients into "grad.<name>" accumulators (the host passes 1/K), and
  /// @apply_step clips and updates once from the accumulated gradients.
  void buildAccumulation(ModuleOp module, func::FuncOp forward,
                         const std::vector<Parameter> &params) {
    auto scalar =
        RankedTensorType::get({}, Float32Type::get(module.getContext()));
    SmallVector<std::pair<std::string, Type>> accumulators;
    for (const Parameter &p : params)
      accumulators.push_back({"grad." + p.name, p.type});
    ClonedBody body = cloneForward(module, forward, "accumulate_step", params,
                                   accumulators, {{"grad_scale", scalar}});
    SmallVector<Value> grads = buildBackward(body, params);
    Block &entry = body.func.getBody().front();
    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    unsigned n = params.size();
    Value scale = entry.getArgument(entry.getNumArguments() - 1);
    SmallVector<Value> results = {body.loss};
    SmallVector<std::string> names = {"loss"};
    for (unsigned i = 0; i < n; ++i) {
      results.push_back(
          AccumulateOp::create(b, body.func.getLoc(), params[i].type,
                               entry.getArgument(n + i), grads[i], scale));
      names.push_back(accumulators[i].first);
    }
    results.push_back(
        TokenCountOp::create(b, body.func.getLoc(), scalar, body.lossMask));
    names.push_back("token_count");
    finish(body.func, results, names);

    // @apply_step(params, state, grad.<name>, lr, step).
    auto state = optimizerState(params);
    SmallVector<Type> inputs;
    SmallVector<std::string> argNames;
    for (const Parameter &p : params) {
      inputs.push_back(p.type);
      argNames.push_back(p.name);
    }
    for (auto &[name, type] : state) {
      inputs.push_back(type);
      argNames.push_back(name);
    }
    for (auto &[name, type] : accumulators) {
      inputs.push_back(type);
      argNames.push_back(name);
    }
    inputs.append({scalar, scalar});
    argNames.append({"lr", "step"});
    OpBuilder mb(module.getContext());
    mb.setInsertionPointToEnd(module.getBody());
    auto apply = func::FuncOp::create(mb, forward.getLoc(), "apply_step",
                                      mb.getFunctionType(inputs, {}));
    Block *applyEntry = apply.addEntryBlock();
    for (unsigned i = 0; i < argNames.size(); ++i)
      apply.setArgAttr(i, "loom.name", mb.getStringAttr(argNames[i]));
    OpBuilder ab = OpBuilder::atBlockEnd(applyEntry);
    ValueRange args = applyEntry->getArguments();
    Update u = buildUpdate(ab, forward.getLoc(), args.take_front(n),
                           SmallVector<Value>(args.slice(n + state.size(), n)),
                           args.slice(n, state.size()), args[args.size() - 2],
                           args.back());
    SmallVector<Value> applyResults(u.newParams);
    SmallVector<std::string> applyNames;
    for (const Parameter &p : params)
      applyNames.push_back(p.name);
    for (unsigned i = 0; i < state.size(); ++i) {
      applyResults.push_back(u.newState[i]);
      applyNames.push_back(state[i].first);
    }
    applyResults.push_back(u.gradNorm);
    applyNames.push_back("grad_norm");
    finish(apply, applyResults, applyNames);
  }
};

} // namespace

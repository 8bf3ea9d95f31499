//===- Interpreter.cpp - The reference executor for loom IR ---------------===//
#include "codegen/reference/Interpreter.h"

#include "codegen/reference/Kernels.h"
#include "dialects/loom/LoomDialect.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <stdexcept>

using namespace mlir;
using namespace bitloom::loom;

namespace bitloom::reference {

HostTensor HostTensor::floats(std::vector<int64_t> shape, float fill) {
  HostTensor t;
  t.shape = std::move(shape);
  t.data.assign(size_t(t.numElements()), fill);
  return t;
}

HostTensor HostTensor::int32s(std::vector<int64_t> shape,
                              std::vector<int32_t> values) {
  HostTensor t;
  t.shape = std::move(shape);
  t.isInt = true;
  t.ints = std::move(values);
  if (int64_t(t.ints.size()) != t.numElements())
    throw std::invalid_argument("int32 tensor: value count != shape");
  return t;
}

int64_t HostTensor::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

namespace {

std::string describe(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << op->getName() << " at " << op->getLoc();
  return s;
}

/// Rows of an activation: every dimension but the last.
int64_t rows(const HostTensor &t) {
  return t.shape.empty() ? 1 : t.numElements() / t.shape.back();
}
int64_t cols(const HostTensor &t) { return t.shape.back(); }

std::vector<int64_t> withLast(std::vector<int64_t> shape, int64_t last) {
  shape.back() = last;
  return shape;
}

} // namespace

struct Interpreter::Impl {
  mutable ModuleOp module;
  const Model &model;
  /// Frozen weights, dequantized once; online master weights also keep
  /// their quantized form since frozen weights never change.
  std::map<std::string, HostTensor> weights, quantizedWeights;

  Impl(ModuleOp module, const Model &model) : module(module), model(model) {}

  func::FuncOp lookup(const std::string &name) const {
    auto func = module.lookupSymbol<func::FuncOp>(name);
    if (!func)
      throw std::runtime_error("the module has no function @" + name);
    return func;
  }

  const HostTensor &weight(ParamOp param) {
    std::string name = param.getName().str();
    auto it = weights.find(name);
    if (it != weights.end())
      return it->second;
    const ModelTensor *t = model.find(name);
    if (!t)
      throw std::runtime_error("parameter '" + name +
                               "' is not in the model and not an argument");
    HostTensor value = HostTensor::floats(t->shape);
    model.dequantize(*t, value.data.data());
    return weights.emplace(name, std::move(value)).first->second;
  }

  /// The ternary × scale weight a bitlinear multiplies with.
  HostTensor quantizedWeight(Value weightValue, const HostTensor &w,
                             loom::WeightQuant quant) {
    if (quant == loom::WeightQuant::offline)
      return w; // stored ternary: dequantized values are already W_t · s
    auto param = weightValue.getDefiningOp<ParamOp>();
    if (param) {
      auto it = quantizedWeights.find(param.getName().str());
      if (it != quantizedWeights.end())
        return it->second;
    }
    HostTensor q = HostTensor::floats(w.shape);
    quantizeWeightOnline(w.data.data(), w.shape[0], w.shape[1], true,
                         q.data.data());
    if (param)
      quantizedWeights[param.getName().str()] = q;
    return q;
  }

  static HostTensor quantizedActivations(const HostTensor &x) {
    HostTensor q = HostTensor::floats(x.shape);
    quantizeActivations(x.data.data(), rows(x), cols(x), true, q.data.data());
    return q;
  }

  static double outputScale(Value scale,
                            llvm::DenseMap<Value, HostTensor> &env) {
    return scale ? double(env.at(scale).data[0]) : 1.0;
  }

  std::map<std::string, HostTensor>
  run(const std::string &name, const std::map<std::string, HostTensor> &args) {
    func::FuncOp func = lookup(name);
    Block &entry = func.getBody().front();
    llvm::DenseMap<Value, HostTensor> env;
    for (unsigned i = 0; i < func.getNumArguments(); ++i) {
      auto argName = func.getArgAttrOfType<StringAttr>(i, "loom.name");
      std::string key = argName ? argName.str() : "arg" + std::to_string(i);
      auto it = args.find(key);
      if (it == args.end())
        throw std::runtime_error("@" + name + ": missing argument '" + key +
                                 "'");
      checkArgument(func, i, key, it->second);
      env[entry.getArgument(i)] = it->second;
    }
    std::map<std::string, HostTensor> results;
    for (Operation &op : entry) {
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        for (unsigned i = 0; i < ret.getNumOperands(); ++i) {
          auto resName = func.getResultAttrOfType<StringAttr>(i, "loom.name");
          results[resName ? resName.str() : "result" + std::to_string(i)] =
              env.at(ret.getOperand(i));
        }
        break;
      }
      try {
        execute(&op, env);
      } catch (const std::exception &e) {
        throw std::runtime_error(describe(&op) + ": " + e.what());
      }
    }
    return results;
  }

  static void checkArgument(func::FuncOp func, unsigned i,
                            const std::string &key, const HostTensor &value) {
    auto type = cast<RankedTensorType>(func.getArgumentTypes()[i]);
    bool wantInt = type.getElementType().isInteger(32);
    bool ok =
        wantInt == value.isInt && int64_t(value.shape.size()) == type.getRank();
    for (int64_t d = 0; ok && d < type.getRank(); ++d)
      ok = type.isDynamicDim(d) || type.getDimSize(d) == value.shape[d];
    if (!ok)
      throw std::runtime_error("argument '" + key +
                               "' does not match its type in @" +
                               func.getName().str());
  }

  void execute(Operation *op, llvm::DenseMap<Value, HostTensor> &env) {
    auto in = [&](Value v) -> const HostTensor & { return env.at(v); };
    auto set = [&](Value v, HostTensor t) { env[v] = std::move(t); };

    llvm::TypeSwitch<Operation *, void>(op)
        .Case([&](ParamOp p) { set(p, weight(p)); })
        .Case([&](EmbeddingOp e) {
          const HostTensor &table = in(e.getTable()), &ids = in(e.getTokens());
          int64_t h = table.shape[1];
          HostTensor y = HostTensor::floats({ids.shape[0], ids.shape[1], h});
          embedding(table.data.data(), ids.ints.data(), table.shape[0], h,
                    ids.numElements(), y.data.data());
          set(e, std::move(y));
        })
        .Case([&](RMSNormOp n) {
          const HostTensor &x = in(n.getInput());
          HostTensor y = HostTensor::floats(x.shape);
          rmsNorm(x.data.data(), in(n.getWeight()).data.data(), rows(x),
                  cols(x), n.getEpsilon().convertToDouble(), y.data.data());
          set(n, std::move(y));
        })
        .Case([&](BitLinearOp b) {
          const HostTensor &x = in(b.getInput());
          HostTensor w = quantizedWeight(b.getWeight(), in(b.getWeight()),
                                         b.getWeightQuant());
          HostTensor xq = quantizedActivations(x);
          int64_t o = w.shape[0];
          HostTensor y = HostTensor::floats(withLast(x.shape, o));
          bitlinear(xq.data.data(), w.data.data(), rows(x), cols(x), o,
                    y.data.data(), outputScale(b.getOutputScale(), env));
          set(b, std::move(y));
        })
        .Case([&](LoRAOp l) {
          const HostTensor &base = in(l.getBase()), &x = in(l.getInput()),
                           &a = in(l.getLoraA()), &bm = in(l.getLoraB());
          HostTensor y = HostTensor::floats(base.shape);
          lora(base.data.data(), x.data.data(), a.data.data(), bm.data.data(),
               rows(x), cols(x), cols(base), l.getRank(), l.getScaling(),
               y.data.data());
          set(l, std::move(y));
        })
        .Case([&](RoPEOp r) {
          const HostTensor &x = in(r.getInput());
          HostTensor y = HostTensor::floats(x.shape);
          int64_t d = r.getHeadDim();
          rope(x.data.data(), in(r.getPositions()).ints.data(), x.shape[0],
               x.shape[1], cols(x) / d, d, r.getTheta().convertToDouble(),
               r.getInverse(), y.data.data());
          set(r, std::move(y));
        })
        .Case([&](AttentionOp a) {
          const HostTensor &q = in(a.getQuery()), &k = in(a.getKey()),
                           &v = in(a.getValue());
          HostTensor y = HostTensor::floats(q.shape);
          attention(q.data.data(), k.data.data(), v.data.data(), q.shape[0],
                    q.shape[1], k.shape[1], a.getNumHeads(), a.getNumKvHeads(),
                    a.getHeadDim(), a.getScale().convertToDouble(),
                    a.getCausal(), y.data.data());
          set(a, std::move(y));
        })
        .Case([&](CachedAttentionOp a) {
          const HostTensor &q = in(a.getQuery()), &k = in(a.getKey()),
                           &v = in(a.getValue());
          HostTensor kCache = in(a.getKeyCache()),
                     vCache = in(a.getValueCache());
          HostTensor y = HostTensor::floats(q.shape);
          cachedAttention(
              q.data.data(), k.data.data(), v.data.data(), kCache.data.data(),
              vCache.data.data(), in(a.getPositions()).ints.data(), q.shape[0],
              q.shape[1], kCache.shape[1], a.getNumHeads(), a.getNumKvHeads(),
              a.getHeadDim(), a.getScale().convertToDouble(), y.data.data());
          set(a.getResult(), std::move(y));
          set(a.getNewKeyCache(), std::move(kCache));
          set(a.getNewValueCache(), std::move(vCache));
        })
        .Case([&](Relu2Op r) {
          const HostTensor &x = in(r.getInput());
          HostTensor y = HostTensor::floats(x.shape);
          relu2(x.data.data(), x.numElements(), y.data.data());
          set(r, std::move(y));
        })
        .Case([&](AddOp a) {
          const HostTensor &l = in(a.getLhs()), &r = in(a.getRhs());
          HostTensor y = HostTensor::floats(l.shape);
          add(l.data.data(), r.data.data(), l.numElements(), y.data.data());
          set(a, std::move(y));
        })
        .Case([&](MulOp m) {
          const HostTensor &l = in(m.getLhs()), &r = in(m.getRhs());
          HostTensor y = HostTensor::floats(l.shape);
          mul(l.data.data(), r.data.data(), l.numElements(), y.data.data());
          set(m, std::move(y));
        })
        .Case([&](MatmulOp m) {
          const HostTensor &x = in(m.getInput()), &w = in(m.getWeight());
          HostTensor y = HostTensor::floats(withLast(x.shape, w.shape[0]));
          matmul(x.data.data(), w.data.data(), rows(x), cols(x), w.shape[0],
                 y.data.data());
          set(m, std::move(y));
        })
        .Case([&](CrossEntropyOp c) {
          const HostTensor &l = in(c.getLogits());
          float loss =
              crossEntropy(l.data.data(), in(c.getLabels()).ints.data(),
                           in(c.getLossMask()).data.data(), rows(l), cols(l));
          set(c, HostTensor::scalar(loss));
        })
        // Adjoints.
        .Case([&](EmbeddingGradOp e) {
          const HostTensor &dy = in(e.getResultGrad()),
                           &ids = in(e.getTokens());
          auto type = cast<RankedTensorType>(e.getType());
          HostTensor g =
              HostTensor::floats({type.getDimSize(0), type.getDimSize(1)});
          embeddingGradAccumulate(dy.data.data(), ids.ints.data(), g.shape[0],
                                  g.shape[1], ids.numElements(), g.data.data());
          set(e, std::move(g));
        })
        .Case([&](RMSNormGradInputOp n) {
          const HostTensor &x = in(n.getInput());
          HostTensor g = HostTensor::floats(x.shape);
          rmsNormGradInput(in(n.getResultGrad()).data.data(), x.data.data(),
                           in(n.getWeight()).data.data(), rows(x), cols(x),
                           n.getEpsilon().convertToDouble(), g.data.data());
          set(n, std::move(g));
        })
        .Case([&](RMSNormGradWeightOp n) {
          const HostTensor &x = in(n.getInput());
          HostTensor g = HostTensor::floats({cols(x)});
          rmsNormGradWeight(in(n.getResultGrad()).data.data(), x.data.data(),
                            rows(x), cols(x), n.getEpsilon().convertToDouble(),
                            g.data.data());
          set(n, std::move(g));
        })
        .Case([&](BitLinearGradInputOp b) {
          const HostTensor &dy = in(b.getResultGrad());
          HostTensor w = quantizedWeight(b.getWeight(), in(b.getWeight()),
                                         b.getWeightQuant());
          HostTensor g = HostTensor::floats(withLast(dy.shape, w.shape[1]));
          bitlinearGradInput(dy.data.data(), w.data.data(), rows(dy),
                             w.shape[1], w.shape[0], g.data.data(),
                             outputScale(b.getOutputScale(), env));
          set(b, std::move(g));
        })
        .Case([&](BitLinearGradWeightOp b) {
          const HostTensor &dy = in(b.getResultGrad()), &x = in(b.getInput());
          HostTensor xq = quantizedActivations(x);
          HostTensor g = HostTensor::floats({cols(dy), cols(x)});
          bitlinearGradWeight(dy.data.data(), xq.data.data(), rows(x), cols(x),
                              cols(dy), g.data.data(),
                              outputScale(b.getOutputScale(), env));
          set(b, std::move(g));
        })
        .Case([&](LoRAGradInputOp l) {
          const HostTensor &dy = in(l.getResultGrad()), &a = in(l.getLoraA()),
                           &bm = in(l.getLoraB());
          HostTensor g = HostTensor::floats(withLast(dy.shape, a.shape[1]));
          double scaling = l.getAlpha().convertToDouble() / l.getRank();
          loraGradInputAccumulate(dy.data.data(), a.data.data(), bm.data.data(),
                                  rows(dy), a.shape[1], cols(dy), l.getRank(),
                                  scaling, g.data.data());
          set(l, std::move(g));
        })
        .Case([&](LoRAGradParamsOp l) {
          const HostTensor &dy = in(l.getResultGrad()), &x = in(l.getInput()),
                           &a = in(l.getLoraA()), &bm = in(l.getLoraB());
          HostTensor da = HostTensor::floats(a.shape);
          HostTensor db = HostTensor::floats(bm.shape);
          double scaling = l.getAlpha().convertToDouble() / l.getRank();
          loraGradParams(dy.data.data(), x.data.data(), a.data.data(),
                         bm.data.data(), rows(x), cols(x), cols(dy),
                         l.getRank(), scaling, da.data.data(), db.data.data());
          set(l.getLoraAGrad(), std::move(da));
          set(l.getLoraBGrad(), std::move(db));
        })
        .Case([&](AttentionGradOp a) {
          const HostTensor &q = in(a.getQuery()), &k = in(a.getKey()),
                           &v = in(a.getValue());
          HostTensor dq = HostTensor::floats(q.shape);
          HostTensor dk = HostTensor::floats(k.shape);
          HostTensor dv = HostTensor::floats(v.shape);
          attentionGrad(in(a.getResultGrad()).data.data(), q.data.data(),
                        k.data.data(), v.data.data(), q.shape[0], q.shape[1],
                        k.shape[1], a.getNumHeads(), a.getNumKvHeads(),
                        a.getHeadDim(), a.getScale().convertToDouble(),
                        a.getCausal(), dq.data.data(), dk.data.data(),
                        dv.data.data());
          set(a.getQueryGrad(), std::move(dq));
          set(a.getKeyGrad(), std::move(dk));
          set(a.getValueGrad(), std::move(dv));
        })
        .Case([&](Relu2GradOp r) {
          const HostTensor &x = in(r.getInput());
          HostTensor g = HostTensor::floats(x.shape);
          relu2Grad(in(r.getResultGrad()).data.data(), x.data.data(),
                    x.numElements(), g.data.data());
          set(r, std::move(g));
        })
        .Case([&](MatmulGradInputOp m) {
          const HostTensor &dy = in(m.getResultGrad()), &w = in(m.getWeight());
          HostTensor g = HostTensor::floats(withLast(dy.shape, w.shape[1]));
          matmulGradInput(dy.data.data(), w.data.data(), rows(dy), w.shape[1],
                          w.shape[0], g.data.data());
          set(m, std::move(g));
        })
        .Case([&](MatmulGradWeightOp m) {
          const HostTensor &dy = in(m.getResultGrad()), &x = in(m.getInput());
          HostTensor g = HostTensor::floats({cols(dy), cols(x)});
          matmulGradWeightAccumulate(dy.data.data(), x.data.data(), rows(x),
                                     cols(x), cols(dy), g.data.data());
          set(m, std::move(g));
        })
        .Case([&](CrossEntropyGradOp c) {
          const HostTensor &l = in(c.getLogits());
          HostTensor g = HostTensor::floats(l.shape);
          crossEntropyGrad(l.data.data(), in(c.getLabels()).ints.data(),
                           in(c.getLossMask()).data.data(), rows(l), cols(l),
                           double(in(c.getLossGrad()).data[0]), g.data.data());
          set(c, std::move(g));
        })
        .Case([&](LinearCrossEntropyOp c) {
          // The oracle needs no blocks: the unfused math, in full.
          const HostTensor &x = in(c.getInput()), &w = in(c.getWeight()),
                           &mask = in(c.getLossMask());
          const int32_t *labels = in(c.getLabels()).ints.data();
          int64_t n = rows(x), k = cols(x), v = w.shape[0];
          HostTensor logits = HostTensor::floats(withLast(x.shape, v));
          matmul(x.data.data(), w.data.data(), n, k, v, logits.data.data());
          set(c.getLoss(),
              HostTensor::scalar(crossEntropy(logits.data.data(), labels,
                                              mask.data.data(), n, v)));
          if (!c.getLossGrad())
            return;
          HostTensor dlogits = HostTensor::floats(logits.shape);
          crossEntropyGrad(logits.data.data(), labels, mask.data.data(), n, v,
                           double(in(c.getLossGrad()).data[0]),
                           dlogits.data.data());
          HostTensor g = HostTensor::floats(x.shape);
          matmulGradInput(dlogits.data.data(), w.data.data(), n, k, v,
                          g.data.data());
          set(c.getInputGrad(), std::move(g));
        })
        .Case([&](TokenCountOp t) {
          double count = 0;
          for (float m : in(t.getLossMask()).data)
            count += m;
          set(t, HostTensor::scalar(float(count)));
        })
        .Case([&](ConstantOp c) {
          auto type = cast<RankedTensorType>(c.getType());
          if (!type.hasStaticShape())
            throw std::runtime_error("constant needs a static shape");
          set(c, HostTensor::floats(
                     {type.getShape().begin(), type.getShape().end()},
                     float(c.getValue().convertToDouble())));
        })
        // Optimizer.
        .Case([&](GlobalNormOp g) {
          double sum = 0;
          for (Value v : g.getGrads())
            sum += globalNormSquared(in(v).data.data(), in(v).numElements());
          set(g, HostTensor::scalar(float(std::sqrt(sum))));
        })
        .Case([&](AccumulateOp a) {
          HostTensor acc = in(a.getAccumulator());
          const HostTensor &g = in(a.getGrad());
          float scale = in(a.getScale()).data[0];
          for (size_t i = 0; i < acc.data.size(); ++i)
            acc.data[i] += scale * g.data[i];
          set(a, std::move(acc));
        })
        .Case([&](ClipByNormOp c) {
          HostTensor g = in(c.getGrad());
          float factor = float(clipFactor(double(in(c.getNorm()).data[0]),
                                          c.getMaxNorm().convertToDouble()));
          for (float &v : g.data)
            v *= factor;
          set(c, std::move(g));
        })
        .Case([&](AdamWOp a) {
          HostTensor p = in(a.getParam()), m = in(a.getExpAvg()),
                     v = in(a.getExpAvgSq());
          adamw(p.data.data(), in(a.getGrad()).data.data(), m.data.data(),
                v.data.data(), p.numElements(), double(in(a.getLr()).data[0]),
                a.getBeta1().convertToDouble(), a.getBeta2().convertToDouble(),
                a.getEpsilon().convertToDouble(),
                a.getWeightDecay().convertToDouble(),
                int64_t(in(a.getStep()).data[0]));
          set(a.getNewParam(), std::move(p));
          set(a.getNewExpAvg(), std::move(m));
          set(a.getNewExpAvgSq(), std::move(v));
        })
        .Case([&](SGDOp s) {
          HostTensor p = in(s.getParam()), buf = in(s.getMomentumBuffer());
          sgd(p.data.data(), in(s.getGrad()).data.data(), buf.data.data(),
              p.numElements(), double(in(s.getLr()).data[0]),
              s.getMomentum().convertToDouble(),
              s.getWeightDecay().convertToDouble(),
              int64_t(in(s.getStep()).data[0]) == 1);
          set(s.getNewParam(), std::move(p));
          set(s.getNewMomentumBuffer(), std::move(buf));
        })
        .Default([&](Operation *other) {
          throw std::runtime_error("the reference executor has no kernel for "
                                   "this op");
        });
  }
};

Interpreter::Interpreter(ModuleOp module, const Model &model)
    : impl_(std::make_unique<Impl>(module, model)) {}

Interpreter::~Interpreter() = default;

std::map<std::string, HostTensor>
Interpreter::run(const std::string &function,
                 const std::map<std::string, HostTensor> &arguments) {
  return impl_->run(function, arguments);
}

std::vector<std::string>
Interpreter::argumentNames(const std::string &function) const {
  func::FuncOp func = impl_->lookup(function);
  std::vector<std::string> names;
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    auto name = func.getArgAttrOfType<StringAttr>(i, "loom.name");
    names.push_back(name ? name.str() : "arg" + std::to_string(i));
  }
  return names;
}

std::vector<std::string>
Interpreter::resultNames(const std::string &function) const {
  func::FuncOp func = impl_->lookup(function);
  std::vector<std::string> names;
  for (unsigned i = 0; i < func.getNumResults(); ++i) {
    auto name = func.getResultAttrOfType<StringAttr>(i, "loom.name");
    names.push_back(name ? name.str() : "result" + std::to_string(i));
  }
  return names;
}

} // namespace bitloom::reference

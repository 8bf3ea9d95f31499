//===- ImportModel.cpp - Model files to loom IR ---------------------------===//
#include "ImportModel.h"

#include "dialects/loom/LoomDialect.h"
#include "formats/Error.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringExtras.h"

#include <filesystem>

using namespace mlir;
using namespace bitloom::loom;

namespace bitloom {

std::vector<std::string> parseLoRATargets(const std::string &spec) {
  static const std::vector<std::string> attn = {"q", "k", "v", "o"};
  static const std::vector<std::string> ffn = {"gate", "up", "down"};
  std::vector<std::string> out;
  auto add = [&](const std::string &name) {
    if (std::find(out.begin(), out.end(), name) == out.end())
      out.push_back(name);
  };
  SmallVector<StringRef> parts;
  StringRef(spec).split(parts, ',', -1, /*KeepEmpty=*/false);
  for (StringRef raw : parts) {
    std::string part = raw.trim().str();
    if (part == "all" || part == "attn")
      for (auto &n : attn)
        add(n);
    if (part == "all" || part == "ffn")
      for (auto &n : ffn)
        add(n);
    if (part == "all" || part == "attn" || part == "ffn")
      continue;
    bool known = false;
    for (const ProjectionName &p : projectionNames()) {
      std::string module = StringRef(p.hfModule).rsplit('.').second.str();
      if (part == p.shortName || part == module) {
        add(p.shortName);
        known = true;
      }
    }
    if (!known)
      throw FormatError("", "--lora-targets",
                        "unknown target '" + part +
                            "' (expected q,k,v,o,gate,up,down, attn, ffn or "
                            "all)");
  }
  if (out.empty())
    throw FormatError("", "--lora-targets", "no targets given");
  // Canonical order, whatever order the user wrote.
  std::vector<std::string> ordered;
  for (const ProjectionName &p : projectionNames())
    if (std::find(out.begin(), out.end(), p.shortName) != out.end())
      ordered.push_back(p.shortName);
  return ordered;
}

static const ProjectionName &projection(const std::string &shortName) {
  for (const ProjectionName &p : projectionNames())
    if (shortName == p.shortName)
      return p;
  throw FormatError("", "--lora-targets", "unknown target " + shortName);
}

std::string peftLoRAName(int64_t layer, const std::string &shortName,
                         bool isA) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." +
         projection(shortName).hfModule + (isA ? ".lora_A" : ".lora_B") +
         ".weight";
}

namespace {

TernaryPacking packingOf(const ModelTensor &t) {
  switch (t.packing) {
  case TensorPacking::HfUint8:
    return TernaryPacking::hf_u8;
  case TensorPacking::TQ1_0:
    return TernaryPacking::tq1_0;
  case TensorPacking::TQ2_0:
    return TernaryPacking::tq2_0;
  case TensorPacking::Plain:
    break;
  }
  switch (t.dtype) {
  case DType::F16:
    return TernaryPacking::f16;
  case DType::BF16:
    return TernaryPacking::bf16;
  default:
    return TernaryPacking::f32;
  }
}

class GraphBuilder {
public:
  GraphBuilder(MLIRContext &context, const Model &model,
               const LoRAOptions &lora)
      : ctx(context), model(model), cfg(model.config()), lora(lora),
        builder(&context), loc(UnknownLoc::get(&context)) {}

  OwningOpRef<ModuleOp> build() {
    auto module = ModuleOp::create(FileLineColLoc::get(
        &ctx, std::filesystem::absolute(model.path()).string(), 0, 0));
    setModelAttributes(module);
    builder.setInsertionPointToEnd(module.getBody());

    int64_t dyn = ShapedType::kDynamic;
    Type i32 = builder.getI32Type();
    Type f32 = builder.getF32Type();
    auto tokenType = RankedTensorType::get({dyn, dyn}, i32);
    auto maskType = RankedTensorType::get({dyn, dyn}, f32);
    auto logitsType = RankedTensorType::get({dyn, dyn, cfg.vocabSize}, f32);
    auto lossType = RankedTensorType::get({}, f32);
    auto funcType = builder.getFunctionType(
        {tokenType, tokenType, tokenType, maskType}, {logitsType, lossType});
    auto func = func::FuncOp::create(builder, loc, "forward", funcType);
    func.setArgAttr(0, "loom.name", builder.getStringAttr("tokens"));
    func.setArgAttr(1, "loom.name", builder.getStringAttr("positions"));
    func.setArgAttr(2, "loom.name", builder.getStringAttr("labels"));
    func.setArgAttr(3, "loom.name", builder.getStringAttr("loss_mask"));
    Block *entry = func.addEntryBlock();
    builder.setInsertionPointToStart(entry);
    Value tokens = entry->getArgument(0), positions = entry->getArgument(1),
          labels = entry->getArgument(2), lossMask = entry->getArgument(3);

    Value embedTable = param("model.embed_tokens.weight");
    Value x =
        EmbeddingOp::create(builder, at("model.embed_tokens"),
                            activation(cfg.hiddenSize), embedTable, tokens);
    for (int64_t layer = 0; layer < cfg.numLayers; ++layer)
      x = decoderLayer(layer, x, positions);
    x = rmsNorm("model.norm", x);
    Value head = cfg.tieWordEmbeddings ? embedTable : param("lm_head.weight");
    Value logits = MatmulOp::create(builder, at("lm_head"),
                                    activation(cfg.vocabSize), x, head);
    Value loss = CrossEntropyOp::create(builder, at("loss"), lossType, logits,
                                        labels, lossMask);
    func::ReturnOp::create(builder, loc, ValueRange{logits, loss});
    return module;
  }

private:
  /// Locations name the Hugging Face module an op belongs to, so that
  /// diagnostics and kernel listings point at the model, not the IR.
  Location at(const std::string &module) {
    return NameLoc::get(builder.getStringAttr(module));
  }

  RankedTensorType activation(int64_t features) {
    return RankedTensorType::get(
        {ShapedType::kDynamic, ShapedType::kDynamic, features},
        builder.getF32Type());
  }

  Value param(const std::string &name) {
    const ModelTensor *t = model.find(name);
    if (!t)
      throw FormatError(model.path(), name, "tensor missing from the model");
    Type type;
    if (t->isProjection && cfg.weightQuant == WeightQuant::Offline)
      type = TernaryType::get(&ctx, t->shape, packingOf(*t));
    else
      type = RankedTensorType::get(t->shape, builder.getF32Type());
    return ParamOp::create(builder, at(name), type, builder.getStringAttr(name),
                           ParamKindAttr::get(&ctx, ParamKind::weight));
  }

  Value loraParam(const std::string &name, ParamKind kind, int64_t rows,
                  int64_t cols) {
    auto type = RankedTensorType::get({rows, cols}, builder.getF32Type());
    return ParamOp::create(builder, at(name), type, builder.getStringAttr(name),
                           ParamKindAttr::get(&ctx, kind));
  }

  Value rmsNorm(const std::string &module, Value x) {
    Value weight = param(module + ".weight");
    return RMSNormOp::create(builder, at(module), x.getType(), x, weight,
                             builder.getF64FloatAttr(cfg.rmsNormEps));
  }

  Value linear(int64_t layer, const std::string &shortName, Value x) {
    const ProjectionName &p = projection(shortName);
    std::string module =
        "model.layers." + std::to_string(layer) + "." + p.hfModule;
    Value weight = param(module + ".weight");
    const std::vector<int64_t> &shape = model.find(module + ".weight")->shape;
    int64_t out = shape[0], in = shape[1];
    auto quant = cfg.weightQuant == WeightQuant::Online
                     ? loom::WeightQuant::online
                     : loom::WeightQuant::offline;
    Value y = BitLinearOp::create(builder, at(module), activation(out), x,
                                  weight, /*output_scale=*/
                                  Value(), WeightQuantAttr::get(&ctx, quant));
    bool adapted =
        lora.rank > 0 && std::find(lora.targets.begin(), lora.targets.end(),
                                   shortName) != lora.targets.end();
    if (!adapted)
      return y;
    Value a = loraParam(peftLoRAName(layer, shortName, true), ParamKind::lora_a,
                        lora.rank, in);
    Value b = loraParam(peftLoRAName(layer, shortName, false),
                        ParamKind::lora_b, out, lora.rank);
    return LoRAOp::create(builder, at(module + ".lora"), y.getType(), y, x, a,
                          b, builder.getF64FloatAttr(lora.alpha),
                          builder.getI64IntegerAttr(lora.rank),
                          builder.getF64FloatAttr(lora.dropout));
  }

  Value decoderLayer(int64_t layer, Value x, Value positions) {
    std::string prefix = "model.layers." + std::to_string(layer) + ".";
    Value residual = x;
    Value a = rmsNorm(prefix + "input_layernorm", x);
    Value q = linear(layer, "q", a);
    Value k = linear(layer, "k", a);
    Value v = linear(layer, "v", a);
    auto theta = builder.getF64FloatAttr(cfg.ropeTheta);
    auto headDim = builder.getI64IntegerAttr(cfg.headDim);
    q = RoPEOp::create(builder, at(prefix + "self_attn.rotary_q"), q.getType(),
                       q, positions, theta, headDim);
    k = RoPEOp::create(builder, at(prefix + "self_attn.rotary_k"), k.getType(),
                       k, positions, theta, headDim);
    Value o = AttentionOp::create(
        builder, at(prefix + "self_attn"), q.getType(), q, k, v,
        builder.getI64IntegerAttr(cfg.numHeads),
        builder.getI64IntegerAttr(cfg.numKvHeads), headDim,
        builder.getF64FloatAttr(1.0 / std::sqrt(double(cfg.headDim))),
        builder.getBoolAttr(true));
    o = rmsNorm(prefix + "self_attn.attn_sub_norm", o);
    o = linear(layer, "o", o);
    x = AddOp::create(builder, at(prefix + "self_attn.residual"), residual, o);

    residual = x;
    Value m = rmsNorm(prefix + "post_attention_layernorm", x);
    Value gate = linear(layer, "gate", m);
    Value up = linear(layer, "up", m);
    gate = Relu2Op::create(builder, at(prefix + "mlp.act_fn"), gate);
    Value f = MulOp::create(builder, at(prefix + "mlp.gating"), gate, up);
    f = rmsNorm(prefix + "mlp.ffn_sub_norm", f);
    f = linear(layer, "down", f);
    return AddOp::create(builder, at(prefix + "mlp.residual"), residual, f);
  }

  void setModelAttributes(ModuleOp module) {
    auto i64 = [&](int64_t v) { return builder.getI64IntegerAttr(v); };
    SmallVector<NamedAttribute> config = {
        builder.getNamedAttr("vocab_size", i64(cfg.vocabSize)),
        builder.getNamedAttr("hidden_size", i64(cfg.hiddenSize)),
        builder.getNamedAttr("intermediate_size", i64(cfg.intermediateSize)),
        builder.getNamedAttr("num_hidden_layers", i64(cfg.numLayers)),
        builder.getNamedAttr("num_attention_heads", i64(cfg.numHeads)),
        builder.getNamedAttr("num_key_value_heads", i64(cfg.numKvHeads)),
        builder.getNamedAttr("head_dim", i64(cfg.headDim)),
        builder.getNamedAttr("rms_norm_eps",
                             builder.getF64FloatAttr(cfg.rmsNormEps)),
        builder.getNamedAttr("rope_theta",
                             builder.getF64FloatAttr(cfg.ropeTheta)),
        builder.getNamedAttr("tie_word_embeddings",
                             builder.getBoolAttr(cfg.tieWordEmbeddings)),
    };
    module->setAttr("loom.model_config", builder.getDictionaryAttr(config));
    module->setAttr("loom.model_path",
                    builder.getStringAttr(
                        std::filesystem::absolute(model.path()).string()));
    module->setAttr("loom.model_format",
                    builder.getStringAttr(model.format() == ModelFormat::Gguf
                                              ? "gguf"
                                              : "huggingface"));
    if (lora.rank > 0) {
      SmallVector<Attribute> targets;
      for (const std::string &t : lora.targets)
        targets.push_back(builder.getStringAttr(t));
      module->setAttr(
          "loom.lora",
          builder.getDictionaryAttr(
              {builder.getNamedAttr("rank", i64(lora.rank)),
               builder.getNamedAttr("alpha",
                                    builder.getF64FloatAttr(lora.alpha)),
               builder.getNamedAttr("dropout",
                                    builder.getF64FloatAttr(lora.dropout)),
               builder.getNamedAttr("targets",
                                    builder.getArrayAttr(targets))}));
    }
  }

  MLIRContext &ctx;
  const Model &model;
  const ModelConfig &cfg;
  const LoRAOptions &lora;
  OpBuilder builder;
  Location loc;
};

} // namespace

OwningOpRef<ModuleOp> importModel(MLIRContext &context, const Model &model,
                                  const LoRAOptions &lora) {
  context.getOrLoadDialect<LoomDialect>();
  context.getOrLoadDialect<func::FuncDialect>();
  return GraphBuilder(context, model, lora).build();
}

} // namespace bitloom

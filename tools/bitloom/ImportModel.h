//===- ImportModel.h - Model files to loom IR -------------------*- C++ -*-===//
#ifndef BITLOOM_TOOLS_BITLOOM_IMPORTMODEL_H
#define BITLOOM_TOOLS_BITLOOM_IMPORTMODEL_H

#include "model/Model.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>
#include <vector>

namespace bitloom {

struct LoRAOptions {
  int64_t rank = 0;   // 0: no adapters
  double alpha = 8.0; // PEFT's LoraConfig default
  double dropout = 0.0;
  /// Short projection names (q k v o gate up down).
  std::vector<std::string> targets;
};

/// Parses `q,k,v,o,gate,up,down`, `attn`, `ffn` or `all` (also combined, e.g.
/// `attn,up`). Also accepts PEFT module names (`q_proj`). Throws FormatError
/// naming `--lora-targets` on unknown names.
std::vector<std::string> parseLoRATargets(const std::string &spec);

/// PEFT's saved name of a LoRA matrix, e.g.
/// base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight.
std::string peftLoRAName(int64_t layer, const std::string &shortName, bool isA);

/// Builds `@forward(tokens, positions, labels, loss_mask) -> (logits, loss)`
/// for `model` with LoRA adapters as asked. The module carries the model's
/// path, format and configuration as attributes (loom.model_path, ...).
mlir::OwningOpRef<mlir::ModuleOp> importModel(mlir::MLIRContext &context,
                                              const Model &model,
                                              const LoRAOptions &lora);

} // namespace bitloom

#endif // BITLOOM_TOOLS_BITLOOM_IMPORTMODEL_H

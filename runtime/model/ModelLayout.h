//===- ModelLayout.h - The tensors a BitNet config implies ------*- C++ -*-===//
//
// Shared by the readers (Model.cpp) and make-model so both agree on names,
// shapes and order. Internal to runtime/model.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_MODEL_MODELLAYOUT_H
#define BITLOOM_MODEL_MODELLAYOUT_H

#include "model/Model.h"

#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::detail {

enum class TensorRole { Embedding, Norm, Projection, LmHead };

struct TensorSpec {
  std::string hfName;         // model.layers.0.self_attn.q_proj.weight
  std::string ggufName;       // blk.0.attn_q.weight
  std::vector<int64_t> shape; // HF order ([out, in])
  TensorRole role;
};

/// In the canonical order of Model::tensors(); lm_head only when untied.
std::vector<TensorSpec> tensorLayout(const ModelConfig &c);

} // namespace bitloom::detail

#endif // BITLOOM_MODEL_MODELLAYOUT_H

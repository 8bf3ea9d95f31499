//===- TernaryWeights.h - Frozen projections for the CPU kernels -*- C++
//-*-===//
//
// The CPU micro-kernels take a frozen BitLinear weight as its ternary
// pattern packed 2 bits per weight ("i2x128", runtime/ukernels/Ukernels.h)
// and one per-tensor multiplier, so that pattern × multiplier is exactly
// the weight the model computes with:
//  * offline projections (HF packed / GGUF TQ): Model::dequantize's values,
//    which must be 0 or ±m for a single m (a per-block scale that varies is
//    refused: BitNet b1.58 has one scale per tensor);
//  * online projections (float master weights, frozen when training LoRA):
//    HF's WeightQuant (s = 1 / max(mean|W|, 1e-5), t = clamp(round(W·s),
//    -1, 1)) computed once, in the reference executor's order (Σ|W| in
//    double, mean in float), with multiplier 1 / s.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_MODEL_TERNARYWEIGHTS_H
#define BITLOOM_MODEL_TERNARYWEIGHTS_H

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bitloom {

class Model;
struct ModelTensor;

struct PackedTernary {
  std::vector<uint8_t> bytes; // [out, bitloom_uk_packed_row_bytes(in)]
  float multiplier = 1.0f;
};

/// Packs projection `t` of `model` (shape [out, in]). Throws FormatError
/// naming the model file and the tensor for values that are not ternary.
PackedTernary packTernaryWeight(const Model &model, const ModelTensor &t);

/// Names of the model's weights stored as plain bf16 tensors: those
/// CpuWeightSource gives with packing "bf16" (compileForCpu's bf16Weights).
std::vector<std::string> bf16WeightNames(const Model &model);

/// The bytes compiled CPU code binds for a weight argument, by its
/// `loom.packing`: "" f32 values, "i2x128" the packed pattern,
/// "ternary_scale" the multiplier (one f32) of the weight whose name is
/// this one without ".ternary_scale", "bf16" the raw bf16 values of a tensor
/// stored as bf16 (any other tensor is refused). Remembers multipliers so a
/// weight is packed once when its multiplier follows it.
class CpuWeightSource {
public:
  explicit CpuWeightSource(const Model &model) : model_(model) {}
  std::vector<uint8_t> bytes(const std::string &name,
                             const std::string &packing);

private:
  const ModelTensor &tensor(const std::string &name) const;
  const Model &model_;
  std::map<std::string, float> multipliers_;
};

} // namespace bitloom

#endif // BITLOOM_MODEL_TERNARYWEIGHTS_H

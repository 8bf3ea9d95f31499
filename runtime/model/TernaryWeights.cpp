//===- TernaryWeights.cpp - Frozen projections for the CPU kernels --------===//
#include "model/TernaryWeights.h"

#include "formats/Error.h"
#include "model/Model.h"
#include "ukernels/Ukernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace bitloom {

namespace {
/// Rows dequantized at a time: bounds the temporary for multi-GB models.
constexpr int64_t kRowsPerChunk = 64;

float roundHalfEven(float v) { return std::nearbyint(v); }
} // namespace

PackedTernary packTernaryWeight(const Model &model, const ModelTensor &t) {
  if (t.shape.size() != 2)
    throw FormatError(t.filePath, t.name, "a projection must be 2-D");
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const int64_t rowBytes = bitloom_uk_packed_row_bytes(cols);
  PackedTernary packed;
  packed.bytes.assign(size_t(rows * rowBytes), 0);
  std::vector<float> values(size_t(kRowsPerChunk * cols));
  std::vector<int8_t> pattern(values.size());
  const bool online = model.config().weightQuant == WeightQuant::Online;

  float scale = 0.0f; // online: the quantizer's s
  if (online) {
    double sum = 0.0;
    for (int64_t r = 0; r < rows; r += kRowsPerChunk) {
      int64_t end = std::min(rows, r + kRowsPerChunk);
      model.dequantizeRows(t, r, end, values.data());
      for (int64_t e = 0; e < (end - r) * cols; ++e)
        sum += double(std::abs(values[size_t(e)]));
    }
    float n = float(rows * cols);
    float mean = rows * cols > 0 ? float(sum) / n : 0.0f;
    mean = std::max(mean, 1e-5f);
    scale = 1.0f / mean;
    packed.multiplier = 1.0f / scale;
  }

  bool haveMultiplier = online;
  for (int64_t r = 0; r < rows; r += kRowsPerChunk) {
    int64_t end = std::min(rows, r + kRowsPerChunk);
    model.dequantizeRows(t, r, end, values.data());
    for (int64_t e = 0; e < (end - r) * cols; ++e) {
      float v = values[size_t(e)];
      int8_t code;
      if (online) {
        code = int8_t(std::clamp(roundHalfEven(v * scale), -1.0f, 1.0f));
      } else if (v == 0.0f) {
        code = 0;
      } else {
        if (!haveMultiplier) {
          packed.multiplier = std::abs(v);
          haveMultiplier = true;
        }
        if (std::abs(v) != packed.multiplier)
          throw FormatError(
              t.filePath, t.name,
              "not a ternary tensor with one scale: value " +
                  std::to_string(v) + " at row " +
                  std::to_string(r + e / cols) + " is not 0 or ±" +
                  std::to_string(packed.multiplier) +
                  " (per-block scales that differ are not supported)");
        code = v > 0 ? 1 : -1;
      }
      pattern[size_t(e)] = code;
    }
    bitloom_uk_pack_ternary(pattern.data(), end - r, cols,
                            packed.bytes.data() + r * rowBytes);
  }
  return packed;
}

std::vector<std::string> bf16WeightNames(const Model &model) {
  std::vector<std::string> names;
  for (const ModelTensor &t : model.tensors())
    if (t.dtype == DType::BF16 && t.packing == TensorPacking::Plain)
      names.push_back(t.name);
  return names;
}

const ModelTensor &CpuWeightSource::tensor(const std::string &name) const {
  const ModelTensor *t = model_.find(name);
  if (!t)
    throw FormatError(model_.path(), name, "weight not in the model");
  return *t;
}

std::vector<uint8_t> CpuWeightSource::bytes(const std::string &name,
                                            const std::string &packing) {
  if (packing.empty()) {
    const ModelTensor &t = tensor(name);
    std::vector<uint8_t> out(t.numElements() * sizeof(float));
    model_.dequantize(t, reinterpret_cast<float *>(out.data()));
    return out;
  }
  if (packing == "bf16") {
    // The stored values as they are (bf16 in the model's little-endian
    // layout, row-major like the dequantized tensor).
    const ModelTensor &t = tensor(name);
    if (t.dtype != DType::BF16 || t.packing != TensorPacking::Plain ||
        t.byteSize != t.numElements() * 2)
      throw FormatError(t.filePath, name,
                        std::string("packing 'bf16' needs a tensor stored as "
                                    "bf16, this one is ") +
                            dtypeName(t.dtype));
    return std::vector<uint8_t>(t.data, t.data + t.byteSize);
  }
  if (packing == "i2x128") {
    PackedTernary packed = packTernaryWeight(model_, tensor(name));
    multipliers_[name] = packed.multiplier;
    return std::move(packed.bytes);
  }
  static const std::string suffix = ".ternary_scale";
  if (packing == "ternary_scale" && name.size() > suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    std::string weight = name.substr(0, name.size() - suffix.size());
    auto it = multipliers_.find(weight);
    float multiplier =
        it != multipliers_.end()
            ? it->second
            : packTernaryWeight(model_, tensor(weight)).multiplier;
    std::vector<uint8_t> out(sizeof(float));
    std::memcpy(out.data(), &multiplier, sizeof(float));
    return out;
  }
  throw FormatError(model_.path(), name,
                    "unknown weight packing '" + packing + "'");
}

} // namespace bitloom

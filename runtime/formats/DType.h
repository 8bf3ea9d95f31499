//===- DType.h - Element types of stored tensors ----------------*- C++ -*-===//
#ifndef BITLOOM_FORMATS_DTYPE_H
#define BITLOOM_FORMATS_DTYPE_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace bitloom {

/// Element types as they appear in weight files (safetensors and GGUF).
/// TQ1_0/TQ2_0 are ggml block types of 256 weights (54 / 66 bytes a block).
enum class DType {
  F64,
  F32,
  F16,
  BF16,
  I64,
  I32,
  I16,
  I8,
  U8,
  Bool,
  TQ1_0,
  TQ2_0
};

/// "F32", "BF16", "TQ2_0", ... (safetensors spelling for the plain types).
const char *dtypeName(DType t);
/// The inverse of dtypeName ("BOOL" for Bool); nullopt for unknown names.
std::optional<DType> dtypeFromName(const std::string &name);
/// Bytes per element of a plain type; 0 for block types.
size_t dtypeSize(DType t);
/// Elements per block: 256 for TQ1_0 / TQ2_0, 1 for plain types.
size_t dtypeBlockSize(DType t);
/// Bytes per block: 54 (TQ1_0), 66 (TQ2_0), dtypeSize for plain types.
size_t dtypeBlockBytes(DType t);
/// Bytes taken by `numElements` elements (block types: numElements must be a
/// multiple of 256; returns 0 otherwise).
size_t dtypeStorageBytes(DType t, uint64_t numElements);

float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f); // round to nearest even
float bf16ToFloat(uint16_t h);
uint16_t floatToBf16(float f); // round to nearest even, like torch

/// Converts `n` elements of type `t` at `src` to float32 (plain float and
/// integer types, and TQ1_0 / TQ2_0 exactly as ggml's dequantize_row_*).
/// For block types `n` must be a multiple of 256. `src` needs no alignment.
void dequantize(DType t, const uint8_t *src, float *dst, uint64_t n);

/// ggml's quantize_row_tq1_0_ref / quantize_row_tq2_0_ref: per block of 256,
/// d = max|x|, code = round(x / d) + 1. `dst` must hold
/// dtypeStorageBytes(t, n) bytes. `n` must be a multiple of 256.
void quantizeTernary(DType t, const float *src, uint8_t *dst, uint64_t n);

} // namespace bitloom

#endif // BITLOOM_FORMATS_DTYPE_H

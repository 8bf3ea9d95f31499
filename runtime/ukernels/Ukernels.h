//===- Ukernels.h - CPU micro-kernels called from generated code -*- C -*-===//
//
// The C ABI that compiled training steps call for their heavy products: the
// ternary BitNet linear (forward and input gradient) and dense f32 GEMM (B in
// f32 or bf16). The generated shared object is dlopen'ed by the runtime and
// these symbols resolve against the runtime executable, so the names and
// signatures are a stable contract with codegen. Each call picks the best
// instruction set of the running CPU and splits its work over a persistent
// thread pool.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_UKERNELS_UKERNELS_H
#define BITLOOM_UKERNELS_UKERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Threads every ukernel may use (default 1; n < 1 means 1). Returns the
/// previous count. A persistent pool; calls from one thread at a time.
int32_t bitloom_uk_set_threads(int32_t n);
int32_t bitloom_uk_threads(void);

/// Packed ternary layout "i2x128": row-major, each of the n rows takes
/// bitloom_uk_packed_row_bytes(k) = ceil(k/128)*32 bytes. Within a row, block
/// b (32 bytes) covers columns [128b, 128b+128): byte j of the block stores
/// column 128b + 32l + j in bits [2l, 2l+2) (l = 0..3) as (w + 1) in {0,1,2};
/// columns >= k store 1 (w = 0).
int64_t bitloom_uk_packed_row_bytes(int64_t k);
/// w: [n, k] int8 in {-1, 0, 1}.
void bitloom_uk_pack_ternary(const int8_t *w, int64_t n, int64_t k,
                             uint8_t *packed);
void bitloom_uk_unpack_ternary(const uint8_t *packed, int64_t n, int64_t k,
                               int8_t *w);

/// Forward of a BitNet linear: y[i, o] = (float)(sum_c xq[i, c] * w[o, c]) *
/// rowFactor[i] for i < m, o < n; xq [m, k] int8 row-major (any value
/// -128..127), w packed [n, ...]. The sum is an exact int32.
void bitloom_uk_ternary_matmul(const int8_t *xq, const uint8_t *w,
                               const float *rowFactor, float *y, int64_t m,
                               int64_t n, int64_t k);

/// Input gradient (the transposed product): dx[i, c] = scale * sum_o dy[i, o]
/// * w[o, c]; dy [m, n] f32, dx [m, k] f32; f32 accumulation. Must never
/// unpack more than a small tile of w at a time (no full unpacked copy of the
/// matrix).
void bitloom_uk_ternary_matmul_t(const float *dy, const uint8_t *w, float scale,
                                 float *dx, int64_t m, int64_t n, int64_t k);

/// Dense f32 GEMM: C[m, n] = (accumulate ? C[m, n] : 0) + sum_p opA[m, p] *
/// opB[p, n]. opA = A ([m, k] row-major) or, with transA, A^T of A stored
/// [k, m]; opB = B ([k, n]) or, with transB, B^T of B stored [n, k]. All
/// dense, row-major, no aliasing between C and A/B.
void bitloom_uk_matmul_f32(const float *a, const float *b, float *c, int64_t m,
                           int64_t n, int64_t k, int32_t transA, int32_t transB,
                           int32_t accumulate);

/// bitloom_uk_matmul_f32 with B in bf16 (the raw bits, stored and transposed
/// as B is there): each element is widened to f32 exactly (bits << 16) while
/// a cache block of B is packed, never the whole matrix at once, so the
/// result is that of the f32 GEMM on the widened B. For frozen bf16 weights
/// (the token embedding used as the LM head).
void bitloom_uk_matmul_f32_bf16b(const float *a, const uint16_t *b, float *c,
                                 int64_t m, int64_t n, int64_t k,
                                 int32_t transA, int32_t transB,
                                 int32_t accumulate);

/// The LM head fused with the masked mean cross-entropy and, when `xGrad` is
/// set, the loss's gradient wrt the head's input, without ever holding more
/// than `blockRows` rows of logits (loom.linear_cross_entropy):
///   logits = x · wᵀ, x [n, k] f32, w [v, k];
///   *loss = Σ_{mask[i]≠0} (logsumexp(logits[i]) - logits[i, labels[i]])
///           / count, count = #{i : mask[i] ≠ 0}; 0 when count = 0;
///   xGrad [n, k] = dlogits · w, dlogits = *lossGrad · (softmax(logits) -
///           onehot(labels)) / count on masked-in rows, 0 elsewhere.
/// Masked-in labels are clamped to [0, v) for the loss (those of masked-out
/// rows are ignored). `scratch` holds blockRows · v floats, provided by the
/// caller so that its memory plan places it; lossGrad and xGrad are both
/// null for the loss alone. The products are bitloom_uk_matmul_f32's, so
/// the results are those of the unfused GEMM → cross-entropy → gradient →
/// GEMM up to the rounding of the softmax.
void bitloom_uk_linear_cross_entropy(const float *x, const float *w,
                                     const int32_t *labels, const float *mask,
                                     const float *lossGrad, float *loss,
                                     float *xGrad, float *scratch, int64_t n,
                                     int64_t v, int64_t k, int64_t blockRows);

/// bitloom_uk_linear_cross_entropy with w in bf16 (the raw bits), widened
/// exactly as bitloom_uk_matmul_f32_bf16b does.
void bitloom_uk_linear_cross_entropy_bf16w(
    const float *x, const uint16_t *w, const int32_t *labels, const float *mask,
    const float *lossGrad, float *loss, float *xGrad, float *scratch, int64_t n,
    int64_t v, int64_t k, int64_t blockRows);

#ifdef __cplusplus
}
#endif

#endif // BITLOOM_UKERNELS_UKERNELS_H

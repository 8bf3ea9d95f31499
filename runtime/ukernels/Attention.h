//===- Attention.h - Causal GQA attention micro-kernels ---------*- C++ -*-===//
//
// Softmax attention of the training step, forward and backward, on the
// [batch, tokens, heads·head_dim] layout the loom IR uses (query head h
// reads kv head h / (heads / kv_heads)). No [T × S] score matrix is stored:
// the backward recomputes each probability row. f32 arithmetic, f64 row
// sums; threads split the work by (batch, kv head).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_UKERNELS_ATTENTION_H
#define BITLOOM_UKERNELS_ATTENTION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// out[b, t, h·D + d] = Σ_s P[b, h, t, s] · v[b, s, kvh·D + d] with
/// P = softmax_s(scale · q·k), keys after position t + (S - T) masked when
/// `causal`. q, out: [B, T, H·D]; k, v: [B, S, KVH·D].
void bitloom_uk_attention(const float *q, const float *k, const float *v,
                          float *out, int64_t batch, int64_t queries,
                          int64_t keys, int64_t heads, int64_t kvHeads,
                          int64_t headDim, float scale, int32_t causal);

/// The adjoints of bitloom_uk_attention for the output gradient `dout`:
/// dS = P · (dP - Σ_s P·dP) · scale with dP = dout·v; dq = dS·k,
/// dk = Σ_{group} dSᵀ·q, dv = Σ_{group} Pᵀ·dout. dq, dk, dv are
/// overwritten.
void bitloom_uk_attention_grad(const float *q, const float *k, const float *v,
                               const float *dout, float *dq, float *dk,
                               float *dv, int64_t batch, int64_t queries,
                               int64_t keys, int64_t heads, int64_t kvHeads,
                               int64_t headDim, float scale, int32_t causal);

#ifdef __cplusplus
}
#endif

#endif // BITLOOM_UKERNELS_ATTENTION_H

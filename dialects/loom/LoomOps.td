//===- LoomOps.td - loom operations ------------------------*- tablegen -*-===//
#ifndef LOOM_OPS
#define LOOM_OPS

include "dialects/loom/LoomDialect.td"
include "dialects/loom/LoomTypes.td"
include "dialects/loom/LoomInterfaces.td"
include "mlir/IR/OpBase.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Loom_F32Tensor : TensorOf<[F32]>;
def Loom_I32Tensor : TensorOf<[I32]>;
def Loom_Weight : AnyTypeOf<[Loom_F32Tensor, Loom_TernaryType]>;

def Loom_ParamOp : Loom_Op<"param", [Pure]> {
  let summary = "a named model or adapter parameter";
  let description = [{
    References a parameter by name. `kind = weight` parameters live in the
    model file under their Hugging Face name; LoRA parameters are named as
    PEFT saves them. Which parameters train is decided by the autodiff pass,
    not here.

        %w = loom.param "model.layers.0.mlp.up_proj.weight"
               : !loom.ternary<160x64, tq2_0>
  }];
  let arguments = (ins StrAttr:$name,
      DefaultValuedAttr<Loom_ParamKindAttr, "ParamKind::weight">:$kind);
  let results = (outs Loom_Weight:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Loom_EmbeddingOp : Loom_Op<"embedding", [Pure, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "token embedding lookup";
  let description = [{
    `result[b, t, :] = table[tokens[b, t], :]`. Out-of-range ids are a
    runtime error.
  }];
  let arguments = (ins Loom_F32Tensor:$table, Loom_I32Tensor:$tokens);
  let results = (outs Loom_F32Tensor:$result);
  let assemblyFormat =
      "$table `,` $tokens attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Loom_RMSNormOp : Loom_Op<"rms_norm", [Pure, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "RMSNorm over the last dimension, in f32";
  let description = [{ `y = weight * x / sqrt(mean(x²) + epsilon)`. }];
  let arguments = (ins Loom_F32Tensor:$input, Loom_F32Tensor:$weight,
      F64Attr:$epsilon);
  let results = (outs Loom_F32Tensor:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` "
                       "functional-type(operands, results)";
  let hasVerifier = 1;
}

def Loom_BitLinearOp : Loom_Op<"bitlinear", [Pure, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "BitNet b1.58 linear: int8 activations × ternary weights";
  let description = [{
    Per-token absmax int8 activation quantization (a = 127 / max|x|,
    x_q = clamp(round(x·a), -128, 127)) times a ternary weight, scaled back:
    `y = (x_q · W_tᵀ) · s / a`.

    - `weight_quant = online`: `weight` is an f32 [out, in] master matrix;
      s = max(mean|W|, 1e-5), W_t = clamp(round(W / s), -1, 1) every call.
    - `weight_quant = offline`: `weight` is a `!loom.ternary` parameter that
      already holds the ternary pattern and its scale(s).

    The optional `output_scale` (a 0-d f32 tensor: Hugging Face's
    `weight_scale`, GGUF's `.scale`) multiplies the result. Gradients pass
    straight through both quantizers.
  }];
  let arguments = (ins Loom_F32Tensor:$input, Loom_Weight:$weight,
      Optional<Loom_F32Tensor>:$output_scale,
      Loom_WeightQuantAttr:$weight_quant);
  let results = (outs Loom_F32Tensor:$result);
  let assemblyFormat = "$input `,` $weight (`scale` $output_scale^)? "
                       "attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Loom_LoRAOp : Loom_Op<"lora", [Pure, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "a LoRA adapter added to the output of the layer it adapts";
  let description = [{
    `result = base + (input · Aᵀ) · Bᵀ · (alpha / rank)`, exactly as PEFT
    computes it on a BitNet model: `input` is the adapted layer's
    unquantized input and `base` that layer's output. Dropout applies to
    `input` on the LoRA path in training only.
  }];
  let arguments = (ins Loom_F32Tensor:$base, Loom_F32Tensor:$input,
      Loom_F32Tensor:$lora_a, Loom_F32Tensor:$lora_b, F64Attr:$alpha,
      I64Attr:$rank, DefaultValuedAttr<F64Attr, "0.0">:$dropout);
  let results = (outs Loom_F32Tensor:$result);
  let assemblyFormat = "$base `,` $input `,` $lora_a `,` $lora_b attr-dict "
                       "`:` functional-type(operands, results)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    double getScaling() { return getAlpha().convertToDouble() / getRank(); }
  }];
}

def Loom_RoPEOp : Loom_Op<"rope", [Pure, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "rotary position embedding, rotate-half layout";
  let description = [{
    Per head of `head_dim` features: inv_freq[i] = theta^(-2i/head_dim),
    angle = position · inv_freq, `x' = x·cos + rotate_half(x)·sin` with
    rotate_half([x1, x2]) = [-x2, x1]. `positions` is [batch, tokens].
    `inverse` rotates by -angle: the adjoint, since rotations are
    orthogonal.
  }];
  let arguments = (ins Loom_F32Tensor:$input, Loom_I32Tensor:$positions,
      F64Attr:$theta, I64Attr:$head_dim,
      DefaultValuedAttr<BoolAttr, "false">:$inverse);
  let results = (outs Loom_F32Tensor:$result);
  let assemblyFormat = "$input `,` $positions attr-dict `:` "
                       "functional-type(operands, results)";
  let hasVerifier = 1;
}

def Loom_AttentionOp : Loom_Op<"attention", [Pure, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "causal grouped-query scaled dot-product attention";
  let description = [{
    q: [batch, tokens, num_heads·head_dim]; k, v: [batch, tokens,
    num_kv_heads·head_dim]. kv head j serves query heads j·g … j·g+g-1 with
    g = num_heads / num_kv_heads. Scores are scaled by `scale` (head_dim^-½
    by convention), masked causally, soft-maxed in f32.
  }];
  let arguments = (ins Loom_F32Tensor:$query, Loom_F32Tensor:$key,
      Loom_F32Tensor:$value, I64Attr:$num_heads, I64Attr:$num_kv_heads,
      I64Attr:$head_dim, F64Attr:$scale,
      DefaultValuedAttr<BoolAttr, "true">:$causal);
  let results = (outs Loom_F32Tensor:$result);
  let assemblyFormat = "$query `,` $key `,` $value attr-dict `:` "
                       "functional-type(operands, results)";
  let hasVerifier = 1;
}

def Loom_CachedAttentionOp : Loom_Op<"cached_attention", [Pure]> {
  let summary = "attention over a KV cache, for generation";
  let description = [{
    Writes this call's keys and values into the caches at their positions,
    then lets each query attend to every cached entry at a position no later
    than its own. `key_cache` / `value_cache` are [batch, max_tokens,
    num_kv_heads·head_dim]; the updated caches are results, so the cache is
    explicit state that the caller threads from one call to the next (the
    same function serves the prompt and each new token).
  }];
  let arguments = (ins Loom_F32Tensor:$query, Loom_F32Tensor:$key,
      Loom_F32Tensor:$value, Loom_F32Tensor:$key_cache,
      Loom_F32Tensor:$value_cache, Loom_I32Tensor:$positions,
      I64Attr:$num_heads, I64Attr:$num_kv_heads, I64Attr:$head_dim,
      F64Attr:$scale);
  let results = (outs Loom_F32Tensor:$result, Loom_F32Tensor:$new_key_cache,
      Loom_F32Tensor:$new_value_cache);
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

class Loom_ElementwiseOp<string mnemonic, list<Trait> traits = []>
    : Loom_Op<mnemonic, !listconcat(traits, [Pure, SameOperandsAndResultType])> {
  let results = (outs Loom_F32Tensor:$result);
}

def Loom_Relu2Op : Loom_ElementwiseOp<"relu2", [DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "squared ReLU: max(x, 0)²";
  let arguments = (ins Loom_F32Tensor:$input);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def Loom_AddOp : Loom_ElementwiseOp<"add", [Commutative, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "elementwise addition (residual connections)";
  let arguments = (ins Loom_F32Tensor:$lhs, Loom_F32Tensor:$rhs);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

def Loom_MulOp : Loom_ElementwiseOp<"mul", [Commutative, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "elementwise multiplication (FFN gating)";
  let arguments = (ins Loom_F32Tensor:$lhs, Loom_F32Tensor:$rhs);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

def Loom_MatmulOp : Loom_Op<"matmul", [Pure, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "dense f32 product with a [N, K] matrix (tied lm_head)";
  let description = [{
    `result[b, t, n] = Σ_k input[b, t, k] · weight[n, k]`: the weight is
    used transposed, as the tied lm_head uses the [vocab, hidden] embedding.
  }];
  let arguments = (ins Loom_F32Tensor:$input, Loom_F32Tensor:$weight);
  let results = (outs Loom_F32Tensor:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` "
                       "functional-type(operands, results)";
  let hasVerifier = 1;
}

def Loom_CrossEntropyOp : Loom_Op<"cross_entropy", [Pure, DeclareOpInterfaceMethods<Loom_DifferentiableOpInterface>]> {
  let summary = "mean causal-LM cross-entropy over masked tokens";
  let description = [{
    `loss = Σ mask[b,t] · (logsumexp(logits[b,t]) - logits[b,t,labels[b,t]])
    / Σ mask[b,t]` (0 when the mask is all zero). `labels` are already the
    next tokens; positions with mask 0 are not prediction targets.
  }];
  let arguments = (ins Loom_F32Tensor:$logits, Loom_I32Tensor:$labels,
      Loom_F32Tensor:$loss_mask);
  let results = (outs 0DTensorOf<[F32]>:$loss);
  let assemblyFormat = "$logits `,` $labels `,` $loss_mask attr-dict `:` "
                       "functional-type(operands, results)";
  let hasVerifier = 1;
}

include "dialects/loom/LoomGradOps.td"

#endif // LOOM_OPS

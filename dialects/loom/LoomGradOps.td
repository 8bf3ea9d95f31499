//===- LoomGradOps.td - adjoints and optimizer updates -----*- tablegen -*-===//
//
// Ops that only the autodiff pass creates: the adjoints of the forward ops
// and the optimizer updates. Each names exactly one piece of the backward so
// that later passes can fuse or drop it, and so pruning is visible in IR.
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_GRAD_OPS
#define LOOM_GRAD_OPS

class Loom_GradOp<string mnemonic, list<Trait> traits = []>
    : Loom_Op<mnemonic, !listconcat(traits, [Pure])> {
  let assemblyFormat =
      "operands attr-dict `:` functional-type(operands, results)";
}

def Loom_EmbeddingGradOp : Loom_GradOp<"embedding_grad"> {
  let summary = "gradient of an embedding table: scatter-add of rows";
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_I32Tensor:$tokens);
  let results = (outs Loom_F32Tensor:$table_grad);
}

def Loom_RMSNormGradInputOp : Loom_GradOp<"rms_norm_grad_input"> {
  let summary = "gradient of RMSNorm with respect to its input";
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$input,
      Loom_F32Tensor:$weight, F64Attr:$epsilon);
  let results = (outs Loom_F32Tensor:$input_grad);
}

def Loom_RMSNormGradWeightOp : Loom_GradOp<"rms_norm_grad_weight"> {
  let summary = "gradient of RMSNorm with respect to its weight";
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$input,
      F64Attr:$epsilon);
  let results = (outs Loom_F32Tensor:$weight_grad);
}

def Loom_BitLinearGradInputOp : Loom_GradOp<"bitlinear_grad_input"> {
  let summary = "input gradient of bitlinear (straight-through estimator)";
  let description = [{
    `dx = dy · (W_t · s)`: the gradient passes through the activation
    quantizer unchanged and meets the quantized (ternary × scale) weight.
  }];
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_Weight:$weight,
      Optional<Loom_F32Tensor>:$output_scale,
      Loom_WeightQuantAttr:$weight_quant);
  let results = (outs Loom_F32Tensor:$input_grad);
}

def Loom_BitLinearGradWeightOp : Loom_GradOp<"bitlinear_grad_weight"> {
  let summary = "master-weight gradient of bitlinear (straight-through)";
  let description = [{
    `dW = dyᵀ · x_q / a`, the quantized activations: the gradient passes
    through the weight quantizer unchanged. Only for online (master)
    weights: quantization-aware training of the whole model.
  }];
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$input,
      Optional<Loom_F32Tensor>:$output_scale);
  let results = (outs Loom_F32Tensor:$weight_grad);
}

def Loom_LoRAGradInputOp : Loom_GradOp<"lora_grad_input"> {
  let summary = "input gradient of the LoRA path: (dy · B) · A · alpha/r";
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$lora_a,
      Loom_F32Tensor:$lora_b, F64Attr:$alpha, I64Attr:$rank);
  let results = (outs Loom_F32Tensor:$input_grad);
}

def Loom_LoRAGradParamsOp : Loom_GradOp<"lora_grad_params"> {
  let summary = "gradients of LoRA A and B";
  let description = [{
    With u = x·Aᵀ and c = alpha/r: `dB = c · dyᵀ·u`, `dA = c · (dy·B)ᵀ·x`.
  }];
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$input,
      Loom_F32Tensor:$lora_a, Loom_F32Tensor:$lora_b, F64Attr:$alpha,
      I64Attr:$rank);
  let results = (outs Loom_F32Tensor:$lora_a_grad,
      Loom_F32Tensor:$lora_b_grad);
}

def Loom_AttentionGradOp : Loom_GradOp<"attention_grad"> {
  let summary = "gradients of attention for query, key and value";
  let description = [{ Recomputes the softmax from q and k. }];
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$query,
      Loom_F32Tensor:$key, Loom_F32Tensor:$value, I64Attr:$num_heads,
      I64Attr:$num_kv_heads, I64Attr:$head_dim, F64Attr:$scale,
      DefaultValuedAttr<BoolAttr, "true">:$causal);
  let results = (outs Loom_F32Tensor:$query_grad, Loom_F32Tensor:$key_grad,
      Loom_F32Tensor:$value_grad);
}

def Loom_Relu2GradOp : Loom_GradOp<"relu2_grad"> {
  let summary = "gradient of relu²: dy · 2·max(x, 0)";
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$input);
  let results = (outs Loom_F32Tensor:$input_grad);
}

def Loom_MatmulGradInputOp : Loom_GradOp<"matmul_grad_input"> {
  let summary = "input gradient of matmul: dy · W";
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$weight);
  let results = (outs Loom_F32Tensor:$input_grad);
}

def Loom_MatmulGradWeightOp : Loom_GradOp<"matmul_grad_weight"> {
  let summary = "weight gradient of matmul: dyᵀ · x";
  let arguments = (ins Loom_F32Tensor:$result_grad, Loom_F32Tensor:$input);
  let results = (outs Loom_F32Tensor:$weight_grad);
}

def Loom_CrossEntropyGradOp : Loom_GradOp<"cross_entropy_grad"> {
  let summary = "gradient of the mean masked cross-entropy wrt the logits";
  let description = [{
    `dlogits = dloss · (softmax(logits) - onehot(labels)) · mask / Σ mask`.
  }];
  let arguments = (ins Loom_F32Tensor:$logits, Loom_I32Tensor:$labels,
      Loom_F32Tensor:$loss_mask, 0DTensorOf<[F32]>:$loss_grad);
  let results = (outs Loom_F32Tensor:$logits_grad);
}

def Loom_LinearCrossEntropyOp : Loom_GradOp<"linear_cross_entropy"> {
  let summary = "LM head product fused with the cross-entropy loss and, "
                "given a loss gradient, the input gradient";
  let description = [{
    Exactly `loom.matmul %input, %weight` → `loom.cross_entropy` and, when
    `loss_grad` is present, → `loom.cross_entropy_grad` →
    `loom.matmul_grad_input` with the same weight:

      logits = input · weightᵀ ([batch, tokens, vocab], weight [vocab, K])
      loss   = Σ_{mask≠0} (logsumexp(logits) - logits[label]) / count
      input_grad = (loss_grad · (softmax(logits) - onehot(label)) · [mask≠0]
                    / count) · weight

    with count the number of positions whose mask is not 0 (loss and
    gradient are 0 when it is 0). Only the loss gradient wrt the input
    exists: the weight is frozen. Made by -loom-fuse-linear-cross-entropy
    so that the [batch·tokens, vocab] logits are never materialized:
    lowerings compute them `block_rows` rows at a time. Without `loss_grad`
    (evaluation) there is no `input_grad` result.
  }];
  let arguments = (ins Loom_F32Tensor:$input, Loom_F32Tensor:$weight,
      Loom_I32Tensor:$labels, Loom_F32Tensor:$loss_mask,
      Optional<0DTensorOf<[F32]>>:$loss_grad, I64Attr:$block_rows);
  let results = (outs 0DTensorOf<[F32]>:$loss,
      Optional<Loom_F32Tensor>:$input_grad);
  let hasVerifier = 1;
}

def Loom_TokenCountOp : Loom_GradOp<"token_count"> {
  let summary = "number of prediction targets: Σ loss_mask";
  let arguments = (ins Loom_F32Tensor:$loss_mask);
  let results = (outs 0DTensorOf<[F32]>:$count);
}

def Loom_ConstantOp : Loom_GradOp<"constant"> {
  let summary = "a tensor filled with one f32 value (the loss seed)";
  let arguments = (ins F64Attr:$value);
  let results = (outs Loom_F32Tensor:$result);
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

def Loom_GlobalNormOp : Loom_GradOp<"global_norm"> {
  let summary = "sqrt of the sum of squares of all gradients";
  let arguments = (ins Variadic<Loom_F32Tensor>:$grads);
  let results = (outs 0DTensorOf<[F32]>:$norm);
}

def Loom_AccumulateOp : Loom_GradOp<"accumulate"> {
  let summary = "gradient accumulation: acc + scale · grad";
  let arguments = (ins Loom_F32Tensor:$accumulator, Loom_F32Tensor:$grad,
      0DTensorOf<[F32]>:$scale);
  let results = (outs Loom_F32Tensor:$result);
}

def Loom_ClipByNormOp : Loom_GradOp<"clip_by_norm"> {
  let summary = "scale a gradient as torch.nn.utils.clip_grad_norm_ does";
  let description = [{
    `g · min(1, max_norm / (norm + 1e-6))` with `norm` the global norm.
  }];
  let arguments = (ins Loom_F32Tensor:$grad, 0DTensorOf<[F32]>:$norm,
      F64Attr:$max_norm);
  let results = (outs Loom_F32Tensor:$result);
}

def Loom_AdamWOp : Loom_GradOp<"adamw"> {
  let summary = "one AdamW update, as torch.optim.AdamW";
  let description = [{
    `p ← p·(1 − lr·wd)`; `m ← β1·m + (1−β1)·g`; `v ← β2·v + (1−β2)·g²`;
    `p ← p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps)`, t = `step`
    (from 1). `lr` and `step` are runtime inputs so the host runs any
    schedule.
  }];
  let arguments = (ins Loom_F32Tensor:$param, Loom_F32Tensor:$grad,
      Loom_F32Tensor:$exp_avg, Loom_F32Tensor:$exp_avg_sq,
      0DTensorOf<[F32]>:$lr, 0DTensorOf<[F32]>:$step, F64Attr:$beta1,
      F64Attr:$beta2, F64Attr:$epsilon, F64Attr:$weight_decay);
  let results = (outs Loom_F32Tensor:$new_param, Loom_F32Tensor:$new_exp_avg,
      Loom_F32Tensor:$new_exp_avg_sq);
}

def Loom_SGDOp : Loom_GradOp<"sgd"> {
  let summary = "one SGD-with-momentum update, as torch.optim.SGD";
  let description = [{
    `g ← g + wd·p`; `buf ← g` at step 1, else `momentum·buf + g`;
    `p ← p − lr·buf`.
  }];
  let arguments = (ins Loom_F32Tensor:$param, Loom_F32Tensor:$grad,
      Loom_F32Tensor:$momentum_buffer, 0DTensorOf<[F32]>:$lr,
      0DTensorOf<[F32]>:$step, F64Attr:$momentum, F64Attr:$weight_decay);
  let results = (outs Loom_F32Tensor:$new_param,
      Loom_F32Tensor:$new_momentum_buffer);
}

#endif // LOOM_GRAD_OPS

// RUN: bitloom-opt %inputs/one-layer.mlir -loom-autodiff | FileCheck %s
// RUN: bitloom-opt %inputs/one-layer.mlir -loom-autodiff=trainable=lora+norm | FileCheck %s --check-prefix=NORM
// RUN: bitloom-opt %inputs/one-layer.mlir -loom-autodiff="trainable=all optimizer=sgd momentum=0.9 max-grad-norm=1.0" | FileCheck %s --check-prefix=ALL

// eval_step: LoRA parameters are arguments, no backward at all.
// CHECK-LABEL: func.func @eval_step
// CHECK-SAME: {loom.name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"}
// CHECK-SAME: {loom.name = "tokens"}
// CHECK-SAME: -> (tensor<f32> {loom.name = "loss"}, tensor<f32> {loom.name = "token_count"})
// CHECK-NOT: _grad
// CHECK: loom.token_count
// CHECK: return

// train_step: parameters, AdamW state, data, lr and step.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: {loom.name = "exp_avg.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"}
// CHECK-SAME: {loom.name = "exp_avg_sq.base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"}
// CHECK-SAME: {loom.name = "lr"}, %{{.*}}: tensor<f32> {loom.name = "step"})
// CHECK-SAME: {loom.name = "grad_norm"}
// The loss is seeded with 1 and flows back through the tied lm_head.
// CHECK: %[[SEED:.*]] = loom.constant {value = 1.000000e+00 : f64}
// CHECK: loom.cross_entropy_grad %{{.*}}, %{{.*}}, %{{.*}}, %[[SEED]]
// CHECK: loom.matmul_grad_input
// The down_proj adapter: its parameters, then the bitlinear's input
// gradient; the adapter's input gradient is computed right before the two
// are summed (not held while the bitlinear's runs), and carries on to the q
// adapter below it.
// CHECK: loom.lora_grad_params
// CHECK: %[[DXB:.*]] = loom.bitlinear_grad_input
// CHECK-NEXT: %[[DXL:.*]] = loom.lora_grad_input
// CHECK-NEXT: loom.add %[[DXL]], %[[DXB]]
// CHECK: loom.relu2_grad
// CHECK: loom.attention_grad
// RoPE's adjoint is the inverse rotation.
// CHECK: loom.rope %{{.*}} {head_dim = 8 : i64, inverse = true
// CHECK: loom.lora_grad_params
// Frozen weights: no weight gradients, no embedding gradient; nothing below
// the first adapter (q's input) is differentiated.
// CHECK-NOT: loom.matmul_grad_weight
// CHECK-NOT: loom.bitlinear_grad_weight
// CHECK-NOT: loom.embedding_grad
// CHECK-NOT: loom.rms_norm_grad_weight
// CHECK: loom.global_norm
// CHECK-COUNT-4: loom.adamw
// CHECK: return

// With norms trainable their weight gradients appear, and the gradient now
// reaches the first norm (whose weight trains) but still not the embedding.
// NORM-LABEL: func.func @train_step
// NORM-SAME: {loom.name = "model.layers.0.input_layernorm.weight"}
// NORM-SAME: {loom.name = "model.norm.weight"}
// NORM: loom.rms_norm_grad_weight
// NORM-NOT: loom.embedding_grad
// NORM-COUNT-9: loom.adamw

// Whole-model QAT: master weights train through the straight-through
// estimator; the tied embedding gets gradients from lm_head and lookup.
// ALL-LABEL: func.func @train_step
// ALL-SAME: {loom.name = "model.embed_tokens.weight"}
// ALL-SAME: {loom.name = "momentum_buffer.model.embed_tokens.weight"}
// ALL: loom.matmul_grad_weight
// ALL: loom.bitlinear_grad_weight
// ALL: loom.embedding_grad
// ALL: loom.global_norm
// ALL: loom.clip_by_norm
// ALL: loom.sgd

// Gradient accumulation: accumulate_step adds scaled gradients into
// "grad.<name>" accumulators; apply_step updates once from them.
// CHECK-LABEL: func.func @accumulate_step
// CHECK-SAME: {loom.name = "grad.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"}
// CHECK-SAME: {loom.name = "grad_scale"}
// CHECK-NOT: loom.adamw
// CHECK-COUNT-4: loom.accumulate
// CHECK: loom.token_count
// CHECK-LABEL: func.func @apply_step
// CHECK-SAME: {loom.name = "exp_avg.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"}
// CHECK-SAME: {loom.name = "grad.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"}
// CHECK-NOT: loom.lora
// CHECK: loom.global_norm
// CHECK-COUNT-4: loom.adamw

// RUN: bitloom-opt %s -split-input-file -loom-autodiff -verify-diagnostics | FileCheck %s

// A single adapter on the last projection: the backward stops right there.
// Nothing before the adapter's input is differentiated.
// CHECK-LABEL: func.func @train_step
// CHECK: loom.cross_entropy_grad
// CHECK: loom.matmul_grad_input
// CHECK-NEXT: loom.lora_grad_params
// CHECK-NOT: loom.lora_grad_input
// CHECK-NOT: loom.bitlinear_grad_input
// CHECK-NOT: loom.rms_norm_grad_input
// CHECK: loom.global_norm
func.func @forward(%t: tensor<?x?xi32>, %p: tensor<?x?xi32>, %y: tensor<?x?xi32>, %m: tensor<?x?xf32>)
    -> (tensor<?x?x16xf32>, tensor<f32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<?x?xi32>) -> tensor<?x?x8xf32>
  %w = loom.param "model.layers.0.mlp.down_proj.weight" : !loom.ternary<8x8, f32>
  %d = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<offline>} : (tensor<?x?x8xf32>, !loom.ternary<8x8, f32>) -> tensor<?x?x8xf32>
  %a = loom.param "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight" {kind = #loom.param_kind<lora_a>} : tensor<2x8xf32>
  %b = loom.param "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight" {kind = #loom.param_kind<lora_b>} : tensor<8x2xf32>
  %l = loom.lora %d, %x, %a, %b {alpha = 2.0 : f64, rank = 2 : i64} : (tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>) -> tensor<?x?x8xf32>
  %logits = loom.matmul %l, %e : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %loss = loom.cross_entropy %logits, %y, %m : (tensor<?x?x16xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %logits, %loss : tensor<?x?x16xf32>, tensor<f32>
}

// -----

// Nothing trainable is a clear error, not an empty step.
// expected-error @+1 {{nothing to train: no parameter matches trainable=lora}}
func.func @forward(%t: tensor<?x?xi32>, %p: tensor<?x?xi32>, %y: tensor<?x?xi32>, %m: tensor<?x?xf32>)
    -> (tensor<?x?x16xf32>, tensor<f32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<?x?xi32>) -> tensor<?x?x8xf32>
  %logits = loom.matmul %x, %e : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %loss = loom.cross_entropy %logits, %y, %m : (tensor<?x?x16xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %logits, %loss : tensor<?x?x16xf32>, tensor<f32>
}

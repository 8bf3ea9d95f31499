// RUN: bitloom-opt %s -split-input-file -loom-verify-model -verify-diagnostics | FileCheck %s

// A consistent model passes unchanged.
// CHECK-LABEL: func.func @forward
func.func @forward(%t: tensor<?x?xi32>, %p: tensor<?x?xi32>, %y: tensor<?x?xi32>, %m: tensor<?x?xf32>)
    -> (tensor<?x?x16xf32>, tensor<f32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<?x?xi32>) -> tensor<?x?x8xf32>
  %a = loom.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {kind = #loom.param_kind<lora_a>} : tensor<2x8xf32>
  %b = loom.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {kind = #loom.param_kind<lora_b>} : tensor<8x2xf32>
  %l = loom.lora %x, %x, %a, %b {alpha = 2.0 : f64, rank = 2 : i64} : (tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>) -> tensor<?x?x8xf32>
  %logits = loom.matmul %l, %e : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %loss = loom.cross_entropy %logits, %y, %m : (tensor<?x?x16xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %logits, %loss : tensor<?x?x16xf32>, tensor<f32>
}

// -----

func.func @two_shapes() {
  %a = loom.param "model.norm.weight" : tensor<8xf32>
  // expected-error @+1 {{parameter 'model.norm.weight' is used with type 'tensor<16xf32>' here but 'tensor<8xf32>' elsewhere}}
  %b = loom.param "model.norm.weight" : tensor<16xf32>
  return
}

// -----

// expected-error @+1 {{LoRA adapter 'base_model.model.model.layers.0.mlp.up_proj' has only its A matrix}}
module {
  func.func @half_adapter() {
    %a = loom.param "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight" {kind = #loom.param_kind<lora_a>} : tensor<2x8xf32>
    return
  }
}

// -----

func.func @lora_name() {
  // expected-error @+1 {{LoRA parameter 'adapter.weight' must be named as PEFT saves it (contains '.lora_B.')}}
  %b = loom.param "adapter.weight" {kind = #loom.param_kind<lora_b>} : tensor<8x2xf32>
  return
}

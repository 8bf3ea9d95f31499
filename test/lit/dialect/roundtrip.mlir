// RUN: bitloom-opt %s | FileCheck %s
// RUN: bitloom-opt %s | bitloom-opt | FileCheck %s
// RUN: bitloom-opt %s --mlir-print-op-generic | bitloom-opt | FileCheck %s

// Every loom op and type survives the printer and the parser.

// CHECK-LABEL: func.func @layer
func.func @layer(%tokens: tensor<?x?xi32>, %positions: tensor<?x?xi32>,
                 %labels: tensor<?x?xi32>, %mask: tensor<?x?xf32>)
    -> (tensor<?x?x512xf32>, tensor<f32>) {
  // CHECK: loom.param "model.embed_tokens.weight" : tensor<512x64xf32>
  %emb = loom.param "model.embed_tokens.weight" : tensor<512x64xf32>
  // CHECK: loom.embedding %{{.*}}, %{{.*}} : (tensor<512x64xf32>, tensor<?x?xi32>) -> tensor<?x?x64xf32>
  %x = loom.embedding %emb, %tokens : (tensor<512x64xf32>, tensor<?x?xi32>) -> tensor<?x?x64xf32>
  %nw = loom.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
  // CHECK: loom.rms_norm %{{.*}}, %{{.*}} {epsilon = 1.000000e-05 : f64}
  %a = loom.rms_norm %x, %nw {epsilon = 1.0e-5 : f64} : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x64xf32>
  // CHECK: loom.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
  %wq = loom.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
  // CHECK: loom.bitlinear %{{.*}}, %{{.*}} {weight_quant = #loom.weight_quant<online>}
  %q0 = loom.bitlinear %a, %wq {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  // CHECK: loom.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {kind = #loom.param_kind<lora_a>} : tensor<8x64xf32>
  %la = loom.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {kind = #loom.param_kind<lora_a>} : tensor<8x64xf32>
  %lb = loom.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {kind = #loom.param_kind<lora_b>} : tensor<64x8xf32>
  // CHECK: loom.lora %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {alpha = 1.600000e+01 : f64, rank = 8 : i64}
  %q = loom.lora %q0, %a, %la, %lb {alpha = 16.0 : f64, rank = 8 : i64} : (tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<8x64xf32>, tensor<64x8xf32>) -> tensor<?x?x64xf32>
  // CHECK: loom.param "model.layers.0.self_attn.k_proj.weight" : !loom.ternary<32x256, tq2_0>
  %wk = loom.param "model.layers.0.self_attn.k_proj.weight" : !loom.ternary<32x256, tq2_0>
  %wide = loom.param "model.wide.weight" : tensor<256x64xf32>
  %aw = loom.matmul %a, %wide : (tensor<?x?x64xf32>, tensor<256x64xf32>) -> tensor<?x?x256xf32>
  // CHECK: loom.bitlinear %{{.*}}, %{{.*}} {weight_quant = #loom.weight_quant<offline>} : (tensor<?x?x256xf32>, !loom.ternary<32x256, tq2_0>)
  %k0 = loom.bitlinear %aw, %wk {weight_quant = #loom.weight_quant<offline>} : (tensor<?x?x256xf32>, !loom.ternary<32x256, tq2_0>) -> tensor<?x?x32xf32>
  %s = loom.param "model.layers.0.self_attn.k_proj.weight_scale" : tensor<f32>
  // CHECK: loom.bitlinear %{{.*}}, %{{.*}} scale %{{.*}} {weight_quant = #loom.weight_quant<offline>}
  %k = loom.bitlinear %aw, %wk scale %s {weight_quant = #loom.weight_quant<offline>} : (tensor<?x?x256xf32>, !loom.ternary<32x256, tq2_0>, tensor<f32>) -> tensor<?x?x32xf32>
  // CHECK: loom.rope %{{.*}}, %{{.*}} {head_dim = 16 : i64, theta = 1.000000e+04 : f64}
  %qr = loom.rope %q, %positions {head_dim = 16 : i64, theta = 10000.0 : f64} : (tensor<?x?x64xf32>, tensor<?x?xi32>) -> tensor<?x?x64xf32>
  %kr = loom.rope %k, %positions {head_dim = 16 : i64, theta = 10000.0 : f64} : (tensor<?x?x32xf32>, tensor<?x?xi32>) -> tensor<?x?x32xf32>
  // CHECK: loom.attention %{{.*}}, %{{.*}}, %{{.*}} {head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 2.500000e-01 : f64}
  %o = loom.attention %qr, %kr, %k0 {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : (tensor<?x?x64xf32>, tensor<?x?x32xf32>, tensor<?x?x32xf32>) -> tensor<?x?x64xf32>
  // CHECK: loom.relu2 %{{.*}} : tensor<?x?x64xf32>
  %g = loom.relu2 %o : tensor<?x?x64xf32>
  // CHECK: loom.mul %{{.*}}, %{{.*}} : tensor<?x?x64xf32>
  %m = loom.mul %g, %o : tensor<?x?x64xf32>
  // CHECK: loom.add %{{.*}}, %{{.*}} : tensor<?x?x64xf32>
  %h = loom.add %x, %m : tensor<?x?x64xf32>
  // CHECK: loom.matmul %{{.*}}, %{{.*}} : (tensor<?x?x64xf32>, tensor<512x64xf32>) -> tensor<?x?x512xf32>
  %logits = loom.matmul %h, %emb : (tensor<?x?x64xf32>, tensor<512x64xf32>) -> tensor<?x?x512xf32>
  // CHECK: loom.cross_entropy %{{.*}}, %{{.*}}, %{{.*}} : (tensor<?x?x512xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  %loss = loom.cross_entropy %logits, %labels, %mask : (tensor<?x?x512xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %logits, %loss : tensor<?x?x512xf32>, tensor<f32>
}

// CHECK-LABEL: func.func private @packings
// CHECK-SAME: !loom.ternary<8x16, hf_u8>
// CHECK-SAME: !loom.ternary<4x512, tq1_0>
// CHECK-SAME: !loom.ternary<4x16, i2>
// CHECK-SAME: !loom.ternary<3x5, f32>
// CHECK-SAME: !loom.ternary<3x5, f16>
// CHECK-SAME: !loom.ternary<3x5, bf16>
func.func private @packings(!loom.ternary<8x16, hf_u8>, !loom.ternary<4x512, tq1_0>,
    !loom.ternary<4x16, i2>, !loom.ternary<3x5, f32>, !loom.ternary<3x5, f16>,
    !loom.ternary<3x5, bf16>)

// RUN: bitloom-opt %s -split-input-file -loom-autodiff=trainable=all | FileCheck %s

// The adjoint each op emits, operand by operand (whole-model training, so
// every path is differentiated).

// RMSNorm, the tied lm_head and the embedding lookup.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: (%[[E:[a-z0-9]+]]: tensor<16x8xf32> {loom.name = "model.embed_tokens.weight"}, %[[W:[a-z0-9]+]]: tensor<8xf32> {loom.name = "model.norm.weight"}
// CHECK: %[[X:.*]] = loom.embedding %[[E]], %[[T:[a-z0-9]+]]
// CHECK: %[[N:.*]] = loom.rms_norm %[[X]], %[[W]]
// CHECK: %[[L:.*]] = loom.matmul %[[N]], %[[E]]
// CHECK: %[[DL:.*]] = loom.cross_entropy_grad %[[L]]
// CHECK-DAG: %[[DN:.*]] = loom.matmul_grad_input %[[DL]], %[[E]] : (tensor<?x?x16xf32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
// CHECK-DAG: %[[DEH:.*]] = loom.matmul_grad_weight %[[DL]], %[[N]] : (tensor<?x?x16xf32>, tensor<?x?x8xf32>) -> tensor<16x8xf32>
// CHECK-DAG: %[[DX:.*]] = loom.rms_norm_grad_input %[[DN]], %[[X]], %[[W]] {epsilon = 1.000000e-05 : f64}
// CHECK-DAG: %[[DW:.*]] = loom.rms_norm_grad_weight %[[DN]], %[[X]] {epsilon = 1.000000e-05 : f64} : (tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<8xf32>
// CHECK-DAG: %[[DEL:.*]] = loom.embedding_grad %[[DX]], %[[T]] : (tensor<?x?x8xf32>, tensor<?x?xi32>) -> tensor<16x8xf32>
// The tied table's two uses sum into one gradient.
// CHECK: %[[DE:.*]] = loom.add %[[DEH]], %[[DEL]] : tensor<16x8xf32>
// CHECK: loom.global_norm %[[DE]], %[[DW]]
func.func @forward(%t: tensor<?x?xi32>, %p: tensor<?x?xi32>, %y: tensor<?x?xi32>, %m: tensor<?x?xf32>)
    -> (tensor<?x?x16xf32>, tensor<f32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<?x?xi32>) -> tensor<?x?x8xf32>
  %w = loom.param "model.norm.weight" : tensor<8xf32>
  %n = loom.rms_norm %x, %w {epsilon = 1.0e-5 : f64} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %l = loom.matmul %n, %e : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %loss = loom.cross_entropy %l, %y, %m : (tensor<?x?x16xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %l, %loss : tensor<?x?x16xf32>, tensor<f32>
}

// -----

// Bitlinear (online master weights, QAT): straight-through estimators on
// both sides; relu², the gating product and the residual add.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: %[[WG:[a-z0-9]+]]: tensor<12x8xf32> {loom.name = "model.layers.0.mlp.gate_proj.weight"}
// CHECK: %[[G:.*]] = loom.bitlinear %[[X:[^,]+]], %[[WG]] {weight_quant = #loom.weight_quant<online>}
// CHECK: %[[R:.*]] = loom.relu2 %[[G]]
// CHECK: %[[F:.*]] = loom.mul %[[R]], %[[U:[^ ]+]]
// CHECK: %[[H:.*]] = loom.add %[[X]], %[[D:[^ ]+]]
// CHECK-DAG: loom.mul %[[DF:[^,]+]], %[[U]]
// CHECK-DAG: loom.mul %[[DF]], %[[R]]
// CHECK-DAG: %[[DG:.*]] = loom.relu2_grad %{{.*}}, %[[G]]
// CHECK-DAG: loom.bitlinear_grad_input %[[DG]], %[[WG]] {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x12xf32>, tensor<12x8xf32>) -> tensor<?x?x8xf32>
// CHECK-DAG: loom.bitlinear_grad_weight %[[DG]], %[[X]] : (tensor<?x?x12xf32>, tensor<?x?x8xf32>) -> tensor<12x8xf32>
func.func @forward(%t: tensor<?x?xi32>, %p: tensor<?x?xi32>, %y: tensor<?x?xi32>, %m: tensor<?x?xf32>)
    -> (tensor<?x?x16xf32>, tensor<f32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<?x?xi32>) -> tensor<?x?x8xf32>
  %wg = loom.param "model.layers.0.mlp.gate_proj.weight" : tensor<12x8xf32>
  %g = loom.bitlinear %x, %wg {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x8xf32>, tensor<12x8xf32>) -> tensor<?x?x12xf32>
  %wu = loom.param "model.layers.0.mlp.up_proj.weight" : tensor<12x8xf32>
  %u = loom.bitlinear %x, %wu {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x8xf32>, tensor<12x8xf32>) -> tensor<?x?x12xf32>
  %r = loom.relu2 %g : tensor<?x?x12xf32>
  %f = loom.mul %r, %u : tensor<?x?x12xf32>
  %wd = loom.param "model.layers.0.mlp.down_proj.weight" : tensor<8x12xf32>
  %d = loom.bitlinear %f, %wd {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x12xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  %h = loom.add %x, %d : tensor<?x?x8xf32>
  %l = loom.matmul %h, %e : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %loss = loom.cross_entropy %l, %y, %m : (tensor<?x?x16xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %l, %loss : tensor<?x?x16xf32>, tensor<f32>
}

// -----

// Attention and RoPE: one attention_grad for q, k and v; each RoPE's adjoint
// is the inverse rotation with the same positions.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[Q:.*]] = loom.rope %[[QP:[^,]+]], %[[POS:[^ ]+]] {head_dim = 4 : i64, theta = 1.000000e+04 : f64}
// CHECK: %[[K:.*]] = loom.rope %[[KP:[^,]+]], %[[POS]]
// CHECK: loom.attention %[[Q]], %[[K]], %[[V:[^ ]+]]
// CHECK: %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]] = loom.attention_grad %{{.*}}, %[[Q]], %[[K]], %[[V]] {head_dim = 4 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 5.000000e-01 : f64}
// CHECK-DAG: loom.rope %[[DK]], %[[POS]] {head_dim = 4 : i64, inverse = true, theta = 1.000000e+04 : f64}
// CHECK-DAG: loom.rope %[[DQ]], %[[POS]] {head_dim = 4 : i64, inverse = true, theta = 1.000000e+04 : f64}
func.func @forward(%t: tensor<?x?xi32>, %p: tensor<?x?xi32>, %y: tensor<?x?xi32>, %m: tensor<?x?xf32>)
    -> (tensor<?x?x16xf32>, tensor<f32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<?x?xi32>) -> tensor<?x?x8xf32>
  %wk = loom.param "model.layers.0.self_attn.k_proj.weight" : tensor<4x8xf32>
  %k0 = loom.bitlinear %x, %wk {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x8xf32>, tensor<4x8xf32>) -> tensor<?x?x4xf32>
  %wv = loom.param "model.layers.0.self_attn.v_proj.weight" : tensor<4x8xf32>
  %v = loom.bitlinear %x, %wv {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x8xf32>, tensor<4x8xf32>) -> tensor<?x?x4xf32>
  %q = loom.rope %x, %p {head_dim = 4 : i64, theta = 10000.0 : f64} : (tensor<?x?x8xf32>, tensor<?x?xi32>) -> tensor<?x?x8xf32>
  %k = loom.rope %k0, %p {head_dim = 4 : i64, theta = 10000.0 : f64} : (tensor<?x?x4xf32>, tensor<?x?xi32>) -> tensor<?x?x4xf32>
  %o = loom.attention %q, %k, %v {num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, scale = 0.5 : f64} : (tensor<?x?x8xf32>, tensor<?x?x4xf32>, tensor<?x?x4xf32>) -> tensor<?x?x8xf32>
  %l = loom.matmul %o, %e : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %loss = loom.cross_entropy %l, %y, %m : (tensor<?x?x16xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %l, %loss : tensor<?x?x16xf32>, tensor<f32>
}

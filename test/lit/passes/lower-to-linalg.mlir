// RUN: bitloom-opt %s -loom-lower-to-linalg | FileCheck %s
// RUN: bitloom-opt %inputs/one-layer.mlir -loom-autodiff -loom-specialize-shapes="batch=2 seq-len=5" -loom-lower-to-linalg | FileCheck %s --check-prefix=STEPS

// Online bitlinear: the weight param becomes a named argument; per-row
// absmax activation quantization (reciprocal, then ×127), per-tensor absmean
// weight quantization (Σ|W| in f64), round half to even, then the product
// with the transposed weight accumulated in f64 and rounded once.
// CHECK-LABEL: func.func @bitlinear_online
// CHECK-SAME: %[[W:[a-z0-9]+]]: tensor<4x8xf32> {loom.name = "model.layers.0.mlp.up_proj.weight", loom.param}
// CHECK: tensor.collapse_shape %{{.*}} {{\[\[}}0, 1], [2]] : tensor<2x3x8xf32> into tensor<6x8xf32>
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]
// CHECK:   math.absf
// CHECK:   arith.maximumf
// CHECK: linalg.generic
// CHECK:   %[[INV:.*]] = arith.divf %{{.*}}, %{{.*}} : f32
// CHECK:   %[[S:.*]] = arith.mulf %[[INV]], %{{.*}} : f32
// CHECK:   math.roundeven
// CHECK: linalg.generic {{.*}} iterator_types = ["reduction", "reduction"]} ins(%[[W]] : tensor<4x8xf32>) outs(%{{.*}} : tensor<f64>)
// CHECK:   arith.extf
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]} {{.*}} outs(%{{.*}} : tensor<6x4xf64>)
// CHECK:   arith.extf
// CHECK:   arith.mulf {{.*}} : f64
// CHECK:   arith.addf {{.*}} : f64
// CHECK: arith.truncf
// CHECK: tensor.expand_shape %{{.*}} {{\[\[}}0, 1], [2]] output_shape [2, 3, 4] : tensor<6x4xf32> into tensor<2x3x4xf32>
// CHECK-NOT: loom.
func.func @bitlinear_online(%x: tensor<2x3x8xf32>) -> tensor<2x3x4xf32> {
  %w = loom.param "model.layers.0.mlp.up_proj.weight" : tensor<4x8xf32>
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<online>} : (tensor<2x3x8xf32>, tensor<4x8xf32>) -> tensor<2x3x4xf32>
  return %y : tensor<2x3x4xf32>
}

// Offline ternary weights arrive dequantized as f32 [out, in]: no weight
// quantization, one argument for both uses.
// CHECK-LABEL: func.func @bitlinear_offline
// CHECK-SAME: (%{{.*}}: tensor<2x3x8xf32>, %{{.*}}: tensor<4x8xf32> {loom.name = "w", loom.param}) -> tensor<2x3x4xf32>
// CHECK-NOT: ["reduction", "reduction"]
// CHECK: return
func.func @bitlinear_offline(%x: tensor<2x3x8xf32>) -> tensor<2x3x4xf32> {
  %w = loom.param "w" : !loom.ternary<4x8, hf_u8>
  %w2 = loom.param "w" : !loom.ternary<4x8, hf_u8>
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<offline>} : (tensor<2x3x8xf32>, !loom.ternary<4x8, hf_u8>) -> tensor<2x3x4xf32>
  %z = loom.bitlinear %x, %w2 {weight_quant = #loom.weight_quant<offline>} : (tensor<2x3x8xf32>, !loom.ternary<4x8, hf_u8>) -> tensor<2x3x4xf32>
  %s = loom.add %y, %z : tensor<2x3x4xf32>
  return %s : tensor<2x3x4xf32>
}

// GQA as a [batch, tokens, kv_heads, group, head_dim] view of q; scores
// masked with -inf past the query's position; softmax exp(x - max) / Σ.
// CHECK-LABEL: func.func @attention
// CHECK: tensor.expand_shape %{{.*}} {{\[\[}}0], [1], [2, 3, 4]] output_shape [1, 4, 1, 2, 8] : tensor<1x4x16xf32> into tensor<1x4x1x2x8xf32>
// CHECK: tensor.expand_shape %{{.*}} {{\[\[}}0], [1], [2, 3]] output_shape [1, 4, 1, 8] : tensor<1x4x8xf32> into tensor<1x4x1x8xf32>
// CHECK: arith.cmpi sgt
// CHECK: arith.select %{{.*}}, %{{.*}}, %{{.*}} : f32
// CHECK: math.exp
// CHECK: tensor.collapse_shape %{{.*}} {{\[\[}}0], [1], [2, 3, 4]] : tensor<1x4x1x2x8xf32> into tensor<1x4x16xf32>
func.func @attention(%q: tensor<1x4x16xf32>, %k: tensor<1x4x8xf32>, %v: tensor<1x4x8xf32>) -> tensor<1x4x16xf32> {
  %o = loom.attention %q, %k, %v {num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35355339059327373 : f64} : (tensor<1x4x16xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x16xf32>
  return %o : tensor<1x4x16xf32>
}

// Masked mean cross-entropy: the label's logit is gathered with
// tensor.extract; totals and counts reduce to 0-d f64 tensors.
// CHECK-LABEL: func.func @cross_entropy
// CHECK: tensor.collapse_shape %{{.*}} {{\[\[}}0, 1]] : tensor<2x3xi32> into tensor<6xi32>
// CHECK: math.exp
// CHECK: linalg.generic {{.*}} iterator_types = ["reduction"]} {{.*}} outs(%{{.*}}, %{{.*}} : tensor<f64>, tensor<f64>)
// CHECK:   tensor.extract %{{.*}}[%{{.*}}, %{{.*}}] : tensor<6x32xf32>
// CHECK:   math.log
// CHECK: linalg.generic {{.*}} iterator_types = []} {{.*}} outs(%{{.*}} : tensor<f32>)
func.func @cross_entropy(%l: tensor<2x3x32xf32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>) -> tensor<f32> {
  %loss = loom.cross_entropy %l, %labels, %mask : (tensor<2x3x32xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// AdamW: lr and step are read once; bias corrections in f64 with pow; one
// elementwise generic yields the three new tensors.
// CHECK-LABEL: func.func @adamw
// CHECK: tensor.extract %{{.*}}[] : tensor<f32>
// CHECK: arith.fptosi %{{.*}} : f32 to i64
// CHECK: math.powf %{{.*}}, %{{.*}} : f64
// CHECK: math.powf %{{.*}}, %{{.*}} : f64
// CHECK: %[[R:.*]]:3 = linalg.generic
// CHECK:   math.sqrt
// CHECK: return %[[R]]#0, %[[R]]#1, %[[R]]#2
func.func @adamw(%p: tensor<4x8xf32>, %g: tensor<4x8xf32>, %m: tensor<4x8xf32>, %v: tensor<4x8xf32>, %lr: tensor<f32>, %step: tensor<f32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %np, %nm, %nv = loom.adamw %p, %g, %m, %v, %lr, %step {beta1 = 0.9 : f64, beta2 = 0.999 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.01 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<f32>, tensor<f32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>)
  return %np, %nm, %nv : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}

// Whole training steps lower completely; frozen weights become trailing
// arguments after the step's own.
// STEPS-LABEL: func.func @eval_step
// STEPS-SAME: {loom.name = "loss_mask"}
// STEPS-SAME: tensor<32x16xf32> {loom.name = "model.embed_tokens.weight", loom.param}
// STEPS-LABEL: func.func @train_step
// STEPS-SAME: tensor<f32> {loom.name = "step"}
// STEPS-SAME: {loom.name = "model.layers.0.self_attn.q_proj.weight", loom.param}
// STEPS-NOT: loom.{{[a-z_]+}} %
// STEPS: return

// RUN: bitloom-opt %s -split-input-file -loom-fuse-linear-cross-entropy="block-bytes=1024" | FileCheck %s
// RUN: bitloom-opt %inputs/one-layer.mlir -loom-autodiff -loom-specialize-shapes="batch=2 seq-len=12" -loom-fuse-linear-cross-entropy | FileCheck %s --check-prefix=STEPS
// RUN: bitloom-opt %inputs/one-layer.mlir -loom-autodiff=trainable=all -loom-fuse-linear-cross-entropy | FileCheck %s --check-prefix=ALL

// Training: the product, the loss, its gradient and the input gradient
// become one op at the seed (moved up to the loss); block_rows is the most
// multiples of 8 whose logits fit in 1024 bytes (1024 / (16·4) = 16).
// CHECK-LABEL: func.func @train
// CHECK-SAME: (%[[X:.*]]: tensor<4x8x8xf32>, %[[L:.*]]: tensor<4x8xi32>, %[[M:.*]]: tensor<4x8xf32>)
// CHECK: %[[W:.*]] = loom.param "lm_head.weight" : tensor<16x8xf32>
// CHECK: %[[SEED:.*]] = loom.constant {value = 1.000000e+00 : f64} : () -> tensor<f32>
// CHECK: %[[LOSS:.*]], %[[DX:.*]] = loom.linear_cross_entropy %[[X]], %[[W]], %[[L]], %[[M]], %[[SEED]] {block_rows = 16 : i64} : (tensor<4x8x8xf32>, tensor<16x8xf32>, tensor<4x8xi32>, tensor<4x8xf32>, tensor<f32>) -> (tensor<f32>, tensor<4x8x8xf32>)
// CHECK-NOT: loom.matmul
// CHECK-NOT: loom.cross_entropy
// CHECK-NOT: loom.param
// CHECK: return %[[LOSS]], %[[DX]]
func.func @train(%x: tensor<4x8x8xf32>, %labels: tensor<4x8xi32>, %mask: tensor<4x8xf32>) -> (tensor<f32>, tensor<4x8x8xf32>) {
  %w = loom.param "lm_head.weight" : tensor<16x8xf32>
  %logits = loom.matmul %x, %w : (tensor<4x8x8xf32>, tensor<16x8xf32>) -> tensor<4x8x16xf32>
  %loss = loom.cross_entropy %logits, %labels, %mask : (tensor<4x8x16xf32>, tensor<4x8xi32>, tensor<4x8xf32>) -> tensor<f32>
  %seed = loom.constant {value = 1.0 : f64} : () -> tensor<f32>
  %dl = loom.cross_entropy_grad %logits, %labels, %mask, %seed : (tensor<4x8x16xf32>, tensor<4x8xi32>, tensor<4x8xf32>, tensor<f32>) -> tensor<4x8x16xf32>
  %w2 = loom.param "lm_head.weight" : tensor<16x8xf32>
  %dx = loom.matmul_grad_input %dl, %w2 : (tensor<4x8x16xf32>, tensor<16x8xf32>) -> tensor<4x8x8xf32>
  return %loss, %dx : tensor<f32>, tensor<4x8x8xf32>
}

// -----

// Evaluation: loss only; block_rows capped at the 2·3 rows.
// CHECK-LABEL: func.func @eval
// CHECK: %[[LOSS:.*]] = loom.linear_cross_entropy %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {block_rows = 6 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
// CHECK-NEXT: return %[[LOSS]]
func.func @eval(%x: tensor<2x3x8xf32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>) -> tensor<f32> {
  %w = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %logits = loom.matmul %x, %w : (tensor<2x3x8xf32>, tensor<16x8xf32>) -> tensor<2x3x16xf32>
  %loss = loom.cross_entropy %logits, %labels, %mask : (tensor<2x3x16xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Dynamic rows: no cap; at least 8 rows even when one row alone is larger
// than the budget (1024 / (64·4) = 4).
// CHECK-LABEL: func.func @dynamic
// CHECK: loom.linear_cross_entropy {{.*}} {block_rows = 8 : i64} : (tensor<?x?x8xf32>, tensor<64x8xf32>
func.func @dynamic(%x: tensor<?x?x8xf32>, %labels: tensor<?x?xi32>, %mask: tensor<?x?xf32>) -> tensor<f32> {
  %w = loom.param "lm_head.weight" : tensor<64x8xf32>
  %logits = loom.matmul %x, %w : (tensor<?x?x8xf32>, tensor<64x8xf32>) -> tensor<?x?x64xf32>
  %loss = loom.cross_entropy %logits, %labels, %mask : (tensor<?x?x64xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Logits with another use (returned, as @forward and generation do) stay.
// CHECK-LABEL: func.func @logits_returned
// CHECK: loom.matmul
// CHECK: loom.cross_entropy
// CHECK-NOT: loom.linear_cross_entropy
func.func @logits_returned(%x: tensor<2x3x8xf32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>) -> (tensor<2x3x16xf32>, tensor<f32>) {
  %w = loom.param "lm_head.weight" : tensor<16x8xf32>
  %logits = loom.matmul %x, %w : (tensor<2x3x8xf32>, tensor<16x8xf32>) -> tensor<2x3x16xf32>
  %loss = loom.cross_entropy %logits, %labels, %mask : (tensor<2x3x16xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  return %logits, %loss : tensor<2x3x16xf32>, tensor<f32>
}

// -----

// A trainable head needs the whole logits gradient for its weight gradient.
// CHECK-LABEL: func.func @head_trains
// CHECK: loom.matmul
// CHECK: loom.cross_entropy_grad
// CHECK: loom.matmul_grad_input
// CHECK: loom.matmul_grad_weight
// CHECK-NOT: loom.linear_cross_entropy
func.func @head_trains(%x: tensor<2x3x8xf32>, %w: tensor<16x8xf32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>, %seed: tensor<f32>) -> (tensor<f32>, tensor<2x3x8xf32>, tensor<16x8xf32>) {
  %logits = loom.matmul %x, %w : (tensor<2x3x8xf32>, tensor<16x8xf32>) -> tensor<2x3x16xf32>
  %loss = loom.cross_entropy %logits, %labels, %mask : (tensor<2x3x16xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  %dl = loom.cross_entropy_grad %logits, %labels, %mask, %seed : (tensor<2x3x16xf32>, tensor<2x3xi32>, tensor<2x3xf32>, tensor<f32>) -> tensor<2x3x16xf32>
  %dx = loom.matmul_grad_input %dl, %w : (tensor<2x3x16xf32>, tensor<16x8xf32>) -> tensor<2x3x8xf32>
  %dw = loom.matmul_grad_weight %dl, %x : (tensor<2x3x16xf32>, tensor<2x3x8xf32>) -> tensor<16x8xf32>
  return %loss, %dx, %dw : tensor<f32>, tensor<2x3x8xf32>, tensor<16x8xf32>
}

// -----

// The input gradient through another weight is not this head's.
// CHECK-LABEL: func.func @other_weight
// CHECK-NOT: loom.linear_cross_entropy
func.func @other_weight(%x: tensor<2x3x8xf32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>, %seed: tensor<f32>) -> (tensor<f32>, tensor<2x3x8xf32>) {
  %w = loom.param "lm_head.weight" : tensor<16x8xf32>
  %logits = loom.matmul %x, %w : (tensor<2x3x8xf32>, tensor<16x8xf32>) -> tensor<2x3x16xf32>
  %loss = loom.cross_entropy %logits, %labels, %mask : (tensor<2x3x16xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  %dl = loom.cross_entropy_grad %logits, %labels, %mask, %seed : (tensor<2x3x16xf32>, tensor<2x3xi32>, tensor<2x3xf32>, tensor<f32>) -> tensor<2x3x16xf32>
  %v = loom.param "other.weight" : tensor<16x8xf32>
  %dx = loom.matmul_grad_input %dl, %v : (tensor<2x3x16xf32>, tensor<16x8xf32>) -> tensor<2x3x8xf32>
  return %loss, %dx : tensor<f32>, tensor<2x3x8xf32>
}

// The autodiff'd entry points of a one-layer model (tied head, 24 rows):
// @forward returns its logits and keeps them; every step fuses, with the
// default 16 MiB budget capped at the rows.
// STEPS-LABEL: func.func @forward
// STEPS: loom.matmul
// STEPS: loom.cross_entropy
// STEPS-LABEL: func.func @eval_step
// STEPS-NOT: loom.matmul
// STEPS: loom.linear_cross_entropy %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {block_rows = 24 : i64} : ({{.*}}) -> tensor<f32>
// STEPS-NOT: loom.cross_entropy
// STEPS-LABEL: func.func @train_step
// STEPS-NOT: loom.matmul
// STEPS: loom.linear_cross_entropy %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {block_rows = 24 : i64} : ({{.*}}) -> (tensor<f32>, tensor<2x12x16xf32>)
// STEPS-NOT: loom.cross_entropy
// STEPS-NOT: loom.matmul_grad_input
// STEPS: loom.lora_grad_input
// STEPS-LABEL: func.func @accumulate_step
// STEPS: loom.linear_cross_entropy
// STEPS-NOT: loom.cross_entropy
// STEPS-NOT: loom.matmul_grad_input

// Whole-model training: the tied embedding trains through the head, so the
// training steps keep the unfused form; evaluation still fuses.
// ALL-LABEL: func.func @eval_step
// ALL: loom.linear_cross_entropy
// ALL-LABEL: func.func @train_step
// ALL-NOT: loom.linear_cross_entropy
// ALL: loom.matmul_grad_weight

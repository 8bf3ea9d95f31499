// RUN: bitloom-opt %s -split-input-file -verify-diagnostics -loom-lower-to-linalg

// The fused LM head + loss keeps its logits in row blocks, which only the
// micro-kernel does: the generated loops have no lowering for it.
func.func @train(%x: tensor<2x3x8xf32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>, %seed: tensor<f32>) -> (tensor<f32>, tensor<2x3x8xf32>) {
  %w = loom.param "lm_head.weight" : tensor<16x8xf32>
  // expected-error @+1 {{loom.linear_cross_entropy needs ukernels=true}}
  %loss, %dx = loom.linear_cross_entropy %x, %w, %labels, %mask, %seed {block_rows = 4 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x3xi32>, tensor<2x3xf32>, tensor<f32>) -> (tensor<f32>, tensor<2x3x8xf32>)
  return %loss, %dx : tensor<f32>, tensor<2x3x8xf32>
}

// -----

func.func @eval(%x: tensor<2x3x8xf32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>) -> tensor<f32> {
  %w = loom.param "lm_head.weight" : tensor<16x8xf32>
  // expected-error @+1 {{loom.linear_cross_entropy needs ukernels=true}}
  %loss = loom.linear_cross_entropy %x, %w, %labels, %mask {block_rows = 8 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

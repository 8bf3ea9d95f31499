// RUN: bitloom-opt %inputs/one-layer.mlir -loom-specialize-shapes="batch=2 seq-len=5" | FileCheck %s
// RUN: bitloom-opt %inputs/one-layer.mlir -loom-autodiff -loom-specialize-shapes="batch=3 seq-len=7" | FileCheck %s --check-prefix=STEPS
// RUN: bitloom-opt %inputs/one-layer.mlir -loom-build-generate=max-tokens=64 -loom-specialize-shapes="batch=3 seq-len=7" | FileCheck %s --check-prefix=GEN
// RUN: bitloom-opt %s -split-input-file -verify-diagnostics -loom-specialize-shapes="batch=2 seq-len=5"

// Signatures and every op result get the static batch and tokens.
// CHECK-LABEL: func.func @forward
// CHECK-SAME: (%{{.*}}: tensor<2x5xi32>, %{{.*}}: tensor<2x5xi32>, %{{.*}}: tensor<2x5xi32>, %{{.*}}: tensor<2x5xf32>) -> (tensor<2x5x32xf32>, tensor<f32>)
// CHECK: loom.embedding {{.*}} -> tensor<2x5x16xf32>
// CHECK: loom.attention {{.*}} -> tensor<2x5x16xf32>
// CHECK: loom.matmul {{.*}} -> tensor<2x5x32xf32>
// CHECK-NOT: ?x

// The autodiff'd steps too, backward included; parameters keep their shapes.
// STEPS-LABEL: func.func @train_step
// STEPS-SAME: tensor<3x7xi32> {loom.name = "tokens"}
// STEPS: loom.attention_grad {{.*}} -> (tensor<3x7x16xf32>, tensor<3x7x8xf32>, tensor<3x7x8xf32>)
// STEPS: loom.lora_grad_params {{.*}} -> (tensor<4x16xf32>, tensor<16x4xf32>)
// STEPS-NOT: ?x

// @generate_step is a decoder step whatever the training shape: one
// sequence, one token per call; its caches keep max-tokens.
// GEN-LABEL: func.func @generate_step
// GEN-SAME: tensor<1x64x8xf32> {loom.name = "key_cache.0"}
// GEN-SAME: tensor<1x1xi32> {loom.name = "tokens"}
// GEN-SAME: -> (tensor<1x1x32xf32> {loom.name = "logits"}, tensor<1x64x8xf32> {loom.name = "key_cache.0"}
// GEN: loom.cached_attention {{.*}} -> (tensor<1x1x16xf32>, tensor<1x64x8xf32>, tensor<1x64x8xf32>)
// GEN-NOT: ?x

// -----

// A static leading dimension must agree with the one being fixed.
// expected-error @+1 {{static dimension 0 is 3 but the module is specialized to 2}}
func.func @mismatch(%x: tensor<3x?x16xf32>) -> tensor<3x?x16xf32> {
  return %x : tensor<3x?x16xf32>
}

// -----

// Only batch and tokens may be dynamic.
// expected-error @+1 {{dynamic dimension 2 of 'tensor<?x?x?xf32>' is neither batch nor tokens}}
func.func @features(%x: tensor<?x?x?xf32>) -> tensor<?x?x?xf32> {
  return %x : tensor<?x?x?xf32>
}

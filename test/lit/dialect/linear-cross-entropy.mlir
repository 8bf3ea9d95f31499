// RUN: bitloom-opt %s -split-input-file -verify-diagnostics | FileCheck %s

// loom.linear_cross_entropy round-trips in both forms: loss and input
// gradient with a loss gradient, the loss alone without.
// CHECK-LABEL: func.func @forms
// CHECK: loom.linear_cross_entropy %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {block_rows = 8 : i64} : (tensor<?x?x8xf32>, tensor<16x8xf32>, tensor<?x?xi32>, tensor<?x?xf32>, tensor<f32>) -> (tensor<f32>, tensor<?x?x8xf32>)
// CHECK: loom.linear_cross_entropy %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {block_rows = 8 : i64} : (tensor<?x?x8xf32>, tensor<16x8xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
func.func @forms(%x: tensor<?x?x8xf32>, %w: tensor<16x8xf32>, %l: tensor<?x?xi32>, %m: tensor<?x?xf32>, %s: tensor<f32>) {
  %loss, %dx = loom.linear_cross_entropy %x, %w, %l, %m, %s {block_rows = 8 : i64} : (tensor<?x?x8xf32>, tensor<16x8xf32>, tensor<?x?xi32>, tensor<?x?xf32>, tensor<f32>) -> (tensor<f32>, tensor<?x?x8xf32>)
  %eval = loom.linear_cross_entropy %x, %w, %l, %m {block_rows = 8 : i64} : (tensor<?x?x8xf32>, tensor<16x8xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return
}

// -----

func.func @features(%x: tensor<2x3x8xf32>, %w: tensor<16x4xf32>, %l: tensor<2x3xi32>, %m: tensor<2x3xf32>) {
  // expected-error @+1 {{input features is 8 but must equal the weight's columns (4)}}
  %loss = loom.linear_cross_entropy %x, %w, %l, %m {block_rows = 8 : i64} : (tensor<2x3x8xf32>, tensor<16x4xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  return
}

// -----

func.func @labels(%x: tensor<2x3x8xf32>, %w: tensor<16x8xf32>, %l: tensor<2x4xi32>, %m: tensor<2x3xf32>) {
  // expected-error @+1 {{labels tokens is 4 but must equal input tokens (3)}}
  %loss = loom.linear_cross_entropy %x, %w, %l, %m {block_rows = 8 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x4xi32>, tensor<2x3xf32>) -> tensor<f32>
  return
}

// -----

func.func @block_rows(%x: tensor<2x3x8xf32>, %w: tensor<16x8xf32>, %l: tensor<2x3xi32>, %m: tensor<2x3xf32>) {
  // expected-error @+1 {{block_rows must be positive, got 0}}
  %loss = loom.linear_cross_entropy %x, %w, %l, %m {block_rows = 0 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  return
}

// -----

func.func @grad_without_seed(%x: tensor<2x3x8xf32>, %w: tensor<16x8xf32>, %l: tensor<2x3xi32>, %m: tensor<2x3xf32>) {
  // expected-error @+1 {{has an input_grad result if and only if it has a loss_grad operand}}
  %loss, %dx = loom.linear_cross_entropy %x, %w, %l, %m {block_rows = 8 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> (tensor<f32>, tensor<2x3x8xf32>)
  return
}

// -----

func.func @grad_type(%x: tensor<2x3x8xf32>, %w: tensor<16x8xf32>, %l: tensor<2x3xi32>, %m: tensor<2x3xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{input_grad must have the input's type}}
  %loss, %dx = loom.linear_cross_entropy %x, %w, %l, %m, %s {block_rows = 8 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x3xi32>, tensor<2x3xf32>, tensor<f32>) -> (tensor<f32>, tensor<2x3x16xf32>)
  return
}

// RUN: bitloom-opt %s -split-input-file -loom-lower-to-linalg="ukernels=true bf16-params=model.embed_tokens.weight" | FileCheck %s

// Training: one call with the loss, the input gradient and the [block_rows,
// vocab] logits block as buffers of the function (so the memory plan places
// them), the loss gradient read in place. Arguments are (x, head, labels,
// mask, loss_grad, loss, x_grad, block, rows, vocab, hidden, block_rows).
// CHECK-LABEL: func.func @train
// CHECK-SAME: %[[SEED:[a-z0-9]+]]: tensor<f32>
// CHECK-SAME: %[[W:[a-z0-9]+]]: tensor<16x8xf32> {loom.name = "lm_head.weight", loom.param}
// CHECK: %[[LOSS:.*]] = memref.alloc() {alignment = 64 : i64} : memref<f32>
// CHECK: %[[DX:.*]] = memref.alloc() {alignment = 64 : i64} : memref<6x8xf32>
// CHECK: bufferization.to_buffer %[[SEED]] read_only : tensor<f32> to memref<f32>
// CHECK: memref.alloc() {alignment = 64 : i64} : memref<4x16xf32>
// CHECK: %[[N:.*]] = arith.constant 6 : i64
// CHECK: %[[V:.*]] = arith.constant 16 : i64
// CHECK: %[[H:.*]] = arith.constant 8 : i64
// CHECK: %[[R:.*]] = arith.constant 4 : i64
// CHECK: call @bitloom_uk_linear_cross_entropy({{.*}}, %[[N]], %[[V]], %[[H]], %[[R]]) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64, i64) -> ()
// CHECK: bufferization.to_tensor %[[LOSS]] restrict writable : memref<f32> to tensor<f32>
// CHECK: %[[G:.*]] = bufferization.to_tensor %[[DX]] restrict writable : memref<6x8xf32> to tensor<6x8xf32>
// CHECK: tensor.expand_shape %[[G]] {{\[\[}}0, 1], [2]] output_shape [2, 3, 8] : tensor<6x8xf32> into tensor<2x3x8xf32>
// CHECK-NOT: linalg.generic
// CHECK: func.func private @bitloom_uk_linear_cross_entropy(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64, i64)
func.func @train(%x: tensor<2x3x8xf32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>, %seed: tensor<f32>) -> (tensor<f32>, tensor<2x3x8xf32>) {
  %w = loom.param "lm_head.weight" : tensor<16x8xf32>
  %loss, %dx = loom.linear_cross_entropy %x, %w, %labels, %mask, %seed {block_rows = 4 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x3xi32>, tensor<2x3xf32>, tensor<f32>) -> (tensor<f32>, tensor<2x3x8xf32>)
  return %loss, %dx : tensor<f32>, tensor<2x3x8xf32>
}

// -----

// Evaluation with the tied bf16 embedding: the bf16 variant, null loss
// gradient and input gradient, and no more block rows than rows.
// CHECK-LABEL: func.func @eval_bf16
// CHECK-SAME: %[[E:[a-z0-9]+]]: tensor<16x8xbf16> {loom.name = "model.embed_tokens.weight", loom.packing = "bf16", loom.param}
// CHECK: memref.alloc() {alignment = 64 : i64} : memref<f32>
// CHECK: %[[NULL:.*]] = llvm.mlir.zero : !llvm.ptr
// CHECK: memref.alloc() {alignment = 64 : i64} : memref<6x16xf32>
// CHECK: bufferization.to_buffer %[[E]] read_only : tensor<16x8xbf16> to memref<16x8xbf16>
// CHECK: arith.constant 8 : i64
// CHECK-NEXT: %[[R:.*]] = arith.constant 6 : i64
// CHECK: call @bitloom_uk_linear_cross_entropy_bf16w(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[NULL]], %{{.*}}, %[[NULL]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[R]])
func.func @eval_bf16(%t: tensor<2x3xi32>, %labels: tensor<2x3xi32>, %mask: tensor<2x3xf32>) -> tensor<f32> {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<2x3xi32>) -> tensor<2x3x8xf32>
  %loss = loom.linear_cross_entropy %x, %e, %labels, %mask {block_rows = 64 : i64} : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

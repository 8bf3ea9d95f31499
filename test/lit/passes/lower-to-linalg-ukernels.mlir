// RUN: bitloom-opt %s -loom-lower-to-linalg="ukernels=true" | FileCheck %s

// With micro-kernels, a frozen bitlinear weight becomes a packed i2x128
// argument (8 inputs -> one 32-byte block per row) plus its multiplier; the
// activations are quantized to int8 codes, the row factor is multiplier / s,
// and the exact int8 x ternary product is a runtime call on the buffers.
// The input gradient is the transposed product on the same packed weight
// (one argument for both uses).
// CHECK-LABEL: func.func @bitlinear_packed
// CHECK-SAME: %[[W:[a-z0-9]+]]: tensor<4x32xi8> {loom.name = "w", loom.packing = "i2x128", loom.param}
// CHECK-SAME: %[[M:[a-z0-9]+]]: tensor<f32> {loom.name = "w.ternary_scale", loom.packing = "ternary_scale", loom.param}
// CHECK: math.roundeven
// CHECK: arith.fptosi %{{.*}} : f32 to i8
// CHECK: %[[MV:.*]] = tensor.extract %[[M]][] : tensor<f32>
// CHECK: arith.divf %[[MV]], %{{.*}} : f32
// CHECK: %[[OUT:.*]] = memref.alloc() {alignment = 64 : i64} : memref<6x4xf32>
// CHECK: bufferization.to_buffer %[[W]] read_only : tensor<4x32xi8> to memref<4x32xi8>
// CHECK: call @bitloom_uk_ternary_matmul({{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64) -> ()
// CHECK: bufferization.to_tensor %[[OUT]] restrict writable : memref<6x4xf32> to tensor<6x4xf32>
// CHECK: call @bitloom_uk_ternary_matmul_t({{.*}}) : (!llvm.ptr, !llvm.ptr, f32, !llvm.ptr, i64, i64, i64) -> ()
func.func @bitlinear_packed(%x: tensor<2x3x8xf32>, %dy: tensor<2x3x4xf32>) -> (tensor<2x3x4xf32>, tensor<2x3x8xf32>) {
  %w = loom.param "w" : !loom.ternary<4x8, hf_u8>
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<offline>} : (tensor<2x3x8xf32>, !loom.ternary<4x8, hf_u8>) -> tensor<2x3x4xf32>
  %w2 = loom.param "w" : !loom.ternary<4x8, hf_u8>
  %dx = loom.bitlinear_grad_input %dy, %w2 {weight_quant = #loom.weight_quant<offline>} : (tensor<2x3x4xf32>, !loom.ternary<4x8, hf_u8>) -> tensor<2x3x8xf32>
  return %y, %dx : tensor<2x3x4xf32>, tensor<2x3x8xf32>
}

// Online float weights are frozen too when only adapters train: packed the
// same way (the quantizer runs once, when the weights are packed).
// CHECK-LABEL: func.func @bitlinear_online_frozen
// CHECK-SAME: tensor<4x32xi8> {loom.name = "u", loom.packing = "i2x128", loom.param}
// CHECK-NOT: ["reduction", "reduction"]
// CHECK: call @bitloom_uk_ternary_matmul(
func.func @bitlinear_online_frozen(%x: tensor<2x3x8xf32>) -> tensor<2x3x4xf32> {
  %w = loom.param "u" : tensor<4x8xf32>
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<online>} : (tensor<2x3x8xf32>, tensor<4x8xf32>) -> tensor<2x3x4xf32>
  return %y : tensor<2x3x4xf32>
}

// The tied LM head and its input gradient are f32 GEMMs: x·Eᵀ (transB) and
// dy·E; flags are (transA, transB, accumulate).
// CHECK-LABEL: func.func @lm_head
// CHECK-SAME: tensor<16x8xf32> {loom.name = "model.embed_tokens.weight", loom.param}
// CHECK: %[[M1:.*]] = arith.constant 6 : i64
// CHECK: %[[N1:.*]] = arith.constant 16 : i64
// CHECK: %[[K1:.*]] = arith.constant 8 : i64
// CHECK: %[[TA1:.*]] = arith.constant 0 : i32
// CHECK: %[[TB1:.*]] = arith.constant 1 : i32
// CHECK: call @bitloom_uk_matmul_f32({{.*}}, %[[M1]], %[[N1]], %[[K1]], %[[TA1]], %[[TB1]], %{{.*}})
// CHECK: %[[N2:.*]] = arith.constant 8 : i64
// CHECK: %[[K2:.*]] = arith.constant 16 : i64
// CHECK: call @bitloom_uk_matmul_f32({{.*}}, %[[N2]], %[[K2]], %{{.*}}, %{{.*}}, %{{.*}})
// CHECK: func.func private @bitloom_uk_matmul_f32(!llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64, i32, i32, i32)
func.func @lm_head(%x: tensor<2x3x8xf32>, %dy: tensor<2x3x16xf32>) -> (tensor<2x3x16xf32>, tensor<2x3x8xf32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %l = loom.matmul %x, %e : (tensor<2x3x8xf32>, tensor<16x8xf32>) -> tensor<2x3x16xf32>
  %e2 = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %dx = loom.matmul_grad_input %dy, %e2 : (tensor<2x3x16xf32>, tensor<16x8xf32>) -> tensor<2x3x8xf32>
  return %l, %dx : tensor<2x3x16xf32>, tensor<2x3x8xf32>
}

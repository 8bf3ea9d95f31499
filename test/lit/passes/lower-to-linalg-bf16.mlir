// RUN: bitloom-opt %s -loom-lower-to-linalg="ukernels=true bf16-params=model.embed_tokens.weight" | FileCheck %s
// RUN: bitloom-opt %s -loom-lower-to-linalg="ukernels=true" | FileCheck %s --check-prefix=F32

// A frozen bf16 embedding tied to the LM head stays bf16: one bf16 argument
// for the gather (rows widened exactly by arith.extf) and both products,
// which call the GEMM with a bf16 B (its buffer's address steps 2 bytes per
// element).
// CHECK-LABEL: func.func @tied
// CHECK-SAME: %[[E:[a-z0-9]+]]: tensor<16x8xbf16> {loom.name = "model.embed_tokens.weight", loom.packing = "bf16", loom.param}
// CHECK: linalg.generic
// CHECK: %[[ROW:.*]] = tensor.extract %[[E]][%{{.*}}, %{{.*}}] : tensor<16x8xbf16>
// CHECK: %[[WIDE:.*]] = arith.extf %[[ROW]] : bf16 to f32
// CHECK: linalg.yield %[[WIDE]] : f32
// CHECK: bufferization.to_buffer %[[E]] read_only : tensor<16x8xbf16> to memref<16x8xbf16>
// CHECK: arith.constant 2 : index
// CHECK: %[[TB:.*]] = arith.constant 1 : i32
// CHECK: call @bitloom_uk_matmul_f32_bf16b({{.*}}, %[[TB]], %{{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64, i32, i32, i32) -> ()
// CHECK: call @bitloom_uk_matmul_f32_bf16b({{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64, i32, i32, i32) -> ()
// CHECK: return

// Without bf16-params nothing changes: an f32 argument and the f32 GEMM.
// F32-LABEL: func.func @tied
// F32-SAME: tensor<16x8xf32> {loom.name = "model.embed_tokens.weight", loom.param}
// F32-NOT: bf16
// F32: call @bitloom_uk_matmul_f32(
// F32: call @bitloom_uk_matmul_f32(
// F32-NOT: bf16
func.func @tied(%t: tensor<2x3xi32>, %dy: tensor<2x3x16xf32>) -> (tensor<2x3x16xf32>, tensor<2x3x8xf32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<2x3xi32>) -> tensor<2x3x8xf32>
  %e2 = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %l = loom.matmul %x, %e2 : (tensor<2x3x8xf32>, tensor<16x8xf32>) -> tensor<2x3x16xf32>
  %dx = loom.matmul_grad_input %dy, %e : (tensor<2x3x16xf32>, tensor<16x8xf32>) -> tensor<2x3x8xf32>
  return %l, %dx : tensor<2x3x16xf32>, tensor<2x3x8xf32>
}

// A listed parameter with any other use stays f32 (here it is also a
// result), as do products on parameters that are not listed.
// CHECK-LABEL: func.func @other_uses
// CHECK-SAME: tensor<16x8xf32> {loom.name = "model.embed_tokens.weight", loom.param}
// CHECK-SAME: tensor<16x8xf32> {loom.name = "lm_head.weight", loom.param}
// CHECK-NOT: bf16
// CHECK: call @bitloom_uk_matmul_f32(
// CHECK-NOT: bf16
// CHECK: return
func.func @other_uses(%t: tensor<2x3xi32>) -> (tensor<2x3x16xf32>, tensor<16x8xf32>) {
  %e = loom.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %x = loom.embedding %e, %t : (tensor<16x8xf32>, tensor<2x3xi32>) -> tensor<2x3x8xf32>
  %h = loom.param "lm_head.weight" : tensor<16x8xf32>
  %l = loom.matmul %x, %h : (tensor<2x3x8xf32>, tensor<16x8xf32>) -> tensor<2x3x16xf32>
  return %l, %e : tensor<2x3x16xf32>, tensor<16x8xf32>
}

// The micro-kernel is declared once, next to the f32 one.
// CHECK-DAG: func.func private @bitloom_uk_matmul_f32_bf16b(!llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64, i32, i32, i32)
// CHECK-DAG: func.func private @bitloom_uk_matmul_f32(!llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64, i32, i32, i32)

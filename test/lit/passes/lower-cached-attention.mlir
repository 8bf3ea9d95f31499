// RUN: bitloom-opt %s -loom-lower-to-linalg | FileCheck %s
// RUN: bitloom-opt %inputs/one-layer.mlir -loom-build-generate=max-tokens=64 -loom-specialize-shapes="batch=2 seq-len=5" -loom-lower-to-linalg | FileCheck %s --check-prefix=STEP

// loom.cached_attention: each token's key and value row is written into the
// caches at its position (clamped to the cache), one tensor.insert_slice per
// token in order; then every query attends to cache rows 0 .. its position
// with attention's arithmetic: q·k in f64 rounded once, × scale in f32,
// rows past the position -inf by select, exp(x - max) · (1 / Σ) with Σ in
// f64, and Σ P·v in f64 over the visible rows only.
// CHECK-LABEL: func.func @cached
// CHECK-SAME: (%[[Q:[a-z0-9]+]]: tensor<1x2x16xf32>, %[[K:[a-z0-9]+]]: tensor<1x2x8xf32>, %[[V:[a-z0-9]+]]: tensor<1x2x8xf32>, %[[KC:[a-z0-9]+]]: tensor<1x6x8xf32>, %[[VC:[a-z0-9]+]]: tensor<1x6x8xf32>, %[[POS:[a-z0-9]+]]: tensor<1x2xi32>)
// CHECK: %[[P0:.*]] = tensor.extract %[[POS]][%{{.*}}, %{{.*}}] : tensor<1x2xi32>
// CHECK: %[[I0:.*]] = arith.index_cast %[[P0]] : i32 to index
// CHECK: %[[L0:.*]] = arith.maxsi %[[I0]], %{{.*}} : index
// CHECK: %[[C5:.*]] = arith.constant 5 : index
// CHECK: %[[R0:.*]] = arith.minsi %[[L0]], %[[C5]] : index
// CHECK: tensor.extract %[[POS]]
// CHECK: %[[R1:.*]] = arith.minsi
// CHECK: %[[K0:.*]] = tensor.extract_slice %[[K]][0, 0, 0] [1, 1, 8] [1, 1, 1] : tensor<1x2x8xf32> to tensor<1x1x8xf32>
// CHECK: %[[KC0:.*]] = tensor.insert_slice %[[K0]] into %[[KC]][0, %[[R0]], 0] [1, 1, 8] [1, 1, 1]
// CHECK: %[[K1:.*]] = tensor.extract_slice %[[K]][0, 1, 0] [1, 1, 8] [1, 1, 1]
// CHECK: %[[KC1:.*]] = tensor.insert_slice %[[K1]] into %[[KC0]][0, %[[R1]], 0] [1, 1, 8] [1, 1, 1]
// CHECK: tensor.extract_slice %[[V]][0, 0, 0]
// CHECK: %[[VC0:.*]] = tensor.insert_slice %{{.*}} into %[[VC]][0, %[[R0]], 0]
// CHECK: %[[VC1:.*]] = tensor.insert_slice %{{.*}} into %[[VC0]][0, %[[R1]], 0]
// CHECK: tensor.expand_shape %[[Q]] {{\[\[}}0], [1], [2, 3, 4]] output_shape [1, 2, 1, 2, 8] : tensor<1x2x16xf32> into tensor<1x2x1x2x8xf32>
// CHECK: %[[K4:.*]] = tensor.expand_shape %[[KC1]] {{\[\[}}0], [1], [2, 3]] output_shape [1, 6, 1, 8] : tensor<1x6x8xf32> into tensor<1x6x1x8xf32>
// CHECK: %[[V4:.*]] = tensor.expand_shape %[[VC1]] {{\[\[}}0], [1], [2, 3]] output_shape [1, 6, 1, 8]
// Scores [batch, kv_heads, group, tokens, max_tokens], accumulated in f64.
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]} ins(%{{.*}}, %[[K4]] : tensor<1x2x1x2x8xf32>, tensor<1x6x1x8xf32>) outs(%{{.*}} : tensor<1x1x2x2x6xf64>)
// CHECK: arith.truncf
// CHECK: linalg.generic {{.*}} ins(%{{.*}}, %[[POS]] : tensor<1x1x2x2x6xf32>, tensor<1x2xi32>)
// CHECK:   arith.minsi
// CHECK:   %[[S:.*]] = linalg.index 4 : index
// CHECK:   %[[VIS:.*]] = arith.cmpi sle, %[[S]], %{{.*}} : index
// CHECK:   %[[NEGINF:.*]] = arith.constant 0xFF800000 : f32
// CHECK:   %[[SCALED:.*]] = arith.mulf %{{.*}}, %{{.*}} : f32
// CHECK:   arith.select %[[VIS]], %[[SCALED]], %[[NEGINF]] : f32
// CHECK: arith.maximumf
// CHECK: math.exp
// CHECK: outs(%{{.*}} : tensor<1x1x2x2xf64>)
// CHECK: arith.divf
// Σ P·v over the visible rows: masked terms leave the f64 sum untouched.
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]} ins(%{{.*}}, %[[V4]], %[[POS]] : tensor<1x1x2x2x6xf32>, tensor<1x6x1x8xf32>, tensor<1x2xi32>) outs(%{{.*}} : tensor<1x2x1x2x8xf64>)
// CHECK:   %[[S2:.*]] = linalg.index 5 : index
// CHECK:   %[[VIS2:.*]] = arith.cmpi sle, %[[S2]], %{{.*}} : index
// CHECK:   %[[SUM:.*]] = arith.addf %[[ACC:.*]], %{{.*}} : f64
// CHECK:   arith.select %[[VIS2]], %[[SUM]], %[[ACC]] : f64
// CHECK: %[[OUT:.*]] = tensor.collapse_shape %{{.*}} {{\[\[}}0], [1], [2, 3, 4]] : tensor<1x2x1x2x8xf32> into tensor<1x2x16xf32>
// CHECK: return %[[OUT]], %[[KC1]], %[[VC1]]
// CHECK-NOT: loom.
func.func @cached(%q: tensor<1x2x16xf32>, %k: tensor<1x2x8xf32>, %v: tensor<1x2x8xf32>, %kc: tensor<1x6x8xf32>, %vc: tensor<1x6x8xf32>, %pos: tensor<1x2xi32>) -> (tensor<1x2x16xf32>, tensor<1x6x8xf32>, tensor<1x6x8xf32>) {
  %o, %nk, %nv = loom.cached_attention %q, %k, %v, %kc, %vc, %pos {num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35355339059327373 : f64} : (tensor<1x2x16xf32>, tensor<1x2x8xf32>, tensor<1x2x8xf32>, tensor<1x6x8xf32>, tensor<1x6x8xf32>, tensor<1x2xi32>) -> (tensor<1x2x16xf32>, tensor<1x6x8xf32>, tensor<1x6x8xf32>)
  return %o, %nk, %nv : tensor<1x2x16xf32>, tensor<1x6x8xf32>, tensor<1x6x8xf32>
}

// The whole @generate_step lowers: one token of one sequence per call at a
// runtime position, the caches [1, max_tokens, kv features] in and out.
// STEP-LABEL: func.func @generate_step
// STEP-SAME: tensor<1x64x8xf32> {loom.name = "key_cache.0"}
// STEP-SAME: tensor<1x64x8xf32> {loom.name = "value_cache.0"}
// STEP-SAME: tensor<1x1xi32> {loom.name = "tokens"}
// STEP-SAME: tensor<1x1xi32> {loom.name = "positions"}
// STEP-SAME: {loom.name = "model.embed_tokens.weight", loom.param}
// STEP-SAME: -> (tensor<1x1x32xf32> {loom.name = "logits"}, tensor<1x64x8xf32> {loom.name = "key_cache.0"}, tensor<1x64x8xf32> {loom.name = "value_cache.0"})
// STEP: tensor.insert_slice {{.*}} : tensor<1x1x8xf32> into tensor<1x64x8xf32>
// STEP-NOT: loom.
// STEP: return

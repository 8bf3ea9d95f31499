// RUN: bitloom-opt %inputs/one-layer.mlir -loom-build-generate=max-tokens=64 | FileCheck %s

// @generate_step: LoRA parameters and one cache pair per layer in, logits
// and the updated caches out; attention reads and writes the caches; no loss.
// CHECK-LABEL: func.func @generate_step
// CHECK-SAME: {loom.name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"}
// CHECK-SAME: %[[KC:[a-z0-9]+]]: tensor<?x64x8xf32> {loom.name = "key_cache.0"}
// CHECK-SAME: %[[VC:[a-z0-9]+]]: tensor<?x64x8xf32> {loom.name = "value_cache.0"}
// CHECK-SAME: {loom.name = "tokens"}
// CHECK-SAME: %[[POS:[a-z0-9]+]]: tensor<?x?xi32> {loom.name = "positions"})
// CHECK-SAME: -> (tensor<?x?x32xf32> {loom.name = "logits"}, tensor<?x64x8xf32> {loom.name = "key_cache.0"}, tensor<?x64x8xf32> {loom.name = "value_cache.0"})
// CHECK-NOT: loom.attention
// CHECK: %{{.*}}, %[[NK:.*]], %[[NV:.*]] = loom.cached_attention %{{.*}}, %{{.*}}, %{{.*}}, %[[KC]], %[[VC]], %[[POS]] {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64
// CHECK-NOT: loom.cross_entropy
// CHECK: return %{{.*}}, %[[NK]], %[[NV]]

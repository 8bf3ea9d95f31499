// RUN: bitloom-opt %s -loom-plan-arena -allow-unregistered-dialect -split-input-file -verify-diagnostics | FileCheck %s
// RUN: bitloom-opt %s -loom-plan-arena=alignment=256 -allow-unregistered-dialect -split-input-file -verify-diagnostics | FileCheck %s --check-prefix=ALIGN

// Buffers are live from the first op that touches them (views and pointer
// extraction do not count) to the last one that uses them or anything
// derived from them; the largest is placed first. %c (8192 bytes, live at
// op 7 only) goes first at 0; %a (4096, op 2) shares offset 0 with it;
// %b (4096, ops 2..6) is live with %a, so it goes above it. The arena is
// the trailing argument.
// CHECK-LABEL: func.func @chain
// CHECK-SAME: (%[[OUT:.*]]: memref<2048xf32>, %[[ARENA:.*]]: memref<8192xi8>)
// CHECK-SAME: loom.arena_bytes = 8192 : i64
// CHECK-SAME: loom.memory_plan = [{first = 2 : i64, last = 2 : i64, offset = 0 : i64, owner = "a.copy (linalg.copy)", size = 4096 : i64},
// CHECK-SAME: {first = 2 : i64, last = 6 : i64, offset = 4096 : i64, owner = "a.copy (linalg.copy)", size = 4096 : i64},
// CHECK-SAME: {first = 7 : i64, last = 7 : i64, offset = 0 : i64, owner = "?
// CHECK-SAME: (memref.copy)", size = 8192 : i64}]
// CHECK-SAME: loom.schedule_length = 9 : i64
// CHECK-NOT: memref.alloc
// CHECK: %[[A:.*]] = memref.view %[[ARENA]][%c0{{.*}}][] : memref<8192xi8> to memref<32x32xf32>
// CHECK: %[[B:.*]] = memref.view %[[ARENA]][%c4096{{.*}}][] : memref<8192xi8> to memref<32x32xf32>
// CHECK: linalg.copy ins(%[[A]] : memref<32x32xf32>) outs(%[[B]] : memref<32x32xf32>)
// CHECK: memref.view %[[ARENA]][%c0{{.*}}][] : memref<8192xi8> to memref<2048xf32>
// CHECK-NOT: memref.dealloc
// ALIGN-LABEL: func.func @chain
// ALIGN-SAME: loom.arena_bytes = 8192 : i64
func.func private @kernel(index)
func.func @chain(%out: memref<2048xf32>) {
  %a = memref.alloc() : memref<32x32xf32>
  %b = memref.alloc() : memref<32x32xf32>
  linalg.copy ins(%a : memref<32x32xf32>) outs(%b : memref<32x32xf32>) loc("a.copy")
  %c = memref.alloc() : memref<2048xf32>
  %flat = memref.collapse_shape %b [[0, 1]] : memref<32x32xf32> into memref<1024xf32>
  %p = memref.extract_aligned_pointer_as_index %flat : memref<1024xf32> -> index
  func.call @kernel(%p) : (index) -> ()
  memref.copy %c, %out : memref<2048xf32> to memref<2048xf32>
  return
}

// -----

// Offsets are rounded up to the alignment: three live-together buffers of
// 100, 60 and 4 bytes sit at 0, 128 and 192 (64) or 0, 256, 512 (256).
// CHECK-LABEL: func.func @aligned
// CHECK-SAME: loom.arena_bytes = 256 : i64
// CHECK-SAME: offset = 0 : i64, {{.*}} size = 100
// CHECK-SAME: offset = 128 : i64, {{.*}} size = 60
// CHECK-SAME: offset = 192 : i64, {{.*}} size = 4
// ALIGN-LABEL: func.func @aligned
// ALIGN-SAME: loom.arena_bytes = 768 : i64
// ALIGN-SAME: offset = 0 : i64, {{.*}} size = 100
// ALIGN-SAME: offset = 256 : i64, {{.*}} size = 60
// ALIGN-SAME: offset = 512 : i64, {{.*}} size = 4
func.func @aligned(%out: memref<i8>) {
  %a = memref.alloc() : memref<100xi8>
  %b = memref.alloc() : memref<60xi8>
  %c = memref.alloc() : memref<i32>
  "test.use"(%a, %b, %c) : (memref<100xi8>, memref<60xi8>, memref<i32>) -> ()
  return
}

// -----

// expected-error @below {{loom-plan-arena handles straight-line functions only}}
func.func @branches(%c: i1) {
  cf.cond_br %c, ^bb1, ^bb1
^bb1:
  return
}

// -----

func.func @nested(%n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.for %i = %c0 to %n step %c1 {
    // expected-error @below {{loom-plan-arena: allocation inside a nested region}}
    %a = memref.alloc() : memref<4xf32>
  }
  return
}

// -----

func.func @escapes() -> memref<4xf32> {
  // expected-error @below {{loom-plan-arena: a step buffer is returned}}
  %a = memref.alloc() : memref<4xf32>
  return %a : memref<4xf32>
}

// -----

func.func @dynamic(%n: index) {
  // expected-error @below {{has no static size and identity layout}}
  %a = memref.alloc(%n) : memref<?xf32>
  "test.use"(%a) : (memref<?xf32>) -> ()
  return
}

// RUN: bitloom-opt %s -loom-deallocate-after-last-use -split-input-file -verify-diagnostics | FileCheck %s

// Each buffer is freed right after the last op that uses it or anything
// derived from it (a view, a pointer handed to a micro-kernel), not at the
// end of the function; the peak of live bytes is recorded: %a and %b
// (4096 + 4096) overlap, %c (8192) starts after %a is gone.
// CHECK-LABEL: func.func @chain
// CHECK-SAME: loom.peak_buffer_bytes = 12288 : i64
// CHECK: %[[A:.*]] = memref.alloc() : memref<32x32xf32>
// CHECK: %[[B:.*]] = memref.alloc() : memref<32x32xf32>
// CHECK: linalg.copy ins(%[[A]] : memref<32x32xf32>) outs(%[[B]] : memref<32x32xf32>)
// CHECK-NEXT: memref.dealloc %[[A]]
// CHECK: %[[C:.*]] = memref.alloc() : memref<2048xf32>
// CHECK: memref.collapse_shape %[[B]]
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: call @kernel
// CHECK-NEXT: memref.dealloc %[[B]]
// CHECK: memref.copy %[[C]], %{{.*}}
// CHECK-NEXT: memref.dealloc %[[C]]
// CHECK-NEXT: return
func.func private @kernel(index)
func.func @chain(%out: memref<2048xf32>) {
  %a = memref.alloc() : memref<32x32xf32>
  %b = memref.alloc() : memref<32x32xf32>
  linalg.copy ins(%a : memref<32x32xf32>) outs(%b : memref<32x32xf32>)
  %c = memref.alloc() : memref<2048xf32>
  %flat = memref.collapse_shape %b [[0, 1]] : memref<32x32xf32> into memref<1024xf32>
  %p = memref.extract_aligned_pointer_as_index %flat : memref<1024xf32> -> index
  func.call @kernel(%p) : (index) -> ()
  memref.copy %c, %out : memref<2048xf32> to memref<2048xf32>
  return
}

// -----

// A buffer that is returned is never freed here.
// CHECK-LABEL: func.func @escapes
// CHECK-NOT: memref.dealloc
// CHECK: return
func.func @escapes() -> memref<4xf32> {
  %a = memref.alloc() : memref<4xf32>
  return %a : memref<4xf32>
}

// -----

// expected-error @below {{loom-deallocate-after-last-use handles straight-line functions only}}
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
    // expected-error @below {{loom-deallocate-after-last-use: allocation inside a nested region}}
    %a = memref.alloc() : memref<4xf32>
  }
  return
}

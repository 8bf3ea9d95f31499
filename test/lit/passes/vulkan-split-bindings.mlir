// RUN: bitloom-opt %s -split-input-file -verify-diagnostics --pass-pipeline='builtin.module(gpu.module(loom-vulkan-split-bindings{max-range=1000}))' | FileCheck %s

// Kernel buffers larger than the storage buffer range (here 1000 bytes:
// chunks of 768, the largest multiple of 256 below it) become one argument
// per chunk; loads and stores pick theirs from the row-major linear index.
// Buffers within the range stay as they are.

// CHECK-LABEL: gpu.func @gather
// CHECK-SAME: (%[[C0:.*]]: memref<192xf32>, %[[C1:.*]]: memref<192xf32>, %[[C2:.*]]: memref<192xf32>, %[[C3:.*]]: memref<128xf32>, %[[SMALL:.*]]: memref<8xf32>, %[[O0:.*]]: memref<192xf32>, %[[O1:.*]]: memref<192xf32>, %[[O2:.*]]: memref<192xf32>, %[[O3:.*]]: memref<128xf32>)
// CHECK-SAME: loom.split_arguments = array<i64: 0, 4, 768, 2, 4, 768>
// CHECK: %[[I:.*]] = gpu.thread_id x
// CHECK: %[[J:.*]] = gpu.block_id x
// CHECK: %[[C64:.*]] = arith.constant 64 : index
// CHECK: %[[ROW:.*]] = arith.muli %[[I]], %[[C64]]
// CHECK: %[[LIN:.*]] = arith.addi %[[ROW]], %[[J]]
// CHECK: %[[WHICH:.*]] = arith.divui %[[LIN]], %[[N:.*]] : index
// CHECK: %[[AT:.*]] = arith.remui %[[LIN]], %[[N]] : index
// CHECK: scf.if
// CHECK: memref.load %[[C0]][%[[AT]]]
// CHECK: memref.load %[[C1]][%[[AT]]]
// CHECK: memref.load %[[C2]][%[[AT]]]
// CHECK: memref.load %[[C3]][%[[AT]]]
// CHECK: memref.load %[[SMALL]]
// CHECK: memref.store {{.*}}, %[[O0]]
// CHECK: memref.store {{.*}}, %[[O1]]
// CHECK: memref.store {{.*}}, %[[O2]]
// CHECK: memref.store {{.*}}, %[[O3]]
module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @gather(%table: memref<11x64xf32>, %small: memref<8xf32>, %out: memref<11x64xf32>) kernel {
      %i = gpu.thread_id x
      %j = gpu.block_id x
      %v = memref.load %table[%i, %j] : memref<11x64xf32>
      %w = memref.load %small[%i] : memref<8xf32>
      %s = arith.addf %v, %w : f32
      memref.store %s, %out[%i, %j] : memref<11x64xf32>
      gpu.return
    }
  }
}

// -----

// A view of a split buffer (a row at a dynamic position) folds into the
// loads first.
// CHECK-LABEL: gpu.func @row
// CHECK-SAME: (%{{.*}}: memref<192xf32>, %{{.*}}: memref<192xf32>, %{{.*}}: memref<192xf32>, %{{.*}}: memref<128xf32>, %{{.*}}: memref<64xf32>)
// CHECK-NOT: memref.subview
module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @row(%table: memref<11x64xf32>, %out: memref<64xf32>) kernel {
      %r = gpu.block_id x
      %j = gpu.thread_id x
      %row = memref.subview %table[%r, 0] [1, 64] [1, 1] : memref<11x64xf32> to memref<64xf32, strided<[1], offset: ?>>
      %v = memref.load %row[%j] : memref<64xf32, strided<[1], offset: ?>>
      memref.store %v, %out[%j] : memref<64xf32>
      gpu.return
    }
  }
}

// -----

// Any other use cannot be split.
module attributes {gpu.container_module} {
  gpu.module @k {
    gpu.func @atomic(%sums: memref<1024xf32>) kernel {
      %i = gpu.thread_id x
      %one = arith.constant 1.0 : f32
      // expected-error @+1 {{a buffer larger than the storage buffer range is used other than by loads and stores, so it cannot be split}}
      %old = memref.atomic_rmw addf %one, %sums[%i] : (f32, memref<1024xf32>) -> f32
      gpu.return
    }
  }
}

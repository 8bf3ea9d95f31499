// RUN: bitloom-opt %s -split-input-file -verify-diagnostics -loom-lower-to-linalg

// Native code is compiled for one shape: -loom-specialize-shapes comes first.
func.func @dynamic(%x: tensor<?x?x16xf32>) -> tensor<?x?x16xf32> {
  // expected-error @+1 {{loom-lower-to-linalg needs static shapes; run -loom-specialize-shapes first}}
  %y = loom.relu2 %x : tensor<?x?x16xf32>
  return %y : tensor<?x?x16xf32>
}

//===- Passes.td - Vulkan code generation passes -----------*- tablegen -*-===//
#ifndef BITLOOM_CODEGEN_VULKAN_PASSES
#define BITLOOM_CODEGEN_VULKAN_PASSES

include "mlir/Pass/PassBase.td"

def LoomVulkanSplitBindings
    : Pass<"loom-vulkan-split-bindings", "mlir::gpu::GPUModuleOp"> {
  let summary = "Split kernel buffers larger than the storage buffer range";
  let description = [{
    Mobile drivers cap one storage buffer binding at 128-512 MiB; a 2B
    model's embedding is 626 MiB. Each argument of a kernel `gpu.func` whose
    bytes exceed `max-range` becomes several arguments, chunks of at most
    `max-range` bytes (a multiple of 256, the largest
    minStorageBufferOffsetAlignment Vulkan allows, so every chunk's offset
    stays aligned), that the host binds to the same buffer at successive
    offsets. Views of the buffer are folded into its loads and stores first;
    each load and store then picks its chunk from the row-major linear
    index through an `scf.if` chain (SPIR-V has no dynamically indexed set
    of distinct bindings without optional features). A buffer used other
    than by loads and stores (an atomic, a cooperative matrix store) is an
    error.

    The split is recorded on the kernel for the host schedule:
    `loom.split_arguments = array<i64: argument, chunks, chunk bytes, ...>`
    (argument indices as they were before the split).
  }];
  let options = [
    Option<"maxRange", "max-range", "uint64_t", "uint64_t(128) << 20",
           "the largest range one storage buffer binding may cover (bytes)">,
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::scf::SCFDialect"];
}

#endif // BITLOOM_CODEGEN_VULKAN_PASSES

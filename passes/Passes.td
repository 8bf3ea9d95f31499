//===- Passes.td - bitloom's passes ------------------------*- tablegen -*-===//
#ifndef BITLOOM_PASSES
#define BITLOOM_PASSES

include "mlir/Pass/PassBase.td"

def LoomVerifyModel : Pass<"loom-verify-model", "mlir::ModuleOp"> {
  let summary = "Check that a module is a complete bitloom model graph";
  let description = [{
    Module-level checks the op verifiers cannot make alone: every
    `loom.param` name refers to one type only (the same weight is never
    given two shapes), LoRA parameters come in A/B pairs, and the model
    entry (`@forward`) returns its logits and a scalar loss.
  }];
  let dependentDialects = ["::bitloom::loom::LoomDialect"];
}

def LoomAutodiff : Pass<"loom-autodiff", "mlir::ModuleOp"> {
  let summary = "Build @train_step and @eval_step from @forward";
  let description = [{
    Reverse-mode differentiation of `@forward` through each op's
    DifferentiableOpInterface, followed by gradient clipping and the
    optimizer update, all as loom IR:

      @train_step(trainable params, optimizer state, tokens, positions,
                  labels, loss_mask, lr, step)
          -> (loss, updated params, updated state, grad_norm)
      @eval_step(trainable params, tokens, positions, labels, loss_mask)
          -> (loss, token_count)

    and, for gradient accumulation over K micro-batches, a pair the host
    alternates (K × accumulate_step with grad_scale = 1/K, then apply_step):

      @accumulate_step(params, grad accumulators, tokens, positions, labels,
                       loss_mask, grad_scale) -> (loss, accumulators, count)
      @apply_step(params, optimizer state, accumulators, lr, step)
          -> (updated params, updated state, grad_norm)

    Trainable parameters become function arguments; everything else stays
    a `loom.param`. Only operands on a path from a trainable parameter to
    the loss get an adjoint: frozen ternary weights get no gradient and no
    optimizer state, and nothing upstream of the first trainable parameter
    is differentiated. Arguments and results carry `loom.name`.
  }];
  let dependentDialects = ["::bitloom::loom::LoomDialect",
                           "::mlir::func::FuncDialect"];
  let options = [
    Option<"trainable", "trainable", "std::string", /*default=*/"\"lora\"",
           "What trains: lora | lora+norm | all (master weights, QAT)">,
    Option<"optimizer", "optimizer", "std::string", /*default=*/"\"adamw\"",
           "adamw | sgd">,
    Option<"beta1", "beta1", "double", /*default=*/"0.9", "AdamW beta1">,
    Option<"beta2", "beta2", "double", /*default=*/"0.999", "AdamW beta2">,
    Option<"epsilon", "epsilon", "double", /*default=*/"1e-8", "AdamW eps">,
    Option<"weightDecay", "weight-decay", "double", /*default=*/"0.01",
           "decoupled (AdamW) or L2 (SGD) weight decay">,
    Option<"momentum", "momentum", "double", /*default=*/"0.0",
           "SGD momentum">,
    Option<"maxGradNorm", "max-grad-norm", "double", /*default=*/"0.0",
           "clip the global gradient norm to this value (0: no clipping)">,
  ];
}

def LoomBuildGenerate : Pass<"loom-build-generate", "mlir::ModuleOp"> {
  let summary = "Build @generate_step, a KV-cached forward for generation";
  let description = [{
    Clones `@forward` into

      @generate_step(LoRA params, key_cache.L, value_cache.L for each layer,
                     tokens, positions)
          -> (logits, updated key_cache.L, value_cache.L)

    where every `loom.attention` becomes a `loom.cached_attention` over
    [batch, max-tokens, kv features] caches threaded through the call. The
    same function runs the prompt (tokens = the prompt) and each new token
    (tokens = [batch, 1]); the host samples from the logits. No loss is
    computed. Arguments and results carry `loom.name`.
  }];
  let dependentDialects = ["::bitloom::loom::LoomDialect",
                           "::mlir::func::FuncDialect"];
  let options = [
    Option<"maxTokens", "max-tokens", "int64_t", /*default=*/"256",
           "KV cache length: prompt plus generated tokens">,
  ];
}

def LoomSpecializeShapes : Pass<"loom-specialize-shapes", "mlir::ModuleOp"> {
  let summary = "Fix the dynamic batch and tokens dimensions to constants";
  let description = [{
    Native code generation compiles one static shape: `bitloom compile`
    takes `--batch` and `--seq-len`. Every `?` in a function signature, block
    argument or op result is rewritten: dimension 0 becomes `batch` and
    dimension 1 becomes `seq-len` (activations are [batch, tokens, ...] and
    token ids [batch, tokens]). A dynamic dimension anywhere else, or a
    static leading dimension that disagrees with the one specialized beside
    it, is an error; the op verifiers then re-check every shape.
  }];
  let dependentDialects = ["::bitloom::loom::LoomDialect"];
  let options = [
    Option<"batch", "batch", "int64_t", /*default=*/"1",
           "Static batch size (dimension 0)">,
    Option<"seqLen", "seq-len", "int64_t", /*default=*/"0",
           "Static tokens per sequence (dimension 1); required">,
  ];
}

def LoomLowerToLinalg : Pass<"loom-lower-to-linalg", "mlir::ModuleOp"> {
  let summary = "Lower every loom op to linalg, tensor, arith and math";
  let description = [{
    The entry of native code generation: a statically shaped module (run
    `-loom-specialize-shapes` first) becomes upstream ops on tensors, ready
    for one-shot bufferization. Every remaining `loom.param` becomes a new
    trailing argument of its function carrying `loom.name` (the parameter
    name) and `loom.param` (unit), so the runtime passes weights in by name.
    Without `ukernels`, a `!loom.ternary<OxI, ...>` weight is passed as its
    dequantized `tensor<OxIxf32>` (ternary pattern times scale). Numerics follow codegen/reference/Kernels.h: dot products
    and sums accumulate in f64 and round to f32 once, quantizers use the
    reciprocal-then-multiply scales and round half to even.

    With `ukernels`, the matrix products become calls to the runtime's CPU
    micro-kernels (`bitloom_uk_*`, runtime/ukernels/Ukernels.h) on buffers
    obtained through `bufferization.to_buffer`/`to_tensor`: f32 GEMMs for
    LoRA, the LM head and their adjoints (f32 accumulation), and for every
    frozen bitlinear weight an int8 × ternary product with exact int32 sums
    forward and the transposed product for the input gradient. Such a
    weight becomes a packed `tensor<O x (ceil(I/128)·32) x i8>` argument
    (`loom.packing = "i2x128"`) plus a 0-d f32 argument named
    `<name>.ternary_scale` (`loom.packing = "ternary_scale"`) holding the
    per-tensor multiplier: the dequantized weight is pattern × multiplier.

    `bf16-params` names frozen float parameters the model stores in bf16
    (the token embedding, a tied or separate LM head). One used only as the
    table of `loom.embedding` and as the weight of `loom.matmul` /
    `loom.matmul_grad_input` becomes a `tensor<VxHxbf16>` argument
    (`loom.packing = "bf16"`): the gather widens its rows to f32 exactly
    (`arith.extf`) and the products read it as it is
    (`bitloom_uk_matmul_f32_bf16b` with `ukernels`). Others stay f32.

    With `ukernel-memrefs` too, a micro-kernel call takes the buffers as
    memrefs instead of raw pointers, leaves absent optional pointers out
    (the loss-only `bitloom_uk_linear_cross_entropy` has 10 operands, not
    12) and passes a scalar held in a 0-d tensor (the packed weight's
    multiplier of `bitloom_uk_ternary_matmul_t`) as its `memref<f32>`: the
    form GPU code generation turns into dispatches of its own kernels.
  }];
  let options = [
    Option<"ukernels", "ukernels", "bool", /*default=*/"false",
           "call the runtime's CPU micro-kernels and pass frozen bitlinear "
           "weights packed (2 bits per weight)">,
    Option<"ukernelMemrefs", "ukernel-memrefs", "bool", /*default=*/"false",
           "pass micro-kernel operands as the memrefs themselves (no raw "
           "pointers; optional operands left out, tensor-held scalars as 0-d "
           "memrefs): the form GPU targets replace by their own kernels">,
    ListOption<"bf16Params", "bf16-params", "std::string",
               "frozen parameters (by name) stored in bf16 to pass as bf16 "
               "when only embeddings and LM-head products use them">
  ];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::func::FuncDialect"];
}

def LoomFuseLinearCrossEntropy
    : Pass<"loom-fuse-linear-cross-entropy", "mlir::ModuleOp"> {
  let summary = "Fuse the LM head product with the cross-entropy loss "
                "(and its gradient), chunked so that full logits never exist";
  let description = [{
    Rewrites `loom.matmul %x, %w` → `loom.cross_entropy` (→
    `loom.cross_entropy_grad` → `loom.matmul_grad_input` with the same
    weight, in training functions) into one `loom.linear_cross_entropy`,
    in every function. Its lowering computes the [rows, vocab] logits
    `block_rows` rows at a time, so neither the full logits nor their
    gradient (1 GiB each for a 128256-token vocabulary at 2048 tokens) is
    ever materialized. Patterns are left alone when the logits or their
    gradient have any other use (returned logits, a weight gradient of a
    trainable head), or when the vocabulary is dynamic.

    `block_rows` is the largest multiple of 8 (at least 8) whose f32 block
    fits in `block-bytes`, capped at batch · tokens when those are static.
    The fused op needs the micro-kernels: run this pass only before
    `-loom-lower-to-linalg{ukernels=true}`.
  }];
  let options = [
    Option<"blockBytes", "block-bytes", "int64_t", /*default=*/"16777216",
           "most bytes of logits one block of rows may hold">,
  ];
}

def LoomRecompute : Pass<"loom-recompute", "mlir::ModuleOp"> {
  let summary = "Recompute decoder layers' activations in the backward "
                "instead of keeping them (activation checkpointing)";
  let description = [{
    Activation checkpointing on the training steps -loom-autodiff builds
    (any function whose "loss" result is followed by a backward:
    @train_step, @accumulate_step; others are left alone). A step is one
    block, the forward clone then the adjoints, so every forward value an
    adjoint reads lives from the forward to the backward.

    For each chosen decoder layer L, the segment is the forward ops whose
    location names `model.layers.L.*` (the NameLocs import gives, also
    inside fused or call-site locations). The layer's output, the value
    forward ops outside the segment read (its last residual add), is the
    checkpoint and stays. Every other segment value the backward reads is
    recomputed: its op, and the in-segment ops it is computed from, are
    cloned with the same operands and attributes (bit-identical results)
    right before the first backward op that reads any of them, and only
    backward uses are redirected to the clones. The originals then die at
    their last forward use. Parameters are not cloned; neither are ops with
    side effects or regions, whose results stay alive instead.

    Layers are chosen from layer 0: `layers=N` takes layers 0..N-1, `-1`
    all, `0` changes nothing. Each function changed gets
    `loom.recomputed_layers = N : i64`.
  }];
  let options = [
    Option<"layers", "layers", "int64_t", /*default=*/"0",
           "how many decoder layers (from layer 0) to recompute; -1: all">,
  ];
  let statistics = [
    Statistic<"numLayers", "recomputed-layers",
              "layer segments recomputed (over all functions)">,
    Statistic<"numClonedOps", "cloned-ops", "forward ops cloned into the "
              "backward">,
    Statistic<"numRecomputedValues", "recomputed-values",
              "forward values whose backward uses now read a clone">,
  ];
}

def LoomPlanArena : Pass<"loom-plan-arena", "mlir::ModuleOp"> {
  let summary = "Place every step buffer at a static offset of one arena";
  let description = [{
    Runs on bufferized, straight-line functions (after one-shot
    bufferization and results-to-out-params): the function's top-level ops
    are its schedule. Each `memref.alloc` is live from the first to the
    last top-level op that touches it or anything derived from it (views,
    casts, extracted pointers passed to micro-kernels, loaded values; a use
    inside a region counts at its top-level ancestor). Buffers are placed
    largest first at the lowest aligned offset that no buffer live at the
    same time covers, then every alloc becomes a `memref.view` into a new
    trailing `memref<N x i8>` argument, the arena, which the caller
    allocates once. Nothing is allocated at run time.

    The function gets `loom.arena_bytes` (N), `loom.schedule_length` (its
    number of top-level ops) and `loom.memory_plan`: per buffer its offset,
    size, first and last schedule position and owner (the model module of
    the op that first touches it and that op's name or micro-kernel).
    Allocations inside nested regions, dynamically shaped buffers and
    buffers that reach a `func.return` are rejected.
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", /*default=*/"64",
           "byte alignment of every buffer's offset">,
  ];
  let dependentDialects = ["::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif // BITLOOM_PASSES

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

#endif // BITLOOM_PASSES

//===- LoomDialect.td - The loom training-graph dialect ----*- tablegen -*-===//
#ifndef LOOM_DIALECT
#define LOOM_DIALECT

include "mlir/IR/OpBase.td"

def Loom_Dialect : Dialect {
  let name = "loom";
  let cppNamespace = "::bitloom::loom";
  let summary = "BitNet b1.58 + LoRA training graphs with tensor semantics";
  let description = [{
    The loom dialect captures a BitNet b1.58 model's forward pass, its LoRA
    adapters and its loss at the level a model author thinks in: embedding,
    RMSNorm, bitlinear (ternary weights, int8 activations), LoRA, RoPE,
    grouped-query attention, relu², cross-entropy. Weights are referenced by
    name through `loom.param`; they never appear as literal attributes.
    Activations are f32 tensors shaped [batch, tokens, features]; batch and
    tokens may be dynamic.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

class Loom_Op<string mnemonic, list<Trait> traits = []>
    : Op<Loom_Dialect, mnemonic, traits>;

#endif // LOOM_DIALECT

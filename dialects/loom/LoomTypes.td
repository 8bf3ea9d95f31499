//===- LoomTypes.td - loom enums, attributes and types -----*- tablegen -*-===//
#ifndef LOOM_TYPES
#define LOOM_TYPES

include "dialects/loom/LoomDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def Loom_WeightQuantEnum : I32EnumAttr<"WeightQuant",
    "how a bitlinear obtains its ternary weights", [
  I32EnumAttrCase<"online", 0>,  // float master weights, absmean each step
  I32EnumAttrCase<"offline", 1>, // already ternary: a !loom.ternary param
]> {
  let cppNamespace = "::bitloom::loom";
  let genSpecializedAttr = 0;
}
def Loom_WeightQuantAttr
    : EnumAttr<Loom_Dialect, Loom_WeightQuantEnum, "weight_quant"> {
  let assemblyFormat = "`<` $value `>`";
}

def Loom_TernaryPackingEnum : I32EnumAttr<"TernaryPacking",
    "storage layout of a ternary weight", [
  // Hugging Face offline BitNet: uint8 [out/4, in]; packed row r holds rows
  // r + i*out/4 at bits 2i..2i+1; one per-tensor scale.
  I32EnumAttrCase<"hf_u8", 0>,
  // ggml blocks of 256 weights along the input dimension.
  I32EnumAttrCase<"tq2_0", 1>,
  I32EnumAttrCase<"tq1_0", 2>,
  // bitloom's own: 2 bits a weight, 4 weights a byte along the input
  // dimension, row-major, one per-tensor scale.
  I32EnumAttrCase<"i2", 3>,
  // Ternary values times a scale stored as plain floats (GGUF F32/F16/BF16
  // projections written by llama.cpp's converter).
  I32EnumAttrCase<"f32", 4>,
  I32EnumAttrCase<"f16", 5>,
  I32EnumAttrCase<"bf16", 6>,
]> {
  let cppNamespace = "::bitloom::loom";
  let genSpecializedAttr = 0;
}
def Loom_TernaryPackingAttr
    : EnumAttr<Loom_Dialect, Loom_TernaryPackingEnum, "packing"> {
  let assemblyFormat = "`<` $value `>`";
}

def Loom_ParamKindEnum : I32EnumAttr<"ParamKind",
    "where a parameter comes from", [
  I32EnumAttrCase<"weight", 0>, // stored in the model file
  I32EnumAttrCase<"lora_a", 1>, // LoRA down-projection [rank, in]
  I32EnumAttrCase<"lora_b", 2>, // LoRA up-projection [out, rank]
]> {
  let cppNamespace = "::bitloom::loom";
  let genSpecializedAttr = 0;
}
def Loom_ParamKindAttr
    : EnumAttr<Loom_Dialect, Loom_ParamKindEnum, "param_kind"> {
  let assemblyFormat = "`<` $value `>`";
}

def Loom_TernaryType : TypeDef<Loom_Dialect, "Ternary"> {
  let mnemonic = "ternary";
  let summary = "a frozen ternary weight matrix in a given packing";
  let description = [{
    `!loom.ternary<OUTxIN, packing>`: a [out, in] matrix of {-1, 0, 1}
    values times scale(s), stored as `packing` says. The logical shape is
    always [out, in] whatever the storage order.
  }];
  let parameters = (ins ArrayRefParameter<"int64_t">:$shape,
                        EnumParameter<Loom_TernaryPackingEnum>:$packing);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    int64_t getOutFeatures() const { return getShape()[0]; }
    int64_t getInFeatures() const { return getShape()[1]; }
  }];
}

#endif // LOOM_TYPES

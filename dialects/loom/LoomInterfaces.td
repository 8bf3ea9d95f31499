//===- LoomInterfaces.td - loom op interfaces --------------*- tablegen -*-===//
#ifndef LOOM_INTERFACES
#define LOOM_INTERFACES

include "mlir/IR/OpBase.td"

def Loom_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::bitloom::loom";
  let description = [{
    An op that knows its adjoint. Reverse-mode autodiff asks each op on the
    path from a trainable parameter to the loss for the gradients of the
    operands that need one, given the gradients of its results. Operands
    that need no gradient get a null Value and no code is emitted for them:
    that is how untrainable paths are pruned.
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{
        Emits the adjoint after the op. `resultGrads[i]` is the gradient of
        result i (null when it has none: treat as zero). Returns one Value
        per operand: its gradient, or null when `needsGrad[i]` is false or
        the operand is not differentiable (integer tokens, positions).
      }],
      /*retTy=*/"::llvm::SmallVector<::mlir::Value>",
      /*methodName=*/"buildAdjoint",
      /*args=*/(ins "::mlir::OpBuilder &":$builder,
                   "::mlir::ArrayRef<::mlir::Value>":$resultGrads,
                   "::llvm::ArrayRef<bool>":$needsGrad)
    >,
  ];
}

#endif // LOOM_INTERFACES

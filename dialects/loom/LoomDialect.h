//===- LoomDialect.h - The loom dialect -------------------------*- C++ -*-===//
#ifndef BITLOOM_DIALECTS_LOOM_LOOMDIALECT_H
#define BITLOOM_DIALECTS_LOOM_LOOMDIALECT_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

// Order matters: the interfaces use the enums and the ops use both.
// clang-format off
#include "dialects/loom/LoomDialect.h.inc"
#include "dialects/loom/LoomEnums.h.inc"
#include "dialects/loom/LoomInterfaces.h.inc"
// clang-format on

#define GET_ATTRDEF_CLASSES
#include "dialects/loom/LoomAttrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/loom/LoomTypes.h.inc"

#define GET_OP_CLASSES
#include "dialects/loom/LoomOps.h.inc"

#endif // BITLOOM_DIALECTS_LOOM_LOOMDIALECT_H

//===- Passes.h - bitloom's passes ------------------------------*- C++ -*-===//
#ifndef BITLOOM_PASSES_PASSES_H
#define BITLOOM_PASSES_PASSES_H

#include "dialects/loom/LoomDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace bitloom {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

} // namespace bitloom

#endif // BITLOOM_PASSES_PASSES_H

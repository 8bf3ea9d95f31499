//===- PlanArena.cpp - (being written) ---------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

namespace bitloom {
#define GEN_PASS_DEF_LOOMPLANARENA
#include "passes/Passes.h.inc"
} // namespace bitloom

namespace {
class PlanArena
    : public bitloom::impl::LoomPlanArenaBase<PlanArena> {
public:
  using LoomPlanArenaBase::LoomPlanArenaBase;
  void runOnOperation() override {}
};
} // namespace

//===- Recompute.cpp - (being written) ---------------------------------===//
#include "passes/Passes.h"

namespace bitloom {
#define GEN_PASS_DEF_LOOMRECOMPUTE
#include "passes/Passes.h.inc"
} // namespace bitloom

namespace {
class Recompute
    : public bitloom::impl::LoomRecomputeBase<Recompute> {
public:
  using LoomRecomputeBase::LoomRecomputeBase;
  void runOnOperation() override {}
};
} // namespace

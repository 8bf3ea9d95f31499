//===- FuseLinearCrossEntropy.cpp - (being written) ---------------------------------===//
#include "passes/Passes.h"

namespace bitloom {
#define GEN_PASS_DEF_LOOMFUSELINEARCROSSENTROPY
#include "passes/Passes.h.inc"
} // namespace bitloom

namespace {
class FuseLinearCrossEntropy
    : public bitloom::impl::LoomFuseLinearCrossEntropyBase<FuseLinearCrossEntropy> {
public:
  using LoomFuseLinearCrossEntropyBase::LoomFuseLinearCrossEntropyBase;
  void runOnOperation() override {}
};
} // namespace

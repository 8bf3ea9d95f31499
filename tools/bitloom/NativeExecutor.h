//===- NativeExecutor.h - Run compiled CPU entry points in-process -*- C++ -*-//
//
// Executes the entry points of a CPU shared object compiled by
// codegen/cpu/CompileCpu.h, with the same named-tensor interface as the
// reference executor, so `bitloom step` / `train` can run either and their
// outputs can be compared tensor by tensor.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TOOLS_BITLOOM_NATIVEEXECUTOR_H
#define BITLOOM_TOOLS_BITLOOM_NATIVEEXECUTOR_H

#include "codegen/cpu/CompileCpu.h"
#include "codegen/reference/Interpreter.h"
#include "hal/cpu/NativeLibrary.h"
#include "model/Model.h"
#include "model/TernaryWeights.h"

#include <map>
#include <memory>
#include <string>

namespace bitloom {

using reference::HostTensor;

class NativeExecutor {
public:
  /// Loads `compiled`'s shared object; frozen weights come from `model`,
  /// prepared once in the form the code takes (f32 or packed ternary).
  NativeExecutor(codegen::cpu::CompiledCpuModule compiled, const Model &model);

  /// Arguments by loom.name (weights excluded: bound from the model);
  /// results by loom.name. Shapes must be the compiled ones exactly.
  std::map<std::string, HostTensor>
  run(const std::string &function,
      const std::map<std::string, HostTensor> &arguments);

private:
  codegen::cpu::CompiledCpuModule compiled_;
  const Model &model_;
  std::unique_ptr<hal::cpu::NativeLibrary> library_;
  CpuWeightSource weightSource_;
  std::map<std::string, std::vector<uint8_t>> weights_;
  /// The planned arena, shared by the entry points (64-byte words).
  std::vector<uint64_t> arena_;
};

} // namespace bitloom

#endif // BITLOOM_TOOLS_BITLOOM_NATIVEEXECUTOR_H

//===- Interpreter.h - The reference executor for loom IR -------*- C++ -*-===//
//
// Runs a loom function directly, op by op, with the plain loops of
// Kernels.h in f32. It is the oracle every compiled backend is checked
// against, and `bitloom step --target reference` trains with it. Clarity
// over speed: every intermediate is a fresh buffer.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_CODEGEN_REFERENCE_INTERPRETER_H
#define BITLOOM_CODEGEN_REFERENCE_INTERPRETER_H

#include "model/Model.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace bitloom::reference {

/// A dense row-major host tensor: f32 data, or i32 for token ids.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  std::vector<int32_t> ints;
  bool isInt = false;

  static HostTensor floats(std::vector<int64_t> shape, float fill = 0.0f);
  static HostTensor int32s(std::vector<int64_t> shape,
                           std::vector<int32_t> values);
  static HostTensor scalar(float value) { return floats({}, value); }
  int64_t numElements() const;
};

class Interpreter {
public:
  /// Weights named by `loom.param` are read from `model` (dequantized once
  /// and cached).
  Interpreter(mlir::ModuleOp module, const Model &model);
  ~Interpreter();

  /// Runs `function` with arguments given by their `loom.name`; returns the
  /// results under their `loom.name`. Throws std::runtime_error naming the
  /// missing argument or the op that failed.
  std::map<std::string, HostTensor>
  run(const std::string &function,
      const std::map<std::string, HostTensor> &arguments);

  /// The `loom.name` of each argument / result of `function`, in order.
  std::vector<std::string> argumentNames(const std::string &function) const;
  std::vector<std::string> resultNames(const std::string &function) const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace bitloom::reference

#endif // BITLOOM_CODEGEN_REFERENCE_INTERPRETER_H

//===- NativeExecutor.cpp - Run compiled CPU entry points in-process ------===//
#include "NativeExecutor.h"

#include "formats/Error.h"

namespace bitloom {

NativeExecutor::NativeExecutor(codegen::cpu::CompiledCpuModule compiled,
                               const Model &model)
    : compiled_(std::move(compiled)), model_(model), weightSource_(model) {
  library_ = hal::cpu::NativeLibrary::load("compiled step",
                                           compiled_.sharedObject.data(),
                                           compiled_.sharedObject.size());
}

std::map<std::string, HostTensor>
NativeExecutor::run(const std::string &function,
                    const std::map<std::string, HostTensor> &arguments) {
  const codegen::cpu::FunctionSignature *sig = compiled_.find(function);
  if (!sig)
    throw FormatError("", function, "not compiled into this module");
  std::vector<void *> bindings;
  for (const codegen::cpu::TensorSignature &arg : sig->args) {
    if (arg.isWeight) {
      auto it = weights_.find(arg.name);
      if (it == weights_.end())
        it = weights_
                 .emplace(arg.name, weightSource_.bytes(arg.name, arg.packing))
                 .first;
      if (int64_t(it->second.size()) != arg.byteSize())
        throw FormatError(model_.path(), arg.name,
                          "does not match the compiled size of @" + function);
      bindings.push_back(it->second.data());
      continue;
    }
    auto it = arguments.find(arg.name);
    if (it == arguments.end())
      throw FormatError("", arg.name, "missing argument of @" + function);
    const HostTensor *value = &it->second;
    if (value->shape != arg.shape || value->isInt != arg.isInt)
      throw FormatError("", arg.name,
                        "does not match the compiled shape of @" + function);
    // The compiled code reads inputs only; results go to the outputs below.
    bindings.push_back(
        value->isInt
            ? static_cast<void *>(const_cast<int32_t *>(value->ints.data()))
            : static_cast<void *>(const_cast<float *>(value->data.data())));
  }
  std::map<std::string, HostTensor> results;
  std::vector<HostTensor *> outputs;
  for (const codegen::cpu::TensorSignature &res : sig->results) {
    HostTensor &out = results[res.name];
    out = HostTensor::floats(res.shape);
    outputs.push_back(&out);
  }
  for (HostTensor *out : outputs)
    bindings.push_back(out->data.data());
  if (arena_.size() * 8 < size_t(sig->arenaBytes))
    arena_.resize((size_t(sig->arenaBytes) + 63) / 64 * 8);
  bindings.push_back(arena_.data());
  library_->lookup(function + "_packed")(bindings.data());
  return results;
}

} // namespace bitloom

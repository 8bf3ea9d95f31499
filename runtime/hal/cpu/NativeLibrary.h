//===- NativeLibrary.h - Load compiled CPU code from an artifact -*- C++
//-*-===//
//
// The CPU target's executables are ELF shared objects produced by the
// compiler and stored inside the .blm. The runtime loads one straight from
// its bytes (memfd_create + dlopen of /proc/self/fd/N: nothing is written
// to disk) and resolves entry points by name. Entry points take one
// argument, an array of pointers to the buffers they bind, so the runtime
// calls every kernel the same way whatever its signature.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_RUNTIME_HAL_CPU_NATIVELIBRARY_H
#define BITLOOM_RUNTIME_HAL_CPU_NATIVELIBRARY_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace bitloom::hal::cpu {

/// `void entry(void **bindings)`: the packed calling convention of every
/// compiled kernel and entry point.
using PackedEntry = void (*)(void **bindings);

class NativeLibrary {
public:
  /// Loads an ELF shared object from memory. `name` is used in errors (the
  /// artifact and executable it came from). Throws FormatError when the
  /// bytes are not a loadable shared object for this machine.
  static std::unique_ptr<NativeLibrary> load(const std::string &name,
                                             const uint8_t *bytes, size_t size);
  ~NativeLibrary();
  NativeLibrary(const NativeLibrary &) = delete;
  NativeLibrary &operator=(const NativeLibrary &) = delete;

  /// The entry point `symbol`; throws FormatError naming it when missing.
  PackedEntry lookup(const std::string &symbol) const;

private:
  NativeLibrary() = default;
  std::string name_;
  void *handle_ = nullptr;
  int fd_ = -1;
};

} // namespace bitloom::hal::cpu

#endif // BITLOOM_RUNTIME_HAL_CPU_NATIVELIBRARY_H

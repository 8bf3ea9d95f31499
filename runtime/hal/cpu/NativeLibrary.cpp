//===- NativeLibrary.cpp - Load compiled CPU code from an artifact --------===//
#include "hal/cpu/NativeLibrary.h"

#include "formats/Error.h"

#include <cerrno>
#include <cstring>
#include <dlfcn.h>
#include <elf.h>
#include <sys/mman.h>
#include <unistd.h>

namespace bitloom::hal::cpu {

namespace {

/// The ELF machine this runtime was built for: a mismatched executable is
/// a clear error, not a dlopen failure with a cryptic message.
constexpr uint16_t hostMachine() {
#if defined(__x86_64__)
  return EM_X86_64;
#elif defined(__aarch64__)
  return EM_AARCH64;
#else
  return EM_NONE;
#endif
}

const char *machineName(uint16_t machine) {
  switch (machine) {
  case EM_X86_64:
    return "x86-64";
  case EM_AARCH64:
    return "arm64";
  default:
    return "another architecture";
  }
}

} // namespace

std::unique_ptr<NativeLibrary> NativeLibrary::load(const std::string &name,
                                                   const uint8_t *bytes,
                                                   size_t size) {
  if (size < sizeof(Elf64_Ehdr) || std::memcmp(bytes, ELFMAG, SELFMAG) != 0)
    throw FormatError(name, "", "not an ELF shared object");
  Elf64_Ehdr header;
  std::memcpy(&header, bytes, sizeof(header));
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_type != ET_DYN)
    throw FormatError(name, "", "not a 64-bit ELF shared object");
  if (header.e_machine != hostMachine())
    throw FormatError(
        name, "",
        std::string("compiled for ") + machineName(header.e_machine) +
            ", but this machine is " + machineName(hostMachine()));

  std::unique_ptr<NativeLibrary> library(new NativeLibrary());
  library->name_ = name;
  library->fd_ = memfd_create("bitloom-executable", MFD_CLOEXEC);
  if (library->fd_ < 0)
    throw FormatError(name, "",
                      std::string("memfd_create: ") + std::strerror(errno));
  size_t written = 0;
  while (written < size) {
    ssize_t n = ::write(library->fd_, bytes + written, size - written);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      throw FormatError(name, "",
                        std::string("write: ") + std::strerror(errno));
    written += size_t(n);
  }
  std::string path = "/proc/self/fd/" + std::to_string(library->fd_);
  // RTLD_LOCAL: two artifacts loaded at once must not share kernel symbols.
  library->handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library->handle_)
    throw FormatError(name, "", std::string("cannot load: ") + dlerror());
  return library;
}

NativeLibrary::~NativeLibrary() {
  if (handle_)
    dlclose(handle_);
  if (fd_ >= 0)
    close(fd_);
}

PackedEntry NativeLibrary::lookup(const std::string &symbol) const {
  void *address = dlsym(handle_, symbol.c_str());
  if (!address)
    throw FormatError(name_, symbol, "entry point not found");
  return reinterpret_cast<PackedEntry>(address);
}

} // namespace bitloom::hal::cpu

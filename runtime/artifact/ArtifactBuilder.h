//===- ArtifactBuilder.h - Writing a .blm artifact --------------*- C++ -*-===//
//
// Collects the manifest (metadata, executables, parameters, entry points with
// their schedules, the memory plan) and writes the file in one sequential
// pass. Parameter bytes are never gathered: they are borrowed from a pointer
// (e.g. a mapped checkpoint) or produced on demand by a callback during
// write(), so a multi-GB model is written with a few MB of memory. Checksums
// are computed while the bytes stream out.
//
// Before writing, the manifest goes through the same validation as
// Artifact::open (plus a check that no two live arena slots overlap), so a
// compiler bug is a FormatError at compile time, naming the field.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_ARTIFACT_ARTIFACTBUILDER_H
#define BITLOOM_ARTIFACT_ARTIFACTBUILDER_H

#include "artifact/ArtifactTypes.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace bitloom::blm {

/// Where the bytes of an artifact go. write(path) uses an AtomicFileWriter;
/// tests use others (e.g. a sparse file).
class ArtifactSink {
public:
  virtual ~ArtifactSink() = default;
  virtual void write(const void *data, size_t size) = 0;
  /// `size` zero bytes (padding, zero-filled parameters). A sink may leave a
  /// hole instead of writing them.
  virtual void writeZeros(uint64_t size) = 0;
  /// Called once after the last byte.
  virtual void commit() = 0;
};

/// What a parameter producer writes its bytes to, in order. Writing more
/// than the declared size throws at once; writing less fails write().
class BlobWriter {
public:
  void write(const void *data, size_t size);
  void writeZeros(uint64_t size);
  uint64_t written() const { return written_; }
  uint64_t remaining() const { return size_ - written_; }

private:
  friend class ArtifactBuilder;
  struct Impl;
  BlobWriter(Impl &impl, uint64_t size) : impl_(impl), size_(size) {}
  Impl &impl_;
  uint64_t size_;
  uint64_t written_ = 0;
};

/// Writes exactly the declared number of bytes of one parameter. Called once,
/// during write(), in parameter order.
using BlobProducer = std::function<void(BlobWriter &)>;

class ArtifactBuilder {
public:
  struct Options {
    /// Alignment of each executable (power of two, >= 64).
    uint64_t executableAlignment = 64;
    /// Alignment of each parameter (power of two, >= 64); 4096 lets a
    /// runtime map or import every weight at page granularity.
    uint64_t parameterAlignment = 4096;
  };

  ArtifactBuilder();
  explicit ArtifactBuilder(const Options &options);
  ~ArtifactBuilder();
  ArtifactBuilder(const ArtifactBuilder &) = delete;
  ArtifactBuilder &operator=(const ArtifactBuilder &) = delete;

  void setProducer(std::string producer);
  void setTarget(TargetInfo target);
  void setModelConfig(ModelConfig config);
  void setLoraConfig(LoraConfig config);
  void setCompileOptions(CompileOptions options);
  void addMetadata(std::string key, std::string value);

  /// Adds an executable; returns its index (for DispatchInfo::executable).
  uint32_t addExecutable(ExecutableInfo info, std::vector<uint8_t> bytes);
  /// Same, borrowing `data`, which must stay valid until write() returns.
  uint32_t addExecutable(ExecutableInfo info, const void *data, uint64_t size);

  /// Adds a parameter; returns its index (for BindingSource::Parameter).
  /// Borrows `data`, which must stay valid until write() returns.
  uint32_t addParameter(ParameterInfo info, const void *data, uint64_t size);
  /// Same, owning a copy of the bytes (small parameters, tests).
  uint32_t addParameter(ParameterInfo info, std::vector<uint8_t> bytes);
  /// Streams `size` bytes from `produce` during write().
  uint32_t addParameter(ParameterInfo info, uint64_t size,
                        BlobProducer produce);
  /// A parameter of `size` zero bytes (a sink may store it as a hole).
  uint32_t addZeroParameter(ParameterInfo info, uint64_t size);

  /// Adds an entry point with its schedule; returns its index (for
  /// SlotInfo::entryPoint).
  uint32_t addEntryPoint(EntryPointInfo entry);
  void setMemoryPlan(MemoryPlanInfo plan);

  /// Validates, then writes `path` atomically (temporary file, fsync,
  /// rename): a failure leaves no partial file. Throws FormatError naming
  /// `path` and the field.
  void write(const std::string &path) const;
  /// Validates, then streams the file to `sink`; errors name `name`.
  void writeTo(ArtifactSink &sink, const std::string &name) const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace bitloom::blm

#endif // BITLOOM_ARTIFACT_ARTIFACTBUILDER_H

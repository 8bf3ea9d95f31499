//===- Artifact.h - An opened .blm artifact ---------------------*- C++ -*-===//
//
// Artifact::open maps a .blm file read-only and validates it completely
// before handing anything out: header (magic, version, sizes, checksum), the
// manifest (checksum, FlatBuffers Verifier, version), every blob (inside the
// data section, aligned, not overlapping another), every cross reference
// (blob, executable, kernel, parameter, argument, slot indices; binding
// ranges inside their slot or parameter; slots inside the arena), and the
// checksums of the checksum table and of every executable. Weight checksums
// are checked only on request (OpenOptions::verifyParameters, verify(true),
// verifyParameter(i)), so that a multi-GB model opens in milliseconds.
//
// After a successful open, every index and range in the manifest is safe to
// use without further checks. Accessors return views into the mapping: they
// stay valid as long as the Artifact (or a copy of mapping()) lives. Every
// problem is a FormatError naming the file and the field.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_ARTIFACT_ARTIFACT_H
#define BITLOOM_ARTIFACT_ARTIFACT_H

#include "artifact/ArtifactTypes.h"
#include "artifact/Format.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bitloom {
class MappedFile;
}

namespace bitloom::blm {

class Artifact {
public:
  struct OpenOptions {
    /// Also check every parameter's checksum (reads the whole file).
    bool verifyParameters = false;
  };

  static std::unique_ptr<Artifact> open(const std::string &path,
                                        const OpenOptions &options);
  static std::unique_ptr<Artifact> open(const std::string &path) {
    return open(path, OpenOptions());
  }
  ~Artifact();
  Artifact(const Artifact &) = delete;
  Artifact &operator=(const Artifact &) = delete;

  const std::string &path() const { return path_; }
  const FileHeader &header() const { return header_; }
  Version version() const {
    return {header_.versionMajor, header_.versionMinor};
  }
  uint64_t fileSize() const { return header_.fileSize; }
  /// The mapping; hold a copy to keep spans alive beyond the Artifact.
  const std::shared_ptr<MappedFile> &mapping() const { return file_; }
  /// The raw manifest, for everything the accessors below do not cover.
  const fb::Manifest &manifest() const { return *manifest_; }

  // Metadata: copies of the small tables (defaults where a table is absent).
  std::string producer() const;
  TargetInfo target() const;
  ModelConfig modelConfig() const;
  LoraConfig loraConfig() const;
  CompileOptions compileOptions() const;
  std::vector<std::pair<std::string, std::string>> metadata() const;

  // Entry points, with their signatures and dispatch schedules.
  size_t numEntryPoints() const;
  const fb::EntryPoint &entryPoint(size_t i) const;
  const fb::EntryPoint *findEntryPoint(std::string_view name) const;

  // Executables (one per target object) and their kernels.
  size_t numExecutables() const;
  const fb::Executable &executable(size_t i) const;
  ByteSpan executableData(size_t i) const;

  // Parameters (weights), in place in the mapping.
  size_t numParameters() const;
  const fb::Parameter &parameter(size_t i) const;
  std::optional<size_t> findParameter(std::string_view name) const;
  ByteSpan parameterData(size_t i) const;
  Span<int64_t> parameterShape(size_t i) const;

  /// nullptr when the artifact has no memory plan.
  const fb::MemoryPlan *memoryPlan() const { return manifest_->memory_plan(); }

  // Raw blobs of the data section.
  size_t numBlobs() const;
  const fb::Blob &blob(size_t i) const;
  ByteSpan blobData(size_t i) const;
  uint64_t blobChecksum(size_t i) const;
  /// What a blob holds, as errors name it: "parameter <name>",
  /// "executable <i> (<name>)", or "blob <i>".
  const std::string &blobOwner(size_t i) const;

  /// Re-checks the checksums: the manifest, the checksum table and every
  /// executable; with `full`, every parameter too. Throws FormatError.
  void verify(bool full) const;
  /// Checks one parameter's checksum (a lazy check on first use).
  void verifyParameter(size_t i) const;

private:
  Artifact() = default;
  void verifyBlob(size_t i) const;

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  FileHeader header_;
  const fb::Manifest *manifest_ = nullptr;
  const uint8_t *checksums_ = nullptr; // the checksum table in the mapping
  std::vector<std::string> blobOwners_;
  std::map<std::string, size_t, std::less<>> parameterIndex_;
};

} // namespace bitloom::blm

#endif // BITLOOM_ARTIFACT_ARTIFACT_H

//===- ArtifactTypes.h - Plain descriptions of .blm contents ----*- C++ -*-===//
//
// The value types that ArtifactBuilder takes and Artifact hands back for the
// small metadata tables. The large, repeated parts of an opened artifact
// (schedules, kernels, parameters) are read in place through the generated
// FlatBuffers accessors (namespace bitloom::blm::fb, from blm.fbs).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_ARTIFACT_ARTIFACTTYPES_H
#define BITLOOM_ARTIFACT_ARTIFACTTYPES_H

#include "artifact/blm_generated.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::blm {

// Enums are the schema's own (scoped, uint8_t).
using Role = fb::Role;
using BindingSource = fb::BindingSource;
using Access = fb::Access;

/// A read-only view of `size` contiguous T (std::span is C++20).
template <typename T> class Span {
public:
  constexpr Span() = default;
  constexpr Span(const T *data, size_t size) : data_(data), size_(size) {}
  constexpr const T *data() const { return data_; }
  constexpr size_t size() const { return size_; }
  constexpr bool empty() const { return size_ == 0; }
  constexpr const T *begin() const { return data_; }
  constexpr const T *end() const { return data_ + size_; }
  constexpr const T &operator[](size_t i) const { return data_[i]; }

private:
  const T *data_ = nullptr;
  size_t size_ = 0;
};
using ByteSpan = Span<uint8_t>;

struct Version {
  uint16_t major = 0;
  uint16_t minor = 0;
  bool operator==(const Version &o) const {
    return major == o.major && minor == o.minor;
  }
};

struct Dim3 {
  uint32_t x = 1, y = 1, z = 1;
  bool operator==(const Dim3 &o) const {
    return x == o.x && y == o.y && z == o.z;
  }
};

struct TargetInfo {
  std::string name; // "cpu-x86_64", "cpu-arm64", "vulkan-generic", "reference"
  std::string cpu;  // "znver3", "cortex-a78", ... (may be empty)
  std::vector<std::string> features; // "+avx2", "+dotprod", ...
  bool operator==(const TargetInfo &o) const {
    return name == o.name && cpu == o.cpu && features == o.features;
  }
};

/// The architecture the artifact was compiled for (config.json meaning).
struct ModelConfig {
  std::string architecture = "bitnet";
  uint64_t vocabSize = 0;
  uint64_t hiddenSize = 0;
  uint64_t intermediateSize = 0;
  uint64_t numLayers = 0;
  uint64_t numHeads = 0;
  uint64_t numKvHeads = 0;
  uint64_t headDim = 0;
  uint64_t maxPositionEmbeddings = 0;
  double ropeTheta = 0;
  double rmsNormEps = 0;
  bool tieWordEmbeddings = false;
  std::string hiddenAct;   // "relu2"
  std::string weightQuant; // "online" | "offline"
  int64_t bosTokenId = -1; // -1: none
  int64_t eosTokenId = -1;
  bool operator==(const ModelConfig &o) const {
    return architecture == o.architecture && vocabSize == o.vocabSize &&
           hiddenSize == o.hiddenSize &&
           intermediateSize == o.intermediateSize && numLayers == o.numLayers &&
           numHeads == o.numHeads && numKvHeads == o.numKvHeads &&
           headDim == o.headDim &&
           maxPositionEmbeddings == o.maxPositionEmbeddings &&
           ropeTheta == o.ropeTheta && rmsNormEps == o.rmsNormEps &&
           tieWordEmbeddings == o.tieWordEmbeddings &&
           hiddenAct == o.hiddenAct && weightQuant == o.weightQuant &&
           bosTokenId == o.bosTokenId && eosTokenId == o.eosTokenId;
  }
};

struct LoraConfig {
  uint32_t rank = 0; // 0: no adapters
  double alpha = 0;
  double dropout = 0;
  std::vector<std::string> targets; // q k v o gate up down
  std::string trainable;            // "lora" | "lora+norm" | "all"
  bool operator==(const LoraConfig &o) const {
    return rank == o.rank && alpha == o.alpha && dropout == o.dropout &&
           targets == o.targets && trainable == o.trainable;
  }
};

struct CompileOptions {
  uint64_t seqLen = 0;
  uint64_t batchSize = 0;
  uint64_t memoryBudget = 0; // bytes; 0: none
  std::string optimizer;     // "adamw" | "sgd"
  bool recompute = false;
  bool operator==(const CompileOptions &o) const {
    return seqLen == o.seqLen && batchSize == o.batchSize &&
           memoryBudget == o.memoryBudget && optimizer == o.optimizer &&
           recompute == o.recompute;
  }
};

/// An argument or result of an entry point.
struct TensorSignature {
  std::string name;  // loom.name
  std::string dtype; // "f32", "i32", ...
  std::vector<int64_t> shape;
  Role role = Role::Input;
};

struct KernelInfo {
  std::string name;
  Dim3 workgroupCount;
  Dim3 workgroupSize;
  std::string sourceLocation; // "model.mlir:12:3"
};

/// Describes an executable; its bytes are given separately.
struct ExecutableInfo {
  std::string name;
  std::string format; // "elf-relocatable", "elf-shared", "spirv", ...
  std::string target; // empty: the artifact's target
  std::vector<KernelInfo> kernels;
};

struct BindingInfo {
  BindingSource source = BindingSource::ArenaSlot;
  uint32_t index = 0; // slot / parameter / argument / result index
  uint64_t offset = 0;
  uint64_t size = 0;
  Access access = Access::ReadWrite;
};

struct DispatchInfo {
  uint32_t executable = 0;
  uint32_t kernel = 0; // index into the executable's kernels
  Dim3 workgroupCount;
  std::vector<BindingInfo> bindings;
  std::vector<uint32_t> constants;
  std::string op; // the loom op / fused region it runs
};

struct EntryPointInfo {
  std::string name; // "train_step", "eval_step", "generate"
  std::vector<TensorSignature> arguments;
  std::vector<TensorSignature> results;
  std::vector<DispatchInfo> dispatches; // in execution order
  uint64_t arenaBytes = 0;              // the part of the arena it uses
  uint32_t scheduleLength = 0;          // positions of SlotInfo::schedule*
};

/// A transient buffer in the arena, live over dispatches
/// [lifetimeBegin, lifetimeEnd] (inclusive) of entry point `entryPoint`.
struct SlotInfo {
  std::string name;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t entryPoint = 0;
  uint32_t lifetimeBegin = 0;
  uint32_t lifetimeEnd = 0;
  std::string op; // the op that defines it
  /// Positions in the dispatch's own compiled schedule (CPU entry points);
  /// the defaults mean the whole dispatch.
  uint32_t scheduleBegin = 0;
  uint32_t scheduleEnd = UINT32_MAX;
};

struct MemoryPlanInfo {
  uint64_t arenaSize = 0;
  uint64_t alignment = 64;
  std::vector<SlotInfo> slots;
};

/// Describes a parameter; its bytes are given separately.
struct ParameterInfo {
  std::string name;  // Hugging Face / PEFT name
  std::string dtype; // "f32", "bf16", "tq2_0", or an opaque packing ("i2")
  std::vector<int64_t> shape; // logical shape
  bool trainable = false;
};

} // namespace bitloom::blm

#endif // BITLOOM_ARTIFACT_ARTIFACTTYPES_H

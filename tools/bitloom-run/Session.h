//===- Session.h - An opened artifact, its buffers and state ----*- C++ -*-===//
//
// What every bitloom-run command shares: the artifact (weights stay in the
// mapping), its tokenizer and chat template, the loaded native code (CPU
// artifacts) or the Vulkan executor (vulkan-* artifacts), and the host
// buffers the entry points bind.
//
// Buffers come in two kinds:
//  - persistent state, owned by the Session and shared by every entry point:
//    trainable parameters (role Parameter: LoRA matrices, trainable norms)
//    and optimizer state (role OptimizerState: AdamW moments, momentum
//    buffers, and the "grad.<name>" accumulators of accumulate_step);
//  - per-entry buffers: inputs (tokens, positions, labels, loss mask),
//    hyperparameters (lr, step, grad_scale) and results.
// A result named like a state tensor is the new value of that tensor and is
// bound to that tensor's own buffer: the compiled code updates parameters,
// optimizer state, gradient accumulators and KV caches in place (each
// update is elementwise and the last use of the old value), so state costs
// one copy, not two, and train_step's updated parameters feed the next
// step and eval_step sees them too.
//
// On Vulkan the host buffers are mirrors. State lives on the device across
// calls: it is uploaded when the host wrote it (initFresh, setTensors,
// loadAdapter, setOptimizerState, a mutable state() access) and downloaded
// only when the host reads it (state(), trainables(), optimizerState():
// checkpoints, adapter export); zeroState() zeroes it on the device. A call
// uploads the entry's non-state inputs and hyperparameters and downloads its
// non-state results, nothing else, so a training loop moves no state.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_RUN_SESSION_H
#define BITLOOM_RUN_SESSION_H

#include "artifact/Artifact.h"
#include "model/Model.h"
#include "trainer/Adapter.h"
#include "trainer/ChatTemplate.h"
#include "trainer/Checkpoint.h"
#include "trainer/Dataset.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitloom {
class Tokenizer;
namespace hal::cpu {
class NativeLibrary;
} // namespace hal::cpu
namespace vulkan {
class ExecutorEntry;
} // namespace vulkan
} // namespace bitloom

namespace bitloom::run {

struct SessionOptions {
  /// The Vulkan device (bitloom-run --device) of a vulkan-* artifact;
  /// unset: device 0. Refused for other artifacts.
  std::optional<uint32_t> device;
  /// The Vulkan pipeline cache file; empty: the default
  /// ($XDG_CACHE_HOME or ~/.cache, bitloom/pipelines-<hash>.bin).
  std::string pipelineCache;
};

/// SessionOptions from bitloom-run's --device (-1: not given).
SessionOptions deviceOptions(int64_t device);

/// The device failed while running an entry point or moving state (Vulkan:
/// device lost, out of device memory). Nothing on the device can be trusted
/// afterwards; host copies taken before (checkpoints) are intact.
class DeviceError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// State tensors moved between host and device (Vulkan), counted per tensor.
struct StateTransfers {
  uint64_t uploads = 0, downloads = 0;
  uint64_t bytesUp = 0, bytesDown = 0;
};

/// The time of one dispatch of a profiled call (Session::runProfiled).
struct DispatchTime {
  /// The artifact's Dispatch.op ("bitloom_uk_ternary_matmul",
  /// "train_step_kernel_12"); may be empty.
  std::string op;
  /// The kernel: its SPIR-V entry point (Vulkan) or symbol (CPU).
  std::string kernel;
  uint32_t groups[3] = {1, 1, 1};
  double ns = 0;
};

/// One profiled call: every dispatch's time, in schedule order. On Vulkan,
/// GPU time between timestamp queries (each dispatch from the end of the
/// previous command to its own end); on the CPU, the wall time of each
/// kernel call.
struct StepProfile {
  std::vector<DispatchTime> dispatches;
  /// Vulkan: the streamed inputs' copies up and results' copies down.
  double uploadNs = 0, downloadNs = 0;
  double dispatchTotalNs() const;
};

/// The memory an opened artifact holds, by purpose (bytes asked for). On
/// Vulkan, device memory; on the CPU, host buffers and the mapped weights.
struct MemoryUse {
  bool device = false;
  uint64_t arena = 0;   ///< the memory plan's arena_size
  uint64_t weights = 0; ///< frozen parameters (Vulkan: those uploaded)
  uint64_t state = 0;   ///< trainables, optimizer state, KV caches
  uint64_t io = 0;      ///< the prepared entry points' inputs and results
  /// Vulkan: host-visible staging of the streamed inputs and results (not
  /// in total()) and every device-local buffer's size, padding included.
  uint64_t staging = 0, allocated = 0;
  uint64_t total() const { return arena + weights + state + io; }
};

/// A 64-byte aligned, zero-initialized host buffer for one tensor.
class HostBuffer {
public:
  HostBuffer() = default;
  HostBuffer(std::string name, std::string dtype, std::vector<int64_t> shape,
             blm::Role role, size_t elementSize);
  HostBuffer(HostBuffer &&) noexcept = default;
  HostBuffer &operator=(HostBuffer &&) noexcept = default;

  const std::string &name() const { return name_; }
  const std::string &dtype() const { return dtype_; }
  const std::vector<int64_t> &shape() const { return shape_; }
  blm::Role role() const { return role_; }
  int64_t elements() const { return elements_; }
  size_t bytes() const { return bytes_; }
  void *data() { return storage_.get(); }
  const void *data() const { return storage_.get(); }
  float *f32() { return static_cast<float *>(data()); }
  const float *f32() const { return static_cast<const float *>(data()); }
  int32_t *i32() { return static_cast<int32_t *>(data()); }
  void zero();
  /// Exchanges the storage (same size required) with `other`.

private:
  struct Free {
    void operator()(uint8_t *p) const;
  };
  std::string name_, dtype_;
  std::vector<int64_t> shape_;
  blm::Role role_ = blm::Role::Input;
  int64_t elements_ = 0;
  size_t bytes_ = 0;
  std::unique_ptr<uint8_t[], Free> storage_;
};

class Session;

/// One prepared entry point: its loaded kernels and its own buffers.
class Entry {
public:
  const std::string &name() const { return name_; }
  const blm::fb::EntryPoint &signature() const { return *sig_; }
  /// An input or hyperparameter argument (not state); nullptr when absent.
  HostBuffer *input(const std::string &name);
  HostBuffer &requireInput(const std::string &name);
  HostBuffer *result(const std::string &name);
  /// The first element of an f32 result.
  float scalar(const std::string &name);
  /// Sets an f32 hyperparameter (lr, step, grad_scale) when the entry has it.
  void setScalar(const std::string &name, float value);
  /// Fills tokens/positions/labels/loss_mask from `batch` with Hugging
  /// Face's causal-LM shift: position t predicts token t + 1.
  void setBatch(const trainer::Batch &batch);
  /// Bytes of the buffers this entry owns (inputs and results).
  size_t ownedBytes() const;
  /// Tokens one call processes (elements of "tokens"), 0 when none.
  int64_t tokensPerCall() const;

private:
  friend class Session;
  struct Call {
    void (*fn)(void **) = nullptr;
    const blm::fb::Dispatch *dispatch = nullptr;
    std::vector<void *> bindings;
  };
  std::string name_;
  const blm::fb::EntryPoint *sig_ = nullptr;
  std::vector<HostBuffer> args_;          // non-state arguments, by index below
  std::vector<int> argSlot_;              // argument index -> args_ index or -1
  std::vector<std::string> argState_;     // argument index -> state name or ""
  std::vector<HostBuffer> results_;       // empty for state results
  std::vector<HostBuffer *> resultState_; // result index -> state or null
  std::map<std::string, size_t> argIndex_, resultIndex_;
  std::vector<Call> calls_;
  Session *session_ = nullptr;
  // Vulkan: the prepared entry, the state it binds and the state it writes.
  vulkan::ExecutorEntry *device_ = nullptr;
  std::vector<std::string> stateUsed_, stateWritten_;
};

class Session {
public:
  /// Opens and validates `path`. Trainable parameters (role Parameter of any
  /// entry point) are created zero-filled; call initFresh() or setTensors().
  /// A vulkan-* artifact opens its device (options.device) and builds its
  /// pipelines here.
  explicit Session(const std::string &path,
                   const SessionOptions &options = SessionOptions());
  ~Session();
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  const std::string &path() const { return path_; }
  const blm::Artifact &artifact() const { return *artifact_; }
  std::string metadata(const std::string &key) const;
  int64_t seqLen() const { return seqLen_; }
  int64_t batchSize() const { return batch_; }
  /// The architecture as the runtime's model code and adapters describe it.
  const ModelConfig &modelConfig() const { return model_; }
  /// The LoRA configuration compiled in (baseModel: the source model).
  const trainer::LoraConfig &loraConfig() const { return lora_; }

  const Tokenizer &tokenizer();
  /// nullptr when the artifact carries no chat template.
  const trainer::ChatTemplate *chatTemplate();
  /// Loads a text or JSONL chat file for this artifact's sequence length.
  /// `format`: auto | text | jsonl.
  trainer::Dataset loadDataset(const std::string &path,
                               const std::string &format);

  bool hasEntry(const std::string &name) const;
  /// The entry point, prepared on first use (kernels resolved, buffers
  /// allocated). FormatError naming the artifact when it is missing.
  Entry &entry(const std::string &name);
  /// Runs every dispatch of `e` in order, then makes state results current.
  /// DeviceError when the device fails.
  void run(Entry &e);
  /// Empty when runProfiled() can time dispatches here, else why not (a
  /// Vulkan device whose compute queue has no timestamps).
  std::string profilingProblem() const;
  /// run(), timing every dispatch: on Vulkan through a second recording of
  /// the step with a timestamp query after every command (the plain one
  /// stays free of them). DeviceError with profilingProblem() when the
  /// device cannot time.
  StepProfile runProfiled(Entry &e);

  /// Whether entry points run on a Vulkan device.
  bool onVulkan() const;
  /// "CPU", or "Vulkan device 0 (llvmpipe), profile lavapipe".
  std::string backendDescription() const;
  /// State moved between host and device so far (zero on the CPU).
  const StateTransfers &stateTransfers() const { return transfers_; }

  // Persistent state.
  /// Trainable parameter names, in the order the entry points list them.
  const std::vector<std::string> &trainableNames() const { return params_; }
  /// The host copy of a state tensor, current (downloaded on Vulkan when the
  /// device has a newer value); the caller may change it, and the change
  /// goes to the device before the next call that binds it.
  HostBuffer *state(const std::string &name);
  /// PEFT's initialization: lora_A kaiming-uniform (U(±1/sqrt(in)), drawn
  /// from std::mt19937_64(seed) in trainableNames() order), lora_B zero,
  /// other trainables from the artifact's parameter of the same name;
  /// optimizer state zero.
  void initFresh(uint64_t seed);
  /// Replaces trainable tensors by `tensors` (validated: every name must be
  /// a trainable of this artifact with the same shape; FormatError(source,
  /// name, ...) otherwise). With `requireAll`, every trainable must be given.
  void setTensors(const trainer::TensorMap &tensors, const std::string &source,
                  bool requireAll);
  /// Loads a PEFT directory or llama.cpp GGUF LoRA file over the LoRA
  /// matrices: it must match the compiled rank, alpha and targets, and hold
  /// every LoRA tensor with its shape (FormatError naming the file and the
  /// field or tensor otherwise).
  void loadAdapter(const std::string &path);
  /// Sets optimizer state tensors (same checks, names of OptimizerState).
  void setOptimizerState(const trainer::TensorMap &tensors,
                         const std::string &source);
  /// Zeroes every state tensor whose name starts with `prefix`.
  void zeroState(const std::string &prefix);
  /// Trainable parameters; with `loraOnly`, the LoRA matrices only.
  trainer::TensorMap trainables(bool loraOnly) const;
  /// Optimizer state except gradient accumulators ("grad.*").
  trainer::TensorMap optimizerState() const;

  /// What makes a checkpoint belong to this artifact: the artifact hash
  /// (manifest and every blob checksum), the model hash (frozen weights),
  /// the LoRA and optimizer configuration, and seq_len / batch_size.
  trainer::CheckpointIdentity identity() const;

  /// Bytes the artifact plans plus what the runtime allocates: the memory
  /// plan's arena, every parameter blob, state, and the buffers of every
  /// prepared entry point. On Vulkan, device memory: the arena, the weights
  /// uploaded, device state and the entry points' device buffers.
  uint64_t plannedBytes() const;
  /// What plannedBytes() sums, by purpose.
  MemoryUse memoryUse() const;

private:
  struct Vulkan;
  /// Where a state tensor's current value is (Vulkan).
  enum class Sync : uint8_t { Same, HostNewer, DeviceNewer };

  HostBuffer makeBuffer(const blm::fb::TensorSig *sig,
                        const std::string &entry) const;
  hal::cpu::NativeLibrary &library(uint32_t executable);
  uint8_t *arena();
  void prepareOnDevice(Entry &e);
  /// Runs `e` on the device; timed into `profile` when given.
  void runOnDevice(Entry &e, StepProfile *profile);
  void runOnHost(Entry &e, StepProfile *profile);
  /// The host wrote state tensor `name`: upload it before its next use.
  void hostWrote(const std::string &name);
  /// Downloads the state tensors in `names` the device has newer values of.
  void pull(const std::vector<std::string> &names) const;

  std::string path_;
  std::unique_ptr<blm::Artifact> artifact_;
  int64_t seqLen_ = 0, batch_ = 0;
  ModelConfig model_;
  trainer::LoraConfig lora_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::optional<trainer::ChatTemplate> chat_;
  bool chatLoaded_ = false;
  std::vector<std::string> params_;
  mutable std::map<std::string, HostBuffer> state_;
  std::map<std::string, std::unique_ptr<Entry>> entries_;
  std::map<uint32_t, std::unique_ptr<hal::cpu::NativeLibrary>> libraries_;
  HostBuffer arena_;
  // Vulkan only. state_ is mutable: const readers (trainables()) refresh the
  // host copies, a cache of the device's values.
  std::unique_ptr<Vulkan> vulkan_;
  mutable std::map<std::string, Sync> sync_;
  mutable StateTransfers transfers_;
};

/// "[4, 64]".
std::string shapeText(const std::vector<int64_t> &shape);

} // namespace bitloom::run

#endif // BITLOOM_RUN_SESSION_H

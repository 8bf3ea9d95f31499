//===- VulkanExecutor.h - Running a Vulkan .blm artifact --------*- C++ -*-===//
//
// Runs the entry points of an artifact compiled for a Vulkan target
// ("vulkan-<profile>"): every executable is SPIR-V, every dispatch binds
// storage buffer ranges of the one arena, the frozen weights, or the entry
// point's arguments and results.
//
// Opening one checks the target's device profile against the device, builds
// every pipeline once (through a pipeline cache kept on disk), and allocates
// the arena of memory_plan.arena_size bytes. Preparing an entry point
// uploads the weights its dispatches bind (once: every entry point shares
// them), binds each argument and result to a device range the caller
// chooses (the state it keeps on the device) or to a streamed buffer, and
// records the whole dispatch list into one command sequence; run() replays
// it. A streamed tensor crosses through host-visible staging on every run,
// recorded in the same sequence: arguments up before the dispatches,
// results down after. Nothing else moves between host and device unless the
// caller asks (upload, download, fill).
//
// Errors: FormatError for what is wrong in the artifact (naming the file and
// the field), VulkanError for what the device cannot do, VulkanOutOfMemory
// and VulkanDeviceLost as their names say. None of them aborts.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_HAL_VULKAN_VULKANEXECUTOR_H
#define BITLOOM_HAL_VULKAN_VULKANEXECUTOR_H

#include "hal/vulkan/DeviceProfile.h"
#include "hal/vulkan/VulkanContext.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace bitloom::blm {
class Artifact;
} // namespace bitloom::blm

namespace bitloom::vulkan {

/// Whether `target` names a Vulkan target ("vulkan-...").
bool isVulkanTarget(const std::string &target);

/// $XDG_CACHE_HOME/bitloom, else $HOME/.cache/bitloom; empty when neither
/// variable is set.
std::string defaultPipelineCacheDir();

/// What the pipelines of `artifact` depend on, hashed (16 hex digits): the
/// target, every SPIR-V executable's checksum and kernel names, and the
/// binding and push constant layout of every kernel dispatched. Weights do
/// not count: recompiling with other weights reuses the cache.
std::string pipelineCacheKey(const blm::Artifact &artifact);

struct ExecutorOptions {
  uint32_t deviceIndex = 0;
  /// A new VulkanInstance when null.
  std::shared_ptr<VulkanInstance> instance;
  /// The pipeline cache file; empty: defaultPipelineCacheDir() +
  /// "/pipelines-<pipelineCacheKey>.bin".
  std::string pipelineCachePath;
  /// false: no pipeline cache file (pipelines are still built once).
  bool diskPipelineCache = true;
  /// Where warnings go (a pipeline cache that cannot be read or written);
  /// null: stderr, as "warning: ...".
  std::function<void(const std::string &)> warn;
};

/// How one argument or result of an entry point is bound.
struct TensorBinding {
  /// Set: the dispatches bind this device range (state the caller keeps on
  /// the device; its size is the tensor's). Unset: a streamed tensor of
  /// `bytes` bytes.
  BufferRange device;
  uint64_t bytes = 0;

  static TensorBinding onDevice(BufferRange range) {
    TensorBinding b;
    b.bytes = range.bytes();
    b.device = std::move(range);
    return b;
  }
  static TensorBinding streamed(uint64_t bytes) {
    TensorBinding b;
    b.bytes = bytes;
    return b;
  }
};

/// Device memory in use, by purpose (bytes asked for, before rounding).
struct ExecutorMemory {
  uint64_t arena = 0;      ///< memory_plan.arena_size (allocated once)
  uint64_t parameters = 0; ///< the weight blobs uploaded so far
  uint64_t state = 0;      ///< every stateBuffer()
  uint64_t entries = 0;    ///< streamed arguments and results
  uint64_t staging = 0;    ///< host-visible staging of streamed tensors
  /// Bytes of every device-local VkBuffer, padding and pool slack included.
  uint64_t allocated = 0;
  /// arena + parameters + state + entries.
  uint64_t device() const { return arena + parameters + state + entries; }
};

/// What one dispatch of an entry point runs, for profiles.
struct DispatchInfo {
  /// The artifact's Dispatch.op: the micro-kernel or the outlined kernel's
  /// name ("bitloom_uk_ternary_matmul", "train_step_kernel_12"); may be
  /// empty.
  std::string op;
  /// The kernel's SPIR-V entry point.
  std::string kernel;
  uint32_t groups[3] = {1, 1, 1};
};

/// GPU time of one replay of an entry point, from timestamp queries around
/// every command (VulkanExecutor::runProfiled).
struct EntryProfile {
  /// Per dispatch, in order: from the end of the previous command to the end
  /// of this one (so barrier waits and launch gaps count to the dispatch).
  std::vector<double> dispatchNs;
  /// The streamed arguments' copies up, before the first dispatch, and the
  /// streamed results' copies down, after the last.
  double uploadNs = 0, downloadNs = 0;
  /// The sum of dispatchNs.
  double dispatchTotalNs() const;
};

/// One prepared entry point: its recorded command sequence and the
/// host-visible memory of its streamed tensors.
class ExecutorEntry {
public:
  const std::string &name() const { return name_; }
  size_t numArguments() const { return arguments_.size(); }
  size_t numResults() const { return results_.size(); }
  size_t numDispatches() const { return numDispatches_; }
  /// Host-visible memory of streamed argument `i`: written before run() and
  /// uploaded by it. Null for an argument bound on the device.
  void *input(size_t i) const;
  /// Host-visible memory of streamed result `i`, valid after run(). Null
  /// for a result bound on the device.
  const void *output(size_t i) const;
  /// The device range argument / result `i` is bound to.
  const BufferRange &argument(size_t i) const { return arguments_.at(i).range; }
  const BufferRange &result(size_t i) const { return results_.at(i).range; }
  /// Whether some dispatch may write argument `i` (binding access Write or
  /// ReadWrite): state bound there changes on the device.
  bool writesArgument(size_t i) const { return arguments_.at(i).written; }
  /// Every dispatch, in order.
  const std::vector<DispatchInfo> &dispatches() const { return info_; }

private:
  friend class VulkanExecutor;
  /// A dispatch with its bindings resolved: what recording needs, kept so
  /// that a profiling sequence can be recorded after the plain one.
  struct Resolved {
    Pipeline pipeline;
    std::vector<BufferRange> ranges;
    std::vector<bool> writes; // per range: whether the kernel may write it
    std::vector<uint32_t> constants;
  };
  struct Tensor {
    BufferRange range;
    bool streamed = false;
    bool written = false;
    uint64_t stagingOffset = 0;
  };
  std::string name_;
  size_t index_ = 0; ///< in the artifact's entry points
  std::vector<Tensor> arguments_, results_;
  Buffer staging_;
  CommandSequence sequence_;
  size_t numDispatches_ = 0;
  std::vector<DispatchInfo> info_;
  std::vector<Resolved> resolved_;
  /// The same commands with a timestamp query between each two, recorded
  /// on the first runProfiled: the plain sequence never waits on queries.
  CommandSequence profiled_;
};

class VulkanExecutor {
public:
  /// Opens `artifact` (which must outlive the executor) on device
  /// options.deviceIndex. Throws FormatError when the artifact is not a
  /// Vulkan artifact this runtime can run, VulkanError when the device does
  /// not meet the target's profile ("device 0 (llvmpipe) does not meet
  /// profile nvidia: subgroup size 8 < 32 required") or a pipeline cannot
  /// be built.
  explicit VulkanExecutor(const blm::Artifact &artifact,
                          ExecutorOptions options = ExecutorOptions());
  ~VulkanExecutor();
  VulkanExecutor(const VulkanExecutor &) = delete;
  VulkanExecutor &operator=(const VulkanExecutor &) = delete;

  VulkanContext &context() { return *ctx_; }
  const DeviceInfo &device() const { return ctx_->device(); }
  const DeviceProfile &profile() const { return *profile_; }
  /// The pipeline cache file; empty when there is none.
  const std::string &pipelineCachePath() const { return cachePath_; }
  /// Bytes of pipeline cache data loaded from the file (0: built cold).
  uint64_t pipelineCacheLoadedBytes() const { return cacheLoaded_; }
  size_t numPipelines() const { return pipelines_.size(); }

  /// The device range of state tensor `name`, zero-filled when first asked
  /// for; later calls must give the same size. State is shared by every
  /// entry point (trainables, optimizer moments, gradient accumulators, KV
  /// caches) and never moves to the host unless the caller downloads it.
  BufferRange stateBuffer(const std::string &name, uint64_t bytes);
  /// Null when `name` has no state buffer yet.
  const BufferRange *findState(const std::string &name) const;

  /// Prepares entry point `name` with one binding per argument and result
  /// (in signature order): uploads the weights its dispatches bind, checks
  /// every binding range (FormatError naming the dispatch, its op and the
  /// binding) and records the dispatch list with the streamed tensors'
  /// copies. Once per entry point.
  ExecutorEntry &prepare(const std::string &name,
                         const std::vector<TensorBinding> &arguments,
                         const std::vector<TensorBinding> &results);
  /// Null when `name` is not prepared.
  ExecutorEntry *findEntry(const std::string &name);
  /// Replays `entry`'s recorded sequence (streamed arguments up, every
  /// dispatch, streamed results down) and waits for it.
  void run(ExecutorEntry &entry);

  /// Empty when the device's compute queue writes timestamps; otherwise
  /// why not ("Vulkan device 0 (X): its compute queue (family 2) has no
  /// timestamps (timestampValidBits 0, ...)").
  std::string profilingProblem() const;
  /// Does what run() does, through a second recording of `entry` with a
  /// timestamp query after every command (recorded on first use), and
  /// returns the GPU time of each dispatch. VulkanError with
  /// profilingProblem() when the device cannot time. The queries cost time
  /// of their own: use run() for wall-clock timing.
  EntryProfile runProfiled(ExecutorEntry &entry);

  /// Host transfers and fills of state ranges (batched: one submission per
  /// 64 MiB of staging).
  void upload(const std::vector<HostCopy> &copies) { ctx_->upload(copies); }
  void download(const std::vector<HostCopy> &copies) { ctx_->download(copies); }
  void fill(const std::vector<BufferRange> &ranges, uint32_t value = 0) {
    ctx_->fill(ranges, value);
  }

  ExecutorMemory memory() const { return memory_; }

private:
  struct KernelKey {
    uint32_t executable, kernel;
    bool operator<(const KernelKey &o) const {
      return executable != o.executable ? executable < o.executable
                                        : kernel < o.kernel;
    }
  };
  struct KernelLayout {
    uint32_t numBuffers = 0, pushBytes = 0;
    std::string firstUse; ///< "entry point X, dispatch N", for errors
  };

  void checkTarget();
  void buildPipelines();
  /// Device-local memory for a tensor, carved from a pooled buffer (small
  /// ones) or its own buffer, aligned for storage buffer bindings.
  BufferRange allocateDevice(uint64_t bytes);
  /// Uploads the weights in `indices` not on the device yet, in one batch.
  void uploadParameters(const std::vector<uint32_t> &indices);
  /// Records `entry`'s step: streamed arguments up, its resolved dispatches,
  /// streamed results down; with `timestamps`, a timestamp before the
  /// copies up and after each group of commands (dispatches + 3 in all).
  CommandSequence recordEntry(const ExecutorEntry &entry, bool timestamps);
  void warn(const std::string &message) const;

  const blm::Artifact &artifact_;
  ExecutorOptions options_;
  std::unique_ptr<VulkanContext> ctx_;
  const DeviceProfile *profile_ = nullptr;
  std::string cachePath_;
  uint64_t cacheLoaded_ = 0;
  std::map<KernelKey, KernelLayout> layouts_;
  std::map<KernelKey, Pipeline> pipelines_;
  Buffer arena_;
  std::map<uint32_t, BufferRange> parameters_;
  std::map<std::string, BufferRange> state_;
  std::map<std::string, std::unique_ptr<ExecutorEntry>> entries_;
  /// The pool small tensors are carved from: the current block and how
  /// much of it is used.
  Buffer pool_;
  uint64_t poolUsed_ = 0;
  uint64_t alignment_ = 64;
  ExecutorMemory memory_;
};

} // namespace bitloom::vulkan

#endif // BITLOOM_HAL_VULKAN_VULKANEXECUTOR_H

//===- VulkanContext.h - Vulkan device, buffers and compute -----*- C++ -*-===//
//
// The compute core of the Vulkan backend: a logical device with one compute
// queue on one physical device, device-local buffers filled and read back
// through staging buffers, compute pipelines built from SPIR-V words
// (optionally through a pipeline cache kept in a file), and command
// sequences that are recorded once (dispatches and copies separated by
// barriers) and replayed many times, as the runtime records a whole training
// step once and replays it every step. A dispatch binds buffer ranges
// (buffer, offset, size), checked against the device's storage buffer
// limits, so one arena or weight pool serves many bindings.
//
// Like VulkanDevices.h this header has no Vulkan types: handles stay inside
// the implementation. Every object (Buffer, Pipeline, PipelineCache,
// CommandSequence) keeps the device alive, so they may be destroyed in any
// order relative to their VulkanContext.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_HAL_VULKAN_VULKANCONTEXT_H
#define BITLOOM_HAL_VULKAN_VULKANCONTEXT_H

#include "hal/vulkan/VulkanDevices.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace bitloom::vulkan {

namespace detail {
struct Device;
struct BufferState;
struct PipelineState;
struct PipelineCacheState;
struct SequenceState;
} // namespace detail

/// A VkBuffer bound to its own VkDeviceMemory. Move-only in effect (copies
/// share the same buffer); freed when the last copy goes.
class Buffer {
public:
  Buffer() = default;
  explicit operator bool() const { return state != nullptr; }
  uint64_t size() const;
  /// Host-visible and coherent: mapped for the buffer's whole life.
  bool hostVisible() const;
  /// In a VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT memory type.
  bool deviceLocal() const;
  /// The mapping of a host-visible buffer; null otherwise.
  void *mapped() const;

private:
  friend class VulkanContext;
  friend class CommandSequence;
  std::shared_ptr<detail::BufferState> state;
};

/// `size` bytes of `buffer` from `offset`; kWholeSize: the rest of the
/// buffer. A Buffer converts to its whole range.
struct BufferRange {
  static constexpr uint64_t kWholeSize = ~uint64_t(0);
  Buffer buffer;
  uint64_t offset = 0;
  uint64_t size = kWholeSize;

  BufferRange() = default;
  BufferRange(Buffer buffer) : buffer(std::move(buffer)) {}
  BufferRange(Buffer buffer, uint64_t offset, uint64_t size)
      : buffer(std::move(buffer)), offset(offset), size(size) {}
  explicit operator bool() const { return bool(buffer); }
  /// The size in bytes, kWholeSize resolved (0 when out of range).
  uint64_t bytes() const;
};

/// One transfer between host memory and a device range (upload reads
/// `host`, download writes it; range.bytes() bytes).
struct HostCopy {
  BufferRange range;
  void *host = nullptr;
};

/// A compute pipeline: shader module, a descriptor set layout of
/// `numBuffers` storage buffers at bindings 0..numBuffers-1 and a push
/// constant range of `pushConstantBytes` (at most 128) bytes.
class Pipeline {
public:
  Pipeline() = default;
  explicit operator bool() const { return state != nullptr; }
  uint32_t numBuffers() const;
  uint32_t pushConstantBytes() const;

private:
  friend class VulkanContext;
  friend class CommandSequence;
  std::shared_ptr<detail::PipelineState> state;
};

/// A VkPipelineCache, optionally loaded from and saved to a file. The file
/// is the driver's cache data behind a small header of ours (magic, length,
/// checksum), so a truncated or corrupt file is noticed before the driver
/// sees it; data of another device or driver version is not loaded either.
class PipelineCache {
public:
  PipelineCache() = default;
  explicit operator bool() const { return state != nullptr; }
  /// The file; empty for a cache kept in memory only.
  const std::string &path() const;
  /// Bytes of driver data loaded from the file (0: started empty).
  uint64_t loadedBytes() const;
  /// Why an existing file was not loaded (unreadable, corrupt, made by
  /// another device or driver); empty when it was loaded or did not exist.
  const std::string &loadProblem() const;
  /// The driver's current cache data (vkGetPipelineCacheData).
  std::vector<uint8_t> data() const;
  /// Writes the current data to path() atomically, creating its directory,
  /// unless it equals what was loaded or last saved. Returns an empty string
  /// on success, else why not (a cache that cannot be written is worth a
  /// warning, not an error). Throws only for Vulkan failures.
  std::string save() const;

private:
  friend class VulkanContext;
  std::shared_ptr<detail::PipelineCacheState> state;
};

/// A primary command buffer being recorded (dispatch, copy) or recorded
/// (after finish), replayable any number of times with
/// VulkanContext::submitAndWait. It holds the pipelines and buffers it uses.
class CommandSequence {
public:
  CommandSequence() = default;
  explicit operator bool() const { return state != nullptr; }
  /// Records a dispatch of `pipeline` over `buffers` (binding k gets the
  /// range buffers[k]) with `pushBytes` bytes of push constants. `writes`
  /// says which ranges the kernel may write (empty: all of them). A memory
  /// barrier orders it after the dispatches since the last barrier when it
  /// reads what they write or writes what they touch (RAW, WAR, WAW);
  /// independent dispatches run concurrently. In a sequence with
  /// timestamps, or one recorded with orderEveryDispatch, a barrier
  /// separates every command from the previous one. Each range must lie
  /// inside its buffer, start at a multiple of the device's
  /// minStorageBufferOffsetAlignment and span at most maxStorageBufferRange
  /// bytes (VulkanError naming the binding otherwise).
  void dispatch(const Pipeline &pipeline,
                const std::vector<BufferRange> &buffers,
                const void *pushConstants, size_t pushBytes, uint32_t groupsX,
                uint32_t groupsY = 1, uint32_t groupsZ = 1,
                const std::vector<bool> &writes = {});
  /// Barriers between all commands, dependent or not (for A/B timing).
  void orderEveryDispatch();
  /// Barriers recorded between dispatches so far.
  size_t numDispatchBarriers() const;
  /// Records a copy of `bytes` bytes from `src` at `srcOffset` to `dst` at
  /// `dstOffset` (the runtime's staging in and out of a replayed step),
  /// after a barrier on the previous command.
  void copy(const Buffer &src, uint64_t srcOffset, const Buffer &dst,
            uint64_t dstOffset, uint64_t bytes);
  /// Records a timestamp query at the bottom of the pipe: it is written
  /// once every command recorded before it has completed. The sequence
  /// must come from VulkanContext::record(n) with fewer than n timestamps
  /// recorded so far.
  void timestamp();
  /// Ends the recording; submitAndWait calls it when needed.
  void finish();
  bool finished() const;
  size_t numDispatches() const;
  size_t numTimestamps() const;
  /// The timestamps of the last replay in nanoseconds after the first one
  /// (so element 0 is 0), wrap-around of the device's timestampValidBits
  /// undone and ticks scaled by timestampPeriod. Valid after submitAndWait.
  std::vector<double> timestampsNs() const;

private:
  friend class VulkanContext;
  std::shared_ptr<detail::SequenceState> state;
};

/// Optional device features to enable at device creation: what a device
/// profile's kernels use (int8 / fp16 arithmetic, 8/16-bit storage, integer
/// dot product). The device must offer each one asked for.
struct DeviceFeatures {
  bool shaderFloat64 = false;
  bool shaderInt8 = false;
  bool shaderFloat16 = false;
  bool storageBuffer8BitAccess = false;
  bool storageBuffer16BitAccess = false;
  bool integerDotProduct = false;
  bool cooperativeMatrix = false; ///< VK_KHR_cooperative_matrix
};

/// Whether the context's compute queue can write timestamp queries
/// (timestampValidBits of its queue family > 0) and how to read them.
struct TimestampSupport {
  bool supported = false;
  /// Bits of a timestamp that count (36 to 64 where supported).
  uint32_t validBits = 0;
  /// VkPhysicalDeviceLimits::timestampPeriod: nanoseconds per tick.
  double periodNs = 0;
  /// VkPhysicalDeviceLimits::timestampComputeAndGraphics: every compute and
  /// graphics queue has timestamps.
  bool computeAndGraphics = false;
  /// Why not, in words, when unsupported ("device 0 (X): its compute queue
  /// (family 2) has no timestamps (timestampValidBits 0)").
  std::string problem;
};

class VulkanContext {
public:
  /// A device on physical device `deviceIndex` of `instance` (a new
  /// VulkanInstance when null), with `features` enabled. Throws VulkanError
  /// when the index is out of range, the device has no compute queue or
  /// lacks a feature asked for.
  explicit VulkanContext(uint32_t deviceIndex = 0,
                         std::shared_ptr<VulkanInstance> instance = nullptr,
                         const DeviceFeatures &features = DeviceFeatures());
  ~VulkanContext();
  VulkanContext(const VulkanContext &) = delete;
  VulkanContext &operator=(const VulkanContext &) = delete;

  const DeviceInfo &device() const;

  /// A buffer of `bytes` bytes usable as a storage buffer and as a copy
  /// source and destination: host-visible and coherent when `hostVisible`
  /// (staging), else device-local where the device has such memory. Throws
  /// VulkanOutOfMemory when the memory cannot be had.
  Buffer allocate(uint64_t bytes, bool hostVisible = false);
  /// Copies `bytes` bytes into `dst` at `offset`, through a staging buffer
  /// (of at most 64 MiB, reused chunk by chunk) and one-shot command
  /// buffers unless `dst` is host-visible; waits.
  void upload(const Buffer &dst, const void *data, uint64_t bytes,
              uint64_t offset = 0);
  /// The reverse of upload.
  void download(const Buffer &src, void *data, uint64_t bytes,
                uint64_t offset = 0);
  /// Many uploads through one staging buffer and as few submissions as the
  /// 64 MiB staging chunks allow (e.g. every state tensor of a checkpoint).
  void upload(const std::vector<HostCopy> &copies);
  /// Many downloads, batched the same way.
  void download(const std::vector<HostCopy> &copies);
  /// Fills every range with the 32-bit `value` (vkCmdFillBuffer: offsets
  /// and sizes multiples of 4) in one submission; waits.
  void fill(const std::vector<BufferRange> &ranges, uint32_t value = 0);

  /// A pipeline cache loaded from `path` when that file holds valid data
  /// for this device and driver (else empty, loadProblem() says why); an
  /// in-memory cache when `path` is empty.
  PipelineCache createPipelineCache(const std::string &path = "");
  /// A compute pipeline from SPIR-V words (entry point `entryPoint`),
  /// created through `cache` when one is given.
  Pipeline createPipeline(const std::vector<uint32_t> &spirv,
                          uint32_t numBuffers, uint32_t pushConstantBytes,
                          const std::string &entryPoint = "main",
                          const PipelineCache &cache = PipelineCache());

  /// Timestamp support of the compute queue.
  const TimestampSupport &timestamps() const;

  /// Starts recording a command sequence; with `maxTimestamps` > 0 it owns
  /// a timestamp query pool of that many queries, reset at the start of
  /// every replay (VulkanError with timestamps().problem when the queue has
  /// none). Sequences without one record no query commands at all.
  CommandSequence record(uint32_t maxTimestamps = 0);
  /// Submits `sequence` (finishing it first if needed) to the compute queue
  /// and waits for it.
  void submitAndWait(CommandSequence &sequence);
  /// One dispatch, recorded, submitted and waited for.
  void dispatch(const Pipeline &pipeline,
                const std::vector<BufferRange> &buffers,
                const void *pushConstants, size_t pushBytes, uint32_t groupsX,
                uint32_t groupsY = 1, uint32_t groupsZ = 1);

private:
  std::shared_ptr<detail::Device> dev;
};

/// "2.00 GiB", "512 B": two decimals, for error messages (DeviceProfile.h's
/// formatBytes prints exact sizes).
std::string humanBytes(uint64_t bytes);

} // namespace bitloom::vulkan

#endif // BITLOOM_HAL_VULKAN_VULKANCONTEXT_H

//===- VulkanContext.h - Vulkan device, buffers and compute -----*- C++ -*-===//
//
// The compute core of the Vulkan backend: a logical device with one compute
// queue on one physical device, device-local buffers filled and read back
// through staging buffers, compute pipelines built from SPIR-V words, and
// command sequences that are recorded once (dispatches separated by
// compute-to-compute barriers) and replayed many times, as the runtime
// records a whole training step once and replays it every step.
//
// Like VulkanDevices.h this header has no Vulkan types: handles stay inside
// the implementation. Every object (Buffer, Pipeline, CommandSequence) keeps
// the device alive, so they may be destroyed in any order relative to their
// VulkanContext.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_HAL_VULKAN_VULKANCONTEXT_H
#define BITLOOM_HAL_VULKAN_VULKANCONTEXT_H

#include "hal/vulkan/VulkanDevices.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bitloom::vulkan {

namespace detail {
struct Device;
struct BufferState;
struct PipelineState;
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

/// A primary command buffer being recorded (dispatch) or recorded (after
/// finish), replayable any number of times with
/// VulkanContext::submitAndWait. It holds the pipelines and buffers it uses.
class CommandSequence {
public:
  CommandSequence() = default;
  /// Records a dispatch of `pipeline` over `buffers` (binding k gets
  /// buffers[k]) with `pushBytes` bytes of push constants. A
  /// compute-to-compute memory barrier separates it from the previous one.
  void dispatch(const Pipeline &pipeline, const std::vector<Buffer> &buffers,
                const void *pushConstants, size_t pushBytes, uint32_t groupsX,
                uint32_t groupsY = 1, uint32_t groupsZ = 1);
  /// Ends the recording; submitAndWait calls it when needed.
  void finish();
  bool finished() const;
  size_t numDispatches() const;

private:
  friend class VulkanContext;
  std::shared_ptr<detail::SequenceState> state;
};

class VulkanContext {
public:
  /// A device on physical device `deviceIndex` of `instance` (a new
  /// VulkanInstance when null). Throws VulkanError when the index is out of
  /// range or the device has no compute queue.
  explicit VulkanContext(uint32_t deviceIndex = 0,
                         std::shared_ptr<VulkanInstance> instance = nullptr);
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
  /// and a one-shot command buffer unless `dst` is host-visible; waits.
  void upload(const Buffer &dst, const void *data, uint64_t bytes,
              uint64_t offset = 0);
  /// The reverse of upload.
  void download(const Buffer &src, void *data, uint64_t bytes,
                uint64_t offset = 0);

  /// A compute pipeline from SPIR-V words (entry point `entryPoint`).
  Pipeline createPipeline(const std::vector<uint32_t> &spirv,
                          uint32_t numBuffers, uint32_t pushConstantBytes,
                          const std::string &entryPoint = "main");

  /// Starts recording a command sequence.
  CommandSequence record();
  /// Submits `sequence` (finishing it first if needed) to the compute queue
  /// and waits for it.
  void submitAndWait(CommandSequence &sequence);
  /// One dispatch, recorded, submitted and waited for.
  void dispatch(const Pipeline &pipeline, const std::vector<Buffer> &buffers,
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

//===- VulkanContext.cpp - Vulkan device, buffers and compute -------------===//
#include "hal/vulkan/VulkanContext.h"

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>

namespace bitloom::vulkan {

std::string humanBytes(uint64_t bytes) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024)
    return std::to_string(bytes) + " B";
  double value = double(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 6) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.2f %s", value, units[unit]);
  return text;
}

namespace {

/// Throws for anything but VK_SUCCESS; out-of-memory and device-lost get
/// their own exception types and a plain-words message naming the call.
void check(VkResult result, const char *call, const std::string &detail = "") {
  if (result == VK_SUCCESS)
    return;
  const std::string context = detail.empty() ? "" : " (" + detail + ")";
  switch (result) {
  case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    throw VulkanOutOfMemory(std::string(call) + ": out of device memory" +
                            context);
  case VK_ERROR_OUT_OF_HOST_MEMORY:
    throw VulkanOutOfMemory(std::string(call) + ": out of host memory" +
                            context);
  case VK_ERROR_DEVICE_LOST:
    throw VulkanDeviceLost(std::string(call) + ": device lost" + context);
  default:
    throw VulkanError(std::string(call) + " failed: " + vkResultName(result) +
                      context);
  }
}

// The instance-level and device-level entry points this file uses, loaded
// through the VulkanInstance's vkGetInstanceProcAddr (and vkGetDeviceProcAddr
// for the device ones).
#define BITLOOM_VK_INSTANCE_FNS(X)                                             \
  X(EnumeratePhysicalDevices)                                                  \
  X(GetPhysicalDeviceQueueFamilyProperties)                                    \
  X(GetPhysicalDeviceMemoryProperties)                                         \
  X(GetPhysicalDeviceProperties)                                               \
  X(CreateDevice)                                                              \
  X(GetDeviceProcAddr)

#define BITLOOM_VK_DEVICE_FNS(X)                                               \
  X(DestroyDevice)                                                             \
  X(GetDeviceQueue)                                                            \
  X(DeviceWaitIdle)                                                            \
  X(CreateCommandPool)                                                         \
  X(DestroyCommandPool)                                                        \
  X(AllocateCommandBuffers)                                                    \
  X(FreeCommandBuffers)                                                        \
  X(BeginCommandBuffer)                                                        \
  X(EndCommandBuffer)                                                          \
  X(QueueSubmit)                                                               \
  X(CreateFence)                                                               \
  X(DestroyFence)                                                              \
  X(WaitForFences)                                                             \
  X(ResetFences)                                                               \
  X(CreateBuffer)                                                              \
  X(DestroyBuffer)                                                             \
  X(GetBufferMemoryRequirements)                                               \
  X(AllocateMemory)                                                            \
  X(FreeMemory)                                                                \
  X(BindBufferMemory)                                                          \
  X(MapMemory)                                                                 \
  X(CreateShaderModule)                                                        \
  X(DestroyShaderModule)                                                       \
  X(CreateDescriptorSetLayout)                                                 \
  X(DestroyDescriptorSetLayout)                                                \
  X(CreatePipelineLayout)                                                      \
  X(DestroyPipelineLayout)                                                     \
  X(CreateComputePipelines)                                                    \
  X(DestroyPipeline)                                                           \
  X(CreateDescriptorPool)                                                      \
  X(DestroyDescriptorPool)                                                     \
  X(AllocateDescriptorSets)                                                    \
  X(UpdateDescriptorSets)                                                      \
  X(CmdBindPipeline)                                                           \
  X(CmdBindDescriptorSets)                                                     \
  X(CmdPushConstants)                                                          \
  X(CmdDispatch)                                                               \
  X(CmdPipelineBarrier)                                                        \
  X(CmdCopyBuffer)

struct Fns {
#define BITLOOM_VK_MEMBER(name) PFN_vk##name name = nullptr;
  BITLOOM_VK_INSTANCE_FNS(BITLOOM_VK_MEMBER)
  BITLOOM_VK_DEVICE_FNS(BITLOOM_VK_MEMBER)
#undef BITLOOM_VK_MEMBER
};

/// One execution + memory dependency between the given stages.
void barrier(const Fns &fn, VkCommandBuffer cb, VkPipelineStageFlags srcStage,
             VkAccessFlags srcAccess, VkPipelineStageFlags dstStage,
             VkAccessFlags dstAccess) {
  VkMemoryBarrier mb{};
  mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  mb.srcAccessMask = srcAccess;
  mb.dstAccessMask = dstAccess;
  fn.CmdPipelineBarrier(cb, srcStage, dstStage, 0, 1, &mb, 0, nullptr, 0,
                        nullptr);
}

} // namespace

namespace detail {

struct Device {
  std::shared_ptr<VulkanInstance> instance;
  DeviceInfo info;
  Fns fn;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties memory{};
  uint32_t maxPushConstantsSize = 0;
  VkDevice device = VK_NULL_HANDLE;
  uint32_t queueFamily = 0;
  VkQueue queue = VK_NULL_HANDLE;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;

  ~Device() {
    if (device == VK_NULL_HANDLE)
      return;
    if (!fn.DestroyDevice) // construction failed while loading entry points
      fn.DestroyDevice = reinterpret_cast<PFN_vkDestroyDevice>(
          fn.GetDeviceProcAddr(device, "vkDestroyDevice"));
    if (fn.DeviceWaitIdle)
      fn.DeviceWaitIdle(device); // nothing to do about a failure here
    if (fence != VK_NULL_HANDLE)
      fn.DestroyFence(device, fence, nullptr);
    if (pool != VK_NULL_HANDLE)
      fn.DestroyCommandPool(device, pool, nullptr);
    fn.DestroyDevice(device, nullptr);
  }

  /// Submits `cb` and waits for it on the context's fence.
  void submitAndWait(VkCommandBuffer cb) {
    check(fn.ResetFences(device, 1, &fence), "vkResetFences");
    VkSubmitInfo submit{};
    submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
    submit.commandBufferCount = 1;
    submit.pCommandBuffers = &cb;
    check(fn.QueueSubmit(queue, 1, &submit, fence), "vkQueueSubmit");
    check(fn.WaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX),
          "vkWaitForFences");
  }

  VkCommandBuffer allocateCommandBuffer() {
    VkCommandBufferAllocateInfo info{};
    info.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
    info.commandPool = pool;
    info.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    info.commandBufferCount = 1;
    VkCommandBuffer cb = VK_NULL_HANDLE;
    check(fn.AllocateCommandBuffers(device, &info, &cb),
          "vkAllocateCommandBuffers");
    return cb;
  }

  /// Records with `body` into a fresh command buffer, submits it, waits and
  /// frees it.
  void oneShot(const std::function<void(VkCommandBuffer)> &body) {
    VkCommandBuffer cb = allocateCommandBuffer();
    struct Free {
      Device *d;
      VkCommandBuffer cb;
      ~Free() { d->fn.FreeCommandBuffers(d->device, d->pool, 1, &cb); }
    } guard{this, cb};
    VkCommandBufferBeginInfo begin{};
    begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
    begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    check(fn.BeginCommandBuffer(cb, &begin), "vkBeginCommandBuffer");
    body(cb);
    check(fn.EndCommandBuffer(cb), "vkEndCommandBuffer");
    submitAndWait(cb);
  }
};

struct BufferState {
  std::shared_ptr<Device> dev;
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  uint64_t size = 0;
  bool hostVisible = false, deviceLocal = false;
  void *mapped = nullptr;

  ~BufferState() {
    if (buffer != VK_NULL_HANDLE)
      dev->fn.DestroyBuffer(dev->device, buffer, nullptr);
    if (memory != VK_NULL_HANDLE) // unmaps it too
      dev->fn.FreeMemory(dev->device, memory, nullptr);
  }
};

struct PipelineState {
  std::shared_ptr<Device> dev;
  VkDescriptorSetLayout setLayout = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
  uint32_t numBuffers = 0, pushConstantBytes = 0;

  ~PipelineState() {
    const Fns &fn = dev->fn;
    if (pipeline != VK_NULL_HANDLE)
      fn.DestroyPipeline(dev->device, pipeline, nullptr);
    if (layout != VK_NULL_HANDLE)
      fn.DestroyPipelineLayout(dev->device, layout, nullptr);
    if (setLayout != VK_NULL_HANDLE)
      fn.DestroyDescriptorSetLayout(dev->device, setLayout, nullptr);
  }
};

struct SequenceState {
  std::shared_ptr<Device> dev;
  VkCommandBuffer cb = VK_NULL_HANDLE;
  /// One small pool per dispatch, holding that dispatch's descriptor set.
  std::vector<VkDescriptorPool> pools;
  /// What the recorded commands refer to, kept alive as long as they are.
  std::vector<std::shared_ptr<PipelineState>> pipelines;
  std::vector<std::shared_ptr<BufferState>> buffers;
  size_t dispatches = 0;
  bool finished = false;

  ~SequenceState() {
    for (VkDescriptorPool pool : pools)
      dev->fn.DestroyDescriptorPool(dev->device, pool, nullptr);
    if (cb != VK_NULL_HANDLE)
      dev->fn.FreeCommandBuffers(dev->device, dev->pool, 1, &cb);
  }
};

} // namespace detail

using detail::BufferState;
using detail::Device;
using detail::PipelineState;
using detail::SequenceState;

//===----------------------------------------------------------------------===//
// Buffer, Pipeline
//===----------------------------------------------------------------------===//

uint64_t Buffer::size() const { return state ? state->size : 0; }
bool Buffer::hostVisible() const { return state && state->hostVisible; }
bool Buffer::deviceLocal() const { return state && state->deviceLocal; }
void *Buffer::mapped() const { return state ? state->mapped : nullptr; }

uint32_t Pipeline::numBuffers() const { return state ? state->numBuffers : 0; }
uint32_t Pipeline::pushConstantBytes() const {
  return state ? state->pushConstantBytes : 0;
}

//===----------------------------------------------------------------------===//
// VulkanContext
//===----------------------------------------------------------------------===//

VulkanContext::VulkanContext(uint32_t deviceIndex,
                             std::shared_ptr<VulkanInstance> instance)
    : dev(std::make_shared<Device>()) {
  if (!instance)
    instance = std::make_shared<VulkanInstance>();
  dev->instance = instance;
  auto getInstanceProcAddr = reinterpret_cast<PFN_vkGetInstanceProcAddr>(
      instance->getInstanceProcAddr());
  auto vkInstance = reinterpret_cast<VkInstance>(instance->nativeHandle());
  Fns &fn = dev->fn;
#define BITLOOM_VK_LOAD(name)                                                  \
  fn.name = reinterpret_cast<PFN_vk##name>(                                    \
      getInstanceProcAddr(vkInstance, "vk" #name));                            \
  if (!fn.name)                                                                \
    throw VulkanError("the Vulkan loader has no vk" #name);
  BITLOOM_VK_INSTANCE_FNS(BITLOOM_VK_LOAD)
#undef BITLOOM_VK_LOAD

  uint32_t count = 0;
  check(fn.EnumeratePhysicalDevices(vkInstance, &count, nullptr),
        "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> physicals(count);
  VkResult listed =
      fn.EnumeratePhysicalDevices(vkInstance, &count, physicals.data());
  if (listed != VK_INCOMPLETE)
    check(listed, "vkEnumeratePhysicalDevices");
  physicals.resize(count);
  if (deviceIndex >= count)
    throw VulkanError("no Vulkan device " + std::to_string(deviceIndex) +
                      " (there " + (count == 1 ? "is " : "are ") +
                      std::to_string(count) + ")");
  dev->physical = physicals[deviceIndex];
  dev->info = instance->devices().at(deviceIndex);
  fn.GetPhysicalDeviceMemoryProperties(dev->physical, &dev->memory);
  VkPhysicalDeviceProperties props{};
  fn.GetPhysicalDeviceProperties(dev->physical, &props);
  dev->maxPushConstantsSize = props.limits.maxPushConstantsSize;

  // A compute queue: a compute-only family when there is one (often an
  // async-compute engine), else any family with compute.
  uint32_t familyCount = 0;
  fn.GetPhysicalDeviceQueueFamilyProperties(dev->physical, &familyCount,
                                            nullptr);
  std::vector<VkQueueFamilyProperties> families(familyCount);
  fn.GetPhysicalDeviceQueueFamilyProperties(dev->physical, &familyCount,
                                            families.data());
  int64_t chosen = -1;
  for (uint32_t f = 0; f < familyCount; ++f) {
    VkQueueFlags flags = families[f].queueFlags;
    if (!(flags & VK_QUEUE_COMPUTE_BIT) || families[f].queueCount == 0)
      continue;
    if (chosen < 0 || !(flags & VK_QUEUE_GRAPHICS_BIT))
      chosen = f;
    if (!(flags & VK_QUEUE_GRAPHICS_BIT))
      break;
  }
  if (chosen < 0)
    throw VulkanError("Vulkan device " + std::to_string(deviceIndex) + " (" +
                      dev->info.name + ") has no compute queue");
  dev->queueFamily = uint32_t(chosen);

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queueInfo{};
  queueInfo.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  queueInfo.queueFamilyIndex = dev->queueFamily;
  queueInfo.queueCount = 1;
  queueInfo.pQueuePriorities = &priority;
  VkDeviceCreateInfo deviceInfo{};
  deviceInfo.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  deviceInfo.queueCreateInfoCount = 1;
  deviceInfo.pQueueCreateInfos = &queueInfo;
  check(fn.CreateDevice(dev->physical, &deviceInfo, nullptr, &dev->device),
        "vkCreateDevice", dev->info.name);

#define BITLOOM_VK_LOAD(name)                                                  \
  fn.name = reinterpret_cast<PFN_vk##name>(                                    \
      fn.GetDeviceProcAddr(dev->device, "vk" #name));                          \
  if (!fn.name)                                                                \
    throw VulkanError("the Vulkan device has no vk" #name);
  BITLOOM_VK_DEVICE_FNS(BITLOOM_VK_LOAD)
#undef BITLOOM_VK_LOAD

  fn.GetDeviceQueue(dev->device, dev->queueFamily, 0, &dev->queue);
  VkCommandPoolCreateInfo poolInfo{};
  poolInfo.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  poolInfo.queueFamilyIndex = dev->queueFamily;
  check(fn.CreateCommandPool(dev->device, &poolInfo, nullptr, &dev->pool),
        "vkCreateCommandPool");
  VkFenceCreateInfo fenceInfo{};
  fenceInfo.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  check(fn.CreateFence(dev->device, &fenceInfo, nullptr, &dev->fence),
        "vkCreateFence");
}

VulkanContext::~VulkanContext() = default;

const DeviceInfo &VulkanContext::device() const { return dev->info; }

Buffer VulkanContext::allocate(uint64_t bytes, bool hostVisible) {
  if (bytes == 0)
    throw VulkanError("allocate: a buffer needs at least one byte");
  const Fns &fn = dev->fn;
  auto state = std::make_shared<BufferState>();
  state->dev = dev;
  state->size = bytes;
  const std::string requested = "requested " + humanBytes(bytes);

  VkBufferCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  info.size = bytes;
  info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
               VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
               VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(fn.CreateBuffer(dev->device, &info, nullptr, &state->buffer),
        "vkCreateBuffer", requested);
  VkMemoryRequirements req{};
  fn.GetBufferMemoryRequirements(dev->device, state->buffer, &req);

  // Staging: host-visible and coherent. Otherwise device-local where the
  // device has it, else whatever the buffer can live in.
  const VkMemoryPropertyFlags wanted =
      hostVisible ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                        VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                  : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
  const VkPhysicalDeviceMemoryProperties &mem = dev->memory;
  int64_t type = -1;
  for (uint32_t t = 0; t < mem.memoryTypeCount && type < 0; ++t)
    if ((req.memoryTypeBits & (1u << t)) &&
        (mem.memoryTypes[t].propertyFlags & wanted) == wanted)
      type = t;
  if (type < 0 && !hostVisible)
    for (uint32_t t = 0; t < mem.memoryTypeCount && type < 0; ++t)
      if (req.memoryTypeBits & (1u << t))
        type = t;
  if (type < 0)
    throw VulkanError("vkAllocateMemory: no host-visible coherent memory "
                      "type for a buffer (" +
                      requested + ")");
  const VkMemoryType &memType = mem.memoryTypes[type];
  const VkMemoryHeap &heap = mem.memoryHeaps[memType.heapIndex];
  state->deviceLocal =
      (memType.propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) != 0;
  state->hostVisible = hostVisible;
  const char *kind = state->deviceLocal ? "device" : "host";
  // Drivers differ on requests larger than the heap (some even try); name
  // them here, before asking.
  if (req.size > heap.size) {
    std::string sizes = requested + "; the heap has " + humanBytes(heap.size);
    if (humanBytes(req.size) == humanBytes(heap.size))
      sizes = "requested " + std::to_string(req.size) +
              " bytes; the heap has " + std::to_string(heap.size) + " bytes";
    throw VulkanOutOfMemory(std::string("vkAllocateMemory: out of ") + kind +
                            " memory (" + sizes + ")");
  }

  VkMemoryAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  alloc.allocationSize = req.size;
  alloc.memoryTypeIndex = uint32_t(type);
  check(fn.AllocateMemory(dev->device, &alloc, nullptr, &state->memory),
        "vkAllocateMemory", requested);
  check(fn.BindBufferMemory(dev->device, state->buffer, state->memory, 0),
        "vkBindBufferMemory");
  if (hostVisible)
    check(fn.MapMemory(dev->device, state->memory, 0, VK_WHOLE_SIZE, 0,
                       &state->mapped),
          "vkMapMemory", requested);
  Buffer out;
  out.state = std::move(state);
  return out;
}

namespace {
void checkRange(const Buffer &buffer, uint64_t bytes, uint64_t offset,
                const char *what) {
  if (!buffer)
    throw VulkanError(std::string(what) + ": null buffer");
  if (offset > buffer.size() || bytes > buffer.size() - offset)
    throw VulkanError(std::string(what) + ": " + std::to_string(bytes) +
                      " bytes at offset " + std::to_string(offset) +
                      " do not fit a buffer of " +
                      std::to_string(buffer.size()) + " bytes");
}
} // namespace

void VulkanContext::upload(const Buffer &dst, const void *data, uint64_t bytes,
                           uint64_t offset) {
  checkRange(dst, bytes, offset, "upload");
  if (bytes == 0)
    return;
  if (dst.hostVisible()) {
    std::memcpy(static_cast<char *>(dst.mapped()) + offset, data, bytes);
    return;
  }
  Buffer staging = allocate(bytes, /*hostVisible=*/true);
  std::memcpy(staging.mapped(), data, bytes);
  const Fns &fn = dev->fn;
  dev->oneShot([&](VkCommandBuffer cb) {
    // Earlier dispatches may still read or write the destination.
    barrier(fn, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
    VkBufferCopy region{0, offset, bytes};
    fn.CmdCopyBuffer(cb, staging.state->buffer, dst.state->buffer, 1, &region);
    barrier(fn, cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
  });
}

void VulkanContext::download(const Buffer &src, void *data, uint64_t bytes,
                             uint64_t offset) {
  checkRange(src, bytes, offset, "download");
  if (bytes == 0)
    return;
  if (src.hostVisible()) {
    std::memcpy(data, static_cast<const char *>(src.mapped()) + offset, bytes);
    return;
  }
  Buffer staging = allocate(bytes, /*hostVisible=*/true);
  const Fns &fn = dev->fn;
  dev->oneShot([&](VkCommandBuffer cb) {
    barrier(fn, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_READ_BIT);
    VkBufferCopy region{offset, 0, bytes};
    fn.CmdCopyBuffer(cb, src.state->buffer, staging.state->buffer, 1, &region);
    barrier(fn, cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_HOST_READ_BIT);
  });
  std::memcpy(data, staging.mapped(), bytes);
}

Pipeline VulkanContext::createPipeline(const std::vector<uint32_t> &spirv,
                                       uint32_t numBuffers,
                                       uint32_t pushConstantBytes,
                                       const std::string &entryPoint) {
  if (spirv.empty() || spirv[0] != 0x07230203u)
    throw VulkanError("createPipeline: not SPIR-V (no magic number)");
  const uint32_t pushLimit = std::min<uint32_t>(128, dev->maxPushConstantsSize);
  if (pushConstantBytes > pushLimit || pushConstantBytes % 4 != 0)
    throw VulkanError("createPipeline: " + std::to_string(pushConstantBytes) +
                      " bytes of push constants (a multiple of 4, at most " +
                      std::to_string(pushLimit) + ")");
  const Fns &fn = dev->fn;
  auto state = std::make_shared<PipelineState>();
  state->dev = dev;
  state->numBuffers = numBuffers;
  state->pushConstantBytes = pushConstantBytes;

  std::vector<VkDescriptorSetLayoutBinding> bindings(numBuffers);
  for (uint32_t b = 0; b < numBuffers; ++b) {
    bindings[b].binding = b;
    bindings[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    bindings[b].descriptorCount = 1;
    bindings[b].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo setInfo{};
  setInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
  setInfo.bindingCount = numBuffers;
  setInfo.pBindings = bindings.data();
  check(fn.CreateDescriptorSetLayout(dev->device, &setInfo, nullptr,
                                     &state->setLayout),
        "vkCreateDescriptorSetLayout");

  VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, pushConstantBytes};
  VkPipelineLayoutCreateInfo layoutInfo{};
  layoutInfo.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
  layoutInfo.setLayoutCount = 1;
  layoutInfo.pSetLayouts = &state->setLayout;
  layoutInfo.pushConstantRangeCount = pushConstantBytes ? 1 : 0;
  layoutInfo.pPushConstantRanges = &range;
  check(fn.CreatePipelineLayout(dev->device, &layoutInfo, nullptr,
                                &state->layout),
        "vkCreatePipelineLayout");

  VkShaderModuleCreateInfo moduleInfo{};
  moduleInfo.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  moduleInfo.codeSize = spirv.size() * sizeof(uint32_t);
  moduleInfo.pCode = spirv.data();
  VkShaderModule module = VK_NULL_HANDLE;
  check(fn.CreateShaderModule(dev->device, &moduleInfo, nullptr, &module),
        "vkCreateShaderModule");
  struct DestroyModule {
    Device *d;
    VkShaderModule m;
    ~DestroyModule() { d->fn.DestroyShaderModule(d->device, m, nullptr); }
  } moduleGuard{dev.get(), module};

  VkComputePipelineCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
  info.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  info.stage.module = module;
  info.stage.pName = entryPoint.c_str();
  info.layout = state->layout;
  check(fn.CreateComputePipelines(dev->device, VK_NULL_HANDLE, 1, &info,
                                  nullptr, &state->pipeline),
        "vkCreateComputePipelines");
  Pipeline out;
  out.state = std::move(state);
  return out;
}

CommandSequence VulkanContext::record() {
  auto state = std::make_shared<SequenceState>();
  state->dev = dev;
  state->cb = dev->allocateCommandBuffer();
  VkCommandBufferBeginInfo begin{};
  begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  // Neither one-time (it is replayed) nor simultaneous (each replay waits).
  check(dev->fn.BeginCommandBuffer(state->cb, &begin), "vkBeginCommandBuffer");
  // Order this replay after what came before on the queue: uploads, and the
  // previous replay of this same sequence.
  barrier(dev->fn, state->cb,
          VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
          VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT,
          VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
          VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
  CommandSequence out;
  out.state = std::move(state);
  return out;
}

void VulkanContext::submitAndWait(CommandSequence &sequence) {
  if (!sequence.state)
    throw VulkanError("submitAndWait: empty command sequence");
  if (sequence.state->dev != dev)
    throw VulkanError("submitAndWait: the sequence belongs to another context");
  sequence.finish();
  dev->submitAndWait(sequence.state->cb);
}

void VulkanContext::dispatch(const Pipeline &pipeline,
                             const std::vector<Buffer> &buffers,
                             const void *pushConstants, size_t pushBytes,
                             uint32_t groupsX, uint32_t groupsY,
                             uint32_t groupsZ) {
  CommandSequence sequence = record();
  sequence.dispatch(pipeline, buffers, pushConstants, pushBytes, groupsX,
                    groupsY, groupsZ);
  submitAndWait(sequence);
}

//===----------------------------------------------------------------------===//
// CommandSequence
//===----------------------------------------------------------------------===//

void CommandSequence::dispatch(const Pipeline &pipeline,
                               const std::vector<Buffer> &buffers,
                               const void *pushConstants, size_t pushBytes,
                               uint32_t groupsX, uint32_t groupsY,
                               uint32_t groupsZ) {
  if (!state)
    throw VulkanError("dispatch: the sequence was not made by record()");
  if (state->finished)
    throw VulkanError("dispatch: the sequence is finished");
  if (!pipeline)
    throw VulkanError("dispatch: null pipeline");
  PipelineState &p = *pipeline.state;
  if (p.dev != state->dev)
    throw VulkanError("dispatch: the pipeline belongs to another context");
  if (buffers.size() != p.numBuffers)
    throw VulkanError("dispatch: the pipeline takes " +
                      std::to_string(p.numBuffers) + " buffers, not " +
                      std::to_string(buffers.size()));
  if (pushBytes != p.pushConstantBytes || (pushBytes && !pushConstants))
    throw VulkanError(
        "dispatch: the pipeline takes " + std::to_string(p.pushConstantBytes) +
        " bytes of push constants, not " + std::to_string(pushBytes));
  for (const Buffer &b : buffers)
    if (!b || b.state->dev != state->dev)
      throw VulkanError("dispatch: a null buffer or one of another context");

  Device &dev = *state->dev;
  const Fns &fn = dev.fn;
  VkCommandBuffer cb = state->cb;
  if (state->dispatches > 0)
    barrier(fn, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);

  fn.CmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
  if (p.numBuffers > 0) {
    VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, p.numBuffers};
    VkDescriptorPoolCreateInfo poolInfo{};
    poolInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
    poolInfo.maxSets = 1;
    poolInfo.poolSizeCount = 1;
    poolInfo.pPoolSizes = &size;
    VkDescriptorPool pool = VK_NULL_HANDLE;
    check(fn.CreateDescriptorPool(dev.device, &poolInfo, nullptr, &pool),
          "vkCreateDescriptorPool");
    state->pools.push_back(pool);
    VkDescriptorSetAllocateInfo setInfo{};
    setInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
    setInfo.descriptorPool = pool;
    setInfo.descriptorSetCount = 1;
    setInfo.pSetLayouts = &p.setLayout;
    VkDescriptorSet set = VK_NULL_HANDLE;
    check(fn.AllocateDescriptorSets(dev.device, &setInfo, &set),
          "vkAllocateDescriptorSets");
    std::vector<VkDescriptorBufferInfo> infos(p.numBuffers);
    std::vector<VkWriteDescriptorSet> writes(p.numBuffers);
    for (uint32_t b = 0; b < p.numBuffers; ++b) {
      infos[b] = {buffers[b].state->buffer, 0, VK_WHOLE_SIZE};
      writes[b].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
      writes[b].dstSet = set;
      writes[b].dstBinding = b;
      writes[b].descriptorCount = 1;
      writes[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[b].pBufferInfo = &infos[b];
    }
    fn.UpdateDescriptorSets(dev.device, p.numBuffers, writes.data(), 0,
                            nullptr);
    fn.CmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, 1,
                             &set, 0, nullptr);
  }
  if (pushBytes > 0)
    fn.CmdPushConstants(cb, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                        uint32_t(pushBytes), pushConstants);
  fn.CmdDispatch(cb, groupsX, groupsY, groupsZ);

  state->pipelines.push_back(pipeline.state);
  for (const Buffer &b : buffers)
    state->buffers.push_back(b.state);
  ++state->dispatches;
}

void CommandSequence::finish() {
  if (!state)
    throw VulkanError("finish: the sequence was not made by record()");
  if (state->finished)
    return;
  const Fns &fn = state->dev->fn;
  // Make the last dispatches' writes visible to copies (download) and to
  // the host (host-visible buffers) after the wait.
  barrier(fn, state->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
          VK_ACCESS_SHADER_WRITE_BIT,
          VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_HOST_BIT,
          VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_HOST_READ_BIT);
  check(fn.EndCommandBuffer(state->cb), "vkEndCommandBuffer");
  state->finished = true;
}

bool CommandSequence::finished() const { return state && state->finished; }

size_t CommandSequence::numDispatches() const {
  return state ? state->dispatches : 0;
}

} // namespace bitloom::vulkan

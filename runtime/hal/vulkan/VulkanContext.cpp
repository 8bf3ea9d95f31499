//===- VulkanContext.cpp - Vulkan device, buffers and compute -------------===//
#include "hal/vulkan/VulkanContext.h"
#include "hal/vulkan/CooperativeMatrix.h"

#include "formats/Error.h"
#include "formats/MappedFile.h"

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

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
  X(CmdCopyBuffer)                                                             \
  X(CmdFillBuffer)                                                             \
  X(CreatePipelineCache)                                                       \
  X(DestroyPipelineCache)                                                      \
  X(GetPipelineCacheData)                                                      \
  X(CreateQueryPool)                                                           \
  X(DestroyQueryPool)                                                          \
  X(CmdResetQueryPool)                                                         \
  X(CmdWriteTimestamp)                                                         \
  X(GetQueryPoolResults)

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

// Everything a recorded step does to buffers: dispatches and the copies
// that stage its inputs and outputs.
constexpr VkPipelineStageFlags kAnyStage =
    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
constexpr VkAccessFlags kAnyWrite =
    VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
constexpr VkAccessFlags kAnyAccess =
    VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
    VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;

/// Host transfers go through staging buffers of at most this many bytes, so
/// a multi-GB weight never needs a second multi-GB buffer.
constexpr uint64_t kStagingChunk = uint64_t(64) << 20;

/// FNV-1a, the checksum of pipeline cache files (small, and only a guard
/// against truncation and corruption).
uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

void putU32(std::vector<uint8_t> &out, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out.push_back(uint8_t(v >> (8 * i)));
}
void putU64(std::vector<uint8_t> &out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(uint8_t(v >> (8 * i)));
}
uint32_t getU32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}
uint64_t getU64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

/// Our pipeline cache file: "BLPC", version, payload length and checksum,
/// then the driver's data.
constexpr char kCacheMagic[4] = {'B', 'L', 'P', 'C'};
constexpr uint32_t kCacheVersion = 1;
constexpr size_t kCacheHeaderBytes = 24;

} // namespace

namespace detail {

struct Device {
  std::shared_ptr<VulkanInstance> instance;
  DeviceInfo info;
  Fns fn;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties memory{};
  VkPhysicalDeviceProperties properties{};
  uint32_t maxPushConstantsSize = 0;
  VkDevice device = VK_NULL_HANDLE;
  uint32_t queueFamily = 0;
  TimestampSupport timestamps;
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

struct PipelineCacheState {
  std::shared_ptr<Device> dev;
  VkPipelineCache cache = VK_NULL_HANDLE;
  std::string path, loadProblem;
  uint64_t loadedBytes = 0;
  /// The driver data last loaded or saved: save() skips rewriting it.
  std::vector<uint8_t> onDisk;

  ~PipelineCacheState() {
    if (cache != VK_NULL_HANDLE)
      dev->fn.DestroyPipelineCache(dev->device, cache, nullptr);
  }
};

struct SequenceState {
  enum class Op { None, Dispatch, Copy };
  std::shared_ptr<Device> dev;
  VkCommandBuffer cb = VK_NULL_HANDLE;
  /// Descriptor pools, each holding the sets of many dispatches; the last
  /// one has `setsLeft` sets and `descriptorsLeft` descriptors left.
  std::vector<VkDescriptorPool> pools;
  uint32_t setsLeft = 0, descriptorsLeft = 0;
  /// What the recorded commands refer to, kept alive as long as they are.
  std::vector<std::shared_ptr<PipelineState>> pipelines;
  std::vector<std::shared_ptr<BufferState>> buffers;
  size_t dispatches = 0, dispatchBarriers = 0;
  Op last = Op::None;
  /// Byte ranges the dispatches since the last barrier read or wrote.
  struct Touched {
    VkBuffer buffer;
    uint64_t begin, end;
    bool write;
  };
  std::vector<Touched> pending;
  bool orderAll = false;
  bool finished = false;
  /// Timestamp queries (profiling sequences only): the pool, its size and
  /// how many are recorded.
  VkQueryPool queries = VK_NULL_HANDLE;
  uint32_t maxTimestamps = 0, timestamps = 0;

  /// Orders the command about to be recorded after the previous ones: a
  /// dispatch after dispatches only where `touched` (its ranges) conflicts
  /// with theirs; anything else after a full barrier.
  void barrierBefore(Op next, const std::vector<Touched> &touched = {}) {
    if (last == Op::Dispatch && next == Op::Dispatch) {
      auto conflicts = [&] {
        for (const Touched &t : touched)
          for (const Touched &p : pending)
            if (t.buffer == p.buffer && t.begin < p.end && p.begin < t.end &&
                (t.write || p.write))
              return true;
        return false;
      };
      if (orderAll || queries != VK_NULL_HANDLE || conflicts()) {
        barrier(dev->fn, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        ++dispatchBarriers;
        pending.clear();
      }
    } else {
      if (last != Op::None)
        barrier(dev->fn, cb, kAnyStage, kAnyWrite, kAnyStage, kAnyAccess);
      pending.clear();
    }
    if (next == Op::Dispatch)
      pending.insert(pending.end(), touched.begin(), touched.end());
    last = next;
  }

  ~SequenceState() {
    if (queries != VK_NULL_HANDLE)
      dev->fn.DestroyQueryPool(dev->device, queries, nullptr);
    for (VkDescriptorPool pool : pools)
      dev->fn.DestroyDescriptorPool(dev->device, pool, nullptr);
    if (cb != VK_NULL_HANDLE)
      dev->fn.FreeCommandBuffers(dev->device, dev->pool, 1, &cb);
  }
};

} // namespace detail

using detail::BufferState;
using detail::Device;
using detail::PipelineCacheState;
using detail::PipelineState;
using detail::SequenceState;

//===----------------------------------------------------------------------===//
// Buffer, Pipeline
//===----------------------------------------------------------------------===//

uint64_t Buffer::size() const { return state ? state->size : 0; }
bool Buffer::hostVisible() const { return state && state->hostVisible; }
bool Buffer::deviceLocal() const { return state && state->deviceLocal; }
void *Buffer::mapped() const { return state ? state->mapped : nullptr; }

uint64_t BufferRange::bytes() const {
  const uint64_t whole = buffer.size();
  if (size != kWholeSize)
    return size;
  return offset <= whole ? whole - offset : 0;
}

uint32_t Pipeline::numBuffers() const { return state ? state->numBuffers : 0; }
uint32_t Pipeline::pushConstantBytes() const {
  return state ? state->pushConstantBytes : 0;
}

//===----------------------------------------------------------------------===//
// VulkanContext
//===----------------------------------------------------------------------===//

VulkanContext::VulkanContext(uint32_t deviceIndex,
                             std::shared_ptr<VulkanInstance> instance,
                             const DeviceFeatures &features)
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
  fn.GetPhysicalDeviceProperties(dev->physical, &dev->properties);
  dev->maxPushConstantsSize = dev->properties.limits.maxPushConstantsSize;

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
  {
    // Timestamps: the queue family says whether its queues write them
    // (timestampComputeAndGraphics only promises it for all at once).
    TimestampSupport &ts = dev->timestamps;
    const VkPhysicalDeviceLimits &limits = dev->properties.limits;
    ts.validBits = families[dev->queueFamily].timestampValidBits;
    ts.periodNs = limits.timestampPeriod;
    ts.computeAndGraphics = limits.timestampComputeAndGraphics == VK_TRUE;
    ts.supported = ts.validBits > 0 && ts.periodNs > 0;
    if (!ts.supported)
      ts.problem =
          "Vulkan device " + std::to_string(deviceIndex) + " (" +
          dev->info.name + "): its compute queue (family " +
          std::to_string(dev->queueFamily) + ") has no timestamps (" +
          (ts.validBits == 0
               ? "timestampValidBits 0, "
                 "timestampComputeAndGraphics " +
                     std::string(ts.computeAndGraphics ? "true" : "false")
               : "timestampPeriod 0") +
          ")";
  }

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

  // Optional features: refused up front when the device lacks one (the
  // driver would fail with VK_ERROR_FEATURE_NOT_PRESENT, naming nothing).
  const DeviceInfo &info = dev->info;
  std::string lacking;
  auto need = [&](bool wanted, bool offered, const char *name) {
    if (wanted && !offered)
      lacking += std::string(lacking.empty() ? "" : ", ") + name;
  };
  need(features.shaderFloat64, info.shaderFloat64, "shaderFloat64");
  need(features.shaderInt8, info.shaderInt8, "shaderInt8");
  need(features.shaderFloat16, info.shaderFloat16, "shaderFloat16");
  need(features.storageBuffer8BitAccess, info.storageBuffer8BitAccess,
       "storageBuffer8BitAccess");
  need(features.storageBuffer16BitAccess, info.storageBuffer16BitAccess,
       "storageBuffer16BitAccess");
  need(features.integerDotProduct, info.integerDotProduct,
       "shaderIntegerDotProduct");
  need(features.cooperativeMatrix,
       info.cooperativeMatrixInt8 || info.cooperativeMatrixF16,
       "VK_KHR_cooperative_matrix");
  if (!lacking.empty())
    throw VulkanError("Vulkan device " + std::to_string(deviceIndex) + " (" +
                      info.name + ") lacks " + lacking);
  // Features promoted to core need their extension below the core version.
  const uint32_t version = std::min(instance->apiVersion(), info.apiVersion);
  std::vector<const char *> extensions;
  void *chain = nullptr;
  VkPhysicalDevice16BitStorageFeatures storage16{};
  storage16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
  VkPhysicalDevice8BitStorageFeatures storage8{};
  storage8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES;
  VkPhysicalDeviceShaderFloat16Int8Features float16Int8{};
  float16Int8.sType =
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  VkPhysicalDeviceShaderIntegerDotProductFeatures dot{};
  dot.sType =
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES;
  if (features.storageBuffer16BitAccess) {
    storage16.storageBuffer16BitAccess = VK_TRUE;
    storage16.pNext = chain;
    chain = &storage16;
  }
  if (features.storageBuffer8BitAccess) {
    storage8.storageBuffer8BitAccess = VK_TRUE;
    storage8.pNext = chain;
    chain = &storage8;
    if (version < VK_API_VERSION_1_2)
      extensions.push_back(VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
  }
  if (features.shaderInt8 || features.shaderFloat16) {
    float16Int8.shaderInt8 = features.shaderInt8;
    float16Int8.shaderFloat16 = features.shaderFloat16;
    float16Int8.pNext = chain;
    chain = &float16Int8;
    if (version < VK_API_VERSION_1_2)
      extensions.push_back(VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  }
  if (features.integerDotProduct) {
    dot.shaderIntegerDotProduct = VK_TRUE;
    dot.pNext = chain;
    chain = &dot;
    if (version < VK_API_VERSION_1_3)
      extensions.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  }
  VkPhysicalDeviceCooperativeMatrixFeaturesKHR cooperative{};
  cooperative.sType =
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR;
  if (features.cooperativeMatrix) {
    cooperative.cooperativeMatrix = VK_TRUE;
    cooperative.pNext = chain;
    chain = &cooperative;
    extensions.push_back(VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME);
  }
  VkPhysicalDeviceFeatures core{};
  core.shaderFloat64 = features.shaderFloat64;
  deviceInfo.pEnabledFeatures = &core;
  deviceInfo.pNext = chain;
  deviceInfo.enabledExtensionCount = uint32_t(extensions.size());
  deviceInfo.ppEnabledExtensionNames = extensions.data();
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

/// A piece of one HostCopy that fits a staging chunk.
struct Piece {
  const HostCopy *copy;
  uint64_t within; // offset inside the copy's range
  uint64_t bytes;
};

} // namespace

/// Uploads (`toDevice`) or downloads every copy: host-visible ranges
/// directly, the others through one reused staging buffer, one submission
/// per chunk of at most kStagingChunk bytes.
static void transfer(Device &dev, const std::vector<HostCopy> &copies,
                     bool toDevice,
                     const std::function<Buffer(uint64_t)> &allocateStaging,
                     const std::function<VkBuffer(const Buffer &)> &handle) {
  const char *what = toDevice ? "upload" : "download";
  std::vector<Piece> pieces;
  uint64_t total = 0;
  for (const HostCopy &c : copies) {
    const BufferRange &r = c.range;
    const uint64_t bytes = r.bytes();
    checkRange(r.buffer, bytes, r.offset, what);
    if (bytes == 0)
      continue;
    if (!c.host)
      throw VulkanError(std::string(what) + ": null host pointer");
    if (r.buffer.hostVisible()) {
      char *mapped = static_cast<char *>(r.buffer.mapped()) + r.offset;
      if (toDevice)
        std::memcpy(mapped, c.host, bytes);
      else
        std::memcpy(c.host, mapped, bytes);
      continue;
    }
    for (uint64_t at = 0; at < bytes; at += kStagingChunk)
      pieces.push_back({&c, at, std::min(kStagingChunk, bytes - at)});
    total += bytes;
  }
  if (pieces.empty())
    return;
  Buffer staging = allocateStaging(std::min(total, kStagingChunk));
  const Fns &fn = dev.fn;
  char *mapped = static_cast<char *>(staging.mapped());
  size_t next = 0;
  while (next < pieces.size()) {
    // Gather the pieces of this chunk.
    size_t end = next;
    uint64_t used = 0;
    while (end < pieces.size() && used + pieces[end].bytes <= staging.size())
      used += pieces[end++].bytes;
    uint64_t at = 0;
    if (toDevice)
      for (size_t i = next; i < end; ++i) {
        const Piece &p = pieces[i];
        std::memcpy(mapped + at,
                    static_cast<const char *>(p.copy->host) + p.within,
                    p.bytes);
        at += p.bytes;
      }
    dev.oneShot([&](VkCommandBuffer cb) {
      // Earlier work may still read or write these ranges.
      barrier(fn, cb, kAnyStage, kAnyWrite, VK_PIPELINE_STAGE_TRANSFER_BIT,
              VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
      uint64_t offset = 0;
      for (size_t i = next; i < end; ++i) {
        const Piece &p = pieces[i];
        const uint64_t deviceOffset = p.copy->range.offset + p.within;
        VkBufferCopy region = toDevice
                                  ? VkBufferCopy{offset, deviceOffset, p.bytes}
                                  : VkBufferCopy{deviceOffset, offset, p.bytes};
        VkBuffer device = handle(p.copy->range.buffer);
        VkBuffer host = handle(staging);
        fn.CmdCopyBuffer(cb, toDevice ? host : device, toDevice ? device : host,
                         1, &region);
        offset += p.bytes;
      }
      if (toDevice)
        barrier(fn, cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                VK_ACCESS_TRANSFER_WRITE_BIT, kAnyStage, kAnyAccess);
      else
        barrier(fn, cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                VK_ACCESS_HOST_READ_BIT);
    });
    if (!toDevice)
      for (size_t i = next; i < end; ++i) {
        const Piece &p = pieces[i];
        std::memcpy(static_cast<char *>(p.copy->host) + p.within, mapped + at,
                    p.bytes);
        at += p.bytes;
      }
    next = end;
  }
}

void VulkanContext::upload(const std::vector<HostCopy> &copies) {
  for (const HostCopy &c : copies)
    if (c.range.buffer && c.range.buffer.state->dev != dev)
      throw VulkanError("upload: a buffer of another context");
  transfer(
      *dev, copies, /*toDevice=*/true,
      [&](uint64_t bytes) { return allocate(bytes, /*hostVisible=*/true); },
      [](const Buffer &b) { return b.state->buffer; });
}

void VulkanContext::download(const std::vector<HostCopy> &copies) {
  for (const HostCopy &c : copies)
    if (c.range.buffer && c.range.buffer.state->dev != dev)
      throw VulkanError("download: a buffer of another context");
  transfer(
      *dev, copies, /*toDevice=*/false,
      [&](uint64_t bytes) { return allocate(bytes, /*hostVisible=*/true); },
      [](const Buffer &b) { return b.state->buffer; });
}

void VulkanContext::upload(const Buffer &dst, const void *data, uint64_t bytes,
                           uint64_t offset) {
  checkRange(dst, bytes, offset, "upload");
  if (bytes == 0)
    return;
  upload({HostCopy{BufferRange(dst, offset, bytes), const_cast<void *>(data)}});
}

void VulkanContext::download(const Buffer &src, void *data, uint64_t bytes,
                             uint64_t offset) {
  checkRange(src, bytes, offset, "download");
  if (bytes == 0)
    return;
  download({HostCopy{BufferRange(src, offset, bytes), data}});
}

void VulkanContext::fill(const std::vector<BufferRange> &ranges,
                         uint32_t value) {
  for (const BufferRange &r : ranges) {
    const uint64_t bytes = r.bytes();
    checkRange(r.buffer, bytes, r.offset, "fill");
    if (r.buffer.state->dev != dev)
      throw VulkanError("fill: a buffer of another context");
    if (r.offset % 4 != 0 || bytes % 4 != 0)
      throw VulkanError("fill: offset " + std::to_string(r.offset) +
                        " and size " + std::to_string(bytes) +
                        " must be multiples of 4");
  }
  const Fns &fn = dev->fn;
  dev->oneShot([&](VkCommandBuffer cb) {
    barrier(fn, cb, kAnyStage, kAnyWrite, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_WRITE_BIT);
    for (const BufferRange &r : ranges)
      if (r.bytes() > 0)
        fn.CmdFillBuffer(cb, r.buffer.state->buffer, r.offset, r.bytes(),
                         value);
    barrier(fn, cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_WRITE_BIT,
            kAnyStage | VK_PIPELINE_STAGE_HOST_BIT,
            kAnyAccess | VK_ACCESS_HOST_READ_BIT);
  });
}

//===----------------------------------------------------------------------===//
// PipelineCache
//===----------------------------------------------------------------------===//

namespace {
const std::string &emptyString() {
  static const std::string empty;
  return empty;
}
} // namespace

const std::string &PipelineCache::path() const {
  return state ? state->path : emptyString();
}

uint64_t PipelineCache::loadedBytes() const {
  return state ? state->loadedBytes : 0;
}

const std::string &PipelineCache::loadProblem() const {
  return state ? state->loadProblem : emptyString();
}

std::vector<uint8_t> PipelineCache::data() const {
  if (!state)
    return {};
  Device &dev = *state->dev;
  size_t size = 0;
  check(dev.fn.GetPipelineCacheData(dev.device, state->cache, &size, nullptr),
        "vkGetPipelineCacheData");
  std::vector<uint8_t> bytes(size);
  // VK_INCOMPLETE: the cache grew in between; what fits is still valid.
  VkResult got = dev.fn.GetPipelineCacheData(dev.device, state->cache, &size,
                                             bytes.data());
  if (got != VK_INCOMPLETE)
    check(got, "vkGetPipelineCacheData");
  bytes.resize(size);
  return bytes;
}

std::string PipelineCache::save() const {
  if (!state)
    return "no pipeline cache";
  if (state->path.empty())
    return "the pipeline cache has no file";
  std::vector<uint8_t> payload = data();
  if (payload == state->onDisk)
    return "";
  std::vector<uint8_t> file(kCacheMagic, kCacheMagic + 4);
  putU32(file, kCacheVersion);
  putU64(file, payload.size());
  putU64(file, fnv1a(payload.data(), payload.size()));
  file.insert(file.end(), payload.begin(), payload.end());
  namespace fs = std::filesystem;
  const fs::path path(state->path);
  std::error_code ec;
  if (path.has_parent_path()) {
    fs::create_directories(path.parent_path(), ec);
    if (ec)
      return "cannot create " + path.parent_path().string() + ": " +
             ec.message();
  }
  try {
    writeFileAtomically(state->path, file.data(), file.size());
  } catch (const FormatError &e) {
    return e.what();
  }
  state->onDisk = std::move(payload);
  return "";
}

PipelineCache VulkanContext::createPipelineCache(const std::string &path) {
  auto state = std::make_shared<PipelineCacheState>();
  state->dev = dev;
  state->path = path;
  std::vector<uint8_t> payload;
  if (!path.empty()) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
      std::ifstream in(path, std::ios::binary);
      std::vector<uint8_t> file;
      if (in)
        file.assign(std::istreambuf_iterator<char>(in),
                    std::istreambuf_iterator<char>());
      const VkPhysicalDeviceProperties &p = dev->properties;
      if (!in && !in.eof())
        state->loadProblem = "cannot read it";
      else if (file.size() < kCacheHeaderBytes ||
               std::memcmp(file.data(), kCacheMagic, 4) != 0)
        state->loadProblem = "not a bitloom pipeline cache";
      else if (getU32(file.data() + 4) != kCacheVersion)
        state->loadProblem =
            "cache format version " + std::to_string(getU32(file.data() + 4)) +
            " (this runtime writes " + std::to_string(kCacheVersion) + ")";
      else if (getU64(file.data() + 8) != file.size() - kCacheHeaderBytes)
        state->loadProblem = "truncated: the header says " +
                             std::to_string(getU64(file.data() + 8)) +
                             " bytes of data, the file has " +
                             std::to_string(file.size() - kCacheHeaderBytes);
      else if (getU64(file.data() + 16) !=
               fnv1a(file.data() + kCacheHeaderBytes,
                     file.size() - kCacheHeaderBytes))
        state->loadProblem = "checksum mismatch";
      else {
        payload.assign(file.begin() + kCacheHeaderBytes, file.end());
        // VkPipelineCacheHeaderVersionOne: drivers should refuse data of
        // another device themselves, but not all check carefully.
        const uint8_t *h = payload.data();
        if (payload.size() < 32 || getU32(h) < 32 ||
            getU32(h + 4) != VK_PIPELINE_CACHE_HEADER_VERSION_ONE)
          state->loadProblem = "no Vulkan pipeline cache header";
        else if (getU32(h + 8) != p.vendorID || getU32(h + 12) != p.deviceID ||
                 std::memcmp(h + 16, p.pipelineCacheUUID, VK_UUID_SIZE) != 0)
          state->loadProblem = "made by another device or driver version";
        if (!state->loadProblem.empty())
          payload.clear();
      }
    }
  }
  VkPipelineCacheCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO;
  info.initialDataSize = payload.size();
  info.pInitialData = payload.empty() ? nullptr : payload.data();
  check(dev->fn.CreatePipelineCache(dev->device, &info, nullptr, &state->cache),
        "vkCreatePipelineCache", path);
  state->loadedBytes = payload.size();
  state->onDisk = std::move(payload);
  PipelineCache out;
  out.state = std::move(state);
  return out;
}

//===----------------------------------------------------------------------===//
// Pipelines and command sequences
//===----------------------------------------------------------------------===//

Pipeline VulkanContext::createPipeline(const std::vector<uint32_t> &spirv,
                                       uint32_t numBuffers,
                                       uint32_t pushConstantBytes,
                                       const std::string &entryPoint,
                                       const PipelineCache &cache) {
  if (spirv.empty() || spirv[0] != 0x07230203u)
    throw VulkanError("createPipeline: not SPIR-V (no magic number)");
  const uint32_t pushLimit = std::min<uint32_t>(128, dev->maxPushConstantsSize);
  if (pushConstantBytes > pushLimit || pushConstantBytes % 4 != 0)
    throw VulkanError("createPipeline: " + std::to_string(pushConstantBytes) +
                      " bytes of push constants (a multiple of 4, at most " +
                      std::to_string(pushLimit) + ")");
  if (cache && cache.state->dev != dev)
    throw VulkanError("createPipeline: the cache belongs to another context");
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
  check(fn.CreateComputePipelines(dev->device,
                                  cache ? cache.state->cache : VK_NULL_HANDLE,
                                  1, &info, nullptr, &state->pipeline),
        "vkCreateComputePipelines", "entry point " + entryPoint);
  Pipeline out;
  out.state = std::move(state);
  return out;
}

const TimestampSupport &VulkanContext::timestamps() const {
  return dev->timestamps;
}

CommandSequence VulkanContext::record(uint32_t maxTimestamps) {
  if (maxTimestamps > 0 && !dev->timestamps.supported)
    throw VulkanError(dev->timestamps.problem);
  auto state = std::make_shared<SequenceState>();
  state->dev = dev;
  if (maxTimestamps > 0) {
    VkQueryPoolCreateInfo info{};
    info.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
    info.queryType = VK_QUERY_TYPE_TIMESTAMP;
    info.queryCount = maxTimestamps;
    check(dev->fn.CreateQueryPool(dev->device, &info, nullptr, &state->queries),
          "vkCreateQueryPool", std::to_string(maxTimestamps) + " timestamps");
    state->maxTimestamps = maxTimestamps;
  }
  state->cb = dev->allocateCommandBuffer();
  VkCommandBufferBeginInfo begin{};
  begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  // Neither one-time (it is replayed) nor simultaneous (each replay waits).
  check(dev->fn.BeginCommandBuffer(state->cb, &begin), "vkBeginCommandBuffer");
  // Queries must be reset before they are written again: on every replay.
  if (state->queries != VK_NULL_HANDLE)
    dev->fn.CmdResetQueryPool(state->cb, state->queries, 0, maxTimestamps);
  // Order this replay after what came before on the queue: uploads, and the
  // previous replay of this same sequence (its dispatches and copies).
  barrier(dev->fn, state->cb, kAnyStage, kAnyWrite, kAnyStage, kAnyAccess);
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
                             const std::vector<BufferRange> &buffers,
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
                               const std::vector<BufferRange> &buffers,
                               const void *pushConstants, size_t pushBytes,
                               uint32_t groupsX, uint32_t groupsY,
                               uint32_t groupsZ,
                               const std::vector<bool> &writes) {
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
  Device &dev = *state->dev;
  const VkPhysicalDeviceLimits &limits = dev.properties.limits;
  for (size_t k = 0; k < buffers.size(); ++k) {
    const BufferRange &r = buffers[k];
    const std::string binding = "dispatch: binding " + std::to_string(k);
    if (!r.buffer || r.buffer.state->dev != state->dev)
      throw VulkanError(binding + ": a null buffer or one of another context");
    const uint64_t whole = r.buffer.size();
    if (r.size == 0)
      throw VulkanError(binding + ": an empty range");
    if (r.offset > whole ||
        (r.size != BufferRange::kWholeSize && r.size > whole - r.offset))
      throw VulkanError(
          binding + ": range " + std::to_string(r.offset) + " + " +
          (r.size == BufferRange::kWholeSize ? std::string("the rest")
                                             : std::to_string(r.size)) +
          " bytes does not fit its buffer of " + std::to_string(whole) +
          " bytes");
    if (r.offset == whole)
      throw VulkanError(binding + ": an empty range at the end of its buffer");
    const uint64_t align = limits.minStorageBufferOffsetAlignment;
    if (align > 1 && r.offset % align != 0)
      throw VulkanError(binding + ": offset " + std::to_string(r.offset) +
                        " is not a multiple of the device's "
                        "minStorageBufferOffsetAlignment (" +
                        std::to_string(align) + ")");
    if (r.bytes() > limits.maxStorageBufferRange)
      throw VulkanError(binding + ": a range of " + std::to_string(r.bytes()) +
                        " bytes (" + humanBytes(r.bytes()) +
                        ") exceeds the device's maxStorageBufferRange (" +
                        std::to_string(limits.maxStorageBufferRange) +
                        " bytes)");
  }
  const uint32_t *maxGroups = limits.maxComputeWorkGroupCount;
  if (groupsX > maxGroups[0] || groupsY > maxGroups[1] ||
      groupsZ > maxGroups[2])
    throw VulkanError(
        "dispatch: " + std::to_string(groupsX) + " x " +
        std::to_string(groupsY) + " x " + std::to_string(groupsZ) +
        " workgroups exceed the device's maxComputeWorkGroupCount "
        "(" +
        std::to_string(maxGroups[0]) + " x " + std::to_string(maxGroups[1]) +
        " x " + std::to_string(maxGroups[2]) + ")");

  if (!writes.empty() && writes.size() != buffers.size())
    throw VulkanError("dispatch: " + std::to_string(writes.size()) +
                      " write flags for " + std::to_string(buffers.size()) +
                      " buffers");
  const Fns &fn = dev.fn;
  VkCommandBuffer cb = state->cb;
  std::vector<SequenceState::Touched> touched;
  for (size_t k = 0; k < buffers.size(); ++k) {
    const BufferRange &r = buffers[k];
    uint64_t end =
        r.size == BufferRange::kWholeSize ? r.buffer.size() : r.offset + r.size;
    touched.push_back(
        {r.buffer.state->buffer, r.offset, end, writes.empty() || writes[k]});
  }
  state->barrierBefore(SequenceState::Op::Dispatch, touched);

  fn.CmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
  if (p.numBuffers > 0) {
    // Sets come from pools shared by many dispatches: a step of thousands
    // of dispatches needs a few pools, not thousands.
    if (state->setsLeft == 0 || state->descriptorsLeft < p.numBuffers) {
      const uint32_t sets = 256;
      const uint32_t descriptors = std::max<uint32_t>(sets * 8, p.numBuffers);
      VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptors};
      VkDescriptorPoolCreateInfo poolInfo{};
      poolInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
      poolInfo.maxSets = sets;
      poolInfo.poolSizeCount = 1;
      poolInfo.pPoolSizes = &size;
      VkDescriptorPool pool = VK_NULL_HANDLE;
      check(fn.CreateDescriptorPool(dev.device, &poolInfo, nullptr, &pool),
            "vkCreateDescriptorPool");
      state->pools.push_back(pool);
      state->setsLeft = sets;
      state->descriptorsLeft = descriptors;
    }
    VkDescriptorSetAllocateInfo setInfo{};
    setInfo.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
    setInfo.descriptorPool = state->pools.back();
    setInfo.descriptorSetCount = 1;
    setInfo.pSetLayouts = &p.setLayout;
    VkDescriptorSet set = VK_NULL_HANDLE;
    check(fn.AllocateDescriptorSets(dev.device, &setInfo, &set),
          "vkAllocateDescriptorSets");
    --state->setsLeft;
    state->descriptorsLeft -= p.numBuffers;
    std::vector<VkDescriptorBufferInfo> infos(p.numBuffers);
    std::vector<VkWriteDescriptorSet> writes(p.numBuffers);
    for (uint32_t b = 0; b < p.numBuffers; ++b) {
      const BufferRange &r = buffers[b];
      infos[b] = {r.buffer.state->buffer, r.offset,
                  r.size == BufferRange::kWholeSize ? VK_WHOLE_SIZE : r.size};
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
  for (const BufferRange &r : buffers)
    state->buffers.push_back(r.buffer.state);
  ++state->dispatches;
}

void CommandSequence::copy(const Buffer &src, uint64_t srcOffset,
                           const Buffer &dst, uint64_t dstOffset,
                           uint64_t bytes) {
  if (!state)
    throw VulkanError("copy: the sequence was not made by record()");
  if (state->finished)
    throw VulkanError("copy: the sequence is finished");
  checkRange(src, bytes, srcOffset, "copy (source)");
  checkRange(dst, bytes, dstOffset, "copy (destination)");
  if (src.state->dev != state->dev || dst.state->dev != state->dev)
    throw VulkanError("copy: a buffer of another context");
  if (bytes == 0)
    return;
  state->barrierBefore(SequenceState::Op::Copy);
  VkBufferCopy region{srcOffset, dstOffset, bytes};
  state->dev->fn.CmdCopyBuffer(state->cb, src.state->buffer, dst.state->buffer,
                               1, &region);
  state->buffers.push_back(src.state);
  state->buffers.push_back(dst.state);
}

void CommandSequence::finish() {
  if (!state)
    throw VulkanError("finish: the sequence was not made by record()");
  if (state->finished)
    return;
  const Fns &fn = state->dev->fn;
  // Make the last commands' writes visible to copies (download) and to the
  // host (host-visible buffers, staged outputs) after the wait.
  barrier(fn, state->cb, kAnyStage, kAnyWrite,
          VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_HOST_BIT,
          VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_HOST_READ_BIT);
  check(fn.EndCommandBuffer(state->cb), "vkEndCommandBuffer");
  state->finished = true;
}

bool CommandSequence::finished() const { return state && state->finished; }

void CommandSequence::orderEveryDispatch() {
  if (!state)
    throw VulkanError("orderEveryDispatch: the sequence was not made by "
                      "record()");
  state->orderAll = true;
}

size_t CommandSequence::numDispatchBarriers() const {
  return state ? state->dispatchBarriers : 0;
}

void CommandSequence::timestamp() {
  if (!state)
    throw VulkanError("timestamp: the sequence was not made by record()");
  if (state->finished)
    throw VulkanError("timestamp: the sequence is finished");
  if (state->timestamps >= state->maxTimestamps)
    throw VulkanError("timestamp: the sequence was recorded with room for " +
                      std::to_string(state->maxTimestamps) + " timestamps");
  // Bottom of the pipe: written when every earlier command has completed,
  // so consecutive timestamps bracket the dispatch between them.
  state->dev->fn.CmdWriteTimestamp(state->cb,
                                   VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT,
                                   state->queries, state->timestamps++);
}

size_t CommandSequence::numTimestamps() const {
  return state ? state->timestamps : 0;
}

std::vector<double> CommandSequence::timestampsNs() const {
  if (!state || state->timestamps == 0)
    return {};
  const Device &dev = *state->dev;
  std::vector<uint64_t> ticks(state->timestamps);
  // The fence wait of submitAndWait has passed: every query is available,
  // and WAIT_BIT only guards against a call before any replay finished.
  check(dev.fn.GetQueryPoolResults(
            dev.device, state->queries, 0, state->timestamps,
            ticks.size() * sizeof(uint64_t), ticks.data(), sizeof(uint64_t),
            VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
        "vkGetQueryPoolResults");
  const uint32_t bits = dev.timestamps.validBits;
  const uint64_t mask = bits >= 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1;
  // Summed interval by interval: a counter of 36 valid bits may wrap in a
  // long step, but not within one dispatch.
  std::vector<double> out(ticks.size(), 0.0);
  for (size_t i = 1; i < ticks.size(); ++i)
    out[i] = out[i - 1] +
             double((ticks[i] - ticks[i - 1]) & mask) * dev.timestamps.periodNs;
  return out;
}

size_t CommandSequence::numDispatches() const {
  return state ? state->dispatches : 0;
}

} // namespace bitloom::vulkan

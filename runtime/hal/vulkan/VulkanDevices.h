//===- VulkanDevices.h - Vulkan instance and device enumeration -*- C++ -*-===//
//
// The first slice of the Vulkan backend: load the Vulkan loader at run time
// (dlopen, so that bitloom-run still starts on a machine without it), create
// a VkInstance (API 1.1 or newer, no layers, no window extensions) and read
// what the kernels care about from every physical device. DeviceInfo is plain
// data (no Vulkan types), so profiles and tests can build synthetic ones.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_HAL_VULKAN_VULKANDEVICES_H
#define BITLOOM_HAL_VULKAN_VULKANDEVICES_H

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitloom::vulkan {

/// VkPhysicalDeviceType.
enum class DeviceType { Other, IntegratedGpu, DiscreteGpu, VirtualGpu, Cpu };

/// "integrated GPU", "discrete GPU", "virtual GPU", "CPU" or "other".
const char *deviceTypeName(DeviceType type);

/// Packs a Vulkan version (VK_MAKE_API_VERSION with variant 0).
constexpr uint32_t makeApiVersion(uint32_t major, uint32_t minor,
                                  uint32_t patch = 0) {
  return (major << 22) | (minor << 12) | patch;
}
/// "1.3" (or "1.3.239" with the patch).
std::string apiVersionString(uint32_t version, bool withPatch = false);

struct DeviceInfo {
  uint32_t index = 0; ///< position in vkEnumeratePhysicalDevices
  std::string name;
  uint32_t vendorId = 0, deviceId = 0;
  DeviceType type = DeviceType::Other;
  uint32_t apiVersion = 0, driverVersion = 0;
  /// VkPhysicalDeviceDriverProperties (Vulkan 1.2 or VK_KHR_driver_properties);
  /// empty when the device has neither.
  std::string driverName, driverInfo;

  uint32_t subgroupSize = 0; ///< VkPhysicalDeviceSubgroupProperties
  bool shaderFloat64 = false;
  bool shaderInt8 = false;
  bool shaderFloat16 = false;
  bool storageBuffer8BitAccess = false;
  bool storageBuffer16BitAccess = false;
  /// VK_KHR_shader_integer_dot_product is advertised (or Vulkan 1.3) ...
  bool integerDotProductExtension = false;
  /// ... and its shaderIntegerDotProduct feature is set.
  bool integerDotProduct = false;
  /// VK_KHR_cooperative_matrix with its cooperativeMatrix feature and a
  /// subgroup-scope 16x16x32 product of signed bytes into int32 (the
  /// tensor cores' int8 shape on NVIDIA).
  bool cooperativeMatrixInt8 = false;
  /// ... and a subgroup-scope 16x16x16 product of f16 into f32.
  bool cooperativeMatrixF16 = false;

  uint32_t maxComputeSharedMemorySize = 0;
  uint32_t maxComputeWorkGroupInvocations = 0;
  std::array<uint32_t, 3> maxComputeWorkGroupSize = {0, 0, 0};
  uint64_t maxStorageBufferRange = 0;
  uint32_t maxPerStageDescriptorStorageBuffers = 0;
  /// Offsets of storage buffer bindings must be multiples of this.
  uint64_t minStorageBufferOffsetAlignment = 0;
  std::array<uint32_t, 3> maxComputeWorkGroupCount = {0, 0, 0};
  uint32_t maxPushConstantsSize = 0;
  /// The largest heap with VK_MEMORY_HEAP_DEVICE_LOCAL_BIT, in bytes.
  uint64_t deviceLocalHeapSize = 0;
};

/// Raised when the loader is missing or a Vulkan call fails; the message
/// names the call and the VkResult (e.g. "vkCreateInstance failed:
/// VK_ERROR_INCOMPATIBLE_DRIVER").
class VulkanError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// VK_ERROR_OUT_OF_DEVICE_MEMORY / VK_ERROR_OUT_OF_HOST_MEMORY, or a request
/// larger than any heap; e.g. "vkAllocateMemory: out of device memory
/// (requested 2.00 GiB)".
class VulkanOutOfMemory : public VulkanError {
public:
  using VulkanError::VulkanError;
};

/// VK_ERROR_DEVICE_LOST: the device (or its driver) gave up; nothing on this
/// device can be used afterwards.
class VulkanDeviceLost : public VulkanError {
public:
  using VulkanError::VulkanError;
};

/// A VkInstance on the dynamically loaded Vulkan loader; destroys the
/// instance and unloads the loader when destroyed.
class VulkanInstance {
public:
  /// Loads libvulkan.so.1 (or `loaderPath`) and creates the instance with the
  /// highest API version up to 1.3 the loader offers (at least 1.1).
  explicit VulkanInstance(const std::string &loaderPath = "");
  ~VulkanInstance();
  VulkanInstance(const VulkanInstance &) = delete;
  VulkanInstance &operator=(const VulkanInstance &) = delete;

  /// The instance's API version.
  uint32_t apiVersion() const;
  /// Every physical device, in enumeration order.
  std::vector<DeviceInfo> devices() const;

  /// For the rest of the backend (VulkanContext), which loads its entry
  /// points through this instance: the VkInstance and the loader's
  /// vkGetInstanceProcAddr, as opaque pointers so that this header needs no
  /// Vulkan headers.
  void *nativeHandle() const;
  void *getInstanceProcAddr() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

/// VulkanInstance().devices().
std::vector<DeviceInfo> enumerateDevices();

/// "VK_ERROR_OUT_OF_HOST_MEMORY"; the number for codes it does not know.
std::string vkResultName(int32_t result);

} // namespace bitloom::vulkan

#endif // BITLOOM_HAL_VULKAN_VULKANDEVICES_H

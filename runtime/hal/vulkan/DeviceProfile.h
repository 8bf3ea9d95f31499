//===- DeviceProfile.h - What a class of Vulkan devices offers --*- C++ -*-===//
//
// A device profile is data: the minimum capabilities that kernels generated
// for a class of devices (generic Vulkan 1.1, Adreno, Mali, NVIDIA, Mesa's
// lavapipe) may assume. missingCapabilities() compares a DeviceInfo against
// one and says, line by line, what the device lacks.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_HAL_VULKAN_DEVICEPROFILE_H
#define BITLOOM_HAL_VULKAN_DEVICEPROFILE_H

#include "hal/vulkan/VulkanDevices.h"

#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::vulkan {

struct DeviceProfile {
  std::string name;
  std::string description;
  uint32_t minApiVersion = makeApiVersion(1, 1);
  /// The device's default subgroup size must be at least this.
  uint32_t minSubgroupSize = 1;
  /// f64 arithmetic: kernels keep the CPU targets' f64 accumulations.
  bool shaderFloat64 = false;
  bool shaderInt8 = false;
  bool shaderFloat16 = false;
  bool storageBuffer8BitAccess = false;
  bool storageBuffer16BitAccess = false;
  /// VK_KHR_shader_integer_dot_product (or Vulkan 1.3) with its feature.
  bool integerDotProduct = false;
  /// VK_KHR_cooperative_matrix's 16x16x32 int8 product (tensor cores).
  bool cooperativeMatrixInt8 = false;
  /// ... and its 16x16x16 f16 product into f32.
  bool cooperativeMatrixF16 = false;
  uint32_t minComputeSharedMemorySize = 0;
  uint32_t minComputeWorkGroupInvocations = 0;
  uint64_t minStorageBufferRange = 0;
  /// Storage buffers one kernel may bind (maxPerStageDescriptorStorageBuffers).
  uint32_t minStorageBuffersPerStage = 0;
};

/// Every known profile: generic, adreno, mali, nvidia, lavapipe.
const std::vector<DeviceProfile> &deviceProfiles();

/// The profile called `name`; a FormatError listing the known ones when
/// there is none.
const DeviceProfile &findProfile(const std::string &name);

/// One human-readable line per capability `device` lacks for `profile`
/// ("subgroup size 8 < 32 required", "no VK_KHR_shader_integer_dot_product");
/// empty when the device meets the profile.
std::vector<std::string> missingCapabilities(const DeviceInfo &device,
                                             const DeviceProfile &profile);

/// The names of the profiles `device` meets, in deviceProfiles() order.
std::vector<std::string> profilesMet(const DeviceInfo &device);

/// "64 KiB", "128 MiB", "4 GiB - 1 B": sizes in the messages.
std::string formatBytes(uint64_t bytes);

} // namespace bitloom::vulkan

#endif // BITLOOM_HAL_VULKAN_DEVICEPROFILE_H

//===- DeviceProfile.cpp - What a class of Vulkan devices offers ----------===//
#include "hal/vulkan/DeviceProfile.h"

#include "formats/Error.h"

namespace bitloom::vulkan {

namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

std::vector<DeviceProfile> makeProfiles() {
  std::vector<DeviceProfile> profiles;

  // Baseline Vulkan 1.1: no optional feature; the limits are the
  // specification's required minimums for a compute-capable device, rounded
  // up to what every real driver reports (the spec requires 16 KiB shared
  // memory and 128 invocations; storage buffers of 128 MiB are the de facto
  // floor of mobile drivers).
  DeviceProfile generic;
  generic.name = "generic";
  generic.description = "any Vulkan 1.1 device; no optional features";
  generic.minSubgroupSize = 1;
  generic.minComputeSharedMemorySize = 16 * KiB;
  generic.minComputeWorkGroupInvocations = 128;
  generic.minStorageBufferRange = 128 * MiB;
  // The spec's floor is 4; 24 is what the oldest mobile drivers report
  // (Adreno 5xx/6xx) and what the Android baseline profile asks.
  generic.minStorageBuffersPerStage = 24;
  profiles.push_back(generic);

  // Qualcomm Adreno 6xx/7xx. Conservative values: the lowest reported by
  // Adreno 6xx drivers on gpuinfo.org-style reports (wave64 by default, 32
  // KiB shared memory, 512 MiB storage buffers); newer parts report more.
  // Validate against real devices before relying on them.
  DeviceProfile adreno;
  adreno.name = "adreno";
  adreno.description = "Qualcomm Adreno 6xx/7xx (conservative)";
  adreno.minSubgroupSize = 64;
  adreno.shaderFloat16 = true;
  adreno.storageBuffer8BitAccess = true;
  adreno.storageBuffer16BitAccess = true;
  adreno.minComputeSharedMemorySize = 32 * KiB;
  adreno.minComputeWorkGroupInvocations = 1024;
  adreno.minStorageBufferRange = 512 * MiB;
  adreno.minStorageBuffersPerStage = 24;
  profiles.push_back(adreno);

  // ARM Mali Valhall (G57/G77 and newer). Conservative values: subgroup 16
  // (Bifrost parts report 4 or 8 and do not meet this profile), 32 KiB shared
  // memory, 512 invocations, 256 MiB storage buffers; many drivers report
  // more (storage range up to 4 GiB - 1). Validate against real devices.
  DeviceProfile mali;
  mali.name = "mali";
  mali.description = "ARM Mali Valhall (conservative)";
  mali.minSubgroupSize = 16;
  mali.shaderFloat16 = true;
  mali.storageBuffer8BitAccess = true;
  mali.storageBuffer16BitAccess = true;
  mali.minComputeSharedMemorySize = 32 * KiB;
  mali.minComputeWorkGroupInvocations = 512;
  mali.minStorageBufferRange = 256 * MiB;
  mali.minStorageBuffersPerStage = 24;
  profiles.push_back(mali);

  // NVIDIA Turing and newer on the proprietary driver: warp 32, DP4A
  // through VK_KHR_shader_integer_dot_product, 48 KiB shared memory (the
  // driver's default limit), storage buffers of 4 GiB - 1 (UINT32_MAX).
  DeviceProfile nvidia;
  nvidia.name = "nvidia";
  nvidia.description = "NVIDIA Turing or newer (int8 dot product)";
  nvidia.minApiVersion = makeApiVersion(1, 3);
  nvidia.minSubgroupSize = 32;
  nvidia.shaderFloat64 = true;
  nvidia.shaderInt8 = true;
  nvidia.shaderFloat16 = true;
  nvidia.storageBuffer8BitAccess = true;
  nvidia.storageBuffer16BitAccess = true;
  nvidia.integerDotProduct = true;
  nvidia.cooperativeMatrixInt8 = true;
  nvidia.cooperativeMatrixF16 = true;
  nvidia.minComputeSharedMemorySize = 48 * KiB;
  nvidia.minComputeWorkGroupInvocations = 1024;
  nvidia.minStorageBufferRange = 4 * GiB - 1;
  nvidia.minStorageBuffersPerStage = 1024;
  profiles.push_back(nvidia);

  // Mesa's lavapipe (llvmpipe), measured on an x86-64 AVX2 host with Mesa
  // 22.3.6 / LLVM 15 (Debian 12): Vulkan 1.3.230, subgroup 8, shaderInt8,
  // shaderFloat16, 8/16-bit storage, VK_KHR_shader_integer_dot_product, 32 KiB
  // shared memory, 1024 invocations (1024 x 1024 x 1024), storage buffers of
  // 128 MiB, a 2 GiB device-local heap. The subgroup size is the host's SIMD
  // width in 32-bit lanes (8 with AVX2, 4 with SSE only), so the profile asks
  // for 4: every x86-64 host's lavapipe meets it.
  DeviceProfile lavapipe;
  lavapipe.name = "lavapipe";
  lavapipe.description = "Mesa lavapipe (CPU), the test device";
  lavapipe.minApiVersion = makeApiVersion(1, 3);
  lavapipe.minSubgroupSize = 4;
  lavapipe.shaderFloat64 = true;
  lavapipe.shaderInt8 = true;
  lavapipe.shaderFloat16 = true;
  lavapipe.storageBuffer8BitAccess = true;
  lavapipe.storageBuffer16BitAccess = true;
  lavapipe.integerDotProduct = true;
  lavapipe.minComputeSharedMemorySize = 32 * KiB;
  lavapipe.minComputeWorkGroupInvocations = 1024;
  lavapipe.minStorageBufferRange = 128 * MiB;
  lavapipe.minStorageBuffersPerStage = 32;
  profiles.push_back(lavapipe);

  return profiles;
}

} // namespace

const std::vector<DeviceProfile> &deviceProfiles() {
  static const std::vector<DeviceProfile> profiles = makeProfiles();
  return profiles;
}

const DeviceProfile &findProfile(const std::string &name) {
  std::string known;
  for (const DeviceProfile &p : deviceProfiles()) {
    if (p.name == name)
      return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  throw FormatError("", "profile",
                    "unknown device profile '" + name + "' (known: " + known +
                        ")");
}

std::string formatBytes(uint64_t bytes) {
  if (bytes == 4 * GiB - 1)
    return "4 GiB - 1 B";
  struct Unit {
    uint64_t size;
    const char *name;
  };
  for (Unit u : {Unit{GiB, "GiB"}, Unit{MiB, "MiB"}, Unit{KiB, "KiB"}})
    if (bytes >= u.size && bytes % u.size == 0)
      return std::to_string(bytes / u.size) + " " + u.name;
  return std::to_string(bytes) + " B";
}

std::vector<std::string> missingCapabilities(const DeviceInfo &device,
                                             const DeviceProfile &profile) {
  std::vector<std::string> missing;
  if (device.apiVersion < profile.minApiVersion)
    missing.push_back("Vulkan " + apiVersionString(device.apiVersion) + " < " +
                      apiVersionString(profile.minApiVersion) + " required");
  if (device.subgroupSize < profile.minSubgroupSize)
    missing.push_back("subgroup size " + std::to_string(device.subgroupSize) +
                      " < " + std::to_string(profile.minSubgroupSize) +
                      " required");
  if (profile.shaderFloat64 && !device.shaderFloat64)
    missing.push_back("no shaderFloat64");
  if (profile.shaderInt8 && !device.shaderInt8)
    missing.push_back("no shaderInt8");
  if (profile.shaderFloat16 && !device.shaderFloat16)
    missing.push_back("no shaderFloat16");
  if (profile.storageBuffer8BitAccess && !device.storageBuffer8BitAccess)
    missing.push_back("no storageBuffer8BitAccess");
  if (profile.storageBuffer16BitAccess && !device.storageBuffer16BitAccess)
    missing.push_back("no storageBuffer16BitAccess");
  if (profile.integerDotProduct) {
    if (!device.integerDotProductExtension)
      missing.push_back("no VK_KHR_shader_integer_dot_product");
    else if (!device.integerDotProduct)
      missing.push_back("VK_KHR_shader_integer_dot_product present but "
                        "shaderIntegerDotProduct is not supported");
  }
  if (profile.cooperativeMatrixInt8 && !device.cooperativeMatrixInt8)
    missing.push_back("no VK_KHR_cooperative_matrix with a 16x16x32 int8 "
                      "subgroup product");
  if (profile.cooperativeMatrixF16 && !device.cooperativeMatrixF16)
    missing.push_back("no VK_KHR_cooperative_matrix with a 16x16x16 f16 "
                      "subgroup product into f32");
  if (device.maxComputeSharedMemorySize < profile.minComputeSharedMemorySize)
    missing.push_back("compute shared memory " +
                      formatBytes(device.maxComputeSharedMemorySize) + " < " +
                      formatBytes(profile.minComputeSharedMemorySize) +
                      " required");
  if (device.maxComputeWorkGroupInvocations <
      profile.minComputeWorkGroupInvocations)
    missing.push_back(
        "workgroup invocations " +
        std::to_string(device.maxComputeWorkGroupInvocations) + " < " +
        std::to_string(profile.minComputeWorkGroupInvocations) + " required");
  if (device.maxStorageBufferRange < profile.minStorageBufferRange)
    missing.push_back("storage buffer range " +
                      formatBytes(device.maxStorageBufferRange) + " < " +
                      formatBytes(profile.minStorageBufferRange) + " required");
  if (device.maxPerStageDescriptorStorageBuffers <
      profile.minStorageBuffersPerStage)
    missing.push_back(
        "storage buffers per stage " +
        std::to_string(device.maxPerStageDescriptorStorageBuffers) + " < " +
        std::to_string(profile.minStorageBuffersPerStage) + " required");
  return missing;
}

std::vector<std::string> profilesMet(const DeviceInfo &device) {
  std::vector<std::string> met;
  for (const DeviceProfile &p : deviceProfiles())
    if (missingCapabilities(device, p).empty())
      met.push_back(p.name);
  return met;
}

} // namespace bitloom::vulkan

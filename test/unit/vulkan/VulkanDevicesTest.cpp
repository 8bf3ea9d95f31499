//===- VulkanDevicesTest.cpp - Vulkan enumeration and device profiles -----===//
//
// Needs a Vulkan driver: the build machines have Mesa's lavapipe.
//
//===----------------------------------------------------------------------===//
#include "hal/vulkan/VulkanDevices.h"
#include "hal/vulkan/DeviceProfile.h"

#include "formats/Error.h"

#include <gtest/gtest.h>

#include <algorithm>

using namespace bitloom::vulkan;

namespace {

bool contains(const std::vector<std::string> &v, const std::string &s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

/// What an NVIDIA Turing part reports, for the synthetic cases.
DeviceInfo nvidiaLike() {
  DeviceInfo d;
  d.name = "synthetic";
  d.type = DeviceType::DiscreteGpu;
  d.apiVersion = makeApiVersion(1, 3, 260);
  d.subgroupSize = 32;
  d.shaderFloat64 = d.shaderInt8 = d.shaderFloat16 = true;
  d.storageBuffer8BitAccess = d.storageBuffer16BitAccess = true;
  d.integerDotProductExtension = d.integerDotProduct = true;
  d.maxComputeSharedMemorySize = 48 * 1024;
  d.maxComputeWorkGroupInvocations = 1024;
  d.maxComputeWorkGroupSize = {1024, 1024, 64};
  d.maxStorageBufferRange = 0xffffffffull;
  d.maxPerStageDescriptorStorageBuffers = 1u << 20;
  d.cooperativeMatrixInt8 = d.cooperativeMatrixF16 = true;
  return d;
}

} // namespace

TEST(VulkanDevices, EnumeratesLavapipe) {
  std::vector<DeviceInfo> devices = enumerateDevices();
  ASSERT_FALSE(devices.empty());
  auto it = std::find_if(devices.begin(), devices.end(), [](auto &d) {
    return d.name.find("llvmpipe") != std::string::npos;
  });
  ASSERT_NE(it, devices.end()) << "no lavapipe (llvmpipe) device";
  const DeviceInfo &d = *it;
  EXPECT_EQ(d.type, DeviceType::Cpu);
  EXPECT_GE(d.apiVersion, makeApiVersion(1, 1));
  EXPECT_EQ(d.driverName, "llvmpipe");
  EXPECT_GE(d.subgroupSize, 4u);
  EXPECT_GT(d.maxComputeWorkGroupSize[0], 0u);
  EXPECT_GT(d.deviceLocalHeapSize, 0u);
  EXPECT_TRUE(missingCapabilities(d, findProfile("generic")).empty());
  EXPECT_EQ(missingCapabilities(d, findProfile("lavapipe")),
            std::vector<std::string>{});
  std::vector<std::string> met = profilesMet(d);
  EXPECT_TRUE(contains(met, "generic"));
  EXPECT_TRUE(contains(met, "lavapipe"));
}

TEST(VulkanDevices, InstanceIsReusable) {
  // Two instances one after the other: the RAII teardown leaves the loader
  // usable.
  size_t first = VulkanInstance().devices().size();
  VulkanInstance instance;
  EXPECT_GE(instance.apiVersion(), makeApiVersion(1, 1));
  EXPECT_EQ(instance.devices().size(), first);
}

TEST(VulkanDevices, MissingLoaderIsAnError) {
  try {
    VulkanInstance instance("/nonexistent/libvulkan.so.1");
    FAIL() << "no error";
  } catch (const VulkanError &e) {
    EXPECT_NE(std::string(e.what()).find("cannot load the Vulkan loader"),
              std::string::npos)
        << e.what();
  }
}

TEST(DeviceProfile, NvidiaLikeMeetsNvidia) {
  DeviceInfo d = nvidiaLike();
  EXPECT_TRUE(missingCapabilities(d, findProfile("nvidia")).empty());
  EXPECT_TRUE(missingCapabilities(d, findProfile("generic")).empty());
}

TEST(DeviceProfile, SmallSubgroupNoDotProductFailsNvidia) {
  DeviceInfo d = nvidiaLike();
  d.subgroupSize = 8;
  d.integerDotProductExtension = d.integerDotProduct = false;
  std::vector<std::string> missing =
      missingCapabilities(d, findProfile("nvidia"));
  EXPECT_EQ(missing,
            (std::vector<std::string>{"subgroup size 8 < 32 required",
                                      "no VK_KHR_shader_integer_dot_product"}));
  // generic asks for none of that.
  EXPECT_TRUE(missingCapabilities(d, findProfile("generic")).empty());
  EXPECT_FALSE(contains(profilesMet(d), "nvidia"));
}

TEST(DeviceProfile, ExtensionWithoutFeature) {
  DeviceInfo d = nvidiaLike();
  d.integerDotProduct = false;
  std::vector<std::string> missing =
      missingCapabilities(d, findProfile("nvidia"));
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_NE(missing[0].find("shaderIntegerDotProduct is not supported"),
            std::string::npos);
}

TEST(DeviceProfile, LimitsAreReported) {
  DeviceInfo d = nvidiaLike();
  d.apiVersion = makeApiVersion(1, 1);
  d.maxComputeSharedMemorySize = 16 * 1024;
  d.maxComputeWorkGroupInvocations = 256;
  d.maxStorageBufferRange = 128ull << 20;
  d.maxPerStageDescriptorStorageBuffers = 16;
  d.shaderFloat16 = false;
  EXPECT_EQ(missingCapabilities(d, findProfile("nvidia")),
            (std::vector<std::string>{
                "Vulkan 1.1 < 1.3 required", "no shaderFloat16",
                "compute shared memory 16 KiB < 48 KiB required",
                "workgroup invocations 256 < 1024 required",
                "storage buffer range 128 MiB < 4 GiB - 1 B required",
                "storage buffers per stage 16 < 1024 required"}));
}

TEST(DeviceProfile, GenericIsTheBaseline) {
  DeviceInfo d;
  d.apiVersion = makeApiVersion(1, 1);
  d.subgroupSize = 1;
  d.maxComputeSharedMemorySize = 16 * 1024;
  d.maxComputeWorkGroupInvocations = 128;
  d.maxStorageBufferRange = 128ull << 20;
  d.maxPerStageDescriptorStorageBuffers = 24;
  EXPECT_TRUE(missingCapabilities(d, findProfile("generic")).empty());
  d.apiVersion = makeApiVersion(1, 0);
  EXPECT_EQ(missingCapabilities(d, findProfile("generic")),
            std::vector<std::string>{"Vulkan 1.0 < 1.1 required"});
}

TEST(DeviceProfile, KnownProfiles) {
  std::vector<std::string> names;
  for (const DeviceProfile &p : deviceProfiles())
    names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"generic", "adreno", "mali",
                                             "nvidia", "lavapipe"}));
  EXPECT_EQ(findProfile("mali").minSubgroupSize, 16u);
}

TEST(DeviceProfile, UnknownProfileListsTheKnownOnes) {
  try {
    findProfile("voodoo");
    FAIL() << "no error";
  } catch (const bitloom::FormatError &e) {
    EXPECT_STREQ(e.what(),
                 "profile: unknown device profile 'voodoo' (known: generic, "
                 "adreno, mali, nvidia, lavapipe)");
  }
}

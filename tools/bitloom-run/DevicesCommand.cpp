//===- DevicesCommand.cpp - bitloom-run devices ---------------------------===//
//
// Lists the Vulkan devices, what each offers and which device profiles
// (runtime/hal/vulkan/DeviceProfile.h) it meets:
//
//   bitloom-run devices [--json] [--profile NAME]
//
// No Vulkan loader, no device, or a bitloom-run built without Vulkan: one
// "error: ..." line and exit status 1.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include <CLI/CLI.hpp>

#ifdef BITLOOM_RUN_HAVE_VULKAN
#include "hal/vulkan/DeviceProfile.h"
#include "hal/vulkan/VulkanDevices.h"

#include <nlohmann/json.hpp>
#endif

#include <cstdio>
#include <stdexcept>
#include <string>

namespace bitloom::run {

void addDevicesCommand(CLI::App &app, DevicesArgs &a) {
  auto *cmd = app.add_subcommand(
      "devices", "list the Vulkan devices and the device profiles they meet");
  cmd->add_flag("--json", a.json, "print one JSON object per device (a line)");
  cmd->add_option("--profile", a.profile,
                  "also say what each device lacks for this profile");
}

#ifdef BITLOOM_RUN_HAVE_VULKAN

namespace {

using namespace bitloom::vulkan;

std::string join(const std::vector<std::string> &items) {
  std::string s;
  for (const std::string &item : items)
    s += (s.empty() ? "" : ", ") + item;
  return s;
}

std::string hex(uint32_t value) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%x", value);
  return buf;
}

std::vector<std::string> features(const DeviceInfo &d) {
  std::vector<std::string> f;
  if (d.shaderInt8)
    f.push_back("int8");
  if (d.shaderFloat16)
    f.push_back("fp16");
  if (d.storageBuffer8BitAccess)
    f.push_back("8-bit storage");
  if (d.storageBuffer16BitAccess)
    f.push_back("16-bit storage");
  if (d.integerDotProduct)
    f.push_back("int8 dot product");
  else if (d.integerDotProductExtension)
    f.push_back("VK_KHR_shader_integer_dot_product (feature off)");
  if (d.cooperativeMatrixInt8)
    f.push_back("int8 cooperative matrix");
  if (d.cooperativeMatrixF16)
    f.push_back("f16 cooperative matrix");
  return f;
}

nlohmann::ordered_json toJson(const DeviceInfo &d) {
  nlohmann::ordered_json j;
  j["index"] = d.index;
  j["name"] = d.name;
  j["type"] = deviceTypeName(d.type);
  j["vendor_id"] = d.vendorId;
  j["device_id"] = d.deviceId;
  j["api_version"] = apiVersionString(d.apiVersion, true);
  j["driver_version"] = d.driverVersion;
  j["driver_name"] = d.driverName;
  j["driver_info"] = d.driverInfo;
  j["subgroup_size"] = d.subgroupSize;
  j["shader_int8"] = d.shaderInt8;
  j["shader_float16"] = d.shaderFloat16;
  j["storage_buffer_8bit_access"] = d.storageBuffer8BitAccess;
  j["storage_buffer_16bit_access"] = d.storageBuffer16BitAccess;
  j["integer_dot_product_extension"] = d.integerDotProductExtension;
  j["integer_dot_product"] = d.integerDotProduct;
  j["cooperative_matrix_int8"] = d.cooperativeMatrixInt8;
  j["cooperative_matrix_f16"] = d.cooperativeMatrixF16;
  j["max_compute_shared_memory_size"] = d.maxComputeSharedMemorySize;
  j["max_compute_work_group_invocations"] = d.maxComputeWorkGroupInvocations;
  j["max_compute_work_group_size"] = d.maxComputeWorkGroupSize;
  j["max_storage_buffer_range"] = d.maxStorageBufferRange;
  j["max_storage_buffers_per_stage"] = d.maxPerStageDescriptorStorageBuffers;
  j["min_storage_buffer_offset_alignment"] = d.minStorageBufferOffsetAlignment;
  j["max_compute_work_group_count"] = d.maxComputeWorkGroupCount;
  j["max_push_constants_size"] = d.maxPushConstantsSize;
  j["device_local_heap_size"] = d.deviceLocalHeapSize;
  j["profiles_met"] = profilesMet(d);
  return j;
}

} // namespace

int runDevices(const DevicesArgs &args) {
  const DeviceProfile *profile =
      args.profile.empty() ? nullptr : &findProfile(args.profile);
  std::vector<DeviceInfo> devices;
  try {
    devices = enumerateDevices();
  } catch (const VulkanError &e) {
    throw std::runtime_error(std::string("no Vulkan: ") + e.what());
  }
  if (devices.empty())
    throw std::runtime_error("no Vulkan device found (is a Vulkan driver "
                             "installed? lavapipe is mesa-vulkan-drivers)");
  for (const DeviceInfo &d : devices) {
    if (args.json) {
      nlohmann::ordered_json j = toJson(d);
      if (profile)
        j["missing"] = {{profile->name, missingCapabilities(d, *profile)}};
      std::printf("%s\n", j.dump().c_str());
      continue;
    }
    std::string driver =
        d.driverName.empty() ? std::string("unknown") : d.driverName;
    if (!d.driverInfo.empty())
      driver += " " + d.driverInfo;
    std::printf("%u: %s (%s, Vulkan %s, driver %s)\n", d.index, d.name.c_str(),
                deviceTypeName(d.type), apiVersionString(d.apiVersion).c_str(),
                driver.c_str());
    std::printf("   vendor %s, device %s, subgroup %u, shared memory %s, "
                "workgroup invocations %u (%u x %u x %u), storage buffer "
                "range %s (%u per kernel), device-local heap %s\n",
                hex(d.vendorId).c_str(), hex(d.deviceId).c_str(),
                d.subgroupSize,
                formatBytes(d.maxComputeSharedMemorySize).c_str(),
                d.maxComputeWorkGroupInvocations, d.maxComputeWorkGroupSize[0],
                d.maxComputeWorkGroupSize[1], d.maxComputeWorkGroupSize[2],
                formatBytes(d.maxStorageBufferRange).c_str(),
                d.maxPerStageDescriptorStorageBuffers,
                formatBytes(d.deviceLocalHeapSize).c_str());
    std::vector<std::string> f = features(d);
    std::printf("   features: %s\n", f.empty() ? "none" : join(f).c_str());
    std::vector<std::string> met = profilesMet(d);
    std::printf("   profiles met: %s\n",
                met.empty() ? "none" : join(met).c_str());
    if (profile) {
      std::vector<std::string> missing = missingCapabilities(d, *profile);
      if (missing.empty())
        std::printf("   profile %s: met\n", profile->name.c_str());
      for (const std::string &line : missing)
        std::printf("   profile %s: %s\n", profile->name.c_str(), line.c_str());
    }
  }
  return 0;
}

#else

int runDevices(const DevicesArgs &) {
  throw std::runtime_error("this bitloom-run was built without Vulkan (the "
                           "Vulkan package was not found at configure time)");
}

#endif

} // namespace bitloom::run

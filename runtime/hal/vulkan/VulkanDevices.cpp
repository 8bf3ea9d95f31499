//===- VulkanDevices.cpp - Vulkan instance and device enumeration ---------===//
#include "hal/vulkan/VulkanDevices.h"
#include "hal/vulkan/CooperativeMatrix.h"

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstring>

namespace bitloom::vulkan {

const char *deviceTypeName(DeviceType type) {
  switch (type) {
  case DeviceType::IntegratedGpu:
    return "integrated GPU";
  case DeviceType::DiscreteGpu:
    return "discrete GPU";
  case DeviceType::VirtualGpu:
    return "virtual GPU";
  case DeviceType::Cpu:
    return "CPU";
  case DeviceType::Other:
    break;
  }
  return "other";
}

std::string apiVersionString(uint32_t version, bool withPatch) {
  std::string s = std::to_string(VK_API_VERSION_MAJOR(version)) + "." +
                  std::to_string(VK_API_VERSION_MINOR(version));
  if (withPatch)
    s += "." + std::to_string(VK_API_VERSION_PATCH(version));
  return s;
}

std::string vkResultName(int32_t result) {
  switch (VkResult(result)) {
#define BITLOOM_VK_RESULT(name)                                                \
  case name:                                                                   \
    return #name;
    BITLOOM_VK_RESULT(VK_SUCCESS)
    BITLOOM_VK_RESULT(VK_NOT_READY)
    BITLOOM_VK_RESULT(VK_TIMEOUT)
    BITLOOM_VK_RESULT(VK_EVENT_SET)
    BITLOOM_VK_RESULT(VK_EVENT_RESET)
    BITLOOM_VK_RESULT(VK_INCOMPLETE)
    BITLOOM_VK_RESULT(VK_ERROR_OUT_OF_HOST_MEMORY)
    BITLOOM_VK_RESULT(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    BITLOOM_VK_RESULT(VK_ERROR_INITIALIZATION_FAILED)
    BITLOOM_VK_RESULT(VK_ERROR_DEVICE_LOST)
    BITLOOM_VK_RESULT(VK_ERROR_MEMORY_MAP_FAILED)
    BITLOOM_VK_RESULT(VK_ERROR_LAYER_NOT_PRESENT)
    BITLOOM_VK_RESULT(VK_ERROR_EXTENSION_NOT_PRESENT)
    BITLOOM_VK_RESULT(VK_ERROR_FEATURE_NOT_PRESENT)
    BITLOOM_VK_RESULT(VK_ERROR_INCOMPATIBLE_DRIVER)
    BITLOOM_VK_RESULT(VK_ERROR_TOO_MANY_OBJECTS)
    BITLOOM_VK_RESULT(VK_ERROR_FORMAT_NOT_SUPPORTED)
    BITLOOM_VK_RESULT(VK_ERROR_FRAGMENTED_POOL)
    BITLOOM_VK_RESULT(VK_ERROR_UNKNOWN)
    BITLOOM_VK_RESULT(VK_ERROR_OUT_OF_POOL_MEMORY)
    BITLOOM_VK_RESULT(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    BITLOOM_VK_RESULT(VK_ERROR_FRAGMENTATION)
    BITLOOM_VK_RESULT(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
#undef BITLOOM_VK_RESULT
  default:
    break;
  }
  return "VkResult " + std::to_string(result);
}

namespace {

void check(VkResult result, const char *call) {
  // VK_INCOMPLETE is not an error: the caller asked for a count first.
  if (result != VK_SUCCESS && result != VK_INCOMPLETE)
    throw VulkanError(std::string(call) + " failed: " + vkResultName(result));
}

/// The Vulkan entry points this slice uses, loaded through
/// vkGetInstanceProcAddr.
struct Api {
  PFN_vkGetInstanceProcAddr getInstanceProcAddr = nullptr;
  PFN_vkEnumerateInstanceVersion enumerateInstanceVersion = nullptr;
  PFN_vkCreateInstance createInstance = nullptr;
  PFN_vkDestroyInstance destroyInstance = nullptr;
  PFN_vkEnumeratePhysicalDevices enumeratePhysicalDevices = nullptr;
  PFN_vkGetPhysicalDeviceProperties getProperties = nullptr;
  PFN_vkGetPhysicalDeviceProperties2 getProperties2 = nullptr;
  PFN_vkGetPhysicalDeviceFeatures2 getFeatures2 = nullptr;
  PFN_vkGetPhysicalDeviceMemoryProperties getMemoryProperties = nullptr;
  PFN_vkEnumerateDeviceExtensionProperties enumerateDeviceExtensions = nullptr;
  /// VK_KHR_cooperative_matrix's query; null where the loader lacks it.
  PFN_vkVoidFunction getCooperativeMatrixProperties = nullptr;
};

template <typename Fn>
Fn load(const Api &api, VkInstance instance, const char *name) {
  auto fn = reinterpret_cast<Fn>(api.getInstanceProcAddr(instance, name));
  if (!fn)
    throw VulkanError(std::string("the Vulkan loader has no ") + name);
  return fn;
}

bool hasExtension(const std::vector<VkExtensionProperties> &extensions,
                  const char *name) {
  return std::any_of(extensions.begin(), extensions.end(),
                     [&](const VkExtensionProperties &e) {
                       return std::strcmp(e.extensionName, name) == 0;
                     });
}

} // namespace

struct VulkanInstance::Impl {
  void *library = nullptr;
  Api api;
  VkInstance instance = VK_NULL_HANDLE;
  uint32_t apiVersion = 0;

  ~Impl() {
    if (instance != VK_NULL_HANDLE && api.destroyInstance)
      api.destroyInstance(instance, nullptr);
    if (library)
      dlclose(library);
  }

  DeviceInfo describe(VkPhysicalDevice device, uint32_t index) const;
};

VulkanInstance::VulkanInstance(const std::string &loaderPath)
    : impl(std::make_unique<Impl>()) {
  const char *candidates[] = {"libvulkan.so.1", "libvulkan.so"};
  if (!loaderPath.empty()) {
    impl->library = dlopen(loaderPath.c_str(), RTLD_NOW | RTLD_LOCAL);
  } else {
    for (const char *name : candidates)
      if ((impl->library = dlopen(name, RTLD_NOW | RTLD_LOCAL)))
        break;
  }
  if (!impl->library) {
    const char *why = dlerror();
    throw VulkanError(
        "cannot load the Vulkan loader (" +
        (loaderPath.empty() ? std::string("libvulkan.so.1") : loaderPath) +
        ")" + (why ? std::string(": ") + why : std::string()));
  }
  Api &api = impl->api;
  api.getInstanceProcAddr = reinterpret_cast<PFN_vkGetInstanceProcAddr>(
      dlsym(impl->library, "vkGetInstanceProcAddr"));
  if (!api.getInstanceProcAddr)
    throw VulkanError("the Vulkan loader has no vkGetInstanceProcAddr");

  // vkEnumerateInstanceVersion is absent from 1.0 loaders.
  api.enumerateInstanceVersion =
      reinterpret_cast<PFN_vkEnumerateInstanceVersion>(api.getInstanceProcAddr(
          VK_NULL_HANDLE, "vkEnumerateInstanceVersion"));
  uint32_t loaderVersion = VK_API_VERSION_1_0;
  if (api.enumerateInstanceVersion)
    check(api.enumerateInstanceVersion(&loaderVersion),
          "vkEnumerateInstanceVersion");
  if (loaderVersion < VK_API_VERSION_1_1)
    throw VulkanError("the Vulkan loader offers API " +
                      apiVersionString(loaderVersion) +
                      "; bitloom needs Vulkan 1.1");
  impl->apiVersion = std::min<uint32_t>(loaderVersion, VK_API_VERSION_1_3);

  api.createInstance =
      load<PFN_vkCreateInstance>(api, VK_NULL_HANDLE, "vkCreateInstance");
  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "bitloom";
  app.pEngineName = "bitloom";
  app.apiVersion = impl->apiVersion;
  VkInstanceCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  info.pApplicationInfo = &app;
  VkResult created = api.createInstance(&info, nullptr, &impl->instance);
  if (created == VK_ERROR_INCOMPATIBLE_DRIVER)
    throw VulkanError("no Vulkan driver found (vkCreateInstance failed: "
                      "VK_ERROR_INCOMPATIBLE_DRIVER)");
  check(created, "vkCreateInstance");

  VkInstance inst = impl->instance;
  api.destroyInstance =
      load<PFN_vkDestroyInstance>(api, inst, "vkDestroyInstance");
  api.enumeratePhysicalDevices = load<PFN_vkEnumeratePhysicalDevices>(
      api, inst, "vkEnumeratePhysicalDevices");
  api.getProperties = load<PFN_vkGetPhysicalDeviceProperties>(
      api, inst, "vkGetPhysicalDeviceProperties");
  api.getProperties2 = load<PFN_vkGetPhysicalDeviceProperties2>(
      api, inst, "vkGetPhysicalDeviceProperties2");
  api.getFeatures2 = load<PFN_vkGetPhysicalDeviceFeatures2>(
      api, inst, "vkGetPhysicalDeviceFeatures2");
  api.getMemoryProperties = load<PFN_vkGetPhysicalDeviceMemoryProperties>(
      api, inst, "vkGetPhysicalDeviceMemoryProperties");
  api.enumerateDeviceExtensions =
      load<PFN_vkEnumerateDeviceExtensionProperties>(
          api, inst, "vkEnumerateDeviceExtensionProperties");
  api.getCooperativeMatrixProperties = api.getInstanceProcAddr(
      inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
}

VulkanInstance::~VulkanInstance() = default;

uint32_t VulkanInstance::apiVersion() const { return impl->apiVersion; }

void *VulkanInstance::nativeHandle() const {
  return reinterpret_cast<void *>(impl->instance);
}

void *VulkanInstance::getInstanceProcAddr() const {
  return reinterpret_cast<void *>(impl->api.getInstanceProcAddr);
}

std::vector<DeviceInfo> VulkanInstance::devices() const {
  uint32_t count = 0;
  check(impl->api.enumeratePhysicalDevices(impl->instance, &count, nullptr),
        "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> handles(count);
  check(impl->api.enumeratePhysicalDevices(impl->instance, &count,
                                           handles.data()),
        "vkEnumeratePhysicalDevices");
  handles.resize(count);
  std::vector<DeviceInfo> out;
  for (uint32_t i = 0; i < count; ++i)
    out.push_back(impl->describe(handles[i], i));
  return out;
}

DeviceInfo VulkanInstance::Impl::describe(VkPhysicalDevice device,
                                          uint32_t index) const {
  DeviceInfo d;
  d.index = index;

  VkPhysicalDeviceProperties base{};
  api.getProperties(device, &base);
  d.name = base.deviceName;
  d.vendorId = base.vendorID;
  d.deviceId = base.deviceID;
  d.apiVersion = base.apiVersion;
  d.driverVersion = base.driverVersion;
  switch (base.deviceType) {
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
    d.type = DeviceType::IntegratedGpu;
    break;
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
    d.type = DeviceType::DiscreteGpu;
    break;
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
    d.type = DeviceType::VirtualGpu;
    break;
  case VK_PHYSICAL_DEVICE_TYPE_CPU:
    d.type = DeviceType::Cpu;
    break;
  default:
    d.type = DeviceType::Other;
    break;
  }
  const VkPhysicalDeviceLimits &limits = base.limits;
  d.maxComputeSharedMemorySize = limits.maxComputeSharedMemorySize;
  d.maxComputeWorkGroupInvocations = limits.maxComputeWorkGroupInvocations;
  for (int k = 0; k < 3; ++k)
    d.maxComputeWorkGroupSize[k] = limits.maxComputeWorkGroupSize[k];
  d.maxStorageBufferRange = limits.maxStorageBufferRange;
  d.maxPerStageDescriptorStorageBuffers =
      limits.maxPerStageDescriptorStorageBuffers;
  d.minStorageBufferOffsetAlignment = limits.minStorageBufferOffsetAlignment;
  for (int k = 0; k < 3; ++k)
    d.maxComputeWorkGroupCount[k] = limits.maxComputeWorkGroupCount[k];
  d.maxPushConstantsSize = limits.maxPushConstantsSize;

  uint32_t extCount = 0;
  check(api.enumerateDeviceExtensions(device, nullptr, &extCount, nullptr),
        "vkEnumerateDeviceExtensionProperties");
  std::vector<VkExtensionProperties> extensions(extCount);
  check(api.enumerateDeviceExtensions(device, nullptr, &extCount,
                                      extensions.data()),
        "vkEnumerateDeviceExtensionProperties");
  extensions.resize(extCount);

  // A 1.0 device cannot take the 1.1 queries below; report what 1.0 has.
  if (d.apiVersion < VK_API_VERSION_1_1)
    return d;
  const bool v12 = d.apiVersion >= VK_API_VERSION_1_2;
  const bool v13 = d.apiVersion >= VK_API_VERSION_1_3;
  const bool hasDriverProps =
      v12 || hasExtension(extensions, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
  const bool has8BitStorage =
      v12 || hasExtension(extensions, VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
  const bool hasFloat16Int8 =
      v12 ||
      hasExtension(extensions, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  d.integerDotProductExtension =
      v13 || hasExtension(extensions,
                          VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  const bool hasCooperativeMatrix =
      api.getCooperativeMatrixProperties &&
      hasExtension(extensions, VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME);

  // Properties: subgroup (1.1 core) and driver (1.2 / KHR).
  VkPhysicalDeviceSubgroupProperties subgroup{};
  subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
  VkPhysicalDeviceDriverProperties driver{};
  driver.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
  if (hasDriverProps)
    subgroup.pNext = &driver;
  VkPhysicalDeviceProperties2 props2{};
  props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  props2.pNext = &subgroup;
  api.getProperties2(device, &props2);
  d.subgroupSize = subgroup.subgroupSize;
  if (hasDriverProps) {
    d.driverName = driver.driverName;
    d.driverInfo = driver.driverInfo;
  }

  // Features: 16-bit storage (1.1 core), 8-bit storage and float16/int8
  // (1.2 or their KHR extensions), integer dot product (1.3 or KHR). The
  // KHR structs share the core ones' sType values.
  VkPhysicalDeviceFeatures2 features2{};
  features2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  void **tail = &features2.pNext;
  VkPhysicalDevice16BitStorageFeatures storage16{};
  storage16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
  *tail = &storage16;
  tail = &storage16.pNext;
  VkPhysicalDevice8BitStorageFeatures storage8{};
  storage8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES;
  if (has8BitStorage) {
    *tail = &storage8;
    tail = &storage8.pNext;
  }
  VkPhysicalDeviceShaderFloat16Int8Features float16Int8{};
  float16Int8.sType =
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  if (hasFloat16Int8) {
    *tail = &float16Int8;
    tail = &float16Int8.pNext;
  }
  VkPhysicalDeviceShaderIntegerDotProductFeatures dot{};
  dot.sType =
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES;
  if (d.integerDotProductExtension) {
    *tail = &dot;
    tail = &dot.pNext;
  }
  VkPhysicalDeviceCooperativeMatrixFeaturesKHR cooperative{};
  cooperative.sType =
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR;
  if (hasCooperativeMatrix) {
    *tail = &cooperative;
    tail = &cooperative.pNext;
  }
  api.getFeatures2(device, &features2);
  d.storageBuffer16BitAccess = storage16.storageBuffer16BitAccess;
  d.storageBuffer8BitAccess = storage8.storageBuffer8BitAccess;
  d.shaderFloat16 = float16Int8.shaderFloat16;
  d.shaderInt8 = float16Int8.shaderInt8;
  d.shaderFloat64 = features2.features.shaderFloat64;
  d.integerDotProduct = dot.shaderIntegerDotProduct;
  if (hasCooperativeMatrix && cooperative.cooperativeMatrix) {
    auto query =
        reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR>(
            api.getCooperativeMatrixProperties);
    uint32_t count = 0;
    if (query(device, &count, nullptr) == VK_SUCCESS && count > 0) {
      std::vector<VkCooperativeMatrixPropertiesKHR> shapes(count);
      for (VkCooperativeMatrixPropertiesKHR &s : shapes)
        s.sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR;
      if (query(device, &count, shapes.data()) >= VK_SUCCESS)
        for (uint32_t i = 0; i < count; ++i) {
          const VkCooperativeMatrixPropertiesKHR &s = shapes[i];
          if (s.MSize == 16 && s.NSize == 16 && s.KSize == 32 &&
              s.AType == VK_COMPONENT_TYPE_SINT8_KHR &&
              s.BType == VK_COMPONENT_TYPE_SINT8_KHR &&
              s.CType == VK_COMPONENT_TYPE_SINT32_KHR &&
              s.ResultType == VK_COMPONENT_TYPE_SINT32_KHR &&
              !s.saturatingAccumulation && s.scope == VK_SCOPE_SUBGROUP_KHR)
            d.cooperativeMatrixInt8 = true;
          if (s.MSize == 16 && s.NSize == 16 && s.KSize == 16 &&
              s.AType == VK_COMPONENT_TYPE_FLOAT16_KHR &&
              s.BType == VK_COMPONENT_TYPE_FLOAT16_KHR &&
              s.CType == VK_COMPONENT_TYPE_FLOAT32_KHR &&
              s.ResultType == VK_COMPONENT_TYPE_FLOAT32_KHR &&
              s.scope == VK_SCOPE_SUBGROUP_KHR)
            d.cooperativeMatrixF16 = true;
        }
    }
  }

  VkPhysicalDeviceMemoryProperties memory{};
  api.getMemoryProperties(device, &memory);
  for (uint32_t h = 0; h < memory.memoryHeapCount; ++h)
    if (memory.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      d.deviceLocalHeapSize =
          std::max<uint64_t>(d.deviceLocalHeapSize, memory.memoryHeaps[h].size);
  return d;
}

std::vector<DeviceInfo> enumerateDevices() {
  return VulkanInstance().devices();
}

} // namespace bitloom::vulkan

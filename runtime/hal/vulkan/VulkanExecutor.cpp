//===- VulkanExecutor.cpp - Running a Vulkan .blm artifact ----------------===//
#include "hal/vulkan/VulkanExecutor.h"

#include "artifact/Artifact.h"
#include "artifact/Checksum.h"
#include "formats/Error.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <tuple>

namespace bitloom::vulkan {

namespace {

constexpr uint64_t MiB = uint64_t(1) << 20;
/// Tensors at least this large get a buffer of their own; smaller ones are
/// carved from pooled blocks, so that a model's hundreds of LoRA matrices,
/// moments and scales take a few allocations (drivers cap their number).
constexpr uint64_t kDedicatedBytes = 16 * MiB;
constexpr uint64_t kMinBlock = 1 * MiB, kMaxBlock = 64 * MiB;
/// Offsets of streamed tensors in their staging buffer.
constexpr uint64_t kStagingAlignment = 16;

uint64_t alignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::string num(uint64_t v) { return std::to_string(v); }

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

/// Rethrows `e` with `prefix` in front (and `strip` taken off the front of
/// its message), keeping its type: out-of-memory and device-lost stay
/// recognizable to callers.
[[noreturn]] void rethrow(const VulkanError &e, const std::string &prefix,
                          const std::string &strip = "") {
  std::string what = e.what();
  if (!strip.empty() && what.rfind(strip, 0) == 0)
    what = what.substr(strip.size());
  if (dynamic_cast<const VulkanOutOfMemory *>(&e))
    throw VulkanOutOfMemory(prefix + what);
  if (dynamic_cast<const VulkanDeviceLost *>(&e))
    throw VulkanDeviceLost(prefix + what);
  throw VulkanError(prefix + what);
}

std::string str(const flatbuffers::String *s) { return s ? s->str() : ""; }

/// "entry point train_step, dispatch 3 (loom.matmul)".
std::string dispatchField(const blm::fb::EntryPoint &ep, size_t d,
                          const blm::fb::Dispatch &dp) {
  std::string field =
      "entry point " + ep.name()->str() + ", dispatch " + num(d);
  if (dp.op() && dp.op()->size())
    field += " (" + dp.op()->str() + ")";
  return field;
}

/// Every (executable, kernel, buffers, push bytes) a dispatch uses.
using Use = std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>;
std::set<Use> kernelUses(const blm::Artifact &artifact) {
  std::set<Use> uses;
  for (size_t e = 0; e < artifact.numEntryPoints(); ++e) {
    const blm::fb::EntryPoint &ep = artifact.entryPoint(e);
    if (!ep.dispatches())
      continue;
    for (const blm::fb::Dispatch *d : *ep.dispatches())
      uses.insert({d->executable(), d->kernel(),
                   d->bindings() ? d->bindings()->size() : 0,
                   d->constants() ? d->constants()->size() * 4 : 0});
  }
  return uses;
}

} // namespace

bool isVulkanTarget(const std::string &target) {
  return target.rfind("vulkan-", 0) == 0;
}

std::string defaultPipelineCacheDir() {
  // XDG: a relative XDG_CACHE_HOME is invalid and is ignored.
  const char *xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && xdg[0] == '/')
    return std::string(xdg) + "/bitloom";
  const char *home = std::getenv("HOME");
  if (home && home[0])
    return std::string(home) + "/.cache/bitloom";
  return "";
}

std::string pipelineCacheKey(const blm::Artifact &artifact) {
  blm::Xxh64 h;
  auto add = [&](const std::string &s) {
    uint64_t n = s.size();
    h.update(&n, sizeof n);
    h.update(s.data(), s.size());
  };
  auto addU64 = [&](uint64_t v) { h.update(&v, sizeof v); };
  add(artifact.target().name);
  for (size_t i = 0; i < artifact.numExecutables(); ++i) {
    const blm::fb::Executable &exe = artifact.executable(i);
    add(str(exe.format()));
    addU64(artifact.blobChecksum(exe.blob()));
    if (exe.kernels())
      for (const blm::fb::Kernel *k : *exe.kernels())
        add(k->name()->str());
  }
  for (const Use &u : kernelUses(artifact)) {
    addU64(std::get<0>(u));
    addU64(std::get<1>(u));
    addU64(std::get<2>(u));
    addU64(std::get<3>(u));
  }
  return hex64(h.digest());
}

//===----------------------------------------------------------------------===//
// ExecutorEntry
//===----------------------------------------------------------------------===//

double EntryProfile::dispatchTotalNs() const {
  double total = 0;
  for (double ns : dispatchNs)
    total += ns;
  return total;
}

void *ExecutorEntry::input(size_t i) const {
  const Tensor &t = arguments_.at(i);
  if (!t.streamed)
    return nullptr;
  return static_cast<char *>(staging_.mapped()) + t.stagingOffset;
}

const void *ExecutorEntry::output(size_t i) const {
  const Tensor &t = results_.at(i);
  if (!t.streamed)
    return nullptr;
  return static_cast<const char *>(staging_.mapped()) + t.stagingOffset;
}

//===----------------------------------------------------------------------===//
// VulkanExecutor
//===----------------------------------------------------------------------===//

VulkanExecutor::VulkanExecutor(const blm::Artifact &artifact,
                               ExecutorOptions options)
    : artifact_(artifact), options_(std::move(options)) {
  checkTarget();
  buildPipelines();

  // The one arena every entry point's transient buffers live in.
  bool bindsArena = false;
  for (size_t e = 0; e < artifact_.numEntryPoints() && !bindsArena; ++e) {
    const blm::fb::EntryPoint &ep = artifact_.entryPoint(e);
    for (size_t d = 0; ep.dispatches() && d < ep.dispatches()->size(); ++d) {
      const blm::fb::Dispatch *dp = ep.dispatches()->Get(uint32_t(d));
      for (size_t k = 0; dp->bindings() && k < dp->bindings()->size(); ++k) {
        blm::BindingSource s = dp->bindings()->Get(uint32_t(k))->source();
        bindsArena |= s == blm::BindingSource::Arena ||
                      s == blm::BindingSource::ArenaSlot;
      }
    }
  }
  const blm::fb::MemoryPlan *plan = artifact_.memoryPlan();
  if (bindsArena && plan && plan->arena_size() > 0) {
    const uint64_t bytes = alignUp(plan->arena_size(), 4);
    try {
      arena_ = ctx_->allocate(bytes);
      // Zeroed once, as the CPU runtime's arena: runs do not depend on what
      // the driver left in the memory.
      ctx_->fill({BufferRange(arena_)});
    } catch (const VulkanError &e) {
      rethrow(e, artifact_.path() + ": memory_plan.arena_size (" +
                     humanBytes(plan->arena_size()) + "): ");
    }
    memory_.arena = plan->arena_size();
    memory_.allocated += bytes;
  }
}

VulkanExecutor::~VulkanExecutor() = default;

void VulkanExecutor::warn(const std::string &message) const {
  if (options_.warn)
    options_.warn(message);
  else
    std::fprintf(stderr, "warning: %s\n", message.c_str());
}

void VulkanExecutor::checkTarget() {
  const std::string &path = artifact_.path();
  const std::string target = artifact_.target().name;
  if (!isVulkanTarget(target))
    throw FormatError(path, "target.name",
                      "'" + target +
                          "' is not a Vulkan target (vulkan-<profile>)");
  try {
    profile_ = &findProfile(target.substr(7));
  } catch (const FormatError &e) {
    std::string known;
    for (const DeviceProfile &p : deviceProfiles())
      known += (known.empty() ? "" : ", ") + p.name;
    throw FormatError(path, "target.name",
                      "unknown device profile in '" + target +
                          "' (known: " + known + ")");
  }

  std::shared_ptr<VulkanInstance> instance = options_.instance;
  if (!instance)
    instance = std::make_shared<VulkanInstance>();
  std::vector<DeviceInfo> devices = instance->devices();
  const uint32_t index = options_.deviceIndex;
  if (index >= devices.size())
    throw VulkanError("no Vulkan device " + num(index) + " (there " +
                      (devices.size() == 1 ? "is " : "are ") +
                      num(devices.size()) +
                      "; `bitloom-run devices` lists them)");
  const DeviceInfo &info = devices[index];
  std::vector<std::string> missing = missingCapabilities(info, *profile_);
  if (!missing.empty()) {
    std::string lines;
    for (const std::string &m : missing)
      lines += (lines.empty() ? "" : "; ") + m;
    throw VulkanError(path + ": target " + target + ": device " + num(index) +
                      " (" + info.name + ") does not meet profile " +
                      profile_->name + ": " + lines);
  }
  // The kernels may use whatever their profile promises: enable it.
  DeviceFeatures features;
  features.shaderFloat64 = profile_->shaderFloat64;
  features.shaderInt8 = profile_->shaderInt8;
  features.shaderFloat16 = profile_->shaderFloat16;
  features.storageBuffer8BitAccess = profile_->storageBuffer8BitAccess;
  features.storageBuffer16BitAccess = profile_->storageBuffer16BitAccess;
  features.integerDotProduct = profile_->integerDotProduct;
  features.cooperativeMatrix =
      profile_->cooperativeMatrixInt8 || profile_->cooperativeMatrixF16;
  ctx_ = std::make_unique<VulkanContext>(index, instance, features);
  alignment_ = std::max<uint64_t>(64, info.minStorageBufferOffsetAlignment);
}

void VulkanExecutor::buildPipelines() {
  const std::string &path = artifact_.path();
  const DeviceInfo &info = ctx_->device();
  // One layout per kernel: every dispatch of it must bind as many buffers
  // and push as many constants.
  for (size_t e = 0; e < artifact_.numEntryPoints(); ++e) {
    const blm::fb::EntryPoint &ep = artifact_.entryPoint(e);
    for (size_t d = 0; ep.dispatches() && d < ep.dispatches()->size(); ++d) {
      const blm::fb::Dispatch &dp = *ep.dispatches()->Get(uint32_t(d));
      KernelKey key{dp.executable(), dp.kernel()};
      KernelLayout layout;
      layout.numBuffers = dp.bindings() ? dp.bindings()->size() : 0;
      layout.pushBytes = dp.constants() ? dp.constants()->size() * 4 : 0;
      layout.firstUse = dispatchField(ep, d, dp);
      auto [it, added] = layouts_.emplace(key, layout);
      if (!added && (it->second.numBuffers != layout.numBuffers ||
                     it->second.pushBytes != layout.pushBytes))
        throw FormatError(
            path, layout.firstUse,
            "binds " + num(layout.numBuffers) + " buffers and pushes " +
                num(layout.pushBytes) + " bytes of constants, but " +
                it->second.firstUse + " runs the same kernel with " +
                num(it->second.numBuffers) + " and " +
                num(it->second.pushBytes));
    }
  }

  PipelineCache cache;
  if (options_.diskPipelineCache) {
    cachePath_ = options_.pipelineCachePath;
    if (cachePath_.empty()) {
      std::string dir = defaultPipelineCacheDir();
      if (!dir.empty())
        cachePath_ = dir + "/pipelines-" + pipelineCacheKey(artifact_) + ".bin";
    }
  }
  cache = ctx_->createPipelineCache(cachePath_);
  if (!cache.loadProblem().empty())
    warn("pipeline cache " + cachePath_ + ": " + cache.loadProblem() +
         "; building the pipelines anew");
  cacheLoaded_ = cache.loadedBytes();

  std::map<uint32_t, std::vector<uint32_t>> code;
  for (const auto &[key, layout] : layouts_) {
    const blm::fb::Executable &exe = artifact_.executable(key.executable);
    const std::string field =
        "executable " + num(key.executable) +
        (exe.name() ? " (" + exe.name()->str() + ")" : std::string());
    auto found = code.find(key.executable);
    if (found == code.end()) {
      const std::string format = str(exe.format());
      if (format != "spirv")
        throw FormatError(path, field,
                          "format '" + format +
                              "' in a Vulkan artifact (expected spirv)");
      const std::string exeTarget = str(exe.target());
      if (!exeTarget.empty() && exeTarget != artifact_.target().name)
        throw FormatError(path, field,
                          "compiled for " + exeTarget +
                              ", but the artifact "
                              "targets " +
                              artifact_.target().name);
      blm::ByteSpan bytes = artifact_.executableData(key.executable);
      if (bytes.size() < 20 || bytes.size() % 4 != 0)
        throw FormatError(path, field,
                          "a SPIR-V module of " + num(bytes.size()) +
                              " bytes (whole 32-bit words, at least a "
                              "header)");
      // Blob bytes are little-endian words, as the hosts this runs on.
      std::vector<uint32_t> words(bytes.size() / 4);
      std::memcpy(words.data(), bytes.data(), bytes.size());
      if (words[0] != 0x07230203u)
        throw FormatError(path, field, "not SPIR-V (no magic number)");
      found = code.emplace(key.executable, std::move(words)).first;
    }
    const blm::fb::Kernel &kernel = *exe.kernels()->Get(key.kernel);
    const std::string kernelField = field + ", kernel " + kernel.name()->str();
    if (const blm::fb::Dim3 *size = kernel.workgroup_size()) {
      const uint64_t invocations = uint64_t(size->x()) * size->y() * size->z();
      const uint32_t dims[3] = {size->x(), size->y(), size->z()};
      bool tooLarge = invocations > info.maxComputeWorkGroupInvocations;
      for (int k = 0; k < 3; ++k)
        tooLarge |= dims[k] > info.maxComputeWorkGroupSize[k];
      if (tooLarge)
        throw VulkanError(
            path + ": " + kernelField + ": workgroup size " + num(size->x()) +
            " x " + num(size->y()) + " x " + num(size->z()) +
            " exceeds device " + num(info.index) + " (" + info.name +
            "): at most " + num(info.maxComputeWorkGroupInvocations) +
            " invocations, " + num(info.maxComputeWorkGroupSize[0]) + " x " +
            num(info.maxComputeWorkGroupSize[1]) + " x " +
            num(info.maxComputeWorkGroupSize[2]));
    }
    try {
      pipelines_[key] =
          ctx_->createPipeline(found->second, layout.numBuffers,
                               layout.pushBytes, kernel.name()->str(), cache);
    } catch (const VulkanError &e) {
      rethrow(e, path + ": " + kernelField + ": ");
    }
  }
  if (!cachePath_.empty()) {
    std::string problem = cache.save();
    if (!problem.empty())
      warn("cannot write the pipeline cache " + cachePath_ + ": " + problem);
  }
}

BufferRange VulkanExecutor::allocateDevice(uint64_t bytes) {
  const uint64_t rounded = alignUp(std::max<uint64_t>(bytes, 4), alignment_);
  if (rounded >= kDedicatedBytes) {
    Buffer buffer = ctx_->allocate(rounded);
    ctx_->fill({BufferRange(buffer)});
    memory_.allocated += rounded;
    return BufferRange(buffer, 0, std::max<uint64_t>(bytes, 4));
  }
  if (!pool_ || poolUsed_ + rounded > pool_.size()) {
    // Blocks grow geometrically: small artifacts stay small, large ones
    // take few allocations.
    const uint64_t previous = pool_ ? pool_.size() : kMinBlock / 2;
    const uint64_t size = std::max(
        rounded, std::min(kMaxBlock, std::max(kMinBlock, 2 * previous)));
    pool_ = ctx_->allocate(size);
    // Every tensor starts zeroed (state before its first upload, results a
    // kernel writes only in part).
    ctx_->fill({BufferRange(pool_)});
    poolUsed_ = 0;
    memory_.allocated += size;
  }
  BufferRange range(pool_, poolUsed_, std::max<uint64_t>(bytes, 4));
  poolUsed_ += rounded;
  return range;
}

BufferRange VulkanExecutor::stateBuffer(const std::string &name,
                                        uint64_t bytes) {
  auto it = state_.find(name);
  if (it != state_.end()) {
    if (it->second.bytes() != std::max<uint64_t>(bytes, 4))
      throw VulkanError("state " + name + ": " + num(bytes) +
                        " bytes asked for, but it has " +
                        num(it->second.bytes()));
    return it->second;
  }
  BufferRange range;
  try {
    range = allocateDevice(bytes);
  } catch (const VulkanError &e) {
    rethrow(e, artifact_.path() + ": state " + name + " (" + humanBytes(bytes) +
                   "): ");
  }
  memory_.state += bytes;
  return state_[name] = range;
}

const BufferRange *VulkanExecutor::findState(const std::string &name) const {
  auto it = state_.find(name);
  return it == state_.end() ? nullptr : &it->second;
}

void VulkanExecutor::uploadParameters(const std::vector<uint32_t> &indices) {
  std::vector<HostCopy> copies;
  std::vector<std::pair<uint32_t, BufferRange>> added;
  for (uint32_t index : indices) {
    if (parameters_.count(index))
      continue;
    blm::ByteSpan data = artifact_.parameterData(index);
    BufferRange range;
    try {
      range = allocateDevice(data.size());
    } catch (const VulkanError &e) {
      rethrow(e, artifact_.path() + ": parameter " +
                     artifact_.parameter(index).name()->str() + " (" +
                     humanBytes(data.size()) + "): ");
    }
    if (data.size())
      copies.push_back({BufferRange(range.buffer, range.offset, data.size()),
                        const_cast<uint8_t *>(data.data())});
    parameters_[index] = range;
    memory_.parameters += data.size();
  }
  // One batch: a model's hundreds of weights in few submissions.
  try {
    ctx_->upload(copies);
  } catch (const VulkanError &e) {
    rethrow(e, artifact_.path() + ": uploading the weights: ");
  }
}

ExecutorEntry *VulkanExecutor::findEntry(const std::string &name) {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.get();
}

ExecutorEntry &
VulkanExecutor::prepare(const std::string &name,
                        const std::vector<TensorBinding> &arguments,
                        const std::vector<TensorBinding> &results) {
  const std::string &path = artifact_.path();
  if (entries_.count(name))
    throw VulkanError("entry point " + name + " is already prepared");
  const blm::fb::EntryPoint *ep = artifact_.findEntryPoint(name);
  if (!ep)
    throw FormatError(path, name, "the artifact has no such entry point");
  size_t index = 0;
  while (&artifact_.entryPoint(index) != ep)
    ++index;
  const size_t nargs = ep->arguments() ? ep->arguments()->size() : 0;
  const size_t nresults = ep->results() ? ep->results()->size() : 0;
  if (arguments.size() != nargs || results.size() != nresults)
    throw VulkanError("prepare " + name + ": " + num(arguments.size()) +
                      " argument and " + num(results.size()) +
                      " result bindings for an entry point of " + num(nargs) +
                      " arguments and " + num(nresults) + " results");

  auto entry = std::make_unique<ExecutorEntry>();
  entry->name_ = name;
  entry->index_ = index;
  uint64_t stagingBytes = 0;
  auto bind = [&](const TensorBinding &b, const char *kind, size_t i,
                  const blm::fb::TensorSig *sig) {
    ExecutorEntry::Tensor t;
    if (b.device) {
      if (b.device.bytes() < b.bytes)
        throw VulkanError("prepare " + name + ": " + kind + " " + num(i) +
                          " (" + sig->name()->str() + "): a device range of " +
                          num(b.device.bytes()) + " bytes for " + num(b.bytes) +
                          " bytes");
      t.range = b.device;
      return t;
    }
    try {
      t.range = allocateDevice(b.bytes);
    } catch (const VulkanError &e) {
      rethrow(e, path + ": entry point " + name + ", " + kind + " " +
                     sig->name()->str() + " (" + humanBytes(b.bytes) + "): ");
    }
    t.range.size = b.bytes;
    t.streamed = true;
    t.stagingOffset = stagingBytes;
    stagingBytes = alignUp(stagingBytes + b.bytes, kStagingAlignment);
    memory_.entries += b.bytes;
    return t;
  };
  for (size_t i = 0; i < nargs; ++i)
    entry->arguments_.push_back(
        bind(arguments[i], "argument", i, ep->arguments()->Get(uint32_t(i))));
  for (size_t i = 0; i < nresults; ++i)
    entry->results_.push_back(
        bind(results[i], "result", i, ep->results()->Get(uint32_t(i))));
  if (stagingBytes > 0) {
    try {
      entry->staging_ = ctx_->allocate(stagingBytes, /*hostVisible=*/true);
    } catch (const VulkanError &e) {
      rethrow(e, path + ": entry point " + name + ", staging: ");
    }
    memory_.staging += stagingBytes;
  }

  // The weights this entry point binds, uploaded once for every entry.
  std::vector<uint32_t> weights;
  for (size_t d = 0; ep->dispatches() && d < ep->dispatches()->size(); ++d) {
    const blm::fb::Dispatch &dp = *ep->dispatches()->Get(uint32_t(d));
    for (size_t k = 0; dp.bindings() && k < dp.bindings()->size(); ++k) {
      const blm::fb::Binding &b = *dp.bindings()->Get(uint32_t(k));
      if (b.source() == blm::BindingSource::Parameter)
        weights.push_back(b.index());
    }
  }
  std::sort(weights.begin(), weights.end());
  weights.erase(std::unique(weights.begin(), weights.end()), weights.end());
  uploadParameters(weights);

  const blm::fb::MemoryPlan *plan = artifact_.memoryPlan();
  const size_t ndispatches = ep->dispatches() ? ep->dispatches()->size() : 0;
  entry->resolved_.reserve(ndispatches);
  entry->info_.reserve(ndispatches);
  for (size_t d = 0; d < ndispatches; ++d) {
    const blm::fb::Dispatch &dp = *ep->dispatches()->Get(uint32_t(d));
    const std::string field = dispatchField(*ep, d, dp);
    const size_t nbindings = dp.bindings() ? dp.bindings()->size() : 0;
    ExecutorEntry::Resolved r;
    std::vector<BufferRange> &ranges = r.ranges;
    ranges.assign(nbindings, BufferRange());
    r.writes.assign(nbindings, true);
    for (size_t k = 0; k < nbindings; ++k) {
      const blm::fb::Binding &b = *dp.bindings()->Get(uint32_t(k));
      const std::string bfield = field + ", binding " + num(k);
      // The object the binding points into, and its size.
      BufferRange base;
      uint64_t limit = 0;
      std::string what;
      switch (b.source()) {
      case blm::BindingSource::Arena:
        base = BufferRange(arena_, 0, plan ? plan->arena_size() : 0);
        limit = base.size;
        what = "the arena";
        break;
      case blm::BindingSource::ArenaSlot: {
        const blm::fb::Slot *slot = plan->slots()->Get(b.index());
        base = BufferRange(arena_, slot->offset(), slot->size());
        limit = slot->size();
        what = "arena slot " + num(b.index());
        break;
      }
      case blm::BindingSource::Parameter:
        base = parameters_.at(b.index());
        limit = artifact_.parameterData(b.index()).size();
        what = "parameter " + artifact_.parameter(b.index()).name()->str();
        break;
      case blm::BindingSource::Argument:
      case blm::BindingSource::Result: {
        const bool arg = b.source() == blm::BindingSource::Argument;
        const auto &list = arg ? entry->arguments_ : entry->results_;
        if (b.index() >= list.size())
          throw FormatError(path, bfield,
                            std::string(arg ? "argument " : "result ") +
                                num(b.index()) + " out of range");
        const blm::fb::TensorSig *sig =
            (arg ? ep->arguments() : ep->results())->Get(b.index());
        base = list[b.index()].range;
        limit = (arg ? arguments : results)[b.index()].bytes;
        what = std::string(arg ? "argument " : "result ") + num(b.index()) +
               " (" + sig->name()->str() + ")";
        if (arg && b.access() != blm::Access::Read)
          entry->arguments_[b.index()].written = true;
        break;
      }
      default:
        throw FormatError(path, bfield,
                          "unknown binding source " + num(uint8_t(b.source())));
      }
      if (!base.buffer)
        throw FormatError(path, bfield,
                          "binds " + what + ", which has no device memory");
      // Size 0: the rest of the object from the offset.
      const uint64_t size =
          b.size() ? b.size() : limit - std::min(limit, b.offset());
      if (b.offset() > limit || size > limit - b.offset() || size == 0)
        throw FormatError(path, bfield,
                          "range " + num(b.offset()) + " + " + num(size) +
                              " bytes does not fit " + what + " (" +
                              num(limit) + " bytes)");
      ranges[k] = BufferRange(base.buffer, base.offset + b.offset(), size);
      r.writes[k] = b.access() != blm::Access::Read;
    }
    if (dp.constants())
      r.constants.assign(dp.constants()->begin(), dp.constants()->end());
    const blm::fb::Executable &exe = artifact_.executable(dp.executable());
    const blm::fb::Kernel &kernel = *exe.kernels()->Get(dp.kernel());
    const blm::fb::Dim3 *grid = dp.workgroup_count();
    if (!grid)
      grid = kernel.workgroup_count();
    const uint32_t gx = grid ? grid->x() : 1, gy = grid ? grid->y() : 1,
                   gz = grid ? grid->z() : 1;
    r.pipeline = pipelines_.at({dp.executable(), dp.kernel()});
    entry->resolved_.push_back(std::move(r));
    DispatchInfo info;
    info.op = str(dp.op());
    info.kernel = kernel.name()->str();
    info.groups[0] = gx;
    info.groups[1] = gy;
    info.groups[2] = gz;
    entry->info_.push_back(std::move(info));
  }
  entry->numDispatches_ = ndispatches;
  entry->sequence_ = recordEntry(*entry, /*timestamps=*/false);
  ExecutorEntry &ref = *entry;
  entries_[name] = std::move(entry);
  return ref;
}

CommandSequence VulkanExecutor::recordEntry(const ExecutorEntry &entry,
                                            bool timestamps) {
  const size_t n = entry.resolved_.size();
  CommandSequence seq = ctx_->record(timestamps ? uint32_t(n + 3) : 0);
  // A barrier between every two dispatches, as before dependency tracking
  // (for timing the difference).
  if (const char *full = std::getenv("BITLOOM_VULKAN_FULL_BARRIERS");
      full && *full && std::string(full) != "0")
    seq.orderEveryDispatch();
  auto mark = [&] {
    if (timestamps)
      seq.timestamp();
  };
  mark();
  // Streamed arguments up, first thing in the step.
  for (const ExecutorEntry::Tensor &t : entry.arguments_)
    if (t.streamed && t.range.size > 0)
      seq.copy(entry.staging_, t.stagingOffset, t.range.buffer, t.range.offset,
               t.range.size);
  mark();
  for (size_t d = 0; d < n; ++d) {
    const ExecutorEntry::Resolved &r = entry.resolved_[d];
    const uint32_t *g = entry.info_[d].groups;
    try {
      seq.dispatch(r.pipeline, r.ranges, r.constants.data(),
                   r.constants.size() * 4, g[0], g[1], g[2], r.writes);
    } catch (const VulkanError &e) {
      const blm::fb::EntryPoint &ep = artifact_.entryPoint(entry.index_);
      rethrow(e,
              artifact_.path() + ": " +
                  dispatchField(ep, d, *ep.dispatches()->Get(uint32_t(d))) +
                  ": ",
              "dispatch: ");
    }
    mark();
  }
  // Streamed results down, last thing in the step.
  for (const ExecutorEntry::Tensor &t : entry.results_)
    if (t.streamed && t.range.size > 0)
      seq.copy(t.range.buffer, t.range.offset, entry.staging_, t.stagingOffset,
               t.range.size);
  mark();
  seq.finish();
  return seq;
}

std::string VulkanExecutor::profilingProblem() const {
  return ctx_->timestamps().problem;
}

EntryProfile VulkanExecutor::runProfiled(ExecutorEntry &entry) {
  const std::string where = artifact_.path() + ": entry point " + entry.name_;
  if (!ctx_->timestamps().supported)
    throw VulkanError(
        where + ": cannot time dispatches: " + ctx_->timestamps().problem);
  std::vector<double> t;
  try {
    if (!entry.profiled_)
      entry.profiled_ = recordEntry(entry, /*timestamps=*/true);
    ctx_->submitAndWait(entry.profiled_);
    t = entry.profiled_.timestampsNs();
  } catch (const VulkanError &e) {
    rethrow(e, where + ": ");
  }
  const size_t n = entry.resolved_.size();
  EntryProfile profile;
  profile.uploadNs = t[1] - t[0];
  profile.dispatchNs.resize(n);
  for (size_t d = 0; d < n; ++d)
    profile.dispatchNs[d] = t[d + 2] - t[d + 1];
  profile.downloadNs = t[n + 2] - t[n + 1];
  return profile;
}

void VulkanExecutor::run(ExecutorEntry &entry) {
  try {
    ctx_->submitAndWait(entry.sequence_);
  } catch (const VulkanError &e) {
    rethrow(e, artifact_.path() + ": entry point " + entry.name_ + ": ");
  }
}

} // namespace bitloom::vulkan

//===- Session.cpp - An opened artifact, its buffers and state ------------===//
#include "Session.h"

#include "formats/Error.h"
#include "hal/cpu/NativeLibrary.h"
#include "tokenizer/Tokenizer.h"

#ifdef BITLOOM_RUN_HAVE_VULKAN
#include "hal/vulkan/VulkanExecutor.h"
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

namespace bitloom::run {

namespace {

size_t elementSize(const std::string &dtype) {
  if (dtype == "f32" || dtype == "i32" || dtype == "u32")
    return 4;
  if (dtype == "f16" || dtype == "bf16" || dtype == "i16")
    return 2;
  if (dtype == "i8" || dtype == "u8")
    return 1;
  if (dtype == "f64" || dtype == "i64")
    return 8;
  return 0;
}

std::string hex64(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void bytes(const void *p, size_t n) {
    const auto *b = static_cast<const uint8_t *>(p);
    for (size_t i = 0; i < n; ++i)
      h = (h ^ b[i]) * 1099511628211ull;
  }
  void u64(uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; ++i)
      b[i] = uint8_t(v >> (8 * i));
    bytes(b, 8);
  }
  void str(const std::string &s) {
    u64(s.size());
    bytes(s.data(), s.size());
  }
};

bool isState(blm::Role role) {
  return role == blm::Role::Parameter || role == blm::Role::OptimizerState;
}

} // namespace

SessionOptions deviceOptions(int64_t device) {
  SessionOptions options;
  if (device < -1 || device > int64_t(UINT32_MAX))
    throw FormatError("", "--device",
                      "must be a device index (`bitloom-run devices` lists "
                      "them)");
  if (device >= 0)
    options.device = uint32_t(device);
  return options;
}

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

//===----------------------------------------------------------------------===//
// HostBuffer
//===----------------------------------------------------------------------===//

void HostBuffer::Free::operator()(uint8_t *p) const { std::free(p); }

HostBuffer::HostBuffer(std::string name, std::string dtype,
                       std::vector<int64_t> shape, blm::Role role,
                       size_t elementSize)
    : name_(std::move(name)), dtype_(std::move(dtype)),
      shape_(std::move(shape)), role_(role) {
  elements_ = 1;
  for (int64_t d : shape_)
    elements_ *= d;
  bytes_ = size_t(elements_) * elementSize;
  size_t rounded = (std::max<size_t>(bytes_, 1) + 63) / 64 * 64;
  storage_.reset(static_cast<uint8_t *>(std::aligned_alloc(64, rounded)));
  if (!storage_)
    throw std::bad_alloc();
  std::memset(storage_.get(), 0, rounded);
}

void HostBuffer::zero() {
  if (storage_)
    std::memset(storage_.get(), 0, bytes_);
}

//===----------------------------------------------------------------------===//
// Entry
//===----------------------------------------------------------------------===//

HostBuffer *Entry::input(const std::string &name) {
  auto it = argIndex_.find(name);
  if (it == argIndex_.end() || argSlot_[it->second] < 0)
    return nullptr;
  return &args_[size_t(argSlot_[it->second])];
}

HostBuffer &Entry::requireInput(const std::string &name) {
  HostBuffer *b = input(name);
  if (!b)
    throw FormatError("", name_, "entry point has no argument '" + name + "'");
  return *b;
}

HostBuffer *Entry::result(const std::string &name) {
  auto it = resultIndex_.find(name);
  if (it == resultIndex_.end())
    return nullptr;
  HostBuffer *state = resultState_[it->second];
  // State goes through the Session, which fetches it from the device.
  return state ? session_->state(state->name()) : &results_[it->second];
}

float Entry::scalar(const std::string &name) {
  HostBuffer *b = result(name);
  if (!b || b->dtype() != "f32" || b->elements() < 1)
    throw FormatError("", name_,
                      "entry point has no f32 result '" + name + "'");
  return b->f32()[0];
}

void Entry::setScalar(const std::string &name, float value) {
  if (HostBuffer *b = input(name))
    if (b->dtype() == "f32" && b->elements() >= 1)
      b->f32()[0] = value;
}

void Entry::setBatch(const trainer::Batch &batch) {
  HostBuffer &tokens = requireInput("tokens");
  HostBuffer &labels = requireInput("labels");
  HostBuffer &mask = requireInput("loss_mask");
  HostBuffer *positions = input("positions");
  int64_t rows = batch.rows, seqLen = batch.seqLen;
  if (tokens.elements() != rows * seqLen ||
      labels.elements() != rows * seqLen || mask.elements() != rows * seqLen)
    throw FormatError("", name_,
                      "batch of " + std::to_string(rows) + " x " +
                          std::to_string(seqLen) + " does not fit tokens " +
                          shapeText(tokens.shape()));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < seqLen; ++t) {
      size_t k = size_t(r * seqLen + t);
      tokens.i32()[k] = batch.ids[k];
      if (positions)
        positions->i32()[k] = int32_t(t);
      labels.i32()[k] = t + 1 < seqLen ? batch.ids[k + 1] : 0;
      mask.f32()[k] = t + 1 < seqLen ? batch.lossMask[k + 1] : 0.0f;
    }
}

size_t Entry::ownedBytes() const {
  size_t n = 0;
  for (const HostBuffer &b : args_)
    n += b.bytes();
  for (const HostBuffer &b : results_)
    n += b.bytes();
  return n;
}

int64_t Entry::tokensPerCall() const {
  auto it = argIndex_.find("tokens");
  if (it == argIndex_.end() || argSlot_[it->second] < 0)
    return 0;
  return args_[size_t(argSlot_[it->second])].elements();
}

//===----------------------------------------------------------------------===//
// Session
//===----------------------------------------------------------------------===//

#ifdef BITLOOM_RUN_HAVE_VULKAN
struct Session::Vulkan {
  std::unique_ptr<vulkan::VulkanExecutor> executor;
};
#else
struct Session::Vulkan {};
#endif

Session::Session(const std::string &path, const SessionOptions &options)
    : path_(path) {
  artifact_ = blm::Artifact::open(path);
  const std::string target = artifact_->target().name;
  if (target.rfind("vulkan-", 0) == 0) {
#ifdef BITLOOM_RUN_HAVE_VULKAN
    vulkan::ExecutorOptions vo;
    vo.deviceIndex = options.device.value_or(0);
    vo.pipelineCachePath = options.pipelineCache;
    vulkan_ = std::make_unique<Vulkan>();
    vulkan_->executor =
        std::make_unique<vulkan::VulkanExecutor>(*artifact_, std::move(vo));
#else
    throw FormatError(path_, "target.name",
                      target + ": this bitloom-run was built without Vulkan");
#endif
  } else if (options.device) {
    throw FormatError("", "--device",
                      "selects a Vulkan device, but " + path_ + " targets " +
                          target);
  }
  blm::CompileOptions shape = artifact_->compileOptions();
  seqLen_ = int64_t(shape.seqLen);
  batch_ = int64_t(shape.batchSize);
  blm::ModelConfig mc = artifact_->modelConfig();
  model_.vocabSize = int64_t(mc.vocabSize);
  model_.hiddenSize = int64_t(mc.hiddenSize);
  model_.intermediateSize = int64_t(mc.intermediateSize);
  model_.numLayers = int64_t(mc.numLayers);
  model_.numHeads = int64_t(mc.numHeads);
  model_.numKvHeads = int64_t(mc.numKvHeads);
  model_.headDim = int64_t(mc.headDim);
  model_.maxPositionEmbeddings = int64_t(mc.maxPositionEmbeddings);
  model_.rmsNormEps = mc.rmsNormEps;
  model_.ropeTheta = mc.ropeTheta;
  model_.tieWordEmbeddings = mc.tieWordEmbeddings;
  if (mc.bosTokenId >= 0)
    model_.bosTokenId = mc.bosTokenId;
  if (mc.eosTokenId >= 0)
    model_.eosTokenId = mc.eosTokenId;
  blm::LoraConfig lc = artifact_->loraConfig();
  lora_.rank = lc.rank;
  lora_.alpha = lc.alpha;
  lora_.dropout = lc.dropout;
  lora_.targets = lc.targets;
  lora_.baseModel = metadata("source_model");

  // Trainable parameters: role Parameter in any entry point, with one shape.
  for (size_t e = 0; e < artifact_->numEntryPoints(); ++e) {
    const blm::fb::EntryPoint &ep = artifact_->entryPoint(e);
    if (!ep.arguments())
      continue;
    for (const blm::fb::TensorSig *sig : *ep.arguments()) {
      if (sig->role() != blm::Role::Parameter)
        continue;
      HostBuffer b = makeBuffer(sig, ep.name()->str());
      auto it = state_.find(b.name());
      if (it != state_.end()) {
        if (it->second.shape() != b.shape() || it->second.dtype() != b.dtype())
          throw FormatError(path_, ep.name()->str() + ": " + b.name(),
                            "shape " + shapeText(b.shape()) +
                                " differs from another entry point's " +
                                shapeText(it->second.shape()));
        continue;
      }
      params_.push_back(b.name());
      std::string name = b.name();
      state_.emplace(name, std::move(b));
    }
  }
}

Session::~Session() = default;

std::string Session::metadata(const std::string &key) const {
  for (auto &[k, v] : artifact_->metadata())
    if (k == key)
      return v;
  return "";
}

const Tokenizer &Session::tokenizer() {
  if (!tokenizer_) {
    std::string json = metadata("tokenizer.json");
    if (json.empty())
      throw FormatError(path_, "tokenizer.json",
                        "the artifact carries no tokenizer");
    tokenizer_ = Tokenizer::fromHfJsonString(json, path_);
  }
  return *tokenizer_;
}

const trainer::ChatTemplate *Session::chatTemplate() {
  if (!chatLoaded_) {
    chatLoaded_ = true;
    std::string source = metadata("chat_template");
    if (!source.empty())
      chat_ = trainer::ChatTemplate::fromSource(source, metadata("bos_token"),
                                                metadata("eos_token"), path_,
                                                "chat_template");
  }
  return chat_ ? &*chat_ : nullptr;
}

trainer::Dataset Session::loadDataset(const std::string &path,
                                      const std::string &format) {
  trainer::DatasetOptions options;
  options.seqLen = seqLen_;
  if (format == "text")
    options.format = trainer::DatasetFormat::Text;
  else if (format == "jsonl")
    options.format = trainer::DatasetFormat::Chat;
  else if (format != "auto")
    throw FormatError("", "--format",
                      "unknown format '" + format + "' (auto, text or jsonl)");
  const Tokenizer &tok = tokenizer();
  trainer::Dataset dataset =
      trainer::Dataset::load(path, tok, chatTemplate(), options);
  if (dataset.samples().empty())
    throw FormatError(path, "",
                      "no samples with a prediction target (" +
                          dataset.stats().summary() + ")");
  return dataset;
}

bool Session::hasEntry(const std::string &name) const {
  return artifact_->findEntryPoint(name) != nullptr;
}

HostBuffer Session::makeBuffer(const blm::fb::TensorSig *sig,
                               const std::string &entry) const {
  std::string name = sig->name()->str();
  std::string dtype = sig->dtype() ? sig->dtype()->str() : "f32";
  size_t size = elementSize(dtype);
  if (size == 0)
    throw FormatError(path_, entry + ": " + name,
                      "unsupported dtype '" + dtype + "'");
  std::vector<int64_t> shape;
  if (sig->shape())
    for (int64_t d : *sig->shape()) {
      if (d < 0)
        throw FormatError(path_, entry + ": " + name,
                          "dynamic shape " + shapeText({d}) +
                              ": the runtime binds static shapes only");
      shape.push_back(d);
    }
  return HostBuffer(name, dtype, shape, sig->role(), size);
}

hal::cpu::NativeLibrary &Session::library(uint32_t executable) {
  auto it = libraries_.find(executable);
  if (it != libraries_.end())
    return *it->second;
  const blm::fb::Executable &exe = artifact_->executable(executable);
  std::string format = exe.format() ? exe.format()->str() : "";
  if (format != "elf-shared")
    throw FormatError(path_, "executable " + std::to_string(executable),
                      "format '" + format +
                          "' cannot run on the CPU runtime (elf-shared)");
  blm::ByteSpan code = artifact_->executableData(executable);
  auto lib = hal::cpu::NativeLibrary::load(path_ + ": executable " +
                                               std::to_string(executable),
                                           code.data(), code.size());
  return *(libraries_[executable] = std::move(lib));
}

uint8_t *Session::arena() {
  const blm::fb::MemoryPlan *plan = artifact_->memoryPlan();
  if (!plan)
    throw FormatError(path_, "memory_plan",
                      "a dispatch binds an arena slot but there is no plan");
  if (!arena_.data())
    arena_ = HostBuffer("arena", "u8", {int64_t(plan->arena_size())},
                        blm::Role::Input, 1);
  return static_cast<uint8_t *>(arena_.data());
}

Entry &Session::entry(const std::string &name) {
  auto found = entries_.find(name);
  if (found != entries_.end())
    return *found->second;
  const blm::fb::EntryPoint *ep = artifact_->findEntryPoint(name);
  if (!ep)
    throw FormatError(path_, name,
                      "the artifact has no such entry point (recompile it "
                      "with a bitloom that builds it)");
  if (!ep->dispatches() || ep->dispatches()->size() == 0)
    throw FormatError(path_, name, "entry point without dispatches");
  auto e = std::make_unique<Entry>();
  e->name_ = name;
  e->sig_ = ep;
  e->session_ = this;
  size_t nargs = ep->arguments() ? ep->arguments()->size() : 0;
  e->argSlot_.assign(nargs, -1);
  e->argState_.assign(nargs, "");
  for (size_t i = 0; i < nargs; ++i) {
    const blm::fb::TensorSig *sig = ep->arguments()->Get(uint32_t(i));
    HostBuffer b = makeBuffer(sig, name);
    e->argIndex_[b.name()] = i;
    if (isState(sig->role())) {
      auto it = state_.find(b.name());
      if (it == state_.end()) {
        std::string n = b.name();
        state_.emplace(n, std::move(b));
      } else if (it->second.shape() != b.shape() ||
                 it->second.dtype() != b.dtype()) {
        throw FormatError(path_, name + ": " + b.name(),
                          "shape " + shapeText(b.shape()) +
                              " differs from another entry point's " +
                              shapeText(it->second.shape()));
      }
      e->argState_[i] = sig->name()->str();
      continue;
    }
    e->argSlot_[i] = int(e->args_.size());
    e->args_.push_back(std::move(b));
  }
  if (ep->results())
    for (const blm::fb::TensorSig *sig : *ep->results()) {
      HostBuffer b = makeBuffer(sig, name);
      auto st = state_.find(b.name());
      if (st != state_.end() && st->second.bytes() != b.bytes())
        throw FormatError(path_, name + ": result " + b.name(),
                          "shape " + shapeText(b.shape()) +
                              " differs from the argument's " +
                              shapeText(st->second.shape()));
      e->resultIndex_[b.name()] = e->results_.size();
      if (st != state_.end()) {
        // Updated in place (see Session.h): no second buffer.
        e->resultState_.push_back(&st->second);
        e->results_.emplace_back();
      } else {
        e->resultState_.push_back(nullptr);
        e->results_.push_back(std::move(b));
      }
    }
  if (vulkan_) {
    prepareOnDevice(*e);
    Entry &ref = *e;
    entries_[name] = std::move(e);
    return ref;
  }
  for (const blm::fb::Dispatch *d : *ep->dispatches()) {
    const blm::fb::Executable &exe = artifact_->executable(d->executable());
    const blm::fb::Kernel *kernel = exe.kernels()->Get(d->kernel());
    const blm::fb::Dim3 *grid = d->workgroup_count();
    if (grid && uint64_t(grid->x()) * grid->y() * grid->z() > 1)
      throw FormatError(path_, name + ": " + kernel->name()->str(),
                        "workgroup grids are not supported by this runtime "
                        "yet (the kernel is called once)");
    Entry::Call call;
    call.fn = library(d->executable()).lookup(kernel->name()->str());
    call.dispatch = d;
    call.bindings.resize(d->bindings() ? d->bindings()->size() : 0);
    e->calls_.push_back(std::move(call));
  }
  Entry &ref = *e;
  entries_[name] = std::move(e);
  return ref;
}

double StepProfile::dispatchTotalNs() const {
  double total = 0;
  for (const DispatchTime &d : dispatches)
    total += d.ns;
  return total;
}

void Session::run(Entry &e) {
  if (vulkan_)
    runOnDevice(e, nullptr);
  else
    runOnHost(e, nullptr);
}

StepProfile Session::runProfiled(Entry &e) {
  StepProfile profile;
  if (vulkan_)
    runOnDevice(e, &profile);
  else
    runOnHost(e, &profile);
  return profile;
}

void Session::runOnHost(Entry &e, StepProfile *profile) {
  if (profile)
    profile->dispatches.reserve(e.calls_.size());
  for (Entry::Call &call : e.calls_) {
    const auto *bindings = call.dispatch->bindings();
    for (uint32_t k = 0; bindings && k < bindings->size(); ++k) {
      const blm::fb::Binding *b = bindings->Get(k);
      uint8_t *base = nullptr;
      switch (b->source()) {
      case blm::BindingSource::Parameter:
        // Frozen weights are read in place from the mapping.
        base =
            const_cast<uint8_t *>(artifact_->parameterData(b->index()).data());
        break;
      case blm::BindingSource::Argument: {
        size_t i = b->index();
        if (i >= e.argSlot_.size())
          throw FormatError(path_, e.name_, "binding to a missing argument");
        base = static_cast<uint8_t *>(
            e.argSlot_[i] >= 0 ? e.args_[size_t(e.argSlot_[i])].data()
                               : state_.at(e.argState_[i]).data());
        break;
      }
      case blm::BindingSource::Result:
        if (b->index() >= e.results_.size())
          throw FormatError(path_, e.name_, "binding to a missing result");
        base = static_cast<uint8_t *>(e.resultState_[b->index()]
                                          ? e.resultState_[b->index()]->data()
                                          : e.results_[b->index()].data());
        break;
      case blm::BindingSource::ArenaSlot:
        base = arena() +
               artifact_->memoryPlan()->slots()->Get(b->index())->offset();
        break;
      case blm::BindingSource::Arena:
        base = arena();
        break;
      default:
        throw FormatError(path_, e.name_, "unknown binding source");
      }
      call.bindings[k] = base + b->offset();
    }
    if (!profile) {
      call.fn(call.bindings.data());
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    call.fn(call.bindings.data());
    const auto t1 = std::chrono::steady_clock::now();
    const blm::fb::Dispatch &d = *call.dispatch;
    DispatchTime time;
    time.op = d.op() ? d.op()->str() : "";
    time.kernel = artifact_->executable(d.executable())
                      .kernels()
                      ->Get(d.kernel())
                      ->name()
                      ->str();
    time.ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
    profile->dispatches.push_back(std::move(time));
  }
}

//===----------------------------------------------------------------------===//
// Vulkan
//===----------------------------------------------------------------------===//

bool Session::onVulkan() const { return vulkan_ != nullptr; }

#ifdef BITLOOM_RUN_HAVE_VULKAN

namespace {

/// A state tensor's device range, whole 32-bit words (fill needs them; the
/// executor's allocations are padded far beyond).
vulkan::BufferRange wordRange(const vulkan::BufferRange &r, size_t bytes) {
  return vulkan::BufferRange(r.buffer, r.offset, (bytes + 3) / 4 * 4);
}

} // namespace

std::string Session::backendDescription() const {
  if (!vulkan_)
    return "CPU";
  const vulkan::VulkanExecutor &ex = *vulkan_->executor;
  return "Vulkan device " + std::to_string(ex.device().index) + " (" +
         ex.device().name + "), profile " + ex.profile().name;
}

void Session::prepareOnDevice(Entry &e) {
  vulkan::VulkanExecutor &ex = *vulkan_->executor;
  auto stateRange = [&](const std::string &name) {
    const HostBuffer &b = state_.at(name);
    if (!ex.findState(name))
      sync_[name] = Sync::HostNewer; // the device copy starts zeroed
    vulkan::BufferRange r = ex.stateBuffer(name, b.bytes());
    r.size = b.bytes();
    return vulkan::TensorBinding::onDevice(r);
  };
  const size_t nargs = e.argSlot_.size(), nresults = e.results_.size();
  std::vector<vulkan::TensorBinding> args(nargs), results(nresults);
  for (size_t i = 0; i < nargs; ++i) {
    if (e.argSlot_[i] >= 0) {
      args[i] = vulkan::TensorBinding::streamed(
          e.args_[size_t(e.argSlot_[i])].bytes());
      continue;
    }
    args[i] = stateRange(e.argState_[i]);
    e.stateUsed_.push_back(e.argState_[i]);
  }
  for (size_t i = 0; i < nresults; ++i) {
    if (!e.resultState_[i]) {
      results[i] = vulkan::TensorBinding::streamed(e.results_[i].bytes());
      continue;
    }
    const std::string &name = e.resultState_[i]->name();
    results[i] = stateRange(name);
    e.stateUsed_.push_back(name);
    e.stateWritten_.push_back(name);
  }
  e.device_ = &ex.prepare(e.name_, args, results);
  for (size_t i = 0; i < nargs; ++i)
    if (e.argSlot_[i] < 0 && e.device_->writesArgument(i))
      e.stateWritten_.push_back(e.argState_[i]);
  for (std::vector<std::string> *names : {&e.stateUsed_, &e.stateWritten_}) {
    std::sort(names->begin(), names->end());
    names->erase(std::unique(names->begin(), names->end()), names->end());
  }
}

std::string Session::profilingProblem() const {
  return vulkan_ ? vulkan_->executor->profilingProblem() : "";
}

void Session::runOnDevice(Entry &e, StepProfile *profile) {
  vulkan::VulkanExecutor &ex = *vulkan_->executor;
  try {
    // State the host changed goes up first, in one batch.
    std::vector<vulkan::HostCopy> ups;
    std::vector<std::string> uploaded;
    for (const std::string &name : e.stateUsed_) {
      auto it = sync_.find(name);
      if (it == sync_.end() || it->second != Sync::HostNewer)
        continue;
      HostBuffer &b = state_.at(name);
      vulkan::BufferRange r = *ex.findState(name);
      r.size = b.bytes();
      ups.push_back({r, b.data()});
      uploaded.push_back(name);
    }
    if (!ups.empty()) {
      ex.upload(ups);
      for (const std::string &name : uploaded) {
        sync_[name] = Sync::Same;
        transfers_.bytesUp += state_.at(name).bytes();
      }
      transfers_.uploads += ups.size();
    }
    for (size_t i = 0; i < e.argSlot_.size(); ++i)
      if (e.argSlot_[i] >= 0) {
        const HostBuffer &b = e.args_[size_t(e.argSlot_[i])];
        std::memcpy(e.device_->input(i), b.data(), b.bytes());
      }
    if (profile) {
      vulkan::EntryProfile p = ex.runProfiled(*e.device_);
      const std::vector<vulkan::DispatchInfo> &info = e.device_->dispatches();
      profile->dispatches.resize(info.size());
      for (size_t d = 0; d < info.size(); ++d) {
        DispatchTime &t = profile->dispatches[d];
        t.op = info[d].op;
        t.kernel = info[d].kernel;
        std::copy(info[d].groups, info[d].groups + 3, t.groups);
        t.ns = p.dispatchNs[d];
      }
      profile->uploadNs = p.uploadNs;
      profile->downloadNs = p.downloadNs;
    } else {
      ex.run(*e.device_);
    }
    for (size_t i = 0; i < e.results_.size(); ++i)
      if (!e.resultState_[i])
        std::memcpy(e.results_[i].data(), e.device_->output(i),
                    e.results_[i].bytes());
  } catch (const vulkan::VulkanError &err) {
    throw DeviceError(err.what());
  }
  for (const std::string &name : e.stateWritten_)
    sync_[name] = Sync::DeviceNewer;
}

void Session::pull(const std::vector<std::string> &names) const {
  if (!vulkan_)
    return;
  vulkan::VulkanExecutor &ex = *vulkan_->executor;
  std::vector<vulkan::HostCopy> downs;
  std::vector<std::string> pulled;
  for (const std::string &name : names) {
    auto it = sync_.find(name);
    if (it == sync_.end() || it->second != Sync::DeviceNewer)
      continue;
    HostBuffer &b = state_.at(name);
    vulkan::BufferRange r = *ex.findState(name);
    r.size = b.bytes();
    downs.push_back({r, b.data()});
    pulled.push_back(name);
  }
  if (downs.empty())
    return;
  try {
    ex.download(downs);
  } catch (const vulkan::VulkanError &err) {
    throw DeviceError(err.what());
  }
  for (const std::string &name : pulled) {
    sync_[name] = Sync::Same;
    transfers_.bytesDown += state_.at(name).bytes();
  }
  transfers_.downloads += pulled.size();
}

void Session::hostWrote(const std::string &name) {
  if (vulkan_)
    sync_[name] = Sync::HostNewer;
}

#else

std::string Session::backendDescription() const { return "CPU"; }
std::string Session::profilingProblem() const { return ""; }
void Session::prepareOnDevice(Entry &) {}
void Session::runOnDevice(Entry &, StepProfile *) {}
void Session::pull(const std::vector<std::string> &) const {}
void Session::hostWrote(const std::string &) {}

#endif

HostBuffer *Session::state(const std::string &name) {
  auto it = state_.find(name);
  if (it == state_.end())
    return nullptr;
  pull({name});
  // A mutable reference: the caller may change it.
  hostWrote(name);
  return &it->second;
}

void Session::initFresh(uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (const std::string &name : params_) {
    HostBuffer &b = state_.at(name);
    if (b.dtype() != "f32")
      throw FormatError(path_, name, "trainable tensors must be f32");
    if (name.find(".lora_A.") != std::string::npos) {
      // PEFT: kaiming_uniform_(a=sqrt(5)) -> U(-1/sqrt(fan_in), +).
      int64_t fanIn = b.shape().size() == 2 ? b.shape()[1] : 1;
      double bound = 1.0 / std::sqrt(double(fanIn));
      std::uniform_real_distribution<double> u(-bound, bound);
      for (int64_t i = 0; i < b.elements(); ++i)
        b.f32()[i] = float(u(rng));
    } else if (name.find(".lora_B.") != std::string::npos) {
      b.zero();
    } else {
      std::optional<size_t> p = artifact_->findParameter(name);
      if (!p || artifact_->parameter(*p).dtype()->str() != "f32" ||
          artifact_->parameterData(*p).size() != b.bytes())
        throw FormatError(path_, name,
                          "trainable tensor without an f32 initial value in "
                          "the artifact's parameters");
      std::memcpy(b.data(), artifact_->parameterData(*p).data(), b.bytes());
    }
    hostWrote(name);
  }
  for (auto &[name, b] : state_)
    if (b.role() == blm::Role::OptimizerState) {
      b.zero();
      hostWrote(name);
    }
}

void Session::setTensors(const trainer::TensorMap &tensors,
                         const std::string &source, bool requireAll) {
  for (const auto &[name, t] : tensors) {
    auto it = state_.find(name);
    if (it == state_.end() || it->second.role() != blm::Role::Parameter)
      throw FormatError(source, name,
                        "not a trainable tensor of " + path_ +
                            " (compiled for LoRA rank " +
                            std::to_string(lora_.rank) + ")");
    if (t.shape != it->second.shape() ||
        int64_t(t.data.size()) != it->second.elements())
      throw FormatError(source, name,
                        "shape " + shapeText(t.shape) + " but " + path_ +
                            " needs " + shapeText(it->second.shape()));
  }
  if (requireAll)
    for (const std::string &name : params_)
      if (!tensors.count(name))
        throw FormatError(source, name, "missing");
  for (const auto &[name, t] : tensors) {
    std::memcpy(state_.at(name).data(), t.data.data(),
                t.data.size() * sizeof(float));
    hostWrote(name);
  }
}

void Session::loadAdapter(const std::string &path) {
  trainer::LoadedAdapter a = trainer::importAdapter(path, &model_);
  bool peft = a.format == trainer::AdapterFormat::Peft;
  std::string config =
      peft ? (std::filesystem::path(path) / "adapter_config.json").string()
           : path;
  auto num = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return std::string(buf);
  };
  if (a.config.rank != lora_.rank)
    throw FormatError(config, peft ? "r" : "rank",
                      "adapter rank " + std::to_string(a.config.rank) +
                          ", but " + path_ + " is compiled for rank " +
                          std::to_string(lora_.rank));
  if (std::fabs(a.config.alpha - lora_.alpha) > 1e-9 * std::fabs(lora_.alpha))
    throw FormatError(config, peft ? "lora_alpha" : "adapter.lora.alpha",
                      "adapter alpha " + num(a.config.alpha) + ", but " +
                          path_ + " is compiled for alpha " + num(lora_.alpha));
  auto join = [](const std::vector<std::string> &v) {
    std::string s;
    for (const std::string &x : v)
      s += (s.empty() ? "" : ",") + x;
    return s;
  };
  if (a.config.targets != lora_.targets)
    throw FormatError(config, peft ? "target_modules" : "tensors",
                      "adapter targets " + join(a.config.targets) + ", but " +
                          path_ + " is compiled for " + join(lora_.targets));
  setTensors(a.tensors, path, /*requireAll=*/false);
  for (const std::string &name : params_)
    if (name.find(".lora_") != std::string::npos && !a.tensors.count(name))
      throw FormatError(path, name, "missing from the adapter");
}

void Session::setOptimizerState(const trainer::TensorMap &tensors,
                                const std::string &source) {
  for (const auto &[name, t] : tensors) {
    auto it = state_.find(name);
    if (it == state_.end() || it->second.role() != blm::Role::OptimizerState)
      throw FormatError(source, name,
                        "not optimizer state of " + path_ +
                            " (another optimizer?)");
    if (t.shape != it->second.shape() ||
        int64_t(t.data.size()) != it->second.elements())
      throw FormatError(source, name,
                        "shape " + shapeText(t.shape) + " but " + path_ +
                            " needs " + shapeText(it->second.shape()));
  }
  for (const auto &[name, t] : tensors) {
    std::memcpy(state_.at(name).data(), t.data.data(),
                t.data.size() * sizeof(float));
    hostWrote(name);
  }
}

void Session::zeroState(const std::string &prefix) {
#ifdef BITLOOM_RUN_HAVE_VULKAN
  // On the device, zeroed in place: no transfer (--grad-accum does this
  // every optimizer step).
  std::vector<vulkan::BufferRange> ranges;
  std::vector<std::string> zeroed;
#endif
  for (auto &[name, b] : state_) {
    if (name.rfind(prefix, 0) != 0)
      continue;
    b.zero();
#ifdef BITLOOM_RUN_HAVE_VULKAN
    if (vulkan_)
      if (const vulkan::BufferRange *r = vulkan_->executor->findState(name)) {
        ranges.push_back(wordRange(*r, b.bytes()));
        zeroed.push_back(name);
        continue;
      }
#endif
    hostWrote(name);
  }
#ifdef BITLOOM_RUN_HAVE_VULKAN
  if (ranges.empty())
    return;
  try {
    vulkan_->executor->fill(ranges);
  } catch (const vulkan::VulkanError &err) {
    throw DeviceError(err.what());
  }
  for (const std::string &name : zeroed)
    sync_[name] = Sync::Same;
#endif
}

trainer::TensorMap Session::trainables(bool loraOnly) const {
  std::vector<std::string> names;
  for (const std::string &name : params_)
    if (!loraOnly || name.find(".lora_") != std::string::npos)
      names.push_back(name);
  pull(names);
  trainer::TensorMap out;
  for (const std::string &name : params_) {
    if (loraOnly && name.find(".lora_") == std::string::npos)
      continue;
    const HostBuffer &b = state_.at(name);
    out[name] = {b.shape(),
                 std::vector<float>(b.f32(), b.f32() + b.elements())};
  }
  return out;
}

trainer::TensorMap Session::optimizerState() const {
  std::vector<std::string> names;
  for (const auto &[name, b] : state_)
    if (b.role() == blm::Role::OptimizerState && name.rfind("grad.", 0) != 0)
      names.push_back(name);
  pull(names);
  trainer::TensorMap out;
  for (const auto &[name, b] : state_)
    if (b.role() == blm::Role::OptimizerState && name.rfind("grad.", 0) != 0)
      out[name] = {b.shape(),
                   std::vector<float>(b.f32(), b.f32() + b.elements())};
  return out;
}

trainer::CheckpointIdentity Session::identity() const {
  trainer::CheckpointIdentity id;
  Fnv all, weights;
  all.u64(artifact_->header().flatbufferChecksum);
  for (size_t i = 0; i < artifact_->numBlobs(); ++i)
    all.u64(artifact_->blobChecksum(i));
  for (size_t i = 0; i < artifact_->numParameters(); ++i) {
    const blm::fb::Parameter &p = artifact_->parameter(i);
    weights.str(p.name()->str());
    weights.u64(artifact_->blobChecksum(p.blob()));
  }
  id.artifactHash = hex64(all.h);
  id.modelHash = hex64(weights.h);
  id.lora = lora_;
  id.lora.baseModel.clear();
  std::string optimizer = artifact_->compileOptions().optimizer;
  id.optimizer.name = optimizer.empty() ? "adamw" : optimizer;
  id.extra["seq_len"] = std::to_string(seqLen_);
  id.extra["batch_size"] = std::to_string(batch_);
  id.extra["trainable"] = artifact_->loraConfig().trainable;
  return id;
}

uint64_t Session::plannedBytes() const { return memoryUse().total(); }

MemoryUse Session::memoryUse() const {
  MemoryUse m;
#ifdef BITLOOM_RUN_HAVE_VULKAN
  if (vulkan_) {
    const vulkan::ExecutorMemory em = vulkan_->executor->memory();
    m.device = true;
    m.arena = em.arena;
    m.weights = em.parameters;
    m.state = em.state;
    m.io = em.entries;
    m.staging = em.staging;
    m.allocated = em.allocated;
    return m;
  }
#endif
  if (const blm::fb::MemoryPlan *plan = artifact_->memoryPlan())
    m.arena = plan->arena_size();
  for (size_t i = 0; i < artifact_->numParameters(); ++i)
    m.weights += artifact_->parameterData(i).size();
  for (const auto &[name, b] : state_)
    m.state += b.bytes();
  for (const auto &[name, e] : entries_)
    m.io += e->ownedBytes();
  return m;
}

} // namespace bitloom::run

//===- ArtifactBuilder.cpp - Writing a .blm artifact ----------------------===//
#include "artifact/ArtifactBuilder.h"
#include "artifact/Checksum.h"
#include "artifact/Format.h"
#include "artifact/Validate.h"
#include "formats/Error.h"
#include "formats/MappedFile.h"

#include <algorithm>
#include <optional>
#include <stdexcept>

namespace bitloom::blm {

namespace {

/// 64 KiB of zeros: padding, zero parameters, and their checksums.
const uint8_t *zeroBlock() {
  static const uint8_t zeros[1 << 16] = {};
  return zeros;
}
constexpr size_t kZeroBlockSize = 1 << 16;

void hashZeros(Xxh64 &hash, uint64_t n) {
  while (n > 0) {
    size_t k = size_t(std::min<uint64_t>(n, kZeroBlockSize));
    hash.update(zeroBlock(), k);
    n -= k;
  }
}

uint64_t alignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

std::string num(uint64_t v) { return std::to_string(v); }

/// The default sink: an AtomicFileWriter (temporary file, fsync, rename).
class AtomicFileSink : public ArtifactSink {
public:
  explicit AtomicFileSink(const std::string &path) : writer_(path) {}
  void write(const void *data, size_t size) override {
    writer_.write(data, size);
  }
  void writeZeros(uint64_t size) override {
    while (size > 0) {
      size_t k = size_t(std::min<uint64_t>(size, kZeroBlockSize));
      writer_.write(zeroBlock(), k);
      size -= k;
    }
  }
  void commit() override { writer_.commit(); }

private:
  AtomicFileWriter writer_;
};

/// Where a blob's bytes come from.
struct BlobSource {
  enum Kind { Owned, Borrowed, Produced, Zeros } kind = Zeros;
  std::vector<uint8_t> owned;
  const uint8_t *data = nullptr;
  uint64_t size = 0;
  BlobProducer produce;
};

struct PendingExecutable {
  ExecutableInfo info;
  BlobSource source;
};

struct PendingParameter {
  ParameterInfo info;
  BlobSource source;
};

} // namespace

//===----------------------------------------------------------------------===//
// BlobWriter
//===----------------------------------------------------------------------===//

struct BlobWriter::Impl {
  ArtifactSink &sink;
  Xxh64 hash;
  const std::string &file;
  const std::string &owner;
};

void BlobWriter::write(const void *data, size_t size) {
  if (size > remaining())
    throw FormatError(impl_.file, impl_.owner,
                      "the producer wrote more than the declared " +
                          num(size_) + " bytes");
  impl_.hash.update(data, size);
  impl_.sink.write(data, size);
  written_ += size;
}

void BlobWriter::writeZeros(uint64_t size) {
  if (size > remaining())
    throw FormatError(impl_.file, impl_.owner,
                      "the producer wrote more than the declared " +
                          num(size_) + " bytes");
  hashZeros(impl_.hash, size);
  impl_.sink.writeZeros(size);
  written_ += size;
}

//===----------------------------------------------------------------------===//
// ArtifactBuilder
//===----------------------------------------------------------------------===//

struct ArtifactBuilder::Impl {
  Options options;
  std::string producer;
  std::optional<TargetInfo> target;
  std::optional<ModelConfig> model;
  std::optional<LoraConfig> lora;
  std::optional<CompileOptions> compileOptions;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::vector<PendingExecutable> executables;
  std::vector<PendingParameter> parameters;
  std::vector<EntryPointInfo> entries;
  std::optional<MemoryPlanInfo> plan;

  /// Serializes the manifest with the given blob table.
  flatbuffers::DetachedBuffer
  buildManifest(const std::vector<fb::Blob> &blobs) const;
  void writeBlob(ArtifactSink &sink, const BlobSource &src, uint64_t size,
                 const std::string &file, const std::string &owner,
                 uint64_t &checksum) const;
};

ArtifactBuilder::ArtifactBuilder() : ArtifactBuilder(Options()) {}

ArtifactBuilder::ArtifactBuilder(const Options &options)
    : impl_(std::make_unique<Impl>()) {
  for (uint64_t a : {options.executableAlignment, options.parameterAlignment})
    if (!detail::isPowerOfTwo(a) || a < kMinBlobAlignment)
      throw std::invalid_argument(
          "ArtifactBuilder: blob alignment " + num(a) +
          " is not a power of two >= " + num(kMinBlobAlignment));
  impl_->options = options;
}

ArtifactBuilder::~ArtifactBuilder() = default;

void ArtifactBuilder::setProducer(std::string producer) {
  impl_->producer = std::move(producer);
}
void ArtifactBuilder::setTarget(TargetInfo target) {
  impl_->target = std::move(target);
}
void ArtifactBuilder::setModelConfig(ModelConfig config) {
  impl_->model = std::move(config);
}
void ArtifactBuilder::setLoraConfig(LoraConfig config) {
  impl_->lora = std::move(config);
}
void ArtifactBuilder::setCompileOptions(CompileOptions options) {
  impl_->compileOptions = std::move(options);
}
void ArtifactBuilder::addMetadata(std::string key, std::string value) {
  impl_->metadata.emplace_back(std::move(key), std::move(value));
}

uint32_t ArtifactBuilder::addExecutable(ExecutableInfo info,
                                        std::vector<uint8_t> bytes) {
  BlobSource src;
  src.kind = BlobSource::Owned;
  src.size = bytes.size();
  src.owned = std::move(bytes);
  impl_->executables.push_back({std::move(info), std::move(src)});
  return uint32_t(impl_->executables.size() - 1);
}

uint32_t ArtifactBuilder::addExecutable(ExecutableInfo info, const void *data,
                                        uint64_t size) {
  BlobSource src;
  src.kind = BlobSource::Borrowed;
  src.data = static_cast<const uint8_t *>(data);
  src.size = size;
  impl_->executables.push_back({std::move(info), std::move(src)});
  return uint32_t(impl_->executables.size() - 1);
}

uint32_t ArtifactBuilder::addParameter(ParameterInfo info, const void *data,
                                       uint64_t size) {
  BlobSource src;
  src.kind = BlobSource::Borrowed;
  src.data = static_cast<const uint8_t *>(data);
  src.size = size;
  impl_->parameters.push_back({std::move(info), std::move(src)});
  return uint32_t(impl_->parameters.size() - 1);
}

uint32_t ArtifactBuilder::addParameter(ParameterInfo info,
                                       std::vector<uint8_t> bytes) {
  BlobSource src;
  src.kind = BlobSource::Owned;
  src.size = bytes.size();
  src.owned = std::move(bytes);
  impl_->parameters.push_back({std::move(info), std::move(src)});
  return uint32_t(impl_->parameters.size() - 1);
}

uint32_t ArtifactBuilder::addParameter(ParameterInfo info, uint64_t size,
                                       BlobProducer produce) {
  BlobSource src;
  src.kind = BlobSource::Produced;
  src.size = size;
  src.produce = std::move(produce);
  impl_->parameters.push_back({std::move(info), std::move(src)});
  return uint32_t(impl_->parameters.size() - 1);
}

uint32_t ArtifactBuilder::addZeroParameter(ParameterInfo info, uint64_t size) {
  BlobSource src;
  src.kind = BlobSource::Zeros;
  src.size = size;
  impl_->parameters.push_back({std::move(info), std::move(src)});
  return uint32_t(impl_->parameters.size() - 1);
}

uint32_t ArtifactBuilder::addEntryPoint(EntryPointInfo entry) {
  impl_->entries.push_back(std::move(entry));
  return uint32_t(impl_->entries.size() - 1);
}

void ArtifactBuilder::setMemoryPlan(MemoryPlanInfo plan) {
  impl_->plan = std::move(plan);
}

//===----------------------------------------------------------------------===//
// Serialization
//===----------------------------------------------------------------------===//

flatbuffers::DetachedBuffer
ArtifactBuilder::Impl::buildManifest(const std::vector<fb::Blob> &blobs) const {
  flatbuffers::FlatBufferBuilder b(1 << 16);
  auto strings = [&](const std::vector<std::string> &v) {
    std::vector<flatbuffers::Offset<flatbuffers::String>> offs;
    for (const std::string &s : v)
      offs.push_back(b.CreateString(s));
    return b.CreateVector(offs);
  };
  auto dim3 = [](const Dim3 &d) { return fb::Dim3(d.x, d.y, d.z); };

  auto producerOff = b.CreateString(producer);
  flatbuffers::Offset<fb::Target> targetOff;
  if (target)
    targetOff = fb::CreateTarget(b, b.CreateString(target->name),
                                 b.CreateString(target->cpu),
                                 strings(target->features));
  flatbuffers::Offset<fb::ModelConfig> modelOff;
  if (model)
    modelOff = fb::CreateModelConfig(
        b, b.CreateString(model->architecture), model->vocabSize,
        model->hiddenSize, model->intermediateSize, model->numLayers,
        model->numHeads, model->numKvHeads, model->headDim,
        model->maxPositionEmbeddings, model->ropeTheta, model->rmsNormEps,
        model->tieWordEmbeddings, b.CreateString(model->hiddenAct),
        b.CreateString(model->weightQuant), model->bosTokenId,
        model->eosTokenId);
  flatbuffers::Offset<fb::LoraConfig> loraOff;
  if (lora)
    loraOff = fb::CreateLoraConfig(b, lora->rank, lora->alpha, lora->dropout,
                                   strings(lora->targets),
                                   b.CreateString(lora->trainable));
  flatbuffers::Offset<fb::CompileOptions> optionsOff;
  if (compileOptions)
    optionsOff = fb::CreateCompileOptions(
        b, compileOptions->seqLen, compileOptions->batchSize,
        compileOptions->memoryBudget, b.CreateString(compileOptions->optimizer),
        compileOptions->recompute);

  auto signatures = [&](const std::vector<TensorSignature> &sigs) {
    std::vector<flatbuffers::Offset<fb::TensorSig>> offs;
    for (const TensorSignature &s : sigs)
      offs.push_back(fb::CreateTensorSig(b, b.CreateString(s.name),
                                         b.CreateString(s.dtype),
                                         b.CreateVector(s.shape), s.role));
    return b.CreateVector(offs);
  };
  std::vector<flatbuffers::Offset<fb::EntryPoint>> entryOffs;
  for (const EntryPointInfo &e : entries) {
    auto name = b.CreateString(e.name);
    auto args = signatures(e.arguments);
    auto results = signatures(e.results);
    std::vector<flatbuffers::Offset<fb::Dispatch>> dispatches;
    for (const DispatchInfo &d : e.dispatches) {
      std::vector<fb::Binding> bindings;
      for (const BindingInfo &bi : d.bindings)
        bindings.emplace_back(bi.source, bi.access, bi.index, bi.offset,
                              bi.size);
      fb::Dim3 grid = dim3(d.workgroupCount);
      dispatches.push_back(fb::CreateDispatch(
          b, d.executable, d.kernel, &grid, b.CreateVectorOfStructs(bindings),
          d.constants.empty() ? 0 : b.CreateVector(d.constants),
          b.CreateString(d.op)));
    }
    entryOffs.push_back(fb::CreateEntryPoint(b, name, args, results,
                                             b.CreateVector(dispatches),
                                             e.arenaBytes, e.scheduleLength));
  }

  std::vector<flatbuffers::Offset<fb::Executable>> execOffs;
  for (size_t i = 0; i < executables.size(); ++i) {
    const ExecutableInfo &e = executables[i].info;
    std::vector<flatbuffers::Offset<fb::Kernel>> kernels;
    for (const KernelInfo &k : e.kernels) {
      fb::Dim3 count = dim3(k.workgroupCount), size = dim3(k.workgroupSize);
      kernels.push_back(fb::CreateKernel(b, b.CreateString(k.name), &count,
                                         &size,
                                         b.CreateString(k.sourceLocation)));
    }
    execOffs.push_back(fb::CreateExecutable(
        b, b.CreateString(e.name), b.CreateString(e.format),
        b.CreateString(e.target), uint32_t(i), b.CreateVector(kernels)));
  }

  std::vector<flatbuffers::Offset<fb::Parameter>> paramOffs;
  for (size_t i = 0; i < parameters.size(); ++i) {
    const ParameterInfo &p = parameters[i].info;
    paramOffs.push_back(
        fb::CreateParameter(b, b.CreateString(p.name), b.CreateString(p.dtype),
                            b.CreateVector(p.shape),
                            uint32_t(executables.size() + i), p.trainable));
  }

  flatbuffers::Offset<fb::MemoryPlan> planOff;
  if (plan) {
    std::vector<flatbuffers::Offset<fb::Slot>> slots;
    for (const SlotInfo &s : plan->slots)
      slots.push_back(fb::CreateSlot(b, b.CreateString(s.name), s.offset,
                                     s.size, s.entryPoint, s.lifetimeBegin,
                                     s.lifetimeEnd, b.CreateString(s.op),
                                     s.scheduleBegin, s.scheduleEnd));
    planOff = fb::CreateMemoryPlan(b, plan->arenaSize, plan->alignment,
                                   b.CreateVector(slots));
  }

  std::vector<flatbuffers::Offset<fb::KeyValue>> kvs;
  for (const auto &[k, v] : metadata)
    kvs.push_back(fb::CreateKeyValue(b, b.CreateString(k), b.CreateString(v)));

  fb::Version version(kFormatMajor, kFormatMinor);
  auto root = fb::CreateManifest(
      b, &version, producerOff, targetOff, modelOff, loraOff, optionsOff,
      b.CreateVector(entryOffs), b.CreateVector(execOffs),
      b.CreateVector(paramOffs), planOff, b.CreateVectorOfStructs(blobs),
      b.CreateVector(kvs));
  fb::FinishManifestBuffer(b, root);
  return b.Release();
}

void ArtifactBuilder::Impl::writeBlob(ArtifactSink &sink, const BlobSource &src,
                                      uint64_t size, const std::string &file,
                                      const std::string &owner,
                                      uint64_t &checksum) const {
  BlobWriter::Impl impl{sink, Xxh64(), file, owner};
  BlobWriter w(impl, size);
  switch (src.kind) {
  case BlobSource::Owned:
  case BlobSource::Borrowed: {
    const uint8_t *p =
        src.kind == BlobSource::Owned ? src.owned.data() : src.data;
    // Chunks small enough to stay in cache between hashing and writing.
    constexpr uint64_t kChunk = 1 << 20;
    for (uint64_t off = 0; off < size; off += kChunk)
      w.write(p + off, size_t(std::min(kChunk, size - off)));
    break;
  }
  case BlobSource::Produced:
    src.produce(w);
    break;
  case BlobSource::Zeros:
    w.writeZeros(size);
    break;
  }
  if (w.written() != size)
    throw FormatError(file, owner,
                      "the producer wrote " + num(w.written()) +
                          " bytes, the parameter declares " + num(size));
  checksum = impl.hash.digest();
}

void ArtifactBuilder::write(const std::string &path) const {
  AtomicFileSink sink(path);
  writeTo(sink, path);
}

void ArtifactBuilder::writeTo(ArtifactSink &sink,
                              const std::string &name) const {
  const Impl &s = *impl_;

  // Lay out the data section: executables first (small, read at open),
  // then parameters, each at its alignment.
  struct Placed {
    const BlobSource *src;
    fb::Blob blob;
  };
  std::vector<Placed> placed;
  uint64_t cursor = 0, dataAlignment = kMinBlobAlignment;
  auto place = [&](const BlobSource &src, uint64_t alignment) {
    cursor = alignUp(cursor, alignment);
    placed.push_back({&src, fb::Blob(cursor, src.size, alignment)});
    cursor += src.size;
    dataAlignment = std::max(dataAlignment, alignment);
  };
  for (const PendingExecutable &e : s.executables)
    place(e.source, s.options.executableAlignment);
  for (const PendingParameter &p : s.parameters)
    place(p.source, s.options.parameterAlignment);
  std::vector<fb::Blob> blobs;
  for (const Placed &p : placed)
    blobs.push_back(p.blob);

  flatbuffers::DetachedBuffer manifest = s.buildManifest(blobs);

  FileHeader h;
  h.flatbufferOffset = kHeaderSize;
  h.flatbufferSize = manifest.size();
  h.flatbufferChecksum = xxhash64(manifest.data(), manifest.size());
  h.dataOffset = alignUp(h.flatbufferOffset + h.flatbufferSize, dataAlignment);
  h.dataSize = alignUp(cursor, 8);
  h.dataAlignment = dataAlignment;
  h.checksumTableOffset = h.dataOffset + h.dataSize;
  h.blobCount = blobs.size();
  h.fileSize = h.checksumTableOffset + checksumTableSize(h.blobCount);

  // The same checks a reader makes, and the aliasing check on top.
  flatbuffers::Verifier::Options vopts;
  vopts.max_tables = 1u << 30;
  flatbuffers::Verifier verifier(manifest.data(), manifest.size(), vopts);
  if (!fb::VerifyManifestBuffer(verifier))
    throw FormatError(name, "manifest",
                      "FlatBuffers verification failed (missing name?)");
  const fb::Manifest &m = *fb::GetManifest(manifest.data());
  std::vector<std::string> owners = detail::blobOwners(m);
  detail::validateManifest(m, name, h.dataOffset, h.dataSize, owners,
                           /*checkAliasing=*/true);

  uint8_t header[kHeaderSize];
  encodeHeader(h, header);
  sink.write(header, kHeaderSize);
  sink.write(manifest.data(), manifest.size());
  sink.writeZeros(h.dataOffset - h.flatbufferOffset - h.flatbufferSize);
  std::vector<uint8_t> table(checksumTableSize(h.blobCount));
  uint64_t at = 0; // offset within the data section
  for (size_t i = 0; i < placed.size(); ++i) {
    const fb::Blob &b = placed[i].blob;
    sink.writeZeros(b.offset() - at);
    uint64_t sum = 0;
    s.writeBlob(sink, *placed[i].src, b.size(), name, owners[i], sum);
    for (int k = 0; k < 8; ++k)
      table[8 * i + k] = uint8_t(sum >> (8 * k));
    at = b.offset() + b.size();
  }
  sink.writeZeros(h.dataSize - at);
  uint64_t tableSum = xxhash64(table.data(), 8 * h.blobCount);
  for (int k = 0; k < 8; ++k)
    table[8 * h.blobCount + k] = uint8_t(tableSum >> (8 * k));
  sink.write(table.data(), table.size());
  sink.commit();
}

} // namespace bitloom::blm

//===- Artifact.cpp - Opening and validating a .blm artifact --------------===//
#include "artifact/Artifact.h"
#include "artifact/Checksum.h"
#include "artifact/Validate.h"
#include "formats/Error.h"
#include "formats/MappedFile.h"

#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace bitloom::blm {

using detail::count;
using detail::rangeInside;
using detail::str;

//===----------------------------------------------------------------------===//
// The header
//===----------------------------------------------------------------------===//

namespace {
template <typename T> void storeLE(uint8_t *p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    p[i] = uint8_t(uint64_t(v) >> (8 * i));
}
template <typename T> T loadLE(const uint8_t *p) {
  uint64_t v = 0;
  for (size_t i = sizeof(T); i-- > 0;)
    v = (v << 8) | p[i];
  return T(v);
}

std::string num(uint64_t v) { return std::to_string(v); }

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)v);
  return buf;
}

/// Printable form of a 4-byte magic: 'BLM1' or 'x\x00..'.
std::string quoteMagic(const uint8_t *p, size_t n) {
  std::string s = "'";
  for (size_t i = 0; i < n; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'') {
      s += char(p[i]);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", p[i]);
      s += buf;
    }
  }
  return s + "'";
}
} // namespace

uint64_t computeHeaderChecksum(const uint8_t bytes[kHeaderSize]) {
  return xxhash64(bytes, kHeaderChecksumOffset);
}

void encodeHeader(const FileHeader &h, uint8_t out[kHeaderSize]) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out, h.magic, 4);
  storeLE(out + 4, h.versionMajor);
  storeLE(out + 6, h.versionMinor);
  storeLE(out + 8, h.headerSize);
  storeLE(out + 12, h.flags);
  storeLE(out + 16, h.fileSize);
  storeLE(out + 24, h.flatbufferOffset);
  storeLE(out + 32, h.flatbufferSize);
  storeLE(out + 40, h.flatbufferChecksum);
  storeLE(out + 48, h.dataOffset);
  storeLE(out + 56, h.dataSize);
  storeLE(out + 64, h.dataAlignment);
  storeLE(out + 72, h.checksumTableOffset);
  storeLE(out + 80, h.blobCount);
  storeLE(out + 88, h.checksumAlgorithm);
  storeLE(out + kHeaderChecksumOffset, computeHeaderChecksum(out));
}

FileHeader decodeHeader(const uint8_t bytes[kHeaderSize]) {
  FileHeader h;
  std::memcpy(h.magic, bytes, 4);
  h.versionMajor = loadLE<uint16_t>(bytes + 4);
  h.versionMinor = loadLE<uint16_t>(bytes + 6);
  h.headerSize = loadLE<uint32_t>(bytes + 8);
  h.flags = loadLE<uint32_t>(bytes + 12);
  h.fileSize = loadLE<uint64_t>(bytes + 16);
  h.flatbufferOffset = loadLE<uint64_t>(bytes + 24);
  h.flatbufferSize = loadLE<uint64_t>(bytes + 32);
  h.flatbufferChecksum = loadLE<uint64_t>(bytes + 40);
  h.dataOffset = loadLE<uint64_t>(bytes + 48);
  h.dataSize = loadLE<uint64_t>(bytes + 56);
  h.dataAlignment = loadLE<uint64_t>(bytes + 64);
  h.checksumTableOffset = loadLE<uint64_t>(bytes + 72);
  h.blobCount = loadLE<uint64_t>(bytes + 80);
  h.checksumAlgorithm = loadLE<uint32_t>(bytes + 88);
  h.headerChecksum = loadLE<uint64_t>(bytes + kHeaderChecksumOffset);
  return h;
}

//===----------------------------------------------------------------------===//
// Opening
//===----------------------------------------------------------------------===//

std::unique_ptr<Artifact> Artifact::open(const std::string &path,
                                         const OpenOptions &options) {
  std::unique_ptr<Artifact> a(new Artifact());
  a->path_ = path;
  a->file_ = MappedFile::open(path);
  const uint8_t *base = a->file_->data();
  const uint64_t size = a->file_->size();
  auto fail = [&](const std::string &field, const std::string &what) {
    throw FormatError(path, field, what);
  };

  // Magic first: a file that is not an artifact at all gets that message,
  // whatever its size.
  if (size < 4 || std::memcmp(base, kMagic, 4) != 0)
    fail("header.magic",
         size < 4
             ? "not a .blm artifact (the file has only " + num(size) + " bytes)"
             : "not a .blm artifact (magic " + quoteMagic(base, 4) +
                   ", expected 'BLM1')");
  if (size < 8)
    fail("header", "truncated: the file has " + num(size) +
                       " bytes, less than the " + num(kHeaderSize) +
                       "-byte header");
  // The version next: a newer major may lay out everything after it
  // differently, so nothing else is looked at.
  uint16_t major = loadLE<uint16_t>(base + 4);
  uint16_t minor = loadLE<uint16_t>(base + 6);
  std::string version = num(major) + "." + num(minor);
  std::string ours = num(kFormatMajor) + ".x";
  if (major > kFormatMajor)
    fail("header.version", "format version " + version +
                               " is newer than this runtime (" + ours + ")");
  if (major < kFormatMajor)
    fail("header.version", "format version " + version +
                               " is older than this runtime supports (" + ours +
                               ")");
  if (size < kHeaderSize)
    fail("header", "truncated: the file has " + num(size) +
                       " bytes, less than the " + num(kHeaderSize) +
                       "-byte header");

  FileHeader &h = a->header_;
  h = decodeHeader(base);
  uint64_t headerSum = computeHeaderChecksum(base);
  if (headerSum != h.headerChecksum)
    fail("header", "checksum mismatch (stored " + hex(h.headerChecksum) +
                       ", computed " + hex(headerSum) + ")");
  if (h.checksumAlgorithm != kChecksumXxh64)
    fail("header.checksum_algorithm",
         "unknown checksum algorithm " + num(h.checksumAlgorithm));
  if (h.fileSize != size)
    fail("header.file_size",
         size < h.fileSize
             ? "truncated: the header says " + num(h.fileSize) +
                   " bytes, the file has " + num(size)
             : "the file has " + num(size) + " bytes, " +
                   num(size - h.fileSize) + " more than the header says (" +
                   num(h.fileSize) + ")");
  if (h.headerSize < kHeaderSize || h.headerSize % 8 != 0)
    fail("header.header_size", num(h.headerSize) +
                                   " is not a multiple of 8 that is at least " +
                                   num(kHeaderSize));

  // Sections: header < manifest < data < checksum table = end of file.
  if (h.flatbufferOffset < h.headerSize || h.flatbufferOffset % 8 != 0 ||
      !rangeInside(h.flatbufferOffset, h.flatbufferSize, size))
    fail("header.flatbuffer_offset",
         "manifest at offset " + num(h.flatbufferOffset) + " + " +
             num(h.flatbufferSize) +
             " bytes is misplaced (8-aligned, after the header, inside the " +
             num(size) + "-byte file)");
  if (h.flatbufferSize < 8 || h.flatbufferSize >= FLATBUFFERS_MAX_BUFFER_SIZE)
    fail("header.flatbuffer_size",
         num(h.flatbufferSize) + " bytes is not a valid manifest size");
  if (!detail::isPowerOfTwo(h.dataAlignment) ||
      h.dataAlignment < kMinBlobAlignment)
    fail("header.data_alignment",
         num(h.dataAlignment) +
             " is not a power of two >= " + num(kMinBlobAlignment));
  if (h.dataOffset < h.flatbufferOffset + h.flatbufferSize ||
      h.dataOffset % h.dataAlignment != 0 ||
      !rangeInside(h.dataOffset, h.dataSize, size))
    fail("header.data_offset",
         "data section at offset " + num(h.dataOffset) + " + " +
             num(h.dataSize) + " bytes is misplaced (after the manifest, " +
             num(h.dataAlignment) + "-aligned, inside the " + num(size) +
             "-byte file)");
  if (h.blobCount > size / 8 ||
      h.checksumTableOffset < h.dataOffset + h.dataSize ||
      h.checksumTableOffset % 8 != 0 ||
      !rangeInside(h.checksumTableOffset, checksumTableSize(h.blobCount),
                   size) ||
      h.checksumTableOffset + checksumTableSize(h.blobCount) != size)
    fail("header.checksum_table_offset",
         "checksum table of " + num(h.blobCount) + " blobs at offset " +
             num(h.checksumTableOffset) +
             " does not end the file (after the data section, 8-aligned)");

  // The manifest.
  const uint8_t *fbBytes = base + h.flatbufferOffset;
  uint64_t fbSum = xxhash64(fbBytes, h.flatbufferSize);
  if (fbSum != h.flatbufferChecksum)
    fail("manifest", "checksum mismatch (stored " + hex(h.flatbufferChecksum) +
                         ", computed " + hex(fbSum) + ")");
  flatbuffers::Verifier::Options vopts;
  vopts.max_tables = 1u << 30; // the size of the buffer bounds the work
  vopts.max_depth = 64;
  flatbuffers::Verifier verifier(fbBytes, h.flatbufferSize, vopts);
  if (!fb::VerifyManifestBuffer(verifier))
    fail("manifest", "not a valid manifest (FlatBuffers verification failed)");
  a->manifest_ = fb::GetManifest(fbBytes);
  const fb::Manifest &m = *a->manifest_;
  if (m.version()->major_version() != h.versionMajor ||
      m.version()->minor_version() != h.versionMinor)
    fail("manifest.version", "version " + num(m.version()->major_version()) +
                                 "." + num(m.version()->minor_version()) +
                                 " differs from the header's " + version);
  if (count(m.blobs()) != h.blobCount)
    fail("header.blob_count", num(h.blobCount) + " differs from the " +
                                  num(count(m.blobs())) +
                                  " blobs of the manifest");

  // The checksum table protects itself.
  a->checksums_ = base + h.checksumTableOffset;
  uint64_t tableSum = xxhash64(a->checksums_, 8 * h.blobCount);
  uint64_t storedTableSum = loadLE<uint64_t>(a->checksums_ + 8 * h.blobCount);
  if (tableSum != storedTableSum)
    fail("checksum table", "checksum mismatch (stored " + hex(storedTableSum) +
                               ", computed " + hex(tableSum) + ")");

  a->blobOwners_ = detail::blobOwners(m);
  detail::validateManifest(m, path, h.dataOffset, h.dataSize, a->blobOwners_,
                           /*checkAliasing=*/true);
  for (uint32_t i = 0; i < count(m.parameters()); ++i)
    a->parameterIndex_.emplace(m.parameters()->Get(i)->name()->str(), i);

  for (uint32_t i = 0; i < count(m.executables()); ++i)
    a->verifyBlob(m.executables()->Get(i)->blob());
  if (options.verifyParameters)
    for (uint32_t i = 0; i < count(m.parameters()); ++i)
      a->verifyParameter(i);
  return a;
}

Artifact::~Artifact() = default;

//===----------------------------------------------------------------------===//
// Checksums
//===----------------------------------------------------------------------===//

void Artifact::verifyBlob(size_t i) const {
  ByteSpan bytes = blobData(i);
  uint64_t sum = xxhash64(bytes.data(), bytes.size());
  // Hashing faulted every page in; give them back so that only the bytes a
  // run actually uses count (the LLVM IR blob, for one, never is).
  file_->release(bytes.data(), bytes.size());
  uint64_t stored = blobChecksum(i);
  if (sum != stored)
    throw FormatError(path_, blobOwners_[i],
                      "checksum mismatch (stored " + hex(stored) +
                          ", computed " + hex(sum) + ")");
}

void Artifact::verifyParameter(size_t i) const {
  verifyBlob(parameter(i).blob());
}

void Artifact::verify(bool full) const {
  const uint8_t *base = file_->data();
  if (xxhash64(base + header_.flatbufferOffset, header_.flatbufferSize) !=
      header_.flatbufferChecksum)
    throw FormatError(path_, "manifest", "checksum mismatch");
  if (xxhash64(checksums_, 8 * header_.blobCount) !=
      loadLE<uint64_t>(checksums_ + 8 * header_.blobCount))
    throw FormatError(path_, "checksum table", "checksum mismatch");
  for (size_t i = 0; i < numExecutables(); ++i)
    verifyBlob(executable(i).blob());
  if (full)
    for (size_t i = 0; i < numParameters(); ++i)
      verifyParameter(i);
}

//===----------------------------------------------------------------------===//
// Accessors
//===----------------------------------------------------------------------===//

namespace {
void checkIndex(size_t i, size_t n, const char *what) {
  if (i >= n)
    throw std::out_of_range(std::string(what) + " index " + std::to_string(i) +
                            " out of range (" + std::to_string(n) + ")");
}
std::vector<std::string> strings(
    const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>> *v) {
  std::vector<std::string> out;
  for (uint32_t i = 0; i < count(v); ++i)
    out.push_back(v->Get(i)->str());
  return out;
}
} // namespace

std::string Artifact::producer() const { return str(manifest_->producer()); }

TargetInfo Artifact::target() const {
  TargetInfo t;
  if (const fb::Target *ft = manifest_->target()) {
    t.name = str(ft->name());
    t.cpu = str(ft->cpu());
    t.features = strings(ft->features());
  }
  return t;
}

ModelConfig Artifact::modelConfig() const {
  ModelConfig c;
  const fb::ModelConfig *f = manifest_->model();
  if (!f)
    return c;
  c.architecture = str(f->architecture());
  c.vocabSize = f->vocab_size();
  c.hiddenSize = f->hidden_size();
  c.intermediateSize = f->intermediate_size();
  c.numLayers = f->num_hidden_layers();
  c.numHeads = f->num_attention_heads();
  c.numKvHeads = f->num_key_value_heads();
  c.headDim = f->head_dim();
  c.maxPositionEmbeddings = f->max_position_embeddings();
  c.ropeTheta = f->rope_theta();
  c.rmsNormEps = f->rms_norm_eps();
  c.tieWordEmbeddings = f->tie_word_embeddings();
  c.hiddenAct = str(f->hidden_act());
  c.weightQuant = str(f->weight_quant());
  c.bosTokenId = f->bos_token_id();
  c.eosTokenId = f->eos_token_id();
  return c;
}

LoraConfig Artifact::loraConfig() const {
  LoraConfig c;
  if (const fb::LoraConfig *f = manifest_->lora()) {
    c.rank = f->rank();
    c.alpha = f->alpha();
    c.dropout = f->dropout();
    c.targets = strings(f->targets());
    c.trainable = str(f->trainable());
  }
  return c;
}

CompileOptions Artifact::compileOptions() const {
  CompileOptions c;
  if (const fb::CompileOptions *f = manifest_->options()) {
    c.seqLen = f->seq_len();
    c.batchSize = f->batch_size();
    c.memoryBudget = f->memory_budget();
    c.optimizer = str(f->optimizer());
    c.recompute = f->recompute();
  }
  return c;
}

std::vector<std::pair<std::string, std::string>> Artifact::metadata() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (uint32_t i = 0; i < count(manifest_->metadata()); ++i) {
    const fb::KeyValue *kv = manifest_->metadata()->Get(i);
    out.emplace_back(kv->key()->str(), str(kv->value()));
  }
  return out;
}

size_t Artifact::numEntryPoints() const {
  return count(manifest_->entry_points());
}

const fb::EntryPoint &Artifact::entryPoint(size_t i) const {
  checkIndex(i, numEntryPoints(), "entry point");
  return *manifest_->entry_points()->Get(uint32_t(i));
}

const fb::EntryPoint *Artifact::findEntryPoint(std::string_view name) const {
  for (size_t i = 0; i < numEntryPoints(); ++i) {
    const fb::EntryPoint &e = entryPoint(i);
    if (e.name()->string_view() == name)
      return &e;
  }
  return nullptr;
}

size_t Artifact::numExecutables() const {
  return count(manifest_->executables());
}

const fb::Executable &Artifact::executable(size_t i) const {
  checkIndex(i, numExecutables(), "executable");
  return *manifest_->executables()->Get(uint32_t(i));
}

ByteSpan Artifact::executableData(size_t i) const {
  return blobData(executable(i).blob());
}

size_t Artifact::numParameters() const {
  return count(manifest_->parameters());
}

const fb::Parameter &Artifact::parameter(size_t i) const {
  checkIndex(i, numParameters(), "parameter");
  return *manifest_->parameters()->Get(uint32_t(i));
}

std::optional<size_t> Artifact::findParameter(std::string_view name) const {
  auto it = parameterIndex_.find(name);
  if (it == parameterIndex_.end())
    return std::nullopt;
  return it->second;
}

ByteSpan Artifact::parameterData(size_t i) const {
  return blobData(parameter(i).blob());
}

Span<int64_t> Artifact::parameterShape(size_t i) const {
  const flatbuffers::Vector<int64_t> *shape = parameter(i).shape();
  if (!shape)
    return {};
  // FlatBuffers scalars are little-endian; so is every supported host.
  static_assert(FLATBUFFERS_LITTLEENDIAN, "big-endian hosts are unsupported");
  return {shape->data(), shape->size()};
}

size_t Artifact::numBlobs() const { return count(manifest_->blobs()); }

const fb::Blob &Artifact::blob(size_t i) const {
  checkIndex(i, numBlobs(), "blob");
  return *manifest_->blobs()->Get(uint32_t(i));
}

ByteSpan Artifact::blobData(size_t i) const {
  const fb::Blob &b = blob(i);
  return {file_->data() + header_.dataOffset + b.offset(), size_t(b.size())};
}

uint64_t Artifact::blobChecksum(size_t i) const {
  checkIndex(i, numBlobs(), "blob");
  return loadLE<uint64_t>(checksums_ + 8 * i);
}

const std::string &Artifact::blobOwner(size_t i) const {
  checkIndex(i, numBlobs(), "blob");
  return blobOwners_[i];
}

} // namespace bitloom::blm

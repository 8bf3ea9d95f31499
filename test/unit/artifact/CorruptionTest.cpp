//===- CorruptionTest.cpp - Broken .blm files give clear errors -----------===//
//
// Every test damages a good artifact in one way and expects a FormatError
// that names the file and the field, never a crash (these tests are also run
// under -fsanitize=address,undefined).
//
//===----------------------------------------------------------------------===//
#include "ArtifactTestUtil.h"
#include "artifact/Describe.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sstream>
#include <unistd.h>

using namespace bitloom;
using namespace bitloom::blm;
using namespace bitloom::test;

namespace {

class ArtifactCorruption : public ::testing::Test {
protected:
  void SetUp() override {
    path = dir.file("model.blm");
    SyntheticArtifact().write(path);
    good = readBytes(path);
    header = decodeHeader(good.data());
    auto a = Artifact::open(path);
    size_t up = *a->findParameter(SyntheticArtifact::kUpProj);
    upBlob = a->parameter(up).blob();
    upOffset = header.dataOffset + a->blob(upBlob).offset();
    execOffset = header.dataOffset + a->blob(a->executable(0).blob()).offset();
  }
  void truncateTo(uint64_t size) {
    ASSERT_EQ(::truncate(path.c_str(), off_t(size)), 0);
  }

  TempDir dir;
  std::string path;
  std::vector<uint8_t> good;
  FileHeader header;
  uint32_t upBlob = 0;
  uint64_t upOffset = 0, execOffset = 0;
  const std::string up = std::string("parameter ") + SyntheticArtifact::kUpProj;
};

} // namespace

TEST_F(ArtifactCorruption, TruncatedFile) {
  truncateTo(good.size() - 100);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.file_size",
                      "truncated: the header says " +
                          std::to_string(good.size()) + " bytes");
  truncateTo(upOffset + 10);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "truncated");
  truncateTo(100);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header",
                      "truncated: the file has 100 bytes",
                      "less than the 128-byte header");
  truncateTo(2);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.magic",
                      "not a .blm artifact", "only 2 bytes");
  truncateTo(0);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "not a .blm artifact");
}

TEST_F(ArtifactCorruption, TrailingBytes) {
  std::vector<uint8_t> bytes = good;
  bytes.resize(bytes.size() + 3);
  writeBytes(path, bytes);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.file_size",
                      "3 more than the header says");
}

TEST_F(ArtifactCorruption, BadMagic) {
  std::vector<uint8_t> bytes = good;
  std::memcpy(bytes.data(), "GGUF", 4);
  writeBytes(path, bytes);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.magic",
                      "not a .blm artifact (magic 'GGUF', expected 'BLM1')");
  bytes[0] = 0;
  writeBytes(path, bytes);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "magic '\\x00GUF'");
}

TEST_F(ArtifactCorruption, NewerMajorVersion) {
  editHeader(path, [](FileHeader &h) {
    h.versionMajor = 2;
    h.versionMinor = 0;
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.version",
                      "format version 2.0 is newer than this runtime (1.x)");
  // Even with a header checksum that no longer matches (a 2.x header may be
  // laid out differently), the version is what gets reported.
  editHeader(path, [](FileHeader &h) { h.versionMajor = 3; }, /*reseal=*/false);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path,
                      "format version 3.0 is newer than this runtime (1.x)");
}

TEST_F(ArtifactCorruption, OlderMajorVersion) {
  editHeader(path, [](FileHeader &h) { h.versionMajor = 0; });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.version",
                      "format version 0.0 is older than this runtime supports");
}

TEST_F(ArtifactCorruption, FlippedByteInHeader) {
  flipByte(path, 50); // inside data_offset
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header",
                      "checksum mismatch");
}

TEST_F(ArtifactCorruption, FlippedByteInManifest) {
  flipByte(path, header.flatbufferOffset + header.flatbufferSize / 2);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "manifest",
                      "checksum mismatch");
}

TEST_F(ArtifactCorruption, FlippedByteInWeightIsCaughtByFullVerify) {
  flipByte(path, upOffset + 17);
  // Weights are checked lazily: open and the cheap verify succeed...
  auto a = Artifact::open(path);
  EXPECT_NO_THROW(a->verify(false));
  // ...and the full one names the parameter.
  EXPECT_FORMAT_ERROR(a->verify(true), path, up, "checksum mismatch");
  EXPECT_FORMAT_ERROR(a->verifyParameter(1), path, up, "checksum mismatch");
  EXPECT_NO_THROW(a->verifyParameter(0));
  EXPECT_FORMAT_ERROR(Artifact::open(path, {/*verifyParameters=*/true}), path,
                      up, "checksum mismatch");
}

TEST_F(ArtifactCorruption, FlippedByteInExecutableIsCaughtAtOpen) {
  flipByte(path, execOffset + 5);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path,
                      "executable 0 (train_kernels)", "checksum mismatch");
}

TEST_F(ArtifactCorruption, FlippedByteInChecksumTable) {
  flipByte(path, header.checksumTableOffset + 8 * upBlob + 3);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "checksum table",
                      "checksum mismatch");
}

TEST_F(ArtifactCorruption, BlobOutsideTheDataSection) {
  editManifest(path, [&](fb::Manifest &m) {
    m.mutable_blobs()->GetMutableObject(upBlob)->mutate_offset(header.dataSize);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, up,
                      "data outside the file's data section");
}

TEST_F(ArtifactCorruption, BlobSizeOverflowing) {
  editManifest(path, [&](fb::Manifest &m) {
    m.mutable_blobs()->GetMutableObject(upBlob)->mutate_size(UINT64_MAX - 8);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, up, "data outside");
}

TEST_F(ArtifactCorruption, MisalignedBlob) {
  editManifest(path, [&](fb::Manifest &m) {
    fb::Blob *b = m.mutable_blobs()->GetMutableObject(upBlob);
    b->mutate_offset(b->offset() + 64);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, up, "misaligned data",
                      "is not a multiple of 4096");
  editManifest(path, [&](fb::Manifest &m) {
    m.mutable_blobs()->GetMutableObject(upBlob)->mutate_alignment(32);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, up,
                      "data alignment 32 is not a power of two >= 64");
}

TEST_F(ArtifactCorruption, OverlappingBlobs) {
  editManifest(path, [&](fb::Manifest &m) {
    uint64_t prev = m.blobs()->Get(upBlob - 1)->offset();
    m.mutable_blobs()->GetMutableObject(upBlob)->mutate_offset(prev);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "data overlaps");
}

TEST_F(ArtifactCorruption, IndicesOutOfRange) {
  editManifest(path, [&](fb::Manifest &m) {
    m.mutable_parameters()->GetMutableObject(1)->mutate_blob(99);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, up,
                      "blob index 99 out of range (8 blobs)");

  writeBytes(path, good);
  editManifest(path, [&](fb::Manifest &m) {
    fb::Dispatch *d = m.mutable_entry_points()
                          ->GetMutableObject(0)
                          ->mutable_dispatches()
                          ->GetMutableObject(1);
    d->mutable_bindings()->GetMutableObject(1)->mutate_index(1000);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path,
                      "entry point train_step, dispatch 1, binding 1",
                      "parameter 1000 out of range (6 parameters)");

  writeBytes(path, good);
  editManifest(path, [&](fb::Manifest &m) {
    fb::Dispatch *d = m.mutable_entry_points()
                          ->GetMutableObject(0)
                          ->mutable_dispatches()
                          ->GetMutableObject(0);
    d->mutable_bindings()->GetMutableObject(2)->mutate_offset(4000);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path,
                      "entry point train_step, dispatch 0, binding 2",
                      "exceeds its buffer (4096 bytes)");

  writeBytes(path, good);
  editManifest(path, [&](fb::Manifest &m) {
    fb::Dispatch *d = m.mutable_entry_points()
                          ->GetMutableObject(0)
                          ->mutable_dispatches()
                          ->GetMutableObject(0);
    d->mutable_bindings()->GetMutableObject(0)->mutate_source(
        fb::BindingSource(42));
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "binding 0",
                      "unknown binding source 42");

  writeBytes(path, good);
  editManifest(path, [&](fb::Manifest &m) {
    m.mutable_memory_plan()->mutable_slots()->GetMutableObject(1)->mutate_size(
        1 << 20);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "memory plan, slot 1 (up)",
                      "outside the arena");
}

TEST_F(ArtifactCorruption, HeaderSectionsOutsideTheFile) {
  editHeader(path, [&](FileHeader &h) { h.dataSize = 1ull << 40; });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.data_offset",
                      "inside the");
  writeBytes(path, good);
  editHeader(path, [&](FileHeader &h) { h.flatbufferSize = UINT64_MAX; });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.flatbuffer_offset");
  writeBytes(path, good);
  editHeader(path, [&](FileHeader &h) { h.dataOffset += 64; });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.data_offset");
  writeBytes(path, good);
  editHeader(path, [&](FileHeader &h) { h.blobCount = 3; });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path,
                      "header.checksum_table_offset");
  writeBytes(path, good);
  editHeader(path, [&](FileHeader &h) { h.checksumAlgorithm = 9; });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "header.checksum_algorithm",
                      "unknown checksum algorithm 9");
}

TEST_F(ArtifactCorruption, ManifestVersionDiffersFromHeader) {
  editManifest(path, [](fb::Manifest &m) {
    m.mutable_version()->mutate_minor_version(4);
  });
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "manifest.version",
                      "version 1.4 differs from the header's 1.0");
}

TEST_F(ArtifactCorruption, GarbageManifestWithAValidChecksum) {
  std::vector<uint8_t> bytes = good;
  for (uint64_t i = 0; i < header.flatbufferSize; ++i)
    bytes[header.flatbufferOffset + i] = uint8_t(i * 97 + 13);
  FileHeader h = header;
  h.flatbufferChecksum =
      xxhash64(bytes.data() + h.flatbufferOffset, h.flatbufferSize);
  encodeHeader(h, bytes.data());
  writeBytes(path, bytes);
  EXPECT_FORMAT_ERROR(Artifact::open(path), path, "manifest",
                      "FlatBuffers verification failed");
}

// Any single corrupted manifest byte, even with its checksum recomputed,
// yields a clean open or a FormatError, never a crash or an out-of-bounds
// read (meaningful under the sanitizers).
TEST_F(ArtifactCorruption, EveryManifestByteFlipIsHandled) {
  // Patched in place (pwrite) rather than rewritten: fast on any file system.
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto put = [&](uint64_t offset, const void *data, size_t size) {
    ASSERT_EQ(::pwrite(fd, data, size, off_t(offset)), ssize_t(size));
  };
  std::vector<uint8_t> manifest(good.begin() + header.flatbufferOffset,
                                good.begin() + header.flatbufferOffset +
                                    header.flatbufferSize);
  int errors = 0, opened = 0;
  for (uint64_t i = 0; i < manifest.size(); ++i) {
    manifest[i] ^= 0xa5;
    FileHeader h = header;
    h.flatbufferChecksum = xxhash64(manifest.data(), manifest.size());
    uint8_t hb[kHeaderSize];
    encodeHeader(h, hb);
    put(0, hb, kHeaderSize);
    put(header.flatbufferOffset + i, &manifest[i], 1);
    try {
      auto a = Artifact::open(path);
      // Whatever opened must be safe to walk completely.
      std::ostringstream os;
      describeArtifact(*a, os);
      ++opened;
    } catch (const FormatError &e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
      ++errors;
    }
    manifest[i] ^= 0xa5;
    put(header.flatbufferOffset + i, &manifest[i], 1);
  }
  ::close(fd);
  EXPECT_GT(errors, 0);
  EXPECT_GT(opened, 0); // e.g. flips inside names and metadata strings
}

// Random multi-byte damage anywhere in the manifest, checksum recomputed.
TEST_F(ArtifactCorruption, RandomManifestDamageIsHandled) {
  std::vector<uint8_t> manifest(good.begin() + header.flatbufferOffset,
                                good.begin() + header.flatbufferOffset +
                                    header.flatbufferSize);
  uint64_t state = 0x9e3779b97f4a7c15ULL;
  auto next = [&] {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return state;
  };
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<uint8_t> bytes = good;
    uint8_t *fb = bytes.data() + header.flatbufferOffset;
    int n = 1 + int(next() % 6);
    for (int k = 0; k < n; ++k)
      fb[next() % manifest.size()] = uint8_t(next());
    FileHeader h = header;
    h.flatbufferChecksum = xxhash64(fb, h.flatbufferSize);
    encodeHeader(h, bytes.data());
    writeBytes(path, bytes);
    try {
      auto a = Artifact::open(path);
      std::ostringstream os;
      describeArtifact(*a, os);
    } catch (const FormatError &e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
    }
  }
}

//===- LargeFileTest.cpp - Artifacts over 4 GiB (sparse file) -------------===//
//
// Proves that offsets and sizes are 64-bit end to end: a parameter of
// 4 GiB + 4 KiB of zeros, followed by a small one whose offset is above
// 2^32. The test writes a SPARSE file (the zeros are a hole, created by
// lseek), so it takes a few MB of disk and about a second; it is skipped when
// the file system cannot make holes or lacks the space.
//
//===----------------------------------------------------------------------===//
#include "ArtifactTestUtil.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

using namespace bitloom;
using namespace bitloom::blm;
using namespace bitloom::test;

namespace {

/// Writes through a plain descriptor and turns runs of zeros into holes.
class SparseFileSink : public ArtifactSink {
public:
  explicit SparseFileSink(const std::string &path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw std::runtime_error("open: " + std::string(std::strerror(errno)));
  }
  ~SparseFileSink() override {
    if (fd_ >= 0)
      ::close(fd_);
  }
  void write(const void *data, size_t size) override {
    const char *p = static_cast<const char *>(data);
    while (size > 0) {
      ssize_t n = ::write(fd_, p, size);
      if (n < 0)
        throw std::runtime_error("write: " + std::string(std::strerror(errno)));
      p += n;
      size -= size_t(n);
      offset_ += uint64_t(n);
    }
  }
  void writeZeros(uint64_t size) override {
    offset_ += size;
    if (::lseek(fd_, off_t(offset_), SEEK_SET) < 0)
      throw std::runtime_error("lseek: " + std::string(std::strerror(errno)));
  }
  void commit() override {
    // A trailing hole still needs the file to reach its full length.
    if (::ftruncate(fd_, off_t(offset_)) != 0 || ::close(fd_) != 0)
      throw std::runtime_error("commit: " + std::string(std::strerror(errno)));
    fd_ = -1;
  }

private:
  int fd_ = -1;
  uint64_t offset_ = 0;
};

/// Whether `dir` can hold a sparse 5 GiB file in a few MB of real space.
bool supportsSparseFiles(const std::string &dir, std::string &why) {
  struct statvfs vfs;
  if (::statvfs(dir.c_str(), &vfs) != 0) {
    why = "statvfs failed";
    return false;
  }
  if (uint64_t(vfs.f_bavail) * vfs.f_frsize < (64ull << 20)) {
    why = "less than 64 MiB free";
    return false;
  }
  std::string probe = dir + "/probe";
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    why = "cannot create a probe file";
    return false;
  }
  bool ok = ::ftruncate(fd, off_t(5ull << 30)) == 0;
  struct stat st;
  ok = ok && ::fstat(fd, &st) == 0 && uint64_t(st.st_blocks) * 512 < (1 << 20);
  ::close(fd);
  ::unlink(probe.c_str());
  if (!ok)
    why = "the file system does not make sparse files";
  return ok;
}

} // namespace

TEST(ArtifactLargeFile, SparseFileOver4GiBUses64BitOffsets) {
  TempDir dir;
  std::string why;
  if (!supportsSparseFiles(dir.path(), why))
    GTEST_SKIP() << why;
  std::string path = dir.file("huge.blm");

  const uint64_t hugeSize = (4ull << 30) + 4096; // > UINT32_MAX
  std::vector<uint8_t> small = SyntheticArtifact::pattern(4096, 9);
  std::vector<uint8_t> head = SyntheticArtifact::pattern(64, 3);
  {
    ArtifactBuilder b;
    b.addParameter({"head", "f32", {16}, false}, head);
    b.addZeroParameter({"huge", "u8", {int64_t(hugeSize)}, false}, hugeSize);
    b.addParameter({"after", "f32", {1024}, true}, small);
    EntryPointInfo e;
    e.name = "touch";
    e.dispatches.push_back(
        {0,
         0,
         {1, 1, 1},
         {{BindingSource::Parameter, 1, hugeSize - 64, 64, Access::Read},
          {BindingSource::Parameter, 2, 0, 4096, Access::Read}},
         {},
         "probe"});
    std::vector<uint8_t> code(64, 0xc3);
    b.addExecutable({"k", "elf-relocatable", "", {{"probe", {}, {}, ""}}},
                    code);
    b.addEntryPoint(e);
    SparseFileSink sink(path);
    b.writeTo(sink, path);
  }
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_GT(uint64_t(st.st_size), hugeSize);
  EXPECT_LT(uint64_t(st.st_blocks) * 512, 64ull << 20) << "not sparse";

  auto a = Artifact::open(path);
  EXPECT_EQ(a->fileSize(), uint64_t(st.st_size));
  EXPECT_GT(a->header().checksumTableOffset, UINT32_MAX);
  size_t huge = *a->findParameter("huge");
  size_t after = *a->findParameter("after");
  EXPECT_EQ(a->parameterData(huge).size(), hugeSize);
  EXPECT_GT(a->blob(a->parameter(after).blob()).offset(), UINT32_MAX);
  ByteSpan s = a->parameterData(after);
  EXPECT_EQ(std::vector<uint8_t>(s.begin(), s.end()), small);
  EXPECT_EQ(uintptr_t(s.data()) % 4096, 0u);
  EXPECT_EQ(a->parameterData(huge)[hugeSize - 1], 0);
  EXPECT_EQ(a->entryPoint(0).dispatches()->Get(0)->bindings()->Get(0)->offset(),
            hugeSize - 64);
  a->verifyParameter(after);
  // The huge parameter's checksum is not re-read here: reading 4 GiB of
  // hole fills the page cache with zeros (many seconds). A few bytes of it:
  ByteSpan hole = a->parameterData(huge);
  EXPECT_EQ(hole[0], 0);
  EXPECT_EQ(hole[hugeSize / 2], 0);
  // Its stored checksum is the XXH64 of hugeSize zeros (hashed here in
  // other pieces than the builder's).
  std::vector<uint8_t> zeros(3 << 20, 0);
  Xxh64 sum;
  for (uint64_t left = hugeSize; left > 0;) {
    size_t k = size_t(std::min<uint64_t>(left, zeros.size()));
    sum.update(zeros.data(), k);
    left -= k;
  }
  EXPECT_EQ(a->blobChecksum(a->parameter(huge).blob()), sum.digest());
  uint64_t afterAt =
      a->header().dataOffset + a->blob(a->parameter(after).blob()).offset();
  a.reset();

  // A flipped byte beyond 4 GiB is still found, and named.
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  uint8_t byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, off_t(afterAt + 100)), 1);
  byte ^= 1;
  ASSERT_EQ(::pwrite(fd, &byte, 1, off_t(afterAt + 100)), 1);
  ::close(fd);
  a = Artifact::open(path);
  EXPECT_FORMAT_ERROR(a->verifyParameter(after), path, "parameter after",
                      "checksum mismatch");
}

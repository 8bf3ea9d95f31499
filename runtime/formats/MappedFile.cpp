//===- MappedFile.cpp - Read-only memory mapping of a file ----------------===//
#include "formats/MappedFile.h"
#include "formats/Error.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace bitloom {

namespace {
std::string errnoText() { return std::strerror(errno); }

/// Closes a descriptor on every exit path of open().
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0)
      ::close(fd);
  }
};
} // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string &path) {
  FdGuard guard{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (guard.fd < 0)
    throw FormatError(path, "", "cannot open: " + errnoText());
  struct stat st;
  if (::fstat(guard.fd, &st) != 0)
    throw FormatError(path, "", "cannot stat: " + errnoText());
  if (!S_ISREG(st.st_mode))
    throw FormatError(path, "", "not a regular file");

  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  // mmap rejects a zero length; an empty file simply has no bytes, and the
  // format readers report it as truncated.
  if (file->size_ == 0)
    return file;
  void *p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, guard.fd, 0);
  if (p == MAP_FAILED)
    throw FormatError(path, "", "cannot map: " + errnoText());
  file->data_ = static_cast<const uint8_t *>(p);
  return file;
}

MappedFile::~MappedFile() {
  if (data_)
    ::munmap(const_cast<uint8_t *>(data_), size_);
}

void MappedFile::release(const uint8_t *p, size_t n) const {
  if (!data_ || p < data_ || p + n > data_ + size_ || n == 0)
    return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  uintptr_t begin = (uintptr_t(p) + page - 1) / page * page;
  uintptr_t end = (uintptr_t(p) + n) / page * page;
  if (end > begin) // advice only: a failure changes nothing we rely on
    (void)::madvise(reinterpret_cast<void *>(begin), end - begin,
                    MADV_DONTNEED);
}

AtomicFileWriter::AtomicFileWriter(const std::string &path) : path_(path) {
  // The temporary lives beside the target so that rename() stays within one
  // file system and is atomic.
  std::string tmpl = path + ".tmp.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0)
    throw FormatError(path, "",
                      "cannot create a temporary file: " + errnoText());
  tmpPath_ = buf.data();
  // mkstemp creates 0600; weight files are meant to be shared like any
  // other output file.
  ::fchmod(fd_, 0644);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmpPath_.c_str());
  }
}

void AtomicFileWriter::fail(const std::string &what) {
  std::string msg = what + ": " + errnoText();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(tmpPath_.c_str());
  }
  throw FormatError(path_, "", msg);
}

void AtomicFileWriter::write(const void *bytes, size_t size) {
  if (fd_ < 0)
    throw FormatError(path_, "", "write after commit or failure");
  const char *p = static_cast<const char *>(bytes);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      fail("cannot write");
    }
    p += n;
    size -= static_cast<size_t>(n);
    offset_ += static_cast<uint64_t>(n);
  }
}

void AtomicFileWriter::writeZeros(size_t n) {
  static const char zeros[256] = {};
  while (n > 0) {
    size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
    write(zeros, k);
    n -= k;
  }
}

void AtomicFileWriter::commit() {
  if (fd_ < 0)
    throw FormatError(path_, "", "commit after commit or failure");
  if (::fsync(fd_) != 0)
    fail("cannot fsync");
  if (::close(fd_) != 0) {
    fd_ = -1;
    std::string msg = "cannot close: " + errnoText();
    ::unlink(tmpPath_.c_str());
    throw FormatError(path_, "", msg);
  }
  fd_ = -1;
  if (::rename(tmpPath_.c_str(), path_.c_str()) != 0) {
    std::string msg =
        "cannot rename the temporary file into place: " + errnoText();
    ::unlink(tmpPath_.c_str());
    throw FormatError(path_, "", msg);
  }
  // The rename itself is durable only once the directory entry is synced;
  // failing to sync the directory is not worth failing the write for.
  std::string dir = ".";
  size_t slash = path_.find_last_of('/');
  if (slash != std::string::npos)
    dir = slash == 0 ? "/" : path_.substr(0, slash);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void writeFileAtomically(const std::string &path, const void *bytes,
                         size_t size) {
  AtomicFileWriter w(path);
  w.write(bytes, size);
  w.commit();
}

} // namespace bitloom

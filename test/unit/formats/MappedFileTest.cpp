//===- MappedFileTest.cpp - Mapping and atomic writes ---------------------===//
#include "formats/MappedFile.h"
#include "FormatsTestUtil.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

using namespace bitloom;
using namespace bitloom::test;

TEST(FormatsMappedFile, MapsTheWholeFile) {
  TempDir dir;
  writeBytes(dir.file("a.bin"), {1, 2, 3, 4, 5});
  auto f = MappedFile::open(dir.file("a.bin"));
  ASSERT_EQ(f->size(), 5u);
  EXPECT_EQ(f->data()[4], 5);
  EXPECT_EQ(f->path(), dir.file("a.bin"));
}

TEST(FormatsMappedFile, EmptyFileHasNoBytes) {
  TempDir dir;
  writeBytes(dir.file("empty"), {});
  auto f = MappedFile::open(dir.file("empty"));
  EXPECT_EQ(f->size(), 0u);
  EXPECT_EQ(f->data(), nullptr);
}

TEST(FormatsMappedFile, ErrorsNameTheFile) {
  TempDir dir;
  EXPECT_FORMAT_ERROR(MappedFile::open(dir.file("missing.bin")),
                      dir.file("missing.bin"), "cannot open", "No such file");
  EXPECT_FORMAT_ERROR(MappedFile::open(dir.path()), dir.path(),
                      "not a regular file");
}

TEST(FormatsMappedFile, WritesAtomicallyAndReplaces) {
  TempDir dir;
  std::string path = dir.file("out.bin");
  writeBytes(path, {9, 9, 9, 9, 9, 9, 9, 9});
  const char text[] = "new content";
  writeFileAtomically(path, text, sizeof(text));
  auto bytes = readBytes(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()),
            std::string(text, sizeof(text)));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(FormatsMappedFile, FailedWritesLeaveNothingBehind) {
  TempDir dir;
  // The directory does not exist: no temporary file can be made.
  EXPECT_FORMAT_ERROR(writeFileAtomically(dir.file("no/such/dir/x"), "a", 1),
                      dir.file("no/such/dir/x"), "temporary file");
  // The target is a directory: the rename fails, the temporary goes away.
  std::filesystem::create_directory(dir.file("target"));
  EXPECT_FORMAT_ERROR(writeFileAtomically(dir.file("target"), "abc", 3),
                      dir.file("target"), "rename");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"target"});
}

TEST(FormatsMappedFile, UncommittedWriterKeepsTheOldFile) {
  TempDir dir;
  std::string path = dir.file("keep.bin");
  writeBytes(path, {1, 2, 3});
  {
    AtomicFileWriter w(path);
    w.write("partial", 7);
    w.writeZeros(5);
    EXPECT_EQ(w.offset(), 12u);
    // No commit: as if an exception unwound past the writer.
  }
  EXPECT_EQ(readBytes(path), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"keep.bin"});
}

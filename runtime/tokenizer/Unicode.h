//===- Unicode.h - Code point classes and UTF-8 helpers ---------*- C++ -*-===//
//
// Internal to bitloom_tokenizer. Classes come from UnicodeTables.inc, which
// gen_unicode_tables.py derives from Python's unicodedata.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TOKENIZER_UNICODE_H
#define BITLOOM_TOKENIZER_UNICODE_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bitloom::unicode {

enum : uint8_t {
  kLetter = 1,     // \p{L}
  kNumber = 2,     // \p{N}
  kWhitespace = 4, // \s (White_Space)
  kWord = 8,       // \w (Rust regex)
};

/// Class flags of a code point (0 for everything else, including
/// unassigned code points).
uint8_t flags(uint32_t cp);

/// A decoded code point and where it sits in the source string. Invalid
/// UTF-8 bytes decode one at a time as `kInvalid` so byte offsets stay exact
/// and the raw byte is kept.
struct CodePoint {
  uint32_t cp;
  uint32_t offset; // byte offset of the first byte
  uint32_t len;    // bytes
};
constexpr uint32_t kInvalid = 0xFFFFFFFF;

/// Decodes [begin, end) of `s`.
void decodeUtf8(const std::string &s, size_t begin, size_t end,
                std::vector<CodePoint> &out);
void appendUtf8(std::string &out, uint32_t cp);

/// GPT-2's bytes_to_unicode(): byte -> code point.
uint32_t byteToUnicode(uint8_t b);
/// The UTF-8 of byteToUnicode(b).
const std::string &byteToUnicodeUtf8(uint8_t b);
/// Inverse of byteToUnicode; -1 for code points outside its image.
int unicodeToByte(uint32_t cp);
/// Byte values in bytes_to_unicode order (the first 256 ids of GPT-2).
const std::vector<uint8_t> &byteLevelOrder();

/// `bytes` mapped through byteToUnicode.
std::string byteLevelEncode(const std::string &bytes);

/// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes
/// U+FFFD.
std::string utf8Lossy(const std::string &bytes);

} // namespace bitloom::unicode

#endif // BITLOOM_TOKENIZER_UNICODE_H

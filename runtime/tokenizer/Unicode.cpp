//===- Unicode.cpp - Code point classes and UTF-8 helpers -----------------===//

#include "tokenizer/Unicode.h"

#include <algorithm>
#include <array>

namespace bitloom::unicode {
namespace {

struct Range {
  uint32_t first, last;
  uint8_t flags;
};

const Range kRanges[] = {
#include "tokenizer/UnicodeTables.inc"
};

// Flags of the first 256 code points, so ASCII / Latin-1 skip the search.
std::array<uint8_t, 256> buildLatin1() {
  std::array<uint8_t, 256> t{};
  for (const Range &r : kRanges)
    for (uint32_t cp = r.first; cp <= r.last && cp < 256; ++cp)
      t[cp] = r.flags;
  return t;
}
const std::array<uint8_t, 256> kLatin1 = buildLatin1();

// Length of the well-formed sequence starting at s[i], or 0 when the bytes
// there are not one; `consumed` is then the maximal invalid subpart (>= 1).
size_t sequenceLength(const unsigned char *s, size_t n, size_t i,
                      size_t &consumed) {
  unsigned char b = s[i];
  consumed = 1;
  if (b < 0x80)
    return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF; // bounds of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0)
      lo = 0xA0;
    else if (b == 0xED)
      hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0)
      lo = 0x90;
    else if (b == 0xF4)
      hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= n)
      return 0;
    unsigned char c = s[i + k];
    if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF))
      return 0;
    consumed = k + 1;
  }
  return len;
}

struct ByteTables {
  std::array<uint32_t, 256> toCp;
  std::array<std::string, 256> toUtf8;
  std::vector<uint8_t> order;
  ByteTables() {
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b)
      direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b)
      direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b)
      direct[b] = true;
    for (int b = 0; b < 256; ++b)
      if (direct[b]) {
        toCp[b] = b;
        order.push_back(static_cast<uint8_t>(b));
      }
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b)
      if (!direct[b]) {
        toCp[b] = next++;
        order.push_back(static_cast<uint8_t>(b));
      }
    for (int b = 0; b < 256; ++b)
      appendUtf8(toUtf8[b], toCp[b]);
  }
};
const ByteTables &byteTables() {
  static const ByteTables t;
  return t;
}

} // namespace

uint8_t flags(uint32_t cp) {
  if (cp < 256)
    return kLatin1[cp];
  const Range *end = kRanges + sizeof(kRanges) / sizeof(kRanges[0]);
  const Range *it = std::upper_bound(
      kRanges, end, cp, [](uint32_t v, const Range &r) { return v < r.first; });
  if (it == kRanges)
    return 0;
  --it;
  return cp <= it->last ? it->flags : 0;
}

void decodeUtf8(const std::string &s, size_t begin, size_t end,
                std::vector<CodePoint> &out) {
  const auto *p = reinterpret_cast<const unsigned char *>(s.data());
  size_t i = begin;
  while (i < end) {
    unsigned char b = p[i];
    if (b < 0x80) {
      out.push_back({b, static_cast<uint32_t>(i), 1});
      ++i;
      continue;
    }
    size_t consumed;
    size_t len = sequenceLength(p, end, i, consumed);
    if (len == 0) {
      out.push_back({kInvalid, static_cast<uint32_t>(i), 1});
      ++i;
      continue;
    }
    uint32_t cp = len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    for (size_t k = 1; k < len; ++k)
      cp = (cp << 6) | (p[i + k] & 0x3F);
    out.push_back({cp, static_cast<uint32_t>(i), static_cast<uint32_t>(len)});
    i += len;
  }
}

void appendUtf8(std::string &out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

uint32_t byteToUnicode(uint8_t b) { return byteTables().toCp[b]; }

const std::string &byteToUnicodeUtf8(uint8_t b) {
  return byteTables().toUtf8[b];
}

int unicodeToByte(uint32_t cp) {
  if (cp < 256)
    return byteTables().toCp[cp] == cp ? static_cast<int>(cp) : -1;
  if (cp < 256 + 68) {
    // The remapped bytes take 256.. in increasing byte order.
    const auto &order = byteTables().order;
    return order[188 + (cp - 256)];
  }
  return -1;
}

const std::vector<uint8_t> &byteLevelOrder() { return byteTables().order; }

std::string byteLevelEncode(const std::string &bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes)
    out += byteToUnicodeUtf8(c);
  return out;
}

std::string utf8Lossy(const std::string &bytes) {
  const auto *p = reinterpret_cast<const unsigned char *>(bytes.data());
  size_t n = bytes.size();
  std::string out;
  out.reserve(n);
  size_t i = 0;
  while (i < n) {
    size_t consumed;
    size_t len = sequenceLength(p, n, i, consumed);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      i += consumed;
    } else {
      out.append(bytes, i, len);
      i += len;
    }
  }
  return out;
}

} // namespace bitloom::unicode

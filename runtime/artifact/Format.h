//===- Format.h - The fixed parts of a .blm file ----------------*- C++ -*-===//
//
// A .blm file, all integers little-endian (README.md has the full story):
//
//   [0, 128)                     FileHeader (below)
//   [flatbuffer_offset, +size)   the manifest, a FlatBuffer (blm.fbs),
//   8-aligned [data_offset, +data_size)    blobs (weights, executables), each
//   aligned to
//                                its Blob.alignment (>= 64; 4096 for weights)
//   [checksum_table_offset, EOF) blob_count u64 XXH64s, one per Blob, then the
//                                XXH64 of those blob_count * 8 bytes
//
// The blob checksums trail the data so that a writer can stream multi-GB
// weights in one pass: everything before the data is known up front.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_ARTIFACT_FORMAT_H
#define BITLOOM_ARTIFACT_FORMAT_H

#include <cstddef>
#include <cstdint>

namespace bitloom::blm {

/// The version this code writes. It reads every 1.x (newer minors only add
/// fields that older readers ignore) and rejects other majors.
constexpr uint16_t kFormatMajor = 1;
constexpr uint16_t kFormatMinor = 0;

constexpr char kMagic[4] = {'B', 'L', 'M', '1'};
/// FlatBuffers file identifier of the manifest.
constexpr char kManifestIdentifier[5] = "BLMF";
constexpr uint32_t kHeaderSize = 128;
/// Offset of the header checksum: XXH64 of bytes [0, kHeaderChecksumOffset).
constexpr uint32_t kHeaderChecksumOffset = 120;
/// Every blob starts at a multiple of at least this (absolute file offset).
constexpr uint64_t kMinBlobAlignment = 64;
/// FileHeader::checksumAlgorithm: XXH64 with seed 0 (the only one so far).
constexpr uint32_t kChecksumXxh64 = 1;

/// The header as stored at offset 0 (byte offsets in comments).
struct FileHeader {
  char magic[4] = {kMagic[0], kMagic[1], kMagic[2], kMagic[3]}; //   0
  uint16_t versionMajor = kFormatMajor;                         //   4
  uint16_t versionMinor = kFormatMinor;                         //   6
  uint32_t headerSize = kHeaderSize;                            //   8
  uint32_t flags = 0;                                           //  12 reserved
  uint64_t fileSize = 0;                                        //  16
  uint64_t flatbufferOffset = 0;                                //  24
  uint64_t flatbufferSize = 0;                                  //  32
  uint64_t flatbufferChecksum = 0;                              //  40
  uint64_t dataOffset = 0;                                      //  48
  uint64_t dataSize = 0;                                        //  56
  uint64_t dataAlignment = 0;                                   //  64
  uint64_t checksumTableOffset = 0;                             //  72
  uint64_t blobCount = 0;                                       //  80
  uint32_t checksumAlgorithm = kChecksumXxh64;                  //  88
  // 92..119 reserved (zero)
  uint64_t headerChecksum = 0; // 120: XXH64 of bytes [0, 120)
};

/// Serializes `h` into kHeaderSize bytes, computing the header checksum (the
/// headerChecksum field of `h` is ignored).
void encodeHeader(const FileHeader &h, uint8_t out[kHeaderSize]);
/// Parses kHeaderSize bytes without validating anything.
FileHeader decodeHeader(const uint8_t bytes[kHeaderSize]);
/// XXH64 of bytes [0, kHeaderChecksumOffset) of a header.
uint64_t computeHeaderChecksum(const uint8_t bytes[kHeaderSize]);

/// Size of the checksum table for `blobCount` blobs.
constexpr uint64_t checksumTableSize(uint64_t blobCount) {
  return 8 * (blobCount + 1);
}

} // namespace bitloom::blm

#endif // BITLOOM_ARTIFACT_FORMAT_H

"""Makes a .blm look like one from before `bitloom compile` kept its LLVM IR.

Usage: blm-without-ir.py IN.blm OUT.blm

Renames the format of the "llvm-bc" executable in the manifest (same length,
so no offset moves) and rewrites the manifest and header checksums (XXH64,
seed 0; see runtime/artifact/README.md).
"""
import struct
import sys

P1, P2, P3, P4, P5 = (11400714785074694791, 14029467366897019727,
                      1609587929392839161, 9650029242287828579,
                      2870177450012600261)
M = (1 << 64) - 1


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M


def round_(acc, value):
    return (rotl((acc + value * P2) & M, 31) * P1) & M


def merge(acc, value):
    return ((acc ^ round_(0, value)) * P1 + P4) & M


def xxh64(data, seed=0):
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed, (seed - P1) & M]
        while i + 32 <= n:
            lanes = struct.unpack_from("<4Q", data, i)
            v = [round_(a, b) for a, b in zip(v, lanes)]
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) +
             rotl(v[3], 18)) & M
        for lane in v:
            h = merge(h, lane)
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 8 <= n:
        h ^= round_(0, struct.unpack_from("<Q", data, i)[0])
        h = (rotl(h, 27) * P1 + P4) & M
        i += 8
    if i + 4 <= n:
        h ^= (struct.unpack_from("<I", data, i)[0] * P1) & M
        h = (rotl(h, 23) * P2 + P3) & M
        i += 4
    while i < n:
        h ^= (data[i] * P5) & M
        h = (rotl(h, 11) * P1) & M
        i += 1
    h ^= h >> 33
    h = (h * P2) & M
    h ^= h >> 29
    h = (h * P3) & M
    return h ^ (h >> 32)


data = bytearray(open(sys.argv[1], "rb").read())
offset, size, checksum = struct.unpack_from("<3Q", data, 24)
manifest = bytes(data[offset:offset + size])
assert xxh64(manifest) == checksum, "manifest checksum mismatch"
assert manifest.count(b"llvm-bc\0") == 1, "no single llvm-bc executable"
manifest = manifest.replace(b"llvm-bc\0", b"retired\0")
data[offset:offset + size] = manifest
struct.pack_into("<Q", data, 40, xxh64(manifest))
struct.pack_into("<Q", data, 120, xxh64(bytes(data[:120])))
open(sys.argv[2], "wb").write(data)

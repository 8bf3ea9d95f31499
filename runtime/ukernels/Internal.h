//===- Internal.h - Shared declarations of the ukernel library --*- C++ -*-===//
//
// Not part of the public C ABI: the per-ISA kernel tables that Ukernels.cpp
// dispatches to, the scratch buffers they share, and the hooks tests use to
// run every instruction set the machine has (forceIsa).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_UKERNELS_INTERNAL_H
#define BITLOOM_UKERNELS_INTERNAL_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bitloom::uk {

/// Instruction sets with their own kernels. Scalar exists everywhere and is
/// the reference the others are tested against.
enum class Isa { Scalar, Avx2, Avx512, Neon, NeonDot };

const char *isaName(Isa isa);
/// The ISAs this build has kernels for and this CPU can run, Scalar first.
std::vector<Isa> availableIsas();
/// The ISA the entry points use now.
Isa activeIsa();
/// Makes the entry points use `isa`; false (and no change) if it is not
/// available. For tests and benchmarks.
bool forceIsa(Isa isa);
/// Back to the best available ISA.
void resetIsa();

/// A dense product C = (accumulate ? C : 0) + opA * opB over [m, n, k]:
///   opA(i, p) = transA ? a[p * lda + i] : a[i * lda + p]
///   opB(p, j) = ternary ? scale * w(p, j) : transB ? B[j * ldb + p]
///                                                  : B[p * ldb + j]
/// where w(p, j) is column j of row p of the i2x128-packed `ternary`, and B
/// is `b`, or `bf16` widened to f32 (exactly) when that is set.
struct GemmArgs {
  const float *a = nullptr;
  int64_t lda = 0;
  bool transA = false;
  const float *b = nullptr;
  const uint16_t *bf16 = nullptr;
  int64_t ldb = 0;
  bool transB = false;
  const uint8_t *ternary = nullptr;
  int64_t ternaryRowBytes = 0;
  float scale = 1.0f;
  float *c = nullptr;
  int64_t ldc = 0;
  int64_t m = 0, n = 0, k = 0;
  bool accumulate = false;
};

/// bitloom_uk_ternary_matmul's operands.
struct TernaryArgs {
  const int8_t *xq = nullptr;
  const uint8_t *w = nullptr;
  const float *rowFactor = nullptr;
  float *y = nullptr;
  int64_t m = 0, n = 0, k = 0;
};

/// One ISA's kernels. Each computes the rows [m0, m1) and columns (outputs)
/// [n0, n1) of its result, so the caller can hand disjoint ranges to threads;
/// n0 is a multiple of the matching granule, m0 of nothing in particular.
struct KernelTable {
  Isa isa;
  /// Column granule of `gemm` (its register tile width). Column ranges that
  /// start on it keep the ternary unpacking aligned to 32-column chunks.
  int64_t gemmNr;
  /// Row granule of `gemm`.
  int64_t gemmMr;
  void (*gemm)(const GemmArgs &args, int64_t m0, int64_t m1, int64_t n0,
               int64_t n1);
  /// Output granule of `ternaryMatmul`.
  int64_t ternaryNr;
  void (*ternaryMatmul)(const TernaryArgs &args, int64_t m0, int64_t m1,
                        int64_t n0, int64_t n1);
};

const KernelTable &scalarKernels();
#ifdef BITLOOM_UK_X86_KERNELS
const KernelTable &avx2Kernels();
const KernelTable &avx512Kernels();
#endif
#ifdef BITLOOM_UK_ARM64_KERNELS
const KernelTable &neonKernels();
const KernelTable &neonDotKernels();
/// The NEON f32 GEMM, shared by both arm64 tables (SDOT only helps int8).
void neonGemm(const GemmArgs &args, int64_t m0, int64_t m1, int64_t n0,
              int64_t n1);
#endif

/// Scratch buffers reused across calls, one set per thread (the pool's
/// workers persist, so they are allocated once). 64-byte aligned; contents
/// are undefined. A slot's previous pointer is invalid after a bigger request.
enum ScratchSlot {
  kScratchA,
  kScratchB,
  kScratchX,
  kScratchTile,
  kScratchRows, // per-row results of bitloom_uk_linear_cross_entropy
  kNumSlots
};
void *scratch(ScratchSlot slot, size_t bytes);

} // namespace bitloom::uk

#endif // BITLOOM_UKERNELS_INTERNAL_H

//===- KernelProfile.h - Profiled calls summed by op ------------*- C++ -*-===//
//
// What `bitloom-run bench --profile-kernels` reports: the mean time of every
// dispatch over several profiled calls (Session::runProfiled), summed by op
// kind, and the dispatches ordered by time. No device code: a library of the
// Session's so that unit tests can check the sums.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_RUN_KERNELPROFILE_H
#define BITLOOM_RUN_KERNELPROFILE_H

#include "Session.h"

#include <cstddef>
#include <string>
#include <vector>

namespace bitloom::run {

/// What a dispatch's time counts under: the op label's first word, the
/// micro-kernel or outlined kernel ("bitloom_uk_ternary_matmul" of
/// "bitloom_uk_ternary_matmul model.layers.0.mlp.up_proj"), so that every
/// layer's call of one micro-kernel adds up; the kernel when there is no
/// label.
std::string opKind(const DispatchTime &d);

/// The mean of several profiled calls of one entry point.
struct KernelProfile {
  size_t steps = 0;
  /// Mean ns per dispatch, in schedule order.
  std::vector<DispatchTime> dispatches;
  /// Mean streamed copies (Vulkan) and the sum of `dispatches`: the mean
  /// step's dispatch time, what shares are of.
  double uploadNs = 0, downloadNs = 0, totalNs = 0;
  struct Op {
    std::string name; ///< opKind()
    size_t dispatches = 0;
    double ns = 0;
  };
  /// Every op kind, most expensive first (ties: first dispatched first).
  std::vector<Op> ops;
  /// Dispatch indices, most expensive first (ties: schedule order).
  std::vector<size_t> byTime;

  /// `ns` as a fraction of totalNs (0 when nothing was timed).
  double share(double ns) const { return totalNs > 0 ? ns / totalNs : 0; }
  /// The ops after the first `n`: how many, their dispatches and time.
  Op rest(size_t n) const;
};

/// Means over `calls` (each of the same entry point: same dispatches).
/// FormatError when they differ in length.
KernelProfile summarizeProfiles(const std::vector<StepProfile> &calls);

} // namespace bitloom::run

#endif // BITLOOM_RUN_KERNELPROFILE_H

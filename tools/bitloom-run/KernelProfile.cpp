//===- KernelProfile.cpp - Profiled calls summed by op --------------------===//
#include "KernelProfile.h"

#include "formats/Error.h"

#include <algorithm>
#include <map>

namespace bitloom::run {

std::string opKind(const DispatchTime &d) {
  if (d.op.empty())
    return d.kernel;
  return d.op.substr(0, d.op.find(' '));
}

KernelProfile::Op KernelProfile::rest(size_t n) const {
  Op other;
  for (size_t i = n; i < ops.size(); ++i) {
    other.dispatches += ops[i].dispatches;
    other.ns += ops[i].ns;
  }
  return other;
}

KernelProfile summarizeProfiles(const std::vector<StepProfile> &calls) {
  KernelProfile kp;
  kp.steps = calls.size();
  if (calls.empty())
    return kp;
  kp.dispatches = calls.front().dispatches;
  for (DispatchTime &d : kp.dispatches)
    d.ns = 0;
  for (const StepProfile &p : calls) {
    if (p.dispatches.size() != kp.dispatches.size())
      throw FormatError("", "profile",
                        "calls of " + std::to_string(kp.dispatches.size()) +
                            " and " + std::to_string(p.dispatches.size()) +
                            " dispatches");
    for (size_t d = 0; d < p.dispatches.size(); ++d)
      kp.dispatches[d].ns += p.dispatches[d].ns;
    kp.uploadNs += p.uploadNs;
    kp.downloadNs += p.downloadNs;
  }
  // Means, so that their sum is the mean call's dispatch time.
  const double n = double(calls.size());
  for (DispatchTime &d : kp.dispatches) {
    d.ns /= n;
    kp.totalNs += d.ns;
  }
  kp.uploadNs /= n;
  kp.downloadNs /= n;

  std::map<std::string, size_t> index;
  for (const DispatchTime &d : kp.dispatches) {
    const std::string name = opKind(d);
    auto [it, added] = index.emplace(name, kp.ops.size());
    if (added)
      kp.ops.push_back({name, 0, 0});
    kp.ops[it->second].dispatches++;
    kp.ops[it->second].ns += d.ns;
  }
  std::stable_sort(kp.ops.begin(), kp.ops.end(),
                   [](const KernelProfile::Op &a, const KernelProfile::Op &b) {
                     return a.ns > b.ns;
                   });
  kp.byTime.resize(kp.dispatches.size());
  for (size_t d = 0; d < kp.byTime.size(); ++d)
    kp.byTime[d] = d;
  std::stable_sort(kp.byTime.begin(), kp.byTime.end(), [&](size_t a, size_t b) {
    return kp.dispatches[a].ns > kp.dispatches[b].ns;
  });
  return kp;
}

} // namespace bitloom::run

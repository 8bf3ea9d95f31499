//===- Describe.h - Human-readable summary of a .blm artifact ---*- C++ -*-===//
#ifndef BITLOOM_ARTIFACT_DESCRIBE_H
#define BITLOOM_ARTIFACT_DESCRIBE_H

#include <cstdint>
#include <map>
#include <ostream>
#include <string>

namespace bitloom::blm {

class Artifact;

struct DescribeOptions {
  /// List every dispatch of every entry point (long for real models).
  bool dispatches = true;
  /// List every arena slot of the memory plan.
  bool slots = true;
  /// A line about a kernel (by name) printed under each entry point that
  /// runs it, e.g. what `bitloom inspect` reads from the llvm-bc executable.
  std::map<std::string, std::string> kernelNotes;
};

/// Prints what `bitloom inspect model.blm` shows: format and target, model,
/// LoRA and compile options, entry points with their kernels and the bytes
/// their dispatches bind and their signatures, executables with their kernels
/// (grids, workgroup sizes, source locations), parameters with sizes, the
/// memory plan and the schedules.
void describeArtifact(const Artifact &artifact, std::ostream &os,
                      const DescribeOptions &options = DescribeOptions());

/// "512 B", "1.50 KiB", "3.00 GiB".
std::string formatBytes(uint64_t bytes);

} // namespace bitloom::blm

#endif // BITLOOM_ARTIFACT_DESCRIBE_H

//===- MemoryReport.h - What a .blm will hold in memory ---------*- C++ -*-===//
//
// `bitloom inspect --memory`: the bytes a runtime holds to train with an
// artifact, from its manifest alone — the mapped weights, the trainable
// parameters and optimizer state it allocates, the step's inputs and
// outputs, and the arena of the memory plan — with, per entry point, the
// live bytes over its schedule and the largest buffers at its peak.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_ARTIFACT_MEMORYREPORT_H
#define BITLOOM_ARTIFACT_MEMORYREPORT_H

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace bitloom::blm {

class Artifact;

/// A buffer live over the inclusive schedule positions [first, last].
struct Lifetime {
  uint64_t size = 0;
  uint32_t first = 0, last = 0;
};

/// Bytes live at each of `length` schedule positions (positions past the
/// end are clamped to the last); `peak` gets the first position of the
/// maximum.
std::vector<uint64_t> liveBytes(const std::vector<Lifetime> &buffers,
                                uint32_t length, uint32_t &peak);

struct EntryMemory {
  std::string name;
  uint64_t arenaBytes = 0;
  uint32_t scheduleLength = 0;
  size_t buffers = 0;
  uint64_t bufferBytes = 0; // every buffer's bytes added up (no reuse)
  /// Live bytes before each schedule position ends (size scheduleLength).
  std::vector<uint64_t> live;
  uint64_t peakLive = 0;
  uint32_t peakPosition = 0;
};

struct MemoryReport {
  uint64_t weightBytes = 0; // every parameter blob (mapped)
  uint64_t ternaryBytes = 0, bf16Bytes = 0, f32Bytes = 0, otherBytes = 0;
  uint64_t trainableBytes = 0; // train_step's Parameter arguments
  size_t trainableTensors = 0;
  uint64_t optimizerBytes = 0; // train_step's OptimizerState arguments
  uint64_t ioBytes = 0;        // train_step's data inputs and plain outputs
  uint64_t arenaBytes = 0;     // the memory plan's arena
  std::vector<EntryMemory> entries;
  uint64_t total() const {
    return weightBytes + trainableBytes + optimizerBytes + ioBytes + arenaBytes;
  }
};

MemoryReport memoryReport(const Artifact &artifact);

/// "2.127 GiB": the unit memory totals are reported in.
std::string formatGiB(uint64_t bytes);

/// Prints the report; the first line is `peak total: N bytes (X GiB)`.
/// `largest` buffers are listed at the peak of the entry point with the
/// largest arena.
void printMemoryReport(const Artifact &artifact, const MemoryReport &report,
                       std::ostream &os, size_t largest = 12);

/// An SVG chart of live arena bytes over the schedule of each entry point,
/// above the constant part (weights, trainable state, inputs/outputs).
std::string memorySvg(const Artifact &artifact, const MemoryReport &report);

} // namespace bitloom::blm

#endif // BITLOOM_ARTIFACT_MEMORYREPORT_H

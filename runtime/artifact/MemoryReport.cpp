//===- MemoryReport.cpp - What a .blm will hold in memory -----------------===//
#include "artifact/MemoryReport.h"
#include "artifact/Artifact.h"
#include "artifact/Describe.h"
#include "artifact/Validate.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <set>
#include <sstream>

namespace bitloom::blm {

using detail::count;
using detail::str;

namespace {

uint64_t bytesOf(const fb::TensorSig *t) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < count(t->shape()); ++d)
    n *= uint64_t(std::max<int64_t>(t->shape()->Get(d), 0));
  std::string dtype = str(t->dtype());
  return n * (dtype == "bf16" ? 2 : dtype == "i8" || dtype == "u8" ? 1 : 4);
}

const fb::EntryPoint *trainingEntry(const Artifact &a) {
  if (const fb::EntryPoint *train = a.findEntryPoint("train_step"))
    return train;
  return a.numEntryPoints() ? &a.entryPoint(0) : nullptr;
}

} // namespace

std::string formatGiB(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f GiB", double(bytes) / (1ull << 30));
  return buf;
}

std::vector<uint64_t> liveBytes(const std::vector<Lifetime> &buffers,
                                uint32_t length, uint32_t &peak) {
  length = std::max<uint32_t>(length, 1);
  std::vector<int64_t> delta(size_t(length) + 1, 0);
  for (const Lifetime &b : buffers) {
    uint32_t first = std::min(b.first, length - 1);
    uint32_t last = std::min(b.last, length - 1);
    delta[first] += int64_t(b.size);
    delta[size_t(last) + 1] -= int64_t(b.size);
  }
  std::vector<uint64_t> live;
  live.reserve(length);
  int64_t bytes = 0;
  peak = 0;
  for (uint32_t p = 0; p < length; ++p) {
    bytes += delta[p];
    live.push_back(uint64_t(bytes));
    if (live[p] > live[peak])
      peak = p;
  }
  return live;
}

MemoryReport memoryReport(const Artifact &a) {
  MemoryReport r;
  for (size_t i = 0; i < a.numParameters(); ++i) {
    uint64_t n = a.parameterData(i).size();
    std::string dtype = str(a.parameter(i).dtype());
    r.weightBytes += n;
    (dtype == "i2x128" ? r.ternaryBytes
     : dtype == "bf16" ? r.bf16Bytes
     : dtype == "f32"  ? r.f32Bytes
                       : r.otherBytes) += n;
  }
  if (const fb::EntryPoint *train = trainingEntry(a)) {
    std::set<std::string> stateNames;
    for (uint32_t i = 0; i < count(train->arguments()); ++i) {
      const fb::TensorSig *t = train->arguments()->Get(i);
      stateNames.insert(str(t->name()));
      switch (t->role()) {
      case Role::Parameter:
        r.trainableBytes += bytesOf(t);
        ++r.trainableTensors;
        break;
      case Role::OptimizerState:
        r.optimizerBytes += bytesOf(t);
        break;
      default:
        r.ioBytes += bytesOf(t);
      }
    }
    // Results named like a state argument are written over it in place.
    for (uint32_t i = 0; i < count(train->results()); ++i)
      if (!stateNames.count(str(train->results()->Get(i)->name())))
        r.ioBytes += bytesOf(train->results()->Get(i));
  }
  const fb::MemoryPlan *plan = a.memoryPlan();
  r.arenaBytes = plan ? plan->arena_size() : 0;
  for (size_t e = 0; e < a.numEntryPoints(); ++e) {
    const fb::EntryPoint &ep = a.entryPoint(e);
    EntryMemory m;
    m.name = str(ep.name());
    m.arenaBytes = ep.arena_bytes();
    m.scheduleLength = std::max<uint32_t>(ep.schedule_length(), 1);
    std::vector<Lifetime> lifetimes;
    for (uint32_t i = 0; plan && i < count(plan->slots()); ++i) {
      const fb::Slot *s = plan->slots()->Get(i);
      if (s->entry_point() != e)
        continue;
      ++m.buffers;
      m.bufferBytes += s->size();
      lifetimes.push_back({s->size(), s->schedule_begin(), s->schedule_end()});
    }
    m.live = liveBytes(lifetimes, m.scheduleLength, m.peakPosition);
    m.peakLive = m.live[m.peakPosition];
    r.entries.push_back(std::move(m));
  }
  return r;
}

void printMemoryReport(const Artifact &a, const MemoryReport &r,
                       std::ostream &os, size_t largest) {
  os << "peak total: " << r.total() << " bytes (" << formatGiB(r.total())
     << ")\n";
  os << "  weights (mapped):      " << formatBytes(r.weightBytes)
     << " = packed ternary " << formatBytes(r.ternaryBytes) << " + bf16 "
     << formatBytes(r.bf16Bytes) << " + f32 " << formatBytes(r.f32Bytes);
  if (r.otherBytes)
    os << " + other " << formatBytes(r.otherBytes);
  os << "\n  trainable parameters:  " << formatBytes(r.trainableBytes) << " ("
     << r.trainableTensors << " tensors)\n"
     << "  optimizer state:       " << formatBytes(r.optimizerBytes) << "\n"
     << "  step inputs/outputs:   " << formatBytes(r.ioBytes) << "\n"
     << "  arena (transients):    " << formatBytes(r.arenaBytes)
     << " (the largest entry point's; entry points run one at a time)\n";
  CompileOptions options = a.compileOptions();
  if (options.memoryBudget)
    os << "compiled for a memory budget of " << options.memoryBudget
       << " bytes (" << formatGiB(options.memoryBudget)
       << "), recompute: " << (options.recompute ? "yes" : "no") << "\n";
  os << "entry points:\n";
  const EntryMemory *biggest = nullptr;
  for (const EntryMemory &m : r.entries) {
    os << "  " << m.name << ": arena " << formatBytes(m.arenaBytes) << ", "
       << m.buffers << " buffers (" << formatBytes(m.bufferBytes)
       << " without reuse), peak live " << formatBytes(m.peakLive)
       << " at schedule position " << m.peakPosition << " of "
       << m.scheduleLength << "\n";
    if (!biggest || m.arenaBytes > biggest->arenaBytes)
      biggest = &m;
  }
  const fb::MemoryPlan *plan = a.memoryPlan();
  if (!biggest || !plan || !biggest->buffers)
    return;
  size_t e = size_t(biggest - r.entries.data());
  std::vector<const fb::Slot *> live;
  for (uint32_t i = 0; i < count(plan->slots()); ++i) {
    const fb::Slot *s = plan->slots()->Get(i);
    if (s->entry_point() == e && s->schedule_begin() <= biggest->peakPosition &&
        biggest->peakPosition <= s->schedule_end())
      live.push_back(s);
  }
  std::stable_sort(live.begin(), live.end(),
                   [](const fb::Slot *x, const fb::Slot *y) {
                     return x->size() > y->size();
                   });
  os << "largest live buffers at " << biggest->name << "'s peak (position "
     << biggest->peakPosition << ", " << live.size() << " live):\n";
  for (size_t i = 0; i < live.size() && i < largest; ++i) {
    const fb::Slot *s = live[i];
    char line[96];
    std::snprintf(line, sizeof(line), "  %12s  at %12llu  live %u..%u  ",
                  formatBytes(s->size()).c_str(),
                  (unsigned long long)s->offset(), s->schedule_begin(),
                  s->schedule_end());
    os << line << str(s->op()) << "\n";
  }
}

std::string memorySvg(const Artifact &a, const MemoryReport &r) {
  const int width = 960, rowHeight = 220, left = 80, top = 30;
  uint64_t base = r.total() - r.arenaBytes;
  uint64_t yMax = base + r.arenaBytes;
  if (yMax == 0)
    yMax = 1;
  std::ostringstream svg;
  int height = top + int(r.entries.size()) * (rowHeight + 40) + 10;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width
      << "\" height=\"" << height << "\" font-family=\"sans-serif\" "
      << "font-size=\"12\">\n";
  svg << "<text x=\"" << left << "\" y=\"18\">" << a.path()
      << ": memory over the schedule (peak total " << formatGiB(r.total())
      << ")</text>\n";
  int y0 = top;
  for (const EntryMemory &m : r.entries) {
    int plotW = width - left - 20, plotH = rowHeight - 30;
    auto yOf = [&](uint64_t bytes) {
      return y0 + 20 + plotH - int(double(bytes) / double(yMax) * plotH);
    };
    svg << "<text x=\"" << left << "\" y=\"" << y0 + 12 << "\">" << m.name
        << ": weights + state " << formatGiB(base) << ", arena "
        << formatBytes(m.arenaBytes) << ", peak live "
        << formatBytes(m.peakLive) << "</text>\n";
    // The constant part, then live transients on top of it.
    svg << "<rect x=\"" << left << "\" y=\"" << yOf(base) << "\" width=\""
        << plotW << "\" height=\"" << yOf(0) - yOf(base)
        << "\" fill=\"#c8d6e5\"/>\n";
    svg << "<polyline fill=\"none\" stroke=\"#c0392b\" points=\"";
    for (uint32_t p = 0; p < m.live.size(); ++p)
      svg << left + int(double(p) / m.live.size() * plotW) << ","
          << yOf(base + m.live[p]) << " ";
    svg << "\"/>\n";
    svg << "<line x1=\"" << left << "\" x2=\"" << left + plotW << "\" y1=\""
        << yOf(base + m.arenaBytes) << "\" y2=\"" << yOf(base + m.arenaBytes)
        << "\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>\n";
    svg << "<text x=\"4\" y=\"" << yOf(base + m.arenaBytes) + 4 << "\">"
        << formatGiB(base + m.arenaBytes) << "</text>\n";
    svg << "<text x=\"4\" y=\"" << yOf(0) << "\">0</text>\n";
    svg << "<text x=\"" << left + plotW - 120 << "\" y=\"" << yOf(0) + 14
        << "\">schedule (" << m.scheduleLength << " ops)</text>\n";
    y0 += rowHeight + 40;
  }
  svg << "</svg>\n";
  return svg.str();
}

} // namespace bitloom::blm

//===- BenchCommand.cpp - bitloom-run bench -------------------------------===//
//
// Times entry points on a seeded synthetic batch (uniform random tokens,
// every position a target): --warmup untimed calls, then --steps timed ones.
// Reports the median step time, tokens/s (tokens per call / median), the
// peak resident set (getrusage ru_maxrss) and planned_bytes: the memory
// plan's arena, every parameter blob, and every buffer the runtime
// allocates (state, and each prepared entry point's inputs and results); on
// a Vulkan device, the device memory of the same (weights as uploaded).
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Session.h"

#include "formats/Error.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sys/resource.h>

namespace bitloom::run {

namespace {

uint64_t peakRssBytes() {
  struct rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return uint64_t(usage.ru_maxrss) * 1024; // kilobytes on Linux
}

/// Random tokens, positions 0..T-1, the shifted labels, all targets.
void fillSynthetic(Entry &e, int64_t vocab, uint64_t seed) {
  HostBuffer *tokens = e.input("tokens");
  if (!tokens)
    return;
  const std::vector<int64_t> &shape = tokens->shape();
  int64_t seqLen = shape.empty() ? 1 : shape.back();
  int64_t rows = seqLen ? tokens->elements() / seqLen : 0;
  trainer::SplitMix64 rng(seed);
  trainer::Batch b;
  b.rows = rows;
  b.seqLen = seqLen;
  b.ids.resize(size_t(rows * seqLen));
  b.lossMask.assign(size_t(rows * seqLen), 1.0f);
  for (int32_t &id : b.ids)
    id = int32_t(rng.below(uint64_t(std::max<int64_t>(vocab, 1))));
  if (e.input("labels") && e.input("loss_mask")) {
    e.setBatch(b);
    return;
  }
  for (int64_t k = 0; k < tokens->elements(); ++k)
    tokens->i32()[k] = b.ids[size_t(k)];
  if (HostBuffer *positions = e.input("positions"))
    for (int64_t k = 0; k < positions->elements(); ++k)
      positions->i32()[k] = int32_t(k % seqLen);
}

} // namespace

void addBenchCommand(CLI::App &app, BenchArgs &a) {
  auto *cmd = app.add_subcommand("bench", "time entry points");
  cmd->add_option("artifact", a.artifact, ".blm from bitloom compile")
      ->required();
  cmd->add_option("--entry", a.entries,
                  "entry point(s) to time (default train_step)")
      ->delimiter(',');
  cmd->add_option("--steps", a.steps, "timed calls")->capture_default_str();
  cmd->add_option("--warmup", a.warmup, "untimed calls first")
      ->capture_default_str();
  cmd->add_option("--threads", a.threads, "micro-kernel threads (0: default)")
      ->capture_default_str();
  addDeviceOption(*cmd, a.device);
  cmd->add_option("--seed", a.seed, "seed of the synthetic batch")
      ->capture_default_str();
  cmd->add_flag("--json", a.json, "one JSON object per entry point and line");
}

int runBench(const BenchArgs &a) {
  if (a.steps < 1)
    throw FormatError("", "--steps", "must be at least 1");
  if (a.warmup < 0)
    throw FormatError("", "--warmup", "must not be negative");
  int threads = applyThreads(a.threads);
  Session session(a.artifact, deviceOptions(a.device));
  std::vector<std::string> names = a.entries;
  if (names.empty())
    names = {"train_step"};
  std::vector<Entry *> entries;
  for (const std::string &name : names)
    entries.push_back(&session.entry(name));
  session.initFresh(a.seed);

  for (Entry *e : entries) {
    fillSynthetic(*e, session.modelConfig().vocabSize, a.seed);
    // A small learning rate keeps repeated train steps finite.
    e->setScalar("lr", 1e-4f);
    e->setScalar("grad_scale", 1.0f);
    std::vector<double> ms;
    for (int64_t i = 0; i < a.warmup + a.steps; ++i) {
      e->setScalar("step", float(i + 1));
      auto t0 = std::chrono::steady_clock::now();
      session.run(*e);
      double t = std::chrono::duration<double, std::milli>(
                     std::chrono::steady_clock::now() - t0)
                     .count();
      if (i >= a.warmup)
        ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    size_t n = ms.size();
    double median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    int64_t tokens = e->tokensPerCall();
    double tps = median > 0 ? double(tokens) / (median / 1000.0) : 0.0;
    uint64_t rss = peakRssBytes(), planned = session.plannedBytes();
    if (a.json) {
      nlohmann::ordered_json j;
      j["entry"] = e->name();
      j["artifact"] = a.artifact;
      j["batch"] = session.batchSize();
      j["seq_len"] = session.seqLen();
      j["tokens_per_step"] = tokens;
      j["steps"] = a.steps;
      j["warmup"] = a.warmup;
      j["step_ms_median"] = median;
      j["step_ms_min"] = ms.front();
      j["step_ms_max"] = ms.back();
      j["tokens_per_s"] = tps;
      j["peak_rss_bytes"] = rss;
      j["planned_bytes"] = planned;
      j["threads"] = threads;
      if (session.onVulkan())
        j["device"] = session.backendDescription();
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::string where = session.onVulkan()
                              ? "on " + session.backendDescription()
                              : std::to_string(threads) +
                                    (threads == 1 ? " thread" : " threads");
      std::printf("%s: median %.3f ms/step (min %.3f, max %.3f) over %lld "
                  "steps, %.0f tokens/s, peak RSS %.1f MiB, planned %.1f "
                  "MiB%s, %s\n",
                  e->name().c_str(), median, ms.front(), ms.back(),
                  (long long)a.steps, tps, double(rss) / (1 << 20),
                  double(planned) / (1 << 20),
                  session.onVulkan() ? " of device memory" : "", where.c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}

} // namespace bitloom::run

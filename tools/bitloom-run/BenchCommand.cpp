//===- BenchCommand.cpp - bitloom-run bench -------------------------------===//
//
// Times entry points on a seeded synthetic batch (uniform random tokens,
// every position a target): --warmup untimed calls, then --steps timed ones.
// Reports the median step time, tokens/s (tokens per call / median), the
// peak resident set (getrusage ru_maxrss) and planned_bytes: the memory
// plan's arena, every parameter blob, and every buffer the runtime
// allocates (state, and each prepared entry point's inputs and results); on
// a Vulkan device, the device memory of the same (weights as uploaded),
// printed by purpose.
//
// --profile-kernels [N] then runs --profile-steps more calls with every
// dispatch timed (Vulkan: timestamp queries in a second recording of the
// step, so the timed calls above carry none; CPU: the wall time of each
// kernel call) and prints the mean time per step summed by op and the N
// most expensive single dispatches, each with its share of the summed
// dispatch time.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "KernelProfile.h"
#include "Session.h"

#include "formats/Error.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
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

/// "1.21 GiB", "512.00 MiB", "700 B".
std::string bytesText(uint64_t bytes) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", (unsigned long long)bytes);
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

std::string gridText(const uint32_t g[3]) {
  return std::to_string(g[0]) + "x" + std::to_string(g[1]) + "x" +
         std::to_string(g[2]);
}

void printMemory(const MemoryUse &m) {
  std::printf("  %s: %s (arena %s, weights %s, state %s, io %s)",
              m.device ? "device memory" : "planned host memory",
              bytesText(m.total()).c_str(), bytesText(m.arena).c_str(),
              bytesText(m.weights).c_str(), bytesText(m.state).c_str(),
              bytesText(m.io).c_str());
  if (m.device)
    std::printf("; %s in device buffers with padding, %s host-visible "
                "staging",
                bytesText(m.allocated).c_str(), bytesText(m.staging).c_str());
  std::printf("\n");
}

nlohmann::ordered_json memoryJson(const MemoryUse &m) {
  nlohmann::ordered_json j;
  j["device"] = m.device;
  j["total"] = m.total();
  j["arena"] = m.arena;
  j["weights"] = m.weights;
  j["state"] = m.state;
  j["io"] = m.io;
  if (m.device) {
    j["staging"] = m.staging;
    j["allocated"] = m.allocated;
  }
  return j;
}

/// --profile-steps calls of `e` with every dispatch timed, after the timed
/// ones (`firstStep`: the next optimizer step number); `wallMs`: their mean
/// wall time, the queries' own cost included.
KernelProfile profileEntry(Session &session, Entry &e, int64_t steps,
                           int64_t firstStep, double &wallMs) {
  std::vector<StepProfile> calls;
  double total = 0;
  for (int64_t i = 0; i < steps; ++i) {
    e.setScalar("step", float(firstStep + i));
    const auto t0 = std::chrono::steady_clock::now();
    calls.push_back(session.runProfiled(e));
    total += std::chrono::duration<double, std::milli>(
                 std::chrono::steady_clock::now() - t0)
                 .count();
  }
  wallMs = total / double(steps);
  return summarizeProfiles(calls);
}

/// Wall times per step: the timed calls' median and the profiled calls'
/// mean.
struct Walls {
  double timedMs = 0, profiledMs = 0;
};

void printProfile(const KernelProfile &kp, size_t top, Walls wall, bool gpu) {
  const double totalMs = kp.totalNs / 1e6;
  std::printf("  kernel profile: %zu dispatches, mean of %zu profiled "
              "steps: %s %.3f ms/step (sum of dispatches) vs wall %.3f "
              "ms/step (%.1f%%)\n",
              kp.dispatches.size(), kp.steps, gpu ? "GPU time" : "kernel time",
              totalMs, wall.timedMs,
              wall.timedMs > 0 ? 100.0 * totalMs / wall.timedMs : 0.0);
  std::printf("  profiled steps: wall %.3f ms/step", wall.profiledMs);
  if (gpu)
    std::printf(" with timestamps; streamed copies %.3f ms up, %.3f ms down",
                kp.uploadNs / 1e6, kp.downloadNs / 1e6);
  std::printf("\n");

  const size_t nops = std::min(top, kp.ops.size());
  std::printf("  top %zu of %zu ops (time summed over their dispatches):\n",
              nops, kp.ops.size());
  std::printf("    %12s %7s %11s  %s\n", "us/step", "share", "dispatches",
              "op");
  for (size_t i = 0; i < nops; ++i) {
    const KernelProfile::Op &op = kp.ops[i];
    std::printf("    %12.3f %6.2f%% %11zu  %s\n", op.ns / 1e3,
                100.0 * kp.share(op.ns), op.dispatches, op.name.c_str());
  }
  if (nops < kp.ops.size()) {
    const KernelProfile::Op other = kp.rest(nops);
    std::printf("    %12.3f %6.2f%% %11zu  (%zu other ops)\n", other.ns / 1e3,
                100.0 * kp.share(other.ns), other.dispatches,
                kp.ops.size() - nops);
  }

  const size_t nd = std::min(top, kp.byTime.size());
  size_t gridWidth = 4;
  for (size_t i = 0; i < nd; ++i)
    gridWidth = std::max(gridWidth,
                         gridText(kp.dispatches[kp.byTime[i]].groups).size());
  std::printf("  top %zu of %zu dispatches:\n", nd, kp.dispatches.size());
  std::printf("    %12s %7s %8s  %-*s  %s\n", "us/step", "share", "index",
              int(gridWidth), "grid", "op (kernel)");
  for (size_t i = 0; i < nd; ++i) {
    const size_t d = kp.byTime[i];
    const DispatchTime &t = kp.dispatches[d];
    std::printf("    %12.3f %6.2f%% %8zu  %-*s  %s (%s)\n", t.ns / 1e3,
                100.0 * kp.share(t.ns), d, int(gridWidth),
                gridText(t.groups).c_str(), t.op.empty() ? "-" : t.op.c_str(),
                t.kernel.c_str());
  }
}

nlohmann::ordered_json profileJson(const KernelProfile &kp, size_t top,
                                   Walls wall, bool gpu) {
  nlohmann::ordered_json j;
  j["clock"] = gpu ? "gpu_timestamps" : "host_wall";
  j["steps"] = kp.steps;
  j["dispatches"] = kp.dispatches.size();
  j["dispatch_ms_per_step"] = kp.totalNs / 1e6;
  j["wall_ms_per_step"] = wall.timedMs;
  j["profiled_wall_ms_per_step"] = wall.profiledMs;
  if (gpu) {
    j["upload_ms"] = kp.uploadNs / 1e6;
    j["download_ms"] = kp.downloadNs / 1e6;
  }
  j["ops"] = kp.ops.size();
  auto opJson = [&](const KernelProfile::Op &op) {
    return nlohmann::ordered_json{{"op", op.name},
                                  {"dispatches", op.dispatches},
                                  {"us", op.ns / 1e3},
                                  {"share_percent", 100.0 * kp.share(op.ns)}};
  };
  nlohmann::ordered_json ops = nlohmann::ordered_json::array();
  const size_t nops = std::min(top, kp.ops.size());
  for (size_t i = 0; i < nops; ++i)
    ops.push_back(opJson(kp.ops[i]));
  j["by_op"] = std::move(ops);
  if (nops < kp.ops.size()) {
    KernelProfile::Op other = kp.rest(nops);
    other.name = "(" + std::to_string(kp.ops.size() - nops) + " other ops)";
    j["other_ops"] = opJson(other);
  }
  nlohmann::ordered_json tops = nlohmann::ordered_json::array();
  for (size_t i = 0; i < std::min(top, kp.byTime.size()); ++i) {
    const size_t d = kp.byTime[i];
    const DispatchTime &t = kp.dispatches[d];
    tops.push_back({{"index", d},
                    {"op", t.op},
                    {"kernel", t.kernel},
                    {"grid", {t.groups[0], t.groups[1], t.groups[2]}},
                    {"us", t.ns / 1e3},
                    {"share_percent", 100.0 * kp.share(t.ns)}});
  }
  j["top_dispatches"] = std::move(tops);
  return j;
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
  cmd->add_option_function<std::vector<std::string>>(
         "--profile-kernels",
         [&a](const std::vector<std::string> &v) {
           if (v.empty() || v[0].empty()) {
             a.profileTop = 5;
             return;
           }
           size_t end = 0;
           long long n = 0;
           try {
             n = std::stoll(v[0], &end);
           } catch (const std::exception &) {
           }
           if (end != v[0].size() || n < 1)
             throw CLI::ValidationError("--profile-kernels",
                                        "expected a positive count, got '" +
                                            v[0] + "'");
           a.profileTop = n;
         },
         "after the timed steps, time every dispatch of --profile-steps "
         "more and print the N (default 5) most expensive ops and "
         "dispatches")
      ->expected(0, 1)
      ->type_name("[N]");
  cmd->add_option("--profile-steps", a.profileSteps,
                  "profiled calls for --profile-kernels")
      ->capture_default_str();
}

int runBench(const BenchArgs &a) {
  if (a.steps < 1)
    throw FormatError("", "--steps", "must be at least 1");
  if (a.warmup < 0)
    throw FormatError("", "--warmup", "must not be negative");
  if (a.profileSteps < 1)
    throw FormatError("", "--profile-steps", "must be at least 1");
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
    const MemoryUse memory = session.memoryUse();
    // Profiled calls only after everything above is measured: their
    // queries cost time of their own.
    std::optional<KernelProfile> profile;
    std::string profileProblem;
    Walls walls{median, 0};
    if (a.profileTop > 0) {
      profileProblem = session.profilingProblem();
      if (profileProblem.empty())
        profile = profileEntry(session, *e, a.profileSteps,
                               a.warmup + a.steps + 1, walls.profiledMs);
    }
    const size_t top = size_t(a.profileTop);
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
      if (session.onVulkan()) {
        j["device"] = session.backendDescription();
        j["device_memory_bytes"] = memory.total();
      }
      j["memory_bytes"] = memoryJson(memory);
      if (profile)
        j["kernel_profile"] =
            profileJson(*profile, top, walls, session.onVulkan());
      else if (!profileProblem.empty())
        j["kernel_profile"] = {{"unavailable", profileProblem}};
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
      printMemory(memory);
      if (profile)
        printProfile(*profile, top, walls, session.onVulkan());
      else if (!profileProblem.empty())
        std::printf("  kernel profile: unavailable: %s\n",
                    profileProblem.c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}

} // namespace bitloom::run

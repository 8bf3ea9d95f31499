//===- TrainCommand.cpp - bitloom-run train -------------------------------===//
//
// Fine-tunes the artifact's LoRA adapter on a text or JSONL chat file:
// train_step (or accumulate_step x K + apply_step with --grad-accum K), a
// seeded held-out validation split evaluated with eval_step after every
// epoch and at the end, crash-safe checkpoints (OUT/checkpoint) that --resume
// continues bit for bit, and PEFT / GGUF exports.
//
// Nothing is written before every input has been read and checked: a bad
// data file, adapter or checkpoint fails with one line naming the file and
// the field, and leaves OUT (and the checkpoint in it) as it was.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Session.h"

#include "formats/Error.h"
#include "trainer/LearningRate.h"
#include "trainer/Metrics.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

namespace fs = std::filesystem;

namespace bitloom::run {

namespace {

volatile std::sig_atomic_t interrupted = 0;
extern "C" void onInterrupt(int) {
  interrupted = 1;
  // A second Ctrl-C ends the process at once.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

std::string canonical(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

/// --resume DIR: a checkpoint directory, or an --out directory holding one
/// in DIR/checkpoint.
std::string checkpointDirOf(const std::string &dir) {
  fs::path p(dir);
  std::error_code ec;
  if (fs::exists(p / "manifest.json", ec))
    return p.string();
  fs::path inner = p / "checkpoint";
  if (trainer::checkpointExists(inner.string()))
    return inner.string();
  if (trainer::checkpointExists(p.string()))
    return p.string();
  if (!fs::exists(p, ec))
    throw FormatError(dir, "--resume", "no such directory");
  throw FormatError(dir, "--resume",
                    "no checkpoint here (neither " +
                        (p / "manifest.json").string() + " nor " +
                        (inner / "manifest.json").string() + ")");
}

double completedEpochs(const trainer::DataPosition &p) {
  return double(p.epoch) +
         (p.samples ? double(std::min(p.index, p.samples)) / double(p.samples)
                    : 0.0);
}

struct Validation {
  double loss = NAN;
  int64_t targets = 0;
};

/// Mean loss over every target token of `indices`, with eval_step.
Validation validate(Session &session, const trainer::Dataset &dataset,
                    const std::vector<int64_t> &indices) {
  Entry &eval = session.entry("eval_step");
  trainer::Batcher batcher(dataset, indices, session.batchSize(), 0,
                           /*shuffle=*/false);
  double sum = 0, count = 0;
  for (int64_t b = 0; b < batcher.batchesPerEpoch(); ++b) {
    eval.setBatch(batcher.next());
    session.run(eval);
    double n = eval.scalar("token_count");
    if (n > 0) {
      sum += double(eval.scalar("loss")) * n;
      count += n;
    }
  }
  Validation v;
  v.targets = int64_t(std::llround(count));
  v.loss = count > 0 ? sum / count : NAN;
  return v;
}

/// Where a run stands: what to say when the device fails mid-run.
struct RunProgress {
  int64_t step = -1; ///< the step running (0-based); -1: not started
  int64_t lastSaved = -1;
  std::string lastSavedDir;
  int64_t resumedStep = -1;
  std::string resumedFrom;
};

int train(const TrainArgs &a, RunProgress &run);

} // namespace

void addTrainCommand(CLI::App &app, TrainArgs &a) {
  auto *cmd = app.add_subcommand("train", "fine-tune a LoRA adapter");
  cmd->add_option("artifact", a.artifact, ".blm from bitloom compile")
      ->required();
  cmd->add_option("--data", a.data, "text or JSONL chat file")->required();
  cmd->add_option("--format", a.format, "auto | text | jsonl")
      ->capture_default_str();
  cmd->add_option("--steps", a.steps, "optimizer steps (0: --epochs)")
      ->capture_default_str();
  cmd->add_option("--epochs", a.epochs, "passes over the data")
      ->capture_default_str();
  cmd->add_option("--lr", a.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--lr-schedule", a.schedule, "constant | linear | cosine")
      ->capture_default_str();
  cmd->add_option("--warmup", a.warmup, "warmup steps")->capture_default_str();
  cmd->add_option("--grad-accum", a.gradAccum,
                  "micro-batches per optimizer step (accumulate_step + "
                  "apply_step)")
      ->capture_default_str();
  cmd->add_option("--val-split", a.valSplit,
                  "fraction of the data held out for validation")
      ->capture_default_str();
  cmd->add_option("--seed", a.seed, "seed (LoRA init, split, data order)")
      ->capture_default_str();
  cmd->add_option("--threads", a.threads, "micro-kernel threads (0: default)")
      ->capture_default_str();
  addDeviceOption(*cmd, a.device);
  cmd->add_option("--save-every", a.saveEvery,
                  "checkpoint every N steps into OUT/checkpoint (0: only at "
                  "the end)")
      ->capture_default_str();
  cmd->add_option("--stop-after", a.stopAfter,
                  "stop after this step with a checkpoint (resume later with "
                  "--resume)")
      ->capture_default_str();
  cmd->add_option("--resume", a.resume,
                  "continue from a checkpoint (DIR or DIR/checkpoint)");
  cmd->add_option("--adapter", a.adapter,
                  "start from this PEFT directory or GGUF LoRA file");
  cmd->add_flag("--export-gguf", a.exportGguf,
                "also write OUT/adapter.gguf (llama.cpp LoRA)");
  cmd->add_option("--progress", a.progress,
                  "auto | bar | plain (auto: a bar on a terminal)")
      ->capture_default_str();
  cmd->add_option("--log-every", a.logEvery, "plain progress: every N steps")
      ->capture_default_str();
  cmd->add_option("--out", a.out, "output directory")->capture_default_str();
}

int runTrain(const TrainArgs &a) {
  RunProgress run;
  try {
    return train(a, run);
  } catch (const DeviceError &e) {
    // A device failure (Vulkan: device lost, out of memory) ends the run.
    // State is fetched before a checkpoint is written, so the last one on
    // disk is whole: say where to continue from.
    std::string where;
    if (run.lastSaved >= 0)
      where = "the checkpoint " + run.lastSavedDir + " (step " +
              std::to_string(run.lastSaved) +
              ") is intact; continue with --resume " + a.out;
    else if (!run.resumedFrom.empty())
      where = "the checkpoint " + run.resumedFrom + " (step " +
              std::to_string(run.resumedStep) +
              ") is intact; continue with --resume " + run.resumedFrom;
    else
      where = "no checkpoint was saved (--save-every N saves them)";
    std::string when = run.step < 0 ? "before the first step"
                                    : "at step " + std::to_string(run.step + 1);
    throw DeviceError("training stopped " + when + ": " + e.what() + "; " +
                      where);
  }
}

namespace {

int train(const TrainArgs &a, RunProgress &run) {
  // Options first: nothing is opened for a bad command line.
  if (a.steps < 0)
    throw FormatError("", "--steps", "must not be negative");
  if (a.steps == 0 && a.epochs < 1)
    throw FormatError("", "--epochs", "must be at least 1 (or give --steps)");
  if (a.gradAccum < 1)
    throw FormatError("", "--grad-accum", "must be at least 1");
  if (!(a.valSplit >= 0.0 && a.valSplit < 1.0))
    throw FormatError("", "--val-split", "must be in [0, 1)");
  if (a.warmup < 0)
    throw FormatError("", "--warmup", "must not be negative");
  if (!(a.lr > 0.0) || !std::isfinite(a.lr))
    throw FormatError("", "--lr", "must be a positive number");
  if (a.saveEvery < 0)
    throw FormatError("", "--save-every", "must not be negative");
  if (a.stopAfter < 0)
    throw FormatError("", "--stop-after", "must not be negative");
  if (a.progress != "auto" && a.progress != "bar" && a.progress != "plain")
    throw FormatError("", "--progress", "must be auto, bar or plain");
  trainer::scheduledLearningRate(a.schedule, a.lr, 0, a.warmup, 1);
  if (!a.resume.empty() && !a.adapter.empty())
    throw FormatError("", "--adapter",
                      "cannot be combined with --resume (the checkpoint "
                      "holds the adapter)");
  int threads = applyThreads(a.threads);

  Session session(a.artifact, deviceOptions(a.device));
  const int64_t K = a.gradAccum;
  // Entry points this run needs, prepared (kernels resolved) up front.
  Entry *train = nullptr, *accumulate = nullptr, *apply = nullptr;
  if (K == 1) {
    train = &session.entry("train_step");
  } else {
    accumulate = &session.entry("accumulate_step");
    apply = &session.entry("apply_step");
  }
  if (a.valSplit > 0)
    session.entry("eval_step");

  trainer::Dataset dataset = session.loadDataset(a.data, a.format);
  trainer::DatasetSplit split;
  try {
    split = trainer::splitValidation(dataset, a.valSplit, a.seed);
  } catch (const FormatError &e) {
    throw FormatError(a.data, "--val-split", e.what());
  }
  trainer::Batcher batcher(dataset, split.train, session.batchSize(), a.seed);
  const int64_t perEpoch = batcher.batchesPerEpoch();
  const int64_t total =
      a.steps > 0 ? a.steps : (a.epochs * perEpoch + K - 1) / K;

  trainer::CheckpointIdentity identity = session.identity();
  identity.extra["grad_accum"] = std::to_string(K);
  identity.extra["lr"] = canonical(a.lr);
  identity.extra["lr_schedule"] = a.schedule;
  identity.extra["warmup"] = std::to_string(a.warmup);
  // The schedule's length matters unless it is constant after warmup.
  identity.extra["total_steps"] =
      a.schedule == "constant" ? "any" : std::to_string(total);

  int64_t start = 0, validatedEpochs = 0;
  double elapsedBefore = 0;
  std::string resumedFrom;
  if (!a.resume.empty()) {
    resumedFrom = checkpointDirOf(a.resume);
    trainer::Checkpoint c = trainer::loadCheckpoint(resumedFrom, &identity);
    std::string state = (fs::path(resumedFrom) / "state.safetensors").string();
    std::string manifest = (fs::path(resumedFrom) / "manifest.json").string();
    session.initFresh(a.seed);
    session.setTensors(c.adapter, state, /*requireAll=*/true);
    session.setOptimizerState(c.optimizer, state);
    batcher.restore(c.data, manifest);
    start = c.step;
    if (start > total)
      throw FormatError(manifest, "step",
                        "the checkpoint is at step " + std::to_string(start) +
                            ", past this run's " + std::to_string(total));
    validatedEpochs = c.state.value("validated_epochs", int64_t(0));
    elapsedBefore = c.state.value("elapsed_s", 0.0);
    run.resumedFrom = resumedFrom;
    run.resumedStep = start;
  } else if (!a.adapter.empty()) {
    session.initFresh(a.seed);
    session.loadAdapter(a.adapter);
  } else {
    session.initFresh(a.seed);
  }

  std::printf("%s\n", dataset.stats().summary().c_str());
  std::printf("train: %zu samples (%lld batches of %lld x %lld tokens per "
              "epoch), validation: %zu samples; %lld steps of %lld "
              "micro-batch%s, %d thread%s\n",
              split.train.size(), (long long)perEpoch,
              (long long)session.batchSize(), (long long)session.seqLen(),
              split.validation.size(), (long long)total, (long long)K,
              K == 1 ? "" : "es", threads, threads == 1 ? "" : "s");
  if (session.onVulkan())
    std::printf("running on %s\n", session.backendDescription().c_str());
  if (!resumedFrom.empty())
    std::printf("resuming from %s at step %lld\n", resumedFrom.c_str(),
                (long long)start);
  std::fflush(stdout);

  // From here on, outputs are written.
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec || !fs::is_directory(a.out))
    throw FormatError(a.out, "--out",
                      "cannot create the output directory" +
                          (ec ? ": " + ec.message() : std::string()));
  const std::string checkpointDir = (fs::path(a.out) / "checkpoint").string();
  trainer::MetricsLog metrics((fs::path(a.out) / "metrics.jsonl").string(),
                              start);
  std::optional<bool> tty;
  if (a.progress != "auto")
    tty = a.progress == "bar";
  trainer::ProgressReporter progress(total, std::cout, tty, start);
  progress.setLogEvery(a.logEvery);
  progress.setLogFirst(true);

  const int64_t tokensPerStep = K * session.batchSize() * session.seqLen();
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
        .count();
  };

  auto runValidation = [&](int64_t step) {
    Validation v = validate(session, dataset, split.validation);
    trainer::ValidationRecord r;
    r.step = step;
    r.epoch = completedEpochs(batcher.position());
    r.loss = v.loss;
    r.targets = v.targets;
    metrics.logValidation(r);
    char line[160];
    std::snprintf(line, sizeof line,
                  "validation at step %lld: loss %.4f, perplexity %.3f over "
                  "%lld tokens",
                  (long long)step, v.loss, r.perplexity(),
                  (long long)v.targets);
    progress.message(line);
  };
  auto save = [&](int64_t step) {
    trainer::Checkpoint c;
    c.step = step;
    c.data = batcher.position();
    c.identity = identity;
    c.adapter = session.trainables(/*loraOnly=*/false);
    c.optimizer = session.optimizerState();
    c.state = {{"lr_schedule",
                {{"name", a.schedule},
                 {"peak", a.lr},
                 {"warmup", a.warmup},
                 {"total", total}}},
               {"validated_epochs", validatedEpochs},
               {"elapsed_s", elapsedBefore + elapsed()},
               {"seed", a.seed},
               {"artifact", fs::absolute(a.artifact).string()}};
    trainer::saveCheckpoint(checkpointDir, c);
    run.lastSaved = step;
    run.lastSavedDir = checkpointDir;
    progress.message("saved checkpoint " + checkpointDir + " (step " +
                     std::to_string(step) + ")");
  };
  interrupted = 0;
  std::signal(SIGINT, onInterrupt);
  std::signal(SIGTERM, onInterrupt);
  bool stopped = false;
  int64_t step = start;
  for (; step < total; ++step) {
    run.step = step;
    double lr =
        trainer::scheduledLearningRate(a.schedule, a.lr, step, a.warmup, total);
    float loss = 0, gradNorm = 0;
    if (K == 1) {
      train->setBatch(batcher.next());
      train->setScalar("lr", float(lr));
      train->setScalar("step", float(step + 1));
      session.run(*train);
      loss = train->scalar("loss");
      gradNorm = train->scalar("grad_norm");
    } else {
      // bitloom train --grad-accum: grad_scale 1/K per micro-batch, the
      // reported loss the mean of the micro-batches' losses.
      session.zeroState("grad.");
      float scale = 1.0f / float(K);
      for (int64_t m = 0; m < K; ++m) {
        accumulate->setBatch(batcher.next());
        accumulate->setScalar("grad_scale", scale);
        session.run(*accumulate);
        loss += accumulate->scalar("loss") * scale;
      }
      apply->setScalar("lr", float(lr));
      apply->setScalar("step", float(step + 1));
      session.run(*apply);
      gradNorm = apply->scalar("grad_norm");
    }
    const int64_t done = step + 1;
    double seconds = elapsed();
    trainer::TrainRecord r;
    r.step = done;
    r.epoch = completedEpochs(batcher.position());
    r.loss = loss;
    r.learningRate = lr;
    r.gradNorm = gradNorm;
    r.tokens = tokensPerStep;
    r.seconds = elapsedBefore + seconds;
    r.tokensPerSecond = double((done - start) * tokensPerStep) / seconds;
    metrics.logTrain(r);
    progress.update(done, loss, r.tokensPerSecond, lr);

    if (done == total)
      break; // the final validation and checkpoint follow the loop
    trainer::DataPosition pos = batcher.position();
    int64_t epochsDone =
        int64_t(pos.epoch) + (pos.index >= pos.samples ? 1 : 0);
    if (a.valSplit > 0 && epochsDone > validatedEpochs) {
      validatedEpochs = epochsDone;
      runValidation(done);
    }
    bool stop = interrupted || (a.stopAfter > 0 && done == a.stopAfter);
    if (stop || (a.saveEvery > 0 && done % a.saveEvery == 0))
      save(done);
    if (stop) {
      stopped = true;
      progress.finish();
      std::printf("%s after step %lld of %lld; continue with --resume %s\n",
                  interrupted ? "interrupted" : "stopped", (long long)done,
                  (long long)total, a.out.c_str());
      break;
    }
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  progress.finish();
  if (stopped) {
    metrics.writePlot();
    return interrupted ? 130 : 0;
  }

  if (a.valSplit > 0) {
    trainer::DataPosition pos = batcher.position();
    validatedEpochs = int64_t(pos.epoch) + (pos.index >= pos.samples ? 1 : 0);
    runValidation(total);
  }
  save(total);
  metrics.writePlot();

  trainer::TensorMap lora = session.trainables(/*loraOnly=*/true);
  if (lora.size() != session.trainableNames().size())
    std::printf("note: trainable tensors other than LoRA matrices are in the "
                "checkpoint only (PEFT adapters hold LoRA matrices)\n");
  trainer::exportPeftAdapter(a.out, session.loraConfig(), lora,
                             session.modelConfig());
  std::printf("saved PEFT adapter to %s (metrics %s, plot %s)\n", a.out.c_str(),
              metrics.path().c_str(), metrics.plotPath().c_str());
  if (a.exportGguf) {
    std::string gguf = (fs::path(a.out) / "adapter.gguf").string();
    trainer::exportGgufLoraAdapter(gguf, session.loraConfig(), lora,
                                   session.modelConfig(), DType::F32,
                                   fs::path(a.out).filename().string());
    std::printf("saved GGUF LoRA adapter to %s\n", gguf.c_str());
  }
  return 0;
}

} // namespace

} // namespace bitloom::run

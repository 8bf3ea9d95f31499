//===- Metrics.h - Training logs, loss plot, progress -----------*- C++ -*-===//
//
// MetricsLog appends one JSON object per line (train steps and validation
// evaluations) so a run can be followed with `tail -f` and parsed by any
// tool; the loss curve is re-drawn beside it as a self-contained SVG (no
// scripts, fonts or styles from elsewhere). ProgressReporter draws a one-line
// progress bar when its stream is a terminal and prints plain log lines
// otherwise (CI logs, files).
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TRAINER_METRICS_H
#define BITLOOM_TRAINER_METRICS_H

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace bitloom::trainer {

struct TrainRecord {
  int64_t step = 0; // optimizer steps done, from 1
  double epoch = 0; // fractional epochs done
  double loss = 0;  // mean over the step's targets
  double learningRate = 0;
  double gradNorm = 0;
  int64_t tokens = 0; // tokens processed by the step
  double tokensPerSecond = 0;
  double seconds = 0; // wall time since the run started
};

struct ValidationRecord {
  int64_t step = 0;
  double epoch = 0;
  double loss = 0;     // mean over every target token of the split
  int64_t targets = 0; // tokens the loss averages over
  /// exp(loss); written to the log as "perplexity".
  double perplexity() const;
};

class MetricsLog {
public:
  /// Appends to `path` (created if missing; records already there are read
  /// so the plot shows the whole run). With `resumeStep`, records of steps
  /// after it - written by a run that crashed after its last checkpoint - are
  /// removed first (atomically), so the resumed curve has no duplicates.
  /// Errors are FormatError(path, ...).
  explicit MetricsLog(const std::string &path,
                      std::optional<int64_t> resumeStep = std::nullopt);

  void logTrain(const TrainRecord &r);
  void logValidation(const ValidationRecord &r);
  /// Any other event ({"type": ...} is required), e.g. "checkpoint".
  void logEvent(const nlohmann::json &event);

  const std::vector<TrainRecord> &train() const { return train_; }
  const std::vector<ValidationRecord> &validation() const { return val_; }
  const std::string &path() const { return path_; }
  /// `path` with its extension replaced by ".svg" (metrics.jsonl ->
  /// metrics.svg).
  std::string plotPath() const;
  /// Writes the loss plot to plotPath() atomically.
  void writePlot(const std::string &title = "bitloom training loss") const;

private:
  void append(const nlohmann::json &j);
  std::string path_;
  std::vector<TrainRecord> train_;
  std::vector<ValidationRecord> val_;
};

/// Round axis ticks covering [lo, hi]: steps of 1, 2 or 5 x 10^k, at most
/// about `maxTicks` of them; the returned range is extended to whole ticks.
struct AxisTicks {
  double lo = 0, hi = 1, step = 1;
  std::vector<double> ticks;
};
AxisTicks niceTicks(double lo, double hi, int maxTicks = 6);

/// The loss plot: train loss per step as a line, validation loss as points
/// (one per evaluation, usually per epoch), axes with ticks and labels, a
/// legend. Non-finite values are skipped; long runs are thinned to a
/// per-pixel min/max envelope so the file stays small.
std::string renderLossSvg(const std::vector<TrainRecord> &train,
                          const std::vector<ValidationRecord> &validation,
                          const std::string &title);

/// "3m07s", "1h02m", "45s", "2d03h".
std::string formatDuration(double seconds);

class ProgressReporter {
public:
  using Clock = std::function<double()>; // seconds, monotonic
  /// `tty` defaults to isatty() of stdout when `out` is std::cout, else
  /// false. `startStep` is where a resumed run begins (for the rate/ETA).
  ProgressReporter(int64_t totalSteps, std::ostream &out,
                   std::optional<bool> tty = std::nullopt,
                   int64_t startStep = 0, Clock clock = {});
  /// After step `step` (1-based). TTY: redraws the bar (at most 10 times a
  /// second, always on the last step). Otherwise one line every
  /// `logEvery` steps and on the last (and on the first one of the run
  /// with setLogFirst). A finite `learningRate` is shown too.
  void update(int64_t step, double loss, double tokensPerSecond,
              double learningRate = std::nan(""));
  /// A line that must not be overwritten by the bar (validation, saves).
  void message(const std::string &line);
  /// Ends the bar's line.
  void finish();
  void setLogEvery(int64_t n) { logEvery_ = n < 1 ? 1 : n; }
  /// Plain lines: also log the first step of the run (startStep + 1).
  void setLogFirst(bool on) { logFirst_ = on; }
  bool isTty() const { return tty_; }

private:
  std::string line(int64_t step, double loss, double tps, double lr,
                   bool bar) const;
  int64_t total_, start_;
  std::ostream &out_;
  bool tty_;
  Clock clock_;
  double t0_, lastDraw_ = -1e9;
  int64_t logEvery_ = 1;
  bool logFirst_ = false;
  bool open_ = false; // a bar is on the current line
};

} // namespace bitloom::trainer

#endif // BITLOOM_TRAINER_METRICS_H

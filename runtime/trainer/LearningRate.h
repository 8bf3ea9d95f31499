//===- LearningRate.h - Learning-rate schedules -----------------*- C++ -*-===//
#ifndef BITLOOM_TRAINER_LEARNINGRATE_H
#define BITLOOM_TRAINER_LEARNINGRATE_H

#include "formats/Error.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

namespace bitloom::trainer {

/// Hugging Face's get_{constant,linear,cosine}_schedule_with_warmup: `step`
/// counts from 0 and warmup ramps linearly from 0 to `peak`. Throws
/// FormatError naming --lr-schedule for an unknown schedule.
inline double scheduledLearningRate(const std::string &schedule, double peak,
                                    int64_t step, int64_t warmup,
                                    int64_t total) {
  if (schedule != "constant" && schedule != "linear" && schedule != "cosine")
    throw FormatError("", "--lr-schedule",
                      "unknown schedule '" + schedule +
                          "' (constant, linear or cosine)");
  if (step < warmup)
    return peak * double(step) / double(std::max<int64_t>(1, warmup));
  if (schedule == "constant")
    return peak;
  double progress =
      double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  if (schedule == "linear")
    return peak * std::max(0.0, 1.0 - progress);
  return peak * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

} // namespace bitloom::trainer

#endif // BITLOOM_TRAINER_LEARNINGRATE_H

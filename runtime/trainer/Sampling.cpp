//===- Sampling.cpp - Next-token sampling ---------------------------------===//

#include "trainer/Sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace bitloom::trainer {

int32_t sampleToken(const float *logits, int64_t vocab, double temperature,
                    double topP, std::mt19937_64 &rng) {
  if (temperature <= 0.0)
    return int32_t(std::max_element(logits, logits + vocab) - logits);
  std::vector<double> probs(static_cast<size_t>(vocab));
  double maxLogit = *std::max_element(logits, logits + vocab), sum = 0;
  for (int64_t i = 0; i < vocab; ++i)
    sum += probs[size_t(i)] =
        std::exp((double(logits[i]) - maxLogit) / temperature);
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return probs[a] > probs[b]; });
  double mass = 0;
  size_t keep = 0;
  while (keep < order.size() && (keep == 0 || mass < topP * sum))
    mass += probs[size_t(order[keep++])];
  std::uniform_real_distribution<double> uniform(0.0, mass);
  double r = uniform(rng);
  for (size_t i = 0; i < keep; ++i) {
    r -= probs[size_t(order[i])];
    if (r <= 0)
      return order[i];
  }
  return order[keep - 1];
}

} // namespace bitloom::trainer

//===- Sampling.h - Next-token sampling -------------------------*- C++ -*-===//
//
// The host side of generation: picks the next token from a row of logits.
// Greedy (the first maximum) when the temperature is 0; otherwise
// softmax(logits / T) restricted to the smallest set of most probable tokens
// whose mass reaches top_p (nucleus sampling), drawn with a seeded
// std::mt19937_64 - the same draws `bitloom generate` makes, so a seed gives
// the same text on the reference executor and on a device.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TRAINER_SAMPLING_H
#define BITLOOM_TRAINER_SAMPLING_H

#include <cstdint>
#include <random>

namespace bitloom::trainer {

int32_t sampleToken(const float *logits, int64_t vocab, double temperature,
                    double topP, std::mt19937_64 &rng);

} // namespace bitloom::trainer

#endif // BITLOOM_TRAINER_SAMPLING_H

// Next-token sampling: greedy (temperature 0), or temperature + nucleus (top-p) with a seeded
// generator. Deterministic for a given seed.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace indexshare::model {

struct SamplerOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax, lower id wins ties)
  float top_p = 1.0f;        // keep the smallest set of tokens whose probability reaches top_p
  int top_k = 0;             // 0 = no limit
  uint64_t seed = 0;
};

// argmax of logits, the lower id on ties (the greedy rule everywhere); Error on a NaN logit.
int32_t greedy_token(std::span<const float> logits);

class Sampler {
 public:
  explicit Sampler(SamplerOptions o);
  // logits: [vocab]; NaN logits are an Error.
  int32_t sample(std::span<const float> logits);

 private:
  SamplerOptions o_;
  std::mt19937_64 rng_;
};

}  // namespace indexshare::model

#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace indexshare::model {

Sampler::Sampler(SamplerOptions o) : o_(o), rng_(o.seed) {
  IS_CHECK(o.temperature >= 0.0f && std::isfinite(o.temperature), "sampler: temperature must be >= 0, got ", o.temperature);
  IS_CHECK(o.top_p > 0.0f && o.top_p <= 1.0f, "sampler: top_p must be in (0, 1], got ", o.top_p);
  IS_CHECK(o.top_k >= 0, "sampler: top_k must be >= 0, got ", o.top_k);
}

int32_t greedy_token(std::span<const float> logits) {
  IS_CHECK(!logits.empty(), "sampler: empty logits");
  int32_t best = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    IS_CHECK(!std::isnan(logits[i]), "sampler: logit ", i, " is NaN");
    if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best;
}

int32_t Sampler::sample(std::span<const float> logits) {
  const int32_t best = greedy_token(logits);
  if (o_.temperature == 0.0f) return best;
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)]; });
  if (o_.top_k > 0 && static_cast<size_t>(o_.top_k) < ids.size()) ids.resize(static_cast<size_t>(o_.top_k));
  const double mx = logits[static_cast<size_t>(ids[0])];
  std::vector<double> p(ids.size());
  double sum = 0.0;
  for (size_t i = 0; i < ids.size(); ++i) sum += (p[i] = std::exp((logits[static_cast<size_t>(ids[i])] - mx) / o_.temperature));
  size_t keep = ids.size();
  double acc = 0.0;
  for (size_t i = 0; i < ids.size(); ++i) {
    acc += p[i] / sum;
    if (acc >= o_.top_p) {
      keep = i + 1;
      break;
    }
  }
  double kept = 0.0;
  for (size_t i = 0; i < keep; ++i) kept += p[i];
  double r = std::uniform_real_distribution<double>(0.0, kept)(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r <= 0.0) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace indexshare::model

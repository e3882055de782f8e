#include "eval/probes.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace indexshare::eval {

namespace {

Probe repeat_probe(std::span<const int32_t> heldout, int64_t ctx) {
  const int64_t n = ctx / 3;
  Probe p;
  p.name = "repeat x3";
  p.tokens.resize(static_cast<size_t>(ctx));
  for (int64_t i = 0; i < ctx; ++i) p.tokens[static_cast<size_t>(i)] = heldout[static_cast<size_t>(i % n)];
  p.first = 0;
  p.regions = {{"first copy", 0, n - 1}, {"repeats", n - 1, ctx - 1}};
  p.copy_period = n;
  return p;
}

Probe passkey_probe(std::span<const int32_t> filler_src, const Encode& encode, int64_t ctx, double depth, int key) {
  const std::string k = std::to_string(key);
  const std::vector<int32_t> needle = encode("\nThe pass key is " + k + ". Remember it. " + k + " is the pass key.\n");
  const std::vector<int32_t> question = encode("\nWhat is the pass key? The pass key is");
  const std::vector<int32_t> answer = encode(" " + k);
  IS_CHECK(!answer.empty() && !needle.empty() && !question.empty(), "probes: the tokenizer gave an empty encoding");
  const int64_t fixed = static_cast<int64_t>(needle.size() + question.size() + answer.size());
  const int64_t filler = ctx - fixed;
  IS_CHECK(filler >= 16, "probes: a context of ", ctx, " tokens leaves no room for the pass-key filler");
  const int64_t at = std::clamp<int64_t>(static_cast<int64_t>(std::floor(depth * static_cast<double>(filler))), 1, filler);
  Probe p;
  p.name = "passkey @ " + std::to_string(static_cast<int>(std::lround(depth * 100))) + "%";
  p.tokens.assign(filler_src.begin(), filler_src.begin() + at);
  p.tokens.insert(p.tokens.end(), needle.begin(), needle.end());
  p.tokens.insert(p.tokens.end(), filler_src.begin() + at, filler_src.begin() + filler);
  p.tokens.insert(p.tokens.end(), question.begin(), question.end());
  p.tokens.insert(p.tokens.end(), answer.begin(), answer.end());
  p.first = ctx - 1 - static_cast<int64_t>(answer.size());
  p.regions = {{"answer", p.first, ctx - 1}};
  p.evidence_begin = at;
  p.evidence_end = at + static_cast<int64_t>(needle.size());
  return p;
}

}  // namespace

std::vector<Probe> make_probes(std::span<const int32_t> heldout, const Encode& encode, int64_t ctx,
                               std::span<const double> depths) {
  IS_CHECK(ctx >= 64, "probes: the context must be at least 64 tokens, got ", ctx);
  IS_CHECK(static_cast<int64_t>(heldout.size()) >= 2 * ctx, "probes: ", heldout.size(),
           " held-out tokens; the probes at context ", ctx, " need ", 2 * ctx);
  std::vector<Probe> r;
  r.push_back(repeat_probe(heldout, ctx));
  // Five-digit keys, one per depth, fixed so every run asks the same questions.
  static constexpr int kKeys[] = {52817, 30694, 71452, 86203, 19375, 64028, 47561, 23849};
  for (size_t i = 0; i < depths.size(); ++i) {
    IS_CHECK(depths[i] >= 0.0 && depths[i] <= 1.0, "probes: depth ", depths[i], " is outside [0, 1]");
    r.push_back(passkey_probe(heldout.subspan(static_cast<size_t>(ctx)), encode, ctx, depths[i],
                              kKeys[i % std::size(kKeys)]));
  }
  return r;
}

std::vector<RegionScore> score_probe(const Probe& p, std::span<const float> nll, std::span<const uint8_t> top1) {
  const int64_t ctx = static_cast<int64_t>(p.tokens.size());
  const auto want = static_cast<size_t>(ctx - 1 - p.first);
  IS_CHECK(nll.size() == want && top1.size() == want, "probes: ", p.name, ": ", nll.size(),
           " scored predictions, expected ", want);
  std::vector<RegionScore> r;
  for (const ProbeRegion& g : p.regions) {
    IS_CHECK(g.begin >= p.first && g.end <= ctx - 1 && g.begin < g.end, "probes: ", p.name, ": region ", g.name,
             " [", g.begin, ", ", g.end, ") is outside the scored positions [", p.first, ", ", ctx - 1, ")");
    RegionScore s{.probe = p.name, .region = g.name, .tokens = g.end - g.begin};
    double sum = 0.0;
    int64_t hits = 0;
    for (int64_t j = g.begin; j < g.end; ++j) {
      sum += nll[static_cast<size_t>(j - p.first)];
      hits += top1[static_cast<size_t>(j - p.first)] ? 1 : 0;
    }
    s.mean_nll = sum / static_cast<double>(s.tokens);
    s.ppl = std::exp(s.mean_nll);
    s.top1 = static_cast<double>(hits) / static_cast<double>(s.tokens);
    s.exact = hits == s.tokens;
    r.push_back(s);
  }
  return r;
}

std::vector<double> evidence_recall(const Probe& p, const std::vector<std::vector<std::vector<int32_t>>>& recorded) {
  IS_CHECK(p.evidence_end > p.evidence_begin, "probes: ", p.name, " has no evidence span");
  const double n = static_cast<double>(p.evidence_end - p.evidence_begin);
  std::vector<double> r;
  for (const auto& layer : recorded) {
    if (layer.empty()) {
      r.push_back(std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    double sum = 0.0;
    for (const auto& row : layer) {
      const auto lo = std::lower_bound(row.begin(), row.end(), static_cast<int32_t>(p.evidence_begin));
      const auto hi = std::lower_bound(row.begin(), row.end(), static_cast<int32_t>(p.evidence_end));
      sum += static_cast<double>(hi - lo) / n;
    }
    r.push_back(sum / static_cast<double>(layer.size()));
  }
  return r;
}

std::vector<double> copy_recall(const Probe& p, const std::vector<std::vector<std::vector<int32_t>>>& recorded,
                                int64_t from, int64_t stride) {
  IS_CHECK(p.copy_period > 0, "probes: ", p.name, " has no copy period");
  IS_CHECK(stride >= 1, "probes: copy_recall stride must be >= 1, got ", stride);
  const int64_t n = p.copy_period, ctx = static_cast<int64_t>(p.tokens.size());
  const int64_t pos0 = (std::max<int64_t>(from, 0) + stride - 1) / stride * stride;
  std::vector<double> r;
  for (const auto& layer : recorded) {
    double hit = 0.0;
    int64_t rows = 0;
    for (size_t i = 0; i < layer.size(); ++i) {
      const int64_t j = pos0 + static_cast<int64_t>(i) * stride;
      if (j < n - 1 || j >= ctx - 1) continue;
      const auto& row = layer[i];
      hit += std::binary_search(row.begin(), row.end(), static_cast<int32_t>(j + 1 - n)) ? 1.0 : 0.0;
      ++rows;
    }
    r.push_back(rows ? hit / static_cast<double>(rows) : std::numeric_limits<double>::quiet_NaN());
  }
  return r;
}

}  // namespace indexshare::eval

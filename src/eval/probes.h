// Copy and retrieval probes for `indexshare eval --probes`: windows built from held-out text in
// which the next tokens can be found verbatim earlier in the context, so an attention mode that
// misses the earlier copy shows it as lost likelihood.
//
//   repeat x3        a passage of ctx/3 tokens written three times in a row (the window's tail
//                    is the passage's start again). Regions: "first copy" (predictions of tokens
//                    1 .. n-1 of the first copy: nothing to copy yet) and "repeats" (every
//                    prediction of the later copies: each token is in the context already).
//   passkey @ d      filler text with a needle ("The pass key is 52817. Remember it. ...") at
//                    depth d of the filler, then "What is the pass key? The pass key is" and the
//                    answer. Region "answer": the predictions of the answer's tokens.
//
// Each probe is one window of exactly ctx tokens (its first token is replaced by BOS when the
// model adds one, as every perplexity window is). Region [begin, end) holds scored positions j,
// each predicting token j + 1.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace indexshare::eval {

struct ProbeRegion {
  std::string name;
  int64_t begin = 0, end = 0;  // scored positions [begin, end)
};

struct Probe {
  std::string name;
  std::vector<int32_t> tokens;  // ctx tokens
  int64_t first = 0;            // first scored position (the window scores [first, ctx - 1))
  std::vector<ProbeRegion> regions;
  int64_t evidence_begin = 0, evidence_end = 0;  // the needle's positions (pass key); else empty
  // Repeat probe: the passage length n. A row j of the "repeats" region predicts token j + 1,
  // whose earlier copy sits at j + 1 - n: the key a copying (induction) head needs. 0 otherwise.
  int64_t copy_period = 0;
};

using Encode = std::function<std::vector<int32_t>(std::string_view)>;

// The repeat probe and one passkey probe per depth (fractions in [0, 1]), from held-out tokens
// (at least 2 * ctx of them: the repeat passage starts at 0, the filler at ctx). Error when the
// text is too short, ctx < 64, or a depth is outside [0, 1].
std::vector<Probe> make_probes(std::span<const int32_t> heldout, const Encode& encode, int64_t ctx,
                               std::span<const double> depths);

struct RegionScore {
  std::string probe, region;
  int64_t tokens = 0;
  double mean_nll = 0.0, ppl = 0.0;
  double top1 = 0.0;   // fraction of predictions whose arg-max is the target
  bool exact = false;  // every prediction of the region is its arg-max
};

// Scores each region of `p` from the per-prediction NLL and arg-max hits of its window
// (positions p.first .. ctx - 2, as PerplexityResult::token_nll / token_top1 hold them).
std::vector<RegionScore> score_probe(const Probe& p, std::span<const float> nll, std::span<const uint8_t> top1);

// Per layer: the mean over the recorded rows of the fraction of the evidence positions
// [evidence_begin, evidence_end) in the row's selected set (recorded[layer][row] = sorted
// positions, as LlamaDsaBackend::recorded() holds them). NaN for a layer with no recorded row.
// Error when the probe has no evidence span.
std::vector<double> evidence_recall(const Probe& p, const std::vector<std::vector<std::vector<int32_t>>>& recorded);

// Repeat probe, per layer: the fraction of the recorded rows of the "repeats" region whose set
// holds the copy source j + 1 - n (see Probe::copy_period). Rows were recorded at the positions
// that are multiples of `stride` from `from` on (LlamaDsaBackend's record_stride / record_from):
// recorded[layer][i] is position ceil(from / stride) * stride + i * stride. NaN for a layer with
// no row in the region. Error when the probe has no copy period or stride < 1.
std::vector<double> copy_recall(const Probe& p, const std::vector<std::vector<std::vector<int32_t>>>& recorded,
                                int64_t from, int64_t stride);

}  // namespace indexshare::eval

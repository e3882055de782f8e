// IndexCache's training-free greedy search of an F/S sharing pattern (dsa-spec §e.3) for a Llama
// model with one learned lightning indexer per layer.
//
// Start with every layer F. At each step, try switching each remaining F layer except layer 0 to
// S, evaluate the calibration loss with DSA under that pattern, and commit the switch that raises
// the loss least (ties: the lower layer). Stop when `keep` F layers remain.
// With PatternSearchOptions::reindex set, layers leave F for R (reindex) instead of S: the search
// picks the F layers of an F/R schedule.
//
// Calibration loss: the mean next-token NLL over fixed windows (tokenised once, the same for
// every candidate), scored as eval::perplexity scores: each window runs from an empty cache and
// only the predictions at positions [first, ctx - 1) count, first = ctx / 2 by default, so every
// scored token has at least ctx / 2 tokens of context (and, with ctx > k, sparse attention).
//
// Prefix cache: switching layer l to S leaves layers < l unchanged. Each step runs the model
// once under the current pattern, layer by layer, keeping per window the hidden state entering
// every layer and the shared top-k buffer each F layer leaves; candidate l then runs only layers
// l .. N-1 from the state entering l, with the buffer of the last F layer before l restored. The
// result is bit for bit what a full forward under the candidate pattern gives.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "model/llama_model.h"
#include "model/llama_dsa.h"
#include "share/schedule.h"

namespace indexshare::train {

// Fixed calibration windows: consecutive, non-overlapping slices of ctx tokens of a token stream,
// each token of the stream in at most one window. With bos >= 0 each window's first token is
// replaced by it (as eval::perplexity does); the target of position j is the stream's next token.
struct CalibrationSet {
  int64_t ctx = 0;
  std::vector<std::vector<int32_t>> inputs;   // [windows][ctx] model input
  std::vector<std::vector<int32_t>> targets;  // [windows][ctx - 1] next token of position j
};

// Error when the stream holds fewer than `windows` whole windows, or ctx < 2, or windows < 1.
CalibrationSet make_calibration_set(std::span<const int32_t> tokens, int64_t ctx, int windows, int32_t bos = -1);

struct SearchCandidate {
  int layer = 0;      // the F layer tried as S (or R)
  double loss = 0.0;  // mean NLL of the current pattern with that layer switched
};

struct SearchStep {
  int layer = 0;            // the layer switched to S
  int num_full = 0;         // F layers after the step
  double loss = 0.0;        // loss of the pattern after the step (= the chosen candidate's)
  double base_loss = 0.0;   // loss of the pattern before the step (the prefix run's)
  std::string pattern;      // after the step
  std::vector<SearchCandidate> candidates;  // every candidate tried, ascending layer
  double seconds = 0.0;
};

// Reindex (R) layers: their small indexers (every layer but 0) and the candidates C >= k.
struct ReindexSpec {
  const model::IndexerSet* indexers = nullptr;
  int candidates = 0;
};

struct PatternSearchOptions {
  int keep = 1;        // F layers left at the end, 1 .. N
  ReindexSpec reindex; // indexers set: non-F layers are R, else S
  int topk = 0;        // k of DSA, 1 .. ctx
  int64_t first = -1;  // first scored position of a window; -1 = ctx / 2
  // Called after every candidate evaluation (done, total, in units of one candidate pattern on
  // one window; total is known at the start) and, with the step that just finished, after every
  // step (step != nullptr; done unchanged). May be empty.
  std::function<void(int64_t done, int64_t total, const SearchStep* step)> progress;
};

struct PatternSearchResult {
  double all_full_loss = 0.0;
  std::vector<SearchStep> steps;
  std::string pattern;              // index_topk_pattern string of the result
  int64_t windows = 0;
  int64_t scored = 0;               // predictions scored per evaluation (all windows)
  int64_t candidate_evaluations = 0;  // candidate patterns evaluated (each on every window)
  int64_t layer_runs = 0;           // decoder layers run (all windows), prefix runs included
  int64_t layer_runs_uncached = 0;  // the same without the prefix cache: a full forward for the
                                    // all-F loss and one per candidate, on every window
  double seconds = 0.0;
};

// Runs the search. `indexers` must hold an indexer for every layer of the model. Errors name the
// bad argument: keep outside [1, N], topk outside [1, ctx], an empty calibration set, a first
// scored position that leaves nothing to score, an indexer set of another shape.
PatternSearchResult search_pattern(const model::LlamaModel& m, const CalibrationSet& calib,
                                   const model::IndexerSet& indexers, const PatternSearchOptions& o);

// `keep` F layers spread evenly over `layers`: layer floor(i * layers / keep) is F, i < keep
// (layer 0 always). The uniform baseline the search is compared with.
std::string uniform_pattern(int layers, int keep);

// The calibration loss of one pattern by plain full forwards (model.forward with a DSA backend):
// what the search's cached evaluation must equal. Same validation as search_pattern.
double pattern_loss(const model::LlamaModel& m, const CalibrationSet& calib, const model::IndexerSet& indexers,
                    const share::Schedule& pattern, int topk, int64_t first = -1, const ReindexSpec& reindex = {});

}  // namespace indexshare::train

// One row of `indexshare eval`: perplexity and the DSA measures of one attention mode on a
// Llama model (dense, oracle top-k, learned indexers under a sharing schedule).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "eval/perplexity.h"
#include "model/llama_dsa.h"

namespace indexshare::eval {

struct ModeSpec {
  std::string name;
  bool dense = false;                       // true: no DSA at all
  model::DsaSelection selection = model::DsaSelection::kIndexer;
  std::optional<share::Schedule> schedule;  // DSA only
  const model::IndexerSet* indexers = nullptr;
  const model::IndexerSet* reindexers = nullptr;  // R layers' indexers (schedules with R)
  int candidates = 0;                             // R layers: candidates per F layer
};

struct ModeResult {
  std::string name, pattern;
  double ppl = 0.0, mean_nll = 0.0;
  double recall = 0.0;          // mean over layers and measured rows (NaN for dense)
  double overlap = 0.0;         // mean over S layers of |reused ∩ own| / |own| (NaN when none)
  std::vector<double> layer_recall, layer_overlap;
  std::vector<double> head_recall;  // [layers, heads] row-major: each head's attention mass in the set
  int64_t indexer_calls = 0;    // per window (one forward)
  int64_t reused = 0;           // per window
  int64_t reindex_calls = 0;    // per window
  int num_full = 0, num_reindex = 0;
  int candidates = 0;           // R layers' candidates (0 without R layers)
  double indexer_flops = 0.0;   // per token, F and R layers
  double attention_flops = 0.0; // per token: QK^T and PV over the attended keys
  double total_flops = 0.0;     // per token: matmuls + attention + indexer
  double seconds = 0.0;         // wall time of the windows
  double select_seconds = 0.0;  // of which in top-k selection
  std::vector<std::vector<std::vector<int32_t>>> recorded;  // when asked for
  std::vector<float> token_nll;   // with EvalSettings::ppl.keep_tokens (PerplexityResult's)
  std::vector<uint8_t> token_top1;
};

struct EvalSettings {
  PerplexityOptions ppl;
  int topk = 0;
  const model::IndexerSet* own_indexers = nullptr;  // for S-layer overlap
  int64_t measure_stride = 16;
  int64_t record_stride = 0;
  int64_t record_from = 0;  // record rows at positions >= this
};

ModeResult run_mode(const model::LlamaModel& m, std::span<const int32_t> tokens, const ModeSpec& spec,
                    const EvalSettings& s);

// Matmul FLOPs per token of a Llama forward (2 per multiply-add; LM head included).
double llama_matmul_flops_per_token(const model::LlamaConfig& c);

// Which distances a mode's sets reach: for the recorded rows at positions t >= min_pos, per
// distance bin [edges[b], edges[b + 1]), the share of the keys s <= t at distance t - s in the bin
// that the row's set holds, pooled over rows and layers. Rows were recorded at the multiples of
// `stride` from `from` on, in windows of ctx tokens (LlamaDsaBackend's record_stride /
// record_from): row i of a layer sits at position f + (i mod m) * stride, f = the first multiple
// >= from, m = the rows of one window. NaN for a bin with no key. Error on bad edges (fewer
// than 2, not increasing, first < 0) or stride < 1.
std::vector<double> selection_by_distance(const std::vector<std::vector<std::vector<int32_t>>>& recorded, int64_t ctx,
                                          int64_t from, int64_t stride, int64_t min_pos,
                                          const std::vector<int64_t>& edges);

// Mean Jaccard similarity of the recorded sets of every pair of layers: [N, N] row-major.
std::vector<double> jaccard_matrix(const std::vector<std::vector<std::vector<int32_t>>>& recorded);

}  // namespace indexshare::eval

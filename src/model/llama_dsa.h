// DSA and IndexShare on a Llama-family model: an AttentionBackend that replaces each layer's
// dense attention by sparse attention over a per-row top-k set.
//
// The sharing itself is the DSA stack's (share/dsa_stack.h, on the CPU backend): per forward
// call (T new rows at positions [pos0, pos0 + T)) it holds the ONE shared top-k buffer and the
// indexer-K caches of the F layers. This class only chooses how an F layer selects:
//            kIndexer — the layer's learned lightning indexer (q, w, k projected from the new
//                       rows; the stack appends k and runs the indexer + top-k);
//            kOracle  — the layer's own true attention (head-averaged probabilities), exact
//                       top-k, handed to the stack as the layer's set.
//   R layer: (kIndexer only) its own small learned indexer (from `reindexers`) re-scores the
//            top-C candidates the nearest F layer before it carried over and keeps its top-k.
//   S layer: runs no selection and holds no indexer weights or indexer-K cache; the stack gives
//            it the buffer as the nearest F or R layer before it left it.
//   every layer: ops::sparse_attention of its own q over its own K/V at the selected positions.
// Once the context exceeds k this differs from dense attention; below it DSA is dense.
//
// Optional measurements (DsaOptions::measure): attention-mass recall of the selected set (the
// share of the layer's true head-averaged attention that falls inside it, and of each head's
// attention) for every layer, and
// for S layers the overlap of the reused set with what the layer's own indexer (from
// `own_indexers`) would select.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <memory>

#include "backend/cpu_backend.h"
#include "model/learned_indexer.h"
#include "model/llama_model.h"
#include "share/dsa_stack.h"
#include "share/schedule.h"

namespace indexshare::model {

// Learned indexers for a model: one per layer that has one (F layers), nullopt elsewhere.
struct IndexerSet {
  LearnedIndexerConfig cfg;
  std::vector<std::optional<LearnedIndexerWeights>> layers;
  bool has(int layer) const {
    return layer >= 0 && layer < static_cast<int>(layers.size()) && layers[static_cast<size_t>(layer)].has_value();
  }
};

enum class DsaSelection { kIndexer, kOracle };

struct DsaOptions {
  int topk = 0;
  share::Schedule schedule = share::Schedule::all_full(1);
  DsaSelection selection = DsaSelection::kIndexer;
  const IndexerSet* indexers = nullptr;      // kIndexer: must hold every F layer
  const IndexerSet* reindexers = nullptr;    // R layers: must hold every R layer
  int candidates = 0;                        // R layers: top-C an F layer carries over (>= topk)
  const IndexerSet* own_indexers = nullptr;  // nullable: per-layer indexers for S-layer overlap
  bool measure = false;                      // recall (+ overlap) statistics
  int64_t measure_stride = 1;                // measure rows with position % stride == 0
  int64_t record_stride = 0;                 // > 0: keep the sets of rows t % stride == 0
  int64_t record_from = 0;                   // ... at positions t >= record_from
  int64_t capacity = 0;                      // tokens per sequence (indexer-K cache size)
};

struct DsaLayerStats {
  int64_t rows = 0;
  double recall_sum = 0.0;   // sum over rows of the selected attention mass (heads' mean)
  std::vector<double> head_recall_sum;  // [n_heads]: sum over rows of each head's mass in the set
  int64_t overlap_rows = 0;
  double overlap_sum = 0.0;  // sum over rows of |reused ∩ own| / |own|
};

struct DsaCounters {
  int64_t indexer_calls = 0;   // F-layer selections (the stack's indexer runs + oracle sets)
  int64_t reindex_calls = 0;   // R-layer re-selections
  int64_t reused = 0;          // S-layer reuses (the stack's count)
  int64_t sparse_calls = 0;
  double indexer_flops = 0.0;  // projections + scores of the lightning indexers (F and R)
  double select_seconds = 0.0; // time in selection (indexer + top-k, or oracle)
  double attention_seconds = 0.0;
};

// The shared top-k buffer as the last F layer of the current forward call left it.
struct DsaSharedTopk {
  std::vector<int32_t> indices;  // [rows, topk], -1 = empty slot
  int64_t rows = 0;
  int64_t pos0 = -1;             // -1: no F layer has run since begin_sequence()
  int source = -1;               // the F or R layer that filled it
  // Schedules with R layers: the candidates [rows, C] the last F layer left, and that layer.
  std::vector<int32_t> candidates;
  int cand_source = -1;
};

// ops::sparse_attention of the call's q over its layer's K/V cache (f32 or f16) at the positions
// `indices` [a.T, K] (-1 = empty), writing a.out: what every Llama sparse-attention path runs.
void sparse_attend(const AttentionCall& a, const LlamaConfig& c, const int32_t* indices, int K);

class LlamaDsaBackend : public AttentionBackend {
 public:
  LlamaDsaBackend(const LlamaConfig& model, DsaOptions opt);
  void begin_sequence() override;
  bool attend(const AttentionCall& a) override;

  const DsaCounters& counters() const;
  const std::vector<DsaLayerStats>& layer_stats() const { return stats_; }
  // Recorded sets: per layer, per recorded row, the sorted selected positions.
  const std::vector<std::vector<std::vector<int32_t>>>& recorded() const { return recorded_; }
  // Bytes of indexer state (indexer-K cache) held for a layer: 0 for S layers.
  size_t indexer_state_bytes(int layer) const;
  const DsaOptions& options() const { return opt_; }

  // Save and restore the shared top-k buffer: a caller that resumes a forward at layer l from a
  // saved hidden state (LlamaModel::forward_layers) restores the buffer the F layer before l left,
  // and the S layers from l on reuse it as in an unbroken forward.
  DsaSharedTopk shared_topk() const;
  void restore_shared_topk(DsaSharedTopk s);

 private:
  // Starts a stack step for this call's rows unless the call continues the current one.
  void enter(const AttentionCall& a);
  void begin(int64_t pos0, int64_t T);
  // F layer (reindex false) or R layer (true, its small indexer over the candidates).
  void select_with_indexer(const AttentionCall& a, const LearnedIndexerWeights& w, bool reindex = false);
  void select_oracle(const AttentionCall& a);
  void measure(const AttentionCall& a, const int32_t* topk);

  LlamaConfig mc_;
  DsaOptions opt_;
  backend::CpuBackend cpu_;
  std::unique_ptr<share::DsaStack> stack_;
  backend::Step step_;                       // B = 1, identity page table
  Tensor step_buffer_;
  int last_layer_ = -1;                      // last layer attended in the current step
  std::vector<int32_t> own_;                 // [measured rows, k] the own indexer's sets
  std::vector<float> probs_;                 // [T or measured rows, L] scratch for oracle / measure
  std::vector<float> keys_f32_;              // [L, H_kv, Dh] widened f16 keys for oracle / measure
  std::vector<float> group_keys_;            // [L, Dh] one KV group's keys (measure)
  mutable DsaCounters counters_;
  std::vector<DsaLayerStats> stats_;
  std::vector<std::vector<std::vector<int32_t>>> recorded_;
};

}  // namespace indexshare::model

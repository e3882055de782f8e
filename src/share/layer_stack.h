// The DSA layer-stack driver: runs N decoder layers under an F/S schedule.
//
// Per forward step (T new tokens at absolute positions [q_start, q_start + T)):
//   F layer: asks the layer for its indexer query, head weights and the indexer keys of the T new
//            tokens; appends the keys to the layer's indexer-K cache (owned by the stack, F layers
//            only); runs the lightning indexer + exact top-k (ops/indexer_topk.h) over all
//            q_start + T cached keys into the ONE shared top-k buffer [T, K].
//   S layer: runs no indexer; it is never asked for indexer inputs and has no indexer-K cache.
//            It reads the buffer as the nearest F layer before it left it.
//   every layer: asks the layer for its attention view (its own q and K/V over all cached keys),
//            runs sparse attention (ops/sparse_attention.h) over the buffer's indices, and hands
//            the output back to the layer (o-projection, residual, MLP are the layer's business).
//
// The stack appends: step s must start where step s-1 ended (prefill chunks and decode steps in
// order); reset() starts a new sequence. Causality comes from the indexer (key s is a candidate
// of row t only if s <= q_start + t), so sparse attention never sees a future key.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "share/schedule.h"

namespace indexshare::share {

// One forward step, as the layers see it.
struct StepInfo {
  int64_t T = 0;        // new rows
  int64_t q_start = 0;  // absolute position of row 0
  int64_t L = 0;        // cached keys after this step = q_start + T
};

// What attention reads for one layer. Two forms, as in ops/sparse_attention.h.
struct AttentionView {
  enum class Form { kGqa, kMla } form = Form::kGqa;
  const float* q = nullptr;  // [T, H, Dk]
  const float* k = nullptr;  // GQA: [L, H_kv, Dk];  MLA: [L, Dk] latent per token
  const float* v = nullptr;  // GQA: [L, H_kv, Dv];  MLA: unused (value = first Dv of the latent)
  int H = 0, H_kv = 1, Dk = 0, Dv = 0;
  float scale = 1.0f;
  float* out = nullptr;  // [T, H, Dv] written by the stack
  float* lse = nullptr;  // [T, H] nullable
};

// A decoder layer as the stack drives it. The model code of later issues implements this.
class DsaLayer {
 public:
  virtual ~DsaLayer() = default;
  // F layers only (never called on S layers). Writes the indexer query q [T, H_I, D_I], the head
  // weights [T, H_I] and the indexer keys of the T new tokens k_new [T, D_I], computed from the
  // layer input `hidden` (model-defined layout).
  virtual void indexer_inputs(int layer, const StepInfo& s, const float* hidden, float* q, float* weights,
                              float* k_new) = 0;
  // Every layer: computes its attention query for the T rows, appends the new tokens to its own
  // K/V cache and returns the view over all s.L cached keys.
  virtual AttentionView attention_inputs(int layer, const StepInfo& s, const float* hidden) = 0;
  // Every layer: consumes the attention output (view.out) and updates hidden in place.
  virtual void finish(int layer, const StepInfo& s, float* hidden) = 0;
};

struct LayerStackOptions {
  int index_heads = 0;         // H_I
  int index_dim = 0;           // D_I
  int topk = 0;                // K
  float index_scale = 0.0f;    // 0: H_I^-0.5 * D_I^-0.5 (the DSA constant)
  int64_t max_context = 0;     // capacity of every indexer-K cache, in tokens
  int64_t key_tile = 4096;     // passed to ops::indexer_topk
  int64_t row_block = 16;
};

struct LayerStackCounters {
  int64_t steps = 0;            // forward() calls with T > 0
  int64_t indexer_calls = 0;    // F-layer indexer + top-k runs
  int64_t shared_reuses = 0;    // S-layer runs that reused the buffer
  int64_t attention_calls = 0;  // sparse attention runs (every layer, every step)
};

class LayerStack {
 public:
  // `layers` has one non-null entry per schedule layer; the stack does not own them.
  // Allocates the indexer-K cache of the F layers (max_context x index_dim floats each) and
  // nothing for S layers.
  LayerStack(Schedule schedule, const LayerStackOptions& opt, std::vector<DsaLayer*> layers);

  // Runs every layer on T rows at positions [tokens(), tokens() + T); hidden is passed to the
  // layers untouched by the stack. T = 0 is a no-op. If anything throws, tokens() is unchanged
  // and the step is not counted: the caller may retry the same step or reset().
  void forward(float* hidden, int64_t T);
  // Forgets the sequence (cached lengths to 0); keeps allocations and counters.
  void reset();

  int64_t tokens() const { return tokens_; }
  const Schedule& schedule() const { return schedule_; }
  const LayerStackCounters& counters() const { return counters_; }
  void reset_counters() { counters_ = {}; }
  // Bytes of indexer state (indexer-K cache) allocated for `layer`: 0 for S layers.
  size_t indexer_state_bytes(int layer) const;
  size_t indexer_state_bytes_total() const;
  // The shared top-k buffer of the current step: [T, K] indices (-1 = empty) and [T] counts.
  // Valid after the first F layer of a step ran; S layers see it as their source layer left it.
  const int32_t* topk_indices() const { return topk_.data(); }
  const int32_t* topk_counts() const { return counts_.data(); }
  int64_t topk_rows() const { return topk_rows_; }

 private:
  Schedule schedule_;
  LayerStackOptions opt_;
  std::vector<DsaLayer*> layers_;
  std::vector<std::vector<float>> index_k_;  // per layer: [max_context, D_I] (empty for S)
  std::vector<float> q_scratch_, w_scratch_;
  std::vector<int32_t> topk_, counts_;
  int64_t topk_rows_ = 0;
  int64_t tokens_ = 0;
  LayerStackCounters counters_;
};

}  // namespace indexshare::share

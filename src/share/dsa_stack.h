// The DSA stack: the one place that knows about indexer sharing. Every model family (Llama with
// learned indexers, GLM-MoE-DSA / DeepSeek-V3.2) drives its layers in order and asks the stack,
// at each layer, for the index set to attend over; the stack runs the heavy work on a backend
// (backend/backend.h), so the same sharing logic serves the CPU and the GPU.
//
// Per forward step (backend::Step: B sequences x T new rows):
//   begin_step(step)      the shared top-k buffer is sized for the step's rows and marked empty;
//   F layer:  index(l, q, w, k)   appends the new rows' indexer keys k to layer l's indexer
//                                 cache (F layers only have one) and fills the ONE shared buffer
//                                 with every row's top-k (logical positions and the physical
//                                 slots of the same keys);
//             or append_keys(l, k) + set_topk(l, sets) when the set comes from elsewhere
//                                 (oracle selection, sets forced by a test);
//   R layer:  reindex(l, q, w, k) appends k to layer l's own (small) indexer cache, scores only
//                                 the candidates its F layer left (schedule.full_source(l)) and
//                                 fills the shared buffer with its own top-k of them;
//   any layer: topk(l)            the buffer as l's source layer (schedule.source(l), the nearest
//                                 F or R layer) left it; an Error if that layer has not run in
//                                 this step (a schedule whose first layer is S or R never gets
//                                 here: Schedule rejects it).
// Candidates: with R layers in the schedule every F layer keeps its top-C (C = candidates >= K,
// in top-k order) in a second buffer and its own set is the first K of them, which is exactly its
// top-K. Without R layers C = K and there is one buffer (the candidates are the set), unless
// candidates > K is asked for anyway (a caller that resumes a schedule with R layers from this
// stack's saved state, as the pattern search does).
// S layers run no indexer and own no indexer cache: the bytes allocated for indexer caches are
// exactly those of the F and R layers (indexer_cache_bytes()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "share/schedule.h"

namespace indexshare::share {

// index_heads = index_dim = 0 makes a stack without indexer caches, whose F layers get their
// sets from set_topk only (e.g. oracle selection by true attention).
struct DsaStackOptions {
  int index_heads = 0;       // H_I
  int index_dim = 0;         // D_I
  int topk = 0;              // K
  float index_scale = 0.0f;  // 0: H_I^-0.5 * D_I^-0.5 (the DSA constant)
  backend::CacheFormat format = backend::CacheFormat::kF32;
  int64_t pages = 0;         // pages of every F layer's indexer cache (kPageTokens tokens each)
  // Reindex (R) layers, when the schedule has any: the candidates C an F layer carries over
  // (>= topk; 0 = none), and the R layers' own indexer shape (0 = the F layers' heads / dim /
  // scale). Candidates > topk without R layers still keep the top-C apart (see above).
  int candidates = 0;
  int reindex_heads = 0, reindex_dim = 0;
  float reindex_scale = 0.0f;
};

struct DsaCounters {
  int64_t steps = 0;          // begin_step calls
  int64_t indexer_calls = 0;  // F-layer selections by the indexer (index())
  int64_t forced_sets = 0;    // F-layer sets given from outside (set_topk())
  int64_t reindex_calls = 0;  // R-layer re-selections (reindex())
  int64_t shared_reuses = 0;  // S-layer reads of the buffer
};

// A copy of the shared buffer, for a caller that resumes a forward at a later layer.
struct DsaSavedTopk {
  std::vector<int32_t> logical, physical;  // [rows, K]
  int64_t rows = 0;
  int source = -1;  // the F or R layer that filled it
  // With R layers: the candidates [rows, C] and the F layer that left them.
  std::vector<int32_t> cand_logical, cand_physical;
  int cand_source = -1;
};

class DsaStack {
 public:
  DsaStack(Schedule schedule, const DsaStackOptions& opt, backend::Backend& be);

  const Schedule& schedule() const { return schedule_; }
  const DsaStackOptions& options() const { return opt_; }
  bool is_full(int layer) const { return schedule_.is_full(layer); }

  // Starts a step; `step` must stay alive and unchanged until the next begin_step.
  void begin_step(const backend::Step& step);
  // F layer: q [rows, H_I, D_I], w [rows, H_I], k [rows, D_I] (f32, on the backend).
  void index(int layer, const Tensor& q, const Tensor& w, const Tensor& k);
  // R layer: q [rows, H_R, D_R], w [rows, H_R], k [rows, D_R] of its own indexer.
  void reindex(int layer, const Tensor& q, const Tensor& w, const Tensor& k);
  // F or R layer: only append the keys (its set comes from set_topk).
  void append_keys(int layer, const Tensor& k);
  // The same for the rows of another step (filling a cache without a forward).
  void append_keys(int layer, const backend::Step& s, const Tensor& k);
  // F layer: the set is `logical` [rows, C] positions (-1 = empty), host memory, in top-k order;
  // C = candidates() (= K without R layers).
  void set_topk(int layer, const std::vector<int32_t>& logical);
  int candidates() const { return cand_; }
  // The set layer `layer` attends over, physical slots [rows, K]; counts an S-layer reuse.
  const Tensor& topk(int layer);
  // The same set as positions of the sequence (traces, measurements).
  const Tensor& topk_logical(int layer) const;
  // F layer, after index(): its scores [rows, step.max_len] (traces and tests).
  void scores(int layer, const Tensor& q, const Tensor& w, const Tensor& out);

  const backend::IndexerCache* cache(int layer) const;  // nullptr for S layers
  size_t indexer_cache_bytes(int layer) const;          // 0 for S layers
  // The candidates the last F layer left, [rows, C] positions (R layers: traces, tests).
  const Tensor& candidates_logical() const;
  size_t indexer_cache_bytes() const;                   // all layers

  const DsaCounters& counters() const { return counters_; }
  void reset_counters() { counters_ = {}; }
  // A captured step was replayed: count what it did (one indexer run per F layer, one reuse per
  // S layer), as an eager step would have.
  void count_replayed_step();
  // The device buffer the shared sets live in (a captured step's graph refers to it).
  const void* buffer_id() const { return physical_store_.defined() ? physical_store_.data() : nullptr; }

  DsaSavedTopk save() const;
  void restore(const DsaSavedTopk& s);

 private:
  const backend::Step& step() const;
  void check_full(int layer, const char* what) const;
  void check_indexed(int layer, const char* what) const;
  void check_source(int layer) const;
  // After an F layer filled the candidates: its own set is their first K.
  void set_from_candidates();

  Schedule schedule_;
  DsaStackOptions opt_;
  backend::Backend& be_;
  std::vector<std::unique_ptr<backend::IndexerCache>> caches_;  // per layer, null for S
  int cand_ = 0;                                                // C (= K with one buffer)
  bool two_buffers_ = false;                                    // candidates apart from the set
  Tensor logical_store_, physical_store_;                       // [capacity rows, K]
  Tensor logical_, physical_;                                   // views: [rows, K] of this step
  Tensor cand_logical_store_, cand_physical_store_;             // [capacity rows, C] (R only)
  Tensor cand_logical_, cand_physical_;                         // views: [rows, C] of this step
  const backend::Step* step_ = nullptr;
  int source_ = -1;       // the F or R layer that filled the buffer in this step
  int cand_source_ = -1;  // the F layer that filled the candidates in this step
  DsaCounters counters_;
};

}  // namespace indexshare::share

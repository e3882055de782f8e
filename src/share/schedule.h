// The F/S/R indexer-sharing schedule of a DSA model (IndexShare / IndexCache).
//
// A full (F) layer runs its lightning indexer over every earlier token and keeps the top-k; a
// shared (S) layer runs no indexer and reuses the top-k of the nearest F or R layer before it.
// A reindex (R) layer sits between the two: it re-scores only the candidate set of the nearest
// F layer before it (that layer's top-C, C >= k, carried over) with a small indexer of its own
// and keeps its own top-k (the "Reindex" layers of DeepSeek-V4.1's shared sparse attention).
// R is ours: transformers and vLLM know only F and S, so a config with R runs only here.
// The schedule is resolved once, at load time, from the same config keys transformers'
// GlmMoeDsaConfig reads, in this order:
//
//   1. indexer_types       list of "full" / "shared" (and our "reindex"), one per decoder layer
//                          (authoritative);
//   2. index_topk_pattern  string of 'F' / 'S' (and our 'R'), one character per decoder layer;
//   3. index_topk_freq (f, default 1) and index_skip_topk_offset (o, default 2):
//        full(i) = max(i - o + 1, 0) % f == 0,   i = 0 .. num_layers - 1.
//      Layers 0 .. o-1 are F; from layer o-1 on, every f-th layer is F.
//
// Layer ids are absolute decoder-layer ids (dense-MLP layers included). The MTP / nextn layer is
// not part of the schedule: it always runs its own indexer.
//
// Validation is stricter than transformers (which clamps freq to >= 1, accepts any offset and
// any length, and only fails at forward time when a shared layer has no indices):
//   - num_layers >= 1;
//   - index_topk_freq >= 1 and index_skip_topk_offset >= 0, checked even when a pattern or
//     indexer_types overrides them (a bad value is a broken config either way);
//   - offset 0 is accepted, but with freq > 1 it makes layer 0 shared (full(0) = 1 % f != 0),
//     which transformers would only reject at forward time; here it is rejected by the
//     first-layer rule below, with a message naming index_skip_topk_offset;
//   - the list / string has exactly num_layers entries, each "full"/"shared"/"reindex" or
//     'F'/'S'/'R';
//   - layer 0 is F (an R layer 0 would have no candidates either).
// Every error names the key and, where there is one, the bad position and value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace indexshare::share {

struct ScheduleInput {
  int num_layers = 0;                                     // num_hidden_layers
  std::optional<std::vector<std::string>> indexer_types;  // "full" / "shared" per layer
  std::optional<std::string> index_topk_pattern;          // 'F' / 'S' per layer
  int64_t index_topk_freq = 1;
  int64_t index_skip_topk_offset = 2;
};

enum class LayerKind : uint8_t { kFull, kShared, kReindex };

// Which key decided the schedule.
enum class ScheduleOrigin { kIndexerTypes, kPattern, kFreqOffset, kAllFull };

class Schedule {
 public:
  // Resolves and validates; throws Error naming the key at fault.
  static Schedule resolve(const ScheduleInput& in);
  // Every layer F (plain DSA): the baseline of the cost model.
  static Schedule all_full(int num_layers);
  // Shorthand for resolve() with only index_topk_pattern set.
  static Schedule from_pattern(std::string_view pattern);

  int num_layers() const { return static_cast<int>(kinds_.size()); }
  LayerKind kind(int layer) const;
  bool is_full(int layer) const { return kind(layer) == LayerKind::kFull; }
  bool is_reindex(int layer) const { return kind(layer) == LayerKind::kReindex; }
  bool is_shared(int layer) const { return kind(layer) == LayerKind::kShared; }
  // F and R layers run an indexer of their own (and hold an indexer-K cache).
  bool has_indexer(int layer) const { return kind(layer) != LayerKind::kShared; }
  // The layer whose top-k `layer` attends over: the largest F or R layer j <= layer.
  int source(int layer) const;
  // The F layer whose candidates (and, without R layers, whose top-k) `layer` descends from: the
  // largest F layer j <= layer. For an R layer, the layer whose top-C it re-scores.
  int full_source(int layer) const;
  int num_full() const { return num_full_; }
  int num_reindex() const { return num_reindex_; }
  int num_shared() const { return num_layers() - num_full_ - num_reindex_; }
  bool has_reindex() const { return num_reindex_ > 0; }
  // Ascending ids of the F layers.
  std::vector<int> full_layers() const;
  // One character per layer, 'F', 'S' or 'R'.
  std::string pattern() const;
  // "21 F / 57 S: FFFSSSF..." (the whole pattern); "8 F / 22 R / 0 S: ..." when there are R
  // layers.
  std::string summary() const;
  ScheduleOrigin origin() const { return origin_; }

 private:
  Schedule(std::vector<LayerKind> kinds, ScheduleOrigin origin);
  void check_layer(int layer) const;

  std::vector<LayerKind> kinds_;
  std::vector<int> source_, full_source_;
  int num_full_ = 0, num_reindex_ = 0;
  ScheduleOrigin origin_ = ScheduleOrigin::kAllFull;
};

std::string_view origin_name(ScheduleOrigin o);
char kind_char(LayerKind k);  // 'F', 'S', 'R'


}  // namespace indexshare::share

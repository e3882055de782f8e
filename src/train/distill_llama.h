// Distils one lightning indexer per layer of a frozen Llama model (DSA's dense warm-up): for
// every training sequence the model runs densely while a capture backend records each layer's
// attention input x and its head-averaged attention P; each indexer then takes Adam steps on
// KL(P_t || softmax(I_t)).
//
// Training-aware mode (IndexCache's multi-layer distillation): given a schedule, only the F
// layers get an indexer, and F layer l is trained against the mean of P over every layer it
// serves (l and the S layers up to the next F layer); the gradient equals the average of the
// per-layer KL gradients.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/llama_model.h"
#include "model/llama_dsa.h"
#include "share/schedule.h"

namespace indexshare::train {

struct DistillOptions {
  // Defaults: the recipe of the committed SmolLM2 indexers (docs/main-job.md): sequences as long
  // as the evaluation context (an indexer trained on 1024 tokens did not carry its RoPE slice to
  // 4096), a sample of 512 query rows each.
  int heads = 4;
  int head_dim = 32;
  int rope_dim = 16;
  float rope_theta = 0.0f;  // the indexer's RoPE base; 0 = the model's (a smaller base drops the
                            // slow rotations that can encode a long-range position prior)
  int64_t seq_len = 4096;
  int sequences = 16;        // training sequences taken from the token stream, in order
  int epochs = 1;
  int steps_per_sequence = 4;
  int64_t rows_per_sequence = 512;  // > 0: train on this many random query rows of each sequence
                                    // (keys: all rows); 0 = every row
  float lr = 1e-2f;
  uint64_t seed = 1;
  // The target P_t: (1 - w) x the heads' mean attention (DSA's warm-up) + w x their renormalised
  // maximum (a key one head needs weighs as much as a key every head needs;
  // ops::AttentionProbsParams::max_weight). w = 0: mean, 1: max.
  float max_weight = 0.0f;
  std::optional<share::Schedule> training_aware;  // set: F layers only, multi-layer targets
  // progress(done_steps, total_steps, mean loss of the last step over layers)
  std::function<void(int64_t, int64_t, double)> progress;
};

struct DistillReport {
  std::vector<double> first_loss;  // per layer (NaN for layers without an indexer)
  std::vector<double> last_loss;
  double seconds = 0.0;
};

model::IndexerSet distill_indexers(const model::LlamaModel& m, std::span<const int32_t> tokens,
                                   const DistillOptions& o, DistillReport* report = nullptr);

// Runs the model densely on `ids` (from position 0) and returns, per layer, the attention input
// x [T, d] and the head-averaged attention P [R, T] of the query rows `rows` (strictly
// increasing; empty = every row, R = T); max_weight blends in the renormalised maximum over heads.
struct LayerCapture {
  std::vector<std::vector<float>> x, P;
  std::vector<int64_t> rows;  // empty: every row
};
LayerCapture capture_layers(const model::LlamaModel& m, std::span<const int32_t> ids,
                            std::vector<int64_t> rows = {}, float max_weight = 0.0f);

// The target's name in files and commands: "mean" (w = 0), "max" (w = 1), "blend W" otherwise.
std::string target_name(float max_weight);

}  // namespace indexshare::train

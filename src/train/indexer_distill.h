// Distillation of a learned lightning indexer (DSA's dense warm-up, IndexCache's multi-layer
// variant): for each query row t,
//     loss_t = KL(p_t || softmax_s(I[t, s]))  over s <= t,
// where p_t is the target attention distribution (the model's attention over earlier tokens,
// averaged over heads and L1-normalised; for a training-aware F layer, the average of that
// distribution over every layer the F layer serves). The loss is the mean over rows. The model
// stays frozen: only the indexer's Wq, Wk, Ww receive gradients (the indexer input is detached).
#pragma once

#include <cstdint>
#include <vector>

#include "model/learned_indexer.h"

namespace indexshare::train {

struct DistillExample {
  const float* x = nullptr;       // [T, d_model] the layer's attention input
  const float* target = nullptr;  // [R, T] row-major; row i holds p_t of query t = rows[i] (or i
                                  // without rows) over s <= t (the rest is ignored)
  int64_t T = 0;
  int64_t pos0 = 0;               // absolute position of row 0
  // Optional: the query rows the loss covers (strictly increasing, in [0, T)); null = every row
  // (R = T). Keys are always all T rows: a long sequence is trained on a sample of its queries.
  const int64_t* rows = nullptr;
  int64_t n_rows = 0;
};

struct IndexerGrads {
  std::vector<float> wq, wk, ww;  // shapes as LearnedIndexerWeights
  void resize_like(const model::LearnedIndexerWeights& w);
};

// Returns the mean KL over the query rows (nats). When grads is non-null it is overwritten with d loss /
// d weights. Deterministic: bitwise the same for any thread count.
double indexer_kl_loss(const model::LearnedIndexerWeights& w, const DistillExample& ex, IndexerGrads* grads);

// Adam (Kingma & Ba) with bias correction.
struct Adam {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  int64_t step = 0;
  IndexerGrads m, v;
  void apply(model::LearnedIndexerWeights& w, const IndexerGrads& g);
};

}  // namespace indexshare::train

// Lightning-indexer scores (DSA), CPU.
//
//   I[t, s] = k_scale[s] * sum_h  w[t, h] * scale * q_scale[t, h] * ReLU(q[t, h, :] . k[s, :])
//
// for key positions s <= q_start + t (absolute positions: the query block may start anywhere,
// as in chunked prefill and decode); I[t, s] = -inf for s > q_start + t. DSA uses
// scale = H^-0.5 * D^-0.5. q_scale / k_scale are the per-(token, head) and per-token
// dequantisation scales of the FP8 layout (nullable = 1).
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct IndexerParams {
  const float* q = nullptr;        // [T, H, D] query block
  const float* k = nullptr;        // [L, D] one key per cached token, shared by all heads
  const float* weights = nullptr;  // [T, H] fp32 head weights (may be negative)
  const float* q_scale = nullptr;  // [T, H] nullable: per-(token, head) scale of q
  const float* k_scale = nullptr;  // [L] nullable: per-token scale of k
  float scale = 1.0f;    // multiplies every term (DSA: H^-0.5 * D^-0.5)
  int64_t T = 0;         // query rows
  int64_t L = 0;         // cached keys
  int H = 0;             // indexer heads
  int D = 0;             // indexer head dim
  int64_t q_start = 0;   // absolute position of query row 0; row t sees keys s <= q_start + t
};

// Validates shapes and pointers; throws Error naming the bad argument.
void validate(const IndexerParams& p);

// Writes the full score matrix. scores: [T, L], row stride L; masked entries are -inf.
void indexer_scores(const IndexerParams& p, float* scores);

// Scores of rows [t0, t1) against keys [s0, s1) into out[(t - t0) * ld + (s - s0)].
// The building block shared by indexer_scores and the streaming indexer + top-k.
void indexer_scores_tile(const IndexerParams& p, int64_t t0, int64_t t1, int64_t s0, int64_t s1,
                         float* out, int64_t ld);

}  // namespace indexshare::ops

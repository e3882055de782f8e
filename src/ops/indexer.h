// Lightning-indexer scores (DSA), CPU.
//
//   I[t, s] = k_scale[s] * sum_h  w[t, h] * scale * q_scale[t, h] * ReLU(q[t, h, :] . k[s, :])
//
// for key positions s <= q_start + t (absolute positions: the query block may start anywhere,
// as in chunked prefill and decode); I[t, s] = -inf for s > q_start + t. DSA uses
// scale = H^-0.5 * D^-0.5. q_scale / k_scale are the per-(token, head) and per-token
// dequantisation scales of the FP8 layout (nullable = 1); with D <= 128 one FP8 block covers a
// head (ops/quantize_fp8.h), so q = dequantised codes and q_scale = block scales reproduce it.
//
// Keys not in the cache: only keys [0, L) exist. When L < q_start + T, row t simply has
// min(L, q_start + t + 1) candidates; nothing is read at or past L. Keys s > q_start + t that
// are in the cache (L > q_start + T) are masked to -inf.
//
// Numerics and determinism: each score is computed by a fixed sequence of fp32 operations
// (dot product over d in order, then a fixed-order sum over heads, then the k_scale product),
// which depends neither on the tile boundaries nor on the thread count. So
// indexer_scores, indexer_scores_tile and the streaming indexer_topk give bitwise the same
// scores, for any threads. The AVX2 path uses fused multiply-adds, the scalar fallback does
// not, so the two agree to rounding (~1e-7 relative to sum_h |w'| |q_h . k|), not bitwise.
// NaN in q, k, weights or the scales makes the affected scores NaN (top-k then throws);
// masked entries stay -inf whatever the inputs.
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct IndexerParams {
  const float* q = nullptr;        // [T, H, D] query block
  const float* k = nullptr;        // [L, D] one key per cached token, shared by all heads
  const float* weights = nullptr;  // [T, H] fp32 head weights (may be negative)
  const float* q_scale = nullptr;  // [T, H] nullable: per-(token, head) scale of q
  const float* k_scale = nullptr;  // [L] nullable: per-token scale of k
  float scale = 1.0f;              // multiplies every term (DSA: H^-0.5 * D^-0.5)
  int64_t T = 0;                   // query rows
  int64_t L = 0;                   // cached keys
  int H = 0;                       // indexer heads
  int D = 0;                       // indexer head dim
  int64_t q_start = 0;  // absolute position of query row 0; row t sees keys s <= q_start + t
};

// Validates shapes and pointers; throws Error naming the bad argument: T, L, q_start negative;
// H, D < 1; scale not finite; q / weights null when T > 0; k null when L > 0; sizes whose
// element counts overflow int64.
void validate(const IndexerParams& p);

// Writes the full score matrix (multi-threaded). scores: [T, L], row stride L; masked
// entries are -inf.
void indexer_scores(const IndexerParams& p, float* scores);

// Scores of rows [t0, t1) against keys [s0, s1) into out[(t - t0) * ld + (s - s0)], single
// threaded. The building block shared by indexer_scores and the streaming indexer + top-k.
// Needs 0 <= t0 <= t1 <= T, 0 <= s0 <= s1 <= L, ld >= s1 - s0.
void indexer_scores_tile(const IndexerParams& p, int64_t t0, int64_t t1, int64_t s0, int64_t s1,
                         float* out, int64_t ld);

// Floats of workspace the overload below needs for a tile of `rows` query rows (the rows'
// queries transposed to heads-as-lanes, plus their head weights): rows * Hp * (D + 1) with
// Hp = H rounded up to a multiple of 16.
int64_t indexer_tile_workspace_floats(const IndexerParams& p, int64_t rows);

// As above with caller-owned workspace ([indexer_tile_workspace_floats(p, t1 - t0)] floats);
// allocates nothing. Same results.
void indexer_scores_tile(const IndexerParams& p, int64_t t0, int64_t t1, int64_t s0, int64_t s1,
                         float* out, int64_t ld, float* workspace);

}  // namespace indexshare::ops

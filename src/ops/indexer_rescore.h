// Reindex: a lightning indexer that scores only a given candidate set per query row, CPU.
//
// For row t with candidates c[t, 0 .. C) (positions, -1 = empty slot) whose keys sit at cache
// rows slot[t, j]:
//   I[t, j] = sum_h  w[t, h] * scale * ReLU(q[t, h, :] . k[slot[t, j], :])
// (dot product over d in order, then heads in order, all fp32; the AVX2 path fuses the
// multiply-adds, so it agrees with the scalar one to rounding), and the row keeps the k best
// candidates in the conventions of topk.h: descending score, ties by ascending position, -1
// padding when fewer than k candidates are valid, -inf never selected, NaN an Error naming the
// row and position. This is the selection of a reindex (R) layer (share/schedule.h): it re-scores
// the top-C candidates an F layer carried over, so its cost per row is O(C * H * D), not O(L).
// A candidate position may appear at most once per row (an Error otherwise: a duplicated key
// would be attended twice).
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct IndexerRescoreParams {
  const float* q = nullptr;          // [T, H, D]
  const float* weights = nullptr;    // [T, H]
  const float* keys = nullptr;       // [slots, D] the layer's indexer-K cache
  int64_t slots = 0;                 // rows of `keys`
  const int32_t* positions = nullptr;  // [T, C] candidate positions, -1 = empty
  const int32_t* cand_slots = nullptr; // [T, C] their cache rows (-1 where the position is -1)
  float scale = 1.0f;
  int64_t T = 0;
  int C = 0;
  int H = 0, D = 0;
  int k = 0;
  int32_t* out_positions = nullptr;  // [T, k]
  int32_t* out_slots = nullptr;      // [T, k], nullable
};

// Validates (Error naming the field: negative sizes, k > C, null pointers, a slot outside
// [0, slots) or -1 against a valid position, a repeated position) and runs, threads over rows.
void indexer_rescore(const IndexerRescoreParams& p);

}  // namespace indexshare::ops

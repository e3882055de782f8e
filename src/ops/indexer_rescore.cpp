#include "ops/indexer_rescore.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "ops/topk_select.h"

namespace indexshare::ops {

namespace {

// score[j] += scale * w_h * ReLU(q_h . k[slot[j]]) for the n candidates, one head; the dot runs
// over d in order. Scalar: the key rows as they lie in the cache.
void score_head_scalar(const float* q, float wh, const float* keys, int64_t D, const int32_t* slot, int64_t n,
                       float* score) {
  for (int64_t j = 0; j < n; ++j) {
    const float* k = keys + static_cast<int64_t>(slot[j]) * D;
    float dot = 0.0f;
    for (int64_t d = 0; d < D; ++d) dot += q[d] * k[d];
    score[j] += wh * std::max(dot, 0.0f);
  }
}

// AVX2: 8 candidates at a time, their keys gathered one dimension per step (fused multiply-adds,
// so the sums round slightly differently from the scalar path). off[j] = slot[j] * D (int32).
__attribute__((target("avx2,fma"))) void score_head_avx2(const float* q, float wh, const float* keys, int64_t D,
                                                         const int32_t* off, int64_t n, float* score) {
  const __m256 zero = _mm256_setzero_ps(), w = _mm256_set1_ps(wh);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i o = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(off + j));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; ++d)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), _mm256_i32gather_ps(keys + d, o, 4), acc);
    const __m256 sc = _mm256_loadu_ps(score + j);
    // max(0, acc) keeps a NaN acc (MAXPS returns its second operand when one is NaN).
    _mm256_storeu_ps(score + j, _mm256_fmadd_ps(w, _mm256_max_ps(zero, acc), sc));
  }
  for (; j < n; ++j) {
    const float* k = keys + off[j];
    float dot = 0.0f;
    for (int64_t d = 0; d < D; ++d) dot = std::fma(q[d], k[d], dot);
    score[j] = std::fma(wh, std::max(dot, 0.0f), score[j]);
  }
}

}  // namespace

void indexer_rescore(const IndexerRescoreParams& p) {
  IS_CHECK(p.T >= 0 && p.C >= 0 && p.k >= 0 && p.slots >= 0, "indexer_rescore: negative size (T ", p.T, ", C ", p.C,
           ", k ", p.k, ", slots ", p.slots, ")");
  IS_CHECK(p.H >= 1 && p.D >= 1, "indexer_rescore: H = ", p.H, " and D = ", p.D, " must be >= 1");
  IS_CHECK(p.k <= p.C, "indexer_rescore: k = ", p.k, " is more than the ", p.C, " candidates per row");
  IS_CHECK(std::isfinite(p.scale), "indexer_rescore: scale ", p.scale, " is not finite");
  if (p.T == 0 || p.k == 0) return;
  IS_CHECK(p.q && p.weights && p.keys && p.positions && p.cand_slots && p.out_positions,
           "indexer_rescore: a null pointer among q, weights, keys, positions, cand_slots, out_positions");
  const int64_t H = p.H, D = p.D, C = p.C, K = p.k;
  // AVX2 gathers take int32 element offsets.
  const bool simd = use_avx2() && p.slots * D < (int64_t{1} << 31);
  // Per row: the valid candidates, each scored over d in order (scalar: a plain dot product;
  // AVX2: 8 candidates at once, keys gathered); then the k largest composites (topk_select.h:
  // score first, lower position on ties), best first. slot_of[pos] maps a picked position back
  // to its slot and catches a position listed twice.
  parallel_for(p.T, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> score(static_cast<size_t>(C));
    std::vector<int32_t> pos(static_cast<size_t>(C)), slot(static_cast<size_t>(C)), slot_of;
    std::vector<uint64_t> comp(static_cast<size_t>(C)), tmp(static_cast<size_t>(C));
    for (int64_t t = t0; t < t1; ++t) {
      int64_t n = 0;
      for (int64_t j = 0; j < C; ++j) {
        const int32_t ps = p.positions[t * C + j], sl = p.cand_slots[t * C + j];
        if (ps < 0) continue;
        IS_CHECK(sl >= 0 && sl < p.slots, "indexer_rescore: row ", t, " candidate ", j, " (position ", ps,
                 ") has cache slot ", sl, " outside [0, ", p.slots, ")");
        if (static_cast<size_t>(ps) >= slot_of.size()) slot_of.resize(static_cast<size_t>(ps) + 1, -1);
        if (slot_of[static_cast<size_t>(ps)] >= 0) {
          for (int64_t i = 0; i < n; ++i) slot_of[static_cast<size_t>(pos[static_cast<size_t>(i)])] = -1;
          fail("indexer_rescore: row ", t, " lists position ", ps, " twice among its candidates");
        }
        slot_of[static_cast<size_t>(ps)] = sl;
        pos[static_cast<size_t>(n)] = ps;
        slot[static_cast<size_t>(n)] = simd ? static_cast<int32_t>(sl * D) : sl;
        ++n;
      }
      std::fill(score.begin(), score.begin() + n, 0.0f);
      for (int64_t h = 0; h < H; ++h) {
        const float* q = p.q + (t * H + h) * D;
        const float wh = p.weights[t * H + h] * p.scale;
        if (simd) {
          score_head_avx2(q, wh, p.keys, D, slot.data(), n, score.data());
        } else {
          score_head_scalar(q, wh, p.keys, D, slot.data(), n, score.data());
        }
      }
      int64_t m = 0;
      for (int64_t j = 0; j < n; ++j) {
        const float sc = score[static_cast<size_t>(j)];
        if (std::isnan(sc)) {
          for (int64_t i = 0; i < n; ++i) slot_of[static_cast<size_t>(pos[static_cast<size_t>(i)])] = -1;
          fail("indexer_rescore: NaN score in row ", t, " at position ", pos[static_cast<size_t>(j)]);
        }
        if (sc == -std::numeric_limits<float>::infinity()) continue;
        comp[static_cast<size_t>(m++)] = detail::make_composite(sc, pos[static_cast<size_t>(j)]);
      }
      int32_t* out = p.out_positions + t * K;
      detail::write_topk(comp.data(), m, K, out, tmp.data());
      if (p.out_slots)
        for (int64_t j = 0; j < K; ++j) p.out_slots[t * K + j] = out[j] < 0 ? -1 : slot_of[static_cast<size_t>(out[j])];
      for (int64_t j = 0; j < n; ++j) slot_of[static_cast<size_t>(pos[static_cast<size_t>(j)])] = -1;
    }
  });
}

}  // namespace indexshare::ops

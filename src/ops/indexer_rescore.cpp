#include "ops/indexer_rescore.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare::ops {

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
  struct Cand {
    float score;
    int32_t pos, slot;
  };
  parallel_for(p.T, 1, [&](int64_t t0, int64_t t1) {
    std::vector<Cand> cands(static_cast<size_t>(C));
    std::vector<int32_t> seen;
    for (int64_t t = t0; t < t1; ++t) {
      const float* q = p.q + t * H * D;
      const float* w = p.weights + t * H;
      int64_t n = 0;
      for (int64_t j = 0; j < C; ++j) {
        const int32_t pos = p.positions[t * C + j], slot = p.cand_slots[t * C + j];
        if (pos < 0) continue;
        IS_CHECK(slot >= 0 && slot < p.slots, "indexer_rescore: row ", t, " candidate ", j, " (position ", pos,
                 ") has cache slot ", slot, " outside [0, ", p.slots, ")");
        const float* k = p.keys + static_cast<int64_t>(slot) * D;
        float acc = 0.0f;
        for (int64_t h = 0; h < H; ++h) {
          float dot = 0.0f;
          for (int64_t d = 0; d < D; ++d) dot += q[h * D + d] * k[d];
          acc += w[h] * p.scale * std::max(dot, 0.0f);
        }
        IS_CHECK(!std::isnan(acc), "indexer_rescore: NaN score in row ", t, " at position ", pos);
        if (acc == -std::numeric_limits<float>::infinity()) continue;
        cands[static_cast<size_t>(n++)] = {acc, pos, slot};
      }
      seen.resize(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) seen[static_cast<size_t>(j)] = cands[static_cast<size_t>(j)].pos;
      std::sort(seen.begin(), seen.end());
      const auto dup = std::adjacent_find(seen.begin(), seen.end());
      IS_CHECK(dup == seen.end(), "indexer_rescore: row ", t, " lists position ", dup == seen.end() ? -1 : *dup,
               " twice among its candidates");
      const int64_t m = std::min(n, K);
      // -0.0 == +0.0 compare equal, so they tie and the position decides (topk.h).
      std::partial_sort(cands.begin(), cands.begin() + m, cands.begin() + n, [](const Cand& a, const Cand& b) {
        return a.score > b.score || (a.score == b.score && a.pos < b.pos);
      });
      for (int64_t j = 0; j < K; ++j) {
        const bool ok = j < m;
        p.out_positions[t * K + j] = ok ? cands[static_cast<size_t>(j)].pos : -1;
        if (p.out_slots) p.out_slots[t * K + j] = ok ? cands[static_cast<size_t>(j)].slot : -1;
      }
    }
  });
}

}  // namespace indexshare::ops

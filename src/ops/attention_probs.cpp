#include "ops/attention_probs.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/vec.h"

namespace indexshare::ops {

void attention_probs(const AttentionProbsParams& p) {
  IS_CHECK(p.T >= 0 && p.L >= 0 && p.q_start >= 0, "attention_probs: negative T, L or q_start");
  IS_CHECK(p.H > 0 && p.H_kv > 0 && p.D > 0 && p.H % p.H_kv == 0, "attention_probs: bad heads H=", p.H,
           " H_kv=", p.H_kv, " or D=", p.D);
  const int64_t ld = p.ldp > 0 ? p.ldp : p.L;
  IS_CHECK(ld >= p.L, "attention_probs: ldp ", ld, " < L ", p.L);
  if (p.T == 0) return;
  IS_CHECK(p.q && p.P && (p.L == 0 || p.k), "attention_probs: null q, k or P");
  const int group = p.H / p.H_kv;
  const float inv_h = 1.0f / static_cast<float>(p.H);
  parallel_for(p.T, 1, [&](int64_t b, int64_t e) {
    std::vector<float> s(static_cast<size_t>(p.L));
    for (int64_t t = b; t < e; ++t) {
      float* row = p.P + t * ld;
      std::fill(row, row + p.L, 0.0f);
      const int64_t n = std::min(p.L, p.q_start + t + 1);
      for (int h = 0; h < p.H; ++h) {
        const float* qh = p.q + (t * p.H + h) * p.D;
        const int kv = h / group;
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          s[static_cast<size_t>(j)] = p.scale * dot(qh, p.k + (j * p.H_kv + kv) * p.D, p.D);
          mx = std::max(mx, s[static_cast<size_t>(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) sum += (s[static_cast<size_t>(j)] = std::exp(s[static_cast<size_t>(j)] - mx));
        const float w = inv_h / sum;
        for (int64_t j = 0; j < n; ++j) row[j] += w * s[static_cast<size_t>(j)];
      }
    }
  });
}

}  // namespace indexshare::ops

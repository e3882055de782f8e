#include "ops/attention_probs.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/attention_kernels.h"
#include "ops/vec.h"

namespace indexshare::ops {

namespace {

#define IS_AVX2 __attribute__((target("avx2,fma")))

// s[h * n + j] = scale * q[h] . k[j * kstride] for the G query heads of one KV group (q rows of D
// floats, consecutive) and keys j < n. D % 8 == 0; keys are read once for all G heads.
IS_AVX2 void group_scores_avx2(const float* q, int G, int D, const float* k, int64_t kstride, int64_t n, float scale,
                               float* s) {
  for (int h0 = 0; h0 < G; h0 += 4) {
    const int hn = std::min(4, G - h0);
    for (int64_t j = 0; j < n; ++j) {
      const float* kj = k + j * kstride;
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int d = 0; d < D; d += 8) {
        const __m256 kv = _mm256_loadu_ps(kj + d);
        for (int h = 0; h < hn; ++h) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (h0 + h) * D + d), kv, acc[h]);
      }
      for (int h = 0; h < hn; ++h) {
        const __m128 lo = _mm256_castps256_ps128(acc[h]), hi = _mm256_extractf128_ps(acc[h], 1);
        __m128 v = _mm_add_ps(lo, hi);
        v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        v = _mm_add_ss(v, _mm_movehdup_ps(v));
        s[(h0 + h) * n + j] = scale * _mm_cvtss_f32(v);
      }
    }
  }
}

void group_scores_scalar(const float* q, int G, int D, const float* k, int64_t kstride, int64_t n, float scale,
                         float* s) {
  for (int h = 0; h < G; ++h)
    for (int64_t j = 0; j < n; ++j) s[h * n + j] = scale * dot(q + h * D, k + j * kstride, D);
}

}  // namespace

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
  const bool simd = use_avx2() && p.D % 8 == 0;
  parallel_for(p.T, 1, [&](int64_t b, int64_t e) {
    std::vector<float> s(static_cast<size_t>(group) * static_cast<size_t>(p.L));
    for (int64_t t = b; t < e; ++t) {
      float* row = p.P + t * ld;
      std::fill(row, row + p.L, 0.0f);
      const int64_t n = std::min(p.L, p.q_start + t + 1);
      if (n == 0) continue;
      for (int g = 0; g < p.H_kv; ++g) {
        const float* qg = p.q + (t * p.H + g * group) * p.D;
        const float* kg = p.k + g * p.D;
        const int64_t kstride = int64_t{p.H_kv} * p.D;
        if (simd) {
          group_scores_avx2(qg, group, p.D, kg, kstride, n, p.scale, s.data());
        } else {
          group_scores_scalar(qg, group, p.D, kg, kstride, n, p.scale, s.data());
        }
        for (int h = 0; h < group; ++h) {
          float* sh = s.data() + static_cast<int64_t>(h) * n;
          float mx = -INFINITY;
          for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sh[j]);
          const float sum = detail::exp_sum(sh, static_cast<int>(n), mx);
          const float w = inv_h / sum;
          for (int64_t j = 0; j < n; ++j) row[j] += w * sh[j];
        }
      }
    }
  });
}

}  // namespace indexshare::ops

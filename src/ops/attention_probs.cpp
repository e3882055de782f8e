#include "ops/attention_probs.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/vec.h"

// Bitwise contract: every probability is what the plain loop below (scores_plain, then the
// sequential exp / sum and row += w * s) computes with ops::dot. The AVX2 path only reorders
// work *between* independent scalars (keys, heads of a KV group), never the operations that
// produce one of them; this file is compiled with -ffp-contract=off (CMakeLists.txt) so that
// `row += w * s` stays a multiply then an add in both paths. Distillation captures its
// targets with this function, so the committed indexer files depend on that contract.

namespace indexshare::ops {
namespace {

// s[j] = scale * dot(q, k_j) for j < n (key j at k + j * ldk); returns max(mx, max_j s[j]).
float scores_plain(const float* q, const float* k, int64_t ldk, int D, int64_t n, float scale, float* s,
                   float mx) {
  for (int64_t j = 0; j < n; ++j) {
    s[j] = scale * dot(q, k + j * ldk, D);
    mx = std::max(mx, s[j]);
  }
  return mx;
}

#define IS_AVX2 __attribute__((target("avx2,fma")))

// Four keys at once, each with exactly ops::dot's AVX2 arithmetic for n = D (D % 8 == 0):
// acc0 / acc1 take the two halves of every 16-float chunk by fused multiply-add from zero, an
// 8-float tail goes to acc0, then acc = acc0 + acc1, its 128-bit halves are added and the four
// lanes l0..l3 are reduced as (l0 + l2) + (l1 + l3). The 4x4 transpose puts lane i of the four
// keys in one vector, so the last two adds run for the four keys together.
IS_AVX2 inline __m128 dot4(const float* q, const float* k0, int64_t ldk, int D) {
  __m256 a0[4], a1[4];
  for (int c = 0; c < 4; ++c) a0[c] = a1[c] = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= D; i += 16) {
    const __m256 qa = _mm256_loadu_ps(q + i), qb = _mm256_loadu_ps(q + i + 8);
    for (int c = 0; c < 4; ++c) {
      a0[c] = _mm256_fmadd_ps(qa, _mm256_loadu_ps(k0 + c * ldk + i), a0[c]);
      a1[c] = _mm256_fmadd_ps(qb, _mm256_loadu_ps(k0 + c * ldk + i + 8), a1[c]);
    }
  }
  if (i + 8 <= D) {
    const __m256 qa = _mm256_loadu_ps(q + i);
    for (int c = 0; c < 4; ++c) a0[c] = _mm256_fmadd_ps(qa, _mm256_loadu_ps(k0 + c * ldk + i), a0[c]);
  }
  __m128 l[4];
  for (int c = 0; c < 4; ++c) {
    const __m256 acc = _mm256_add_ps(a0[c], a1[c]);
    l[c] = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  }
  _MM_TRANSPOSE4_PS(l[0], l[1], l[2], l[3]);  // l[i] = lane i of keys 0..3
  return _mm_add_ps(_mm_add_ps(l[0], l[2]), _mm_add_ps(l[1], l[3]));
}

IS_AVX2 float scores_avx2(const float* q, const float* k, int64_t ldk, int D, int64_t n, float scale, float* s,
                          float mx) {
  const __m128 sc = _mm_set1_ps(scale);
  __m128 m4 = _mm_set1_ps(mx);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m128 v = _mm_mul_ps(sc, dot4(q, k + j * ldk, ldk, D));
    _mm_storeu_ps(s + j, v);
    m4 = _mm_max_ps(m4, v);
  }
  alignas(16) float m[4];
  _mm_store_ps(m, m4);
  mx = std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
  return scores_plain(q, k + j * ldk, ldk, D, n - j, scale, s + j, mx);  // the last n % 4 keys
}

// row[j] += w * s[j], a multiply then an add per element (no fusion: see the top of the file).
IS_AVX2 void accumulate_avx2(float* row, const float* s, int64_t n, float w) {
  const __m256 w8 = _mm256_set1_ps(w);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(row + j, _mm256_add_ps(_mm256_loadu_ps(row + j), _mm256_mul_ps(w8, _mm256_loadu_ps(s + j))));
  for (; j < n; ++j) row[j] += w * s[j];
}

#undef IS_AVX2

// Blocking: kRowBlock rows x a KV group's heads score one block of kKeyBlock keys while it sits
// in L1 (64 keys of D = 64 floats = 16 KiB), instead of every (row, head) streaming all keys
// from L3.
constexpr int64_t kKeyBlock = 64;
constexpr int64_t kRowBlock = 4;

}  // namespace

void attention_probs(const AttentionProbsParams& p) {
  IS_CHECK(p.T >= 0 && p.L >= 0 && p.q_start >= 0, "attention_probs: negative T, L or q_start");
  IS_CHECK(p.H > 0 && p.H_kv > 0 && p.D > 0 && p.H % p.H_kv == 0, "attention_probs: bad heads H=", p.H,
           " H_kv=", p.H_kv, " or D=", p.D);
  const int64_t ld = p.ldp > 0 ? p.ldp : p.L;
  IS_CHECK(ld >= p.L, "attention_probs: ldp ", ld, " < L ", p.L);
  const int64_t ldq = p.ldq > 0 ? p.ldq : int64_t{p.H} * p.D;
  IS_CHECK(ldq >= int64_t{p.H} * p.D, "attention_probs: ldq ", ldq, " < H * D ", int64_t{p.H} * p.D);
  if (p.T == 0) return;
  if (p.pos) {
    for (int64_t t = 0; t < p.T; ++t)
      IS_CHECK(p.pos[t] >= 0, "attention_probs: row ", t, " has negative position ", p.pos[t]);
  }
  if (p.L == 0) return;  // no columns to write
  IS_CHECK(p.q && p.P && p.k, "attention_probs: null q, k or P");
  IS_CHECK(p.max_weight >= 0.0f && p.max_weight <= 1.0f, "attention_probs: max_weight ", p.max_weight,
           " is outside [0, 1]");
  // w = 1: the maximum is gathered in the row itself; 0 < w < 1: beside the mean, in xm.
  const bool only_max = p.max_weight == 1.0f, blend = p.max_weight > 0.0f && !only_max;
  const int group = p.H / p.H_kv;
  const int64_t ldk = int64_t{p.H_kv} * p.D;
  const float inv_h = 1.0f / static_cast<float>(p.H);
  const bool simd = use_avx2() && p.D % 8 == 0;
  parallel_for(p.T, 1, [&](int64_t b, int64_t e) {
    // Scores of one row block's heads of one KV group: [rows, group, L].
    std::vector<float> s(static_cast<size_t>(kRowBlock * group) * static_cast<size_t>(p.L));
    std::vector<float> mx(static_cast<size_t>(kRowBlock * group));
    std::vector<float> xm(blend ? static_cast<size_t>(kRowBlock) * static_cast<size_t>(p.L) : 0);
    for (int64_t tb = b; tb < e; tb += kRowBlock) {
      const int64_t R = std::min(kRowBlock, e - tb);
      int64_t n[kRowBlock], nmax = 0;
      for (int64_t r = 0; r < R; ++r) {
        const int64_t t = tb + r;
        n[r] = std::min(p.L, (p.pos ? p.pos[t] : p.q_start + t) + 1);
        nmax = std::max(nmax, n[r]);
        std::fill(p.P + t * ld, p.P + t * ld + p.L, 0.0f);
      }
      std::fill(xm.begin(), xm.end(), 0.0f);
      for (int kv = 0; kv < p.H_kv; ++kv) {
        const float* kh = p.k + int64_t{kv} * p.D;
        std::fill(mx.begin(), mx.end(), -INFINITY);
        // Every (row, head) of the block scores one block of keys while it is in L1.
        for (int64_t j0 = 0; j0 < nmax; j0 += kKeyBlock) {
          for (int64_t r = 0; r < R; ++r) {
            const int64_t nb = std::min(kKeyBlock, n[r] - j0);
            if (nb <= 0) continue;
            for (int g = 0; g < group; ++g) {
              const float* qh = p.q + (tb + r) * ldq + int64_t{kv * group + g} * p.D;
              const size_t i = static_cast<size_t>(r * group + g);
              float* sg = s.data() + i * static_cast<size_t>(p.L) + j0;
              mx[i] = (simd ? scores_avx2 : scores_plain)(qh, kh + j0 * ldk, ldk, p.D, nb, p.scale, sg, mx[i]);
            }
          }
        }
        // Softmax of each head in ascending head order, added to its row.
        for (int64_t r = 0; r < R; ++r) {
          float* row = p.P + (tb + r) * ld;
          for (int g = 0; g < group; ++g) {
            const size_t i = static_cast<size_t>(r * group + g);
            float* sg = s.data() + i * static_cast<size_t>(p.L);
            const float m = mx[i];
            float sum = 0.0f;
            for (int64_t j = 0; j < n[r]; ++j) sum += (sg[j] = std::exp(sg[j] - m));
            if (only_max || blend) {
              const float w = 1.0f / sum;
              float* dst = only_max ? row : xm.data() + r * p.L;
              for (int64_t j = 0; j < n[r]; ++j) dst[j] = std::max(dst[j], w * sg[j]);
              if (only_max) continue;
            }
            const float w = inv_h / sum;
            if (simd) {
              accumulate_avx2(row, sg, n[r], w);
            } else {
              for (int64_t j = 0; j < n[r]; ++j) row[j] += w * sg[j];
            }
          }
        }
      }
      if (only_max) {  // renormalise each row of the block (sequential sum: thread-count independent)
        for (int64_t r = 0; r < R; ++r) {
          float* row = p.P + (tb + r) * ld;
          float sum = 0.0f;
          for (int64_t j = 0; j < n[r]; ++j) sum += row[j];
          const float w = 1.0f / sum;
          for (int64_t j = 0; j < n[r]; ++j) row[j] *= w;
        }
      } else if (blend) {  // (1 - w) mean + w renormalised max
        for (int64_t r = 0; r < R; ++r) {
          float* row = p.P + (tb + r) * ld;
          const float* m = xm.data() + r * p.L;
          float sum = 0.0f;
          for (int64_t j = 0; j < n[r]; ++j) sum += m[j];
          const float a = 1.0f - p.max_weight, b = p.max_weight / sum;
          for (int64_t j = 0; j < n[r]; ++j) row[j] = a * row[j] + b * m[j];
        }
      }
    }
  });
}

}  // namespace indexshare::ops

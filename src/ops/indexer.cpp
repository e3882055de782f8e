// Lightning-indexer scores: a small GEMM q[T*H, D] x k[L, D]^T fused with ReLU, the head
// weights and the sum over heads.
//
// AVX2 path, heads as lanes: each query row is transposed once per tile to qT[d][Hp] (heads
// padded to a multiple of 16 with zero q and zero weight), so one pass over d loads 16 heads
// (two vectors) and broadcasts k[s, d] of 6 keys read straight from the cache layout; the 12
// dot-product vectors stay in registers. Then, per key, lane l of a partial-sum vector gathers
//   part = fma(max(0, dot), w', part)   over heads l, l + 8, l + 16, ... in that order,
// and the score is a fixed-tree sum of the 8 lanes, times k_scale. Keys are never packed, so
// decode (T = 1) pays no packing cost; on the first row of a chunk the keys are prefetched
// a few micro-tiles ahead (they stream from L3 / DRAM). Every key runs the same instruction
// sequence whatever the tile, chunk or micro-tile width it falls in, which is what makes the scores
// independent of tiling and threading. The scalar fallback sums heads in order h = 0..H-1.
#include "ops/indexer.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/aligned_buffer.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare::ops {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kHeadBlock = 16;  // heads per micro-kernel (two AVX2 vectors of lanes)
constexpr int kKeysPerTile = 6;     // keys per micro-kernel (2 x 6 = 12 accumulators)
constexpr int64_t kKeyChunk = 256;  // keys visited by all rows of a tile before moving on
constexpr int64_t kRowBlock = 16;   // indexer_scores: query rows per work item
constexpr int64_t kKeyTile = 2048;  // indexer_scores: keys per work item

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Keys [0, visible_end) are visible to row t.
int64_t visible_end(const IndexerParams& p, int64_t t) { return std::min(p.L, p.q_start + t + 1); }

void head_weights(const IndexerParams& p, int64_t t, float* w) {
  const float* wt = p.weights + t * p.H;
  const float* qs = p.q_scale ? p.q_scale + t * p.H : nullptr;
  for (int h = 0; h < p.H; ++h) {
    float v = wt[h] * p.scale;
    if (qs) v *= qs[h];
    w[h] = v;
  }
}

// ReLU that keeps NaN (and -0.0), like _mm256_max_ps(0, x).
inline float relu(float x) { return x < 0.0f ? 0.0f : x; }

void tile_scalar(const IndexerParams& p, int64_t t0, int64_t t1, int64_t s0, int64_t s1, float* out,
                 int64_t ld, float* wbuf) {
  const int64_t D = p.D;
  for (int64_t t = t0; t < t1; ++t) {
    float* o = out + (t - t0) * ld - s0;  // o[s] for s in [s0, s1)
    const int64_t e = std::clamp(visible_end(p, t), s0, s1);
    head_weights(p, t, wbuf);
    for (int64_t s = s0; s < e; ++s) o[s] = 0.0f;
    for (int h = 0; h < p.H; ++h) {
      const float* qh = p.q + (t * p.H + h) * D;
      const float w = wbuf[h];
      for (int64_t s = s0; s < e; ++s) {
        const float* ks = p.k + s * D;
        float dot = 0.0f;
        for (int64_t d = 0; d < D; ++d) dot += qh[d] * ks[d];
        o[s] += relu(dot) * w;
      }
    }
    if (p.k_scale)
      for (int64_t s = s0; s < e; ++s) o[s] *= p.k_scale[s];
    for (int64_t s = e; s < s1; ++s) o[s] = kNegInf;
  }
}

// Rows [t0, t1) of q transposed to heads-as-lanes, qT[t - t0][d][Hp] (heads padded to Hp with
// zeros), and their head weights wT[t - t0][Hp] (zero for the padding heads).
void pack_queries(const IndexerParams& p, int64_t t0, int64_t t1, int64_t Hp, float* qT,
                  float* wT) {
  const int64_t D = p.D;
  for (int64_t t = t0; t < t1; ++t) {
    float* qt = qT + (t - t0) * D * Hp;
    float* wt = wT + (t - t0) * Hp;
    head_weights(p, t, wt);
    for (int64_t h = p.H; h < Hp; ++h) wt[h] = 0.0f;
    for (int64_t d = 0; d < D; ++d)
      for (int64_t h = p.H; h < Hp; ++h) qt[d * Hp + h] = 0.0f;
    for (int h = 0; h < p.H; ++h) {
      const float* src = p.q + (t * p.H + h) * D;
      for (int64_t d = 0; d < D; ++d) qt[d * Hp + h] = src[d];
    }
  }
}

// NK keys (rows of k, stride D) against 16 heads (two vectors of qT, row stride Hp): the dot
// products stay in 2 * NK registers over d, then part[i] += max(0, dot) * w, lane by lane.
template <int NK>
__attribute__((target("avx2,fma"))) inline void micro_kernel(const float* qT, int64_t Hp,
                                                             const float* k, int64_t D,
                                                             const float* w, __m256* part) {
  __m256 c0[NK], c1[NK];
#pragma GCC unroll 6
  for (int i = 0; i < NK; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    const __m256 a0 = _mm256_loadu_ps(qT + d * Hp);
    const __m256 a1 = _mm256_loadu_ps(qT + d * Hp + 8);
#pragma GCC unroll 6
    for (int i = 0; i < NK; ++i) {
      const __m256 b = _mm256_broadcast_ss(k + i * D + d);
      c0[i] = _mm256_fmadd_ps(a0, b, c0[i]);
      c1[i] = _mm256_fmadd_ps(a1, b, c1[i]);
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
#pragma GCC unroll 6
  for (int i = 0; i < NK; ++i) {
    part[i] = _mm256_fmadd_ps(_mm256_max_ps(zero, c0[i]), w0, part[i]);
    part[i] = _mm256_fmadd_ps(_mm256_max_ps(zero, c1[i]), w1, part[i]);
  }
}

// Fixed-order sum of the 8 lanes: (l + l4), then pairs, then the last two.
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) void tile_avx2(const IndexerParams& p, int64_t t0, int64_t t1,
                                                   int64_t s0, int64_t s1, float* out, int64_t ld,
                                                   float* ws) {
  const int64_t D = p.D;
  const int64_t Hp = round_up(p.H, kHeadBlock);
  float* qT = ws;
  float* wT = ws + (t1 - t0) * D * Hp;
  pack_queries(p, t0, t1, Hp, qT, wT);
  for (int64_t c0 = s0; c0 < s1; c0 += kKeyChunk) {
    const int64_t c1 = std::min(s1, c0 + kKeyChunk);
    for (int64_t t = t0; t < t1; ++t) {
      float* o = out + (t - t0) * ld - s0;  // o[s] for s in [s0, s1)
      const int64_t e = std::clamp(visible_end(p, t), c0, c1);
      const float* qt = qT + (t - t0) * D * Hp;
      const float* wt = wT + (t - t0) * Hp;
      for (int64_t s = c0; s < e; s += kKeysPerTile) {
        const int nk = static_cast<int>(std::min<int64_t>(kKeysPerTile, e - s));
        const float* ks = p.k + s * D;
        if (t == t0) {
          // First pass over the chunk: the keys come from L3 / DRAM; fetch four micro-tiles ahead.
          const int64_t ahead = std::min(p.L, s + 5 * kKeysPerTile) - (s + 4 * kKeysPerTile);
          const char* pf = reinterpret_cast<const char*>(ks + 4 * kKeysPerTile * D);
          for (int64_t b = 0; b < ahead * D * 4; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
        }
        __m256 part[kKeysPerTile];
        for (__m256& v : part) v = _mm256_setzero_ps();
        for (int64_t h = 0; h < Hp; h += kHeadBlock) {
          switch (nk) {
            case 1:
              micro_kernel<1>(qt + h, Hp, ks, D, wt + h, part);
              break;
            case 2:
              micro_kernel<2>(qt + h, Hp, ks, D, wt + h, part);
              break;
            case 3:
              micro_kernel<3>(qt + h, Hp, ks, D, wt + h, part);
              break;
            case 4:
              micro_kernel<4>(qt + h, Hp, ks, D, wt + h, part);
              break;
            case 5:
              micro_kernel<5>(qt + h, Hp, ks, D, wt + h, part);
              break;
            default:
              micro_kernel<6>(qt + h, Hp, ks, D, wt + h, part);
              break;
          }
        }
        for (int i = 0; i < nk; ++i) {
          const float v = hsum(part[i]);
          o[s + i] = p.k_scale ? v * p.k_scale[s + i] : v;
        }
      }
      for (int64_t s = e; s < c1; ++s) o[s] = kNegInf;
    }
  }
}

void tile_dispatch(const IndexerParams& p, int64_t t0, int64_t t1, int64_t s0, int64_t s1,
                   float* out, int64_t ld, float* ws, bool simd) {
  if (t0 >= t1 || s0 >= s1) return;
  if (simd) {
    tile_avx2(p, t0, t1, s0, s1, out, ld, ws);
  } else {
    tile_scalar(p, t0, t1, s0, s1, out, ld, ws);
  }
}

void check_tile(const IndexerParams& p, int64_t t0, int64_t t1, int64_t s0, int64_t s1,
                const float* out, int64_t ld) {
  validate(p);
  IS_CHECK(0 <= t0 && t0 <= t1 && t1 <= p.T, "indexer_scores_tile: rows [", t0, ", ", t1,
           ") are not inside [0, T = ", p.T, ")");
  IS_CHECK(0 <= s0 && s0 <= s1 && s1 <= p.L, "indexer_scores_tile: keys [", s0, ", ", s1,
           ") are not inside [0, L = ", p.L, ")");
  IS_CHECK(ld >= s1 - s0, "indexer_scores_tile: ld = ", ld, " is smaller than the tile width ",
           s1 - s0);
  IS_CHECK(out != nullptr || t0 == t1 || s0 == s1, "indexer_scores_tile: out is null");
}

}  // namespace

void validate(const IndexerParams& p) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  IS_CHECK(p.T >= 0, "indexer: T = ", p.T, " is negative");
  IS_CHECK(p.L >= 0, "indexer: L = ", p.L, " is negative");
  IS_CHECK(p.H >= 1, "indexer: H = ", p.H, " must be >= 1");
  IS_CHECK(p.D >= 1, "indexer: D = ", p.D, " must be >= 1");
  IS_CHECK(p.q_start >= 0, "indexer: q_start = ", p.q_start, " is negative");
  IS_CHECK(p.q_start <= kMax - p.T - 1, "indexer: q_start + T overflows (q_start = ", p.q_start,
           ")");
  IS_CHECK(p.T <= kMax / p.H / p.D, "indexer: T * H * D overflows (T = ", p.T, ")");
  IS_CHECK(p.L <= kMax / p.D, "indexer: L * D overflows (L = ", p.L, ")");
  IS_CHECK(std::isfinite(p.scale), "indexer: scale = ", p.scale, " is not finite");
  IS_CHECK(p.q != nullptr || p.T == 0, "indexer: q is null (T = ", p.T, ")");
  IS_CHECK(p.weights != nullptr || p.T == 0, "indexer: weights is null (T = ", p.T, ")");
  IS_CHECK(p.k != nullptr || p.L == 0, "indexer: k is null (L = ", p.L, ")");
}

int64_t indexer_tile_workspace_floats(const IndexerParams& p, int64_t rows) {
  const int64_t hp = round_up(std::max(p.H, 1), kHeadBlock);
  return std::max<int64_t>(rows, 1) * hp * (std::max(p.D, 1) + 1);
}

void indexer_scores_tile(const IndexerParams& p, int64_t t0, int64_t t1, int64_t s0, int64_t s1,
                         float* out, int64_t ld, float* workspace) {
  check_tile(p, t0, t1, s0, s1, out, ld);
  IS_CHECK(workspace != nullptr || t0 == t1 || s0 == s1, "indexer_scores_tile: workspace is null");
  tile_dispatch(p, t0, t1, s0, s1, out, ld, workspace, use_avx2());
}

void indexer_scores_tile(const IndexerParams& p, int64_t t0, int64_t t1, int64_t s0, int64_t s1,
                         float* out, int64_t ld) {
  check_tile(p, t0, t1, s0, s1, out, ld);
  if (t0 >= t1 || s0 >= s1) return;
  AlignedBuffer<float> ws(static_cast<size_t>(indexer_tile_workspace_floats(p, t1 - t0)));
  tile_dispatch(p, t0, t1, s0, s1, out, ld, ws.data(), use_avx2());
}

void indexer_scores(const IndexerParams& p, float* scores) {
  validate(p);
  IS_CHECK(scores != nullptr || p.T == 0 || p.L == 0, "indexer_scores: scores is null");
  if (p.T == 0 || p.L == 0) return;
  const int64_t nrb = (p.T + kRowBlock - 1) / kRowBlock;
  const int64_t nkt = (p.L + kKeyTile - 1) / kKeyTile;
  const int64_t items = nrb * nkt;
  const int64_t parts = std::min<int64_t>(num_threads(), items);
  const bool simd = use_avx2();
  const size_t ws_floats =
      static_cast<size_t>(indexer_tile_workspace_floats(p, std::min(p.T, kRowBlock)));
  // Items are dealt round-robin so that causal prefill (cheap masked tiles late in each row
  // block) stays balanced; each item's scores do not depend on who computes them.
  parallel_for(parts, 1, [&](int64_t b, int64_t e) {
    AlignedBuffer<float> ws(ws_floats);
    for (int64_t part = b; part < e; ++part) {
      for (int64_t it = part; it < items; it += parts) {
        const int64_t t0 = it / nkt * kRowBlock, s0 = it % nkt * kKeyTile;
        const int64_t t1 = std::min(p.T, t0 + kRowBlock), s1 = std::min(p.L, s0 + kKeyTile);
        tile_dispatch(p, t0, t1, s0, s1, scores + t0 * p.L + s0, p.L, ws.data(), simd);
      }
    }
  });
}

}  // namespace indexshare::ops

#include "ops/attention_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare::ops::detail {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// The per-block building blocks; one scalar and one AVX2 set per key element type E (float or
// IEEE half as uint16_t). Every one of them computes each output element from its own inputs
// in a fixed order, whatever the tile shape.
template <class E>
struct Kernels {
  // s[a * ld + j] = scale * q[a] . k[j] for a < nq, j < nk; meanwhile prefetches `bytes`
  // from each of pf[0, npf) (the rows of the next step) when the kernel can.
  void (*scores)(const float* const* q, int nq, const E* const* k, int nk, int D,
                 float scale, float* s, int ld, const char* const* pf, int npf, int bytes);
  // Max of x[0, n); NaN if any element is NaN.
  float (*row_max)(const float* x, int n);
  // x[j] = exp(x[j] - m) for j < n; returns the sum.
  float (*exp_sum)(float* x, int n, float m);
  // o[a][0, D) *= c[a].
  void (*rescale)(float* const* o, int nq, const float* c, int D);
  // o[a][d] += sum_{j < cnt[a]} p[a * ld + j] * v[j][d], j ascending.
  void (*pv)(float* const* o, int nq, const float* p, int ld, const int* cnt,
             const E* const* v, int D);
};

inline float widen(float x) { return x; }
inline float widen(uint16_t x) { return f16_to_f32(x); }

// ---- scalar ----------------------------------------------------------------------------

template <class E>
void scores_scalar(const float* const* q, int nq, const E* const* k, int nk, int D,
                   float scale, float* s, int ld, const char* const*, int, int) {
  for (int a = 0; a < nq; ++a) {
    for (int j = 0; j < nk; ++j) {
      float acc = 0.0f;
      for (int d = 0; d < D; ++d) acc += q[a][d] * widen(k[j][d]);
      s[a * ld + j] = acc * scale;
    }
  }
}

float row_max_scalar(const float* x, int n) {
  float m = kNegInf;
  for (int j = 0; j < n; ++j) {
    if (std::isnan(x[j])) return kNaN;
    m = std::max(m, x[j]);
  }
  return m;
}

float exp_sum_scalar(float* x, int n, float m) {
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) {
    x[j] = std::exp(x[j] - m);
    sum += x[j];
  }
  return sum;
}

void rescale_scalar(float* const* o, int nq, const float* c, int D) {
  for (int a = 0; a < nq; ++a) {
    if (c[a] == 1.0f) continue;
    for (int d = 0; d < D; ++d) o[a][d] *= c[a];
  }
}

template <class E>
void pv_scalar(float* const* o, int nq, const float* p, int ld, const int* cnt,
               const E* const* v, int D) {
  for (int a = 0; a < nq; ++a) {
    for (int j = 0; j < cnt[a]; ++j) {
      const float w = p[a * ld + j];
      for (int d = 0; d < D; ++d) o[a][d] += w * widen(v[j][d]);
    }
  }
}

template <class E>
constexpr Kernels<E> kScalar{scores_scalar<E>, row_max_scalar, exp_sum_scalar, rescale_scalar,
                             pv_scalar<E>};

// ---- AVX2 + FMA ------------------------------------------------------------------------

#define IS_AVX2 __attribute__((target("avx2,fma,f16c")))

// Eight elements at p as f32; the masked form reads only lanes [0, rem) (mask = lane_mask(rem))
// and zeroes the others.
IS_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
IS_AVX2 inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
IS_AVX2 inline __m256 load8_masked(const float* p, __m256i mask, int) {
  return _mm256_maskload_ps(p, mask);
}
IS_AVX2 inline __m256 load8_masked(const uint16_t* p, __m256i, int rem) {
  alignas(16) uint16_t h[8] = {};
  for (int i = 0; i < rem; ++i) h[i] = p[i];
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
}

IS_AVX2 inline float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 0x55));
  return _mm_cvtss_f32(x);
}

IS_AVX2 inline float hmax(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 0x55));
  return _mm_cvtss_f32(x);
}

// Lanes [0, n) set, n in [0, 8].
IS_AVX2 inline __m256i lane_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// exp(x) for x <= 0 (the max-subtracted logits); exp(x) < 2^-125 flushes to 0, NaN stays NaN.
// Range reduction x = n ln2 + r, |r| <= ln2 / 2, then the degree-7 Taylor polynomial of e^r
// (truncation error < 1e-8 relative), scaled by 2^n through the exponent field.
IS_AVX2 inline __m256 exp_nonpos(__m256 x) {
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(0.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln 2 split so that n * kLn2Hi is exact for |n| < 2^15.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440054690583e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  y = _mm256_andnot_ps(tiny, y);
  return _mm256_blendv_ps(y, x, nan);
}

// Sums of each of a[0, 8), lane i = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)) of a[i]:
// one fixed tree per accumulator, whatever the other accumulators hold.
IS_AVX2 inline __m256 reduce8(const __m256* a) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Dot products of NH queries with NJ keys; each (query, key) pair owns one accumulator, runs
// over d in the same order and is reduced by the same tree for every tile shape.
template <int NH, int NJ, class E>
IS_AVX2 inline void dot_tile(const float* const* q, const E* const* k, int D, __m256i tail,
                      float scale, float* s, int ld) {
  static_assert(NH * NJ <= 8);
  __m256 acc[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
  const int dfull = D & ~7;
  int d = 0;
  for (; d < dfull; d += 8) {
    __m256 kv[NJ];
#pragma GCC unroll 4
    for (int j = 0; j < NJ; ++j) kv[j] = load8(k[j] + d);
#pragma GCC unroll 4
    for (int h = 0; h < NH; ++h) {
      const __m256 qv = _mm256_loadu_ps(q[h] + d);
#pragma GCC unroll 4
      for (int j = 0; j < NJ; ++j) acc[h * NJ + j] = _mm256_fmadd_ps(qv, kv[j], acc[h * NJ + j]);
    }
  }
  if (d < D) {
    __m256 kv[NJ];
#pragma GCC unroll 4
    for (int j = 0; j < NJ; ++j) kv[j] = load8_masked(k[j] + d, tail, D - d);
#pragma GCC unroll 4
    for (int h = 0; h < NH; ++h) {
      const __m256 qv = _mm256_maskload_ps(q[h] + d, tail);
#pragma GCC unroll 4
      for (int j = 0; j < NJ; ++j) acc[h * NJ + j] = _mm256_fmadd_ps(qv, kv[j], acc[h * NJ + j]);
    }
  }
  alignas(32) float r[8];
  _mm256_store_ps(r, _mm256_mul_ps(reduce8(acc), _mm256_set1_ps(scale)));
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h)
#pragma GCC unroll 4
    for (int j = 0; j < NJ; ++j) s[h * ld + j] = r[h * NJ + j];
}

template <class E>
using DotTileFn = void (*)(const float* const*, const E* const*, int, __m256i, float, float*,
                           int);
constexpr int kDotH = 4, kDotJ = 2;
template <class E>
constexpr DotTileFn<E> kDotTiles[kDotH][kDotJ] = {
    {dot_tile<1, 1, E>, dot_tile<1, 2, E>},
    {dot_tile<2, 1, E>, dot_tile<2, 2, E>},
    {dot_tile<3, 1, E>, dot_tile<3, 2, E>},
    {dot_tile<4, 1, E>, dot_tile<4, 2, E>},
};

template <class E>
IS_AVX2 void scores_avx2(const float* const* q, int nq, const E* const* k, int nk, int D,
                         float scale, float* s, int ld, const char* const* pf, int npf,
                         int bytes) {
  const __m256i tail = lane_mask(D & 7);
  // Queries in groups whose vectors stay in L1 (about 20 KiB) while the key rows of the block
  // (L2 resident after their first use) stream past them two at a time.
  const int group = std::max(kDotH, (20480 / (D * 4)) / kDotH * kDotH);
  const int tiles = (nk + kDotJ - 1) / kDotJ;
  for (int h0 = 0; h0 < nq; h0 += group) {
    const int h1 = std::min(nq, h0 + group);
    for (int j = 0; j < nk; j += kDotJ) {
      const int nj = std::min(kDotJ, nk - j);
      if (h0 == 0) {
        // The gathered rows of the next step, spread over this step's key tiles so that the
        // misses overlap the arithmetic.
        const int jt = j / kDotJ;
        const int r1 = j + kDotJ >= nk ? npf : (jt + 1) * npf / tiles;
        for (int r = jt * npf / tiles; r < r1; ++r) {
          for (int b = 0; b < bytes; b += 64) _mm_prefetch(pf[r] + b, _MM_HINT_T0);
        }
      }
      for (int h = h0; h < h1; h += kDotH) {
        const int nh = std::min(kDotH, h1 - h);
        if (nh == kDotH && nj == kDotJ) {  // the common case, inlined
          dot_tile<kDotH, kDotJ, E>(q + h, k + j, D, tail, scale, s + h * ld + j, ld);
        } else {
          kDotTiles<E>[nh - 1][nj - 1](q + h, k + j, D, tail, scale, s + h * ld + j, ld);
        }
      }
    }
  }
}

IS_AVX2 float row_max_avx2(const float* x, int n) {
  __m256 m = _mm256_set1_ps(kNegInf);
  __m256 nan = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  if (j < n) {
    const __m256i mask = lane_mask(n - j);
    const __m256 v = _mm256_blendv_ps(_mm256_set1_ps(kNegInf), _mm256_maskload_ps(x + j, mask),
                                      _mm256_castsi256_ps(mask));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  if (_mm256_movemask_ps(nan) != 0) return kNaN;
  return hmax(m);
}

IS_AVX2 float exp_sum_avx2(float* x, int n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 p = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
    _mm256_storeu_ps(x + j, p);
    sum = _mm256_add_ps(sum, p);
  }
  if (j < n) {
    const __m256i mask = lane_mask(n - j);
    __m256 p = exp_nonpos(_mm256_sub_ps(_mm256_maskload_ps(x + j, mask), vm));
    p = _mm256_and_ps(p, _mm256_castsi256_ps(mask));
    _mm256_maskstore_ps(x + j, mask, p);
    sum = _mm256_add_ps(sum, p);
  }
  return hsum(sum);
}

IS_AVX2 void rescale_avx2(float* const* o, int nq, const float* c, int D) {
  const __m256i tail = lane_mask(D & 7);
  for (int a = 0; a < nq; ++a) {
    if (c[a] == 1.0f) continue;
    const __m256 vc = _mm256_set1_ps(c[a]);
    float* x = o[a];
    int d = 0;
    for (; d + 8 <= D; d += 8) _mm256_storeu_ps(x + d, _mm256_mul_ps(_mm256_loadu_ps(x + d), vc));
    if (d < D) _mm256_maskstore_ps(x + d, tail, _mm256_mul_ps(_mm256_maskload_ps(x + d, tail), vc));
  }
}

// o[h][d, d + 8 NC) += sum_{j in [j0, j1)} p[h * ld + j] * v[j][d, ...) for NH queries; the
// last chunk is masked when kMask.
template <int NH, int NC, bool kMask, class E>
IS_AVX2 void pv_tile(float* const* o, const float* p, int ld, const E* const* v, int j0,
                     int j1, int d, __m256i mask, int rem) {
  __m256 acc[NH][NC];
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c)
      acc[h][c] = (kMask && c == NC - 1) ? _mm256_maskload_ps(o[h] + d + 8 * c, mask)
                                         : _mm256_loadu_ps(o[h] + d + 8 * c);
  for (int j = j0; j < j1; ++j) {
    __m256 vv[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c)
      vv[c] = (kMask && c == NC - 1) ? load8_masked(v[j] + d + 8 * c, mask, rem)
                                     : load8(v[j] + d + 8 * c);
#pragma GCC unroll 4
    for (int h = 0; h < NH; ++h) {
      const __m256 w = _mm256_broadcast_ss(p + h * ld + j);
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c) acc[h][c] = _mm256_fmadd_ps(w, vv[c], acc[h][c]);
    }
  }
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) {
      if (kMask && c == NC - 1) {
        _mm256_maskstore_ps(o[h] + d + 8 * c, mask, acc[h][c]);
      } else {
        _mm256_storeu_ps(o[h] + d + 8 * c, acc[h][c]);
      }
    }
}

template <class E>
using PvTileFn = void (*)(float* const*, const float*, int, const E* const*, int, int, int,
                          __m256i, int);
constexpr int kPvH = 4, kPvC = 3;
// [queries - 1][chunks - 1], plus a masked single chunk per query count.
template <class E>
constexpr PvTileFn<E> kPvTiles[kPvH][kPvC] = {
    {pv_tile<1, 1, false, E>, pv_tile<1, 2, false, E>, pv_tile<1, 3, false, E>},
    {pv_tile<2, 1, false, E>, pv_tile<2, 2, false, E>, pv_tile<2, 3, false, E>},
    {pv_tile<3, 1, false, E>, pv_tile<3, 2, false, E>, pv_tile<3, 3, false, E>},
    {pv_tile<4, 1, false, E>, pv_tile<4, 2, false, E>, pv_tile<4, 3, false, E>},
};
template <class E>
constexpr PvTileFn<E> kPvMasked[kPvH] = {pv_tile<1, 1, true, E>, pv_tile<2, 1, true, E>,
                                         pv_tile<3, 1, true, E>, pv_tile<4, 1, true, E>};

template <class E>
IS_AVX2 void pv_avx2(float* const* o, int nq, const float* p, int ld, const int* cnt,
                     const E* const* v, int D) {
  const int dfull = D & ~7;
  const __m256i tail = lane_mask(D & 7);
  // Column chunks outermost: the slice of the block's value rows stays in L1 for all queries.
  for (int d = 0; d < D;) {
    const bool masked = d >= dfull;
    const int nc = masked ? 1 : std::min(kPvC, (dfull - d) / 8);
    for (int a = 0; a < nq; a += kPvH) {
      const int nh = std::min(kPvH, nq - a);
      int cmin = cnt[a];
      for (int h = 1; h < nh; ++h) cmin = std::min(cmin, cnt[a + h]);
      const PvTileFn<E> tile = masked ? kPvMasked<E>[nh - 1] : kPvTiles<E>[nh - 1][nc - 1];
      tile(o + a, p + a * ld, ld, v, 0, cmin, d, tail, D & 7);
      // Queries that see more of the block (dense causal tiles) continue alone; each (query,
      // column) still accumulates its keys in ascending order.
      const PvTileFn<E> one = masked ? kPvMasked<E>[0] : kPvTiles<E>[0][nc - 1];
      for (int h = 0; h < nh; ++h) {
        if (cnt[a + h] > cmin) {
          one(o + a + h, p + (a + h) * ld, ld, v, cmin, cnt[a + h], d, tail, D & 7);
        }
      }
    }
    d += masked ? 8 : 8 * nc;
  }
}

template <class E>
constexpr Kernels<E> kAvx2{scores_avx2<E>, row_max_avx2, exp_sum_avx2, rescale_avx2, pv_avx2<E>};

// ---- driver ----------------------------------------------------------------------------

template <class E>
struct Scratch {
  std::vector<float> s;  // [run size, kKeyBlock] logits, then probabilities
  std::vector<float> m, l, corr;
  std::vector<int> cnt, active, runs;
  std::vector<const float*> qa;
  std::vector<const E*> kbase, vbase, krow, vrow;
  std::vector<const char*> pf;
  std::vector<float*> oa;
};

template <class E>
Scratch<E>& scratch() {
  thread_local Scratch<E> s;
  return s;
}

template <class E>
void attend(const AttnQuery* queries, int nq, const AttnKeys& keys, const E* kp, const E* vp,
            int Dqk, int Dv, float scale) {
  const Kernels<E>& kern = use_avx2() ? kAvx2<E> : kScalar<E>;
  Scratch<E>& sc = scratch<E>();
  const size_t n = static_cast<size_t>(nq);
  sc.s.resize(n * kKeyBlock);
  sc.m.assign(n, kNegInf);
  sc.l.assign(n, 0.0f);
  sc.corr.resize(n);
  sc.cnt.resize(n);
  sc.active.resize(n);
  sc.qa.resize(n);
  sc.oa.resize(n);
  for (auto* v : {&sc.kbase, &sc.vbase, &sc.krow, &sc.vrow}) v->resize(kKeyBlock);
  sc.pf.resize(2 * kKeyBlock);

  // Runs of consecutive queries that read the same KV group.
  sc.runs.clear();
  int64_t n_max = 0;
  for (int i = 0; i < nq; ++i) {
    std::memset(queries[i].out, 0, sizeof(float) * static_cast<size_t>(Dv));
    n_max = std::max(n_max, std::min(queries[i].n_keys, keys.n));
    if (i == 0 || queries[i].group != queries[i - 1].group) sc.runs.push_back(i);
  }
  const int n_runs = static_cast<int>(sc.runs.size());
  sc.runs.push_back(nq);
  const bool shared_rows = kp == vp && keys.k_stride == keys.v_stride &&
                           keys.k_group == keys.v_group;  // MLA: the value is inside the key
  const auto token = [&](int64_t j) { return keys.tokens ? int64_t{keys.tokens[j]} : j; };
  const int pf_bytes = static_cast<int>(sizeof(E)) * (shared_rows ? Dqk : std::max(Dqk, Dv));
  // Fills sc.pf with the key (and value) rows of group g for the block at j0; returns the count.
  const auto next_rows = [&](int64_t j0, int g) {
    const int nb = static_cast<int>(std::clamp<int64_t>(n_max - j0, 0, kKeyBlock));
    int n = 0;
    for (int j = 0; j < nb; ++j) {
      const int64_t tok = token(j0 + j);
      const E* k = kp + tok * keys.k_stride + g * keys.k_group;
      sc.pf[n++] = reinterpret_cast<const char*>(k);
      if (!shared_rows) {
        const E* v = vp + tok * keys.v_stride + g * keys.v_group;
        sc.pf[n++] = reinterpret_cast<const char*>(v);
      }
    }
    return n;
  };

  // Steps run over (block, run); each step prefetches the rows the next one reads.
  for (int64_t j0 = 0; j0 < n_max; j0 += kKeyBlock) {
    const int nb = static_cast<int>(std::min<int64_t>(kKeyBlock, n_max - j0));
    for (int j = 0; j < nb; ++j) {
      const int64_t tok = token(j0 + j);
      sc.kbase[j] = kp + tok * keys.k_stride;
      sc.vbase[j] = vp + tok * keys.v_stride;
    }
    for (int r = 0; r < n_runs; ++r) {
      const int g = queries[sc.runs[r]].group;
      // The next step: the next run of this block, else the first run of the next block.
      const bool same_block = r + 1 < n_runs;
      const int npf = next_rows(same_block ? j0 : j0 + kKeyBlock,
                                queries[sc.runs[same_block ? r + 1 : 0]].group);
      for (int j = 0; j < nb; ++j) {
        sc.krow[j] = sc.kbase[j] + g * keys.k_group;
        sc.vrow[j] = sc.vbase[j] + g * keys.v_group;
      }
      int na = 0;
      for (int i = sc.runs[r]; i < sc.runs[r + 1]; ++i) {
        const int64_t seen = std::min(queries[i].n_keys, keys.n) - j0;
        if (seen <= 0) continue;
        sc.active[na] = i;
        sc.cnt[na] = static_cast<int>(std::min<int64_t>(nb, seen));
        sc.qa[na] = queries[i].q;
        sc.oa[na] = queries[i].out;
        ++na;
      }
      if (na == 0) continue;
      float* s = sc.s.data();
      kern.scores(sc.qa.data(), na, sc.krow.data(), nb, Dqk, scale, s, kKeyBlock, sc.pf.data(),
                  npf, pf_bytes);
      for (int a = 0; a < na; ++a) {
        const int i = sc.active[a];
        float* row = s + static_cast<size_t>(a) * kKeyBlock;
        const float bm = kern.row_max(row, sc.cnt[a]);
        const float mo = sc.m[i];
        // NaN is sticky: once a logit is NaN the query's output and lse are NaN.
        const float mn = (std::isnan(mo) || std::isnan(bm)) ? kNaN : std::max(mo, bm);
        if (mn == kNegInf) {  // every logit is -inf: no weight at all
          sc.cnt[a] = 0;
          sc.corr[a] = 1.0f;
          continue;
        }
        const float c = std::exp(mo - mn);
        const float sum = kern.exp_sum(row, sc.cnt[a], mn);
        sc.l[i] = sc.l[i] * c + sum;
        sc.m[i] = mn;
        sc.corr[a] = c;
      }
      kern.rescale(sc.oa.data(), na, sc.corr.data(), Dv);
      kern.pv(sc.oa.data(), na, s, kKeyBlock, sc.cnt.data(), sc.vrow.data(), Dv);
    }
  }

  for (int i = 0; i < nq; ++i) {
    const float l = sc.l[i];
    if (l == 0.0f) {  // nothing visible (or only -inf logits): out stays 0
      if (queries[i].lse) *queries[i].lse = kNegInf;
      continue;
    }
    float* o = queries[i].out;
    for (int d = 0; d < Dv; ++d) o[d] /= l;
    if (queries[i].lse) *queries[i].lse = sc.m[i] + std::log(l);
  }
}

}  // namespace

void attend_tile(const AttnQuery* queries, int nq, const AttnKeys& keys, int Dqk, int Dv,
                 float scale) {
  if (nq <= 0) return;
  if (keys.k16 != nullptr || keys.v16 != nullptr) {
    attend<uint16_t>(queries, nq, keys, keys.k16, keys.v16, Dqk, Dv, scale);
  } else {
    attend<float>(queries, nq, keys, keys.k, keys.v, Dqk, Dv, scale);
  }
}

int head_part_size(int64_t units, int heads, int group) {
  const int64_t threads = num_threads();
  if (units >= threads || heads <= 4) return heads;
  const int64_t parts = (threads + units - 1) / units;
  int size = static_cast<int>((heads + parts - 1) / parts);
  const int step = size >= group ? group : 4;
  size = (size + step - 1) / step * step;
  return std::min(size, heads);
}

void check_kv_pair(const char* fn, const float* k, const float* v, const uint16_t* k16, const uint16_t* v16) {
  IS_CHECK(!(k || v) || !(k16 || v16), fn, ": give the cache as f32 (k, v) or as f16 (k16, v16), not both");
  if (k16 || v16) {
    IS_CHECK(k16 != nullptr, fn, ": k16 is null (v16 is set)");
    IS_CHECK(v16 != nullptr, fn, ": v16 is null (k16 is set)");
  } else {
    IS_CHECK(k != nullptr, fn, ": k is null");
    IS_CHECK(v != nullptr, fn, ": v is null");
  }
}

}  // namespace indexshare::ops::detail

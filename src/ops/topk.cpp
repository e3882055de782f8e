// Exact top-k per row: a sampled threshold, a SIMD filter and a radix sort.
//
// Per row: a threshold tau is read off an evenly spaced sample of the row so that a little
// more than k scores should be >= tau; one pass checks for NaN and filters the row against tau
// into (score, position) composites (topk_select.h). If at least k survive, the k largest
// composites are exactly the answer (every top-k score is >= the k-th largest score >= tau);
// if fewer survive (an unlucky sample, or fewer than k valid scores), the filter is rerun
// with tau = -inf, keeping every valid score. The threshold therefore only changes the speed,
// never the result. The survivors, in position order, are sorted by an LSD radix sort on
// their score bits (stable, so ties stay in ascending position).
#include "ops/topk.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <mutex>

#include "core/aligned_buffer.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/topk_select.h"

namespace indexshare::ops {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kSamples = 1024;

// Appends the composites of the scores passing the filter (x > tau when kStrict, x >= tau
// otherwise; never NaN) to out, in position order. Returns how many, or -1 - i for a NaN at
// x[i] (then out is incomplete).
template <bool kStrict>
int64_t collect_scalar(const float* x, int64_t n, int64_t pos0, float tau, uint64_t* out) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (std::isnan(v)) return -1 - (pos0 + i);
    if (kStrict ? v > tau : v >= tau) out[m++] = detail::make_composite(v, pos0 + i);
  }
  return m;
}

template <bool kStrict>
__attribute__((target("avx2,fma"))) int64_t collect_avx2(const float* x, int64_t n, float tau,
                                                         uint64_t* out) {
  const __m256 t = _mm256_set1_ps(tau);
  int64_t m = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0) {
      for (int l = 0;; ++l)
        if (std::isnan(x[i + l])) return -1 - (i + l);
    }
    unsigned bits = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(v, t, kStrict ? _CMP_GT_OQ : _CMP_GE_OQ)));
    while (bits != 0) {
      const int l = __builtin_ctz(bits);
      bits &= bits - 1;
      out[m++] = detail::make_composite(x[i + l], i + l);
    }
  }
  const int64_t r = collect_scalar<kStrict>(x + i, n - i, i, tau, out + m);
  return r < 0 ? r : m + r;
}

int64_t collect(const float* x, int64_t n, float tau, bool strict, bool simd, uint64_t* out) {
  if (simd)
    return strict ? collect_avx2<true>(x, n, tau, out) : collect_avx2<false>(x, n, tau, out);
  return strict ? collect_scalar<true>(x, n, 0, tau, out)
                : collect_scalar<false>(x, n, 0, tau, out);
}

// A threshold that about 1.25 k + a few of the row's scores should reach, from an evenly spaced
// sample of up to kSamples scores (NaN and -inf skipped); -inf when the sample cannot tell.
float sampled_threshold(const float* x, int64_t L, int64_t k, float* samples) {
  const int64_t tried = std::min(L, kSamples);
  const int64_t stride = L / tried;
  int64_t ns = 0;
  for (int64_t i = 0; i < tried; ++i) {
    const float v = x[i * stride];
    if (v > kNegInf) samples[ns++] = v;
  }
  // Valid scores number about L * ns / tried, so rank r of the sample cuts about
  // r * L / tried of them.
  const double want =
      1.25 * static_cast<double>(k) * static_cast<double>(tried) / static_cast<double>(L);
  const int64_t r = static_cast<int64_t>(std::ceil(want)) + 4;
  if (r >= ns) return kNegInf;
  std::nth_element(samples, samples + (r - 1), samples + ns, std::greater<float>());
  return samples[r - 1];
}

// Top-k of one row into idx[0, k); returns the valid count, or -1 - pos for a NaN at pos.
// One pass over the row when the sampled threshold lets at least k scores through (the usual
// case), two otherwise. cand: L slots; samples: kSamples slots; tmp: min(L, 2k) slots.
int64_t topk_row(const float* x, int64_t L, int64_t k, bool simd, uint64_t* cand, float* samples,
                 uint64_t* tmp, int32_t* idx) {
  const float tau = sampled_threshold(x, L, k, samples);
  int64_t m = collect(x, L, tau, /*strict=*/tau == kNegInf, simd, cand);
  if (m < 0) return m;  // NaN
  if (m < k && tau != kNegInf) m = collect(x, L, kNegInf, /*strict=*/true, simd, cand);
  return detail::write_topk(cand, m, k, idx, tmp, /*position_ordered=*/true);
}

}  // namespace

void validate(const TopkParams& p) {
  IS_CHECK(p.T >= 0, "topk: T = ", p.T, " is negative");
  IS_CHECK(p.L >= 0, "topk: L = ", p.L, " is negative");
  IS_CHECK(p.L <= std::numeric_limits<int32_t>::max(), "topk: L = ", p.L,
           " exceeds the int32 position range");
  IS_CHECK(p.ld >= 0, "topk: ld = ", p.ld, " is negative");
  IS_CHECK(p.ld == 0 || p.ld >= p.L, "topk: ld = ", p.ld, " is smaller than L = ", p.L);
  IS_CHECK(p.k >= 0, "topk: k = ", p.k, " is negative");
  const int64_t ld = p.ld == 0 ? p.L : p.ld;
  IS_CHECK(ld == 0 || p.T <= std::numeric_limits<int64_t>::max() / ld,
           "topk: T * ld overflows (T = ", p.T, ", ld = ", ld, ")");
  IS_CHECK(p.scores != nullptr || p.T == 0 || p.L == 0, "topk: scores is null (T = ", p.T,
           ", L = ", p.L, ")");
  IS_CHECK(p.indices != nullptr || p.T == 0 || p.k == 0, "topk: indices is null (T = ", p.T,
           ", k = ", p.k, ")");
}

void topk(const TopkParams& p) {
  validate(p);
  const int64_t T = p.T, L = p.L, k = p.k;
  const int64_t ld = p.ld == 0 ? L : p.ld;
  if (T == 0) return;
  if (k == 0 || L == 0) {
    for (int64_t t = 0; t < T; ++t) {
      std::fill(p.indices + t * k, p.indices + (t + 1) * k, -1);
      if (p.count) p.count[t] = 0;
    }
    return;
  }
  const bool simd = use_avx2();
  std::mutex mu;
  int64_t nan_row = -1, nan_pos = -1;  // lowest row holding a NaN
  // Enough rows per part that a part scans at least ~32K scores.
  const int64_t grain = std::max<int64_t>(1, 32768 / L);
  parallel_for(T, grain, [&](int64_t t0, int64_t t1) {
    AlignedBuffer<uint64_t> cand(static_cast<size_t>(L));
    AlignedBuffer<float> samples(static_cast<size_t>(kSamples));
    AlignedBuffer<uint64_t> tmp(static_cast<size_t>(std::min(L, 2 * k)));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t c = topk_row(p.scores + t * ld, L, k, simd, cand.data(), samples.data(),
                                 tmp.data(), p.indices + t * k);
      if (c < 0) {  // rows are scanned in order, so this is the part's first NaN row
        std::lock_guard<std::mutex> lock(mu);
        if (nan_row < 0 || t < nan_row) {
          nan_row = t;
          nan_pos = -1 - c;
        }
        return;
      }
      if (p.count) p.count[t] = static_cast<int32_t>(c);
    }
  });
  IS_CHECK(nan_row < 0, "topk: NaN score at row ", nan_row, ", position ", nan_pos);
}

}  // namespace indexshare::ops

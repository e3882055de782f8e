// Naive float64 references for the CUDA kernels' tests (header-only; never calls the code under
// test). Written from the equations in dsa-spec / the op headers, independently of src/.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace indexshare::ref {

// I[t, s] (float64) for s < L, masked entries -inf. q [T, H, D], k [L, D], w / qs [T, H],
// ks [L] (qs, ks may be empty = 1). abs_bound[t, s] = the same sum with absolute values, the
// scale of the rounding error of any fp32 evaluation.
inline void indexer_scores(const std::vector<double>& q, const std::vector<double>& k,
                           const std::vector<double>& w, const std::vector<double>& qs,
                           const std::vector<double>& ks, double scale, int64_t T, int64_t L,
                           int H, int D, int64_t q_start, std::vector<double>& out,
                           std::vector<double>* abs_bound = nullptr) {
  out.assign(static_cast<size_t>(T * L), -std::numeric_limits<double>::infinity());
  if (abs_bound) abs_bound->assign(static_cast<size_t>(T * L), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t s = 0; s < L && s <= q_start + t; ++s) {
      double acc = 0, bound = 0;
      for (int h = 0; h < H; ++h) {
        double dot = 0, adot = 0;
        for (int d = 0; d < D; ++d) {
          const double a = q[(t * H + h) * D + d], b = k[s * D + d];
          dot += a * b;
          adot += std::fabs(a * b);
        }
        const double wh = w[t * H + h] * scale * (qs.empty() ? 1.0 : qs[t * H + h]);
        acc += wh * std::max(dot, 0.0);
        bound += std::fabs(wh) * adot;
      }
      const double kscale = ks.empty() ? 1.0 : ks[s];
      out[t * L + s] = acc * kscale;
      if (abs_bound) (*abs_bound)[t * L + s] = bound * std::fabs(kscale);
    }
}

// Exact top-k of one row of floats: -inf / NaN masked, descending value, ties by lower
// position, -1 padding. Returns the number of valid slots.
inline int topk_row(const float* row, int64_t L, int k, int32_t* out) {
  std::vector<int32_t> idx;
  for (int64_t s = 0; s < L; ++s)
    if (!std::isnan(row[s]) && row[s] != -std::numeric_limits<float>::infinity())
      idx.push_back(static_cast<int32_t>(s));
  const int n = static_cast<int>(std::min<int64_t>(k, static_cast<int64_t>(idx.size())));
  auto better = [&](int32_t a, int32_t b) {
    const double va = row[a], vb = row[b];  // -0 == +0 as doubles too
    return va != vb ? va > vb : a < b;
  };
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), better);
  for (int i = 0; i < k; ++i) out[i] = i < n ? idx[i] : -1;
  return n;
}

// Sparse MLA, absorbed form, float64: q [T, H, Dqk], kv [L, Dqk], indices [T, K].
inline void sparse_mla(const std::vector<double>& q, const std::vector<double>& kv,
                       const std::vector<int32_t>& indices, int64_t T, int64_t L, int H, int Dqk,
                       int Dv, int K, double scale, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(static_cast<size_t>(T * H * Dv), 0.0);
  lse.assign(static_cast<size_t>(T * H), -std::numeric_limits<double>::infinity());
  for (int64_t t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      std::vector<double> logit;
      std::vector<int32_t> sel;
      for (int j = 0; j < K; ++j) {
        const int32_t s = indices[t * K + j];
        if (s < 0 || s >= L) continue;
        double dot = 0;
        for (int d = 0; d < Dqk; ++d) dot += q[(t * H + h) * Dqk + d] * kv[s * Dqk + d];
        logit.push_back(dot * scale);
        sel.push_back(s);
      }
      if (sel.empty()) continue;
      const double m = *std::max_element(logit.begin(), logit.end());
      double sum = 0;
      for (double& x : logit) sum += (x = std::exp(x - m));
      for (size_t i = 0; i < sel.size(); ++i)
        for (int d = 0; d < Dv; ++d) out[(t * H + h) * Dv + d] += logit[i] / sum * kv[sel[i] * Dqk + d];
      lse[t * H + h] = m + std::log(sum);
    }
}

}  // namespace indexshare::ref

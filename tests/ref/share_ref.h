// Naive float64 references for the layer-stack tests (tests only). Written from the equations in
// ops/indexer.h and ops/sparse_attention.h; never calls the code under test.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace indexshare::share_ref {

inline constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// I[t, s] = scale * sum_h w[t,h] * max(q[t,h,:] . k[s,:], 0) for s <= q_start + t, else -inf.
// q: [T, H, D], k: [L, D], w: [T, H]. Returns [T, L].
inline std::vector<double> indexer_scores(const float* q, const float* k, const float* w, int64_t T, int64_t L,
                                          int H, int D, int64_t q_start, double scale) {
  std::vector<double> out(static_cast<size_t>(T * L), kNegInf);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t s = 0; s < L && s <= q_start + t; ++s) {
      double acc = 0;
      for (int h = 0; h < H; ++h) {
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += static_cast<double>(q[(t * H + h) * D + d]) * k[s * D + d];
        acc += static_cast<double>(w[t * H + h]) * (dot > 0 ? dot : 0.0);
      }
      out[static_cast<size_t>(t * L + s)] = acc * scale;
    }
  return out;
}

// Softmax(scale * q . k_s) weighted sum of v_s over the key rows `keys` of one query head.
// q: [Dk]; key(s) / value(s) give row pointers. Empty set: zeros.
template <class KeyFn, class ValFn>
void attend(const float* q, const std::vector<int64_t>& keys, KeyFn key, ValFn val, int Dk, int Dv, double scale,
            double* out) {
  for (int d = 0; d < Dv; ++d) out[d] = 0;
  if (keys.empty()) return;
  std::vector<double> logit(keys.size());
  double mx = kNegInf;
  for (size_t j = 0; j < keys.size(); ++j) {
    const float* kr = key(keys[j]);
    double dot = 0;
    for (int d = 0; d < Dk; ++d) dot += static_cast<double>(q[d]) * kr[d];
    logit[j] = dot * scale;
    mx = logit[j] > mx ? logit[j] : mx;
  }
  double sum = 0;
  for (double l : logit) sum += std::exp(l - mx);
  for (size_t j = 0; j < keys.size(); ++j) {
    const double p = std::exp(logit[j] - mx) / sum;
    const float* vr = val(keys[j]);
    for (int d = 0; d < Dv; ++d) out[d] += p * vr[d];
  }
}

// The valid (!= -1) entries of one row of an index buffer [T, K].
inline std::vector<int64_t> row_set(const int32_t* idx, int64_t t, int K) {
  std::vector<int64_t> r;
  for (int j = 0; j < K; ++j)
    if (idx[t * K + j] >= 0) r.push_back(idx[t * K + j]);
  return r;
}

// GQA sparse attention: q [T, H, Dk], k [L, Hkv, Dk], v [L, Hkv, Dv], indices [T, K].
inline std::vector<double> sparse_gqa(const float* q, const float* k, const float* v, const int32_t* idx, int64_t T,
                                      int H, int Hkv, int Dk, int Dv, int K, double scale) {
  std::vector<double> out(static_cast<size_t>(T * H * Dv));
  for (int64_t t = 0; t < T; ++t) {
    const auto keys = row_set(idx, t, K);
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / Hkv);
      attend(q + (t * H + h) * Dk, keys, [&](int64_t s) { return k + (s * Hkv + g) * Dk; },
             [&](int64_t s) { return v + (s * Hkv + g) * Dv; }, Dk, Dv, scale, &out[static_cast<size_t>((t * H + h) * Dv)]);
    }
  }
  return out;
}

// MLA sparse attention: q [T, H, Dk], latent kv [L, Dk]; value = first Dv of the latent.
inline std::vector<double> sparse_mla(const float* q, const float* kv, const int32_t* idx, int64_t T, int H, int Dk,
                                      int Dv, int K, double scale) {
  std::vector<double> out(static_cast<size_t>(T * H * Dv));
  for (int64_t t = 0; t < T; ++t) {
    const auto keys = row_set(idx, t, K);
    for (int h = 0; h < H; ++h)
      attend(q + (t * H + h) * Dk, keys, [&](int64_t s) { return kv + s * Dk; }, [&](int64_t s) { return kv + s * Dk; },
             Dk, Dv, scale, &out[static_cast<size_t>((t * H + h) * Dv)]);
  }
  return out;
}

// Dense causal GQA attention for rows at positions q_start + t over keys 0..q_start + t.
inline std::vector<double> dense_gqa(const float* q, const float* k, const float* v, int64_t T, int64_t q_start, int H,
                                     int Hkv, int Dk, int Dv, double scale) {
  std::vector<double> out(static_cast<size_t>(T * H * Dv));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int64_t> keys;
    for (int64_t s = 0; s <= q_start + t; ++s) keys.push_back(s);
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / Hkv);
      attend(q + (t * H + h) * Dk, keys, [&](int64_t s) { return k + (s * Hkv + g) * Dk; },
             [&](int64_t s) { return v + (s * Hkv + g) * Dv; }, Dk, Dv, scale, &out[static_cast<size_t>((t * H + h) * Dv)]);
    }
  }
  return out;
}

}  // namespace indexshare::share_ref

// Naive float64 references for the attention ops and RoPE (tests only). Written from the
// equations in the op headers; never calls the code under test.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace indexshare::ref {

struct AttnResult {
  std::vector<double> out;  // [T, H, Dv]
  std::vector<double> lse;  // [T, H]
};

// Softmax-weighted sum over an explicit list of (key, value) rows for one query.
// keys/values: pointers to rows; returns out[Dv] and lse (-inf and zeros when empty).
inline void attend_one(const float* q, const std::vector<const float*>& keys,
                       const std::vector<const float*>& values, int Dk, int Dv, double scale,
                       double* out, double* lse) {
  for (int d = 0; d < Dv; ++d) out[d] = 0.0;
  if (keys.empty()) {
    *lse = -std::numeric_limits<double>::infinity();
    return;
  }
  std::vector<double> logit(keys.size());
  double mx = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < keys.size(); ++j) {
    double acc = 0.0;
    for (int d = 0; d < Dk; ++d) acc += static_cast<double>(q[d]) * keys[j][d];
    logit[j] = acc * scale;
    if (logit[j] > mx) mx = logit[j];
  }
  double sum = 0.0;
  for (size_t j = 0; j < keys.size(); ++j) sum += std::exp(logit[j] - mx);
  for (size_t j = 0; j < keys.size(); ++j) {
    const double w = std::exp(logit[j] - mx) / sum;
    for (int d = 0; d < Dv; ++d) out[d] += w * values[j][d];
  }
  *lse = mx + std::log(sum);
}

// Sparse GQA: q [T,H,Dk], k [L,Hkv,Dk], v [L,Hkv,Dv], idx [T,K] (-1 empty; duplicates count
// once per slot).
inline AttnResult sparse_gqa(const std::vector<float>& q, const std::vector<float>& k,
                             const std::vector<float>& v, const std::vector<int32_t>& idx,
                             int64_t T, int H, int Hkv, int Dk, int Dv, int K, double scale) {
  AttnResult r;
  r.out.assign(static_cast<size_t>(T * H * Dv), 0.0);
  r.lse.assign(static_cast<size_t>(T * H), 0.0);
  const int group = H / Hkv;
  for (int64_t t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      std::vector<const float*> keys, values;
      for (int j = 0; j < K; ++j) {
        const int32_t s = idx[static_cast<size_t>(t * K + j)];
        if (s < 0) continue;
        keys.push_back(&k[(static_cast<size_t>(s) * Hkv + g) * Dk]);
        values.push_back(&v[(static_cast<size_t>(s) * Hkv + g) * Dv]);
      }
      const size_t th = static_cast<size_t>(t * H + h);
      attend_one(&q[th * Dk], keys, values, Dk, Dv, scale, &r.out[th * Dv], &r.lse[th]);
    }
  }
  return r;
}

// Sparse MLA: q [T,H,Dqk], kv [L,Dqk]; key = whole latent row, value = its first Dv.
inline AttnResult sparse_mla(const std::vector<float>& q, const std::vector<float>& kv,
                             const std::vector<int32_t>& idx, int64_t T, int H, int Dqk, int Dv,
                             int K, double scale) {
  AttnResult r;
  r.out.assign(static_cast<size_t>(T * H * Dv), 0.0);
  r.lse.assign(static_cast<size_t>(T * H), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<const float*> rows;
    for (int j = 0; j < K; ++j) {
      const int32_t s = idx[static_cast<size_t>(t * K + j)];
      if (s >= 0) rows.push_back(&kv[static_cast<size_t>(s) * Dqk]);
    }
    for (int h = 0; h < H; ++h) {
      const size_t th = static_cast<size_t>(t * H + h);
      attend_one(&q[th * Dqk], rows, rows, Dqk, Dv, scale, &r.out[th * Dv], &r.lse[th]);
    }
  }
  return r;
}

// Dense causal: row t sees keys [0, min(L, q_start + t + 1)).
inline AttnResult dense_causal(const std::vector<float>& q, const std::vector<float>& k,
                               const std::vector<float>& v, int64_t T, int64_t L, int H, int Hkv,
                               int Dk, int Dv, int64_t q_start, double scale) {
  AttnResult r;
  r.out.assign(static_cast<size_t>(T * H * Dv), 0.0);
  r.lse.assign(static_cast<size_t>(T * H), 0.0);
  const int group = H / Hkv;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t n = std::min(L, q_start + t + 1);
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      std::vector<const float*> keys, values;
      for (int64_t s = 0; s < n; ++s) {
        keys.push_back(&k[(static_cast<size_t>(s) * Hkv + g) * Dk]);
        values.push_back(&v[(static_cast<size_t>(s) * Hkv + g) * Dv]);
      }
      const size_t th = static_cast<size_t>(t * H + h);
      attend_one(&q[th * Dk], keys, values, Dk, Dv, scale, &r.out[th * Dv], &r.lse[th]);
    }
  }
  return r;
}

// RoPE closed form in long double on [T, H, head_dim]; pairs (j, j + half) when half_split,
// else (2j, 2j + 1). inv_freq empty = theta^(-2j / rot_dim).
inline std::vector<double> rope(const std::vector<float>& x, const std::vector<int64_t>& pos,
                                int H, int head_dim, int rot_offset, int rot_dim, double theta,
                                const std::vector<float>& inv_freq, bool half_split) {
  std::vector<double> y(x.begin(), x.end());
  const int half = rot_dim / 2;
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int h = 0; h < H; ++h) {
      double* row = &y[(t * H + h) * head_dim + rot_offset];
      for (int j = 0; j < half; ++j) {
        const long double f = inv_freq.empty()
                                  ? std::pow(static_cast<long double>(theta),
                                             -2.0L * j / static_cast<long double>(rot_dim))
                                  : static_cast<long double>(inv_freq[j]);
        const long double ang = static_cast<long double>(pos[t]) * f;
        const long double c = std::cos(ang), s = std::sin(ang);
        const int ia = half_split ? j : 2 * j;
        const int ib = half_split ? j + half : 2 * j + 1;
        const long double a = row[ia], b = row[ib];
        row[ia] = static_cast<double>(a * c - b * s);
        row[ib] = static_cast<double>(b * c + a * s);
      }
    }
  }
  return y;
}

// ---- test helpers ----------------------------------------------------------------------

inline std::vector<float> randn(size_t n, std::mt19937_64& rng, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> x(n);
  for (auto& e : x) e = dist(rng);
  return x;
}

// max_i |a_i - b_i| / (atol + rtol-free scale): returns the largest |a - b|.
inline double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace indexshare::ref

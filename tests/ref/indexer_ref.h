// Naive float64 references for the lightning indexer, top-k and the FP8 block quantiser
// (tests only). Written from the equations in the op headers and dsa-spec; never calls the
// code under test (nor core/dtype.h: the e4m3 decoder here is its own).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <numeric>
#include <vector>

namespace indexshare::ref {

inline constexpr double kRefNegInf = -std::numeric_limits<double>::infinity();

struct IndexerRefInput {
  const float* q = nullptr;        // [T, H, D]
  const float* k = nullptr;        // [L, D]
  const float* w = nullptr;        // [T, H]
  const float* q_scale = nullptr;  // [T, H] or null
  const float* k_scale = nullptr;  // [L] or null
  double scale = 1.0;
  int64_t T = 0, L = 0;
  int H = 0, D = 0;
  int64_t q_start = 0;
};

struct IndexerRefOut {
  std::vector<double> score;  // [T, L], -inf where s > q_start + t
  std::vector<double> cond;   // [T, L], |k_scale| * sum_h |w'_h| * sum_d |q_hd k_d| (error scale)
};

// I[t, s] = k_scale[s] * sum_h w[t,h] * scale * q_scale[t,h] * max(0, q[t,h,:] . k[s,:])
// for s <= q_start + t, and s < L (the only keys that exist).
inline IndexerRefOut indexer_scores(const IndexerRefInput& in) {
  IndexerRefOut r;
  r.score.assign(static_cast<size_t>(in.T * in.L), kRefNegInf);
  r.cond.assign(static_cast<size_t>(in.T * in.L), 0.0);
  for (int64_t t = 0; t < in.T; ++t) {
    for (int64_t s = 0; s < in.L; ++s) {
      if (s > in.q_start + t) continue;
      double acc = 0.0, mag = 0.0;
      for (int h = 0; h < in.H; ++h) {
        const float* qv = in.q + (t * in.H + h) * in.D;
        const float* kv = in.k + s * in.D;
        double dot = 0.0, adot = 0.0;
        for (int d = 0; d < in.D; ++d) {
          dot += static_cast<double>(qv[d]) * static_cast<double>(kv[d]);
          adot += std::fabs(static_cast<double>(qv[d]) * static_cast<double>(kv[d]));
        }
        double wh = static_cast<double>(in.w[t * in.H + h]) * in.scale;
        if (in.q_scale) wh *= static_cast<double>(in.q_scale[t * in.H + h]);
        // max(0, dot) written out so that a NaN dot stays NaN.
        const double relu = dot < 0.0 ? 0.0 : dot;
        acc += wh * relu;
        mag += std::fabs(wh) * adot;
      }
      const double ks = in.k_scale ? static_cast<double>(in.k_scale[s]) : 1.0;
      r.score[static_cast<size_t>(t * in.L + s)] = acc * ks;
      r.cond[static_cast<size_t>(t * in.L + s)] = mag * std::fabs(ks);
    }
  }
  return r;
}

struct TopkRefOut {
  std::vector<int32_t> idx;    // [T, k], -1 padded
  std::vector<int32_t> count;  // [T]
  int64_t nan_row = -1;        // first row holding a NaN in [0, L), -1 if none
};

// Top-k by a full sort of every valid (> -inf) candidate: descending score, then ascending
// position. Scores are compared as doubles, so -0.0 and +0.0 tie.
template <class Real>
TopkRefOut topk(const Real* scores, int64_t T, int64_t L, int64_t ld, int k) {
  TopkRefOut r;
  r.idx.assign(static_cast<size_t>(T * k), -1);
  r.count.assign(static_cast<size_t>(T), 0);
  for (int64_t t = 0; t < T; ++t) {
    const Real* row = scores + t * ld;
    std::vector<int64_t> pos;
    for (int64_t s = 0; s < L; ++s) {
      const double v = static_cast<double>(row[s]);
      if (std::isnan(v)) {
        if (r.nan_row < 0) r.nan_row = t;
      } else if (v != kRefNegInf) {
        pos.push_back(s);
      }
    }
    std::sort(pos.begin(), pos.end(), [&](int64_t a, int64_t b) {
      const double va = static_cast<double>(row[a]), vb = static_cast<double>(row[b]);
      if (va != vb) return va > vb;
      return a < b;
    });
    const int64_t m = std::min<int64_t>(k, static_cast<int64_t>(pos.size()));
    for (int64_t i = 0; i < m; ++i)
      r.idx[static_cast<size_t>(t * k + i)] = static_cast<int32_t>(pos[i]);
    r.count[static_cast<size_t>(t)] = static_cast<int32_t>(m);
  }
  return r;
}

// ---- FP8 e4m3fn (no inf; S.1111.111 is NaN; max finite 448) ----------------------------

// Value of a code, from the bit fields.
inline double fp8e4m3_value(uint8_t code) {
  const int sign = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
  return sign ? -mag : mag;
}

// Nearest finite e4m3 code to y (|y| <= 448), ties to the even code, by scanning all codes.
// Returns the code and writes the two bracketing magnitudes' midpoint distance to `margin`
// (|y| distance to the nearest rounding midpoint, relative to |y|) for tie-sensitive checks.
inline uint8_t fp8e4m3_nearest(double y, double* margin) {
  const double a = std::fabs(y);
  int best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  double mid_dist = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= 0x7e; ++c) {
    const double v = fp8e4m3_value(static_cast<uint8_t>(c));
    const double err = std::fabs(v - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
    if (c < 0x7e) {
      const double mid = 0.5 * (v + fp8e4m3_value(static_cast<uint8_t>(c + 1)));
      mid_dist = std::min(mid_dist, std::fabs(a - mid));
    }
  }
  if (margin) *margin = a > 0 ? mid_dist / a : std::numeric_limits<double>::infinity();
  return static_cast<uint8_t>((y < 0 ? 0x80 : 0) | best);
}

struct Fp8RefOut {
  std::vector<uint8_t> code;   // [rows, cols]
  std::vector<double> scale;   // [rows, nblocks]
  std::vector<double> margin;  // [rows, cols] relative distance of x/scale to a midpoint
};

// act_quant: per block of 128 along a row, amax = max(max |x|, 1e-4); scale = amax / 448
// (ue8m0: 2^ceil(log2(amax / 448))); code = nearest e4m3 of clamp(x / scale, -448, 448).
// Finite inputs only.
inline Fp8RefOut quantize_fp8(const float* x, int64_t rows, int64_t cols, bool ue8m0) {
  const int64_t nb = (cols + 127) / 128;
  Fp8RefOut r;
  r.code.resize(static_cast<size_t>(rows * cols));
  r.margin.resize(static_cast<size_t>(rows * cols));
  r.scale.resize(static_cast<size_t>(rows * nb));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t c0 = b * 128, c1 = std::min(cols, c0 + 128);
      double amax = 1e-4f;  // the floor is a float constant in the kernel
      for (int64_t c = c0; c < c1; ++c)
        amax = std::max(amax, std::fabs(static_cast<double>(x[i * cols + c])));
      double s = amax / 448.0;
      if (ue8m0) s = std::exp2(std::ceil(std::log2(s)));
      r.scale[static_cast<size_t>(i * nb + b)] = s;
      for (int64_t c = c0; c < c1; ++c) {
        const double y = std::clamp(static_cast<double>(x[i * cols + c]) / s, -448.0, 448.0);
        const size_t at = static_cast<size_t>(i * cols + c);
        r.code[at] = fp8e4m3_nearest(y, &r.margin[at]);
      }
    }
  }
  return r;
}

// Fraction of the reference set found in the tested set, over rows (sets of valid slots).
inline double topk_overlap(const std::vector<int32_t>& got, const std::vector<int32_t>& want,
                           int64_t T, int k) {
  int64_t hit = 0, total = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> a, b;
    for (int i = 0; i < k; ++i) {
      if (got[static_cast<size_t>(t * k + i)] >= 0)
        a.push_back(got[static_cast<size_t>(t * k + i)]);
      if (want[static_cast<size_t>(t * k + i)] >= 0)
        b.push_back(want[static_cast<size_t>(t * k + i)]);
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    std::vector<int32_t> both;
    std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
    hit += static_cast<int64_t>(both.size());
    total += static_cast<int64_t>(b.size());
  }
  return total == 0 ? 1.0 : static_cast<double>(hit) / static_cast<double>(total);
}

}  // namespace indexshare::ref

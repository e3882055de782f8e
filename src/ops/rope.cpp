#include "ops/rope.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare::ops {
namespace {

constexpr int64_t kMaxPosition = int64_t{1} << 53;  // positions stay exact in a double

// One row's rotation: cos / sin of every pair, laid out for the pairing (see apply_*).
struct RowAngles {
  std::vector<float> c, s;
};

// Angles in double, rounded once: the error does not grow with the position.
void row_angles(const std::vector<double>& inv_freq, int64_t pos, RopePairing pairing,
                RowAngles& out) {
  const size_t half = inv_freq.size();
  out.c.resize(2 * half);
  out.s.resize(2 * half);
  for (size_t j = 0; j < half; ++j) {
    const double a = static_cast<double>(pos) * inv_freq[j];
    const float c = static_cast<float>(std::cos(a));
    const float s = static_cast<float>(std::sin(a));
    if (pairing == RopePairing::kHalfSplit) {  // c[j] and s[j] for j < half
      out.c[j] = c;
      out.s[j] = s;
    } else {  // duplicated per pair: c[2j] = c[2j+1]
      out.c[2 * j] = out.c[2 * j + 1] = c;
      out.s[2 * j] = out.s[2 * j + 1] = s;
    }
  }
}

void rotate_scalar(float* x, int half, RopePairing pairing, const RowAngles& r) {
  if (pairing == RopePairing::kHalfSplit) {
    for (int j = 0; j < half; ++j) {
      const float a = x[j], b = x[j + half];
      x[j] = a * r.c[j] - b * r.s[j];
      x[j + half] = b * r.c[j] + a * r.s[j];
    }
  } else {
    for (int j = 0; j < half; ++j) {
      const float a = x[2 * j], b = x[2 * j + 1];
      x[2 * j] = a * r.c[2 * j] - b * r.s[2 * j];
      x[2 * j + 1] = b * r.c[2 * j] + a * r.s[2 * j];
    }
  }
}

__attribute__((target("avx2,fma"))) void rotate_avx2(float* x, int half, RopePairing pairing,
                                                     const RowAngles& r) {
  const float* c = r.c.data();
  const float* s = r.s.data();
  int j = 0;
  if (pairing == RopePairing::kHalfSplit) {
    for (; j + 8 <= half; j += 8) {
      const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + half);
      const __m256 vc = _mm256_loadu_ps(c + j), vs = _mm256_loadu_ps(s + j);
      _mm256_storeu_ps(x + j, _mm256_fmsub_ps(a, vc, _mm256_mul_ps(b, vs)));
      _mm256_storeu_ps(x + j + half, _mm256_fmadd_ps(b, vc, _mm256_mul_ps(a, vs)));
    }
    for (; j < half; ++j) {
      const float a = x[j], b = x[j + half];
      x[j] = a * c[j] - b * s[j];
      x[j + half] = b * c[j] + a * s[j];
    }
  } else {
    // [a0 b0 a1 b1 ...]: even lanes a c - b s, odd lanes b c + a s, i.e.
    // fmaddsub(x, c, swap(x) * s) with swap exchanging the lanes of each pair.
    const int n = 2 * half;
    for (; j + 8 <= n; j += 8) {
      const __m256 v = _mm256_loadu_ps(x + j);
      const __m256 sw = _mm256_permute_ps(v, 0xB1);
      const __m256 y = _mm256_fmaddsub_ps(v, _mm256_loadu_ps(c + j),
                                          _mm256_mul_ps(sw, _mm256_loadu_ps(s + j)));
      _mm256_storeu_ps(x + j, y);
    }
    for (; j < n; j += 2) {
      const float a = x[j], b = x[j + 1];
      x[j] = a * c[j] - b * s[j];
      x[j + 1] = b * c[j] + a * s[j];
    }
  }
}

}  // namespace

void validate(const RopeParams& p) {
  constexpr const char* fn = "rope";
  IS_CHECK(p.T >= 0, fn, ": T (rows) must be >= 0, got ", p.T);
  IS_CHECK(p.H > 0, fn, ": H (heads) must be > 0, got ", p.H);
  IS_CHECK(p.head_dim > 0, fn, ": head_dim must be > 0, got ", p.head_dim);
  IS_CHECK(p.rot_dim > 0 && p.rot_dim % 2 == 0, fn,
           ": rot_dim must be a positive even number, got ", p.rot_dim);
  IS_CHECK(p.rot_offset >= 0, fn, ": rot_offset must be >= 0, got ", p.rot_offset);
  IS_CHECK(int64_t{p.rot_offset} + p.rot_dim <= p.head_dim, fn, ": rot_offset=", p.rot_offset,
           " + rot_dim=", p.rot_dim, " exceeds head_dim=", p.head_dim);
  if (p.inv_freq) {
    for (int j = 0; j < p.rot_dim / 2; ++j) {
      IS_CHECK(std::isfinite(p.inv_freq[j]), fn, ": inv_freq[", j, "] = ", p.inv_freq[j],
               " is not finite");
    }
  } else {
    IS_CHECK(std::isfinite(p.theta) && p.theta > 0.0f, fn,
             ": theta must be finite and > 0, got ", p.theta);
  }
  if (p.T == 0) return;
  IS_CHECK(p.x != nullptr, fn, ": x is null");
  if (p.positions) {
    for (int64_t t = 0; t < p.T; ++t) {
      IS_CHECK(p.positions[t] >= 0 && p.positions[t] <= kMaxPosition, fn, ": positions[", t,
               "] = ", p.positions[t], " is outside [0, 2^53]");
    }
  } else {
    IS_CHECK(p.pos0 >= 0 && p.pos0 <= kMaxPosition - p.T, fn, ": pos0=", p.pos0,
             " with T=", p.T, " leaves [0, 2^53]");
  }
}

void rope(const RopeParams& p) {
  validate(p);
  if (p.T == 0) return;
  const int half = p.rot_dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int j = 0; j < half; ++j) {
    inv_freq[static_cast<size_t>(j)] =
        p.inv_freq ? static_cast<double>(p.inv_freq[j])
                   : std::pow(static_cast<double>(p.theta), -2.0 * j / p.rot_dim);
  }
  const bool simd = use_avx2();
  // About 32 pairs x 8 heads of work per grain keeps the dispatch cost small.
  const int64_t grain = std::max<int64_t>(1, 4096 / (int64_t{half} * p.H + 1));
  parallel_for(p.T, grain, [&](int64_t t0, int64_t t1) {
    RowAngles r;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t pos = p.positions ? p.positions[t] : p.pos0 + t;
      row_angles(inv_freq, pos, p.pairing, r);
      for (int h = 0; h < p.H; ++h) {
        float* x = p.x + (t * p.H + h) * p.head_dim + p.rot_offset;
        if (simd) {
          rotate_avx2(x, half, p.pairing, r);
        } else {
          rotate_scalar(x, half, p.pairing, r);
        }
      }
    }
  });
}

}  // namespace indexshare::ops

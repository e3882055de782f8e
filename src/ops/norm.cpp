#include "ops/norm.h"

#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare::ops {
namespace {

void check(const NormParams& p, const char* what) {
  IS_CHECK(p.T >= 0 && p.n > 0, what, ": bad shape T=", p.T, " n=", p.n);
  IS_CHECK(p.T == 0 || (p.x && p.y), what, ": x and y must be non-null");
  IS_CHECK(p.eps >= 0.0f, what, ": eps must be >= 0");
}

}  // namespace

void rms_norm(const NormParams& p) {
  check(p, "rms_norm");
  parallel_for(p.T, 4, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* x = p.x + t * p.n;
      float* y = p.y + t * p.n;
      float ss = 0.0f;
      for (int64_t i = 0; i < p.n; ++i) ss += x[i] * x[i];
      const float r = 1.0f / std::sqrt(ss / static_cast<float>(p.n) + p.eps);
      for (int64_t i = 0; i < p.n; ++i) y[i] = x[i] * r * (p.weight ? p.weight[i] : 1.0f);
    }
  });
}

void layer_norm(const NormParams& p) {
  check(p, "layer_norm");
  parallel_for(p.T, 4, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* x = p.x + t * p.n;
      float* y = p.y + t * p.n;
      float mean = 0.0f;
      for (int64_t i = 0; i < p.n; ++i) mean += x[i];
      mean /= static_cast<float>(p.n);
      float var = 0.0f;
      for (int64_t i = 0; i < p.n; ++i) var += (x[i] - mean) * (x[i] - mean);
      var /= static_cast<float>(p.n);
      const float r = 1.0f / std::sqrt(var + p.eps);
      for (int64_t i = 0; i < p.n; ++i)
        y[i] = (x[i] - mean) * r * (p.weight ? p.weight[i] : 1.0f) + (p.bias ? p.bias[i] : 0.0f);
    }
  });
}

void swiglu(const float* gate, const float* up, float* y, int64_t n) {
  IS_CHECK(n >= 0, "swiglu: n must be >= 0");
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    y[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace indexshare::ops

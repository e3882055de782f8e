#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "ops/norm.h"

namespace indexshare::ops {
namespace {

TEST(Norm, RmsAndLayerNormMatchFloat64) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.5f, 2.0f);
  const int64_t T = 7, n = 37;
  std::vector<float> x(T * n), w(n), b(n), y(T * n), z(T * n);
  for (auto& v : x) v = nd(rng);
  for (auto& v : w) v = nd(rng);
  for (auto& v : b) v = nd(rng);
  rms_norm({.x = x.data(), .weight = w.data(), .y = y.data(), .T = T, .n = n, .eps = 1e-5f});
  layer_norm({.x = x.data(), .weight = w.data(), .bias = b.data(), .y = z.data(), .T = T, .n = n, .eps = 1e-6f});
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0, mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) {
      ss += double(x[t * n + i]) * x[t * n + i];
      mean += x[t * n + i];
    }
    mean /= n;
    for (int64_t i = 0; i < n; ++i) var += (x[t * n + i] - mean) * (x[t * n + i] - mean);
    var /= n;
    for (int64_t i = 0; i < n; ++i) {
      const double r = x[t * n + i] / std::sqrt(ss / n + 1e-5) * w[i];
      const double l = (x[t * n + i] - mean) / std::sqrt(var + 1e-6) * w[i] + b[i];
      EXPECT_NEAR(y[t * n + i], r, 1e-5 * (1 + std::fabs(r)));
      EXPECT_NEAR(z[t * n + i], l, 1e-5 * (1 + std::fabs(l)));
    }
  }
  std::vector<float> g = {-3.0f, 0.0f, 2.5f}, u = {1.0f, 4.0f, -2.0f}, s(3);
  swiglu(g.data(), u.data(), s.data(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(s[i], g[i] / (1 + std::exp(-double(g[i]))) * u[i], 1e-6);
}

TEST(Norm, RejectsBadShapes) {
  std::vector<float> x(4);
  EXPECT_THROW(rms_norm({.x = x.data(), .y = x.data(), .T = 1, .n = 0}), Error);
  EXPECT_THROW(layer_norm({.x = nullptr, .y = x.data(), .T = 1, .n = 4}), Error);
}

}  // namespace
}  // namespace indexshare::ops

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/attention_probs.h"

namespace indexshare::ops {
namespace {

// (D, SIMD): D = 16 takes the AVX2 path, D = 12 and SIMD off the scalar one; 6 heads in 2
// groups of 3 (the AVX2 kernel works 4 heads at a time, so a group of 5 covers the remainder too).
class AttentionProbsShapes : public testing::TestWithParam<std::tuple<int, bool, int>> {};

TEST_P(AttentionProbsShapes, MatchesFloat64AndRowsSumToOne) {
  const auto [D, simd, group] = GetParam();
  set_simd_enabled(simd);
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed << " D " << D << " simd " << simd << " group " << group);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  const int64_t T = 5, L = 13, q0 = 6;
  const int Hkv = 2, H = Hkv * group;
  std::vector<float> q(T * H * D), k(L * Hkv * D), P(T * L, -1.0f);
  for (auto& v : q) v = nd(rng);
  for (auto& v : k) v = nd(rng);
  const float scale = 0.3f;
  attention_probs({.q = q.data(), .k = k.data(), .T = T, .L = L, .H = H, .H_kv = Hkv, .D = D, .q_start = q0,
                   .scale = scale, .P = P.data()});
  for (int64_t t = 0; t < T; ++t) {
    const int64_t n = std::min(L, q0 + t + 1);
    std::vector<double> ref(L, 0.0);
    for (int h = 0; h < H; ++h) {
      std::vector<double> s(n);
      double mx = -INFINITY, z = 0;
      for (int64_t j = 0; j < n; ++j) {
        double d = 0;
        for (int i = 0; i < D; ++i) d += double(q[(t * H + h) * D + i]) * k[(j * Hkv + h / group) * D + i];
        s[j] = scale * d;
        mx = std::max(mx, s[j]);
      }
      for (auto& v : s) z += (v = std::exp(v - mx));
      for (int64_t j = 0; j < n; ++j) ref[j] += s[j] / z / H;
    }
    double sum = 0;
    for (int64_t j = 0; j < L; ++j) {
      EXPECT_NEAR(P[t * L + j], ref[j], 1e-6) << t << "," << j;
      sum += P[t * L + j];
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  std::vector<float> P2(T * L);
  set_num_threads(1);
  attention_probs({.q = q.data(), .k = k.data(), .T = T, .L = L, .H = H, .H_kv = Hkv, .D = D, .q_start = q0,
                   .scale = scale, .P = P2.data()});
  set_num_threads(2);
  EXPECT_EQ(P, P2);
  EXPECT_THROW(attention_probs({.q = q.data(), .k = k.data(), .T = T, .L = L, .H = 5, .H_kv = 2, .D = D, .P = P.data()}),
               Error);
  set_simd_enabled(true);  // back to detection
}

INSTANTIATE_TEST_SUITE_P(AttentionProbs, AttentionProbsShapes,
                         testing::Values(std::make_tuple(16, true, 3), std::make_tuple(16, true, 5),
                                         std::make_tuple(12, true, 3), std::make_tuple(16, false, 3)));

}  // namespace
}  // namespace indexshare::ops

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/attention_probs.h"

namespace indexshare::ops {
namespace {

TEST(AttentionProbs, MatchesFloat64AndRowsSumToOne) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  const int64_t T = 5, L = 13, q0 = 6;
  const int H = 6, Hkv = 2, D = 16;
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
        for (int i = 0; i < D; ++i) d += double(q[(t * H + h) * D + i]) * k[(j * Hkv + h / 3) * D + i];
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
}

}  // namespace
}  // namespace indexshare::ops

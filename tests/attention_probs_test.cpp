#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "core/cpu_features.h"
#include "ops/attention_probs.h"
#include "ops/vec.h"

namespace indexshare::ops {
namespace {

// float64 softmax of head h of row t over keys [0, n): q [T, H, D], k [L, H_kv, D].
std::vector<double> head_softmax64(const std::vector<float>& q, const std::vector<float>& k, int64_t t, int h, int64_t n,
                                   int H, int Hkv, int D, float scale) {
  std::vector<double> s(static_cast<size_t>(n));
  double mx = -INFINITY, z = 0;
  for (int64_t j = 0; j < n; ++j) {
    double d = 0;
    for (int i = 0; i < D; ++i) d += double(q[(t * H + h) * D + i]) * k[(j * Hkv + h / (H / Hkv)) * D + i];
    s[j] = scale * d;
    mx = std::max(mx, s[j]);
  }
  for (auto& v : s) z += (v = std::exp(v - mx));
  for (auto& v : s) v /= z;
  return s;
}

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
      const auto p = head_softmax64(q, k, t, h, n, H, Hkv, D, scale);
      for (int64_t j = 0; j < n; ++j) ref[j] += p[j] / H;
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

// max_weight w: (1 - w) mean + w renormalised per-key maximum over heads, against float64, for
// the max alone (w = 1) and two blends.
TEST(AttentionProbs, MaxAndBlendTargetsMatchFloat64) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  const int64_t T = 7, L = 150, q0 = 140;  // rows past one key block: every path of the kernel
  const int H = 6, Hkv = 3, D = 16;
  std::vector<float> q(T * H * D), k(L * Hkv * D);
  for (auto& v : q) v = 2.0f * nd(rng);  // peaked heads: their maxima differ from their mean
  for (auto& v : k) v = nd(rng);
  const float scale = 0.4f;
  for (const float w : {1.0f, 0.5f, 0.25f}) {
    SCOPED_TRACE(testing::Message() << "max_weight " << w);
    std::vector<float> P(T * L, -1.0f);
    attention_probs({.q = q.data(), .k = k.data(), .T = T, .L = L, .H = H, .H_kv = Hkv, .D = D, .q_start = q0,
                     .scale = scale, .P = P.data(), .max_weight = w});
    double max_gap = 0.0;  // how far the target is from the mean somewhere (the test must see a difference)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = std::min(L, q0 + t + 1);
      std::vector<double> mx_h(L, 0.0), mean(L, 0.0);
      for (int h = 0; h < H; ++h) {
        const auto p = head_softmax64(q, k, t, h, n, H, Hkv, D, scale);
        for (int64_t j = 0; j < n; ++j) {
          mx_h[j] = std::max(mx_h[j], p[j]);
          mean[j] += p[j] / H;
        }
      }
      double zm = 0;
      for (int64_t j = 0; j < n; ++j) zm += mx_h[j];
      double sum = 0;
      for (int64_t j = 0; j < L; ++j) {
        const double ref = j < n ? (1.0 - w) * mean[j] + w * mx_h[j] / zm : 0.0;
        EXPECT_NEAR(P[t * L + j], ref, 1e-6) << t << "," << j;
        max_gap = std::max(max_gap, std::abs(ref - mean[j]));
        sum += P[t * L + j];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
    EXPECT_GT(max_gap, 1e-2 * w);
    std::vector<float> P2(T * L);
    set_num_threads(1);
    attention_probs({.q = q.data(), .k = k.data(), .T = T, .L = L, .H = H, .H_kv = Hkv, .D = D, .q_start = q0,
                     .scale = scale, .P = P2.data(), .max_weight = w});
    set_num_threads(2);
    EXPECT_EQ(P, P2);
  }
  std::vector<float> P(T * L);
  for (const float bad : {-0.1f, 1.5f, NAN})
    EXPECT_THROW(attention_probs({.q = q.data(), .k = k.data(), .T = T, .L = L, .H = H, .H_kv = Hkv, .D = D,
                                  .scale = scale, .P = P.data(), .max_weight = bad}),
                 Error)
        << bad;
}

// The plain loop attention_probs promises to equal bit for bit (ops::dot, a sequential exp sum,
// row += w * s in ascending head order): the distillation targets rest on it.
std::vector<float> plain_probs(const std::vector<float>& q, const std::vector<float>& k, const std::vector<int64_t>& pos,
                               int64_t L, int H, int Hkv, int D, float scale) {
  const int64_t T = static_cast<int64_t>(pos.size());
  std::vector<float> P(static_cast<size_t>(T * L), 0.0f), s(static_cast<size_t>(L));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t n = std::min(L, pos[t] + 1);
    for (int h = 0; h < H; ++h) {
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        s[j] = scale * dot(&q[(t * H + h) * D], &k[(j * Hkv + h / (H / Hkv)) * D], D);
        mx = std::max(mx, s[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - mx));
      const float w = (1.0f / static_cast<float>(H)) / sum;
      for (int64_t j = 0; j < n; ++j) {
        const float add = w * s[j];
        P[t * L + j] = P[t * L + j] + add;
      }
    }
  }
  return P;
}

TEST(AttentionProbs, BitwiseEqualToThePlainLoopOnEveryPath) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  struct Case { int H, Hkv, D; int64_t L; };
  // D: 64 and 16-multiples (the 16-float chunks), 24 and 8 (an 8-float tail), 12 (no AVX2
  // path); L: several 128-key blocks plus a ragged end, and fewer keys than one 4-key step.
  for (const Case c : {Case{9, 3, 64, 300}, Case{4, 4, 24, 131}, Case{6, 2, 8, 3}, Case{2, 1, 12, 40}}) {
    SCOPED_TRACE(testing::Message() << "H=" << c.H << " Hkv=" << c.Hkv << " D=" << c.D << " L=" << c.L);
    const std::vector<int64_t> pos = {0, 1, 2, 5, c.L / 2, c.L - 1, c.L + 7};
    const int64_t T = static_cast<int64_t>(pos.size()), qd = int64_t{c.H} * c.D;
    std::vector<float> q(T * qd), k(c.L * c.Hkv * c.D);
    for (auto& v : q) v = nd(rng);
    for (auto& v : k) v = nd(rng);
    for (bool simd : {true, false}) {
      set_simd_enabled(simd);  // the reference's ops::dot follows the same switch
      const std::vector<float> want = plain_probs(q, k, pos, c.L, c.H, c.Hkv, c.D, 0.125f);
      std::vector<float> got(T * c.L, -1.0f);
      attention_probs({.q = q.data(), .k = k.data(), .T = T, .L = c.L, .H = c.H, .H_kv = c.Hkv, .D = c.D,
                       .scale = 0.125f, .P = got.data(), .pos = pos.data()});
      EXPECT_EQ(got, want) << "simd " << simd;
      // One row at a time, positions as q_start, q read with a row stride: the same bits.
      std::vector<float> wide(T * (qd + 5)), one(c.L);
      for (int64_t t = 0; t < T; ++t) std::copy(&q[t * qd], &q[t * qd] + qd, &wide[t * (qd + 5)]);
      for (int64_t t = 0; t < T; ++t) {
        attention_probs({.q = wide.data() + t * (qd + 5), .k = k.data(), .T = 1, .L = c.L, .H = c.H, .H_kv = c.Hkv,
                         .D = c.D, .q_start = pos[t], .scale = 0.125f, .P = one.data()});
        EXPECT_TRUE(std::equal(one.begin(), one.end(), want.begin() + t * c.L)) << "row " << t << " simd " << simd;
      }
    }
    set_simd_enabled(true);
  }
}

TEST(AttentionProbs, RejectsBadStridesAndPositions) {
  std::vector<float> q(2 * 4 * 8, 0.5f), k(3 * 2 * 8, 0.25f), P(2 * 3);
  // No keys: nothing to write, and no key pointer needed.
  EXPECT_NO_THROW(attention_probs({.q = q.data(), .k = nullptr, .T = 2, .L = 0, .H = 4, .H_kv = 2, .D = 8,
                                   .P = P.data()}));
  EXPECT_THROW(attention_probs({.q = q.data(), .k = nullptr, .T = 2, .L = 3, .H = 4, .H_kv = 2, .D = 8,
                                .P = P.data()}),
               Error);
  const int64_t bad[2] = {0, -1};
  EXPECT_THROW(attention_probs({.q = q.data(), .k = k.data(), .T = 2, .L = 3, .H = 4, .H_kv = 2, .D = 8,
                                .P = P.data(), .pos = bad}),
               Error);
  EXPECT_THROW(attention_probs({.q = q.data(), .k = k.data(), .T = 2, .L = 3, .H = 4, .H_kv = 2, .D = 8,
                                .P = P.data(), .ldq = 31}),
               Error);
}

}  // namespace
}  // namespace indexshare::ops

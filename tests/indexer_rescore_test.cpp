// ops::indexer_rescore (the selection of a reindex layer) against a float64 reference: scores of
// only the given candidates, top-k order (descending score, ties by ascending position), -1
// padding, the candidates' slots carried along; bad input refused with the field named.
#include "ops/indexer_rescore.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"

namespace indexshare::ops {
namespace {

struct Case {
  int64_t T = 0, slots = 0;
  int C = 0, H = 0, D = 0, k = 0;
  std::vector<float> q, w, keys;
  std::vector<int32_t> pos, slot;
  IndexerRescoreParams params(std::vector<int32_t>& out_pos, std::vector<int32_t>& out_slot) {
    out_pos.assign(static_cast<size_t>(T * k), -7);
    out_slot.assign(static_cast<size_t>(T * k), -7);
    return {q.data(), w.data(), keys.data(), slots, pos.data(), slot.data(), 0.5f, T, C, H, D, k, out_pos.data(),
            out_slot.data()};
  }
};

// Each row: `valid` distinct random positions among [0, slots) (slot = position + 3, the rest -1),
// in random order.
Case make_case(uint32_t seed, int64_t T, int C, int valid, int H, int D, int k) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Case c;
  c.T = T, c.C = C, c.H = H, c.D = D, c.k = k, c.slots = 200;
  c.q.resize(static_cast<size_t>(T * H * D));
  c.w.resize(static_cast<size_t>(T * H));
  c.keys.resize(static_cast<size_t>(c.slots * D));
  for (auto* v : {&c.q, &c.w, &c.keys})
    for (float& x : *v) x = u(rng);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> p(197);
    std::iota(p.begin(), p.end(), 0);
    std::shuffle(p.begin(), p.end(), rng);
    std::vector<int32_t> row(static_cast<size_t>(C), -1);
    for (int j = 0; j < valid; ++j) row[static_cast<size_t>(j)] = p[static_cast<size_t>(j)];
    std::shuffle(row.begin(), row.end(), rng);
    for (int32_t v : row) {
      c.pos.push_back(v);
      c.slot.push_back(v < 0 ? -1 : v + 3);
    }
  }
  return c;
}

double ref_score(const Case& c, int64_t t, int32_t pos) {
  double acc = 0;
  for (int h = 0; h < c.H; ++h) {
    double dot = 0;
    for (int d = 0; d < c.D; ++d)
      dot += double(c.q[static_cast<size_t>((t * c.H + h) * c.D + d)]) * c.keys[static_cast<size_t>((pos + 3) * c.D + d)];
    acc += double(c.w[static_cast<size_t>(t * c.H + h)]) * 0.5 * std::max(dot, 0.0);
  }
  return acc;
}

TEST(IndexerRescore, MatchesFloat64Reference) {
  for (int threads : {1, 2, -1}) {  // -1: 2 threads, scalar path
    set_num_threads(threads < 0 ? 2 : threads);
    set_simd_enabled(threads >= 0);
    for (int valid : {40, 9, 0}) {
      const uint32_t seed = std::random_device{}();
      SCOPED_TRACE(testing::Message() << "seed " << seed << " valid " << valid << " threads " << threads);
      Case c = make_case(seed, 17, 48, valid, 3, 16, 12);
      std::vector<int32_t> op, os;
      indexer_rescore(c.params(op, os));
      for (int64_t t = 0; t < c.T; ++t) {
        std::vector<std::pair<double, int32_t>> ref;
        for (int j = 0; j < c.C; ++j) {
          const int32_t p = c.pos[static_cast<size_t>(t * c.C + j)];
          if (p >= 0) ref.push_back({ref_score(c, t, p), p});
        }
        std::sort(ref.begin(), ref.end(),
                  [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
        for (int j = 0; j < c.k; ++j) {
          const int32_t got = op[static_cast<size_t>(t * c.k + j)];
          if (static_cast<size_t>(j) >= ref.size()) {
            EXPECT_EQ(got, -1);
            EXPECT_EQ(os[static_cast<size_t>(t * c.k + j)], -1);
            continue;
          }
          ASSERT_GE(got, 0) << "row " << t << " slot " << j;
          EXPECT_EQ(os[static_cast<size_t>(t * c.k + j)], got + 3) << "the slot travels with its position";
          // ReLU makes many scores exactly 0 (ties broken by position): compare the score of
          // the pick with the reference's j-th, and the position where the scores tie exactly.
          EXPECT_NEAR(ref_score(c, t, got), ref[static_cast<size_t>(j)].first, 1e-5) << "row " << t << " slot " << j;
          if (ref[static_cast<size_t>(j)].first == 0.0) {
            EXPECT_EQ(got, ref[static_cast<size_t>(j)].second);
          }
        }
      }
    }
  }
  set_num_threads(2);
  set_simd_enabled(true);
}

TEST(IndexerRescore, RefusesBadInput) {
  Case c = make_case(3, 4, 10, 8, 2, 4, 5);
  std::vector<int32_t> op, os;
  auto expect_error = [&](IndexerRescoreParams p, const std::string& needle) {
    try {
      indexer_rescore(p);
      ADD_FAILURE() << "no error; expected " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto p = c.params(op, os);
  p.k = 11;
  expect_error(p, "k = 11 is more than the 10 candidates");
  p = c.params(op, os);
  p.H = 0;
  expect_error(p, "H = 0");
  p = c.params(op, os);
  p.q = nullptr;
  expect_error(p, "null pointer");
  Case bad = c;
  const auto j = static_cast<size_t>(std::find_if(bad.pos.begin(), bad.pos.end(), [](int32_t v) { return v >= 0; }) - bad.pos.begin());
  bad.slot[j] = 500;
  expect_error(bad.params(op, os), "outside [0, 200)");
  bad = c;
  bad.slot[j] = -1;
  expect_error(bad.params(op, os), "has cache slot -1");
  bad = c;
  const auto j2 = static_cast<size_t>(std::find_if(bad.pos.begin() + j + 1, bad.pos.begin() + 10, [](int32_t v) { return v >= 0; }) - bad.pos.begin());
  bad.pos[j2] = bad.pos[j];
  bad.slot[j2] = bad.slot[j];
  expect_error(bad.params(op, os), "twice among its candidates");
  bad = c;
  bad.q[0] = std::numeric_limits<float>::quiet_NaN();
  expect_error(bad.params(op, os), "NaN score in row 0");
}

}  // namespace
}  // namespace indexshare::ops

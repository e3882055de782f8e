// Exact top-k against a full-sort reference: tie-free data, ties, masks, adversarial orders
// for the sampled threshold, NaN, thread / SIMD invariance and bad input.
#include "ops/topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "indexer_test_util.h"
#include "ref/indexer_ref.h"

namespace indexshare {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Result {
  std::vector<int32_t> idx, count;
};

Result run_topk(const std::vector<float>& s, int64_t T, int64_t L, int64_t ld, int k) {
  Result r;
  r.idx.assign(static_cast<size_t>(T * k), 77);
  r.count.assign(static_cast<size_t>(T), 77);
  ops::TopkParams p;
  p.scores = s.data();
  p.T = T;
  p.L = L;
  p.ld = ld;
  p.k = k;
  p.indices = r.idx.data();
  p.count = r.count.data();
  ops::topk(p);
  return r;
}

void expect_matches_ref(const std::vector<float>& s, int64_t T, int64_t L, int64_t ld, int k) {
  const Result got = run_topk(s, T, L, ld, k);
  const ref::TopkRefOut want = ref::topk(s.data(), T, L, ld == 0 ? L : ld, k);
  ASSERT_LT(want.nan_row, 0);
  EXPECT_EQ(got.idx, want.idx);
  EXPECT_EQ(got.count, want.count);
}

// Distinct scores (a shuffled ramp with jitter), some masked to -inf.
std::vector<float> tie_free_rows(int64_t T, int64_t L, int64_t ld, double masked,
                                 std::mt19937& rng) {
  std::vector<float> s(static_cast<size_t>(T * ld), std::nanf(""));  // padding past L is NaN
  std::bernoulli_distribution mask(masked);
  std::vector<int64_t> perm(static_cast<size_t>(L));
  for (int64_t t = 0; t < T; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t j = 0; j < L; ++j) {
      const float v =
          static_cast<float>(perm[static_cast<size_t>(j)]) * 0.75f - static_cast<float>(L) / 3.0f;
      s[static_cast<size_t>(t * ld + j)] = mask(rng) ? -kInf : v;
    }
  }
  return s;
}

TEST(Topk, TieFreeRowsMatchFullSort) {
  test::ModeGuard guard;
  struct Case {
    int64_t T, L, ld;
    int k;
    double masked;
  };
  const Case cases[] = {
      {3, 1, 0, 1, 0.0},        {4, 7, 9, 3, 0.2},         {5, 100, 0, 64, 0.0},
      {5, 100, 0, 100, 0.1},    {2, 100, 0, 150, 0.3},     {6, 5000, 5003, 64, 0.0},
      {3, 40000, 0, 2048, 0.0}, {3, 40000, 0, 2048, 0.97}, {4, 3000, 0, 1, 0.5}};
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    for (const Case& c : cases) {
      const uint32_t seed = test::fresh_seed();
      SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd << " T=" << c.T
                                      << " L=" << c.L << " k=" << c.k << " masked=" << c.masked);
      std::mt19937 rng(seed);
      const int64_t ld = c.ld == 0 ? c.L : c.ld;
      const std::vector<float> s = tie_free_rows(c.T, c.L, ld, c.masked, rng);
      expect_matches_ref(s, c.T, c.L, c.ld, c.k);
    }
  }
}

TEST(Topk, TiesGoToTheLowerPosition) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd);
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> level(0, 9);
    const int64_t T = 8, L = 6000;
    std::vector<float> s(static_cast<size_t>(T * L));
    for (float& v : s) v = static_cast<float>(level(rng)) * 0.5f;
    for (int k : {1, 7, 600, 2048}) expect_matches_ref(s, T, L, 0, k);
  }
  // Explicit: equal scores, +0.0 / -0.0 tie, +inf is an ordinary best score.
  const std::vector<float> row = {1.0f, 3.0f, -0.0f, 3.0f, 0.0f, kInf, -kInf, 1.0f};
  const Result r = run_topk(row, 1, 8, 0, 6);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{5, 1, 3, 0, 7, 2}));
  EXPECT_EQ(r.count[0], 6);
}

TEST(Topk, MaskedAndShortRowsArePadded) {
  const std::vector<float> s = {-kInf, -kInf, -kInf, 2.0f, -kInf, 1.0f, -kInf, -kInf};
  Result r = run_topk(s, 2, 4, 0, 3);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{3, -1, -1, 1, -1, -1}));
  EXPECT_EQ(r.count, (std::vector<int32_t>{1, 1}));
  r = run_topk(std::vector<float>(12, -kInf), 3, 4, 0, 2);  // fully masked rows
  EXPECT_EQ(r.idx, std::vector<int32_t>(6, -1));
  EXPECT_EQ(r.count, std::vector<int32_t>(3, 0));
  r = run_topk(s, 2, 4, 0, 0);  // k = 0: no index, count 0
  EXPECT_TRUE(r.idx.empty());
  EXPECT_EQ(r.count, (std::vector<int32_t>{0, 0}));
  r = run_topk({}, 3, 0, 0, 2);  // L = 0: rows of -1
  EXPECT_EQ(r.idx, std::vector<int32_t>(6, -1));
  EXPECT_EQ(r.count, std::vector<int32_t>(3, 0));
  r = run_topk(s, 1, 8, 0, 20);  // k > L
  EXPECT_EQ(std::count(r.idx.begin(), r.idx.end(), -1), 20 - 2);
  EXPECT_EQ(r.count[0], 2);
  ops::TopkParams p;  // T = 0 with null pointers
  p.k = 5;
  p.L = 10;
  EXPECT_NO_THROW(ops::topk(p));
}

TEST(Topk, AdversarialOrdersForTheSampledThreshold) {
  test::ModeGuard guard;
  const int64_t L = 20000;
  const int k = 1000;
  std::vector<std::vector<float>> rows;
  std::vector<float> a(L), b(L), c(L, 1.0f), d(L), e(L, -kInf);
  for (int64_t i = 0; i < L; ++i) {
    a[static_cast<size_t>(i)] = static_cast<float>(i);      // ascending (recency bias)
    b[static_cast<size_t>(i)] = static_cast<float>(L - i);  // descending
    d[static_cast<size_t>(i)] =
        (i % 97 == 0) ? 10.0f + static_cast<float>(i) : 0.0f;  // few big values
  }
  for (int64_t i = 0; i < 1500; ++i)
    e[static_cast<size_t>(i)] = static_cast<float>(i % 13);  // causal prefix
  for (const auto* r : {&a, &b, &c, &d, &e}) rows.push_back(*r);
  std::vector<float> s;
  for (const auto& r : rows) s.insert(s.end(), r.begin(), r.end());
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    expect_matches_ref(s, static_cast<int64_t>(rows.size()), L, 0, k);
  }
}

TEST(Topk, NanIsAnErrorNamingTheLowestRow) {
  test::ModeGuard guard;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (bool simd : test::simd_modes()) {
      set_simd_enabled(simd);
      std::vector<float> s(64 * 100, 1.0f);
      s[40 * 100 + 3] = std::nanf("");
      s[13 * 100 + 57] = std::nanf("");
      test::expect_error([&] { run_topk(s, 64, 100, 0, 5); }, "row 13, position 57");
      s[13 * 100 + 57] = 1.0f;
      test::expect_error([&] { run_topk(s, 64, 100, 0, 5); }, "row 40, position 3");
      s[40 * 100 + 3] = -kInf;
      EXPECT_NO_THROW(run_topk(s, 64, 100, 0, 5));
    }
  }
}

TEST(Topk, OneAndTwoThreadsAgree) {
  test::ModeGuard guard;
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> s(static_cast<size_t>(37 * 3000));
  for (float& v : s) v = std::round(normal(rng) * 4.0f);  // many ties
  set_num_threads(1);
  const Result a = run_topk(s, 37, 3000, 0, 300);
  set_num_threads(2);
  const Result b = run_topk(s, 37, 3000, 0, 300);
  EXPECT_EQ(a.idx, b.idx);
  EXPECT_EQ(a.count, b.count);
  expect_matches_ref(s, 37, 3000, 0, 300);
}

TEST(Topk, BadInputNamesTheField) {
  std::vector<float> s(40, 0.0f);
  std::vector<int32_t> idx(20);
  auto make = [&] {
    ops::TopkParams p;
    p.scores = s.data();
    p.T = 4;
    p.L = 10;
    p.k = 5;
    p.indices = idx.data();
    return p;
  };
  auto expect = [&](auto mutate, const char* needle) {
    ops::TopkParams p = make();
    mutate(p);
    test::expect_error([p] { ops::topk(p); }, needle);
  };
  expect([](auto& p) { p.T = -1; }, "T = -1");
  expect([](auto& p) { p.L = -1; }, "L = -1");
  expect([](auto& p) { p.L = int64_t{1} << 31; }, "int32");
  expect([](auto& p) { p.ld = 9; }, "ld = 9");
  expect([](auto& p) { p.ld = -3; }, "ld = -3");
  expect([](auto& p) { p.k = -2; }, "k = -2");
  expect([](auto& p) { p.scores = nullptr; }, "scores is null");
  expect([](auto& p) { p.indices = nullptr; }, "indices is null");
  expect([](auto& p) { p.T = std::numeric_limits<int64_t>::max() / 4; }, "overflows");
}

}  // namespace
}  // namespace indexshare

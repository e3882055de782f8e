// Lightning-indexer scores against the float64 reference, plus tiling / threading / SIMD
// invariance, the causal boundary, NaN propagation and bad input.
#include "ops/indexer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "indexer_test_util.h"
#include "ops/topk.h"
#include "ref/indexer_ref.h"

namespace indexshare {
namespace {

using test::IndexerInputs;
using test::make_inputs;
using test::Values;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

ref::IndexerRefOut run_ref(const IndexerInputs& in) {
  ref::IndexerRefInput r;
  r.q = in.p.q;
  r.k = in.p.k;
  r.w = in.p.weights;
  r.q_scale = in.p.q_scale;
  r.k_scale = in.p.k_scale;
  r.scale = in.p.scale;
  r.T = in.p.T;
  r.L = in.p.L;
  r.H = in.p.H;
  r.D = in.p.D;
  r.q_start = in.p.q_start;
  return ref::indexer_scores(r);
}

std::vector<float> run_scores(const ops::IndexerParams& p) {
  std::vector<float> s(static_cast<size_t>(p.T * p.L), 123.0f);
  ops::indexer_scores(p, s.data());
  return s;
}

// |got - ref| <= (D + H + 4) * 2^-24 * cond: a bound on the fp32 rounding of the two sums.
void expect_close_to_ref(const std::vector<float>& got, const ref::IndexerRefOut& want, int H,
                         int D) {
  const double gamma = (D + H + 4) * std::ldexp(1.0, -24);
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want.score[i])) {
      if (got[i] != kNegInf && bad++ < 5)
        ADD_FAILURE() << "entry " << i << " should be -inf, got " << got[i];
      continue;
    }
    const double err = std::fabs(static_cast<double>(got[i]) - want.score[i]);
    if (!(err <= gamma * want.cond[i] + 1e-30) && bad++ < 5)
      ADD_FAILURE() << "entry " << i << ": got " << got[i] << " want " << want.score[i] << " cond "
                    << want.cond[i];
  }
  EXPECT_EQ(bad, 0);
}

std::vector<int32_t> topk_of(const std::vector<float>& scores, int64_t T, int64_t L, int k) {
  std::vector<int32_t> idx(static_cast<size_t>(T * k));
  ops::TopkParams tp;
  tp.scores = scores.data();
  tp.T = T;
  tp.L = L;
  tp.k = k;
  tp.indices = idx.data();
  ops::topk(tp);
  return idx;
}

// Compares the top-k sets of a and b on the rows where the float64 gap between the k-th and
// (k+1)-th scores exceeds twice the fp32 error bound (so rounding cannot reorder them).
// Returns how many rows were compared.
int64_t expect_same_sets_where_gapped(const std::vector<int32_t>& a, const std::vector<int32_t>& b,
                                      const ref::IndexerRefOut& want, int64_t T, int64_t L, int k,
                                      int H, int D) {
  const double gamma = (D + H + 4) * std::ldexp(1.0, -24);
  int64_t checked = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> row(want.score.begin() + t * L, want.score.begin() + (t + 1) * L);
    const double max_cond =
        *std::max_element(want.cond.begin() + t * L, want.cond.begin() + (t + 1) * L);
    std::sort(row.begin(), row.end(), std::greater<double>());
    if (L > k && row[static_cast<size_t>(k)] != ref::kRefNegInf &&
        row[static_cast<size_t>(k - 1)] - row[static_cast<size_t>(k)] <= 2 * gamma * max_cond)
      continue;
    std::vector<int32_t> sa(a.begin() + t * k, a.begin() + (t + 1) * k),
        sb(b.begin() + t * k, b.begin() + (t + 1) * k);
    std::sort(sa.begin(), sa.end());
    std::sort(sb.begin(), sb.end());
    EXPECT_EQ(sa, sb) << "row " << t;
    ++checked;
  }
  return checked;
}

struct Shape {
  int64_t T, L;
  int H, D;
  int64_t q_start;
};

TEST(Indexer, MatchesFloat64Reference) {
  test::ModeGuard guard;
  const Shape shapes[] = {
      {1, 1, 1, 1, 0},      {5, 37, 3, 7, 0},    {16, 300, 8, 128, 200},  // decode-like block
      {33, 90, 7, 20, 0},   {9, 64, 32, 16, 60}, {4, 20, 13, 9, 100},     // L < q_start + T
      {20, 150, 64, 24, 5}, {3, 50, 6, 33, 10}};
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    for (const Shape& sh : shapes) {
      for (bool scales : {false, true}) {
        const uint32_t seed = test::fresh_seed();
        SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd << " T=" << sh.T
                                        << " L=" << sh.L << " H=" << sh.H << " D=" << sh.D
                                        << " q_start=" << sh.q_start << " scales=" << scales);
        IndexerInputs in =
            make_inputs(sh.T, sh.L, sh.H, sh.D, sh.q_start, seed, Values::kGaussian, scales);
        expect_close_to_ref(run_scores(in.p), run_ref(in), sh.H, sh.D);
      }
    }
  }
}

TEST(Indexer, ExactDataEqualsReferenceBitwise) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd);
    IndexerInputs in = make_inputs(12, 200, 32, 128, 150, seed, Values::kExact, true);
    const std::vector<float> got = run_scores(in.p);
    const ref::IndexerRefOut want = run_ref(in);
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(static_cast<double>(got[i]), want.score[i]) << "entry " << i;
  }
}

TEST(Indexer, CausalBoundaryOnAbsolutePositions) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd);
    // Keys past the block exist (L > q_start + T): row t must see exactly s <= q_start + t.
    IndexerInputs in = make_inputs(10, 64, 4, 16, 30, seed);
    const std::vector<float> s = run_scores(in.p);
    for (int64_t t = 0; t < 10; ++t)
      for (int64_t j = 0; j < 64; ++j)
        EXPECT_EQ(s[static_cast<size_t>(t * 64 + j)] == kNegInf, j > 30 + t)
            << "t=" << t << " s=" << j;
    // Keys not yet cached (L < q_start + T): rows see [0, L) only; nothing past L is read.
    IndexerInputs in2 = make_inputs(10, 35, 4, 16, 30, seed);
    const std::vector<float> s2 = run_scores(in2.p);
    for (int64_t t = 0; t < 10; ++t)
      for (int64_t j = 0; j < 35; ++j)
        EXPECT_EQ(s2[static_cast<size_t>(t * 35 + j)] == kNegInf, j > 30 + t)
            << "t=" << t << " s=" << j;
  }
}

TEST(Indexer, TilesGiveBitwiseTheFullScores) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd);
    IndexerInputs in = make_inputs(23, 517, 11, 40, 400, seed, Values::kGaussian, true);
    const std::vector<float> full = run_scores(in.p);
    // Odd tile boundaries: rows in blocks of 5, keys in tiles of 37 (not multiples of 16).
    std::vector<float> tiled(full.size(), 7.0f);
    std::vector<float> ws(static_cast<size_t>(ops::indexer_tile_workspace_floats(in.p, 5)));
    for (int64_t t0 = 0; t0 < 23; t0 += 5) {
      for (int64_t s0 = 0; s0 < 517; s0 += 37) {
        const int64_t t1 = std::min<int64_t>(23, t0 + 5), s1 = std::min<int64_t>(517, s0 + 37);
        if ((t0 + s0) % 2 == 0) {
          ops::indexer_scores_tile(in.p, t0, t1, s0, s1, tiled.data() + t0 * 517 + s0, 517);
        } else {
          ops::indexer_scores_tile(in.p, t0, t1, s0, s1, tiled.data() + t0 * 517 + s0, 517,
                                   ws.data());
        }
      }
    }
    EXPECT_EQ(std::memcmp(full.data(), tiled.data(), full.size() * sizeof(float)), 0);
  }
}

TEST(Indexer, OneAndTwoThreadsAgreeBitwise) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd);
    IndexerInputs in = make_inputs(40, 1500, 9, 64, 1000, seed);
    set_num_threads(1);
    const std::vector<float> a = run_scores(in.p);
    set_num_threads(2);
    const std::vector<float> b = run_scores(in.p);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  }
}

TEST(Indexer, SimdMatchesScalar) {
  test::ModeGuard guard;
  if (test::simd_modes().size() < 2) GTEST_SKIP() << "no AVX2 on this CPU";
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  IndexerInputs in = make_inputs(20, 700, 32, 128, 680, seed, Values::kGaussian, true);
  set_simd_enabled(false);
  const std::vector<float> scalar = run_scores(in.p);
  set_simd_enabled(true);
  const std::vector<float> simd = run_scores(in.p);
  const ref::IndexerRefOut want = run_ref(in);
  double worst = 0.0;
  for (size_t i = 0; i < simd.size(); ++i) {
    if (want.score[i] == ref::kRefNegInf) {
      ASSERT_EQ(simd[i], kNegInf);
      ASSERT_EQ(scalar[i], kNegInf);
      continue;
    }
    worst = std::max(worst, std::fabs(static_cast<double>(simd[i]) - scalar[i]) / want.cond[i]);
  }
  EXPECT_LE(worst, 1e-6) << "largest |simd - scalar| relative to sum_h |w'| sum_d |q k|";
  // Same top-k sets on every row whose k-th / (k+1)-th gap (float64) exceeds both paths' error.
  const int k = 64;
  const std::vector<int32_t> a = topk_of(scalar, in.p.T, in.p.L, k),
                             b = topk_of(simd, in.p.T, in.p.L, k);
  const int64_t checked =
      expect_same_sets_where_gapped(a, b, want, in.p.T, in.p.L, k, in.p.H, in.p.D);
  EXPECT_GE(checked, in.p.T / 2);
}

TEST(Indexer, TopkSetsEqualFloat64ReferenceOnTieFreeData) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd);
    IndexerInputs in = make_inputs(12, 1000, 32, 128, 990, seed, Values::kGaussian, true);
    const ref::IndexerRefOut want = run_ref(in);
    const int k = 100;
    const std::vector<int32_t> got = topk_of(run_scores(in.p), in.p.T, in.p.L, k);
    const ref::TopkRefOut r = ref::topk(want.score.data(), in.p.T, in.p.L, in.p.L, k);
    const int64_t checked =
        expect_same_sets_where_gapped(got, r.idx, want, in.p.T, in.p.L, k, in.p.H, in.p.D);
    EXPECT_GE(checked, in.p.T / 2);
  }
}

TEST(Indexer, NanPropagatesOnlyToVisibleScores) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd);
    IndexerInputs in = make_inputs(6, 40, 5, 16, 20, seed);
    in.k[static_cast<size_t>(22 * 16 + 3)] = std::numeric_limits<float>::quiet_NaN();  // key 22
    in.q[static_cast<size_t>((4 * 5 + 2) * 16)] =
        std::numeric_limits<float>::quiet_NaN();  // row 4, head 2
    const std::vector<float> s = run_scores(in.p);
    for (int64_t t = 0; t < 6; ++t) {
      for (int64_t j = 0; j < 40; ++j) {
        const float v = s[static_cast<size_t>(t * 40 + j)];
        if (j > 20 + t) {
          EXPECT_EQ(v, kNegInf) << t << "," << j;
        } else {
          EXPECT_EQ(std::isnan(v), t == 4 || j == 22) << t << "," << j;
        }
      }
    }
    in.w[static_cast<size_t>(1 * 5 + 0)] = std::numeric_limits<float>::quiet_NaN();  // row 1
    const std::vector<float> s2 = run_scores(in.p);
    for (int64_t j = 0; j <= 21; ++j) EXPECT_TRUE(std::isnan(s2[static_cast<size_t>(40 + j)])) << j;
  }
}

TEST(Indexer, EmptySizesWriteNothing) {
  IndexerInputs in = make_inputs(0, 10, 4, 8, 0, 1);
  EXPECT_NO_THROW(ops::indexer_scores(in.p, nullptr));
  IndexerInputs in2 = make_inputs(3, 0, 4, 8, 0, 1);
  in2.p.k = nullptr;
  EXPECT_NO_THROW(ops::indexer_scores(in2.p, nullptr));
  float sentinel = 5.0f;
  IndexerInputs in3 = make_inputs(3, 10, 4, 8, 0, 1);
  ops::indexer_scores_tile(in3.p, 1, 1, 0, 10, &sentinel, 10);  // empty row range
  ops::indexer_scores_tile(in3.p, 0, 3, 4, 4, &sentinel, 0);    // empty key range
  EXPECT_EQ(sentinel, 5.0f);
}

TEST(Indexer, BadInputNamesTheField) {
  IndexerInputs in = make_inputs(4, 10, 4, 8, 0, 1);
  std::vector<float> out(40);
  auto with = [&](auto mutate) {
    ops::IndexerParams p = in.p;
    mutate(p);
    return p;
  };
  auto scores = [&](const ops::IndexerParams& p) {
    return [p, &out] { ops::indexer_scores(p, out.data()); };
  };
  test::expect_error(scores(with([](auto& p) { p.T = -1; })), "T = -1");
  test::expect_error(scores(with([](auto& p) { p.L = -2; })), "L = -2");
  test::expect_error(scores(with([](auto& p) { p.H = 0; })), "H = 0");
  test::expect_error(scores(with([](auto& p) { p.D = -4; })), "D = -4");
  test::expect_error(scores(with([](auto& p) { p.q_start = -1; })), "q_start");
  test::expect_error(scores(with([](auto& p) { p.q_start = std::numeric_limits<int64_t>::max(); })),
                     "q_start");
  test::expect_error(scores(with([](auto& p) { p.scale = std::nanf(""); })), "scale");
  test::expect_error(scores(with([](auto& p) { p.q = nullptr; })), "q is null");
  test::expect_error(scores(with([](auto& p) { p.k = nullptr; })), "k is null");
  test::expect_error(scores(with([](auto& p) { p.weights = nullptr; })), "weights is null");
  test::expect_error(scores(with([](auto& p) { p.T = std::numeric_limits<int64_t>::max() / 2; })),
                     "overflows");
  test::expect_error([&] { ops::indexer_scores(in.p, nullptr); }, "scores is null");
  test::expect_error([&] { ops::indexer_scores_tile(in.p, 0, 5, 0, 10, out.data(), 10); }, "rows");
  test::expect_error([&] { ops::indexer_scores_tile(in.p, 2, 1, 0, 10, out.data(), 10); }, "rows");
  test::expect_error([&] { ops::indexer_scores_tile(in.p, 0, 4, -1, 10, out.data(), 10); }, "keys");
  test::expect_error([&] { ops::indexer_scores_tile(in.p, 0, 4, 0, 11, out.data(), 11); }, "keys");
  test::expect_error([&] { ops::indexer_scores_tile(in.p, 0, 4, 0, 10, out.data(), 9); }, "ld");
  test::expect_error([&] { ops::indexer_scores_tile(in.p, 0, 4, 0, 10, nullptr, 10); },
                     "out is null");
  test::expect_error([&] { ops::indexer_scores_tile(in.p, 0, 4, 0, 10, out.data(), 10, nullptr); },
                     "workspace");
}

}  // namespace
}  // namespace indexshare

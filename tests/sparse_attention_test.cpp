#include "ops/sparse_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "attention_test_util.h"
#include "core/error.h"
#include "ops/dense_attention.h"
#include "ref/attention_ref.h"

namespace indexshare {
namespace {

using test::DispatchGuard;
using test::expect_close;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
// Outputs are convex combinations of O(1) values: fp32 rounding stays far below this.
constexpr double kAtol = 2e-5, kRtol = 2e-5;

// Index rows: min(K, L) distinct tokens in random slots, a fraction `empty` of them replaced by
// -1, the rest of the row -1.
std::vector<int32_t> random_indices(int64_t T, int64_t L, int K, double empty,
                                    std::mt19937_64& rng) {
  std::vector<int32_t> idx(static_cast<size_t>(T * K), -1);
  std::vector<int32_t> pool(static_cast<size_t>(L));
  std::iota(pool.begin(), pool.end(), 0);
  std::bernoulli_distribution drop(empty);
  for (int64_t t = 0; t < T; ++t) {
    std::shuffle(pool.begin(), pool.end(), rng);
    int32_t* row = idx.data() + t * K;
    const int n = static_cast<int>(std::min<int64_t>(K, L));
    for (int j = 0; j < n; ++j) row[j] = drop(rng) ? -1 : pool[static_cast<size_t>(j)];
    std::shuffle(row, row + K, rng);
  }
  return idx;
}

struct MlaCase {
  int64_t T = 0, L = 0;
  int H = 0, Dqk = 0, Dv = 0, K = 0;
  float scale = 1.0f;
  std::vector<float> q, kv;
  std::vector<int32_t> idx;
};

MlaCase make_mla(int64_t T, int64_t L, int H, int Dqk, int Dv, int K, std::mt19937_64& rng,
                 double empty = 0.1) {
  MlaCase c;
  c.T = T, c.L = L, c.H = H, c.Dqk = Dqk, c.Dv = Dv, c.K = K;
  c.scale = 1.0f / std::sqrt(static_cast<float>(Dqk));
  c.q = ref::randn(static_cast<size_t>(T * H * Dqk), rng);
  c.kv = ref::randn(static_cast<size_t>(L * Dqk), rng);
  c.idx = random_indices(T, L, K, empty, rng);
  return c;
}

struct Result {
  std::vector<float> out, lse;
};

Result run_mla(const MlaCase& c) {
  Result r;
  r.out.assign(static_cast<size_t>(c.T * c.H * c.Dv), 777.0f);  // must be overwritten
  r.lse.assign(static_cast<size_t>(c.T * c.H), 777.0f);
  ops::SparseMlaParams p;
  p.q = c.q.data();
  p.kv = c.kv.empty() ? nullptr : c.kv.data();
  p.indices = c.idx.data();
  p.T = c.T, p.L = c.L, p.H = c.H, p.Dqk = c.Dqk, p.Dv = c.Dv, p.K = c.K;
  p.scale = c.scale;
  p.out = r.out.data();
  p.lse = r.lse.data();
  ops::sparse_mla(p);
  return r;
}

ref::AttnResult ref_mla(const MlaCase& c) {
  return ref::sparse_mla(c.q, c.kv, c.idx, c.T, c.H, c.Dqk, c.Dv, c.K, c.scale);
}

struct GqaCase {
  int64_t T = 0, L = 0;
  int H = 0, Hkv = 0, Dk = 0, Dv = 0, K = 0;
  float scale = 1.0f;
  std::vector<float> q, k, v;
  std::vector<int32_t> idx;
};

GqaCase make_gqa(int64_t T, int64_t L, int H, int Hkv, int Dk, int Dv, int K,
                 std::mt19937_64& rng) {
  GqaCase c;
  c.T = T, c.L = L, c.H = H, c.Hkv = Hkv, c.Dk = Dk, c.Dv = Dv, c.K = K;
  c.scale = 1.0f / std::sqrt(static_cast<float>(Dk));
  c.q = ref::randn(static_cast<size_t>(T * H * Dk), rng);
  c.k = ref::randn(static_cast<size_t>(L * Hkv * Dk), rng);
  c.v = ref::randn(static_cast<size_t>(L * Hkv * Dv), rng);
  c.idx = random_indices(T, L, K, 0.1, rng);
  return c;
}

ops::SparseAttentionParams gqa_params(const GqaCase& c, Result& r) {
  r.out.assign(static_cast<size_t>(c.T * c.H * c.Dv), 777.0f);
  r.lse.assign(static_cast<size_t>(c.T * c.H), 777.0f);
  ops::SparseAttentionParams p;
  p.q = c.q.data(), p.k = c.k.data(), p.v = c.v.data(), p.indices = c.idx.data();
  p.T = c.T, p.L = c.L, p.H = c.H, p.H_kv = c.Hkv, p.Dk = c.Dk, p.Dv = c.Dv, p.K = c.K;
  p.scale = c.scale;
  p.out = r.out.data();
  p.lse = r.lse.data();
  return p;
}

Result run_gqa(const GqaCase& c) {
  Result r;
  ops::sparse_attention(gqa_params(c, r));
  return r;
}

ref::AttnResult ref_gqa(const GqaCase& c) {
  return ref::sparse_gqa(c.q, c.k, c.v, c.idx, c.T, c.H, c.Hkv, c.Dk, c.Dv, c.K, c.scale);
}

void expect_matches(const Result& got, const ref::AttnResult& want, const char* what) {
  expect_close(got.out, want.out, kAtol, kRtol, what);
  expect_close(got.lse, want.lse, kAtol, kRtol, what);
}

TEST(SparseMla, MatchesReferenceAtDeepSeekShapes) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  struct Shape {
    int64_t T, L;
    int H, Dqk, Dv, K;
  };
  // 576 = 512 + 64 with 16 heads, a decode row; odd sizes exercise every tail path.
  for (Shape s : {Shape{3, 300, 16, 576, 512, 160}, Shape{1, 200, 16, 576, 512, 150},
                  Shape{4, 90, 5, 70, 37, 70}, Shape{2, 30, 3, 9, 1, 40}}) {
    MlaCase c = make_mla(s.T, s.L, s.H, s.Dqk, s.Dv, s.K, rng);
    const ref::AttnResult want = ref_mla(c);
    for (bool simd : test::simd_modes()) {
      SCOPED_TRACE(testing::Message() << "simd=" << simd << " H=" << s.H << " Dqk=" << s.Dqk);
      set_simd_enabled(simd);
      expect_matches(run_mla(c), want, "mla");
    }
  }
}

TEST(SparseGqa, MatchesReferenceAndGroupsHeads) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  struct Shape {
    int64_t T, L;
    int H, Hkv, Dk, Dv, K;
  };
  for (Shape s : {Shape{5, 200, 8, 2, 40, 24, 100}, Shape{3, 50, 6, 3, 13, 9, 20},
                  Shape{2, 70, 4, 4, 64, 64, 70}, Shape{1, 130, 12, 1, 32, 16, 128}}) {
    GqaCase c = make_gqa(s.T, s.L, s.H, s.Hkv, s.Dk, s.Dv, s.K, rng);
    const ref::AttnResult want = ref_gqa(c);
    for (bool simd : test::simd_modes()) {
      SCOPED_TRACE(testing::Message() << "simd=" << simd << " H=" << s.H << " Hkv=" << s.Hkv);
      set_simd_enabled(simd);
      expect_matches(run_gqa(c), want, "gqa");
    }
  }
  // Grouping made visible: value rows of KV head g are all g + 1, so head h returns
  // h / (H / H_kv) + 1 whatever the weights.
  GqaCase c = make_gqa(2, 40, 6, 3, 8, 4, 16, rng);
  for (int64_t s = 0; s < c.L; ++s)
    for (int g = 0; g < c.Hkv; ++g)
      for (int d = 0; d < c.Dv; ++d)
        c.v[static_cast<size_t>((s * c.Hkv + g) * c.Dv + d)] = g + 1.0f;
  const Result r = run_gqa(c);
  for (int64_t t = 0; t < c.T; ++t)
    for (int h = 0; h < c.H; ++h)
      for (int d = 0; d < c.Dv; ++d)
        EXPECT_NEAR(r.out[static_cast<size_t>((t * c.H + h) * c.Dv + d)], h / 2 + 1.0f, 1e-5)
            << "t=" << t << " h=" << h;
}

// Every causal key listed = dense causal attention over the same range.
TEST(SparseAttention, AllIndicesEqualsDense) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int64_t T = 7, L = 150, q_start = L - T;
  const int H = 8, Dqk = 72, Dv = 64, K = static_cast<int>(L) + 5;
  MlaCase c = make_mla(T, L, H, Dqk, Dv, K, rng);
  std::fill(c.idx.begin(), c.idx.end(), -1);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> row(static_cast<size_t>(q_start + t + 1));
    std::iota(row.begin(), row.end(), 0);
    std::shuffle(row.begin(), row.end(), rng);
    std::copy(row.begin(), row.end(), c.idx.begin() + t * K + 2);
  }
  // The dense op takes separate K and V: V = first Dv columns of the latent.
  std::vector<float> v(static_cast<size_t>(L * Dv));
  for (int64_t s = 0; s < L; ++s)
    std::copy_n(&c.kv[static_cast<size_t>(s * Dqk)], Dv, &v[static_cast<size_t>(s * Dv)]);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    const Result sparse = run_mla(c);
    std::vector<float> out(sparse.out.size()), lse(sparse.lse.size());
    ops::DenseAttentionParams p;
    p.q = c.q.data(), p.k = c.kv.data(), p.v = v.data();
    p.T = T, p.L = L, p.H = H, p.H_kv = 1, p.Dk = Dqk, p.Dv = Dv, p.q_start = q_start;
    p.scale = c.scale, p.out = out.data(), p.lse = lse.data();
    ops::dense_attention(p);
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(sparse.out[i], out[i], 1e-5) << i;
    for (size_t i = 0; i < lse.size(); ++i) ASSERT_NEAR(sparse.lse[i], lse[i], 1e-5) << i;
  }
}

TEST(SparseAttention, KLargerThanLPaddedWithMinusOne) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  // L = 10 tokens, K = 64 slots: at most 10 valid slots, the rest -1, anywhere in the row.
  MlaCase c = make_mla(4, 10, 6, 24, 16, 64, rng, 0.3);
  GqaCase g = make_gqa(3, 10, 4, 2, 16, 8, 64, rng);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    expect_matches(run_mla(c), ref_mla(c), "mla");
    expect_matches(run_gqa(g), ref_gqa(g), "gqa");
  }
}

TEST(SparseAttention, EmptyRowsGiveZerosAndMinusInf) {
  DispatchGuard guard;
  std::mt19937_64 rng(1);
  MlaCase c = make_mla(3, 20, 5, 16, 8, 12, rng, 0.0);
  std::fill(c.idx.begin() + 12, c.idx.begin() + 24, -1);  // row 1 empty
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const Result r = run_mla(c);
    for (int h = 0; h < c.H; ++h) {
      EXPECT_EQ(r.lse[static_cast<size_t>(c.H + h)], -kInf);
      EXPECT_TRUE(std::isfinite(r.lse[static_cast<size_t>(h)]));
      for (int d = 0; d < c.Dv; ++d)
        EXPECT_EQ(r.out[static_cast<size_t>((c.H + h) * c.Dv + d)], 0.0f);
    }
  }
  // K = 0 and L = 0 (no cache at all, kv null): every row empty.
  for (auto [L, K] : {std::pair<int64_t, int>{20, 0}, std::pair<int64_t, int>{0, 4}}) {
    MlaCase e = make_mla(2, L, 3, 8, 8, K, rng);
    e.kv.clear();
    const Result r = run_mla(e);
    for (float x : r.out) EXPECT_EQ(x, 0.0f);
    for (float x : r.lse) EXPECT_EQ(x, -kInf);
  }
  // T = 0 is a no-op, even with null pointers.
  ops::SparseMlaParams p;
  p.H = 4, p.Dqk = 8, p.Dv = 8, p.K = 3, p.L = 5;
  EXPECT_NO_THROW(ops::sparse_mla(p));
}

TEST(SparseAttention, PermutedIndicesGiveTheSameResult) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  MlaCase c = make_mla(3, 500, 8, 96, 64, 200, rng);
  MlaCase perm = c;
  for (int64_t t = 0; t < c.T; ++t)
    std::shuffle(perm.idx.begin() + t * c.K, perm.idx.begin() + (t + 1) * c.K, rng);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    const Result a = run_mla(c), b = run_mla(perm);
    for (size_t i = 0; i < a.out.size(); ++i) ASSERT_NEAR(a.out[i], b.out[i], 2e-6) << i;
    for (size_t i = 0; i < a.lse.size(); ++i) ASSERT_NEAR(a.lse[i], b.lse[i], 2e-6) << i;
  }
}

// Documented choice: a duplicated index is one term per slot (it weighs twice).
TEST(SparseAttention, DuplicateIndicesCountPerSlot) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  MlaCase c = make_mla(2, 30, 4, 16, 16, 8, rng, 0.0);
  c.scale = 1.0f;  // make the duplicated key's weight clearly visible
  c.idx = {3, 3, 3, 7, 11, -1, 3, 20, /* row 1 */ 5, 6, 5, 7, -1, -1, 8, 9};
  MlaCase dedup = c;
  dedup.idx = {3, -1, -1, 7, 11, -1, -1, 20, /* row 1 */ 5, 6, -1, 7, -1, -1, 8, 9};
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    const Result r = run_mla(c);
    expect_matches(r, ref_mla(c), "duplicates");
    // And it is not the set semantics.
    const ref::AttnResult set = ref_mla(dedup);
    double diff = 0.0;
    for (size_t i = 0; i < r.lse.size(); ++i)
      diff = std::max(diff, std::fabs(r.lse[i] - set.lse[i]));
    EXPECT_GT(diff, 1e-3);
  }
}

TEST(SparseAttention, LargeLogitsDoNotOverflow) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  MlaCase c = make_mla(3, 64, 4, 32, 16, 48, rng);
  c.scale = 1e4f / std::sqrt(32.0f);  // logits of order 1e4: exp would overflow unshifted
  const ref::AttnResult want = ref_mla(c);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    const Result r = run_mla(c);
    for (float x : r.out) ASSERT_TRUE(std::isfinite(x));
    // fp32 logit rounding at 1e4 is ~1e-3 absolute: softmax weights shift by that much.
    expect_close(r.out, want.out, 2e-2, 0.0, "out");
    expect_close(r.lse, want.lse, 0.0, 1e-5, "lse");
  }
}

TEST(SparseAttention, NaNPropagatesOnlyThroughReadRows) {
  DispatchGuard guard;
  std::mt19937_64 rng(7);
  MlaCase c = make_mla(3, 40, 6, 24, 16, 10, rng, 0.0);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    const Result clean = run_mla(c);
    // A NaN in a cache row no index names changes nothing.
    std::vector<bool> named(static_cast<size_t>(c.L), false);
    for (int32_t s : c.idx)
      if (s >= 0) named[static_cast<size_t>(s)] = true;
    const auto unnamed = std::find(named.begin(), named.end(), false) - named.begin();
    ASSERT_LT(unnamed, c.L);
    MlaCase a = c;
    std::fill_n(a.kv.begin() + unnamed * c.Dqk, c.Dqk, kNaN);
    EXPECT_TRUE(test::bitwise_equal(run_mla(a).out, clean.out));
    // A NaN in a latent row 1 reads: every head of row 1 is NaN, rows 0 and 2 unchanged
    // unless they read it too.
    MlaCase b = c;
    const int32_t tok = c.idx[static_cast<size_t>(c.K + 4)];
    b.kv[static_cast<size_t>(tok * c.Dqk + 3)] = kNaN;
    const Result rb = run_mla(b);
    for (int64_t t = 0; t < c.T; ++t) {
      const bool reads = std::find(c.idx.begin() + t * c.K, c.idx.begin() + (t + 1) * c.K, tok) !=
                         c.idx.begin() + (t + 1) * c.K;
      for (int h = 0; h < c.H; ++h) {
        const float l = rb.lse[static_cast<size_t>(t * c.H + h)];
        EXPECT_EQ(std::isnan(l), reads) << "t=" << t << " h=" << h;
        EXPECT_EQ(std::isnan(rb.out[static_cast<size_t>((t * c.H + h) * c.Dv)]), reads);
      }
    }
    // A NaN in one query head poisons that head only.
    MlaCase q = c;
    q.q[static_cast<size_t>((0 * c.H + 2) * c.Dqk + 5)] = kNaN;
    const Result rq = run_mla(q);
    for (int h = 0; h < c.H; ++h) EXPECT_EQ(std::isnan(rq.lse[static_cast<size_t>(h)]), h == 2);
    EXPECT_TRUE(
        std::equal(rq.out.begin() + c.H * c.Dv, rq.out.end(), clean.out.begin() + c.H * c.Dv));
    // A NaN as the only key of a row (first block) is not dropped.
    MlaCase one = b;
    std::fill(one.idx.begin(), one.idx.begin() + c.K, -1);
    one.idx[3] = tok;
    const Result r1 = run_mla(one);
    for (int h = 0; h < c.H; ++h) EXPECT_TRUE(std::isnan(r1.lse[static_cast<size_t>(h)]));
  }
}

TEST(SparseAttention, OneAndTwoThreadsAreBitwiseEqual) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  // T = 1 with 16 heads splits the heads across threads; T = 5 splits rows.
  for (int64_t T : {1, 5}) {
    MlaCase c = make_mla(T, 300, 16, 576, 512, 200, rng);
    GqaCase g = make_gqa(T, 300, 16, 2, 64, 48, 200, rng);
    for (bool simd : test::simd_modes()) {
      SCOPED_TRACE(testing::Message() << "simd=" << simd << " T=" << T);
      set_simd_enabled(simd);
      set_num_threads(1);
      const Result m1 = run_mla(c), g1 = run_gqa(g);
      set_num_threads(2);
      const Result m2 = run_mla(c), g2 = run_gqa(g);
      EXPECT_TRUE(test::bitwise_equal(m1.out, m2.out));
      EXPECT_TRUE(test::bitwise_equal(m1.lse, m2.lse));
      EXPECT_TRUE(test::bitwise_equal(g1.out, g2.out));
      EXPECT_TRUE(test::bitwise_equal(g1.lse, g2.lse));
    }
  }
}

TEST(SparseAttention, SimdAndScalarAgree) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  MlaCase c = make_mla(2, 400, 16, 576, 512, 256, rng);
  set_simd_enabled(true);
  const Result a = run_mla(c);
  set_simd_enabled(false);
  const Result b = run_mla(c);
  std::vector<double> bd(b.out.begin(), b.out.end()), bl(b.lse.begin(), b.lse.end());
  expect_close(a.out, bd, 1e-5, 1e-5, "out");
  expect_close(a.lse, bl, 1e-5, 1e-5, "lse");
}

template <class Params>
void expect_error(const Params& p, void (*fn)(const Params&), const std::string& needle) {
  try {
    fn(p);
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' lacks '" << needle << "'";
  }
}

TEST(SparseAttention, BadInputThrowsNamingTheProblem) {
  std::mt19937_64 rng(3);
  MlaCase c = make_mla(2, 50, 4, 16, 8, 6, rng, 0.0);
  std::vector<float> out(static_cast<size_t>(c.T * c.H * c.Dv));
  std::vector<float> lse(static_cast<size_t>(c.T * c.H));
  ops::SparseMlaParams good;
  good.q = c.q.data(), good.kv = c.kv.data(), good.indices = c.idx.data();
  good.T = c.T, good.L = c.L, good.H = c.H, good.Dqk = c.Dqk, good.Dv = c.Dv, good.K = c.K;
  good.out = out.data(), good.lse = lse.data();
  EXPECT_NO_THROW(ops::sparse_mla(good));
  void (*mla)(const ops::SparseMlaParams&) = ops::sparse_mla;
  auto bad = good;
  bad.q = nullptr;
  expect_error(bad, mla, "q is null");
  bad = good, bad.kv = nullptr;
  expect_error(bad, mla, "kv is null");
  bad = good, bad.out = nullptr;
  expect_error(bad, mla, "out is null");
  bad = good, bad.indices = nullptr;
  expect_error(bad, mla, "indices is null");
  bad = good, bad.Dv = 17;
  expect_error(bad, mla, "Dv=17 exceeds Dqk=16");
  bad = good, bad.H = 0;
  expect_error(bad, mla, "H (query heads) must be > 0");
  bad = good, bad.T = -1;
  expect_error(bad, mla, "T (query rows) must be >= 0");
  bad = good, bad.K = -2;
  expect_error(bad, mla, "K (index slots per row) must be >= 0");
  bad = good, bad.Dqk = 0;
  expect_error(bad, mla, "Dqk (latent dim) must be > 0");
  bad = good, bad.scale = kNaN;
  expect_error(bad, mla, "scale must be finite");
  std::vector<int32_t> idx = c.idx;
  idx[static_cast<size_t>(1 * c.K + 3)] = 50;
  bad = good, bad.indices = idx.data();
  expect_error(bad, mla, "indices[1, 3] = 50 is outside [-1, L=50)");
  idx = c.idx;
  idx[2] = -2;
  bad = good, bad.indices = idx.data();
  expect_error(bad, mla, "indices[0, 2] = -2");

  GqaCase g = make_gqa(2, 50, 6, 3, 8, 8, 6, rng);
  Result r;
  const ops::SparseAttentionParams gp = gqa_params(g, r);
  void (*gqa)(const ops::SparseAttentionParams&) = ops::sparse_attention;
  EXPECT_NO_THROW(gqa(gp));
  auto gb = gp;
  gb.H_kv = 4;
  expect_error(gb, gqa, "H=6 is not a multiple of H_kv=4");
  gb = gp, gb.H_kv = 0;
  expect_error(gb, gqa, "H_kv (KV heads) must be > 0");
  gb = gp, gb.v = nullptr;
  expect_error(gb, gqa, "v is null");
  gb = gp, gb.k = nullptr;
  expect_error(gb, gqa, "k is null");
  gb = gp, gb.Dk = -1;
  expect_error(gb, gqa, "Dk (key head dim) must be > 0");
  gb = gp, gb.L = -1;
  expect_error(gb, gqa, "L (cached tokens) must be >= 0");
}

}  // namespace
}  // namespace indexshare

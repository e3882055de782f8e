#include "ops/dense_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "core/error.h"
#include "ref/attention_ref.h"

namespace indexshare {
namespace {

using test::DispatchGuard;
using test::expect_close;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct DenseCase {
  int64_t T = 0, L = 0, q_start = 0;
  int H = 0, Hkv = 0, Dk = 0, Dv = 0;
  float scale = 1.0f;
  std::vector<float> q, k, v;  // k and v may hold rows past L (must stay unread)
};

DenseCase make_dense(int64_t T, int64_t L, int64_t q_start, int H, int Hkv, int Dk, int Dv,
                     std::mt19937_64& rng, int64_t extra_rows = 0) {
  DenseCase c;
  c.T = T, c.L = L, c.q_start = q_start, c.H = H, c.Hkv = Hkv, c.Dk = Dk, c.Dv = Dv;
  c.scale = 1.0f / std::sqrt(static_cast<float>(Dk));
  c.q = ref::randn(static_cast<size_t>(T * H * Dk), rng);
  c.k = ref::randn(static_cast<size_t>((L + extra_rows) * Hkv * Dk), rng);
  c.v = ref::randn(static_cast<size_t>((L + extra_rows) * Hkv * Dv), rng);
  return c;
}

struct Result {
  std::vector<float> out, lse;
};

ops::DenseAttentionParams params(const DenseCase& c, Result& r) {
  r.out.assign(static_cast<size_t>(c.T * c.H * c.Dv), 777.0f);
  r.lse.assign(static_cast<size_t>(c.T * c.H), 777.0f);
  ops::DenseAttentionParams p;
  p.q = c.q.data(), p.k = c.k.empty() ? nullptr : c.k.data();
  p.v = c.v.empty() ? nullptr : c.v.data();
  p.T = c.T, p.L = c.L, p.H = c.H, p.H_kv = c.Hkv, p.Dk = c.Dk, p.Dv = c.Dv;
  p.q_start = c.q_start, p.scale = c.scale;
  p.out = r.out.data(), p.lse = r.lse.data();
  return p;
}

Result run(const DenseCase& c) {
  Result r;
  ops::dense_attention(params(c, r));
  return r;
}

ref::AttnResult reference(const DenseCase& c) {
  return ref::dense_causal(c.q, c.k, c.v, c.T, c.L, c.H, c.Hkv, c.Dk, c.Dv, c.q_start, c.scale);
}

void expect_matches(const Result& got, const ref::AttnResult& want) {
  expect_close(got.out, want.out, 2e-5, 2e-5, "out");
  expect_close(got.lse, want.lse, 2e-5, 2e-5, "lse");
}

TEST(DenseAttention, MatchesReference) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  struct Shape {
    int64_t T, L, q_start;
    int H, Hkv, Dk, Dv;
  };
  // Prefill from 0 across key blocks, a chunk at the end of the cache, decode, Llama-like GQA
  // (9 heads on 3 KV heads, head dim 64), odd dims, and rows whose causal range passes L.
  for (Shape s : {Shape{70, 70, 0, 4, 2, 32, 32}, Shape{9, 140, 131, 6, 2, 20, 12},
                  Shape{1, 200, 199, 8, 8, 16, 16}, Shape{33, 33, 0, 9, 3, 64, 64},
                  Shape{5, 17, 0, 3, 1, 7, 5}, Shape{10, 40, 35, 2, 1, 8, 8}}) {
    DenseCase c = make_dense(s.T, s.L, s.q_start, s.H, s.Hkv, s.Dk, s.Dv, rng);
    const ref::AttnResult want = reference(c);
    for (bool simd : test::simd_modes()) {
      SCOPED_TRACE(testing::Message() << "simd=" << simd << " T=" << s.T << " L=" << s.L
                                      << " q_start=" << s.q_start << " H=" << s.H);
      set_simd_enabled(simd);
      expect_matches(run(c), want);
    }
  }
}

// Keys past the causal bound or past L are never read: NaN there changes nothing.
TEST(DenseAttention, CausalBoundaryAndLengthAreRespected) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  // Rows past L: the arrays hold 30 more rows filled with NaN.
  DenseCase c = make_dense(12, 50, 45, 4, 2, 16, 8, rng, 30);
  std::fill(c.k.begin() + c.L * c.Hkv * c.Dk, c.k.end(), kNaN);
  std::fill(c.v.begin() + c.L * c.Hkv * c.Dv, c.v.end(), kNaN);
  // Decode at position 20 of a 50-token cache: rows 21.. are in the future.
  DenseCase d = make_dense(1, 50, 20, 4, 2, 16, 8, rng);
  std::fill(d.k.begin() + 21 * d.Hkv * d.Dk, d.k.end(), kNaN);
  std::fill(d.v.begin() + 21 * d.Hkv * d.Dv, d.v.end(), kNaN);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    expect_matches(run(c), reference(c));
    expect_matches(run(d), reference(d));
  }
}

// Row t of a block equals the same row computed alone (decode at q_start + t), bitwise: the
// tiling never changes a row's arithmetic.
TEST(DenseAttention, BlockRowsEqualSingleRowCallsBitwise) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  DenseCase c = make_dense(24, 150, 126, 6, 2, 24, 16, rng);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    const Result block = run(c);
    for (int64_t t = 0; t < c.T; ++t) {
      DenseCase one = c;
      one.T = 1, one.q_start = c.q_start + t;
      one.q.assign(c.q.begin() + t * c.H * c.Dk, c.q.begin() + (t + 1) * c.H * c.Dk);
      const Result r = run(one);
      const std::vector<float> want(block.out.begin() + t * c.H * c.Dv,
                                    block.out.begin() + (t + 1) * c.H * c.Dv);
      EXPECT_TRUE(test::bitwise_equal(r.out, want)) << "t=" << t;
    }
  }
}

TEST(DenseAttention, EmptyCacheAndNoRows) {
  std::mt19937_64 rng(2);
  DenseCase c = make_dense(3, 0, 0, 2, 1, 8, 8, rng);
  const Result r = run(c);
  for (float x : r.out) EXPECT_EQ(x, 0.0f);
  for (float x : r.lse) EXPECT_EQ(x, -kInf);
  ops::DenseAttentionParams p;
  p.H = 2, p.H_kv = 1, p.Dk = 4, p.Dv = 4, p.L = 9;
  EXPECT_NO_THROW(ops::dense_attention(p));  // T = 0, null pointers: nothing to do
}

TEST(DenseAttention, LargeLogitsAndNaN) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  DenseCase c = make_dense(8, 100, 92, 4, 2, 16, 16, rng);
  c.scale = 1e4f / 4.0f;
  const ref::AttnResult want = reference(c);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    const Result r = run(c);
    for (float x : r.out) ASSERT_TRUE(std::isfinite(x));
    expect_close(r.out, want.out, 2e-2, 0.0, "out");
    expect_close(r.lse, want.lse, 0.0, 1e-5, "lse");
    // NaN in key row 95 (KV head 1): rows at positions >= 95 of heads 2, 3 turn NaN, the rest
    // are unchanged.
    DenseCase n = c;
    n.k[static_cast<size_t>((95 * c.Hkv + 1) * c.Dk)] = kNaN;
    const Result rn = run(n);
    for (int64_t t = 0; t < c.T; ++t)
      for (int h = 0; h < c.H; ++h) {
        const bool poisoned = c.q_start + t >= 95 && h >= 2;
        const size_t i = static_cast<size_t>(t * c.H + h);
        EXPECT_EQ(std::isnan(rn.lse[i]), poisoned) << "t=" << t << " h=" << h;
        if (!poisoned) {
          EXPECT_EQ(rn.lse[i], r.lse[i]);
        }
      }
  }
}

TEST(DenseAttention, OneAndTwoThreadsAreBitwiseEqual) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  // Decode with 16 heads on one KV head (head split), and a causal prefill block.
  for (DenseCase c : {make_dense(1, 300, 299, 16, 1, 64, 64, rng),
                      make_dense(40, 120, 80, 9, 3, 64, 64, rng)}) {
    for (bool simd : test::simd_modes()) {
      SCOPED_TRACE(testing::Message() << "simd=" << simd << " T=" << c.T);
      set_simd_enabled(simd);
      set_num_threads(1);
      const Result a = run(c);
      set_num_threads(2);
      const Result b = run(c);
      EXPECT_TRUE(test::bitwise_equal(a.out, b.out));
      EXPECT_TRUE(test::bitwise_equal(a.lse, b.lse));
    }
  }
}

TEST(DenseAttention, BadInputThrowsNamingTheProblem) {
  std::mt19937_64 rng(4);
  DenseCase c = make_dense(2, 10, 8, 4, 2, 8, 8, rng);
  Result r;
  const ops::DenseAttentionParams good = params(c, r);
  EXPECT_NO_THROW(ops::dense_attention(good));
  auto expect_error = [](const ops::DenseAttentionParams& p, const std::string& needle) {
    try {
      ops::dense_attention(p);
      ADD_FAILURE() << "no error; expected '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto bad = good;
  bad.q = nullptr;
  expect_error(bad, "dense_attention: q is null");
  bad = good, bad.k = nullptr;
  expect_error(bad, "k is null");
  bad = good, bad.v = nullptr;
  expect_error(bad, "v is null");
  bad = good, bad.out = nullptr;
  expect_error(bad, "out is null");
  bad = good, bad.H_kv = 3;
  expect_error(bad, "H=4 is not a multiple of H_kv=3");
  bad = good, bad.q_start = -1;
  expect_error(bad, "q_start must be >= 0");
  bad = good, bad.Dv = 0;
  expect_error(bad, "Dv (value head dim) must be > 0");
  bad = good, bad.L = -5;
  expect_error(bad, "L (cached tokens) must be >= 0");
  bad = good, bad.scale = kInf;
  expect_error(bad, "scale must be finite");
  bad = good, bad.q_start = std::numeric_limits<int64_t>::max() - 1;
  expect_error(bad, "overflows");
}

}  // namespace
}  // namespace indexshare

// Dense and sparse (GQA) attention over an f16 KV cache (k16 / v16): against the float64
// reference on the widened cache, bitwise equal to the f32 path on the same widened values,
// odd head dims (masked tails), NaN rows past the causal bound never read, and bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "core/error.h"
#include "ops/dense_attention.h"
#include "ops/sparse_attention.h"
#include "ref/attention_ref.h"
#include "ref/quant_ref.h"

namespace indexshare {
namespace {

using test::DispatchGuard;
using test::expect_close;

// A cache in f16 bits and the same values widened to f32 (exactly representable).
struct HalfCache {
  std::vector<uint16_t> bits;
  std::vector<float> wide;
};

HalfCache to_half(const std::vector<float>& x) {
  HalfCache h;
  for (float v : x) {
    const uint16_t b = ref::f16_bits(v);
    h.bits.push_back(b);
    h.wide.push_back(static_cast<float>(ref::f16_value(b)));
  }
  return h;
}

struct Out {
  std::vector<float> out, lse;
};

Out run_dense(const std::vector<float>& q, const HalfCache& k, const HalfCache& v, int64_t T, int64_t L,
              int64_t q_start, int H, int Hkv, int Dk, int Dv, bool half) {
  Out r;
  r.out.assign(static_cast<size_t>(T * H * Dv), 777.0f);
  r.lse.assign(static_cast<size_t>(T * H), 777.0f);
  ops::DenseAttentionParams p;
  p.q = q.data();
  if (half) {
    p.k16 = k.bits.data();
    p.v16 = v.bits.data();
  } else {
    p.k = k.wide.data();
    p.v = v.wide.data();
  }
  p.T = T, p.L = L, p.H = H, p.H_kv = Hkv, p.Dk = Dk, p.Dv = Dv, p.q_start = q_start;
  p.scale = 1.0f / std::sqrt(static_cast<float>(Dk));
  p.out = r.out.data();
  p.lse = r.lse.data();
  ops::dense_attention(p);
  return r;
}

TEST(AttentionF16, DenseMatchesReferenceAndF32PathBitwise) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  struct Shape {
    int64_t T, L, q_start;
    int H, Hkv, Dk, Dv;
  };
  // Llama-like GQA prefill and decode, odd head dims (masked f16 tails), rows past L.
  for (Shape s : {Shape{33, 33, 0, 9, 3, 64, 64}, Shape{1, 300, 299, 9, 3, 64, 64}, Shape{9, 140, 131, 6, 2, 20, 12},
                  Shape{5, 17, 0, 3, 1, 7, 5}, Shape{10, 40, 35, 2, 1, 8, 8}}) {
    const std::vector<float> q = ref::randn(static_cast<size_t>(s.T * s.H * s.Dk), rng);
    const HalfCache k = to_half(ref::randn(static_cast<size_t>(s.L * s.Hkv * s.Dk), rng));
    const HalfCache v = to_half(ref::randn(static_cast<size_t>(s.L * s.Hkv * s.Dv), rng));
    const ref::AttnResult want = ref::dense_causal(q, k.wide, v.wide, s.T, s.L, s.H, s.Hkv, s.Dk, s.Dv, s.q_start,
                                                   1.0 / std::sqrt(static_cast<float>(s.Dk)));
    for (bool simd : test::simd_modes()) {
      SCOPED_TRACE(testing::Message() << "simd=" << simd << " T=" << s.T << " L=" << s.L << " Dk=" << s.Dk);
      set_simd_enabled(simd);
      const Out half = run_dense(q, k, v, s.T, s.L, s.q_start, s.H, s.Hkv, s.Dk, s.Dv, true);
      expect_close(half.out, want.out, 2e-5, 2e-5, "out");
      expect_close(half.lse, want.lse, 2e-5, 2e-5, "lse");
      const Out wide = run_dense(q, k, v, s.T, s.L, s.q_start, s.H, s.Hkv, s.Dk, s.Dv, false);
      EXPECT_TRUE(test::bitwise_equal(half.out, wide.out));
      EXPECT_TRUE(test::bitwise_equal(half.lse, wide.lse));
    }
  }
}

TEST(AttentionF16, DenseNeverReadsPastTheCausalBound) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int H = 4, Hkv = 2, D = 16;
  const int64_t L = 50, pos = 20;  // decode at position 20: rows 21.. are in the future
  const std::vector<float> q = ref::randn(static_cast<size_t>(H * D), rng);
  HalfCache k = to_half(ref::randn(static_cast<size_t>(L * Hkv * D), rng));
  HalfCache v = to_half(ref::randn(static_cast<size_t>(L * Hkv * D), rng));
  const ref::AttnResult want = ref::dense_causal(q, k.wide, v.wide, 1, L, H, Hkv, D, D, pos, 0.25);
  for (size_t i = static_cast<size_t>((pos + 1) * Hkv * D); i < k.bits.size(); ++i) k.bits[i] = v.bits[i] = 0x7e00;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const Out got = run_dense(q, k, v, 1, L, pos, H, Hkv, D, D, true);
    expect_close(got.out, want.out, 2e-5, 2e-5, "out");
  }
}

TEST(AttentionF16, SparseMatchesReferenceAndF32PathBitwise) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int64_t T = 7, L = 90;
  const int H = 9, Hkv = 3, Dk = 64, Dv = 40, K = 20;
  const std::vector<float> q = ref::randn(static_cast<size_t>(T * H * Dk), rng);
  const HalfCache k = to_half(ref::randn(static_cast<size_t>(L * Hkv * Dk), rng));
  const HalfCache v = to_half(ref::randn(static_cast<size_t>(L * Hkv * Dv), rng));
  std::uniform_int_distribution<int32_t> pick(-1, static_cast<int32_t>(L - 1));
  std::vector<int32_t> idx(static_cast<size_t>(T * K));
  for (auto& i : idx) i = pick(rng);  // -1 slots and duplicates included
  std::fill(idx.begin() + K, idx.begin() + 2 * K, -1);  // a row with no valid slot
  const ref::AttnResult want = ref::sparse_gqa(q, k.wide, v.wide, idx, T, H, Hkv, Dk, Dv, K, 0.125);
  for (bool simd : test::simd_modes()) {
    SCOPED_TRACE(testing::Message() << "simd=" << simd);
    set_simd_enabled(simd);
    Out r[2];
    for (int half = 0; half < 2; ++half) {
      r[half].out.assign(static_cast<size_t>(T * H * Dv), 777.0f);
      r[half].lse.assign(static_cast<size_t>(T * H), 777.0f);
      ops::SparseAttentionParams p;
      p.q = q.data();
      if (half) {
        p.k16 = k.bits.data();
        p.v16 = v.bits.data();
      } else {
        p.k = k.wide.data();
        p.v = v.wide.data();
      }
      p.indices = idx.data();
      p.T = T, p.L = L, p.H = H, p.H_kv = Hkv, p.Dk = Dk, p.Dv = Dv, p.K = K, p.scale = 0.125f;
      p.out = r[half].out.data();
      p.lse = r[half].lse.data();
      ops::sparse_attention(p);
    }
    expect_close(r[1].out, want.out, 2e-5, 2e-5, "out");
    expect_close(r[1].lse, want.lse, 2e-5, 2e-5, "lse");
    EXPECT_TRUE(test::bitwise_equal(r[0].out, r[1].out));
    EXPECT_TRUE(test::bitwise_equal(r[0].lse, r[1].lse));
  }
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error (wanted '" << needle << "')";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(AttentionF16, BadCachePointersAreNamed) {
  std::vector<float> q(64), out(64), kf(64);
  std::vector<uint16_t> kh(64);
  ops::DenseAttentionParams p;
  p.q = q.data(), p.out = out.data(), p.T = 1, p.L = 1, p.H = 1, p.H_kv = 1, p.Dk = 64, p.Dv = 64;
  p.k = kf.data(), p.v = kf.data(), p.k16 = kh.data(), p.v16 = kh.data();
  expect_error([&] { ops::dense_attention(p); }, "not both");
  p.k = p.v = nullptr;
  p.v16 = nullptr;
  expect_error([&] { ops::dense_attention(p); }, "v16 is null");
  p.v16 = kh.data();
  p.k16 = nullptr;
  expect_error([&] { ops::dense_attention(p); }, "k16 is null");

  std::vector<int32_t> idx = {0};
  ops::SparseAttentionParams s;
  s.q = q.data(), s.out = out.data(), s.indices = idx.data(), s.T = 1, s.L = 1, s.H = 1, s.H_kv = 1;
  s.Dk = 64, s.Dv = 64, s.K = 1, s.k = kf.data(), s.v = kf.data(), s.k16 = kh.data(), s.v16 = kh.data();
  expect_error([&] { ops::sparse_attention(s); }, "not both");
  s.k = s.v = nullptr;
  s.k16 = nullptr;
  expect_error([&] { ops::sparse_attention(s); }, "k16 is null");
}

}  // namespace
}  // namespace indexshare

#include "ops/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "core/error.h"
#include "ref/attention_ref.h"

namespace indexshare {
namespace {

using ops::RopePairing;
using test::DispatchGuard;

constexpr double kUlp = 0x1p-24;  // half the float spacing at 1

struct RopeCase {
  int64_t T = 0;
  int H = 0, head_dim = 0, rot_offset = 0, rot_dim = 0;
  float theta = 10000.0f;
  RopePairing pairing = RopePairing::kHalfSplit;
  std::vector<int64_t> pos;     // [T]
  std::vector<float> inv_freq;  // empty: theta
  std::vector<float> x;         // [T, H, head_dim]
};

std::vector<float> run(const RopeCase& c, bool use_positions = true) {
  std::vector<float> y = c.x;
  ops::RopeParams p;
  p.x = y.data();
  p.positions = use_positions ? c.pos.data() : nullptr;
  p.pos0 = use_positions ? 0 : c.pos[0];
  p.T = c.T, p.H = c.H, p.head_dim = c.head_dim, p.rot_offset = c.rot_offset;
  p.rot_dim = c.rot_dim, p.theta = c.theta, p.pairing = c.pairing;
  p.inv_freq = c.inv_freq.empty() ? nullptr : c.inv_freq.data();
  ops::rope(p);
  return y;
}

RopeCase make_case(int64_t T, int H, int head_dim, int rot_offset, int rot_dim, float theta,
                   RopePairing pairing, int64_t max_pos, std::mt19937_64& rng) {
  RopeCase c;
  c.T = T, c.H = H, c.head_dim = head_dim, c.rot_offset = rot_offset, c.rot_dim = rot_dim;
  c.theta = theta, c.pairing = pairing;
  std::uniform_int_distribution<int64_t> pd(0, max_pos);
  for (int64_t t = 0; t < T; ++t) c.pos.push_back(pd(rng));
  c.x = ref::randn(static_cast<size_t>(T * H * head_dim), rng);
  return c;
}

// Largest error of the rotated pairs against the long-double closed form, in units of
// 2^-24 (|a| + |b|); the dims outside the slice must be bitwise unchanged.
double check_against_reference(const RopeCase& c, const std::vector<float>& y) {
  const bool half_split = c.pairing == RopePairing::kHalfSplit;
  const std::vector<double> want = ref::rope(c.x, c.pos, c.H, c.head_dim, c.rot_offset,
                                             c.rot_dim, c.theta, c.inv_freq, half_split);
  double worst = 0.0;
  const int half = c.rot_dim / 2;
  for (int64_t t = 0; t < c.T; ++t) {
    for (int h = 0; h < c.H; ++h) {
      const size_t base = static_cast<size_t>((t * c.H + h) * c.head_dim);
      for (int d = 0; d < c.head_dim; ++d) {
        if (d < c.rot_offset || d >= c.rot_offset + c.rot_dim) {
          EXPECT_TRUE(test::bitwise_equal({y[base + d]}, {c.x[base + d]}))
              << "pass-through dim " << d << " changed";
        }
      }
      for (int j = 0; j < half; ++j) {
        const size_t ia = base + c.rot_offset + (half_split ? j : 2 * j);
        const size_t ib = base + c.rot_offset + (half_split ? j + half : 2 * j + 1);
        const double mag = (std::fabs(c.x[ia]) + std::fabs(c.x[ib])) * kUlp + 1e-30;
        worst = std::max(worst, std::fabs(y[ia] - want[ia]) / mag);
        worst = std::max(worst, std::fabs(y[ib] - want[ib]) / mag);
      }
    }
  }
  return worst;
}

const char* name(RopePairing p) {
  return p == RopePairing::kHalfSplit ? "half-split" : "interleaved";
}

TEST(Rope, BothPairingsMatchClosedFormOnSlices) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  struct Slice {
    int head_dim, rot_offset, rot_dim;
  };
  // Indexer (rope first, 64 of 128), MLA q/latent (rope last, 64 after 512), a middle slice
  // and a short one with SIMD tails.
  for (Slice s : {Slice{128, 0, 64}, Slice{576, 512, 64}, Slice{20, 4, 10}, Slice{6, 0, 6}}) {
    for (RopePairing pairing : {RopePairing::kHalfSplit, RopePairing::kInterleaved}) {
      const RopeCase c = make_case(5, 3, s.head_dim, s.rot_offset, s.rot_dim, 10000.0f, pairing,
                                   5000, rng);
      for (bool simd : test::simd_modes()) {
        SCOPED_TRACE(testing::Message() << name(pairing) << " simd=" << simd << " slice "
                                        << s.rot_offset << "+" << s.rot_dim << "/" << s.head_dim);
        set_simd_enabled(simd);
        EXPECT_LE(check_against_reference(c, run(c)), 4.0);
      }
    }
  }
}

// Positions up to 2^20 with theta up to 8e6 (GLM-5.2): the error must not grow with the
// position (angles in float would be off by ~0.06 rad there).
TEST(Rope, LargePositionsStayAccurate) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  for (float theta : {1e4f, 1e6f, 8e6f}) {
    for (RopePairing pairing : {RopePairing::kHalfSplit, RopePairing::kInterleaved}) {
      RopeCase c = make_case(8, 2, 64, 0, 64, theta, pairing, int64_t{1} << 20, rng);
      c.pos[0] = int64_t{1} << 20;
      c.pos[1] = (int64_t{1} << 20) - 1;
      c.pos[2] = 1048575 - 12345;
      for (bool simd : test::simd_modes()) {
        SCOPED_TRACE(testing::Message() << name(pairing) << " theta=" << theta << " simd=" << simd);
        set_simd_enabled(simd);
        const double worst = check_against_reference(c, run(c));
        std::printf("[ info ] rope %s theta=%g simd=%d: max error %.2f x 2^-24 (|a|+|b|)\n",
                    name(pairing), theta, simd ? 1 : 0, worst);
        EXPECT_LE(worst, 4.0);
      }
    }
  }
}

TEST(Rope, PreservesNormAndRelativePosition) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  for (RopePairing pairing : {RopePairing::kHalfSplit, RopePairing::kInterleaved}) {
    SCOPED_TRACE(name(pairing));
    // q(m) . k(n) depends on m - n only: shift both by delta, at small and large positions.
    const std::vector<float> q = ref::randn(64, rng), k = ref::randn(64, rng);
    auto rotated = [&](const std::vector<float>& v, int64_t pos) {
      RopeCase c;
      c.T = 1, c.H = 1, c.head_dim = 64, c.rot_dim = 64, c.theta = 8e6f, c.pairing = pairing;
      c.pos = {pos};
      c.x = v;
      return run(c);
    };
    auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
      double s = 0.0;
      for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
      return s;
    };
    for (auto [m, n, delta] : {std::tuple<int64_t, int64_t, int64_t>{10, 3, 7},
                               {1000, 1000, 99999}, {500000, 123, 548000}, {7, 900000, 100}}) {
      const double base = dot(rotated(q, m), rotated(k, n));
      const double shifted = dot(rotated(q, m + delta), rotated(k, n + delta));
      EXPECT_NEAR(base, shifted, 2e-5 * std::sqrt(dot(q, q) * dot(k, k)))
          << "m=" << m << " n=" << n << " delta=" << delta;
    }
    // Norm of every rotated slice is kept.
    const RopeCase c = make_case(6, 4, 96, 32, 64, 1e6f, pairing, 1 << 20, rng);
    const std::vector<float> y = run(c);
    for (size_t head = 0; head < static_cast<size_t>(c.T * c.H); ++head) {
      double nx = 0.0, ny = 0.0;
      for (int d = 32; d < 96; ++d) {
        nx += static_cast<double>(c.x[head * 96 + d]) * c.x[head * 96 + d];
        ny += static_cast<double>(y[head * 96 + d]) * y[head * 96 + d];
      }
      EXPECT_NEAR(ny, nx, 2e-6 * nx) << "head " << head;
    }
  }
}

TEST(Rope, TableOverridesThetaAndPos0MatchesPositions) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  RopeCase c = make_case(7, 2, 32, 0, 32, 10000.0f, RopePairing::kInterleaved, 100000, rng);
  std::uniform_real_distribution<float> f(1e-5f, 1.0f);
  for (int j = 0; j < 16; ++j) c.inv_freq.push_back(f(rng));  // e.g. a YaRN-corrected table
  c.theta = -1.0f;  // ignored when a table is given
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    EXPECT_LE(check_against_reference(c, run(c)), 4.0) << "simd=" << simd;
    RopeCase seq = c;
    for (int64_t t = 0; t < c.T; ++t) seq.pos[static_cast<size_t>(t)] = 4242 + t;
    EXPECT_TRUE(test::bitwise_equal(run(seq, true), run(seq, false)));
  }
}

TEST(Rope, ThreadsBitwiseAndSimdMatchesScalar) {
  DispatchGuard guard;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  for (RopePairing pairing : {RopePairing::kHalfSplit, RopePairing::kInterleaved}) {
    const RopeCase c = make_case(300, 16, 128, 0, 64, 1e6f, pairing, 1 << 20, rng);
    set_simd_enabled(true);
    set_num_threads(1);
    const std::vector<float> a = run(c);
    set_num_threads(2);
    EXPECT_TRUE(test::bitwise_equal(a, run(c))) << name(pairing);
    set_simd_enabled(false);
    const std::vector<float> b = run(c);
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_NEAR(a[i], b[i], 4e-7 * (std::fabs(c.x[i]) + 1.0)) << name(pairing) << " i=" << i;
    }
  }
}

TEST(Rope, BadInputThrowsNamingTheProblem) {
  std::vector<float> x(2 * 3 * 16);
  std::vector<int64_t> pos = {0, 5};
  ops::RopeParams good;
  good.x = x.data(), good.positions = pos.data(), good.T = 2, good.H = 3, good.head_dim = 16;
  good.rot_offset = 0, good.rot_dim = 8;
  EXPECT_NO_THROW(ops::rope(good));
  auto expect_error = [](const ops::RopeParams& p, const std::string& needle) {
    try {
      ops::rope(p);
      ADD_FAILURE() << "no error; expected '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto bad = good;
  bad.rot_dim = 7;
  expect_error(bad, "rot_dim must be a positive even number, got 7");
  bad = good, bad.rot_dim = 0;
  expect_error(bad, "rot_dim must be a positive even number");
  bad = good, bad.rot_offset = 10;
  expect_error(bad, "rot_offset=10 + rot_dim=8 exceeds head_dim=16");
  bad = good, bad.rot_offset = -2;
  expect_error(bad, "rot_offset must be >= 0");
  bad = good, bad.theta = 0.0f;
  expect_error(bad, "theta must be finite and > 0");
  bad = good, bad.x = nullptr;
  expect_error(bad, "rope: x is null");
  bad = good, bad.H = 0;
  expect_error(bad, "H (heads) must be > 0");
  bad = good, bad.T = -1;
  expect_error(bad, "T (rows) must be >= 0");
  std::vector<int64_t> neg = {3, -4};
  bad = good, bad.positions = neg.data();
  expect_error(bad, "positions[1] = -4 is outside [0, 2^53]");
  bad = good, bad.positions = nullptr, bad.pos0 = -1;
  expect_error(bad, "pos0=-1");
  std::vector<float> table(4, 1.0f);
  table[2] = std::numeric_limits<float>::quiet_NaN();
  bad = good, bad.inv_freq = table.data();
  expect_error(bad, "inv_freq[2] = nan is not finite");
}

}  // namespace
}  // namespace indexshare

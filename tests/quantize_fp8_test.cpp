// FP8 e4m3 block quantisation against a float64 reference, and the indexer on FP8 q / k
// (decoded codes + scales through q_scale / k_scale) against the fp32 indexer.
#include "ops/quantize_fp8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "indexer_test_util.h"
#include "ops/indexer.h"
#include "ops/topk.h"
#include "ref/indexer_ref.h"

namespace indexshare {
namespace {

struct Quantized {
  std::vector<uint8_t> y;
  std::vector<float> scales;
};

Quantized quantize(const std::vector<float>& x, int64_t rows, int64_t cols, bool ue8m0) {
  Quantized q;
  q.y.assign(static_cast<size_t>(rows * cols), 0xAA);
  q.scales.assign(static_cast<size_t>(rows * ops::fp8_blocks_per_row(cols)), -1.0f);
  ops::Fp8QuantParams p;
  p.x = x.data();
  p.rows = rows;
  p.cols = cols;
  p.ue8m0 = ue8m0;
  p.y = q.y.data();
  p.scales = q.scales.data();
  ops::quantize_fp8(p);
  return q;
}

std::vector<float> dequantize(const Quantized& q, int64_t rows, int64_t cols,
                              bool with_scales = true) {
  std::vector<float> x(static_cast<size_t>(rows * cols), 9.0f);
  ops::Fp8DequantParams p;
  p.y = q.y.data();
  p.scales = with_scales ? q.scales.data() : nullptr;
  p.rows = rows;
  p.cols = cols;
  p.x = x.data();
  ops::dequantize_fp8(p);
  return x;
}

// Rows whose 128-blocks have very different magnitudes (1e-7 .. 1e3), a few exact zeros.
std::vector<float> random_rows(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> exponent(-7.0f, 3.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c0 = 0; c0 < cols; c0 += 128) {
      const float mag = std::pow(10.0f, exponent(rng));
      for (int64_t c = c0; c < std::min(cols, c0 + 128); ++c)
        x[static_cast<size_t>(r * cols + c)] = (c % 61 == 5) ? 0.0f : normal(rng) * mag;
    }
  }
  return x;
}

TEST(QuantizeFp8, MatchesFloat64Reference) {
  for (bool ue8m0 : {false, true}) {
    for (int64_t cols : {1, 128, 200, 384}) {
      const uint32_t seed = test::fresh_seed();
      SCOPED_TRACE(testing::Message() << "seed=" << seed << " ue8m0=" << ue8m0 << " cols=" << cols);
      std::mt19937 rng(seed);
      const int64_t rows = 37;
      const std::vector<float> x = random_rows(rows, cols, rng);
      const Quantized got = quantize(x, rows, cols, ue8m0);
      const ref::Fp8RefOut want = ref::quantize_fp8(x.data(), rows, cols, ue8m0);
      ASSERT_EQ(got.scales.size(), want.scale.size());
      for (size_t i = 0; i < got.scales.size(); ++i) {
        if (ue8m0) {
          ASSERT_EQ(static_cast<double>(got.scales[i]), want.scale[i]) << "block " << i;
        } else {  // fp32 division: within half an ulp
          ASSERT_LE(std::fabs(got.scales[i] - want.scale[i]), want.scale[i] * 0x1p-24)
              << "block " << i;
        }
      }
      int64_t near_midpoint = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        if (got.y[i] == want.code[i]) continue;
        // The fp32 quotient may round the other way only when x / scale sits on a midpoint.
        ASSERT_LT(want.margin[i], 1e-6) << "element " << i << " x=" << x[i] << " code "
                                        << int(got.y[i]) << " want " << int(want.code[i]);
        ++near_midpoint;
      }
      EXPECT_LE(near_midpoint, 2);
    }
  }
}

TEST(QuantizeFp8, DequantiseIsCodeTimesScaleAndWithinHalfAStep) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937 rng(seed);
  const int64_t rows = 23, cols = 300;
  const std::vector<float> x = random_rows(rows, cols, rng);
  for (bool ue8m0 : {false, true}) {
    const Quantized q = quantize(x, rows, cols, ue8m0);
    const std::vector<float> back = dequantize(q, rows, cols);
    const std::vector<float> codes = dequantize(q, rows, cols, /*with_scales=*/false);
    const int64_t nb = ops::fp8_blocks_per_row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = static_cast<size_t>(r * cols + c);
        const double s = q.scales[static_cast<size_t>(r * nb + c / 128)];
        const double v = ref::fp8e4m3_value(q.y[i]);
        ASSERT_EQ(static_cast<double>(codes[i]), v) << i;
        ASSERT_EQ(back[i], static_cast<float>(v * s)) << i;  // exact product, one rounding
        // e4m3: 3 mantissa bits, so half a step is 2^-4 relative (normal) or 2^-10 (subnormal).
        const double bound = s * std::max(std::fabs(x[i]) / s * 0x1p-4, 0x1p-10) * (1 + 1e-6);
        ASSERT_LE(std::fabs(static_cast<double>(back[i]) - x[i]), bound) << i << " x=" << x[i];
      }
    }
  }
}

TEST(QuantizeFp8, SpecialBlocks) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(4 * 128, 0.0f);
  x[1 * 128 + 5] = 2.0f;
  x[2 * 128 + 7] = nan;
  x[2 * 128 + 8] = 1.0f;
  x[3 * 128 + 9] = inf;
  x[3 * 128 + 10] = 1.0f;
  const Quantized q = quantize(x, 4, 128, false);
  EXPECT_EQ(q.scales[0], 1e-4f / 448.0f);  // all-zero block: the amax floor
  EXPECT_EQ(q.y[0], 0);
  EXPECT_EQ(q.scales[1], 2.0f / 448.0f);
  EXPECT_EQ(q.y[1 * 128 + 5], 0x7e);  // 448
  EXPECT_TRUE(std::isnan(q.scales[2]));
  for (int c = 0; c < 128; ++c) EXPECT_EQ(q.y[2 * 128 + c] & 0x7f, 0x7f) << c;  // all NaN
  EXPECT_TRUE(std::isinf(q.scales[3]));
  EXPECT_EQ(q.y[3 * 128 + 9] & 0x7f, 0x7f);  // inf / inf
  EXPECT_EQ(q.y[3 * 128 + 10] & 0x7f, 0);    // 1 / inf
  // ue8m0 of an exact power of two stays put; just above it goes up one.
  std::vector<float> p2 = {448.0f * 0.25f, std::nextafter(448.0f * 0.25f, 1e9f)};
  const Quantized a = quantize({p2[0]}, 1, 1, true), b = quantize({p2[1]}, 1, 1, true);
  EXPECT_EQ(a.scales[0], 0.25f);
  EXPECT_EQ(b.scales[0], 0.5f);
  EXPECT_NO_THROW(quantize({}, 0, 128, false));
}

TEST(QuantizeFp8, BadInputNamesTheField) {
  std::vector<float> x(256);
  std::vector<uint8_t> y(256);
  std::vector<float> s(2);
  auto q = [&](auto mutate) {
    ops::Fp8QuantParams p{x.data(), 2, 128, false, y.data(), s.data()};
    mutate(p);
    return [p] { ops::quantize_fp8(p); };
  };
  test::expect_error(q([](auto& p) { p.rows = -1; }), "rows = -1");
  test::expect_error(q([](auto& p) { p.cols = -7; }), "cols = -7");
  test::expect_error(q([](auto& p) { p.x = nullptr; }), "x is null");
  test::expect_error(q([](auto& p) { p.y = nullptr; }), "y is null");
  test::expect_error(q([](auto& p) { p.scales = nullptr; }), "scales is null");
  test::expect_error(q([](auto& p) { p.rows = std::numeric_limits<int64_t>::max(); }), "overflows");
  auto d = [&](auto mutate) {
    ops::Fp8DequantParams p{y.data(), s.data(), 2, 128, x.data()};
    mutate(p);
    return [p] { ops::dequantize_fp8(p); };
  };
  test::expect_error(d([](auto& p) { p.rows = -2; }), "rows = -2");
  test::expect_error(d([](auto& p) { p.y = nullptr; }), "y is null");
  test::expect_error(d([](auto& p) { p.x = nullptr; }), "x is null");
}

// The indexer on FP8 inputs (DSA layout: q per (token, head), k per token, one 128-block each)
// against the fp32 indexer on the original values.
TEST(QuantizeFp8, IndexerOnFp8InputsTracksFp32) {
  test::ModeGuard guard;
  const int64_t T = 8, L = 4096;
  const int H = 16, D = 128, k = 256;
  for (bool ue8m0 : {false, true}) {
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " ue8m0=" << ue8m0);
    test::IndexerInputs in = test::make_inputs(T, L, H, D, L - T, seed);
    const Quantized qq = quantize(in.q, T * H, D, ue8m0), kq = quantize(in.k, L, D, ue8m0);
    const std::vector<float> q8 = dequantize(qq, T * H, D, false), k8 = dequantize(kq, L, D, false);
    ops::IndexerParams p8 = in.p;
    p8.q = q8.data();
    p8.k = k8.data();
    p8.q_scale = qq.scales.data();
    p8.k_scale = kq.scales.data();
    std::vector<float> s32(static_cast<size_t>(T * L)), s8(s32.size());
    ops::indexer_scores(in.p, s32.data());
    ops::indexer_scores(p8, s8.data());
    ref::IndexerRefInput r{in.p.q, in.p.k, in.p.weights, nullptr, nullptr, in.p.scale, T, L,
                           H,      D,      L - T};
    const ref::IndexerRefOut exact = ref::indexer_scores(r);
    // Stated tolerance, relative to sum_h |w'_h| sum_d |q_hd k_d|: at most 2^-5 per score and
    // an RMS of at most 3e-3 (observed on Gaussian data: ~6e-3 and ~1.1e-3; the worst case of
    // two e4m3 roundings of 2^-4 per product would be 2^-3).
    double worst = 0.0, sq = 0.0;
    int64_t n = 0;
    for (size_t i = 0; i < s32.size(); ++i) {
      if (exact.score[i] == ref::kRefNegInf) {
        ASSERT_EQ(s8[i], s32[i]);  // both masked
        continue;
      }
      ++n;
      const double rel = std::fabs(static_cast<double>(s8[i]) - s32[i]) / exact.cond[i];
      worst = std::max(worst, rel);
      sq += rel * rel;
    }
    EXPECT_LE(worst, 0x1p-5);
    EXPECT_LE(std::sqrt(sq / static_cast<double>(n)), 3e-3);
    std::vector<int32_t> i32(static_cast<size_t>(T * k)), i8(i32.size());
    ops::TopkParams tp;
    tp.T = T;
    tp.L = L;
    tp.k = k;
    tp.scores = s32.data();
    tp.indices = i32.data();
    ops::topk(tp);
    tp.scores = s8.data();
    tp.indices = i8.data();
    ops::topk(tp);
    const double overlap = ref::topk_overlap(i8, i32, T, k);
    RecordProperty(ue8m0 ? "overlap_ue8m0" : "overlap", std::to_string(overlap));
    std::printf(
        "fp8 indexer: worst %.3g rms %.3g (relative to sum |w'||q.k|), top-%d overlap %.4f\n",
        worst, std::sqrt(sq / static_cast<double>(n)), k, overlap);
    EXPECT_GE(overlap, 0.95) << "worst " << worst << " rms "
                             << std::sqrt(sq / static_cast<double>(n));
  }
}

}  // namespace
}  // namespace indexshare

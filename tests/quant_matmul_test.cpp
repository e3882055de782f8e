// quant_matmul against float64 references: tight on the quantised activations the kernel is
// specified to use, looser (with a derived bound) on the original f32 activations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/quant_matmul.h"
#include "ref/quant_ref.h"

namespace indexshare::ops {
namespace {

constexpr double kU = 0x1p-24;  // f32 unit roundoff

struct Case {
  GgmlType type;
  uint32_t ref_type;
  int64_t M, N, K;
};

std::string label(const Case& c) {
  return ::testing::PrintToString(static_cast<uint32_t>(c.type)) + " M=" + std::to_string(c.M) +
         " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K);
}

// Random weights for a type: quantised blocks with realistic scales (Q8_0 codes cover the full
// int8 range, -128 included), float types from N(0, 0.1).
std::vector<uint8_t> random_weights(std::mt19937& rng, uint32_t type, int64_t N, int64_t K) {
  const int64_t bytes = ref::ref_row_bytes(type, K) * N;
  std::vector<uint8_t> w(static_cast<size_t>(bytes));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<double> scale(2e-3, 2e-2), minv(-0.15, 0.0);
  std::normal_distribution<double> g(0.0, 0.1);
  auto put16 = [&](size_t at, uint16_t v) { std::memcpy(&w[at], &v, 2); };
  const int64_t n_el = N * K;
  switch (type) {
    case ref::kRefQ4_1:
      for (int64_t b = 0; b < n_el / 32; ++b) {
        put16(b * 20, ref::f16_bits(scale(rng)));
        put16(b * 20 + 2, ref::f16_bits(minv(rng)));
        for (int j = 0; j < 16; ++j) w[b * 20 + 4 + j] = static_cast<uint8_t>(byte(rng));
      }
      break;
    case ref::kRefQ8_0:
      for (int64_t b = 0; b < n_el / 32; ++b) {
        put16(b * 34, ref::f16_bits(scale(rng) / 8));
        for (int j = 0; j < 32; ++j) w[b * 34 + 2 + j] = static_cast<uint8_t>(byte(rng));
      }
      break;
    case ref::kRefF32:
      for (int64_t i = 0; i < n_el; ++i) {
        const float f = static_cast<float>(g(rng));
        std::memcpy(&w[4 * i], &f, 4);
      }
      break;
    case ref::kRefF16:
      for (int64_t i = 0; i < n_el; ++i) put16(2 * i, ref::f16_bits(g(rng)));
      break;
    case ref::kRefBF16:
      for (int64_t i = 0; i < n_el; ++i) {
        const float f = static_cast<float>(g(rng));
        uint32_t u;
        std::memcpy(&u, &f, 4);
        put16(2 * i, static_cast<uint16_t>(u >> 16));  // truncation is a valid bf16 value
      }
      break;
  }
  return w;
}

std::vector<float> random_x(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = g(rng);
  return x;
}

std::vector<float> run(const Case& c, const std::vector<uint8_t>& w, const std::vector<float>& x) {
  std::vector<float> y(static_cast<size_t>(c.M * c.N), -1.0f);
  QMatmulParams p;
  p.w = w.data();
  p.type = c.type;
  p.N = c.N;
  p.K = c.K;
  p.x = x.data();
  p.M = c.M;
  p.y = y.data();
  quant_matmul(p);
  return y;
}

// Checks y against (a) the float64 product of dequantised weights and the *quantised*
// activations, within f32 accumulation error: (blocks + 8) u Σ|terms| (each block adds one
// fused rounding per lane, the horizontal sum a few more); and (b) for quantised types, the
// float64 product with the original activations, within the activation quantisation bound
// derived per block below.
void check_against_refs(const Case& c, const std::vector<uint8_t>& w, const std::vector<float>& x,
                        const std::vector<float>& y) {
  const bool quant = c.ref_type == ref::kRefQ4_1 || c.ref_type == ref::kRefQ8_0;
  const int64_t nb = c.K / 32;
  const int64_t row_bytes = ref::ref_row_bytes(c.ref_type, c.K);
  double err2 = 0, ref2 = 0;
  for (int64_t m = 0; m < c.M; ++m) {
    const float* xm = &x[m * c.K];
    std::vector<ref::RefQ8Block> a;
    for (int64_t b = 0; quant && b < nb; ++b) a.push_back(ref::quantize_q8_block(xm + 32 * b));
    for (int64_t n = 0; n < c.N; ++n) {
      const uint8_t* wr = &w[n * row_bytes];
      const double got = y[m * c.N + n];
      const auto wd = ref::dequant_row(c.ref_type, wr, c.K);
      double mag_exact = 0;
      const double exact = ref::dot_exact(wd, xm, &mag_exact);
      if (!quant) {
        const double tol = (static_cast<double>(c.K) + 8) * kU * mag_exact + 1e-30;
        ASSERT_NEAR(got, exact, tol) << "m=" << m << " n=" << n;
        continue;
      }
      double mag = 0;
      const double tight = ref::dot_quantised(c.ref_type, wr, a, &mag);
      ASSERT_NEAR(got, tight, (static_cast<double>(nb) + 8) * kU * mag + 1e-30)
          << "quantised activations, m=" << m << " n=" << n;
      // Activation error per element: |x - q d16| <= d/2 (rounding) + 127 d 2^-11 (fp16 d)
      // + 127 d 2^-22 (f32 x * (1/d)); Q4_1's s term: |s16 - d16 Σq| <= 2^-10 d |Σq|.
      double bound = 0;
      for (int64_t b = 0; b < nb; ++b) {
        double amax = 0, wabs = 0;
        int sumq = 0;
        for (int j = 0; j < 32; ++j) {
          amax = std::max(amax, std::fabs(static_cast<double>(xm[32 * b + j])));
          wabs += std::fabs(wd[32 * b + j]);
          sumq += a[b].q[j];
        }
        const double d = amax / 127;
        bound += wabs * d * (0.5 + 127 * 0x1p-11 + 127 * 0x1p-22);
        if (c.ref_type == ref::kRefQ4_1) {
          bound += std::fabs(ref::f16_value(ref::rd16(wr + 20 * b + 2))) * 0x1p-10 * d * std::abs(sumq);
        }
      }
      ASSERT_NEAR(got, exact, bound * 1.001 + (nb + 8) * kU * mag) << "f32 activations, m=" << m << " n=" << n;
      err2 += (got - exact) * (got - exact);
      ref2 += exact * exact;
    }
  }
  // The bound above is loose by design; the typical error is far below it.
  if (quant && ref2 > 0) {
    EXPECT_LT(err2 / ref2, 1e-3) << "NMSE vs f32 activations";
  }
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = [] {
    std::vector<Case> v;
    const std::pair<GgmlType, uint32_t> types[] = {
        {GgmlType::kQ4_1, ref::kRefQ4_1}, {GgmlType::kQ8_0, ref::kRefQ8_0},
        {GgmlType::kF16, ref::kRefF16},   {GgmlType::kF32, ref::kRefF32},
        {GgmlType::kBF16, ref::kRefBF16}};
    for (const auto& [t, rt] : types) {
      for (int64_t M : {1, 3, 17, 64}) {
        // K a multiple of 32 but not of 256; N odd so every tile remainder runs.
        v.push_back({t, rt, M, 37, 96});
        if (M != 64) v.push_back({t, rt, M, 6, 416});
      }
    }
    return v;
  }();
  return all;
}

TEST(QuantMatmul, MatchesReferencesSimdAndScalar) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (const Case& c : cases()) {
    SCOPED_TRACE(label(c));
    const auto w = random_weights(rng, c.ref_type, c.N, c.K);
    const auto x = random_x(rng, c.M * c.K);
    set_simd_enabled(true);
    const auto y_simd = run(c, w, x);
    check_against_refs(c, w, x, y_simd);
    set_simd_enabled(false);
    const auto y_scalar = run(c, w, x);
    set_simd_enabled(true);
    {
      SCOPED_TRACE("scalar");
      check_against_refs(c, w, x, y_scalar);
    }
    if (HasFatalFailure()) return;
  }
}

// The AVX-512 VNNI Q4_1 kernel promises the AVX2 kernel's outputs bit for bit (distillation and
// every recorded perplexity rest on it); on a machine without VNNI both runs take AVX2 and the
// test still checks the switch itself.
TEST(QuantMatmul, Avx512VnniEqualsAvx2Bitwise) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  // M and N around the 4 x 4 and 4 x 2 tiles and their remainders; M = 1 is the decode path.
  for (int64_t M : {1, 3, 4, 7, 64}) {
    for (int64_t N : {1, 2, 3, 4, 6, 11}) {
      const Case c{GgmlType::kQ4_1, ref::kRefQ4_1, M, N, 160};
      SCOPED_TRACE(label(c));
      const auto w = random_weights(rng, c.ref_type, c.N, c.K);
      const auto x = random_x(rng, c.M * c.K);
      set_avx512_enabled(false);
      const auto y_avx2 = run(c, w, x);
      set_avx512_enabled(true);
      const auto y_vnni = run(c, w, x);
      // (The AVX2 outputs themselves are checked against float64 references above.)
      EXPECT_EQ(std::memcmp(y_avx2.data(), y_vnni.data(), y_avx2.size() * 4), 0);
    }
  }
  set_avx512_enabled(false);
  EXPECT_FALSE(use_avx512_vnni());
  set_avx512_enabled(true);
  EXPECT_EQ(use_avx512_vnni(), use_avx2() && cpu_features().avx512_vnni);
}

// Odd K for the float types (K % 8 != 0 exercises the tail), and F32 with K = 1.
TEST(QuantMatmul, FloatTypesAnyK) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (int64_t K : {1, 13, 75}) {
    for (auto [t, rt] : {std::pair{GgmlType::kF32, ref::kRefF32}, std::pair{GgmlType::kF16, ref::kRefF16}}) {
      const Case c{t, rt, 5, 9, K};
      SCOPED_TRACE(label(c));
      const auto w = random_weights(rng, rt, c.N, K);
      const auto x = random_x(rng, c.M * K);
      for (bool simd : {true, false}) {
        set_simd_enabled(simd);
        check_against_refs(c, w, x, run(c, w, x));
      }
      set_simd_enabled(true);
    }
  }
}

// Every output is computed by one thread in a fixed order: 1 and 2 threads agree bitwise, and
// row m of a batch equals the M = 1 result for that row.
TEST(QuantMatmul, DeterministicAcrossThreadsAndBatch) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  const int saved = num_threads();
  for (const Case& c : cases()) {
    if (c.M != 17) continue;
    SCOPED_TRACE(label(c));
    const Case big{c.type, c.ref_type, 17, 203, c.K};
    const auto w = random_weights(rng, big.ref_type, big.N, big.K);
    const auto x = random_x(rng, big.M * big.K);
    for (bool simd : {true, false}) {
      SCOPED_TRACE(simd ? "simd" : "scalar");
      set_simd_enabled(simd);
      set_num_threads(1);
      const auto y1 = run(big, w, x);
      set_num_threads(2);
      const auto y2 = run(big, w, x);
      EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << "1 vs 2 threads";
      for (int64_t m : {0, 5, 16}) {
        const Case one{big.type, big.ref_type, 1, big.N, big.K};
        const std::vector<float> xm(x.begin() + m * big.K, x.begin() + (m + 1) * big.K);
        const auto ym = run(one, w, xm);
        EXPECT_EQ(std::memcmp(ym.data(), &y1[m * big.N], ym.size() * 4), 0) << "row " << m;
      }
    }
  }
  set_simd_enabled(true);
  set_num_threads(saved);
}

TEST(QuantMatmul, StridedInputAndOutput) {
  std::mt19937 rng(7);
  const Case c{GgmlType::kQ4_1, ref::kRefQ4_1, 5, 11, 64};
  const auto w = random_weights(rng, c.ref_type, c.N, c.K);
  const auto x = random_x(rng, c.M * c.K);
  const auto dense = run(c, w, x);
  const int64_t ldx = 70, ldy = 13;
  std::vector<float> xs(static_cast<size_t>(c.M * ldx), NAN), ys(static_cast<size_t>(c.M * ldy), 42.0f);
  for (int64_t m = 0; m < c.M; ++m) std::copy_n(&x[m * c.K], c.K, &xs[m * ldx]);
  QMatmulParams p{w.data(), c.type, c.N, c.K, xs.data(), c.M, ys.data(), ldx, ldy};
  quant_matmul(p);
  for (int64_t m = 0; m < c.M; ++m) {
    EXPECT_EQ(std::memcmp(&ys[m * ldy], &dense[m * c.N], c.N * 4), 0) << m;
    for (int64_t n = c.N; n < ldy; ++n) EXPECT_EQ(ys[m * ldy + n], 42.0f) << "padding overwritten";
  }
}

TEST(QuantMatmul, EdgeSizesAndNonFinite) {
  std::mt19937 rng(3);
  const auto w = random_weights(rng, ref::kRefQ4_1, 4, 64);
  std::vector<float> y(8, 5.0f);
  // M = 0 and N = 0 write nothing; null pointers are fine then.
  quant_matmul({nullptr, GgmlType::kQ4_1, 4, 64, nullptr, 0, nullptr});
  quant_matmul({nullptr, GgmlType::kQ4_1, 0, 64, nullptr, 2, nullptr});
  // K = 0: an empty sum is zero.
  quant_matmul({nullptr, GgmlType::kQ4_1, 4, 0, nullptr, 2, y.data()});
  for (float v : y) EXPECT_EQ(v, 0.0f);
  // A NaN or inf in one activation row makes that row NaN (documented) and leaves the others.
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    const uint32_t rt = t == GgmlType::kQ4_1 ? ref::kRefQ4_1 : ref::kRefQ8_0;
    const auto wq = random_weights(rng, rt, 4, 64);
    auto x = random_x(rng, 3 * 64);
    x[64 + 40] = NAN;
    x[128 + 3] = INFINITY;
    for (bool simd : {true, false}) {
      set_simd_enabled(simd);
      const auto out = run({t, rt, 3, 4, 64}, wq, x);
      for (int n = 0; n < 4; ++n) {
        EXPECT_TRUE(std::isfinite(out[n]));
        EXPECT_TRUE(std::isnan(out[4 + n]));
        EXPECT_TRUE(std::isnan(out[8 + n]));
      }
    }
    set_simd_enabled(true);
  }
}

void expect_error(const QMatmulParams& p, const std::string& needle) {
  try {
    quant_matmul(p);
    ADD_FAILURE() << "no error; expected one naming '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(QuantMatmul, BadArguments) {
  std::vector<uint8_t> w(40 * 64);
  std::vector<float> x(64 * 4), y(64);
  expect_error({w.data(), GgmlType::kQ4_1, 2, 48, x.data(), 1, y.data()}, "K = 48");
  expect_error({w.data(), GgmlType::kQ8_0, 2, 40, x.data(), 1, y.data()}, "K = 40");
  expect_error({w.data(), static_cast<GgmlType>(77), 2, 32, x.data(), 1, y.data()}, "id 77");
  expect_error({w.data(), GgmlType::kQ4_0, 2, 32, x.data(), 1, y.data()}, "q4_0");
  expect_error({w.data(), GgmlType::kQ4_1, 2, 32, x.data(), -1, y.data()}, "M = -1");
  expect_error({w.data(), GgmlType::kQ4_1, -2, 32, x.data(), 1, y.data()}, "N = -2");
  expect_error({nullptr, GgmlType::kQ4_1, 2, 32, x.data(), 1, y.data()}, "w is null");
  expect_error({w.data(), GgmlType::kQ4_1, 2, 32, nullptr, 1, y.data()}, "x is null");
  expect_error({w.data(), GgmlType::kQ4_1, 2, 32, x.data(), 1, nullptr}, "y is null");
  expect_error({w.data(), GgmlType::kQ4_1, 2, 32, x.data(), 2, y.data(), 16}, "ldx = 16");
  expect_error({w.data(), GgmlType::kQ4_1, 2, 32, x.data(), 2, y.data(), 0, 1}, "ldy = 1");
  expect_error({w.data() + 1, GgmlType::kF32, 2, 4, x.data(), 1, y.data()}, "w is not 4-byte aligned");
  EXPECT_EQ(quant_matmul_activation_type(GgmlType::kQ4_1), GgmlType::kQ8_1);
  EXPECT_EQ(quant_matmul_activation_type(GgmlType::kQ8_0), GgmlType::kQ8_0);
  EXPECT_EQ(quant_matmul_activation_type(GgmlType::kF16), GgmlType::kF32);
}

}  // namespace
}  // namespace indexshare::ops

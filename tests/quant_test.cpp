// Block formats: dequantisation against the float64 closed form of each block formula, and
// the Q8_0 / Q8_1 / Q4_1 quantisers against an independent reference and their error bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "ops/quant.h"
#include "ref/quant_ref.h"

namespace indexshare::ops {
namespace {

// Runs body once with the SIMD kernels (when the CPU has them) and once with the scalar ones.
template <class F>
void both_paths(F&& body) {
  for (bool simd : {true, false}) {
    SCOPED_TRACE(simd ? "simd" : "scalar");
    set_simd_enabled(simd);
    body();
  }
  set_simd_enabled(true);
}

// Random fp16 bits for a finite scale in [lo, hi) (by value).
uint16_t rand_f16(std::mt19937& rng, double lo, double hi) {
  std::uniform_real_distribution<double> u(lo, hi);
  return ref::f16_bits(u(rng));
}

std::vector<uint8_t> random_q4_1(std::mt19937& rng, int64_t blocks) {
  std::vector<uint8_t> out(static_cast<size_t>(blocks * 20));
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* p = &out[b * 20];
    const uint16_t d = rand_f16(rng, 1e-4, 0.5), m = rand_f16(rng, -4.0, 4.0);
    std::memcpy(p, &d, 2);
    std::memcpy(p + 2, &m, 2);
    for (int j = 0; j < 16; ++j) p[4 + j] = static_cast<uint8_t>(byte(rng));
  }
  return out;
}

std::vector<uint8_t> random_q8(std::mt19937& rng, int64_t blocks, int block_bytes) {
  std::vector<uint8_t> out(static_cast<size_t>(blocks * block_bytes));
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* p = &out[b * block_bytes];
    const uint16_t d = rand_f16(rng, -0.5, 0.5);
    std::memcpy(p, &d, 2);
    if (block_bytes == 36) {
      const uint16_t s = rand_f16(rng, -8, 8);
      std::memcpy(p + 2, &s, 2);
    }
    for (int j = block_bytes - 32; j < block_bytes; ++j) p[j] = static_cast<uint8_t>(byte(rng));
  }
  return out;
}

// Expects got[i] == (float)ref[i] (NaN matching NaN).
void expect_equal_rounded(const std::vector<float>& got, const std::vector<double>& ref) {
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(ref[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << "element " << i;
    } else {
      EXPECT_EQ(got[i], static_cast<float>(ref[i])) << "element " << i;
    }
  }
}

TEST(Quant, RefF16EncoderRoundTripsEveryCode) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const double v = ref::f16_value(static_cast<uint16_t>(c));
    if (std::isnan(v)) continue;
    ASSERT_EQ(ref::f16_bits(v), c) << c;
  }
  EXPECT_EQ(ref::f16_bits(65519.0), 0x7bff);
  EXPECT_EQ(ref::f16_bits(65520.0), 0x7c00);      // half an ulp above max rounds to inf
  EXPECT_EQ(ref::f16_bits(1.0 + 1.0 / 2048), 0x3c00);  // tie to even
}

// Every block's values in float equal the exact q * d + m rounded once: q * d is exact in f32
// (4- or 8-bit q times an 11-bit d), so the kernels may fuse or not and still agree.
TEST(Quant, DequantizeQ4_1MatchesClosedForm) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (int64_t blocks : {1, 3, 18}) {
    const auto raw = random_q4_1(rng, blocks);
    const auto expect = ref::dequant_row(ref::kRefQ4_1, raw.data(), blocks * 32);
    both_paths([&] {
      std::vector<float> got(static_cast<size_t>(blocks * 32));
      dequantize_row(GgmlType::kQ4_1, raw.data(), got.data(), blocks * 32);
      expect_equal_rounded(got, expect);
    });
  }
}

TEST(Quant, DequantizeQ4_1NibbleOrder) {
  // d = 1, m = 0; byte j = (j+1) | (15-j) << 4: element j is j+1 (low nibble), j+16 is 15-j.
  std::vector<uint8_t> raw(20, 0);
  raw[1] = 0x3c;  // d = 1.0
  for (int j = 0; j < 16; ++j) raw[4 + j] = static_cast<uint8_t>(((j + 1) & 15) | ((15 - j) << 4));
  both_paths([&] {
    std::vector<float> got(32);
    dequantize_row(GgmlType::kQ4_1, raw.data(), got.data(), 32);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(got[j], static_cast<float>((j + 1) & 15)) << j;
      EXPECT_EQ(got[j + 16], static_cast<float>(15 - j)) << j;
    }
  });
}

TEST(Quant, DequantizeQ8MatchesClosedForm) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (int64_t blocks : {1, 5, 13}) {
    const auto q80 = random_q8(rng, blocks, 34);
    const auto q81 = random_q8(rng, blocks, 36);
    both_paths([&] {
      std::vector<float> got(static_cast<size_t>(blocks * 32));
      dequantize_row(GgmlType::kQ8_0, q80.data(), got.data(), blocks * 32);
      expect_equal_rounded(got, ref::dequant_row(ref::kRefQ8_0, q80.data(), blocks * 32));
      dequantize_row(GgmlType::kQ8_1, q81.data(), got.data(), blocks * 32);
      expect_equal_rounded(got, ref::dequant_row(ref::kRefQ8_1, q81.data(), blocks * 32));
    });
  }
}

TEST(Quant, DequantizeFloatTypesEveryCode) {
  // F16 and BF16 over all 65536 codes (subnormals, infinities, NaNs); F32 passes through.
  std::vector<uint16_t> codes(65536);
  for (uint32_t c = 0; c < 65536; ++c) codes[c] = static_cast<uint16_t>(c);
  const auto* bytes = reinterpret_cast<const uint8_t*>(codes.data());
  both_paths([&] {
    std::vector<float> got(65536);
    dequantize_row(GgmlType::kF16, codes.data(), got.data(), 65536);
    expect_equal_rounded(got, ref::dequant_row(ref::kRefF16, bytes, 65536));
    dequantize_row(GgmlType::kBF16, codes.data(), got.data(), 65536);
    expect_equal_rounded(got, ref::dequant_row(ref::kRefBF16, bytes, 65536));
  });
  const std::vector<float> f = {1.5f, -0.0f, INFINITY, 1e-42f};
  std::vector<float> got(4);
  dequantize_row(GgmlType::kF32, f.data(), got.data(), 4);
  EXPECT_EQ(std::memcmp(f.data(), got.data(), 16), 0);
}

TEST(Quant, DequantizeNonFiniteScalePropagates) {
  std::vector<uint8_t> raw(34, 0);
  raw[0] = 0x00;
  raw[1] = 0x7e;  // d = NaN
  raw[2] = 5;
  both_paths([&] {
    std::vector<float> got(32);
    dequantize_row(GgmlType::kQ8_0, raw.data(), got.data(), 32);
    for (float v : got) EXPECT_TRUE(std::isnan(v));
  });
}

TEST(Quant, DequantizeErrors) {
  std::vector<uint8_t> raw(64);
  std::vector<float> out(64);
  try {
    dequantize_row(GgmlType::kQ4_1, raw.data(), out.data(), 48);
    ADD_FAILURE() << "no error for n = 48";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n = 48"), std::string::npos) << e.what();
  }
  try {
    dequantize_row(GgmlType::kQ4_0, raw.data(), out.data(), 32);
    ADD_FAILURE() << "no error for q4_0";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q4_0"), std::string::npos) << e.what();
  }
  try {
    dequantize_row(static_cast<GgmlType>(77), raw.data(), out.data(), 32);
    ADD_FAILURE() << "no error for type 77";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("id 77"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dequantize_row(GgmlType::kQ8_0, nullptr, out.data(), 32), Error);
  EXPECT_THROW(dequantize_row(GgmlType::kF32, raw.data(), out.data(), -1), Error);
  EXPECT_NO_THROW(dequantize_row(GgmlType::kQ8_0, nullptr, nullptr, 0));
  EXPECT_FALSE(can_dequantize(GgmlType::kQ6_K));
  EXPECT_TRUE(can_dequantize(GgmlType::kBF16));
}

void expect_q8_blocks(const std::vector<float>& x, bool with_sum) {
  const int64_t nb = static_cast<int64_t>(x.size()) / 32;
  std::vector<BlockQ8_0> b0(static_cast<size_t>(nb));
  std::vector<BlockQ8_1> b1(static_cast<size_t>(nb));
  if (with_sum) quantize_row_q8_1(x.data(), b1.data(), static_cast<int64_t>(x.size()));
  else quantize_row_q8_0(x.data(), b0.data(), static_cast<int64_t>(x.size()));
  for (int64_t b = 0; b < nb; ++b) {
    const ref::RefQ8Block r = ref::quantize_q8_block(&x[b * 32]);
    const uint16_t d = with_sum ? b1[b].d : b0[b].d;
    const int8_t* q = with_sum ? b1[b].qs : b0[b].qs;
    EXPECT_EQ(d, r.d_bits) << "block " << b;
    if (with_sum) {
      EXPECT_EQ(b1[b].s, r.s_bits) << "block " << b;
    }
    EXPECT_EQ(std::memcmp(q, r.q, 32), 0) << "block " << b;
    // Error bound of round-to-nearest with the f32 scale: |x - q d| <= d / 2 (+ f32 slack).
    const double amax = [&] {
      double a = 0;
      for (int j = 0; j < 32; ++j) a = std::max(a, std::fabs(static_cast<double>(x[b * 32 + j])));
      return a;
    }();
    if (!std::isfinite(amax)) continue;
    const double dd = amax / 127.0;
    for (int j = 0; j < 32; ++j) {
      EXPECT_LE(std::fabs(x[b * 32 + j] - q[j] * dd), dd * (0.5 + 1e-5)) << b << " " << j;
    }
  }
}

TEST(Quant, QuantizeQ8MatchesReference) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(32 * 40);
  for (size_t i = 0; i < x.size(); ++i) x[i] = g(rng) * (i < 32 * 20 ? 1.0f : 1e3f);
  for (int j = 0; j < 32; ++j) x[32 * 3 + j] = 0.0f;  // an all-zero block
  both_paths([&] {
    expect_q8_blocks(x, false);
    expect_q8_blocks(x, true);
  });
}

TEST(Quant, QuantizeQ8TiesToEvenAndEdges) {
  // amax = 127 gives d = 1 exactly, so x * (1/d) = x and the rounding of halves shows.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = 3.5f;
  x[3] = -2.5f;
  x[4] = -127.0f;
  x[5] = 0.49f;
  both_paths([&] {
    std::vector<BlockQ8_1> b(1);
    quantize_row_q8_1(x.data(), b.data(), 32);
    EXPECT_EQ(b[0].d, 0x3c00);  // 1.0
    EXPECT_EQ(b[0].qs[0], 127);
    EXPECT_EQ(b[0].qs[1], 2);
    EXPECT_EQ(b[0].qs[2], 4);
    EXPECT_EQ(b[0].qs[3], -2);
    EXPECT_EQ(b[0].qs[4], -127);
    EXPECT_EQ(b[0].qs[5], 0);
    EXPECT_EQ(b[0].s, 0x4400);  // s = d * sum = 1 * (127 + 2 + 4 - 2 - 127) = 4.0
  });
}

TEST(Quant, QuantizeQ8NonFiniteBlock) {
  std::vector<float> x(64, 1.0f);
  x[5] = NAN;
  x[40] = -INFINITY;
  both_paths([&] {
    std::vector<BlockQ8_0> b(2);
    quantize_row_q8_0(x.data(), b.data(), 64);
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(b[i].d, 0x7e00);
      for (int j = 0; j < 32; ++j) EXPECT_EQ(b[i].qs[j], 0);
    }
  });
  std::vector<float> y(32, 0.0f);
  EXPECT_THROW(quantize_row_q8_0(y.data(), nullptr, 32), Error);
  try {
    std::vector<BlockQ8_1> b(1);
    quantize_row_q8_1(y.data(), b.data(), 31);
    ADD_FAILURE() << "no error for n = 31";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n = 31"), std::string::npos) << e.what();
  }
}

TEST(Quant, QuantizeQ4_1RoundTrip) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-3.0f, 5.0f);
  std::vector<float> x(32 * 9);
  for (float& v : x) v = u(rng);
  for (int j = 0; j < 32; ++j) x[32 + j] = 0.25f;  // a constant block: d = 0
  std::vector<BlockQ4_1> b(9);
  quantize_row_q4_1(x.data(), b.data(), static_cast<int64_t>(x.size()));
  const auto* raw = reinterpret_cast<const uint8_t*>(b.data());
  const auto back = ref::dequant_row(ref::kRefQ4_1, raw, static_cast<int64_t>(x.size()));
  for (int64_t blk = 0; blk < 9; ++blk) {
    double lo = 1e30, hi = -1e30;
    for (int j = 0; j < 32; ++j) {
      lo = std::min(lo, static_cast<double>(x[blk * 32 + j]));
      hi = std::max(hi, static_cast<double>(x[blk * 32 + j]));
    }
    const double d = (hi - lo) / 15;
    // Half a step, plus the fp16 rounding of d (x 15 steps) and of m.
    const double bound = d * 0.5 + 15 * d * 1e-3 + std::fabs(lo) * 1e-3 + 1e-6;
    for (int j = 0; j < 32; ++j) {
      EXPECT_NEAR(back[blk * 32 + j], x[blk * 32 + j], bound) << blk << " " << j;
    }
  }
  EXPECT_EQ(b[1].d, 0);  // constant block
  EXPECT_EQ(ref::f16_value(b[1].m), 0.25);
}

}  // namespace
}  // namespace indexshare::ops

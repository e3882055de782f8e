// dtype conversions against an independent float64 reference, over every 16-bit / 8-bit code.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"

namespace indexshare {
namespace {

// Closed-form decoder of an IEEE-like narrow format in float64.
double decode_ref(uint32_t code, int ebits, int mbits, bool has_inf) {
  const uint32_t sign = code >> (ebits + mbits);
  const uint32_t exp = (code >> mbits) & ((1u << ebits) - 1);
  const uint32_t man = code & ((1u << mbits) - 1);
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t emax = (1u << ebits) - 1;
  double v;
  if (has_inf && exp == emax) {
    v = man == 0 ? INFINITY : NAN;
  } else if (!has_inf && exp == emax && man == (1u << mbits) - 1) {
    v = NAN;  // e4m3fn: only S.1111.111 is NaN
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - bias - mbits);
  } else {
    v = std::ldexp(1.0 + std::ldexp(static_cast<double>(man), -mbits), static_cast<int>(exp) - bias);
  }
  return sign ? -v : v;
}

// Brute-force nearest-even encoder: the finite code whose value is nearest to x; on a tie the
// code with an even mantissa (even code). Returns the positive-magnitude code.
struct Table {
  std::vector<double> values;  // value of magnitude code c (finite codes only)
};

uint32_t nearest_code(const Table& t, double a) {
  // Magnitude codes are ordered by value; look at the two neighbours of a.
  const auto it = std::lower_bound(t.values.begin(), t.values.end(), a);
  const uint32_t hi = static_cast<uint32_t>(it - t.values.begin());
  if (hi == 0) return 0;
  if (hi == t.values.size()) return hi - 1;
  const uint32_t lo = hi - 1;
  const double dl = a - t.values[lo], dh = t.values[hi] - a;
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo & 1u) == 0 ? lo : hi;  // tie: even mantissa
}

TEST(DType, Bf16DecodeEveryCode) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const double ref = decode_ref(c, 8, 7, true);
    const float got = bf16_to_f32(static_cast<uint16_t>(c));
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(got)) << c;
      ASSERT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(got))));
    } else {
      ASSERT_EQ(static_cast<double>(got), ref) << c;
      ASSERT_EQ(f32_to_bf16(got), c) << "round trip of code " << c;
    }
  }
}

TEST(DType, F16DecodeEveryCode) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const double ref = decode_ref(c, 5, 10, true);
    const float got = f16_to_f32(static_cast<uint16_t>(c));
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(got)) << c;
      ASSERT_TRUE(std::isnan(f16_to_f32(f32_to_f16(got))));
    } else {
      ASSERT_EQ(static_cast<double>(got), ref) << c;
      ASSERT_EQ(f32_to_f16(got), c) << "round trip of code " << c;
    }
  }
}

TEST(DType, Fp8DecodeEveryCode) {
  for (uint32_t c = 0; c < 256; ++c) {
    const double ref = decode_ref(c, 4, 3, false);
    const float got = fp8e4m3_to_f32(static_cast<uint8_t>(c));
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(got)) << c;
    } else {
      ASSERT_EQ(static_cast<double>(got), ref) << c;
      ASSERT_EQ(f32_to_fp8e4m3(got), c) << c;
    }
  }
  EXPECT_EQ(decode_ref(0x7e, 4, 3, false), 448.0);
}

// Rounding: midpoints between every pair of adjacent codes (ties to even) and points just
// either side of them, compared with the brute-force nearest-even encoder.
template <class Enc>
void check_rounding(int ebits, int mbits, bool has_inf, uint32_t max_finite, Enc enc,
                    double overflow_value) {
  Table t;
  for (uint32_t c = 0; c <= max_finite; ++c) t.values.push_back(decode_ref(c, ebits, mbits, has_inf));
  for (uint32_t c = 0; c < max_finite; ++c) {
    const double lo = t.values[c], hi = t.values[c + 1];
    const double mid = 0.5 * (lo + hi);
    for (double x : {mid, std::nextafter(mid, lo), std::nextafter(mid, hi), lo + 0.25 * (hi - lo)}) {
      const float xf = static_cast<float>(x);
      if (static_cast<double>(xf) != x) continue;  // only points exact in f32
      const uint32_t want = nearest_code(t, x);
      ASSERT_EQ(enc(xf), want) << "x=" << x << " between codes " << c << " and " << c + 1;
      ASSERT_EQ(enc(-xf), want | (1u << (ebits + mbits))) << "negative x=" << x;
    }
  }
  // Beyond the largest finite value.
  const double top = t.values[max_finite];
  const float big = static_cast<float>(top * 1.5);
  ASSERT_EQ(static_cast<double>(decode_ref(enc(big), ebits, mbits, has_inf)), overflow_value);
  ASSERT_EQ(static_cast<double>(decode_ref(enc(std::numeric_limits<float>::infinity()), ebits, mbits, has_inf)),
            overflow_value);
  ASSERT_TRUE(std::isnan(decode_ref(enc(std::numeric_limits<float>::quiet_NaN()), ebits, mbits, has_inf)));
  ASSERT_TRUE(std::isnan(decode_ref(enc(-std::numeric_limits<float>::quiet_NaN()), ebits, mbits, has_inf)));
}

TEST(DType, F16RoundsToNearestEven) {
  check_rounding(5, 10, true, 0x7bff, [](float x) { return uint32_t{f32_to_f16(x)}; }, INFINITY);
}

TEST(DType, Bf16RoundsToNearestEven) {
  check_rounding(8, 7, true, 0x7f7f, [](float x) { return uint32_t{f32_to_bf16(x)}; }, INFINITY);
}

TEST(DType, Fp8SaturatesAndRoundsToNearestEven) {
  check_rounding(4, 3, false, 0x7e, [](float x) { return uint32_t{f32_to_fp8e4m3(x)}; }, 448.0);
  EXPECT_EQ(fp8e4m3_to_f32(f32_to_fp8e4m3(-1e9f)), -448.0f);
  EXPECT_EQ(fp8e4m3_to_f32(f32_to_fp8e4m3(464.0f)), 448.0f);  // midpoint 448..(480) saturates
}

TEST(DType, BulkConversionsMatchScalarWithAndWithoutSimd) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<uint32_t> bits;
  std::vector<float> x(1027);
  for (auto& v : x) v = bits_to_f32(bits(rng));  // every kind of value, NaN and inf included
  x[3] = 0.0f;
  x[5] = 1e-8f;  // f16 subnormal
  for (bool simd : {true, false}) {
    set_simd_enabled(simd);
    std::vector<uint16_t> h(x.size()), b(x.size());
    std::vector<float> back(x.size());
    f32_to_f16(x, h);
    f32_to_bf16(x, b);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(h[i], f32_to_f16(x[i])) << "simd=" << simd << " i=" << i;
      ASSERT_EQ(b[i], f32_to_bf16(x[i])) << i;
    }
    f16_to_f32(h, back);
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(f32_to_bits(back[i]), f32_to_bits(f16_to_f32(h[i]))) << i;
    bf16_to_f32(b, back);
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(f32_to_bits(back[i]), f32_to_bits(bf16_to_f32(b[i]))) << i;
  }
  set_simd_enabled(true);
  std::vector<float> small(3);
  std::vector<uint16_t> wrong(4);
  EXPECT_THROW(f32_to_f16(small, wrong), Error);
}

}  // namespace
}  // namespace indexshare

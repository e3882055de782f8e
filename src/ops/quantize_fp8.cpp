// FP8 e4m3 block quantisation (DSA act_quant) and its inverse.
#include "ops/quantize_fp8.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare::ops {
namespace {

constexpr float kAmaxFloor = 1e-4f;

// 2^ceil(log2(s)) for finite s > 0, exactly (no rounding of log2).
float pow2_ceil(float s) {
  if (!std::isfinite(s)) return s;
  int e = 0;
  const float m = std::frexp(s, &e);  // s = m * 2^e, m in [0.5, 1)
  return m == 0.5f ? s : std::ldexp(1.0f, e);
}

const std::array<float, 256>& fp8_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c)
      t[static_cast<size_t>(c)] = fp8e4m3_to_f32(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

void quantize_row(const float* x, int64_t cols, bool ue8m0, uint8_t* y, float* scales) {
  for (int64_t c0 = 0, b = 0; c0 < cols; c0 += kFp8Block, ++b) {
    const int64_t c1 = std::min<int64_t>(cols, c0 + kFp8Block);
    float amax = kAmaxFloor;
    bool nan = false;
    for (int64_t c = c0; c < c1; ++c) {
      const float a = std::fabs(x[c]);
      nan |= std::isnan(a);
      amax = std::max(amax, a);
    }
    float s = nan ? std::numeric_limits<float>::quiet_NaN() : amax / kFp8E4M3Max;
    if (ue8m0) s = pow2_ceil(s);
    scales[b] = s;
    for (int64_t c = c0; c < c1; ++c) {
      const float q = x[c] / s;  // NaN stays NaN through the clamp
      y[c] = f32_to_fp8e4m3(std::isnan(q) ? q : std::clamp(q, -kFp8E4M3Max, kFp8E4M3Max));
    }
  }
}

}  // namespace

int64_t fp8_blocks_per_row(int64_t cols) { return (cols + kFp8Block - 1) / kFp8Block; }

void validate(const Fp8QuantParams& p) {
  IS_CHECK(p.rows >= 0, "quantize_fp8: rows = ", p.rows, " is negative");
  IS_CHECK(p.cols >= 0, "quantize_fp8: cols = ", p.cols, " is negative");
  IS_CHECK(p.cols == 0 || p.rows <= std::numeric_limits<int64_t>::max() / p.cols,
           "quantize_fp8: rows * cols overflows (rows = ", p.rows, ", cols = ", p.cols, ")");
  const bool empty = p.rows == 0 || p.cols == 0;
  IS_CHECK(p.x != nullptr || empty, "quantize_fp8: x is null");
  IS_CHECK(p.y != nullptr || empty, "quantize_fp8: y is null");
  IS_CHECK(p.scales != nullptr || empty, "quantize_fp8: scales is null");
}

void validate(const Fp8DequantParams& p) {
  IS_CHECK(p.rows >= 0, "dequantize_fp8: rows = ", p.rows, " is negative");
  IS_CHECK(p.cols >= 0, "dequantize_fp8: cols = ", p.cols, " is negative");
  IS_CHECK(p.cols == 0 || p.rows <= std::numeric_limits<int64_t>::max() / p.cols,
           "dequantize_fp8: rows * cols overflows (rows = ", p.rows, ", cols = ", p.cols, ")");
  const bool empty = p.rows == 0 || p.cols == 0;
  IS_CHECK(p.y != nullptr || empty, "dequantize_fp8: y is null");
  IS_CHECK(p.x != nullptr || empty, "dequantize_fp8: x is null");
}

void quantize_fp8(const Fp8QuantParams& p) {
  validate(p);
  if (p.rows == 0 || p.cols == 0) return;
  const int64_t nb = fp8_blocks_per_row(p.cols);
  const int64_t grain = std::max<int64_t>(1, 16384 / p.cols);
  parallel_for(p.rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      quantize_row(p.x + r * p.cols, p.cols, p.ue8m0, p.y + r * p.cols, p.scales + r * nb);
  });
}

void dequantize_fp8(const Fp8DequantParams& p) {
  validate(p);
  if (p.rows == 0 || p.cols == 0) return;
  const int64_t nb = fp8_blocks_per_row(p.cols);
  const std::array<float, 256>& table = fp8_table();
  const int64_t grain = std::max<int64_t>(1, 16384 / p.cols);
  parallel_for(p.rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* y = p.y + r * p.cols;
      float* x = p.x + r * p.cols;
      for (int64_t c = 0; c < p.cols; ++c) {
        const float v = table[y[c]];
        x[c] = p.scales ? v * p.scales[r * nb + c / kFp8Block] : v;
      }
    }
  });
}

}  // namespace indexshare::ops

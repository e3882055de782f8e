// Float64 references for the quantised formats and the quantised matmul. Header-only; reads
// blocks byte by byte from the ggml layout and never calls the code under test.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace indexshare::ref {

// ggml type ids (spelled out here on purpose).
enum : uint32_t { kRefF32 = 0, kRefF16 = 1, kRefQ4_1 = 3, kRefQ8_0 = 8, kRefQ8_1 = 9, kRefBF16 = 30 };

inline uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// IEEE half -> double, closed form.
inline double f16_value(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  double v;
  if (exp == 0x1f) v = man == 0 ? INFINITY : NAN;
  else if (exp == 0) v = std::ldexp(static_cast<double>(man), -24);
  else v = std::ldexp(1.0 + man / 1024.0, exp - 15);
  return sign ? -v : v;
}

// bf16 -> double: the top half of an IEEE single.
inline double bf16_value(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// double -> IEEE half bits, round to nearest even, overflow to inf; NaN maps to 0x7e00.
// With e = max(floor(log2 |x|), -14) and q = round(|x| / 2^(e-10)), the code is
// (e + 14) * 1024 + q: this covers subnormals (e = -14, q < 1024) and carries into the next
// binade or into inf (0x7c00) by itself.
inline uint16_t f16_bits(double x) {
  if (std::isnan(x)) return 0x7e00;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (a == 0) return sign;
  if (std::isinf(a)) return sign | 0x7c00;
  int e = std::ilogb(a);
  if (e < -14) e = -14;
  if (e > 15) return sign | 0x7c00;
  const double q = std::nearbyint(std::ldexp(a, 10 - e));  // round half to even
  const double code = (e + 14) * 1024.0 + q;
  return static_cast<uint16_t>(sign | (code >= 0x7c00 ? 0x7c00 : static_cast<uint16_t>(code)));
}

// ---- block decoders (the closed form of each block formula) ------------------------------

// Q4_1, 20 bytes: d, m, 16 bytes; element j < 16 = low nibble of byte j, j >= 16 = high
// nibble of byte j - 16; x = q * d + m.
inline void q4_1_block(const uint8_t* b, double* out) {
  const double d = f16_value(rd16(b)), m = f16_value(rd16(b + 2));
  for (int j = 0; j < 32; ++j) {
    const int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
    out[j] = q * d + m;
  }
}
inline int q4_1_nibble(const uint8_t* b, int j) { return j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4); }

// Q8_0, 34 bytes: d, 32 int8; x = q * d.
inline void q8_0_block(const uint8_t* b, double* out) {
  const double d = f16_value(rd16(b));
  for (int j = 0; j < 32; ++j) out[j] = static_cast<int8_t>(b[2 + j]) * d;
}

// Q8_1, 36 bytes: d, s, 32 int8; x = q * d.
inline void q8_1_block(const uint8_t* b, double* out) {
  const double d = f16_value(rd16(b));
  for (int j = 0; j < 32; ++j) out[j] = static_cast<int8_t>(b[4 + j]) * d;
}

inline int64_t ref_row_bytes(uint32_t type, int64_t n) {
  switch (type) {
    case kRefF32: return 4 * n;
    case kRefF16: case kRefBF16: return 2 * n;
    case kRefQ4_1: return n / 32 * 20;
    case kRefQ8_0: return n / 32 * 34;
    case kRefQ8_1: return n / 32 * 36;
  }
  return -1;
}

// n elements of type `type` at p, in float64.
inline std::vector<double> dequant_row(uint32_t type, const uint8_t* p, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n;) {
    switch (type) {
      case kRefF32: {
        float f;
        std::memcpy(&f, p + 4 * i, 4);
        out[i++] = f;
        break;
      }
      case kRefF16: out[i] = f16_value(rd16(p + 2 * i)); ++i; break;
      case kRefBF16: out[i] = bf16_value(rd16(p + 2 * i)); ++i; break;
      case kRefQ4_1: q4_1_block(p + i / 32 * 20, &out[i]); i += 32; break;
      case kRefQ8_0: q8_0_block(p + i / 32 * 34, &out[i]); i += 32; break;
      case kRefQ8_1: q8_1_block(p + i / 32 * 36, &out[i]); i += 32; break;
      default: return {};
    }
  }
  return out;
}

// ---- reference activation quantiser (ggml's round-to-nearest, in f32 like the engine) ----

struct RefQ8Block {
  uint16_t d_bits = 0;  // fp16 scale
  uint16_t s_bits = 0;  // fp16 d * sum(q) (Q8_1)
  int8_t q[32] = {};
};

// One block of 32: d = amax / 127 (f32), q = round-half-even(x * (127 / amax)); a block with a
// NaN or inf gets d = NaN and q = 0.
inline RefQ8Block quantize_q8_block(const float* x) {
  RefQ8Block r;
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (!std::isfinite(x[j])) {
      r.d_bits = r.s_bits = 0x7e00;
      return r;
    }
    amax = std::fabs(x[j]) > amax ? std::fabs(x[j]) : amax;
  }
  const float d = amax / 127.0f;
  // ggml's multiplier: 127 / amax (1 / d only where that overflows).
  const float id = amax == 0.0f ? 0.0f : std::isinf(127.0f / amax) ? 1.0f / d : 127.0f / amax;
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    const float t = x[j] * id;
    r.q[j] = static_cast<int8_t>(std::nearbyint(t));
    sum += r.q[j];
  }
  r.d_bits = f16_bits(d);
  r.s_bits = f16_bits(static_cast<double>(d * static_cast<float>(sum)));
  return r;
}

// ---- matmul references -------------------------------------------------------------------

// Dot of one weight row (type, raw bytes) with one quantised activation row, in float64 from
// the stored fields: Q4_1 uses d_w d_a Σ q_w q_a + m_w s_a per block (s as stored), Q8_0 uses
// d_w d_a Σ q_w q_a. `abs_sum` receives Σ over blocks of |each term| (for error bounds).
inline double dot_quantised(uint32_t type, const uint8_t* w, const std::vector<RefQ8Block>& a,
                            double* abs_sum) {
  double acc = 0, mag = 0;
  for (size_t b = 0; b < a.size(); ++b) {
    const double da = f16_value(a[b].d_bits);
    if (type == kRefQ4_1) {
      const uint8_t* blk = w + b * 20;
      long sumi = 0, sumabs = 0;
      for (int j = 0; j < 32; ++j) {
        sumi += q4_1_nibble(blk, j) * a[b].q[j];
        sumabs += std::labs(static_cast<long>(q4_1_nibble(blk, j)) * a[b].q[j]);
      }
      const double dw = f16_value(rd16(blk)), mw = f16_value(rd16(blk + 2));
      const double sa = f16_value(a[b].s_bits);
      acc += dw * da * static_cast<double>(sumi) + mw * sa;
      mag += std::fabs(dw * da) * static_cast<double>(sumabs) + std::fabs(mw * sa);
    } else {
      const uint8_t* blk = w + b * 34;
      long sumi = 0, sumabs = 0;
      for (int j = 0; j < 32; ++j) {
        sumi += static_cast<int8_t>(blk[2 + j]) * a[b].q[j];
        sumabs += std::labs(static_cast<long>(static_cast<int8_t>(blk[2 + j])) * a[b].q[j]);
      }
      const double dw = f16_value(rd16(blk));
      acc += dw * da * static_cast<double>(sumi);
      mag += std::fabs(dw * da) * static_cast<double>(sumabs);
    }
  }
  if (abs_sum) *abs_sum = mag;
  return acc;
}

// Plain float64 dot of dequantised weights with f32 activations; abs_sum = Σ |w x|.
inline double dot_exact(const std::vector<double>& w, const float* x, double* abs_sum) {
  double acc = 0, mag = 0;
  for (size_t k = 0; k < w.size(); ++k) {
    acc += w[k] * x[k];
    mag += std::fabs(w[k] * x[k]);
  }
  if (abs_sum) *abs_sum = mag;
  return acc;
}

}  // namespace indexshare::ref

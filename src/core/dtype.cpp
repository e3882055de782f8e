#include "core/dtype.h"

#include <immintrin.h>

#include <cmath>
#include <limits>

#include "core/cpu_features.h"
#include "core/error.h"

namespace indexshare {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kF8E4M3: return "f8_e4m3";
    case DType::kI32: return "i32";
    case DType::kU8: return "u8";
  }
  return "?";
}

int dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kF8E4M3: return 1;
    case DType::kI32: return 4;
    case DType::kU8: return 1;
  }
  return 0;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));  // inf / NaN
  if (exp != 0) return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return bits_to_f32(sign);
  // Subnormal: value = man * 2^-24, exact in f32.
  const float v = static_cast<float>(man) * 0x1p-24f;
  return sign ? -v : v;
}

// Generic round-to-nearest-even encoder for a narrow float with `ebits` exponent bits and
// `mbits` mantissa bits (bias 2^(ebits-1)-1). Returns the magnitude code (no sign) for a
// finite, non-negative input; `max_code` is the largest finite magnitude code.
static uint32_t encode_magnitude(float a, int ebits, int mbits, uint32_t max_code) {
  const int bias = (1 << (ebits - 1)) - 1;
  const int min_exp = 1 - bias;  // exponent of the smallest normal
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  int exp = e - 1;    // a = 1.x * 2^exp
  if (exp < min_exp) exp = min_exp;  // subnormal range uses the fixed exponent
  // Quantum at this exponent, scaled: q = a / 2^(exp - mbits), rounded to even.
  const double scaled = std::ldexp(static_cast<double>(a), mbits - exp);
  double r = std::nearbyint(scaled);  // default rounding mode: nearest, ties to even
  uint64_t q = static_cast<uint64_t>(r);
  // q in [2^mbits, 2^(mbits+1)] for normals; may carry into the next binade.
  uint32_t code;
  if (q < (1ull << mbits)) {
    code = static_cast<uint32_t>(q);  // subnormal (exp == min_exp)
  } else {
    int biased = exp + bias;
    if (q >= (2ull << mbits)) {
      q >>= 1;
      ++biased;
    }
    code = (static_cast<uint32_t>(biased) << mbits) | static_cast<uint32_t>(q - (1ull << mbits));
  }
  return code > max_code ? max_code + 1 : code;  // max_code + 1 signals overflow
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u | ((u >> 13) & 0x1ffu));
  const float a = std::fabs(f);
  if (std::isinf(a)) return sign | 0x7c00u;
  if (a == 0.0f) return sign;
  const uint32_t code = encode_magnitude(a, 5, 10, 0x7bffu);
  if (code > 0x7bffu) return sign | 0x7c00u;  // overflow -> inf
  return static_cast<uint16_t>(sign | code);
}

float fp8e4m3_to_f32(uint8_t v) {
  const bool neg = (v & 0x80u) != 0;
  const uint32_t exp = (v >> 3) & 0xfu;
  const uint32_t man = v & 0x7u;
  float r;
  if (exp == 0xf && man == 0x7) {
    r = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    r = static_cast<float>(man) * 0x1p-9f;  // subnormal: man/8 * 2^-6
  } else {
    r = std::ldexp(1.0f + static_cast<float>(man) / 8.0f, static_cast<int>(exp) - 7);
  }
  return neg ? -r : r;
}

uint8_t f32_to_fp8e4m3(float f) {
  const uint8_t sign = (f32_to_bits(f) >> 24) & 0x80u;
  if (std::isnan(f)) return sign | 0x7fu;
  const float a = std::fabs(f);
  if (a == 0.0f) return sign;
  if (!(a < kFp8E4M3Max)) return sign | 0x7eu;  // saturate (inf included)
  const uint32_t code = encode_magnitude(a, 4, 3, 0x7eu);
  return static_cast<uint8_t>(sign | (code > 0x7eu ? 0x7eu : code));
}

// ---- bulk conversions ----------------------------------------------------------------

__attribute__((target("avx2,fma,f16c"))) static void f16_to_f32_avx2(const uint16_t* in,
                                                                      float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) out[i] = f16_to_f32(in[i]);
}

__attribute__((target("avx2,fma,f16c"))) static void f32_to_f16_avx2(const float* in,
                                                                      uint16_t* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(in + i);
    // The hardware converter quiets NaNs differently from the scalar path; keep NaN lanes scalar.
    if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)) != 0) {
      for (size_t j = i; j < i + 8; ++j) out[j] = f32_to_f16(in[j]);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) out[i] = f32_to_f16(in[i]);
}

__attribute__((target("avx2,fma"))) static void bf16_to_f32_avx2(const uint16_t* in, float* out,
                                                                  size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(w));
  }
  for (; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

static void check_sizes(size_t a, size_t b, const char* what) {
  IS_CHECK(a == b, what, ": input has ", a, " elements but output has ", b);
}

void bf16_to_f32(std::span<const uint16_t> in, std::span<float> out) {
  check_sizes(in.size(), out.size(), "bf16_to_f32");
  if (use_avx2()) return bf16_to_f32_avx2(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = bf16_to_f32(in[i]);
}

void f32_to_bf16(std::span<const float> in, std::span<uint16_t> out) {
  check_sizes(in.size(), out.size(), "f32_to_bf16");
  for (size_t i = 0; i < in.size(); ++i) out[i] = f32_to_bf16(in[i]);
}

void f16_to_f32(std::span<const uint16_t> in, std::span<float> out) {
  check_sizes(in.size(), out.size(), "f16_to_f32");
  if (use_avx2()) return f16_to_f32_avx2(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = f16_to_f32(in[i]);
}

void f32_to_f16(std::span<const float> in, std::span<uint16_t> out) {
  check_sizes(in.size(), out.size(), "f32_to_f16");
  if (use_avx2()) return f32_to_f16_avx2(in.data(), out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = f32_to_f16(in[i]);
}

}  // namespace indexshare

#include "ops/quant.h"

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"

namespace indexshare::ops {
namespace {

constexpr uint16_t kF16NaN = 0x7e00;

void check_n(int64_t n, int64_t block, const char* fn) {
  IS_CHECK(n >= 0, fn, ": element count n = ", n, " is negative");
  IS_CHECK(n % block == 0, fn, ": element count n = ", n, " is not a multiple of the block size ", block);
}

void check_ptr(const void* p, size_t align, int64_t n, const char* fn, const char* what) {
  IS_CHECK(n == 0 || p != nullptr, fn, ": ", what, " is null");
  IS_CHECK(reinterpret_cast<uintptr_t>(p) % align == 0, fn, ": ", what, " is not ", align,
           "-byte aligned");
}

// ---- scalar paths ----------------------------------------------------------------------

void dequant_q4_1_scalar(const BlockQ4_1* x, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16_to_f32(x[b].d);
    const float m = f16_to_f32(x[b].m);
    for (int j = 0; j < 16; ++j) {
      y[b * kQK + j] = static_cast<float>(x[b].qs[j] & 0x0f) * d + m;
      y[b * kQK + j + 16] = static_cast<float>(x[b].qs[j] >> 4) * d + m;
    }
  }
}

template <class Block>
void dequant_q8_scalar(const Block* x, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16_to_f32(x[b].d);
    for (int j = 0; j < kQK; ++j) y[b * kQK + j] = static_cast<float>(x[b].qs[j]) * d;
  }
}

// The multiplier of a Q8 block: 127 / amax, as ggml's x86 quantisers compute it (it can differ
// from 1 / d by an ulp, which moves an element that sits on a rounding boundary); 1 / d where
// 127 / amax overflows (amax below ~3.7e-37), 0 for an all-zero block.
inline float inverse_scale(float amax, float d) {
  if (amax == 0.0f) return 0.0f;
  const float id = 127.0f / amax;
  return std::isinf(id) ? 1.0f / d : id;
}

// Quantises one block of 32 into qs; returns the fp32 scale d, or NaN for a non-finite block
// (then qs is all zero).
float quantize_block_q8_scalar(const float* x, int8_t* qs) {
  float amax = 0.0f;
  bool finite = true;
  for (int j = 0; j < kQK; ++j) {
    finite = finite && std::isfinite(x[j]);
    amax = std::max(amax, std::fabs(x[j]));
  }
  if (!finite) {
    std::memset(qs, 0, kQK);
    return NAN;
  }
  const float d = amax / 127.0f;
  const float id = inverse_scale(amax, d);
  for (int j = 0; j < kQK; ++j) qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
  return d;
}

// ---- AVX2 paths ------------------------------------------------------------------------

__attribute__((target("avx2,fma,f16c"))) void dequant_q4_1_avx2(const BlockQ4_1* x, float* y,
                                                                int64_t nb) {
  const __m128i low = _mm_set1_epi8(0x0f);
  for (int64_t b = 0; b < nb; ++b) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[b].d));
    const __m256 m = _mm256_set1_ps(_cvtsh_ss(x[b].m));
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs));
    const __m128i lo = _mm_and_si128(bytes, low);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low);
    float* out = y + b * kQK;
    // q * d is exact in f32 (4-bit q, 11-bit d), so the fused and the separate forms agree.
    _mm256_storeu_ps(out + 0, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), d, m));
    _mm256_storeu_ps(out + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), d, m));
    _mm256_storeu_ps(out + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), d, m));
    _mm256_storeu_ps(out + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), d, m));
  }
}

template <class Block>
__attribute__((target("avx2,fma,f16c"))) void dequant_q8_avx2(const Block* x, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[b].d));
    for (int j = 0; j < kQK; j += 8) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(x[b].qs + j));
      _mm256_storeu_ps(y + b * kQK + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
    }
  }
}

// Same arithmetic as quantize_block_q8_scalar (max is exact, x * id and round-to-even are
// per element), so both paths give identical blocks.
__attribute__((target("avx2,fma,f16c"))) float quantize_block_q8_avx2(const float* x, int8_t* qs) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 inf = _mm256_set1_ps(INFINITY);
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps();
  __m256 bad = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    const __m256 a = _mm256_andnot_ps(sign, v[i]);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));  // NaN or inf
    amax = _mm256_max_ps(amax, a);
  }
  if (_mm256_movemask_ps(bad) != 0) {
    std::memset(qs, 0, kQK);
    return NAN;
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float amax_s = _mm_cvtss_f32(m4);
  const float d = amax_s / 127.0f;
  const float id = inverse_scale(amax_s, d);
  const __m256 vid = _mm256_set1_ps(id);
  __m256i q[4];
  for (int i = 0; i < 4; ++i) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(v[i], vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q[i] = _mm256_cvtps_epi32(r);
  }
  // Pack 4 x 8 int32 into 32 int8 in order: packs interleaves 128-bit lanes, permute fixes it.
  const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
  const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
  __m256i p = _mm256_packs_epi16(p01, p23);
  p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), p);
  return d;
}

float quantize_block_q8(const float* x, int8_t* qs, bool simd) {
  return simd ? quantize_block_q8_avx2(x, qs) : quantize_block_q8_scalar(x, qs);
}

// trunc(t + 0.5) clamped to [0, 15]; a NaN t (from inf * 0 on a huge range) gives 0.
int nibble(float t) {
  const float r = t + 0.5f;
  return r >= 15.0f ? 15 : r > 0.0f ? static_cast<int>(r) : 0;
}

uint16_t scale_to_f16(float d) { return std::isnan(d) ? kF16NaN : f32_to_f16(d); }

}  // namespace

bool can_dequantize(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: case GgmlType::kF16: case GgmlType::kBF16:
    case GgmlType::kQ4_1: case GgmlType::kQ8_0: case GgmlType::kQ8_1: return true;
    default: return false;
  }
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  IS_CHECK(can_dequantize(type), "dequantize_row: type ", ggml_type_name(type), " (id ",
           static_cast<uint32_t>(type), ") is not supported");
  const auto traits = ggml_type_traits(static_cast<uint32_t>(type));
  check_n(n, traits->block_size, "dequantize_row");
  check_ptr(src, type == GgmlType::kF32 ? 4 : 2, n, "dequantize_row", "src");
  check_ptr(dst, 4, n, "dequantize_row", "dst");
  if (n == 0) return;
  const bool simd = use_avx2();
  const int64_t nb = n / kQK;
  switch (type) {
    case GgmlType::kF32: std::memmove(dst, src, static_cast<size_t>(n) * 4); return;
    case GgmlType::kF16:
      f16_to_f32(std::span<const uint16_t>(static_cast<const uint16_t*>(src), static_cast<size_t>(n)),
                 std::span<float>(dst, static_cast<size_t>(n)));
      return;
    case GgmlType::kBF16:
      bf16_to_f32(std::span<const uint16_t>(static_cast<const uint16_t*>(src), static_cast<size_t>(n)),
                  std::span<float>(dst, static_cast<size_t>(n)));
      return;
    case GgmlType::kQ4_1: {
      const auto* x = static_cast<const BlockQ4_1*>(src);
      return simd ? dequant_q4_1_avx2(x, dst, nb) : dequant_q4_1_scalar(x, dst, nb);
    }
    case GgmlType::kQ8_0: {
      const auto* x = static_cast<const BlockQ8_0*>(src);
      return simd ? dequant_q8_avx2(x, dst, nb) : dequant_q8_scalar(x, dst, nb);
    }
    case GgmlType::kQ8_1: {
      const auto* x = static_cast<const BlockQ8_1*>(src);
      return simd ? dequant_q8_avx2(x, dst, nb) : dequant_q8_scalar(x, dst, nb);
    }
    default: break;
  }
}

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  check_n(n, kQK, "quantize_row_q8_0");
  check_ptr(x, 4, n, "quantize_row_q8_0", "x");
  check_ptr(y, 2, n, "quantize_row_q8_0", "y");
  const bool simd = use_avx2();
  for (int64_t b = 0; b < n / kQK; ++b) {
    y[b].d = scale_to_f16(quantize_block_q8(x + b * kQK, y[b].qs, simd));
  }
}

void quantize_row_q8_1(const float* x, BlockQ8_1* y, int64_t n) {
  check_n(n, kQK, "quantize_row_q8_1");
  check_ptr(x, 4, n, "quantize_row_q8_1", "x");
  check_ptr(y, 2, n, "quantize_row_q8_1", "y");
  const bool simd = use_avx2();
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float d = quantize_block_q8(x + b * kQK, y[b].qs, simd);
    int sum = 0;
    for (int j = 0; j < kQK; ++j) sum += y[b].qs[j];
    y[b].d = scale_to_f16(d);
    y[b].s = scale_to_f16(d * static_cast<float>(sum));
  }
}

void quantize_row_q4_1(const float* x, BlockQ4_1* y, int64_t n) {
  check_n(n, kQK, "quantize_row_q4_1");
  check_ptr(x, 4, n, "quantize_row_q4_1", "x");
  check_ptr(y, 2, n, "quantize_row_q4_1", "y");
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* xb = x + b * kQK;
    float lo = FLT_MAX, hi = -FLT_MAX;
    bool finite = true;
    for (int j = 0; j < kQK; ++j) {
      finite = finite && std::isfinite(xb[j]);
      lo = std::min(lo, xb[j]);
      hi = std::max(hi, xb[j]);
    }
    if (!finite) {
      y[b].d = y[b].m = kF16NaN;
      std::memset(y[b].qs, 0, sizeof(y[b].qs));
      continue;
    }
    const float d = (hi - lo) / 15.0f;
    const float id = d != 0.0f && std::isfinite(d) ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    y[b].m = f32_to_f16(lo);
    for (int j = 0; j < 16; ++j) {
      y[b].qs[j] = static_cast<uint8_t>(nibble((xb[j] - lo) * id) | (nibble((xb[j + 16] - lo) * id) << 4));
    }
  }
}

}  // namespace indexshare::ops

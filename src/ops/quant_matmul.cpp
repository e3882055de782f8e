#include "ops/quant_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/quant.h"

namespace indexshare::ops {
namespace {

// Rows of x per weight-block decode in prefill, and rows of x kept hot in L2 at once.
constexpr int kMr = 4;
constexpr int64_t kMBlock = 64;
// Decode (M = 1) prefetch distance in weight bytes. tg64 of SmolLM2 Q4_1 on the shared 2-core
// machine, interleaved runs: none 65, 8 KiB 76, 16 KiB 79 tokens/s (2 threads).
constexpr int64_t kDecodePrefetch = 16384;

// Everything a tile kernel needs; a and the scale arrays are the quantised activations.
struct Ctx {
  const uint8_t* w;     // [N, row_bytes]
  int64_t row_bytes;
  int64_t K, nb;        // nb = K / 32 for block types
  const float* x;       // [M, ldx]
  int64_t ldx;
  float* y;             // [M, ldy]
  int64_t ldy;
  const BlockQ8_1* a1;  // [M, nb] (Q4_1 weights)
  const BlockQ8_0* a0;  // [M, nb] (Q8_0 weights)
  const float* ad;      // [M, ls] activation scales d as f32
  const float* as;      // [M, ls] activation sums s as f32 (Q8_1), zero beyond nb
  int64_t ls;           // row stride of ad / as: nb rounded up to a multiple of 8
  bool accumulate;      // y += result instead of y = result
};

inline void put(const Ctx& c, int64_t m, int64_t n, float v) {
  float& y = c.y[m * c.ldy + n];
  y = c.accumulate ? y + v : v;
}

template <class Block>
const Block* wrow(const Ctx& c, int64_t n) {
  return reinterpret_cast<const Block*>(c.w + n * c.row_bytes);
}

// ---- scalar kernels: one output at a time --------------------------------------------------

float dot_q4_1_scalar(const Ctx& c, int64_t m, int64_t n) {
  const BlockQ4_1* w = wrow<BlockQ4_1>(c, n);
  const BlockQ8_1* a = c.a1 + m * c.nb;
  const float* ad = c.ad + m * c.ls;
  const float* as = c.as + m * c.ls;
  float acc = 0.0f, summ = 0.0f;
  for (int64_t b = 0; b < c.nb; ++b) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += (w[b].qs[j] & 0x0f) * a[b].qs[j] + (w[b].qs[j] >> 4) * a[b].qs[j + 16];
    }
    acc += static_cast<float>(sumi) * (f16_to_f32(w[b].d) * ad[b]);
    summ += f16_to_f32(w[b].m) * as[b];
  }
  return acc + summ;
}

float dot_q8_0_scalar(const Ctx& c, int64_t m, int64_t n) {
  const BlockQ8_0* w = wrow<BlockQ8_0>(c, n);
  const BlockQ8_0* a = c.a0 + m * c.nb;
  const float* ad = c.ad + m * c.ls;
  float acc = 0.0f;
  for (int64_t b = 0; b < c.nb; ++b) {
    int sumi = 0;
    for (int j = 0; j < kQK; ++j) sumi += w[b].qs[j] * a[b].qs[j];
    acc += static_cast<float>(sumi) * (f16_to_f32(w[b].d) * ad[b]);
  }
  return acc;
}

template <GgmlType T>
float load_scalar(const uint8_t* row, int64_t k) {
  if constexpr (T == GgmlType::kF32) {
    float v;
    std::memcpy(&v, row + 4 * k, 4);
    return v;
  } else {
    uint16_t h;
    std::memcpy(&h, row + 2 * k, 2);
    return T == GgmlType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

template <GgmlType T>
float dot_float_scalar(const Ctx& c, int64_t m, int64_t n) {
  const uint8_t* w = c.w + n * c.row_bytes;
  const float* x = c.x + m * c.ldx;
  float acc = 0.0f;
  for (int64_t k = 0; k < c.K; ++k) acc += load_scalar<T>(w, k) * x[k];
  return acc;
}

template <float (*Dot)(const Ctx&, int64_t, int64_t)>
struct Scalar {
  static constexpr int kNr = 2;
  template <int MR, int NR>
  static void tile(const Ctx& c, int64_t m, int64_t n) {
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) put(c, m + i, n + r, Dot(c, m + i, n + r));
    }
  }
};

// ---- AVX2 kernels: an MR x NR tile of outputs ----------------------------------------------

#define IS_AVX2 __attribute__((target("avx2,fma,f16c")))

IS_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Σ over 32 lanes of u8 * s8, as 8 int32 lanes (no saturation: |u| <= 128, |s| <= 127).
IS_AVX2 inline __m256 dot_u8s8(__m256i u, __m256i s) {
  const __m256i p16 = _mm256_maddubs_epi16(u, s);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// The Q4_1 kernel sums the m_w * s_a terms of an output block by block with one fused
// multiply-add each, after the d_w d_a Σ q_w q_a vector terms, exactly as ggml's
// ggml_vec_dot_q4_1_q8_1 orders them, so each output is bitwise what llama.cpp computes. The
// MR x NR running sums of a tile live in the lanes of one vector (lane i * NR + r).
// The fp16 m_w of weight rows 0 .. NR - 1 at block b, repeated to fill 64 bits (lane r of
// every group of NR lanes once converted).
template <int NR>
inline uint64_t packed_m(const BlockQ4_1* const* w, int64_t b) {
  static_assert(NR == 1 || NR == 2 || NR == 4);
  uint64_t m = 0;
  for (int i = 0; i < 4; ++i) m |= uint64_t{w[i % NR][b].m} << (16 * i);
  return m;
}

template <int MR, int NR>
IS_AVX2 inline __m256 lanes_m(const BlockQ4_1* const* w, int64_t b) {
  static_assert(MR * NR <= 8);
  return _mm256_cvtph_ps(_mm_set1_epi64x(static_cast<long long>(packed_m<NR>(w, b))));
}

template <int MR, int NR>
IS_AVX2 inline __m256 lanes_s(const float* const* sa, int64_t b) {
  if constexpr (MR == 1) {
    return _mm256_set1_ps(sa[0][b]);
  } else {
    alignas(32) float v[8] = {};
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) v[i * NR + r] = sa[i][b];
    }
    return _mm256_load_ps(v);
  }
}

struct Q41Avx2 {
  static constexpr int kNr = 2;
  template <int MR, int NR>
  IS_AVX2 static void tile(const Ctx& c, int64_t m, int64_t n) {
    const BlockQ4_1* w[NR];
    for (int r = 0; r < NR; ++r) w[r] = wrow<BlockQ4_1>(c, n + r);
    const float* sa[MR];
    for (int i = 0; i < MR; ++i) sa[i] = c.as + (m + i) * c.ls;
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_ps();
    }
    __m256 summ = _mm256_setzero_ps();
    const __m256i low = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < c.nb; ++b) {
      __m256i wq[NR];
      float dw[NR];
      for (int r = 0; r < NR; ++r) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r][b].qs));
        // Element order: low nibbles are elements 0..15, high nibbles 16..31.
        wq[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
        dw[r] = _cvtsh_ss(w[r][b].d);
      }
      summ = _mm256_fmadd_ps(lanes_m<MR, NR>(w, b), lanes_s<MR, NR>(sa, b), summ);
      for (int i = 0; i < MR; ++i) {
        const int64_t ab = (m + i) * c.nb + b;
        const __m256i aq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.a1[ab].qs));
        const float da = c.ad[(m + i) * c.ls + b];
        for (int r = 0; r < NR; ++r) {
          acc[i][r] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r] * da), dot_u8s8(wq[r], aq), acc[i][r]);
        }
      }
    }
    alignas(32) float sm[8];
    _mm256_store_ps(sm, summ);
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) put(c, m + i, n + r, hsum(acc[i][r]) + sm[i * NR + r]);
    }
  }
};

struct Q80Avx2 {
  static constexpr int kNr = 2;
  template <int MR, int NR>
  IS_AVX2 static void tile(const Ctx& c, int64_t m, int64_t n) {
    const BlockQ8_0* w[NR];
    for (int r = 0; r < NR; ++r) w[r] = wrow<BlockQ8_0>(c, n + r);
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < c.nb; ++b) {
      __m256i wq[NR], wabs[NR];
      float dw[NR];
      for (int r = 0; r < NR; ++r) {
        wq[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r][b].qs));
        wabs[r] = _mm256_sign_epi8(wq[r], wq[r]);  // |w| as u8 (-128 -> 128)
        dw[r] = _cvtsh_ss(w[r][b].d);
      }
      for (int i = 0; i < MR; ++i) {
        const int64_t ab = (m + i) * c.nb + b;
        const __m256i aq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.a0[ab].qs));
        const float da = c.ad[(m + i) * c.ls + b];
        for (int r = 0; r < NR; ++r) {
          // |w| * (a with w's sign) = w * a; activations lie in [-127, 127].
          const __m256 p = dot_u8s8(wabs[r], _mm256_sign_epi8(aq, wq[r]));
          acc[i][r] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw[r] * da), acc[i][r]);
        }
      }
    }
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) put(c, m + i, n + r, hsum(acc[i][r]));
    }
  }
};

template <GgmlType T>
IS_AVX2 inline __m256 load8(const uint8_t* row, int64_t k) {
  if constexpr (T == GgmlType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
    if constexpr (T == GgmlType::kF16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <GgmlType T>
struct FloatAvx2 {
  static constexpr int kNr = 2;
  template <int MR, int NR>
  IS_AVX2 static void tile(const Ctx& c, int64_t m, int64_t n) {
    const uint8_t* w[NR];
    for (int r = 0; r < NR; ++r) w[r] = c.w + (n + r) * c.row_bytes;
    const float* x[MR];
    for (int i = 0; i < MR; ++i) x[i] = c.x + (m + i) * c.ldx;
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_ps();
    }
    const int64_t k8 = c.K / 8 * 8;
    for (int64_t k = 0; k < k8; k += 8) {
      __m256 wv[NR];
      for (int r = 0; r < NR; ++r) wv[r] = load8<T>(w[r], k);
      for (int i = 0; i < MR; ++i) {
        const __m256 xv = _mm256_loadu_ps(x[i] + k);
        for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(wv[r], xv, acc[i][r]);
      }
    }
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) {
        float tail = 0.0f;
        for (int64_t k = k8; k < c.K; ++k) tail = std::fma(load_scalar<T>(w[r], k), x[i][k], tail);
        put(c, m + i, n + r, hsum(acc[i][r]) + tail);
      }
    }
  }
};

// ---- AVX-512 VNNI kernel for Q4_1: the same outputs, bit for bit --------------------------
//
// Every output keeps Q41Avx2's arithmetic: lane j of its 8-lane accumulator takes, block by
// block, fma(d_w * d_a, Σ_{4 bytes of lane j} q_w q_a, acc) with the integer sum exact either
// way (vpdpbusd instead of maddubs + madd: no saturation, |u| <= 15, |s| <= 127), the m_w s_a
// terms are fused into their own running lane, and the end is the same horizontal sum. What
// changes is the work around it: 32 vector registers hold a 4 x 4 tile (16 accumulators), the
// weight nibbles are split with one variable shift, and the 16 m_w s_a lanes share one zmm.

#define IS_VNNI __attribute__((target("avx512f,avx512vl,avx512bw,avx512vnni,avx2,fma,f16c")))

// Lane i * NR + r of the 16: m_w of weight row r.
template <int MR, int NR>
IS_VNNI inline __m512 lanes_m16(const BlockQ4_1* const* w, int64_t b) {
  static_assert(MR * NR <= 16);
  return _mm512_cvtph_ps(_mm256_set1_epi64x(static_cast<long long>(packed_m<NR>(w, b))));
}

// Lane i * NR + r of the 16: s_a of activation row i (lanes past MR * NR: row 0, unused).
template <int MR, int NR>
IS_VNNI inline __m512 lanes_s16(const float* const* sa, int64_t b) {
  if constexpr (MR == 1) {
    return _mm512_set1_ps(sa[0][b]);
  } else {
    static_assert(MR <= 4);
    alignas(16) float v[4] = {};
    for (int i = 0; i < MR; ++i) v[i] = sa[i][b];
    alignas(64) static constexpr int32_t idx[16] = {
        0 / NR % MR, 1 / NR % MR, 2 / NR % MR, 3 / NR % MR, 4 / NR % MR, 5 / NR % MR, 6 / NR % MR, 7 / NR % MR,
        8 / NR % MR, 9 / NR % MR, 10 / NR % MR, 11 / NR % MR, 12 / NR % MR, 13 / NR % MR, 14 / NR % MR, 15 / NR % MR};
    return _mm512_permutexvar_ps(_mm512_load_si512(idx), _mm512_castps128_ps512(_mm_load_ps(v)));
  }
}

struct Q41Vnni {
  static constexpr int kNr = 4;
  template <int MR, int NR>
  IS_VNNI static void tile(const Ctx& c, int64_t m, int64_t n) {
    const BlockQ4_1* w[NR];
    for (int r = 0; r < NR; ++r) w[r] = wrow<BlockQ4_1>(c, n + r);
    const float* sa[MR];
    const float* da[MR];
    const BlockQ8_1* a[MR];
    for (int i = 0; i < MR; ++i) {
      sa[i] = c.as + (m + i) * c.ls;
      da[i] = c.ad + (m + i) * c.ls;
      a[i] = c.a1 + (m + i) * c.nb;
    }
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_ps();
    }
    __m512 summ = _mm512_setzero_ps();
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i shift = _mm256_set_epi64x(4, 4, 0, 0);  // high 128 bits: the high nibbles
    for (int64_t b = 0; b < c.nb; ++b) {
      __m256i wq[NR];
      __m256 dw[NR];
      for (int r = 0; r < NR; ++r) {
        const __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r][b].qs)));
        // Element order: low nibbles are elements 0..15, high nibbles 16..31.
        wq[r] = _mm256_and_si256(_mm256_srlv_epi64(raw, shift), low);
        dw[r] = _mm256_set1_ps(_cvtsh_ss(w[r][b].d));
      }
      summ = _mm512_fmadd_ps(lanes_m16<MR, NR>(w, b), lanes_s16<MR, NR>(sa, b), summ);
      for (int i = 0; i < MR; ++i) {
        const __m256i aq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i][b].qs));
        const __m256 dai = _mm256_set1_ps(da[i][b]);
        for (int r = 0; r < NR; ++r) {
          const __m256 p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), wq[r], aq));
          acc[i][r] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dai), p, acc[i][r]);
        }
      }
    }
    alignas(64) float sm[16];
    _mm512_store_ps(sm, summ);
    for (int i = 0; i < MR; ++i) {
      for (int r = 0; r < NR; ++r) put(c, m + i, n + r, hsum(acc[i][r]) + sm[i * NR + r]);
    }
  }
};

#undef IS_VNNI

#undef IS_AVX2

// ---- driver --------------------------------------------------------------------------------

// Covers outputs [n0, n1) of rows [mb, me). The tile shape never changes an output's
// arithmetic.
template <class Kern>
void run_block(const Ctx& c, int64_t mb, int64_t me, int64_t n0, int64_t n1) {
  if (me - mb == 1) {
    // One row (decode): weight rows one after another, a single sequential stream (4-row
    // tiles interleave four short streams of a few cache lines each and ran at about 60 % of
    // this speed from DRAM), each row's lines also prefetched kDecodePrefetch bytes ahead.
    for (int64_t n = n0; n < n1; ++n) {
      // An address (possibly past the matrix: a prefetch never faults), not a pointer into it.
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(c.w + n * c.row_bytes) + kDecodePrefetch;
      for (int64_t b = 0; b < c.row_bytes; b += 64) {
        __builtin_prefetch(reinterpret_cast<const void*>(ahead + static_cast<uintptr_t>(b)));
      }
      Kern::template tile<1, 1>(c, mb, n);
    }
    return;
  }
  for (int64_t m0 = mb; m0 < me; m0 += kMBlock) {
    const int64_t m1 = std::min(me, m0 + kMBlock);
    int64_t n = n0;
    for (; n + Kern::kNr <= n1; n += Kern::kNr) {
      int64_t m = m0;
      for (; m + kMr <= m1; m += kMr) Kern::template tile<kMr, Kern::kNr>(c, m, n);
      for (; m < m1; ++m) Kern::template tile<1, Kern::kNr>(c, m, n);
    }
    if constexpr (Kern::kNr > 2) {
      for (; n + 2 <= n1; n += 2) {
        int64_t m = m0;
        for (; m + kMr <= m1; m += kMr) Kern::template tile<kMr, 2>(c, m, n);
        for (; m < m1; ++m) Kern::template tile<1, 2>(c, m, n);
      }
    }
    for (; n < n1; ++n) {
      int64_t m = m0;
      for (; m + kMr <= m1; m += kMr) Kern::template tile<kMr, 1>(c, m, n);
      for (; m < m1; ++m) Kern::template tile<1, 1>(c, m, n);
    }
  }
}

template <class Kern>
void run(const Ctx& c, int64_t M, int64_t N) {
  // At least 16 outputs per thread, and enough work per part to pay for a wake-up.
  const int64_t grain = std::max<int64_t>(16, 4096 / std::max<int64_t>(1, M * c.nb));
  parallel_for(N, grain, [&](int64_t n0, int64_t n1) { run_block<Kern>(c, 0, M, n0, n1); });
}

bool is_float_type(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16;
}

// Calls f.template operator()<Kern>() with the kernel for the weight type and the SIMD choice.
template <class F>
void dispatch(GgmlType type, F&& f) {
  const bool simd = use_avx2();
  switch (type) {
    case GgmlType::kF32:
      return simd ? f.template operator()<FloatAvx2<GgmlType::kF32>>()
                  : f.template operator()<Scalar<dot_float_scalar<GgmlType::kF32>>>();
    case GgmlType::kF16:
      return simd ? f.template operator()<FloatAvx2<GgmlType::kF16>>()
                  : f.template operator()<Scalar<dot_float_scalar<GgmlType::kF16>>>();
    case GgmlType::kBF16:
      return simd ? f.template operator()<FloatAvx2<GgmlType::kBF16>>()
                  : f.template operator()<Scalar<dot_float_scalar<GgmlType::kBF16>>>();
    case GgmlType::kQ4_1:
      if (use_avx512_vnni()) return f.template operator()<Q41Vnni>();
      return simd ? f.template operator()<Q41Avx2>() : f.template operator()<Scalar<dot_q4_1_scalar>>();
    default:
      return simd ? f.template operator()<Q80Avx2>() : f.template operator()<Scalar<dot_q8_0_scalar>>();
  }
}

// Checks p's sizes, strides and pointers (not x); returns ldy.
int64_t check_weights(const QMatmulParams& p) {
  quant_matmul_activation_type(p.type);  // validates the type
  IS_CHECK(p.N >= 0, "quant_matmul: N = ", p.N, " is negative");
  IS_CHECK(p.K >= 0, "quant_matmul: K = ", p.K, " is negative");
  const auto traits = ggml_type_traits(static_cast<uint32_t>(p.type));
  IS_CHECK(p.K % traits->block_size == 0, "quant_matmul: K = ", p.K, " is not a multiple of ",
           traits->block_size, " (the ", traits->name, " block size)");
  const int64_t ldy = p.ldy == 0 ? p.N : p.ldy;
  IS_CHECK(ldy >= p.N, "quant_matmul: ldy = ", ldy, " is less than N = ", p.N);
  return ldy;
}

Ctx make_ctx(const QMatmulParams& p, const QuantizedActivations& a, int64_t ldy, bool accumulate) {
  Ctx c{};
  c.w = static_cast<const uint8_t*>(p.w);
  c.row_bytes = ggml_row_bytes(p.type, p.K);
  c.K = p.K;
  c.nb = p.K / kQK;
  c.x = a.x;
  c.ldx = a.ldx;
  c.y = p.y;
  c.ldy = ldy;
  c.a1 = a.q8_1.data();
  c.a0 = a.q8_0.data();
  c.ad = a.d.data();
  c.as = a.s.data();
  c.ls = a.ls;
  c.accumulate = accumulate;
  return c;
}

// Per-thread activations of quant_matmul() (grow, never shrink).
thread_local QuantizedActivations t_acts;

}  // namespace

GgmlType quant_matmul_activation_type(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_1: return GgmlType::kQ8_1;
    case GgmlType::kQ8_0: return GgmlType::kQ8_0;
    case GgmlType::kF32: case GgmlType::kF16: case GgmlType::kBF16: return GgmlType::kF32;
    default: break;
  }
  fail("quant_matmul: weight type ", ggml_type_name(type), " (id ", static_cast<uint32_t>(type),
       ") is not supported (f32, f16, bf16, q4_1, q8_0)");
}

void prepare_activations(GgmlType weight_type, int64_t M, int64_t K, QuantizedActivations& a) {
  const GgmlType act = quant_matmul_activation_type(weight_type);
  IS_CHECK(M >= 0, "quant_matmul: M = ", M, " is negative");
  IS_CHECK(K >= 0, "quant_matmul: K = ", K, " is negative");
  const auto traits = ggml_type_traits(static_cast<uint32_t>(weight_type));
  IS_CHECK(K % traits->block_size == 0, "quant_matmul: K = ", K, " is not a multiple of ",
           traits->block_size, " (the ", traits->name, " block size)");
  a.weight_type = weight_type;
  a.M = M;
  a.K = K;
  a.x = nullptr;
  a.ldx = K;
  if (act == GgmlType::kF32) return;
  const int64_t nb = K / kQK;
  a.ls = (nb + 7) / 8 * 8;
  const size_t total = static_cast<size_t>(M * nb);
  const size_t scales = static_cast<size_t>(M * a.ls);
  if (a.d.size() < scales) a.d.resize(scales);
  if (act == GgmlType::kQ8_1) {
    if (a.s.size() < scales) a.s.resize(scales);
    if (a.q8_1.size() < total) a.q8_1.resize(total);
  } else if (a.q8_0.size() < total) {
    a.q8_0.resize(total);
  }
}

void quantize_activations(const float* x, int64_t ldx, int64_t m0, int64_t m1, QuantizedActivations& a) {
  IS_CHECK(0 <= m0 && m0 <= m1 && m1 <= a.M, "quantize_activations: rows [", m0, ", ", m1,
           ") outside [0, ", a.M, ")");
  IS_CHECK(ldx >= a.K, "quant_matmul: ldx = ", ldx, " is less than K = ", a.K);
  if (m0 == m1 || a.K == 0) return;
  IS_CHECK(x != nullptr, "quant_matmul: x is null");
  IS_CHECK(reinterpret_cast<uintptr_t>(x) % 4 == 0, "quant_matmul: x is not 4-byte aligned");
  const GgmlType act = quant_matmul_activation_type(a.weight_type);
  if (act == GgmlType::kF32) {
    a.x = x;
    a.ldx = ldx;
    return;
  }
  const int64_t nb = a.K / kQK;
  for (int64_t m = m0; m < m1; ++m) {
    float* ad = a.d.data() + m * a.ls;
    if (act == GgmlType::kQ8_1) {
      BlockQ8_1* q = a.q8_1.data() + m * nb;
      float* as = a.s.data() + m * a.ls;
      quantize_row_q8_1(x + m * ldx, q, a.K);
      for (int64_t b = 0; b < a.ls; ++b) {
        const bool in = b < nb;
        ad[b] = in ? f16_to_f32(q[b].d) : 0.0f;
        as[b] = in ? f16_to_f32(q[b].s) : 0.0f;
      }
    } else {
      BlockQ8_0* q = a.q8_0.data() + m * nb;
      quantize_row_q8_0(x + m * ldx, q, a.K);
      for (int64_t b = 0; b < a.ls; ++b) ad[b] = b < nb ? f16_to_f32(q[b].d) : 0.0f;
    }
  }
}

void quant_matmul_block(const QMatmulParams& p, const QuantizedActivations& a, int64_t m0, int64_t m1, int64_t n0,
                        int64_t n1, bool accumulate) {
  const int64_t ldy = check_weights(p);
  IS_CHECK(a.weight_type == p.type && a.K == p.K, "quant_matmul_block: activations prepared for ",
           ggml_type_name(a.weight_type), " K = ", a.K, ", weights are ", ggml_type_name(p.type), " K = ", p.K);
  IS_CHECK(0 <= m0 && m0 <= m1 && m1 <= a.M, "quant_matmul_block: rows [", m0, ", ", m1, ") outside [0, ", a.M,
           ")");
  IS_CHECK(0 <= n0 && n0 <= n1 && n1 <= p.N, "quant_matmul_block: outputs [", n0, ", ", n1, ") outside [0, ",
           p.N, ")");
  if (m0 == m1 || n0 == n1) return;
  IS_CHECK(p.y != nullptr, "quant_matmul: y is null");
  if (p.K == 0) {
    for (int64_t m = m0; m < m1; ++m) {
      if (!accumulate) std::fill(p.y + m * ldy + n0, p.y + m * ldy + n1, 0.0f);
    }
    return;
  }
  IS_CHECK(p.w != nullptr, "quant_matmul: w is null");
  IS_CHECK(!is_float_type(p.type) || a.x != nullptr, "quant_matmul_block: activations not quantised");
  const Ctx c = make_ctx(p, a, ldy, accumulate);
  dispatch(p.type, [&]<class Kern>() { run_block<Kern>(c, m0, m1, n0, n1); });
}

void quant_matmul(const QMatmulParams& p) {
  const int64_t ldy = check_weights(p);
  IS_CHECK(p.M >= 0, "quant_matmul: M = ", p.M, " is negative");
  const int64_t ldx = p.ldx == 0 ? p.K : p.ldx;
  IS_CHECK(ldx >= p.K, "quant_matmul: ldx = ", ldx, " is less than K = ", p.K);
  if (p.M == 0 || p.N == 0) return;
  IS_CHECK(p.y != nullptr, "quant_matmul: y is null");
  IS_CHECK(reinterpret_cast<uintptr_t>(p.y) % 4 == 0, "quant_matmul: y is not 4-byte aligned");
  if (p.K == 0) {
    for (int64_t m = 0; m < p.M; ++m) std::fill_n(p.y + m * ldy, p.N, 0.0f);
    return;
  }
  IS_CHECK(p.w != nullptr, "quant_matmul: w is null");
  IS_CHECK(p.x != nullptr, "quant_matmul: x is null");
  const size_t w_align = p.type == GgmlType::kF32 ? 4 : 2;
  IS_CHECK(reinterpret_cast<uintptr_t>(p.w) % w_align == 0, "quant_matmul: w is not ", w_align,
           "-byte aligned");
  IS_CHECK(reinterpret_cast<uintptr_t>(p.x) % 4 == 0, "quant_matmul: x is not 4-byte aligned");

  // Quantise the activations (rows are independent), then split the outputs over threads.
  QuantizedActivations& a = t_acts;
  prepare_activations(p.type, p.M, p.K, a);
  if (is_float_type(p.type)) {
    quantize_activations(p.x, ldx, 0, p.M, a);
  } else {
    parallel_for(p.M, std::max<int64_t>(1, 16384 / p.K),
                 [&](int64_t m0, int64_t m1) { quantize_activations(p.x, ldx, m0, m1, a); });
  }
  const Ctx c = make_ctx(p, a, ldy, false);
  dispatch(p.type, [&]<class Kern>() { run<Kern>(c, p.M, p.N); });
}

}  // namespace indexshare::ops

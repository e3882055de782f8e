// Quantised block formats in ggml's byte layout (as stored in GGUF files) and row conversions.
//
//   Q4_1 (32 elements, 20 bytes): fp16 d, fp16 m, 16 bytes of nibbles. Element j < 16 is the
//        low nibble of qs[j], element j + 16 the high nibble of qs[j]; x = q * d + m.
//   Q8_0 (32 elements, 34 bytes): fp16 d, 32 int8; x = q * d.
//   Q8_1 (32 elements, 36 bytes): fp16 d, fp16 s = d * sum(q), 32 int8; x = q * d. The format
//        of activations multiplied against Q4_1 weights (s folds in Q4_1's m).
//   F32, F16 (IEEE half), BF16: one element each.
//
// Quantisation to Q8_0 / Q8_1 is ggml's round-to-nearest: per block d = amax / 127 and
// q = round(x / d) (computed as x * (127 / amax), ties to even, as ggml's x86 path does); a block
// whose d overflows fp16 (amax > ~8.3e6) stores d = inf. A block holding a NaN or an infinity
// stores d = NaN and q = 0, so NaN reaches every product that uses it.
#pragma once

#include <cstdint>

#include "core/ggml_type.h"

namespace indexshare::ops {

// Elements per block of Q4_1, Q8_0 and Q8_1.
inline constexpr int64_t kQK = 32;

struct BlockQ4_1 {
  uint16_t d;      // fp16 scale
  uint16_t m;      // fp16 minimum
  uint8_t qs[16];  // element j: low nibble of qs[j] (j < 16) or high nibble of qs[j - 16]
};
struct BlockQ8_0 {
  uint16_t d;      // fp16 scale
  int8_t qs[32];
};
struct BlockQ8_1 {
  uint16_t d;      // fp16 scale
  uint16_t s;      // fp16 d * sum(qs), with the fp32 d before rounding
  int8_t qs[32];
};
static_assert(sizeof(BlockQ4_1) == 20 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36,
              "block layouts must match ggml");

// True for the types dequantize_row handles: F32, F16, BF16, Q4_1, Q8_0, Q8_1.
bool can_dequantize(GgmlType type);

// dst[0..n) = the n elements at src (ggml_row_bytes(type, n) bytes). n must be a multiple of
// the type's block size. Throws Error naming the type or n when unsupported or misaligned.
void dequantize_row(GgmlType type,
                    const void* src,  // [ggml_row_bytes(type, n)] bytes
                    float* dst,       // [n]
                    int64_t n);

// Quantise n floats (n % 32 == 0) into n / 32 blocks.
void quantize_row_q8_0(const float* x,  // [n]
                       BlockQ8_0* y,    // [n / 32]
                       int64_t n);
void quantize_row_q8_1(const float* x,  // [n]
                       BlockQ8_1* y,    // [n / 32]
                       int64_t n);
// ggml's reference Q4_1 quantiser: d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d
// + 0.5)). For building test and synthetic weights; not a hot path.
void quantize_row_q4_1(const float* x,  // [n]
                       BlockQ4_1* y,    // [n / 32]
                       int64_t n);

}  // namespace indexshare::ops

// FP8 e4m3 block quantisation of activations, as DSA's act_quant does for the indexer q and k.
//
// Along each row, blocks of kFp8Block = 128 elements (the last block of a row may be shorter):
//   amax  = max(max_i |x_i|, 1e-4)
//   scale = amax / 448                      (ue8m0: 2^ceil(log2(amax / 448)), exact)
//   y_i   = e4m3(clamp(x_i / scale, -448, 448))   round to nearest even, fp32 division
// Scales are fp32; dequantisation is x'_i = e4m3_value(y_i) * scale.
// For the indexer (D = 128): quantise q as [T * H, D] rows and k as [L, D] rows; then pass the
// decoded codes as IndexerParams::q / k and the scales as q_scale [T, H] / k_scale [L].
//
// Non-finite input: a NaN in a block makes that block's scale NaN and all its codes NaN; an
// infinity makes the scale +inf, its own code NaN (inf / inf) and the block's finite values 0
// (as the reference quantiser does). Either way the indexer scores that use it become NaN, and
// top-k then throws.
#pragma once

#include <cstdint>

namespace indexshare::ops {

inline constexpr int kFp8Block = 128;

struct Fp8QuantParams {
  const float* x = nullptr;  // [rows, cols]
  int64_t rows = 0;
  int64_t cols = 0;
  bool ue8m0 = false;       // power-of-two scales (DeepSeek FP8 checkpoints' scale_fmt)
  uint8_t* y = nullptr;     // [rows, cols] out: e4m3fn codes
  float* scales = nullptr;  // [rows, ceil(cols / 128)] out
};

struct Fp8DequantParams {
  const uint8_t* y = nullptr;     // [rows, cols] e4m3fn codes
  const float* scales = nullptr;  // [rows, ceil(cols / 128)], nullable: 1 (decode codes only)
  int64_t rows = 0;
  int64_t cols = 0;
  float* x = nullptr;  // [rows, cols] out
};

// Number of scale blocks per row: ceil(cols / 128).
int64_t fp8_blocks_per_row(int64_t cols);

// Throw Error naming the field: negative rows / cols, null pointers when rows * cols > 0.
void validate(const Fp8QuantParams& p);
void validate(const Fp8DequantParams& p);

// Multi-threaded over rows.
void quantize_fp8(const Fp8QuantParams& p);
void dequantize_fp8(const Fp8DequantParams& p);

}  // namespace indexshare::ops

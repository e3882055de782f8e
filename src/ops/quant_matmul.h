// y = x · Wᵀ with W stored in a GGUF/ggml type: the projection of every llama layer.
//
// W is a GGUF tensor with ne = [K, N]: N rows of K elements, each row ggml_row_bytes(type, K)
// bytes. Activations are quantised on the fly as llama.cpp's CPU backend does: Q8_1 for Q4_1
// weights (its s term folds in Q4_1's m), Q8_0 for Q8_0 weights; F32, F16 and BF16 weights
// multiply the f32 activations directly. Block products are exact integers, scaled by the
// fp16 scales in f32.
//
// Kernels: AVX2 integer dot products (maddubs) with a scalar fallback. Rows of x are taken in
// groups of 4 so each weight block is decoded once per group (prefill); M = 1 takes weight
// rows in groups of 4 instead (decode). Threads split the N outputs; every output is computed
// by one thread with the same operation order whatever the grouping, so results are bitwise
// identical for any thread count, and row m of a batch equals the M = 1 result for that row.
#pragma once

#include <cstdint>

#include "core/ggml_type.h"

namespace indexshare::ops {

struct QMatmulParams {
  const void* w = nullptr;  // [N, K] in `type`: N rows of ggml_row_bytes(type, K) bytes
  GgmlType type = GgmlType::kF32;  // F32, F16, BF16, Q4_1 or Q8_0
  int64_t N = 0;            // outputs (weight rows)
  int64_t K = 0;            // inputs; a multiple of 32 for Q4_1 and Q8_0
  const float* x = nullptr;  // [M, ldx] activations (the first K of each row are used)
  int64_t M = 0;            // activation rows (1 = decode)
  float* y = nullptr;       // [M, ldy] output (the first N of each row are written); must not alias x
  int64_t ldx = 0;          // row stride of x in floats; 0 means K
  int64_t ldy = 0;          // row stride of y in floats; 0 means N
};

// y[m, n] = Σ_k x[m, k] · W[n, k] (activations quantised as above). Throws Error naming the
// argument for an unsupported type, K not a multiple of the block size, negative sizes,
// strides below K / N, or null / misaligned pointers.
void quant_matmul(const QMatmulParams& p);

// The format activations are quantised to for weights of `type`: Q8_1 for Q4_1, Q8_0 for Q8_0,
// F32 for the float types. Error for a weight type quant_matmul does not take.
GgmlType quant_matmul_activation_type(GgmlType type);

}  // namespace indexshare::ops

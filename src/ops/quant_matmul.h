// y = x · Wᵀ with W stored in a GGUF/ggml type: the projection of every llama layer.
//
// W is a GGUF tensor with ne = [K, N]: N rows of K elements, each row ggml_row_bytes(type, K)
// bytes. Activations are quantised on the fly as llama.cpp's CPU backend does: Q8_1 for Q4_1
// weights (its s term folds in Q4_1's m), Q8_0 for Q8_0 weights; F32, F16 and BF16 weights
// multiply the f32 activations directly. Block products are exact integers, scaled by the
// fp16 scales in f32.
//
// Kernels: AVX2 integer dot products (maddubs) with a scalar fallback. Rows of x are taken in
// groups of 4 so each weight block is decoded once per group (prefill); M = 1 walks the weight
// rows one after another (decode: one sequential stream from memory). Threads split the N outputs; every output is computed
// by one thread with the same operation order whatever the grouping, so results are bitwise
// identical for any thread count, and row m of a batch equals the M = 1 result for that row.
#pragma once

#include <cstdint>
#include <vector>

#include "core/ggml_type.h"
#include "ops/quant.h"

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

// ---- activations quantised once, products split by the caller ------------------------------
//
// What quant_matmul() does internally, for a caller that multiplies one input by several
// matrices of the same type (the Q, K and V projections; gate and up) and schedules its own
// threads: prepare once, quantise rows (disjoint row ranges may run concurrently), then
// compute any [m0, m1) x [n0, n1) block on the calling thread. The arithmetic is that of
// quant_matmul(), so the results are bitwise equal to it.
struct QuantizedActivations {
  GgmlType weight_type = GgmlType::kF32;  // the weight type these activations multiply
  int64_t M = 0, K = 0;
  int64_t ls = 0;                 // row stride of d / s: K / 32 rounded up to a multiple of 8
  std::vector<BlockQ8_1> q8_1;    // [M, K / 32] (Q4_1 weights)
  std::vector<BlockQ8_0> q8_0;    // [M, K / 32] (Q8_0 weights)
  std::vector<float> d, s;        // [M, ls] block scales (and Q8_1 sums) as f32, zero-padded
  const float* x = nullptr;       // [M, ldx] float weight types: the activations themselves
  int64_t ldx = 0;
};

// Sizes `a` for M rows of K activations against weights of `weight_type` (buffers only grow).
// Throws Error for an unsupported type, K not a multiple of the block size or negative sizes.
void prepare_activations(GgmlType weight_type, int64_t M, int64_t K, QuantizedActivations& a);

// Quantises rows [m0, m1) of x ([a.M, ldx]) into `a` (records x for float weight types).
void quantize_activations(const float* x,  // [a.M, ldx]
                          int64_t ldx, int64_t m0, int64_t m1, QuantizedActivations& a);

// y[m, n] = Σ_k x[m, k] · W[n, k] for m in [m0, m1), n in [n0, n1), single-threaded; with
// accumulate, y[m, n] += that sum instead. p.w, p.type, p.N, p.K, p.y, p.ldy as in
// quant_matmul (p.x, p.M, p.ldx unused: the activations come from `a`, prepared for p.type and
// p.K). Throws Error for a mismatch with `a` or a range outside [0, a.M) x [0, p.N).
void quant_matmul_block(const QMatmulParams& p, const QuantizedActivations& a, int64_t m0, int64_t m1,
                        int64_t n0, int64_t n1, bool accumulate = false);

// The format activations are quantised to for weights of `type`: Q8_1 for Q4_1, Q8_0 for Q8_0,
// F32 for the float types. Error for a weight type quant_matmul does not take.
GgmlType quant_matmul_activation_type(GgmlType type);

}  // namespace indexshare::ops

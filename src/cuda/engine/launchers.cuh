// Internal to the CUDA engine: the kernel launchers the CUDA backend (cuda_backend.cu) calls.
// Every launcher is asynchronous on `s` and checks the launch; shapes are validated by the
// backend before it calls them. Pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace indexshare::cuda::engine {

// ---- elementwise (elementwise.cu) ----
// out[r, :] = table[ids[r], :] widened to f32; an id outside [0, V) gives a row of NaN.
void embed(const void* table, bool bf16, int64_t V, int64_t d, const int32_t* ids, int64_t rows, float* out,
           cudaStream_t s);
// y = x / sqrt(mean(x^2) + eps) * w over the first n of each row (strided rows; y may be x).
void rms_norm(const float* x, int64_t ldx, float* y, int64_t ldy, const float* w, int64_t rows, int64_t n, float eps,
              cudaStream_t s);
void layer_norm(const float* x, int64_t ldx, float* y, int64_t ldy, const float* w, const float* b, int64_t rows,
                int64_t n, float eps, cudaStream_t s);
// RoPE of backend.h (angle in double, cos / sin rounded to f32) on x [rows, heads, head_dim].
void rope(float* x, const int32_t* positions, int64_t rows, int heads, int head_dim, int offset, int rot_dim,
          bool interleaved, float factor, const float* inv_freq, cudaStream_t s);
void add(float* h, const float* y, int64_t n, cudaStream_t s);  // h += y
// h[r] += y[r], then x[r] = rms_norm(h[r]) * w (rows of n contiguous floats).
void add_rms_norm(float* h, const float* y, float* x, const float* w, int64_t rows, int64_t n, float eps, cudaStream_t s);
void add_bias(float* y, const float* bias, int64_t rows, int64_t n, cudaStream_t s);
// out[m, i] = silu(gu[m, i]) * gu[m, I + i]
void swiglu(const float* gu, int64_t rows, int64_t I, float* out, cudaStream_t s);
void f32_to_bf16(const float* x, uint16_t* y, int64_t n, cudaStream_t s);
// y[r, c] = bf16(x[r, c]) for a strided source (rows of ldx floats, cols values each).
void f32_to_bf16_2d(const float* x, int64_t ldx, uint16_t* y, int64_t ldy, int64_t rows, int64_t cols,
                    cudaStream_t s);
// counter_uniform of core/counter_hash.h into f32 / bf16 / e4m3 (dtype 0 / 1 / 2).
void fill_uniform(void* p, int dtype, int64_t n, uint64_t seed, float amplitude, cudaStream_t s);
// w [N, K] bf16 = e4m3 codes * scale[n / 128, k / 128].
void dequant_fp8_block(const uint8_t* codes, const float* scale, int64_t N, int64_t K, uint16_t* out, cudaStream_t s);

// ---- small-M products (gemv.cu) ----
enum class WKind : int { kF32 = 0, kBf16 = 1, kFp8 = 2 };
// y[r, :] = x[r, :] W_g^T (+ bias) for the rows r of group g, [row_off[g], row_off[g+1]) (device
// offsets; null = one group of all rows). W_g = w + g * N * K (elements); fp8 block scales
// scale + g * ceil(N/128) * ceil(K/128). `max_rows` bounds the rows of any group (it picks the
// kernel's row tile). No host synchronisation: used for decode steps.
struct GemvArgs {
  const float* x = nullptr;  // [R, K]
  int64_t R = 0;
  const int32_t* row_off = nullptr;
  int groups = 1;
  int64_t max_rows = 0;
  WKind kind = WKind::kF32;
  const void* w = nullptr;
  const float* scale = nullptr;
  const float* bias = nullptr;  // [N] nullable
  int64_t N = 0, K = 0;
  float* y = nullptr;  // [R, N]
};
void gemv(const GemvArgs& a, cudaStream_t s);

// ---- MoE (moe.cu) ----
// One token per warp: the router of ops/moe_route.h. logits [M, E] -> experts, weights [M, k].
void moe_route(const float* logits, const float* bias, int64_t M, int E, int k, int n_group, int topk_group,
               bool norm, float scaling, int32_t* experts, float* weights, cudaStream_t s);
// Counting sort of the (token, slot) pairs by expert: offsets [E + 1], slot_pos [M * k] (row of
// each pair in expert order), perm_tok [M * k] (token of each row). `cursor` [E] is scratch.
void moe_dispatch(const int32_t* experts, int64_t M, int k, int E, int32_t* counts, int32_t* offsets,
                  int32_t* cursor, int32_t* slot_pos, int32_t* perm_tok, cudaStream_t s);
void gather_rows(const float* x, int64_t d, const int32_t* rows, int64_t n, float* out, cudaStream_t s);
// moe_dispatch + gather_rows in one single-block kernel, for M * k <= kMoeSmallPairs (decode).
inline constexpr int64_t kMoeSmallPairs = 1024;
void moe_dispatch_small(const int32_t* experts, int64_t M, int k, int E, const float* x, int64_t d, int32_t* offsets,
                        int32_t* slot_pos, float* xs, cudaStream_t s);
// y[t] = sum_j w[t, j] * ys[slot_pos[t, j]] (+ shared[t] when non-null)
void moe_combine(const float* ys, const int32_t* slot_pos, const float* weights, const float* shared, int64_t M,
                 int k, int64_t d, float* y, cudaStream_t s);

// ---- caches and attention (attention.cu) ----
// rows of `cols` values into slots of a cache of ld floats (f32) or bf16 (bf16 = true).
void cache_write(const float* rows_in, int64_t rows, int64_t cols, const int32_t* slots, void* cache, bool bf16,
                 cudaStream_t s);
// Indexer keys into the paged FP8 layout (pages of 64 x [128 e4m3] then 64 fp32 scales):
// scale = max(max|k|, 1e-4) / 448, codes = e4m3(k / scale).
void indexer_append_fp8(const float* k, int64_t rows, const int32_t* slots, uint8_t* pages, cudaStream_t s);
// q [rows * heads, 128] -> e4m3 codes + one scale per (row, head), the same rule.
void quantize_q_fp8(const float* q, int64_t vectors, uint8_t* codes, float* scales, cudaStream_t s);
// physical[r, j] = slot of logical[r, j] in row r's sequence (b = r / T), -1 stays -1.
void to_physical(const int32_t* logical, int64_t rows, int K, int64_t T, const int32_t* block_table, int max_pages,
                 int32_t* physical, cudaStream_t s);
// Generic f32 indexer scores for rows [r0, r1) of a step (keys f32 [slots, D] paged), written
// to scores [(r - r0), ld]: -inf for masked positions and for positions >= its sequence length.
void indexer_scores_f32(const float* q, const float* w, const float* keys, int64_t r0, int64_t r1, int64_t T, int H,
                        int D, float scale, const int32_t* q_starts, const int32_t* block_table, int max_pages,
                        int64_t L, float* scores, int64_t ld, cudaStream_t s);
// Generic f32 sparse MLA (absorbed): o[r, h, :Dv] over the valid physical slots of indices[r].
void sparse_mla_f32(const float* q_lat, const float* kv, int64_t slots, const int32_t* indices, int64_t rows, int H,
                    int Dqk, int Dv, int K, float scale, float* out, cudaStream_t s);
// Split-KV for small batches: row r's index list cut into S slices of Ks slots (-1 padded),
// out rows r * S + s; q rows (row_bytes each) repeated S times alongside.
void split_kv(const int32_t* indices, int64_t rows, int K, int S, int Ks, int32_t* out_idx, const void* q,
              int64_t row_bytes, void* out_q, cudaStream_t s);
// o[r, h, :] = sum_s exp(lse[r*S+s, h] - LSE) o_part[r*S+s, h, :] with LSE = log sum_s exp(lse);
// a row whose slices are all empty (lse -inf) gives zeros.
// out is f32, or bf16 bits when out_bf16 (the input of a bf16 product next).
void mla_combine(const float* o_part, const float* lse, int64_t rows, int S, int H, int Dv, void* out, bool out_bf16,
                 cudaStream_t s);

// q_lat[r, h, kvr + i] = bf16(q[r, h, nope + i]) for i < rope.
void copy_rope_bf16(const float* q, int64_t rows, int H, int qk, int nope, int rope, uint16_t* q_lat, int ld,
                    int kvr, cudaStream_t s);
// q_lat[r, h, kvr + i] = q[r, h, nope + i] (f32).
void copy_rope_f32(const float* q, int64_t rows, int H, int qk, int nope, int rope, float* q_lat, int ld, int kvr,
                   cudaStream_t s);

}  // namespace indexshare::cuda::engine

// Paged caches and the generic (any dims, f32) attention kernels of the CUDA engine. The fast
// paths for the production dims (fp8 indexer, bf16 sparse MLA 576/512) are the kernels of
// src/cuda/{indexer_topk,topk,sparse_mla}.cu; these cover every other shape exactly in f32.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cmath>

#include "cuda/cuda_check.cuh"
#include "cuda/engine/launchers.cuh"
#include "cuda/indexer.h"
#include "cuda/launch_util.cuh"

namespace indexshare::cuda::engine {
namespace {

using detail::ceil_div;

__global__ void cache_write_kernel(const float* in, int64_t rows, int64_t cols, const int32_t* slots, void* cache,
                                   bool bf16) {
  const int64_t r = blockIdx.x;
  const int64_t dst = static_cast<int64_t>(slots[r]) * cols;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = in[r * cols + i];
    if (bf16) {
      static_cast<uint16_t*>(cache)[dst + i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    } else {
      static_cast<float*>(cache)[dst + i] = v;
    }
  }
}

// One warp per 128-wide vector: amax, scale, e4m3 codes (4 per lane).
__device__ void quantize128(const float* x, uint8_t* codes, float* scale_out) {
  const int lane = threadIdx.x & 31;
  const float4 v = reinterpret_cast<const float4*>(x)[lane];
  float m = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  const float s = fmaxf(m, 1e-4f) / 448.0f;
  const float inv[4] = {v.x / s, v.y / s, v.z / s, v.w / s};
  uint32_t packed = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    packed |= static_cast<uint32_t>(__nv_cvt_float_to_fp8(inv[i], __NV_SATFINITE, __NV_E4M3)) << (8 * i);
  reinterpret_cast<uint32_t*>(codes)[lane] = packed;
  if (lane == 0) *scale_out = s;
}

__global__ void indexer_append_fp8_kernel(const float* k, int64_t rows, const int32_t* slots, uint8_t* pages) {
  const int64_t r = blockIdx.x * 4 + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int32_t slot = slots[r];
  uint8_t* page = pages + static_cast<int64_t>(slot / kIndexerPage) * static_cast<int64_t>(kIndexerFp8PageBytes);
  const int off = slot % kIndexerPage;
  quantize128(k + r * kIndexerDim, page + off * kIndexerDim,
              reinterpret_cast<float*>(page + kIndexerPage * kIndexerDim) + off);
}

__global__ void quantize_q_fp8_kernel(const float* q, int64_t vectors, uint8_t* codes, float* scales) {
  const int64_t v = blockIdx.x * 4 + (threadIdx.x >> 5);
  if (v >= vectors) return;
  quantize128(q + v * kIndexerDim, codes + v * kIndexerDim, scales + v);
}

__global__ void to_physical_kernel(const int32_t* logical, int64_t n, int K, int64_t T, const int32_t* table,
                                   int max_pages, int32_t* physical) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int32_t p = logical[i];
  if (p < 0) {
    physical[i] = -1;
    return;
  }
  const int64_t b = (i / K) / T;
  const int j = p / 64;
  physical[i] = j < max_pages ? table[b * max_pages + j] * 64 + p % 64 : -1;
}

// One thread per (row, key); the row's queries and head weights in shared memory.
constexpr int kMaxIdxHeads = 64;
__global__ void indexer_scores_f32_kernel(const float* q, const float* w, const float* keys, int64_t r0, int64_t T,
                                          int H, int D, float scale, const int32_t* q_starts, const int32_t* table,
                                          int max_pages, int64_t L, float* scores, int64_t ld) {
  extern __shared__ float sq[];  // [H * D + H]
  const int64_t r = r0 + blockIdx.y;
  const int64_t b = r / T, t = r % T;
  for (int i = threadIdx.x; i < H * D; i += blockDim.x) sq[i] = q[r * H * D + i];
  for (int i = threadIdx.x; i < H; i += blockDim.x) sq[H * D + i] = w[r * H + i];
  __syncthreads();
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= L) return;
  const int64_t pos = q_starts[b] + t;
  float* out = scores + blockIdx.y * ld + s;
  if (s > pos) {
    *out = -INFINITY;
    return;
  }
  const int32_t page = table[b * max_pages + s / 64];
  const float* k = keys + (static_cast<int64_t>(page) * 64 + s % 64) * D;
  float dot[kMaxIdxHeads];
  for (int h = 0; h < H; ++h) dot[h] = 0.0f;
  for (int d = 0; d < D; ++d) {
    const float kd = k[d];
    for (int h = 0; h < H; ++h) dot[h] = fmaf(sq[h * D + d], kd, dot[h]);
  }
  float acc = 0.0f;
  for (int h = 0; h < H; ++h) acc += sq[H * D + h] * fmaxf(dot[h], 0.0f);
  *out = acc * scale;
}

// One warp per (row, head). Lanes split the latent dims (up to 32 each).
constexpr int kMlaPerLane = 32;
__global__ void sparse_mla_f32_kernel(const float* q_lat, const float* kv, int64_t slots, const int32_t* indices,
                                      int64_t rows, int H, int Dqk, int Dv, int K, float scale, float* out) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t rh = blockIdx.x * 4 + warp;
  if (rh >= rows * H) return;
  const int64_t r = rh / H;
  const float* q = q_lat + rh * Dqk;
  float qv[kMlaPerLane], acc[kMlaPerLane];
#pragma unroll
  for (int i = 0; i < kMlaPerLane; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < Dqk ? q[d] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = 0; j < K; ++j) {
    const int32_t idx = indices[r * K + j];
    if (idx < 0 || idx >= slots) continue;
    const float* kr = kv + static_cast<int64_t>(idx) * Dqk;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kMlaPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < Dqk) dot = fmaf(qv[i], kr[d], dot);
    }
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float sc = dot * scale;
    const float mn = fmaxf(m, sc);
    const float corr = expf(m - mn), p = expf(sc - mn);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < kMlaPerLane; ++i) {
      const int d = lane + 32 * i;
      acc[i] = acc[i] * corr + (d < Dv ? p * kr[d] : 0.0f);
    }
    m = mn;
  }
  float* o = out + rh * Dv;
#pragma unroll
  for (int i = 0; i < kMlaPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < Dv) o[d] = l > 0.0f ? acc[i] / l : 0.0f;
  }
}

__global__ void copy_rope_kernel(const float* q, int64_t rows, int H, int qk, int nope, int rope, void* q_lat, int ld,
                                 int kvr, bool bf16) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * H * rope) return;
  const int j = static_cast<int>(i % rope);
  const int64_t rh = i / rope;
  const float v = q[rh * qk + nope + j];
  const int64_t dst = rh * ld + kvr + j;
  if (bf16) {
    static_cast<uint16_t*>(q_lat)[dst] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
  } else {
    static_cast<float*>(q_lat)[dst] = v;
  }
}

// Index slices and repeated q rows in one launch: threads [0, n_idx) write indices, the rest q.
__global__ void split_kv_kernel(const int32_t* idx, int64_t rows, int K, int S, int Ks, int32_t* out_idx,
                                const uint4* q, int64_t row_vec, uint4* out_q) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t n_idx = rows * S * Ks;
  if (i < n_idx) {
    const int64_t rs = i / Ks;
    const int j = static_cast<int>(i % Ks), sl = static_cast<int>(rs % S);
    const int src = sl * Ks + j;
    out_idx[i] = src < K ? idx[(rs / S) * K + src] : -1;
    return;
  }
  const int64_t v = i - n_idx;
  if (v >= rows * S * row_vec) return;
  out_q[v] = q[((v / row_vec) / S) * row_vec + v % row_vec];
}

__global__ void mla_combine_kernel(const float* o_part, const float* lse, int S, int H, int Dv, void* out_v,
                                   bool out_bf16) {
  const int64_t rh = blockIdx.x;  // (row, head)
  const int64_t r = rh / H, h = rh % H;
  float mx = -INFINITY;
  for (int s = 0; s < S; ++s) mx = fmaxf(mx, lse[(r * S + s) * H + h]);
  auto put = [&](int d, float v) {
    if (out_bf16) {
      static_cast<uint16_t*>(out_v)[rh * Dv + d] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    } else {
      static_cast<float*>(out_v)[rh * Dv + d] = v;
    }
  };
  if (mx == -INFINITY) {
    for (int d = threadIdx.x; d < Dv; d += blockDim.x) put(d, 0.0f);
    return;
  }
  float z = 0.0f;
  for (int s = 0; s < S; ++s) z += expf(lse[(r * S + s) * H + h] - mx);
  for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < S; ++s) {
      const float l = lse[(r * S + s) * H + h];
      if (l == -INFINITY) continue;
      acc += expf(l - mx) / z * o_part[((r * S + s) * H + h) * Dv + d];
    }
    put(d, acc);
  }
}

}  // namespace

void split_kv(const int32_t* indices, int64_t rows, int K, int S, int Ks, int32_t* out_idx, const void* q,
              int64_t row_bytes, void* out_q, cudaStream_t s) {
  IS_CHECK(row_bytes % 16 == 0, "split_kv: q rows of ", row_bytes, " bytes are not a multiple of 16");
  const int64_t n = rows * S * Ks + rows * S * (row_bytes / 16);
  if (n == 0) return;
  split_kv_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, s>>>(
      indices, rows, K, S, Ks, out_idx, static_cast<const uint4*>(q), row_bytes / 16, static_cast<uint4*>(out_q));
  IS_CUDA_LAUNCH_CHECK("split_kv_kernel");
}

void mla_combine(const float* o_part, const float* lse, int64_t rows, int S, int H, int Dv, void* out, bool out_bf16,
                 cudaStream_t s) {
  if (rows == 0) return;
  mla_combine_kernel<<<static_cast<unsigned>(rows * H), 128, 0, s>>>(o_part, lse, S, H, Dv, out, out_bf16);
  IS_CUDA_LAUNCH_CHECK("mla_combine_kernel");
}

void cache_write(const float* rows_in, int64_t rows, int64_t cols, const int32_t* slots, void* cache, bool bf16,
                 cudaStream_t s) {
  if (rows == 0) return;
  cache_write_kernel<<<static_cast<unsigned>(rows), 128, 0, s>>>(rows_in, rows, cols, slots, cache, bf16);
  IS_CUDA_LAUNCH_CHECK("cache_write_kernel");
}

void indexer_append_fp8(const float* k, int64_t rows, const int32_t* slots, uint8_t* pages, cudaStream_t s) {
  if (rows == 0) return;
  indexer_append_fp8_kernel<<<static_cast<unsigned>(ceil_div(rows, 4)), 128, 0, s>>>(k, rows, slots, pages);
  IS_CUDA_LAUNCH_CHECK("indexer_append_fp8_kernel");
}

void quantize_q_fp8(const float* q, int64_t vectors, uint8_t* codes, float* scales, cudaStream_t s) {
  if (vectors == 0) return;
  quantize_q_fp8_kernel<<<static_cast<unsigned>(ceil_div(vectors, 4)), 128, 0, s>>>(q, vectors, codes, scales);
  IS_CUDA_LAUNCH_CHECK("quantize_q_fp8_kernel");
}

void to_physical(const int32_t* logical, int64_t rows, int K, int64_t T, const int32_t* block_table, int max_pages,
                 int32_t* physical, cudaStream_t s) {
  const int64_t n = rows * K;
  if (n == 0) return;
  to_physical_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, s>>>(logical, n, K, T, block_table, max_pages,
                                                                             physical);
  IS_CUDA_LAUNCH_CHECK("to_physical_kernel");
}

void indexer_scores_f32(const float* q, const float* w, const float* keys, int64_t r0, int64_t r1, int64_t T, int H,
                        int D, float scale, const int32_t* q_starts, const int32_t* block_table, int max_pages,
                        int64_t L, float* scores, int64_t ld, cudaStream_t s) {
  if (r1 <= r0 || L == 0) return;
  IS_CHECK(H <= kMaxIdxHeads, "indexer (cuda, f32): ", H, " heads exceed ", kMaxIdxHeads);
  const size_t smem = static_cast<size_t>(H) * (D + 1) * sizeof(float);
  IS_CHECK(smem <= 48 * 1024, "indexer (cuda, f32): ", H, " x ", D, " queries exceed the shared memory of a block");
  const dim3 grid(static_cast<unsigned>(ceil_div(L, 128)), static_cast<unsigned>(r1 - r0));
  indexer_scores_f32_kernel<<<grid, 128, smem, s>>>(q, w, keys, r0, T, H, D, scale, q_starts, block_table, max_pages, L,
                                                    scores, ld);
  IS_CUDA_LAUNCH_CHECK("indexer_scores_f32_kernel");
}

void sparse_mla_f32(const float* q_lat, const float* kv, int64_t slots, const int32_t* indices, int64_t rows, int H,
                    int Dqk, int Dv, int K, float scale, float* out, cudaStream_t s) {
  if (rows == 0) return;
  IS_CHECK(Dqk <= 32 * kMlaPerLane && Dv <= Dqk, "sparse MLA (cuda, f32): Dqk = ", Dqk, ", Dv = ", Dv,
           " (Dqk <= ", 32 * kMlaPerLane, ", Dv <= Dqk)");
  sparse_mla_f32_kernel<<<static_cast<unsigned>(ceil_div(rows * H, 4)), 128, 0, s>>>(q_lat, kv, slots, indices, rows,
                                                                                     H, Dqk, Dv, K, scale, out);
  IS_CUDA_LAUNCH_CHECK("sparse_mla_f32_kernel");
}

void copy_rope_bf16(const float* q, int64_t rows, int H, int qk, int nope, int rope, uint16_t* q_lat, int ld, int kvr,
                    cudaStream_t s) {
  const int64_t n = rows * H * rope;
  if (n == 0) return;
  copy_rope_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, s>>>(q, rows, H, qk, nope, rope, q_lat, ld, kvr,
                                                                           true);
  IS_CUDA_LAUNCH_CHECK("copy_rope_kernel");
}

void copy_rope_f32(const float* q, int64_t rows, int H, int qk, int nope, int rope, float* q_lat, int ld, int kvr,
                   cudaStream_t s) {
  const int64_t n = rows * H * rope;
  if (n == 0) return;
  copy_rope_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, s>>>(q, rows, H, qk, nope, rope, q_lat, ld, kvr,
                                                                           false);
  IS_CUDA_LAUNCH_CHECK("copy_rope_kernel");
}

}  // namespace indexshare::cuda::engine

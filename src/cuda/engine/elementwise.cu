// Elementwise and row kernels of the CUDA engine: embedding, norms, RoPE, residual adds, SwiGLU,
// conversions, random fills.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cmath>

#include "core/counter_hash.h"
#include "cuda/cuda_check.cuh"
#include "cuda/engine/launchers.cuh"
#include "cuda/launch_util.cuh"

namespace indexshare::cuda::engine {
namespace {

using detail::ceil_div;

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
__device__ __forceinline__ uint8_t f32_to_e4m3(float f) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ float e4m3_to_f32(uint8_t v) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(v), __NV_E4M3);
  return __half2float(__half(h));
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the total.
__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = 0.0f;
  for (int i = 0; i < nw; ++i) t += red[i];
  return t;
}

__global__ void embed_kernel(const void* table, bool bf16, int64_t V, int64_t d, const int32_t* ids, float* out) {
  const int64_t r = blockIdx.x;
  const int32_t id = ids[r];
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float v;
    if (id < 0 || id >= V) {
      v = __int_as_float(0x7fc00000);
    } else if (bf16) {
      v = bf16_bits_to_f32(static_cast<const uint16_t*>(table)[id * d + i]);
    } else {
      v = static_cast<const float*>(table)[id * d + i];
    }
    out[r * d + i] = v;
  }
}

__global__ void rms_norm_kernel(const float* x, int64_t ldx, float* y, int64_t ldy, const float* w, int64_t n,
                                float eps) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * ldx;
  float* yr = y + blockIdx.x * ldy;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * r * w[i];
}

__global__ void add_rms_norm_kernel(float* h, const float* y, float* x, const float* w, int64_t n, float eps) {
  __shared__ float red[32];
  float* hr = h + blockIdx.x * n;
  const float* yr = y + blockIdx.x * n;
  float* xr = x + blockIdx.x * n;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = hr[i] + yr[i];
    hr[i] = v;
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xr[i] = hr[i] * r * w[i];
}

__global__ void layer_norm_kernel(const float* x, int64_t ldx, float* y, int64_t ldy, const float* w, const float* b,
                                  int64_t n, float eps) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * ldx;
  float* yr = y + blockIdx.x * ldy;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xr[i];
  const float mean = block_sum(s, red) / static_cast<float>(n);
  float v = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  const float var = block_sum(v, red) / static_cast<float>(n);
  const float r = 1.0f / sqrtf(var + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = (xr[i] - mean) * r * w[i] + (b ? b[i] : 0.0f);
}

// One thread per (row, head, pair).
__global__ void rope_kernel(float* x, const int32_t* pos, int64_t rows, int heads, int head_dim, int offset, int half,
                            bool interleaved, float factor, const float* inv_freq) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t total = rows * heads * half;
  if (i >= total) return;
  const int j = static_cast<int>(i % half);
  const int64_t rh = i / half;
  const int64_t r = rh / heads;
  float* v = x + rh * head_dim + offset;
  const double ang = static_cast<double>(pos[r]) * static_cast<double>(inv_freq[j]);
  double sd, cd;
  sincos(ang, &sd, &cd);
  const float c = static_cast<float>(cd), sn = static_cast<float>(sd);
  const int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
  const float a = v[ia], b = v[ib];
  float ya = a * c - b * sn, yb = b * c + a * sn;
  if (factor != 1.0f) ya *= factor, yb *= factor;
  v[ia] = ya;
  v[ib] = yb;
}

__global__ void add_kernel(float* h, const float* y, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) h[i] += y[i];
}

__global__ void add_bias_kernel(float* y, const float* b, int64_t rows, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < rows * n) y[i] += b[i % n];
}

__global__ void swiglu_kernel(const float* gu, int64_t rows, int64_t I, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * I) return;
  const int64_t m = i / I, c = i % I;
  const float g = gu[m * 2 * I + c];
  out[i] = g / (1.0f + expf(-g)) * gu[m * 2 * I + I + c];
}

__global__ void f32_to_bf16_kernel(const float* x, uint16_t* y, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = f32_to_bf16_bits(x[i]);
}

__global__ void f32_to_bf16_2d_kernel(const float* x, int64_t ldx, uint16_t* y, int64_t ldy, int64_t rows,
                                      int64_t cols) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  y[r * ldy + c] = f32_to_bf16_bits(x[r * ldx + c]);
}

__global__ void fill_uniform_kernel(void* p, int dtype, int64_t n, uint64_t seed, float amplitude) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float v = counter_uniform(seed, static_cast<uint64_t>(i), amplitude);
  if (dtype == 0) {
    static_cast<float*>(p)[i] = v;
  } else if (dtype == 1) {
    static_cast<uint16_t*>(p)[i] = f32_to_bf16_bits(v);
  } else {
    static_cast<uint8_t*>(p)[i] = f32_to_e4m3(v);
  }
}

__global__ void dequant_fp8_block_kernel(const uint8_t* codes, const float* scale, int64_t N, int64_t K,
                                         uint16_t* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= N * K) return;
  const int64_t n = i / K, k = i % K, kb = (K + 127) / 128;
  out[i] = f32_to_bf16_bits(e4m3_to_f32(codes[i]) * scale[(n / 128) * kb + k / 128]);
}

int blocks_for(int64_t n, int threads) { return static_cast<int>(ceil_div(n, threads)); }

}  // namespace

void embed(const void* table, bool bf16, int64_t V, int64_t d, const int32_t* ids, int64_t rows, float* out,
           cudaStream_t s) {
  if (rows == 0) return;
  embed_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(table, bf16, V, d, ids, out);
  IS_CUDA_LAUNCH_CHECK("embed_kernel");
}

void rms_norm(const float* x, int64_t ldx, float* y, int64_t ldy, const float* w, int64_t rows, int64_t n, float eps,
              cudaStream_t s) {
  if (rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), n >= 1024 ? 512 : 128, 0, s>>>(x, ldx, y, ldy, w, n, eps);
  IS_CUDA_LAUNCH_CHECK("rms_norm_kernel");
}

void layer_norm(const float* x, int64_t ldx, float* y, int64_t ldy, const float* w, const float* b, int64_t rows,
                int64_t n, float eps, cudaStream_t s) {
  if (rows == 0) return;
  layer_norm_kernel<<<static_cast<unsigned>(rows), 128, 0, s>>>(x, ldx, y, ldy, w, b, n, eps);
  IS_CUDA_LAUNCH_CHECK("layer_norm_kernel");
}

void rope(float* x, const int32_t* positions, int64_t rows, int heads, int head_dim, int offset, int rot_dim,
          bool interleaved, float factor, const float* inv_freq, cudaStream_t s) {
  const int64_t n = rows * heads * (rot_dim / 2);
  if (n == 0) return;
  rope_kernel<<<blocks_for(n, 256), 256, 0, s>>>(x, positions, rows, heads, head_dim, offset, rot_dim / 2, interleaved,
                                                 factor, inv_freq);
  IS_CUDA_LAUNCH_CHECK("rope_kernel");
}

void add(float* h, const float* y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n, 256), 256, 0, s>>>(h, y, n);
  IS_CUDA_LAUNCH_CHECK("add_kernel");
}

void add_rms_norm(float* h, const float* y, float* x, const float* w, int64_t rows, int64_t n, float eps,
                  cudaStream_t s) {
  if (rows == 0) return;
  add_rms_norm_kernel<<<static_cast<unsigned>(rows), n >= 1024 ? 512 : 128, 0, s>>>(h, y, x, w, n, eps);
  IS_CUDA_LAUNCH_CHECK("add_rms_norm_kernel");
}

void add_bias(float* y, const float* bias, int64_t rows, int64_t n, cudaStream_t s) {
  if (rows * n == 0) return;
  add_bias_kernel<<<blocks_for(rows * n, 256), 256, 0, s>>>(y, bias, rows, n);
  IS_CUDA_LAUNCH_CHECK("add_bias_kernel");
}

void swiglu(const float* gu, int64_t rows, int64_t I, float* out, cudaStream_t s) {
  if (rows * I == 0) return;
  swiglu_kernel<<<blocks_for(rows * I, 256), 256, 0, s>>>(gu, rows, I, out);
  IS_CUDA_LAUNCH_CHECK("swiglu_kernel");
}

void f32_to_bf16(const float* x, uint16_t* y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  f32_to_bf16_kernel<<<blocks_for(n, 256), 256, 0, s>>>(x, y, n);
  IS_CUDA_LAUNCH_CHECK("f32_to_bf16_kernel");
}

void f32_to_bf16_2d(const float* x, int64_t ldx, uint16_t* y, int64_t ldy, int64_t rows, int64_t cols,
                    cudaStream_t s) {
  if (rows * cols == 0) return;
  f32_to_bf16_2d_kernel<<<blocks_for(rows * cols, 256), 256, 0, s>>>(x, ldx, y, ldy, rows, cols);
  IS_CUDA_LAUNCH_CHECK("f32_to_bf16_2d_kernel");
}

void fill_uniform(void* p, int dtype, int64_t n, uint64_t seed, float amplitude, cudaStream_t s) {
  if (n == 0) return;
  fill_uniform_kernel<<<blocks_for(n, 256), 256, 0, s>>>(p, dtype, n, seed, amplitude);
  IS_CUDA_LAUNCH_CHECK("fill_uniform_kernel");
}

void dequant_fp8_block(const uint8_t* codes, const float* scale, int64_t N, int64_t K, uint16_t* out, cudaStream_t s) {
  if (N * K == 0) return;
  dequant_fp8_block_kernel<<<blocks_for(N * K, 256), 256, 0, s>>>(codes, scale, N, K, out);
  IS_CUDA_LAUNCH_CHECK("dequant_fp8_block_kernel");
}

}  // namespace indexshare::cuda::engine

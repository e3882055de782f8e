// Helpers for the H200 benchmark driver: checked calls, random device fills, event timing.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"

namespace indexshare::bench {

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
// Roughly normal(0, 1): sum of four uniforms, centred and scaled.
__device__ __forceinline__ float rnd_normal(uint64_t seed, uint64_t i) {
  float s = 0;
  for (int j = 0; j < 4; ++j) s += hash32(seed * 0x9e3779b97f4a7c15ull + i * 4 + j) * (1.0f / 4294967296.0f);
  return (s - 2.0f) * 1.7320508f;
}

__global__ void fill_normal_f32(float* p, int64_t n, uint64_t seed, float sd) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = rnd_normal(seed, i) * sd;
}
__global__ void fill_normal_bf16(uint16_t* p, int64_t n, uint64_t seed, float sd) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t u = __float_as_uint(rnd_normal(seed, i) * sd);
    p[i] = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}
// e4m3 codes of normal(0, 32) values: |x| < 448 except in the far tail, which saturates.
__global__ void fill_fp8(uint8_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = fminf(fmaxf(rnd_normal(seed, i) * 32.0f, -448.0f), 448.0f);
    __nv_fp8_storage_t c = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    p[i] = c;
  }
}
// Writes positive per-token scales into every page of a DSA FP8 cache.
__global__ void fill_fp8_page_scales(uint8_t* cache, int64_t pages, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pages * 64;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pg = i / 64, r = i % 64;
    float* s = reinterpret_cast<float*>(cache + pg * (64 * 132) + 64 * 128);
    s[r] = (0.5f + hash32(seed + i) * (1.5f / 4294967296.0f)) / 64.0f;
  }
}
__global__ void fill_indices(int32_t* p, int64_t n, int64_t range, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<int32_t>(hash32(seed ^ (i * 0x9e3779b97f4a7c15ull)) % static_cast<uint64_t>(range));
}

inline dim3 fill_grid() { return dim3(1024); }

// Median of event-timed runs (ms). fn(i) runs iteration i (rotate inputs with i).
inline double time_ms(const std::function<void(int)>& fn, int min_reps = 5, int max_reps = 50,
                      double budget_ms = 300.0) {
  cudaEvent_t a, b;
  IS_CUDA_CHECK(cudaEventCreate(&a));
  IS_CUDA_CHECK(cudaEventCreate(&b));
  fn(0);  // warm-up (module load, smem attributes)
  IS_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> t;
  float total = 0;
  for (int i = 0; i < max_reps && (i < min_reps || total < budget_ms); ++i) {
    IS_CUDA_CHECK(cudaEventRecord(a));
    fn(i + 1);
    IS_CUDA_CHECK(cudaEventRecord(b));
    IS_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    IS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
    total += ms;
  }
  IS_CUDA_CHECK(cudaEventDestroy(a));
  IS_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace indexshare::bench

// Small-M products y = x W^T for decode steps: f32, bf16 or block-scaled FP8 weights read once
// from memory (the bound at small M), x rows reused from registers, grouped over MoE experts with
// device-side row offsets so a decode step needs no host synchronisation.
//
// Block = 4 warps; each warp owns NR = 4 output rows and walks K with 8 elements per lane per
// step (16 bytes of bf16, 8 of fp8, 32 of f32), multiplying them with MT rows of x; the lanes'
// partial sums meet by shuffles at the end. An 8-element chunk never crosses a 128-wide FP8
// block, so the block scale multiplies the chunk's dot product once.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "cuda/cuda_check.cuh"
#include "cuda/engine/launchers.cuh"
#include "cuda/launch_util.cuh"

namespace indexshare::cuda::engine {
namespace {

constexpr int kNR = 4;       // output rows per warp
constexpr int kWarps = 4;    // warps per block
constexpr int kChunk = 8;    // K elements per lane per step

__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

__device__ __forceinline__ void fp8x2(uint16_t v, float& a, float& b) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v), __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  a = f.x;
  b = f.y;
}

// 8 weights starting at element `off` (vector path) or `valid` < 8 of them (scalar path).
template <WKind KIND, bool VEC>
__device__ __forceinline__ void load_w(const void* w, int64_t off, int valid, float o[kChunk]) {
  if constexpr (KIND == WKind::kF32) {
    const float* p = static_cast<const float*>(w) + off;
    if constexpr (VEC) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
      o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
    } else {
#pragma unroll
      for (int i = 0; i < kChunk; ++i) o[i] = i < valid ? p[i] : 0.0f;
    }
  } else if constexpr (KIND == WKind::kBf16) {
    const uint16_t* p = static_cast<const uint16_t*>(w) + off;
    if constexpr (VEC) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
      o[0] = bf16_lo(u.x), o[1] = bf16_hi(u.x), o[2] = bf16_lo(u.y), o[3] = bf16_hi(u.y);
      o[4] = bf16_lo(u.z), o[5] = bf16_hi(u.z), o[6] = bf16_lo(u.w), o[7] = bf16_hi(u.w);
    } else {
#pragma unroll
      for (int i = 0; i < kChunk; ++i) o[i] = i < valid ? __uint_as_float(static_cast<uint32_t>(p[i]) << 16) : 0.0f;
    }
  } else {
    const uint8_t* p = static_cast<const uint8_t*>(w) + off;
    if constexpr (VEC) {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
      fp8x2(static_cast<uint16_t>(u.x), o[0], o[1]);
      fp8x2(static_cast<uint16_t>(u.x >> 16), o[2], o[3]);
      fp8x2(static_cast<uint16_t>(u.y), o[4], o[5]);
      fp8x2(static_cast<uint16_t>(u.y >> 16), o[6], o[7]);
    } else {
#pragma unroll
      for (int i = 0; i < kChunk; i += 2) {
        const uint16_t lo = i < valid ? p[i] : 0, hi = i + 1 < valid ? p[i + 1] : 0;
        fp8x2(static_cast<uint16_t>(lo | (hi << 8)), o[i], o[i + 1]);
      }
    }
  }
}

template <bool VEC>
__device__ __forceinline__ void load_x(const float* p, int valid, float o[kChunk]) {
  if constexpr (VEC) {
    const float4 a = *reinterpret_cast<const float4*>(p), b = *(reinterpret_cast<const float4*>(p) + 1);
    o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) o[i] = i < valid ? p[i] : 0.0f;
  }
}

template <WKind KIND, int MT, bool VEC>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(GemvArgs a) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = blockIdx.y;
  const int64_t r0 = a.row_off ? a.row_off[g] : 0, r1 = a.row_off ? a.row_off[g + 1] : a.R;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kNR;
  if (r0 >= r1 || n0 >= a.N) return;
  const int64_t N = a.N, K = a.K, kb = (K + 127) / 128;
  const int64_t wg = static_cast<int64_t>(g) * N * K;
  const float* sc = a.scale ? a.scale + static_cast<int64_t>(g) * ((N + 127) / 128) * kb : nullptr;
  for (int64_t rb = r0; rb < r1; rb += MT) {
    float acc[MT][kNR];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int r = 0; r < kNR; ++r) acc[m][r] = 0.0f;
    for (int64_t k = static_cast<int64_t>(lane) * kChunk; k < K; k += 32 * kChunk) {
      const int valid = static_cast<int>(K - k < kChunk ? K - k : kChunk);
      float wv[kNR][kChunk];
      float s[kNR];
#pragma unroll
      for (int r = 0; r < kNR; ++r) {
        const int64_t n = n0 + r;
        if (n < N) {
          load_w<KIND, VEC>(a.w, wg + n * K + k, valid, wv[r]);
          s[r] = KIND == WKind::kFp8 ? sc[(n / 128) * kb + k / 128] : 1.0f;
        } else {
#pragma unroll
          for (int i = 0; i < kChunk; ++i) wv[r][i] = 0.0f;
          s[r] = 0.0f;
        }
      }
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (rb + m >= r1) break;
        float xv[kChunk];
        load_x<VEC>(a.x + (rb + m) * K + k, valid, xv);
#pragma unroll
        for (int r = 0; r < kNR; ++r) {
          float d = 0.0f;
#pragma unroll
          for (int i = 0; i < kChunk; ++i) d = fmaf(wv[r][i], xv[i], d);
          if constexpr (KIND == WKind::kFp8) {
            acc[m][r] = fmaf(d, s[r], acc[m][r]);
          } else {
            acc[m][r] += d;
          }
        }
      }
    }
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int r = 0; r < kNR; ++r)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[m][r] += __shfl_xor_sync(0xffffffffu, acc[m][r], o);
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (rb + m >= r1) break;
#pragma unroll
        for (int r = 0; r < kNR; ++r) {
          const int64_t n = n0 + r;
          if (n < N) a.y[(rb + m) * N + n] = acc[m][r] + (a.bias ? a.bias[n] : 0.0f);
        }
      }
    }
  }
}

template <WKind KIND, int MT>
void launch(const GemvArgs& a, bool vec, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(detail::ceil_div(a.N, kWarps * kNR)), static_cast<unsigned>(a.groups));
  if (vec) {
    gemv_kernel<KIND, MT, true><<<grid, kWarps * 32, 0, s>>>(a);
  } else {
    gemv_kernel<KIND, MT, false><<<grid, kWarps * 32, 0, s>>>(a);
  }
  IS_CUDA_LAUNCH_CHECK("gemv_kernel");
}

template <WKind KIND>
void dispatch_mt(const GemvArgs& a, bool vec, cudaStream_t s) {
  if (a.max_rows <= 1) {
    launch<KIND, 1>(a, vec, s);
  } else if (a.max_rows <= 2) {
    launch<KIND, 2>(a, vec, s);
  } else if (a.max_rows <= 4) {
    launch<KIND, 4>(a, vec, s);
  } else {
    launch<KIND, 8>(a, vec, s);
  }
}

}  // namespace

void gemv(const GemvArgs& a, cudaStream_t s) {
  if (a.R == 0 || a.N == 0) return;
  IS_CHECK(a.groups >= 1 && a.groups <= 65535, "gemv: groups = ", a.groups);
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec = a.K % kChunk == 0 && aligned(a.x) && aligned(a.w);
  switch (a.kind) {
    case WKind::kF32: dispatch_mt<WKind::kF32>(a, vec, s); break;
    case WKind::kBf16: dispatch_mt<WKind::kBf16>(a, vec, s); break;
    case WKind::kFp8: dispatch_mt<WKind::kFp8>(a, vec, s); break;
  }
}

}  // namespace indexshare::cuda::engine

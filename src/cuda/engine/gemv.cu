// Small-M products y = x W^T for decode steps: f32, bf16 or block-scaled FP8 weights read once
// from memory (the bound at small M), grouped over MoE experts with device-side row offsets so a
// decode step needs no host synchronisation.
//
// A block of 4 warps owns NR = 4 output rows and splits K between all its 128 threads: each
// thread loads 16 bytes of every row per step (16 fp8, 8 bf16 or 4 f32 weights), widens them
// and multiplies them with MT rows of x; partial sums meet by warp shuffles, then across the
// warps in shared memory (a fixed order: results do not depend on timing). A 16-byte chunk never
// crosses a 128-wide FP8 block, so the block scale multiplies the chunk's dot product once.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "cuda/cuda_check.cuh"
#include "cuda/engine/launchers.cuh"
#include "cuda/launch_util.cuh"

namespace indexshare::cuda::engine {
namespace {

constexpr int kNR = 4;       // output rows per block
constexpr int kWarps = 4;    // warps per block (they split K)
constexpr int kThreads = kWarps * 32;

template <WKind KIND>
__host__ __device__ constexpr int chunk() {  // weights per 16-byte load
  return KIND == WKind::kFp8 ? 16 : KIND == WKind::kBf16 ? 8 : 4;
}

__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

__device__ __forceinline__ void fp8x2(uint16_t v, float& a, float& b) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v), __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  a = f.x;
  b = f.y;
}
__device__ __forceinline__ void fp8x4(uint32_t v, float* o) {
  fp8x2(static_cast<uint16_t>(v), o[0], o[1]);
  fp8x2(static_cast<uint16_t>(v >> 16), o[2], o[3]);
}

// One chunk of weights starting at element `off`: a 16-byte load (VEC) or `valid` scalars.
template <WKind KIND, bool VEC>
__device__ __forceinline__ void load_w(const void* w, int64_t off, int valid, float* o) {
  constexpr int CH = chunk<KIND>();
  if constexpr (KIND == WKind::kF32) {
    const float* p = static_cast<const float*>(w) + off;
    if constexpr (VEC) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(p));
      o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w;
    } else {
#pragma unroll
      for (int i = 0; i < CH; ++i) o[i] = i < valid ? p[i] : 0.0f;
    }
  } else if constexpr (KIND == WKind::kBf16) {
    const uint16_t* p = static_cast<const uint16_t*>(w) + off;
    if constexpr (VEC) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
      o[0] = bf16_lo(u.x), o[1] = bf16_hi(u.x), o[2] = bf16_lo(u.y), o[3] = bf16_hi(u.y);
      o[4] = bf16_lo(u.z), o[5] = bf16_hi(u.z), o[6] = bf16_lo(u.w), o[7] = bf16_hi(u.w);
    } else {
#pragma unroll
      for (int i = 0; i < CH; ++i) o[i] = i < valid ? __uint_as_float(static_cast<uint32_t>(p[i]) << 16) : 0.0f;
    }
  } else {
    const uint8_t* p = static_cast<const uint8_t*>(w) + off;
    if constexpr (VEC) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
      fp8x4(u.x, o);
      fp8x4(u.y, o + 4);
      fp8x4(u.z, o + 8);
      fp8x4(u.w, o + 12);
    } else {
#pragma unroll
      for (int i = 0; i < CH; i += 2) {
        const uint16_t lo = i < valid ? p[i] : 0, hi = i + 1 < valid ? p[i + 1] : 0;
        fp8x2(static_cast<uint16_t>(lo | (hi << 8)), o[i], o[i + 1]);
      }
    }
  }
}

template <int CH, bool VEC>
__device__ __forceinline__ void load_x(const float* p, int valid, float* o) {
  if constexpr (VEC) {
#pragma unroll
    for (int i = 0; i < CH; i += 4) {
      const float4 a = *reinterpret_cast<const float4*>(p + i);
      o[i] = a.x, o[i + 1] = a.y, o[i + 2] = a.z, o[i + 3] = a.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < CH; ++i) o[i] = i < valid ? p[i] : 0.0f;
  }
}

template <WKind KIND, int MT, bool VEC>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvArgs a) {
  constexpr int CH = chunk<KIND>();
  __shared__ float red[kWarps][MT][kNR];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = blockIdx.y;
  const int64_t r0 = a.row_off ? a.row_off[g] : 0, r1 = a.row_off ? a.row_off[g + 1] : a.R;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kNR;
  if (r0 >= r1 || n0 >= a.N) return;  // uniform over the block
  const int64_t N = a.N, K = a.K, kb = (K + 127) / 128;
  const int64_t wg = static_cast<int64_t>(g) * N * K;
  const float* sc = a.scale ? a.scale + static_cast<int64_t>(g) * ((N + 127) / 128) * kb : nullptr;
  for (int64_t rb = r0; rb < r1; rb += MT) {
    float acc[MT][kNR];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int r = 0; r < kNR; ++r) acc[m][r] = 0.0f;
    for (int64_t k = static_cast<int64_t>(tid) * CH; k < K; k += static_cast<int64_t>(kThreads) * CH) {
      const int valid = static_cast<int>(K - k < CH ? K - k : CH);
      float wv[kNR][CH];
      float s[kNR];
#pragma unroll
      for (int r = 0; r < kNR; ++r) {
        const int64_t n = n0 + r;
        if (n < N) {
          load_w<KIND, VEC>(a.w, wg + n * K + k, valid, wv[r]);
          s[r] = KIND == WKind::kFp8 ? sc[(n / 128) * kb + k / 128] : 1.0f;
        } else {
#pragma unroll
          for (int i = 0; i < CH; ++i) wv[r][i] = 0.0f;
          s[r] = 0.0f;
        }
      }
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (rb + m >= r1) break;
        float xv[CH];
        load_x<CH, VEC>(a.x + (rb + m) * K + k, valid, xv);
#pragma unroll
        for (int r = 0; r < kNR; ++r) {
          float d = 0.0f;
#pragma unroll
          for (int i = 0; i < CH; ++i) d = fmaf(wv[r][i], xv[i], d);
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
      for (int r = 0; r < kNR; ++r) {
        float v = acc[m][r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) red[warp][m][r] = v;
      }
    __syncthreads();
    if (tid < MT * kNR) {
      const int m = tid / kNR, r = tid % kNR;
      const int64_t n = n0 + r;
      if (rb + m < r1 && n < N) {
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) v += red[w][m][r];
        a.y[(rb + m) * N + n] = v + (a.bias ? a.bias[n] : 0.0f);
      }
    }
    __syncthreads();
  }
}

template <WKind KIND, int MT>
void launch(const GemvArgs& a, bool vec, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(detail::ceil_div(a.N, kNR)), static_cast<unsigned>(a.groups));
  if (vec) {
    gemv_kernel<KIND, MT, true><<<grid, kThreads, 0, s>>>(a);
  } else {
    gemv_kernel<KIND, MT, false><<<grid, kThreads, 0, s>>>(a);
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
  IS_CHECK(a.N / kNR < (int64_t{1} << 31), "gemv: N = ", a.N, " too large");
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  // 16-byte loads need every row start aligned: K a multiple of the chunk (and of 4 for x).
  const auto vec_for = [&](int ch) { return a.K % ch == 0 && a.K % 4 == 0 && aligned(a.x) && aligned(a.w); };
  switch (a.kind) {
    case WKind::kF32: dispatch_mt<WKind::kF32>(a, vec_for(chunk<WKind::kF32>()), s); break;
    case WKind::kBf16: dispatch_mt<WKind::kBf16>(a, vec_for(chunk<WKind::kBf16>()), s); break;
    case WKind::kFp8: dispatch_mt<WKind::kFp8>(a, vec_for(chunk<WKind::kFp8>()), s); break;
  }
}

}  // namespace indexshare::cuda::engine

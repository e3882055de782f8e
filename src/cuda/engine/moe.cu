// MoE routing, dispatch and combine on the GPU (the twin of ops/moe_route.h and the CPU
// backend's moe): no host synchronisation, so a decode step can run the experts with the
// grouped small-M product (gemv.cu) straight from these device-side offsets.
#include <cmath>

#include "cuda/cuda_check.cuh"
#include "cuda/engine/launchers.cuh"
#include "cuda/launch_util.cuh"

namespace indexshare::cuda::engine {
namespace {

constexpr int kRouteWarps = 4;
constexpr int kMaxTopk = 32;

// The better of two (value, index) candidates: larger value, then lower index.
__device__ __forceinline__ void better(float& v, int& i, float v2, int i2) {
  if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, i, o);
    better(v, i, v2, i2);
  }
}

// One warp per token. Shared memory per warp: sigmoid s [E], choice c [E].
__global__ void moe_route_kernel(const float* logits, const float* bias, int64_t M, int E, int k, int n_group,
                                 int topk_group, bool norm, float scaling, int32_t* experts, float* weights) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp;
  if (t >= M) return;
  float* sg = smem + static_cast<size_t>(warp) * 2 * E;
  float* ch = sg + E;
  const float ninf = -INFINITY;
  for (int e = lane; e < E; e += 32) {
    const float l = logits[t * E + e];
    const float s = 1.0f / (1.0f + expf(-l));
    sg[e] = s;
    ch[e] = isnan(l) ? ninf : s + bias[e];  // a NaN logit never wins (the CPU op throws on it)
  }
  __syncwarp();
  if (n_group > 1) {
    const int per = E / n_group;
    // Group score: the sum of the group's top two choices.
    float gs = ninf;
    if (lane < n_group) {
      float a = ninf, b = ninf;
      int ia = -1;
      for (int j = 0; j < per; ++j) {
        const float v = ch[lane * per + j];
        if (ia < 0 || v > a) {
          b = a;
          a = v;
          ia = j;
        } else if (v > b) {
          b = v;
        }
      }
      gs = per >= 2 ? a + b : a;
    }
    unsigned keep = 0;
    for (int r = 0; r < topk_group; ++r) {
      float v = lane < n_group && !((keep >> lane) & 1u) ? gs : ninf;
      int i = lane < n_group && !((keep >> lane) & 1u) ? lane : 1 << 30;
      warp_argmax(v, i);
      keep |= 1u << i;
    }
    __syncwarp();
    for (int e = lane; e < E; e += 32)
      if (!((keep >> (e / per)) & 1u)) ch[e] = ninf;
    __syncwarp();
  }
  int chosen[kMaxTopk];
  float sum = 0.0f;
  for (int r = 0; r < k; ++r) {
    float v = ninf;
    int i = 1 << 30;
    for (int e = lane; e < E; e += 32) {
      bool taken = false;
      for (int q = 0; q < r; ++q) taken |= chosen[q] == e;
      if (!taken) better(v, i, ch[e], e);
    }
    warp_argmax(v, i);
    chosen[r] = i;
    sum += sg[i];  // in descending choice order, as the CPU op sums
  }
  if (lane == 0) {
    for (int a = 1; a < k; ++a)
      for (int b = a; b > 0 && chosen[b] < chosen[b - 1]; --b) {
        const int tmp = chosen[b];
        chosen[b] = chosen[b - 1];
        chosen[b - 1] = tmp;
      }
    for (int r = 0; r < k; ++r) {
      float w = sg[chosen[r]];
      if (norm) w /= sum + 1e-20f;
      experts[t * k + r] = chosen[r];
      weights[t * k + r] = w * scaling;
    }
  }
}

__global__ void moe_count_kernel(const int32_t* experts, int64_t n, int32_t* counts) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) atomicAdd(&counts[experts[i]], 1);
}

__global__ void moe_scan_kernel(const int32_t* counts, int E, int32_t* offsets) {
  if (threadIdx.x != 0) return;
  int32_t acc = 0;
  for (int e = 0; e < E; ++e) {
    offsets[e] = acc;
    acc += counts[e];
  }
  offsets[E] = acc;
}

__global__ void moe_scatter_kernel(const int32_t* experts, int64_t n, int k, const int32_t* offsets, int32_t* cursor,
                                   int32_t* slot_pos, int32_t* perm_tok) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int e = experts[i];
  const int32_t pos = offsets[e] + atomicAdd(&cursor[e], 1);
  slot_pos[i] = pos;
  perm_tok[pos] = static_cast<int32_t>(i / k);
}

__global__ void gather_rows_kernel(const float* x, int64_t d, const int32_t* rows, float* out) {
  const int64_t r = blockIdx.x;
  const float* src = x + static_cast<int64_t>(rows[r]) * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) out[r * d + i] = src[i];
}

// One block: count per expert, exclusive scan, scatter, then gather the rows of x.
__global__ void moe_dispatch_small_kernel(const int32_t* experts, int n, int k, int E, const float* x, int64_t d,
                                          int32_t* offsets, int32_t* slot_pos, float* xs) {
  extern __shared__ int32_t sh[];  // counts [E], cursor [E], perm_tok [n]
  int32_t* counts = sh;
  int32_t* cursor = sh + E;
  int32_t* perm = sh + 2 * E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) atomicAdd(&counts[experts[i]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t acc = 0;
    for (int e = 0; e < E; ++e) {
      cursor[e] = acc;
      offsets[e] = acc;
      acc += counts[e];
    }
    offsets[E] = acc;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int32_t pos = atomicAdd(&cursor[experts[i]], 1);
    slot_pos[i] = pos;
    perm[pos] = i / k;
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < static_cast<int64_t>(n) * d; j += blockDim.x) {
    const int64_t pos = j / d, c = j % d;
    xs[j] = x[static_cast<int64_t>(perm[pos]) * d + c];
  }
}

__global__ void moe_combine_kernel(const float* ys, const int32_t* slot_pos, const float* weights, const float* shared,
                                   int k, int64_t d, float* y) {
  const int64_t t = blockIdx.x;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) acc += ys[static_cast<int64_t>(slot_pos[t * k + j]) * d + i] * weights[t * k + j];
    y[t * d + i] = shared ? acc + shared[t * d + i] : acc;
  }
}

}  // namespace

void moe_route(const float* logits, const float* bias, int64_t M, int E, int k, int n_group, int topk_group, bool norm,
               float scaling, int32_t* experts, float* weights, cudaStream_t s) {
  if (M == 0) return;
  IS_CHECK(k >= 1 && k <= kMaxTopk, "moe_route (cuda): top_k = ", k, " must be in [1, ", kMaxTopk, "]");
  IS_CHECK(n_group <= 32, "moe_route (cuda): n_group = ", n_group, " must be <= 32");
  const size_t smem = static_cast<size_t>(kRouteWarps) * 2 * E * sizeof(float);
  IS_CHECK(smem <= 48 * 1024, "moe_route (cuda): ", E, " experts exceed the router's shared memory");
  moe_route_kernel<<<static_cast<unsigned>(detail::ceil_div(M, kRouteWarps)), kRouteWarps * 32, smem, s>>>(
      logits, bias, M, E, k, n_group, topk_group, norm, scaling, experts, weights);
  IS_CUDA_LAUNCH_CHECK("moe_route_kernel");
}

void moe_dispatch(const int32_t* experts, int64_t M, int k, int E, int32_t* counts, int32_t* offsets, int32_t* cursor,
                  int32_t* slot_pos, int32_t* perm_tok, cudaStream_t s) {
  const int64_t n = M * k;
  IS_CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int32_t) * static_cast<size_t>(E), s));
  IS_CUDA_CHECK(cudaMemsetAsync(cursor, 0, sizeof(int32_t) * static_cast<size_t>(E), s));
  if (n > 0) {
    moe_count_kernel<<<static_cast<unsigned>(detail::ceil_div(n, 256)), 256, 0, s>>>(experts, n, counts);
    IS_CUDA_LAUNCH_CHECK("moe_count_kernel");
  }
  moe_scan_kernel<<<1, 32, 0, s>>>(counts, E, offsets);
  IS_CUDA_LAUNCH_CHECK("moe_scan_kernel");
  if (n > 0) {
    moe_scatter_kernel<<<static_cast<unsigned>(detail::ceil_div(n, 256)), 256, 0, s>>>(experts, n, k, offsets, cursor,
                                                                                        slot_pos, perm_tok);
    IS_CUDA_LAUNCH_CHECK("moe_scatter_kernel");
  }
}

void moe_dispatch_small(const int32_t* experts, int64_t M, int k, int E, const float* x, int64_t d, int32_t* offsets,
                        int32_t* slot_pos, float* xs, cudaStream_t s) {
  const int64_t n = M * k;
  IS_CHECK(n <= kMoeSmallPairs, "moe_dispatch_small: ", n, " pairs");
  const size_t smem = (2 * static_cast<size_t>(E) + static_cast<size_t>(n)) * sizeof(int32_t);
  IS_CHECK(smem <= 48 * 1024, "moe_dispatch_small: ", E, " experts exceed the shared memory");
  moe_dispatch_small_kernel<<<1, 1024, smem, s>>>(experts, static_cast<int>(n), k, E, x, d, offsets, slot_pos, xs);
  IS_CUDA_LAUNCH_CHECK("moe_dispatch_small_kernel");
}

void gather_rows(const float* x, int64_t d, const int32_t* rows, int64_t n, float* out, cudaStream_t s) {
  if (n == 0) return;
  gather_rows_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(x, d, rows, out);
  IS_CUDA_LAUNCH_CHECK("gather_rows_kernel");
}

void moe_combine(const float* ys, const int32_t* slot_pos, const float* weights, const float* shared, int64_t M, int k,
                 int64_t d, float* y, cudaStream_t s) {
  if (M == 0) return;
  moe_combine_kernel<<<static_cast<unsigned>(M), 256, 0, s>>>(ys, slot_pos, weights, shared, k, d, y);
  IS_CUDA_LAUNCH_CHECK("moe_combine_kernel");
}

}  // namespace indexshare::cuda::engine

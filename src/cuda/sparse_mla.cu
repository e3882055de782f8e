// Sparse MLA (absorbed form) with mma.sync bf16.
//
// Block = one query row x 64 heads, 8 warps: warp = (row group rg of 16 heads, half).
// Per tile of 32 gathered latents (cp.async, double-buffered, empty slots zero-filled):
//   S = Q K^T: each half contracts 288 of the 576 dims; the halves swap partial sums through
//   shared memory, so both hold the full 16 x 32 scores (bitwise equal: a + b == b + a);
//   online softmax in the exp2 domain; O += P V with each half owning 256 of the 512 value dims.
// Shared rows are padded to 1168 bytes so that ldmatrix row addresses fall in distinct banks.
#include "cuda/sparse_mla.h"

#include <cuda_bf16.h>

#include <cmath>

#include "cuda/cuda_check.cuh"
#include "cuda/launch_util.cuh"

namespace indexshare::cuda {
namespace {

constexpr int kHeads = 64;          // heads per block
constexpr int kKeys = 32;           // latents per tile
constexpr int kRowStride = 1168;    // bytes per padded smem row (576 * 2 + 16)
constexpr int kQBytes = kHeads * kRowStride;
constexpr int kTileBytes = kKeys * kRowStride;
constexpr int kXsBytes = 8 * 16 * 32 * 4;
constexpr int kMaxK = 8192;         // the row's indices are staged in shared memory
constexpr int kSmemBase = kQBytes + 2 * kTileBytes + kXsBytes + 2 * kKeys * 4;
constexpr int kPieces = kMlaDqk * 2 / 16;  // 16-byte pieces per latent row

__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, bool valid) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// idx_row: the row's indices in shared memory, already range-checked (-1 = empty).
__device__ __forceinline__ int32_t slot_index(const int32_t* idx_row, int K, int j) {
  return j < K ? idx_row[j] : -1;
}

// Gathers tile `it` (latents of slots [it*32, it*32+32)) into buf; records the slot indices.
__device__ __forceinline__ void load_tile(const SparseMlaCudaParams& p, const int32_t* idx_row, int it,
                                          uint8_t* buf, int32_t* s_idx) {
  const uint8_t* kv = reinterpret_cast<const uint8_t*>(p.kv);
  for (int i = threadIdx.x; i < kKeys * kPieces; i += blockDim.x) {
    const int key = i / kPieces, piece = i % kPieces;
    const int32_t s = slot_index(idx_row, p.K, it * kKeys + key);
    const uint8_t* src = kv + (s >= 0 ? static_cast<int64_t>(s) * kMlaDqk * 2 + piece * 16 : 0);
    cp_async16_zfill(buf + key * kRowStride + piece * 16, src, s >= 0);
  }
  if (threadIdx.x < kKeys) s_idx[threadIdx.x] = slot_index(idx_row, p.K, it * kKeys + threadIdx.x);
}

__global__ void __launch_bounds__(256, 1) sparse_mla_kernel(const SparseMlaCudaParams p) {
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* sq = smem;
  uint8_t* skv0 = smem + kQBytes;  // two tiles of kTileBytes
  float* xs = reinterpret_cast<float*>(smem + kQBytes + 2 * kTileBytes);
  int32_t* s_idx = reinterpret_cast<int32_t*>(smem + kQBytes + 2 * kTileBytes + kXsBytes);
  int32_t* s_row = reinterpret_cast<int32_t*>(smem + kSmemBase);  // [K]

  const int64_t t = blockIdx.x;
  const int h0 = blockIdx.y * kHeads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int rg = warp & 3, half = warp >> 2;
  const int g = lane >> 2, c = lane & 3;
  const bool active = h0 + rg * 16 < p.H;
  const int ntiles = (p.K + kKeys - 1) / kKeys;
  // Stage the row's indices once (coalesced), so that gathers never wait on them.
  for (int j = threadIdx.x; j < p.K; j += blockDim.x) {
    const int32_t v = p.indices[t * p.K + j];
    s_row[j] = (v >= 0 && v < p.L) ? v : -1;
  }
  __syncthreads();
  const int32_t* idx_row = s_row;

  // Q rows of this block's heads (rows past H are zero).
  {
    const uint8_t* q = reinterpret_cast<const uint8_t*>(p.q);
    for (int i = threadIdx.x; i < kHeads * kPieces; i += blockDim.x) {
      const int r = i / kPieces, piece = i % kPieces;
      const bool ok = h0 + r < p.H;
      const uint8_t* src = q + (ok ? ((t * p.H + h0 + r) * kMlaDqk * 2 + piece * 16) : 0);
      cp_async16_zfill(sq + r * kRowStride + piece * 16, src, ok);
    }
  }
  if (ntiles > 0) load_tile(p, idx_row, 0, skv0, s_idx);
  cp_commit();

  const float c_log2 = p.scale * 1.4426950408889634f;
  float o[32][4];
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int it = 0; it < ntiles; ++it) {
    const int cur = it & 1;
    if (it + 1 < ntiles) load_tile(p, idx_row, it + 1, skv0 + (cur ^ 1) * kTileBytes, s_idx + (cur ^ 1) * kKeys);
    cp_commit();
    cp_wait<1>();
    __syncthreads();
    const uint8_t* kt = skv0 + cur * kTileBytes;
    const int32_t* ti = s_idx + cur * kKeys;

    // Partial S over this half's 288 dims.
    float sacc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) sacc[i][0] = sacc[i][1] = sacc[i][2] = sacc[i][3] = 0.0f;
    if (active) {
      const uint8_t* qa = sq + (rg * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kRowStride + (lane >> 4) * 16;
      const uint8_t* kb = kt + ((lane & 7) + (lane >> 4) * 8) * kRowStride + ((lane >> 3) & 1) * 16;
#pragma unroll 6
      for (int ks = 0; ks < 18; ++ks) {
        const int k0 = (half * 18 + ks) * 32;  // byte offset of the k16 step
        uint32_t a[4], b01[4], b23[4];
        ldsm_x4(a, qa + k0);
        ldsm_x4(b01, kb + k0);
        ldsm_x4(b23, kb + 16 * kRowStride + k0);
        mma16816(sacc[0], a, b01[0], b01[1]);
        mma16816(sacc[1], a, b01[2], b01[3]);
        mma16816(sacc[2], a, b23[0], b23[1]);
        mma16816(sacc[3], a, b23[2], b23[3]);
      }
    }
    float* mine = xs + warp * 512;
#pragma unroll
    for (int i = 0; i < 16; ++i) mine[i * 32 + lane] = sacc[i >> 2][i & 3];
    __syncthreads();
    const float* other = xs + (warp ^ 4) * 512;
#pragma unroll
    for (int i = 0; i < 16; ++i) sacc[i >> 2][i & 3] += other[i * 32 + lane];

    if (active) {
      // Online softmax (log2 domain). Rows g (e = 0, 1) and g + 8 (e = 2, 3).
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = nt * 8 + 2 * c + (e & 1);
          const float v = ti[key] >= 0 ? sacc[nt][e] * c_log2 : -INFINITY;
          sacc[nt][e] = v;
          mx[e >> 1] = fmaxf(mx[e >> 1], v);
        }
      float alpha[2], mu[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float mn = fmaxf(m[r], mx[r]);
        mu[r] = mn == -INFINITY ? 0.0f : mn;
        alpha[r] = exp2f(m[r] - mu[r]);
        m[r] = mn;
        l[r] *= alpha[r];
      }
      uint32_t pa[2][4];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        float pv[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          pv[e] = exp2f(sacc[nt][e] - mu[e >> 1]);
          l[e >> 1] += pv[e];
        }
        pa[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16(pv[0], pv[1]);
        pa[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16(pv[2], pv[3]);
      }
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        o[i][0] *= alpha[0];
        o[i][1] *= alpha[0];
        o[i][2] *= alpha[1];
        o[i][3] *= alpha[1];
      }
      // O += P V over this half's 256 value dims.
      const uint8_t* vb = kt + ((lane & 7) + ((lane >> 3) & 1) * 8) * kRowStride + half * 512 + (lane >> 4) * 16;
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
#pragma unroll
        for (int np = 0; np < 16; ++np) {
          uint32_t b[4];
          ldsm_x4_t(b, vb + kk * 16 * kRowStride + np * 32);
          mma16816(o[2 * np], pa[kk], b[0], b[1]);
          mma16816(o[2 * np + 1], pa[kk], b[2], b[3]);
        }
      }
    }
    __syncthreads();
  }
  cp_wait<0>();

  if (!active) return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int h = h0 + rg * 16 + g + r * 8;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    float* orow = p.out + (t * p.H + h) * kMlaDv + half * 256 + 2 * c;
#pragma unroll
    for (int nt = 0; nt < 32; ++nt)
      *reinterpret_cast<float2*>(orow + nt * 8) = make_float2(o[nt][r * 2] * inv, o[nt][r * 2 + 1] * inv);
    if (p.lse && half == 0 && c == 0)
      p.lse[t * p.H + h] = l[r] > 0.0f ? m[r] * 0.6931471805599453f + logf(l[r]) : -INFINITY;
  }
}

}  // namespace

void validate(const SparseMlaCudaParams& p) {
  IS_CHECK(p.Dqk == kMlaDqk, "sparse_mla_cuda: Dqk must be ", kMlaDqk, ", got ", p.Dqk);
  IS_CHECK(p.Dv == kMlaDv, "sparse_mla_cuda: Dv must be ", kMlaDv, ", got ", p.Dv);
  IS_CHECK(p.H > 0 && p.H % 16 == 0, "sparse_mla_cuda: H must be a positive multiple of 16, got ", p.H);
  IS_CHECK(p.T >= 0 && p.T <= INT32_MAX, "sparse_mla_cuda: T must be in [0, 2^31), got ", p.T);
  IS_CHECK(p.L >= 0 && p.L <= INT32_MAX, "sparse_mla_cuda: L must be in [0, 2^31), got ", p.L);
  IS_CHECK(p.K >= 0 && p.K <= kMaxK, "sparse_mla_cuda: K must be in [0, ", kMaxK, "], got ", p.K);
  if (p.T == 0) return;
  IS_CHECK(p.q != nullptr, "sparse_mla_cuda: q is null");
  IS_CHECK(p.out != nullptr, "sparse_mla_cuda: out is null");
  IS_CHECK(p.K == 0 || p.indices != nullptr, "sparse_mla_cuda: indices is null");
  IS_CHECK(p.L == 0 || p.kv != nullptr, "sparse_mla_cuda: kv is null");
  IS_CHECK(reinterpret_cast<uintptr_t>(p.q) % 16 == 0 && reinterpret_cast<uintptr_t>(p.kv) % 16 == 0,
           "sparse_mla_cuda: q and kv must be 16-byte aligned");
  IS_CHECK(reinterpret_cast<uintptr_t>(p.out) % 8 == 0, "sparse_mla_cuda: out must be 8-byte aligned");
}

void sparse_mla_cuda(const SparseMlaCudaParams& p) {
  validate(p);
  if (p.T == 0) return;
  static const bool once = (detail::allow_smem(sparse_mla_kernel, kSmemBase + kMaxK * 4), true);
  (void)once;
  const dim3 grid(static_cast<unsigned>(p.T), static_cast<unsigned>((p.H + kHeads - 1) / kHeads));
  sparse_mla_kernel<<<grid, 256, kSmemBase + p.K * 4, as_stream(p.stream)>>>(p);
  IS_CUDA_LAUNCH_CHECK("sparse_mla_kernel");
}

}  // namespace indexshare::cuda

// Internal to src/cuda: the indexer's tensor-core main loop, shared by the score kernel
// (indexer.cu) and the fused indexer + top-k (indexer_topk.cu).
//
// Work split: the MMA's rows (M) are keys and its columns (N) are (query token, head) pairs,
// so the ReLU-weighted sum over heads is a sum over accumulator columns: in registers, then
// over the 4 lanes of a quad. A block has 8 warps = WC column groups x WK key groups; each warp
// keeps its NT*8 query columns as B fragments in registers for the whole key range and streams
// key tiles of 16*MT rows from shared memory (cp.async, kStages deep, stages of kStageKeys keys,
// i.e. whole 64-token pages).
//
// Fragment trick: the contraction index (the 128 head dims) may be permuted as long as A and B
// use the same permutation. Each lane therefore loads 16 contiguous bytes of a key row (and of
// its query row) per 64-byte chunk, which serve as its fragments for two MMA k-steps; shared
// memory rows are stored with the two 64-byte halves of each 128 bytes swapped on odd rows, so
// the 16-byte loads of a warp hit all 32 banks.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/indexer.h"

namespace indexshare::cuda::detail {

template <bool kFp8>
struct IdxCfg {
  static constexpr int kRowBytes = kFp8 ? 128 : 256;  // bytes per key row
  static constexpr int kChunks = kRowBytes / 64;      // 64-byte chunks per row (2 k-steps each)
  static constexpr int kStageKeys = kFp8 ? 256 : 128;
  static constexpr int kStagePages = kStageKeys / kIndexerPage;
  static constexpr int kStageKeyBytes = kStageKeys * kRowBytes;
  static constexpr int kStageBytes = kStageKeyBytes + (kFp8 ? kStageKeys * 4 : 0);
  static constexpr size_t kPageBytes = kFp8 ? kIndexerFp8PageBytes : kIndexerPage * 256;
};

__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <bool kFp8>
__device__ __forceinline__ void mma_idx(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                        uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (kFp8)
    mma_e4m3(d, a0, a1, a2, a3, b0, b1);
  else
    mma_bf16(d, a0, a1, a2, a3, b0, b1);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ uint4 lds128(const uint8_t* p) {
  return *reinterpret_cast<const uint4*>(p);
}

// Per-batch view of the inputs.
struct IdxBatch {
  const uint8_t* q;       // [T, H, row bytes] of this batch
  const float* w;         // [T, H]
  const float* qs;        // [T, H] or null
  const int32_t* table;   // page table row, or null
  int64_t page_base;      // first page when table is null
  int64_t seq_len;        // keys that exist
  int64_t q_start;        // position of query row 0
};

__device__ __forceinline__ IdxBatch make_batch(const IndexerCudaParams& p, int b, int row_bytes) {
  IdxBatch x;
  const int64_t th = p.T * p.H;
  x.q = static_cast<const uint8_t*>(p.q) + static_cast<int64_t>(b) * th * row_bytes;
  x.w = p.weights + static_cast<int64_t>(b) * th;
  x.qs = p.q_scale ? p.q_scale + static_cast<int64_t>(b) * th : nullptr;
  x.table = p.block_table ? p.block_table + static_cast<int64_t>(b) * p.max_pages : nullptr;
  x.page_base = static_cast<int64_t>(b) * ((p.L + kIndexerPage - 1) / kIndexerPage);
  x.seq_len = p.seq_lens ? p.seq_lens[b] : p.L;
  if (x.seq_len > p.L) x.seq_len = p.L;
  if (x.seq_len < 0) x.seq_len = 0;
  x.q_start = p.q_starts ? p.q_starts[b] : p.q_start;
  return x;
}

// Physical pages of the stage starting at key s0 (-1 past the sequence). Plain loads whose
// results are consumed one stage later, so the page-table latency stays off the critical path.
template <bool kFp8>
__device__ __forceinline__ void fetch_pages(const IdxBatch& bt, int64_t s0, int32_t (&pg)[IdxCfg<kFp8>::kStagePages]) {
#pragma unroll
  for (int pl = 0; pl < IdxCfg<kFp8>::kStagePages; ++pl) {
    const int64_t page_idx = s0 / kIndexerPage + pl;
    pg[pl] = page_idx * kIndexerPage >= bt.seq_len ? -1
             : bt.table                              ? __ldg(bt.table + page_idx)
                                                     : static_cast<int32_t>(bt.page_base + page_idx);
  }
}

// Issues the cp.async copies of one stage from its physical pages (pages < 0 are skipped;
// their rows are masked later).
template <bool kFp8>
__device__ __forceinline__ void load_stage(const uint8_t* k_cache, const int32_t (&pg)[IdxCfg<kFp8>::kStagePages],
                                           uint8_t* sbuf) {
  using C = IdxCfg<kFp8>;
  constexpr int kPieces = kIndexerPage * C::kRowBytes / 16;  // 16-byte pieces per page
#pragma unroll
  for (int pl = 0; pl < C::kStagePages; ++pl) {
    if (pg[pl] < 0) continue;
    const uint8_t* src = k_cache + static_cast<int64_t>(pg[pl]) * C::kPageBytes;
    for (int i = threadIdx.x; i < kPieces; i += blockDim.x) {
      const int rip = i / (C::kRowBytes / 16);           // row in page
      const int byte = (i % (C::kRowBytes / 16)) * 16;   // byte in row
      const int r = pl * kIndexerPage + rip;             // row in stage
      const int j = byte >> 6, piece = byte & 63;
      cp_async16(sbuf + r * C::kRowBytes + ((j ^ (r & 1)) << 6) + piece,
                 src + rip * C::kRowBytes + byte);
    }
    if constexpr (kFp8) {
      const uint8_t* ssrc = src + kIndexerPage * C::kRowBytes;
      uint8_t* sdst = sbuf + C::kStageKeyBytes + pl * kIndexerPage * 4;
      for (int i = threadIdx.x; i < kIndexerPage * 4 / 16; i += blockDim.x)
        cp_async16(sdst + i * 16, ssrc + i * 16);
    }
  }
}

// The main loop. Block columns [col0, col0 + WC*NT*8) of the T*H (token, head) pairs, keys
// [s_begin, s_end) (s_begin a multiple of kStageKeys). Calls, on every thread:
//   epi.stage_begin()                      after each stage's data is visible (block-uniform),
// on the owning lane of each (key, token) value with s < s_end:
//   epi.value(s, t, v)                     unmasked score (the epilogue applies the masks),
// and on every lane of a warp that skips a subtile no token of it can see:
//   epi.skipped(s0, s1, t0, nt)            keys [s0, s1) x tokens [t0, t0 + nt).
template <bool kFp8, int kH, int NT, int MT, int WC, int kStages, class Epi>
__device__ __forceinline__ void indexer_mainloop(const IdxBatch& bt, const uint8_t* k_cache,
                                                 int64_t T, float scale, int64_t col0,
                                                 int64_t s_begin, int64_t s_end, uint8_t* smem,
                                                 Epi& epi) {
  using C = IdxCfg<kFp8>;
  constexpr int WK = 8 / WC;
  constexpr int kSubKeys = 16 * MT;
  constexpr int kSubtiles = C::kStageKeys / kSubKeys;
  constexpr int kCols = NT * 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  const int wc = warp % WC, wk = warp / WC;
  static_assert(kCols % kH == 0, "a warp's columns must hold whole tokens");
  constexpr int tpw = kCols / kH;  // tokens per warp
  constexpr int ntt = kH / 8;      // n-tiles per token
  const int64_t TH = T * kH;
  const int64_t colw = col0 + static_cast<int64_t>(wc) * kCols;
  const int64_t tok_w = colw / kH;
  const bool warp_active = colw < TH;
  // Last key any of this warp's tokens may see.
  int64_t warp_last = bt.q_start + (tok_w + tpw < T ? tok_w + tpw : T) - 1;
  if (warp_last > bt.seq_len - 1) warp_last = bt.seq_len - 1;

  // Query fragments and folded head weights, kept in registers.
  uint4 qf[NT][C::kChunks];
  float wt[NT][2];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int64_t col = colw + nt * 8 + g;
#pragma unroll
    for (int j = 0; j < C::kChunks; ++j) {
      qf[nt][j] = col < TH ? __ldg(reinterpret_cast<const uint4*>(bt.q + col * C::kRowBytes + j * 64 + c * 16))
                           : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t cw = colw + nt * 8 + 2 * c + e;
      wt[nt][e] = cw < TH ? bt.w[cw] * scale * (bt.qs ? bt.qs[cw] : 1.0f) : 0.0f;
    }
  }

  const int64_t nstages = (s_end - s_begin + C::kStageKeys - 1) / C::kStageKeys;
  int32_t pg[C::kStagePages];
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < nstages) {
      fetch_pages<kFp8>(bt, s_begin + i * C::kStageKeys, pg);
      load_stage<kFp8>(k_cache, pg, smem + i * C::kStageBytes);
    }
    cp_async_commit();
  }
  // Page ids of the next stage to load, fetched one iteration ahead.
  if (kStages - 1 < nstages) fetch_pages<kFp8>(bt, s_begin + (kStages - 1) * C::kStageKeys, pg);
  for (int64_t it = 0; it < nstages; ++it) {
    {
      const int64_t nx = it + kStages - 1;
      if (nx < nstages) {
        load_stage<kFp8>(k_cache, pg, smem + (nx % kStages) * C::kStageBytes);
        if (nx + 1 < nstages) fetch_pages<kFp8>(bt, s_begin + (nx + 1) * C::kStageKeys, pg);
      }
      cp_async_commit();
    }
    cp_async_wait<kStages - 1>();
    __syncthreads();
    epi.stage_begin();
    const int64_t s0 = s_begin + it * C::kStageKeys;
    const uint8_t* sbuf = smem + (it % kStages) * C::kStageBytes;
    const float* sscale = reinterpret_cast<const float*>(sbuf + C::kStageKeyBytes);
    if (warp_active) {
      for (int st = wk; st < kSubtiles; st += WK) {
        const int64_t sub0 = s0 + st * kSubKeys;
        if (sub0 >= s_end) continue;
        if (sub0 > warp_last) {  // fully masked for this warp
          epi.skipped(sub0, sub0 + kSubKeys < s_end ? sub0 + kSubKeys : s_end, tok_w, tpw);
          continue;
        }
        float acc[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
#pragma unroll
        for (int j = 0; j < C::kChunks; ++j) {
          uint4 lo[MT], hi[MT];
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const int r0 = st * kSubKeys + mt * 16 + g;  // r0 and r0 + 8 share parity
            const int off = ((j ^ (r0 & 1)) << 6) + c * 16;
            lo[mt] = lds128(sbuf + r0 * C::kRowBytes + off);
            hi[mt] = lds128(sbuf + (r0 + 8) * C::kRowBytes + off);
          }
          // Step-outer order: MT*NT independent MMAs between two on the same accumulator.
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
              mma_idx<kFp8>(acc[mt][nt], lo[mt].x, hi[mt].x, lo[mt].y, hi[mt].y, qf[nt][j].x, qf[nt][j].y);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
              mma_idx<kFp8>(acc[mt][nt], lo[mt].z, hi[mt].z, lo[mt].w, hi[mt].w, qf[nt][j].z, qf[nt][j].w);
        }
        // Epilogue: ReLU, head weights, sum over the token's heads.
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int rh = 0; rh < 2; ++rh)
#pragma unroll
            for (int tk = 0; tk < tpw; ++tk) {
              float sum = 0.0f;
#pragma unroll
              for (int nn = 0; nn < ntt; ++nn) {
                const int nt = tk * ntt + nn;
                sum = fmaf(fmaxf(acc[mt][nt][rh * 2], 0.0f), wt[nt][0], sum);
                sum = fmaf(fmaxf(acc[mt][nt][rh * 2 + 1], 0.0f), wt[nt][1], sum);
              }
              sum += __shfl_xor_sync(0xffffffffu, sum, 1);
              sum += __shfl_xor_sync(0xffffffffu, sum, 2);
              const int idx = (mt * 2 + rh) * tpw + tk;
              if ((idx & 3) == c) {
                const int row = st * kSubKeys + mt * 16 + rh * 8 + g;
                float v = sum;
                if constexpr (kFp8) v *= sscale[row];
                if (s0 + row < s_end) epi.value(s0 + row, tok_w + tk, v);
              }
            }
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();
}

}  // namespace indexshare::cuda::detail

// Indexer scores, fp8 prefill, Hopper-native: warp-specialised producer / consumer pipeline with
// wgmma (sm_90a). The same contract as indexer_scores_cuda (indexer.h); selected with
// IndexerKernel::kWgmma (or by kAuto where docs/cuda.md measured it faster).
//
// Roles (384 threads, one block per SM):
//   warpgroup 0, producer: streams the block's key pages (one 64-token page = 8 KB of e4m3 rows +
//     256 B of scales per stage) from the paged cache into a ring of kStages stages with cp.async,
//     writing the rows in the 128-byte-swizzled K-major layout wgmma reads; each thread's copies
//     arrive on the stage's `full` mbarrier (cp.async.mbarrier.arrive.noinc). Page ids come 32 at
//     a time, one lane each, a group ahead.
//   warpgroups 1 and 2, consumers: take alternate pages. Per page: D[64 keys x 128 (token, head)
//     pairs] = K[64 x 128] . Q[128 x 128]^T as four wgmma m64n128k32 from shared memory (the block's
//     query tile stays resident), then release the stage and run the epilogue in registers:
//     ReLU, the folded head weights (w * scale * q_scale), the sum over a token's heads (the
//     thread's columns, then two shfl_xor in a quad), the key's scale, the causal mask; each
//     (key, token) score is stored once. While one consumer is in its epilogue the other's wgmma
//     keeps the tensor cores busy.
// Work split: grid = query tiles of 128 (token, head) pairs x key splits x batch; keys no token of
// a tile can see are written -inf without loading them.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.cuh"
#include "cuda/indexer.h"
#include "cuda/indexer_tile.cuh"
#include "cuda/launch_util.cuh"
#include "cuda/ptx.cuh"

namespace indexshare::cuda::detail {
namespace {

constexpr int kCols = 128;                  // (token, head) pairs per block: the wgmma N
constexpr int kRowBytes = kIndexerDim;      // one e4m3 key or query row
constexpr int kPageKeyBytes = kIndexerPage * kRowBytes;
constexpr int kStages = 8;
constexpr int kThreads = 384;
constexpr int kSmemBytes = 1024 /* alignment slack */ + kCols * kRowBytes + kStages * kPageKeyBytes +
                           kStages * kIndexerPage * 4 + 2 * kStages * 8;

template <int kH>
__global__ void __launch_bounds__(kThreads, 1)
    indexer_wgmma_kernel(const IndexerCudaParams p, float* out, int64_t ld, int64_t keys_per_split) {
  static_assert(kCols % kH == 0, "a block holds whole tokens");
  constexpr int kTok = kCols / kH;  // tokens per block
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint8_t* sq = smem;                                     // [kCols, 128] swizzled
  uint8_t* sk = sq + kCols * kRowBytes;                   // [kStages][64, 128] swizzled
  float* sscale = reinterpret_cast<float*>(sk + kStages * kPageKeyBytes);  // [kStages][64]
  uint64_t* full = reinterpret_cast<uint64_t*>(sscale + kStages * kIndexerPage);
  uint64_t* empty = full + kStages;

  const int b = blockIdx.z;
  const IdxBatch bt = make_batch(p, b, kRowBytes);
  const int64_t TH = p.T * kH;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kCols;
  const int64_t tok0 = col0 / kH;
  const int64_t tok1 = min(p.T, tok0 + kTok);
  const int64_t s_begin = static_cast<int64_t>(blockIdx.y) * keys_per_split;
  const int64_t s_end = min(p.L, s_begin + keys_per_split);
  if (s_begin >= s_end) return;
  // Keys [s_begin, s_comp) hold every key a token of the block can see; the rest is -inf.
  const int64_t last = min(bt.seq_len - 1, bt.q_start + tok1 - 1);
  int64_t s_comp = s_begin;
  if (last >= s_begin) s_comp = min(s_end, (last / kIndexerPage + 1) * kIndexerPage);
  float* bout = out + static_cast<int64_t>(b) * p.T * ld;
  {
    const int64_t w = s_end - s_comp;
    for (int64_t t = tok0; t < tok1; ++t)
      for (int64_t i = threadIdx.x; i < w; i += kThreads) bout[t * ld + s_comp + i] = -INFINITY;
  }
  const int64_t n_pages = (s_comp - s_begin + kIndexerPage - 1) / kIndexerPage;
  if (n_pages == 0) return;

  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) {
      ptx::mbar_init(&full[i], 128);  // every producer thread's cp.async arrival
      ptx::mbar_init(&empty[i], 4);   // the consuming warpgroup's four warps
    }
    ptx::mbar_init_fence();
  }
  // The query tile, swizzled; rows past T * H are zero.
  for (int i = threadIdx.x; i < kCols * (kRowBytes / 16); i += kThreads) {
    const int r = i / (kRowBytes / 16), c = i % (kRowBytes / 16);
    const int64_t col = col0 + r;
    const uint4 v = col < TH ? __ldg(reinterpret_cast<const uint4*>(bt.q + col * kRowBytes) + c) : make_uint4(0, 0, 0, 0);
    *reinterpret_cast<uint4*>(sq + ptx::sw128_offset(r, c)) = v;
  }
  ptx::fence_proxy_async();
  __syncthreads();

  const int wg = threadIdx.x / 128;
  const int lane = threadIdx.x & 31;
  const int64_t page0 = s_begin / kIndexerPage;
  auto page_id = [&](int64_t i) -> int32_t {  // physical page of the block's i-th page, -1 past the sequence
    if (i >= n_pages) return -1;
    const int64_t page_idx = page0 + i;
    if (page_idx * kIndexerPage >= bt.seq_len) return -1;
    return bt.table ? __ldg(bt.table + page_idx) : static_cast<int32_t>(bt.page_base + page_idx);
  };

  if (wg == 0) {
    // Producer.
    const int tid = threadIdx.x;
    const uint8_t* cache = static_cast<const uint8_t*>(p.k_cache);
    int32_t ids = page_id(lane), next_ids = page_id(32 + lane);
    for (int64_t i = 0; i < n_pages; ++i) {
      if (i % 32 == 0 && i > 0) {
        ids = next_ids;
        next_ids = page_id(i + 32 + lane);
      }
      const int32_t pg = __shfl_sync(0xffffffffu, ids, static_cast<int>(i % 32));
      const int stage = static_cast<int>(i % kStages);
      ptx::mbar_wait(&empty[stage], static_cast<uint32_t>((i / kStages) & 1) ^ 1u);
      if (pg >= 0) {
        const uint8_t* src = cache + static_cast<int64_t>(pg) * kIndexerFp8PageBytes;
        uint8_t* dst = sk + stage * kPageKeyBytes;
        constexpr int kKeyChunks = kPageKeyBytes / 16;           // 512
        constexpr int kChunks = kKeyChunks + kIndexerPage * 4 / 16;  // + 16 of scales
        for (int c = tid; c < kChunks; c += 128) {
          if (c < kKeyChunks)
            ptx::cp_async16(dst + ptx::sw128_offset(c / 8, c % 8), src + c * 16);
          else
            ptx::cp_async16(reinterpret_cast<uint8_t*>(sscale + stage * kIndexerPage) + (c - kKeyChunks) * 16,
                            src + c * 16);
        }
      }
      ptx::cp_async_arrive(&full[stage]);
    }
    return;
  }

  // Consumers.
  const int cw = wg - 1;                 // consumer index: pages cw, cw + 2, ...
  const int warp = (threadIdx.x / 32) % 4;  // warp in the warpgroup: key rows 16 warp ..
  const int g = lane >> 2, q = lane & 3;
  float wt[kCols / 8][2];  // folded head weights of this thread's columns 8 j + 2 q + e
#pragma unroll
  for (int j = 0; j < kCols / 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t col = col0 + 8 * j + 2 * q + e;
      wt[j][e] = col < TH ? bt.w[col] * p.scale * (bt.qs ? bt.qs[col] : 1.0f) : 0.0f;
    }
  const uint64_t dq = ptx::desc_k_sw128(sq);
  for (int64_t i = cw; i < n_pages; i += 2) {
    const int stage = static_cast<int>(i % kStages);
    ptx::mbar_wait(&full[stage], static_cast<uint32_t>((i / kStages) & 1));
    ptx::fence_proxy_async();
    const uint64_t dk = ptx::desc_k_sw128(sk + stage * kPageKeyBytes);
    float acc[64];
    ptx::wgmma_fence();
#pragma unroll
    for (int k = 0; k < kRowBytes / 32; ++k) ptx::wgmma_m64n128k32_e4m3(acc, dk + 2 * k, dq + 2 * k, k);
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();
    const int r0 = warp * 16 + g;
    const float ks[2] = {sscale[stage * kIndexerPage + r0], sscale[stage * kIndexerPage + r0 + 8]};
    __syncwarp();
    if (lane == 0) ptx::mbar_arrive(&empty[stage]);
    const int64_t s0 = (page0 + i) * kIndexerPage;
#pragma unroll
    for (int rh = 0; rh < 2; ++rh)
#pragma unroll
      for (int tk = 0; tk < kTok; ++tk) {
        float sum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < kH / 8; ++jj) {
          const int j = tk * (kH / 8) + jj;
          sum = fmaf(fmaxf(acc[4 * j + 2 * rh], 0.0f), wt[j][0], sum);
          sum = fmaf(fmaxf(acc[4 * j + 2 * rh + 1], 0.0f), wt[j][1], sum);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int idx = rh * kTok + tk;
        if ((idx & 3) == q) {
          const int64_t s = s0 + r0 + 8 * rh, t = tok0 + tk;
          if (t < p.T && s < s_comp) {
            const bool vis = s < bt.seq_len && s <= bt.q_start + t;
            bout[t * ld + s] = vis ? sum * ks[rh] : -INFINITY;
          }
        }
      }
  }
}

template <int kH>
void launch(const IndexerCudaParams& p, float* scores, int64_t ld) {
  auto kernel = indexer_wgmma_kernel<kH>;
  static const bool once = (allow_smem(kernel, kSmemBytes), true);
  (void)once;
  const int64_t gx = ceil_div(p.T * kH, kCols);
  // About two waves of blocks (one per SM), in whole pages.
  const int64_t target = 2LL * sm_count();
  int64_t splits = std::max<int64_t>(1, ceil_div(target, gx * p.B));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, ceil_div(p.L, kIndexerPage)));
  const int64_t kps = round_up(ceil_div(p.L, splits), kIndexerPage);
  splits = ceil_div(p.L, kps);
  IS_CHECK(gx <= INT32_MAX && splits <= 65535, "indexer_scores_cuda (wgmma): T or L too large for one call (T ", p.T,
           ", L ", p.L, ")");
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(splits), static_cast<unsigned>(p.B));
  kernel<<<grid, kThreads, kSmemBytes, static_cast<cudaStream_t>(p.stream)>>>(p, scores, ld, kps);
  IS_CUDA_LAUNCH_CHECK("indexer_wgmma_kernel");
}

}  // namespace

void indexer_scores_wgmma(const IndexerCudaParams& p, float* scores, int64_t ld) {
  IS_CHECK(p.format == IndexerFormat::kFp8, "indexer_scores_cuda: the wgmma kernel takes the fp8 format only");
  if (p.H == 32) return launch<32>(p, scores, ld);
  return launch<64>(p, scores, ld);
}

}  // namespace indexshare::cuda::detail

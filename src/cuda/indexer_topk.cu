// Fused indexer + top-k: indexer main loop + a per-row running-threshold candidate buffer.
#include "cuda/indexer_topk.h"

#include <algorithm>

#include "cuda/cuda_check.cuh"
#include "cuda/indexer_tile.cuh"
#include "cuda/launch_util.cuh"
#include "cuda/select.cuh"
#include "cuda/topk.h"

namespace indexshare::cuda {
namespace {

using detail::IdxBatch;
using detail::IdxCfg;

constexpr int kFusedStages = 2;
constexpr int kCap = 2 * kIndexerTopkMaxK;  // candidate slots per row
constexpr int kThreads = 256;
constexpr int kPerThread = kCap / kThreads;

struct ArraySrc {
  const uint64_t* a;
  __device__ uint64_t operator()(int64_t i) const { return a[i]; }
};

struct FusedSmem {
  uint64_t* buf;  // [tokens][kCap]
  uint32_t* cnt;  // [tokens]
  uint32_t* thr;  // [tokens] admission key: a candidate enters only with a larger key
  uint32_t* hist; // [256]
  uint32_t* misc; // [16]
};

// Cuts row tl's buffer back to its exact top-k (block-wide; every thread calls).
__device__ void compact(const FusedSmem& sm, int tl, int k) {
  const uint32_t n = sm.cnt[tl];
  uint64_t* b = sm.buf + static_cast<size_t>(tl) * kCap;
  __syncthreads();
  if (n <= static_cast<uint32_t>(k)) return;
  const detail::SelectCut cut =
      detail::block_radix_select(ArraySrc{b}, n, static_cast<uint32_t>(k), 64, 0ull, sm.hist, sm.misc);
  uint64_t e[kPerThread];
  int mine = 0;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const uint32_t idx = threadIdx.x * kPerThread + j;
    e[j] = idx < n ? b[idx] : 0ull;
    mine += detail::cut_selects(cut, e[j]) ? 1 : 0;
  }
  // Block exclusive scan of `mine`.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = mine;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += v;
  }
  if (lane == 31) sm.misc[8 + warp] = static_cast<uint32_t>(incl);
  if (threadIdx.x == 0) sm.misc[4] = 0xffffffffu;
  __syncthreads();  // every entry has been read; warp totals are visible
  int off = incl - mine;
  for (int w = 0; w < warp; ++w) off += static_cast<int>(sm.misc[8 + w]);
  uint32_t min_key = 0xffffffffu;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    if (detail::cut_selects(cut, e[j])) {
      b[off++] = e[j];
      min_key = min(min_key, static_cast<uint32_t>(e[j] >> 32));
    }
  }
  atomicMin(&sm.misc[4], min_key);
  __syncthreads();
  if (threadIdx.x == 0) {
    sm.cnt[tl] = static_cast<uint32_t>(k);
    sm.thr[tl] = sm.misc[4];
  }
  __syncthreads();
}

template <int kTok, int kStageKeys>
struct FusedEpi {
  FusedSmem sm;
  int64_t tok0, T, seq_len, q_start;
  int k;
  __device__ void stage_begin() {
#pragma unroll 1
    for (int tl = 0; tl < kTok; ++tl)
      if (sm.cnt[tl] > static_cast<uint32_t>(kCap - kStageKeys)) compact(sm, tl, k);
  }
  __device__ void value(int64_t s, int64_t t, float v) {
    if (t >= T || s >= seq_len || s > q_start + t) return;
    const uint32_t key = detail::ordered_key(v);
    const int tl = static_cast<int>(t - tok0);
    if (key > sm.thr[tl]) {
      const uint32_t slot = atomicAdd(&sm.cnt[tl], 1u);
      sm.buf[static_cast<size_t>(tl) * kCap + slot] = detail::make_composite(key, static_cast<uint32_t>(s));
    }
  }
  __device__ void skipped(int64_t, int64_t, int64_t, int) {}
};

template <bool kFp8, int kH, int NT, int MT, int WC>
struct FusedCfg {
  using C = IdxCfg<kFp8>;
  static constexpr int kTok = WC * NT * 8 / kH;
  static constexpr int kSmem = kFusedStages * C::kStageBytes + kTok * kCap * 8 + kTok * 8 + 256 * 4 + 16 * 4;
};

template <bool kFp8, int kH, int NT, int MT, int WC>
__global__ void __launch_bounds__(kThreads, 1)
    indexer_topk_kernel(const IndexerCudaParams p, int k, uint64_t* cand, int64_t keys_per_split, int splits) {
  using C = IdxCfg<kFp8>;
  using F = FusedCfg<kFp8, kH, NT, MT, WC>;
  constexpr int kTok = F::kTok;
  extern __shared__ __align__(128) uint8_t smem[];
  FusedSmem sm;
  uint8_t* tail = smem + kFusedStages * C::kStageBytes;
  sm.buf = reinterpret_cast<uint64_t*>(tail);
  sm.cnt = reinterpret_cast<uint32_t*>(tail + kTok * kCap * 8);
  sm.thr = sm.cnt + kTok;
  sm.hist = sm.thr + kTok;
  sm.misc = sm.hist + 256;
  if (threadIdx.x < kTok) {
    sm.cnt[threadIdx.x] = 0;
    sm.thr[threadIdx.x] = 0;
  }
  __syncthreads();

  const int b = blockIdx.z;
  const IdxBatch bt = detail::make_batch(p, b, C::kRowBytes);
  const int64_t tok0 = static_cast<int64_t>(blockIdx.x) * kTok;
  const int64_t tok1 = std::min<int64_t>(p.T, tok0 + kTok);
  const int64_t s_begin = static_cast<int64_t>(blockIdx.y) * keys_per_split;
  const int64_t s_end = std::min<int64_t>(p.L, s_begin + keys_per_split);
  const int64_t last = std::min<int64_t>(bt.seq_len - 1, bt.q_start + tok1 - 1);
  const int64_t s_comp = std::min<int64_t>(s_end, last + 1);
  FusedEpi<kTok, C::kStageKeys> epi{sm, tok0, p.T, bt.seq_len, bt.q_start, k};
  if (s_comp > s_begin)
    detail::indexer_mainloop<kFp8, kH, NT, MT, WC, kFusedStages>(
        bt, static_cast<const uint8_t*>(p.k_cache), p.T, p.scale, tok0 * kH, s_begin, s_comp, smem, epi);
  __syncthreads();
#pragma unroll 1
  for (int tl = 0; tl < kTok; ++tl) compact(sm, tl, k);
  for (int tl = 0; tl < kTok; ++tl) {
    const int64_t t = tok0 + tl;
    if (t >= p.T) break;
    const uint32_t n = sm.cnt[tl];
    uint64_t* out = cand + ((static_cast<int64_t>(b) * p.T + t) * splits + blockIdx.y) * k;
    for (int i = threadIdx.x; i < k; i += blockDim.x)
      out[i] = static_cast<uint32_t>(i) < n ? sm.buf[static_cast<size_t>(tl) * kCap + i] : 0ull;
  }
}

struct Plan {
  int64_t groups, splits, kps;
  int tok;
};

template <bool kFp8, int kH, int NT, int MT, int WC>
Plan make_plan(const IndexerCudaParams& p) {
  using C = IdxCfg<kFp8>;
  using F = FusedCfg<kFp8, kH, NT, MT, WC>;
  Plan pl{};
  pl.tok = F::kTok;
  pl.groups = detail::ceil_div(p.T, F::kTok);
  const int64_t target = 2LL * detail::sm_count();
  int64_t splits = std::max<int64_t>(1, detail::ceil_div(target, pl.groups * p.B));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, detail::ceil_div(p.L, C::kStageKeys)));
  pl.kps = detail::round_up(detail::ceil_div(std::max<int64_t>(p.L, 1), splits), C::kStageKeys);
  pl.splits = detail::ceil_div(std::max<int64_t>(p.L, 1), pl.kps);
  return pl;
}

template <bool kFp8, int kH, int NT, int MT, int WC>
void launch_fused(const IndexerCudaParams& p, int k, uint64_t* cand, const Plan& pl) {
  using F = FusedCfg<kFp8, kH, NT, MT, WC>;
  auto kernel = indexer_topk_kernel<kFp8, kH, NT, MT, WC>;
  static const bool once = (detail::allow_smem(kernel, F::kSmem), true);
  (void)once;
  IS_CHECK(pl.splits <= 65535, "indexer_topk_cuda: L too large for one call (", p.L, ")");
  const dim3 grid(static_cast<unsigned>(pl.groups), static_cast<unsigned>(pl.splits),
                  static_cast<unsigned>(p.B));
  kernel<<<grid, kThreads, F::kSmem, as_stream(p.stream)>>>(p, k, cand, pl.kps, static_cast<int>(pl.splits));
  IS_CUDA_LAUNCH_CHECK("indexer_topk_kernel");
}

// The configurations: (format, H) x (one query row per batch or more).
#define IS_FUSED_DISPATCH(p, CALL)                                   \
  do {                                                               \
    const bool fp8_ = (p).format == IndexerFormat::kFp8;             \
    const bool one_ = (p).T == 1;                                    \
    if (fp8_ && (p).H == 32) {                                       \
      if (one_) CALL(true, 32, 4, 2, 1); else CALL(true, 32, 8, 1, 2);   \
    } else if (fp8_) {                                               \
      if (one_) CALL(true, 64, 8, 1, 1); else CALL(true, 64, 8, 1, 4);   \
    } else if ((p).H == 32) {                                        \
      if (one_) CALL(false, 32, 4, 2, 1); else CALL(false, 32, 4, 2, 4); \
    } else {                                                         \
      if (one_) CALL(false, 64, 8, 1, 1); else CALL(false, 64, 8, 1, 4); \
    }                                                                \
  } while (0)

Plan plan_for(const IndexerCudaParams& p) {
  Plan pl{};
#define IS_PLAN(a, b, c, d, e) pl = make_plan<a, b, c, d, e>(p)
  IS_FUSED_DISPATCH(p, IS_PLAN);
#undef IS_PLAN
  return pl;
}

}  // namespace

size_t indexer_topk_workspace_bytes(const IndexerCudaParams& p, int k) {
  validate(p);
  if (p.T == 0) return 0;
  const Plan pl = plan_for(p);
  return static_cast<size_t>(p.B) * p.T * pl.splits * k * 8;
}

void indexer_topk_cuda(const IndexerCudaParams& p, int k, int32_t* indices, int32_t* count,
                       void* workspace, size_t workspace_bytes) {
  IS_CHECK(k >= 1 && k <= kIndexerTopkMaxK, "indexer_topk_cuda: k must be in [1, ", kIndexerTopkMaxK,
           "], got ", k);
  validate(p);
  if (p.T == 0) return;
  IS_CHECK(indices != nullptr, "indexer_topk_cuda: indices is null");
  const size_t need = indexer_topk_workspace_bytes(p, k);
  IS_CHECK(workspace != nullptr && workspace_bytes >= need, "indexer_topk_cuda: workspace of ",
           workspace_bytes, " bytes < required ", need);
  const Plan pl = plan_for(p);
  uint64_t* cand = static_cast<uint64_t*>(workspace);
  if (p.L > 0) {
#define IS_LAUNCH(a, b, c, d, e) launch_fused<a, b, c, d, e>(p, k, cand, pl)
    IS_FUSED_DISPATCH(p, IS_LAUNCH);
#undef IS_LAUNCH
  } else {
    IS_CUDA_CHECK(cudaMemsetAsync(cand, 0, need, as_stream(p.stream)));
  }
  select_composites_cuda(cand, static_cast<int64_t>(p.B) * p.T, pl.splits * k, k, indices, count, p.stream);
}

}  // namespace indexshare::cuda

// Indexer score kernel: the shared main loop (indexer_tile.cuh) with an epilogue that writes
// the [B, T, ld] fp32 score rows, -inf where masked.
#include "cuda/indexer.h"

#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.cuh"
#include "cuda/indexer_tile.cuh"
#include "cuda/launch_util.cuh"

namespace indexshare::cuda {
namespace detail {
void indexer_scores_wgmma(const IndexerCudaParams& p, float* scores, int64_t ld);  // indexer_wgmma.cu
}  // namespace detail
namespace {

using detail::IdxBatch;
using detail::IdxCfg;

// cp.async stages: 3 when the block's warps share key tiles (prefill), 4 when every warp takes
// its own (decode: more bytes in flight per SM).
template <int WC, int MB>
constexpr int score_stages() {
  return (WC == 1 && MB == 1) ? 4 : 3;
}

struct ScoresEpi {
  float* out;  // this batch's [T, ld]
  int64_t ld, T, seq_len, q_start;
  __device__ void stage_begin() {}
  __device__ void value(int64_t s, int64_t t, float v) {
    if (t >= T) return;
    const bool vis = s < seq_len && s <= q_start + t;
    out[t * ld + s] = vis ? v : -INFINITY;
  }
  __device__ void skipped(int64_t s0, int64_t s1, int64_t t0, int nt) {
    const int64_t w = s1 - s0;
    for (int64_t i = threadIdx.x & 31; i < w * nt; i += 32) {
      const int64_t t = t0 + i / w;
      if (t < T) out[t * ld + s0 + i % w] = -INFINITY;
    }
  }
};

// MB: blocks per SM the register budget is cut for (2 doubles the warps that hide latency).
template <bool kFp8, int kH, int NT, int MT, int WC, int MB>
__global__ void __launch_bounds__(256, MB)
    indexer_scores_kernel(const IndexerCudaParams p, float* out, int64_t ld, int64_t keys_per_split) {
  using C = IdxCfg<kFp8>;
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr int kBlockCols = WC * NT * 8;
  const int b = blockIdx.z;
  const IdxBatch bt = detail::make_batch(p, b, C::kRowBytes);
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kBlockCols;
  const int64_t tok0 = col0 / kH;
  const int64_t tok1 = std::min<int64_t>(p.T, tok0 + kBlockCols / kH);
  const int64_t s_begin = static_cast<int64_t>(blockIdx.y) * keys_per_split;
  const int64_t s_end = std::min<int64_t>(p.L, s_begin + keys_per_split);
  if (s_begin >= s_end) return;
  const int64_t last = std::min<int64_t>(bt.seq_len - 1, bt.q_start + tok1 - 1);
  int64_t s_comp = s_begin;
  if (last >= s_begin)
    s_comp = std::min<int64_t>(s_end, s_begin + (last - s_begin + C::kStageKeys) / C::kStageKeys * C::kStageKeys);
  float* bout = out + static_cast<int64_t>(b) * p.T * ld;
  ScoresEpi epi{bout, ld, p.T, bt.seq_len, bt.q_start};
  if (s_comp > s_begin)
    detail::indexer_mainloop<kFp8, kH, NT, MT, WC, score_stages<WC, MB>()>(
        bt, static_cast<const uint8_t*>(p.k_cache), p.T, p.scale, col0, s_begin, s_comp, smem, epi);
  // Keys no token of the block can see.
  const int64_t w = s_end - s_comp;
  for (int64_t t = tok0; t < tok1; ++t)
    for (int64_t i = threadIdx.x; i < w; i += blockDim.x) bout[t * ld + s_comp + i] = -INFINITY;
}

template <bool kFp8, int kH, int NT, int MT, int WC, int MB = 1>
void launch_scores(const IndexerCudaParams& p, float* scores, int64_t ld) {
  using C = IdxCfg<kFp8>;
  constexpr int kBlockCols = WC * NT * 8;
  auto kernel = indexer_scores_kernel<kFp8, kH, NT, MT, WC, MB>;
  const int smem = score_stages<WC, MB>() * C::kStageBytes;
  static const bool once = (detail::allow_smem(kernel, smem), true);
  (void)once;
  const int64_t gx = detail::ceil_div(p.T * kH, kBlockCols);
  const int64_t target = 4LL * MB * detail::sm_count();
  int64_t splits = std::max<int64_t>(1, detail::ceil_div(target, gx * p.B));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, detail::ceil_div(p.L, C::kStageKeys)));
  const int64_t kps = detail::round_up(detail::ceil_div(p.L, splits), C::kStageKeys);
  splits = detail::ceil_div(p.L, kps);
  IS_CHECK(splits <= 65535, "indexer_scores_cuda: L too large for one call (", p.L, ")");
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(splits), static_cast<unsigned>(p.B));
  kernel<<<grid, 256, smem, as_stream(p.stream)>>>(p, scores, ld, kps);
  IS_CUDA_LAUNCH_CHECK("indexer_scores_kernel");
}

}  // namespace

void validate(const IndexerCudaParams& p) {
  IS_CHECK(p.format == IndexerFormat::kFp8 || p.format == IndexerFormat::kBf16,
           "indexer_cuda: unknown format ", static_cast<int>(p.format));
  IS_CHECK(p.D == kIndexerDim, "indexer_cuda: D must be ", kIndexerDim, ", got ", p.D);
  IS_CHECK(p.H == 32 || p.H == 64, "indexer_cuda: H must be 32 or 64, got ", p.H);
  IS_CHECK(p.B >= 1 && p.B <= 65535, "indexer_cuda: B must be in [1, 65535], got ", p.B);
  IS_CHECK(p.T >= 0, "indexer_cuda: T must be >= 0, got ", p.T);
  IS_CHECK(p.L >= 0 && p.L <= INT32_MAX, "indexer_cuda: L must be in [0, 2^31), got ", p.L);
  IS_CHECK(p.q_start >= 0, "indexer_cuda: q_start must be >= 0, got ", p.q_start);
  IS_CHECK(p.kernel == IndexerKernel::kAuto || p.kernel == IndexerKernel::kMmaSync || p.kernel == IndexerKernel::kWgmma,
           "indexer_cuda: unknown kernel ", static_cast<int>(p.kernel));
  IS_CHECK(p.kernel != IndexerKernel::kWgmma || p.format == IndexerFormat::kFp8,
           "indexer_cuda: the wgmma kernel takes the fp8 format only");
  if (p.T == 0 || p.L == 0) return;
  IS_CHECK(p.q != nullptr, "indexer_cuda: q is null");
  IS_CHECK(p.weights != nullptr, "indexer_cuda: weights is null");
  IS_CHECK(p.k_cache != nullptr, "indexer_cuda: k_cache is null");
  IS_CHECK(reinterpret_cast<uintptr_t>(p.q) % 16 == 0, "indexer_cuda: q must be 16-byte aligned");
  IS_CHECK(reinterpret_cast<uintptr_t>(p.k_cache) % 16 == 0,
           "indexer_cuda: k_cache must be 16-byte aligned");
  if (p.block_table)
    IS_CHECK(static_cast<int64_t>(p.max_pages) * kIndexerPage >= p.L,
             "indexer_cuda: max_pages (", p.max_pages, ") pages of ", kIndexerPage,
             " tokens do not cover L = ", p.L);
}

void indexer_scores_cuda(const IndexerCudaParams& p, float* scores, int64_t ld) {
  validate(p);
  IS_CHECK(ld >= p.L, "indexer_scores_cuda: ld (", ld, ") must be >= L (", p.L, ")");
  if (p.T == 0 || p.L == 0) return;
  IS_CHECK(scores != nullptr, "indexer_scores_cuda: scores is null");
  const int64_t th = p.T * p.H;
  const bool fp8 = p.format == IndexerFormat::kFp8;
  if (p.kernel == IndexerKernel::kWgmma) return detail::indexer_scores_wgmma(p, scores, ld);
  // Measured on the H200 (docs/cuda.md): one block of 8 warps per SM left the kernel latency
  // bound (ncu: 2 warps per scheduler); the MB = 2 configurations keep 16 warps per SM.
  if (fp8 && p.H == 32) {
    if (th <= 32) return launch_scores<true, 32, 4, 2, 1, 2>(p, scores, ld);
    if (th <= 128) return launch_scores<true, 32, 4, 1, 2, 2>(p, scores, ld);
    return launch_scores<true, 32, 4, 1, 8, 2>(p, scores, ld);
  }
  if (fp8) {
    if (th <= 64) return launch_scores<true, 64, 8, 1, 1>(p, scores, ld);
    if (th <= 128) return launch_scores<true, 64, 8, 1, 2>(p, scores, ld);
    return launch_scores<true, 64, 8, 1, 8>(p, scores, ld);
  }
  if (p.H == 32) {
    if (th <= 32) return launch_scores<false, 32, 4, 2, 1, 2>(p, scores, ld);
    return launch_scores<false, 32, 4, 1, 8, 2>(p, scores, ld);
  }
  if (th <= 64) return launch_scores<false, 64, 8, 1, 1>(p, scores, ld);
  return launch_scores<false, 64, 8, 1, 8>(p, scores, ld);
}

}  // namespace indexshare::cuda

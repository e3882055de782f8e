// Exact radix top-k (see topk.h for the method and conventions).
#include "cuda/topk.h"

#include <algorithm>

#include "cuda/cuda_check.cuh"
#include "cuda/launch_util.cuh"
#include "cuda/select.cuh"

namespace indexshare::cuda {
namespace {

using detail::block_radix_select;
using detail::block_sort_desc;
using detail::composite_pos;
using detail::cut_selects;
using detail::make_composite;
using detail::ordered_key;
using detail::SelectCut;

constexpr int kBins = 4096;        // top 12 bits of the key
constexpr int kBinShift = 20;      // key >> 20 = bin
constexpr int kCandCap = 8192;     // per-row buffer for the threshold bin
constexpr int kChunkAlign = 2048;  // elements; keeps float4 alignment

struct RowInfo {
  int32_t thr_bin;     // -1: every valid candidate is selected
  uint32_t n_greater;  // candidates in bins above thr_bin (all valid ones when thr_bin = -1)
  uint32_t n_eq;       // candidates in thr_bin
  uint32_t total;      // valid candidates
  uint32_t gcount;     // filled by the filter pass
  uint32_t ccount;
  uint32_t pad[2];
};

struct Workspace {
  uint32_t* hist;
  RowInfo* info;
  uint32_t* redo;  // [T] sampled method: 1 = the row needs the two-pass path
  uint64_t* greater;
  uint64_t* cand;
};

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

Workspace carve(void* base, int64_t T, int k) {
  char* p = static_cast<char*>(base);
  Workspace w{};
  w.hist = reinterpret_cast<uint32_t*>(p);
  p += align_up(static_cast<size_t>(T) * kBins * 4, 256);
  w.info = reinterpret_cast<RowInfo*>(p);
  p += align_up(static_cast<size_t>(T) * sizeof(RowInfo), 256);
  w.redo = reinterpret_cast<uint32_t*>(p);
  p += align_up(static_cast<size_t>(T) * 4, 256);
  w.greater = reinterpret_cast<uint64_t*>(p);
  p += align_up(static_cast<size_t>(T) * k * 8, 256);
  w.cand = reinterpret_cast<uint64_t*>(p);
  return w;
}

__device__ __forceinline__ int64_t row_length(const int32_t* row_len, int64_t row, int64_t L) {
  if (!row_len) return L;
  const int64_t r = row_len[row];
  return r < 0 ? 0 : (r < L ? r : L);
}

// Calls f(pos, value) for every element of [begin, end) of row r; float4 loads when kVec.
template <bool kVec, class F>
__device__ __forceinline__ void for_each_in_chunk(const float* r, int64_t begin, int64_t end, F&& f) {
  if constexpr (kVec) {
    for (int64_t i = begin + 4 * static_cast<int64_t>(threadIdx.x); i < end;
         i += 4 * static_cast<int64_t>(blockDim.x)) {
      if (i + 3 < end) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(r + i));
        f(i, v.x);
        f(i + 1, v.y);
        f(i + 2, v.z);
        f(i + 3, v.w);
      } else {
        for (int64_t j = i; j < end; ++j) f(j, r[j]);
      }
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) f(i, r[i]);
  }
}

template <bool kVec>
__global__ void __launch_bounds__(512) topk_hist_kernel(const float* scores, int64_t ld, int64_t L,
                                                        const int32_t* row_len, int64_t chunk,
                                                        uint32_t* ghist, const uint32_t* only) {
  __shared__ uint32_t sh[kBins];
  const int64_t row = blockIdx.y;
  if (only && !only[row]) return;
  const int64_t len = row_length(row_len, row, L);
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < len ? begin + chunk : len;
  if (begin >= end) return;
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) sh[i] = 0;
  __syncthreads();
  for_each_in_chunk<kVec>(scores + row * ld, begin, end, [&](int64_t, float x) {
    const uint32_t key = ordered_key(x);
    if (key) atomicAdd(&sh[key >> kBinShift], 1u);
  });
  __syncthreads();
  uint32_t* g = ghist + row * kBins;
  for (int i = threadIdx.x; i < kBins; i += blockDim.x)
    if (sh[i]) atomicAdd(&g[i], sh[i]);
}

// One block of 256 threads per row: finds the bin holding the k-th largest candidate.
__global__ void __launch_bounds__(256) topk_threshold_kernel(const uint32_t* ghist, int k,
                                                             RowInfo* info, const uint32_t* only) {
  __shared__ uint32_t s_warp[8];
  const int64_t row = blockIdx.x;
  if (only && !only[row]) return;
  const uint32_t* h = ghist + row * kBins;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  uint32_t local[16];
  uint32_t sum = 0;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    local[j] = h[t * 16 + j];
    sum += local[j];
  }
  // Inclusive suffix sum over threads (thread t: bins of threads >= t).
  uint32_t incl = sum;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const uint32_t v = __shfl_down_sync(0xffffffffu, incl, off);
    if (lane + off < 32) incl += v;
  }
  if (lane == 0) s_warp[warp] = incl;  // warp total
  __syncthreads();
  uint32_t later = 0, total = 0;
  for (int w = 0; w < 8; ++w) {
    total += s_warp[w];
    if (w > warp) later += s_warp[w];
  }
  incl += later;
  const uint32_t excl = incl - sum;
  RowInfo* out = info + row;
  const uint32_t uk = static_cast<uint32_t>(k);
  if (total <= uk) {
    if (t == 0) *out = RowInfo{-1, total, 0, total, 0, 0, {0, 0}};
    return;
  }
  if (excl < uk && incl >= uk) {
    uint32_t above = excl;
    for (int j = 15; j >= 0; --j) {
      if (above + local[j] >= uk) {
        *out = RowInfo{t * 16 + j, above, local[j], total, 0, 0, {0, 0}};
        break;
      }
      above += local[j];
    }
  }
}

template <bool kVec>
__global__ void __launch_bounds__(512) topk_filter_kernel(const float* scores, int64_t ld, int64_t L,
                                                          const int32_t* row_len, int64_t chunk,
                                                          RowInfo* info, uint64_t* greater, int k,
                                                          uint64_t* cand, const uint32_t* only) {
  const int64_t row = blockIdx.y;
  if (only && !only[row]) return;
  const int64_t len = row_length(row_len, row, L);
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < len ? begin + chunk : len;
  if (begin >= end) return;
  RowInfo* ri = info + row;
  const int32_t thr = ri->thr_bin;
  if (ri->total == 0) return;
  const bool keep_eq = ri->n_eq <= static_cast<uint32_t>(kCandCap);
  uint64_t* gout = greater + row * k;
  uint64_t* cout = cand + row * kCandCap;
  for_each_in_chunk<kVec>(scores + row * ld, begin, end, [&](int64_t i, float x) {
    const uint32_t key = ordered_key(x);
    if (!key) return;
    const int32_t bin = static_cast<int32_t>(key >> kBinShift);
    if (bin > thr) {
      const uint32_t slot = atomicAdd(&ri->gcount, 1u);
      gout[slot] = make_composite(key, static_cast<uint32_t>(i));
    } else if (bin == thr && keep_eq) {
      const uint32_t slot = atomicAdd(&ri->ccount, 1u);
      cout[slot] = make_composite(key, static_cast<uint32_t>(i));
    }
  });
}

// Sorts s_list[0, n) (descending) and writes one output row.
__device__ void sort_and_write(uint64_t* s_list, int n, int k, int32_t* idx_row, int32_t* count_out) {
  const int n2 = detail::next_pow2(k);
  for (int i = n + threadIdx.x; i < n2; i += blockDim.x) s_list[i] = 0;
  __syncthreads();
  block_sort_desc(s_list, n2);
  for (int i = threadIdx.x; i < k; i += blockDim.x) idx_row[i] = composite_pos(s_list[i]);
  if (count_out && threadIdx.x == 0) *count_out = n < k ? n : k;
}

struct ArraySrc {
  const uint64_t* a;
  __device__ uint64_t operator()(int64_t i) const { return a[i]; }
};

struct RowBinSrc {  // a score row, restricted to one bin
  const float* r;
  int32_t bin;
  __device__ uint64_t operator()(int64_t i) const {
    const uint32_t key = ordered_key(r[i]);
    return (key && static_cast<int32_t>(key >> kBinShift) == bin)
               ? make_composite(key, static_cast<uint32_t>(i))
               : 0ull;
  }
};

template <class Src>
__device__ void collect(const Src& src, int64_t n, const SelectCut& cut, uint64_t* s_list,
                        uint32_t* s_n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const uint64_t c = src(i);
    if (cut_selects(cut, c)) s_list[atomicAdd(s_n, 1u)] = c;
  }
}

__global__ void __launch_bounds__(512) topk_finalize_kernel(const float* scores, int64_t ld, int64_t L,
                                                            const int32_t* row_len, const RowInfo* info,
                                                            const uint64_t* greater, const uint64_t* cand,
                                                            int k, int32_t* indices, int32_t* count,
                                                            const uint32_t* only) {
  extern __shared__ uint64_t s_list[];
  __shared__ uint32_t s_hist[256];
  __shared__ uint32_t s_misc[4];
  __shared__ uint32_t s_n;
  const int64_t row = blockIdx.x;
  if (only && !only[row]) return;
  const RowInfo ri = info[row];
  const uint32_t ng = ri.n_greater;
  for (uint32_t i = threadIdx.x; i < ng; i += blockDim.x) s_list[i] = greater[row * k + i];
  if (threadIdx.x == 0) s_n = ng;
  __syncthreads();
  if (ri.thr_bin >= 0) {
    const uint32_t rem = static_cast<uint32_t>(k) - ng;
    if (ri.n_eq <= static_cast<uint32_t>(kCandCap)) {
      const ArraySrc src{cand + row * kCandCap};
      const SelectCut cut = block_radix_select(src, ri.n_eq, rem, 64 - 12, ri.thr_bin, s_hist, s_misc);
      collect(src, ri.n_eq, cut, s_list, &s_n);
    } else {
      const RowBinSrc src{scores + row * ld, ri.thr_bin};
      const int64_t len = row_length(row_len, row, L);
      const SelectCut cut = block_radix_select(src, len, rem, 64 - 12, ri.thr_bin, s_hist, s_misc);
      collect(src, len, cut, s_list, &s_n);
    }
  }
  __syncthreads();
  sort_and_write(s_list, static_cast<int>(s_n), k, indices + row * k, count ? count + row : nullptr);
}

// ---- sampled method ---------------------------------------------------------------------
constexpr int kSampleChunk = 1024;  // elements per sampled piece
constexpr int kSampleStride = 8;    // every 8th piece is sampled
constexpr int kSamplePerBlock = 16; // sampled pieces per block

// Histogram of the sampled pieces of each row (pieces 0, 8, 16, ... of [0, len)).
__global__ void __launch_bounds__(256) topk_sample_hist_kernel(const float* scores, int64_t ld, int64_t L,
                                                               const int32_t* row_len, uint32_t* ghist) {
  __shared__ uint32_t sh[kBins];
  const int64_t row = blockIdx.y;
  const int64_t len = row_length(row_len, row, L);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kSamplePerBlock;  // in sampled pieces
  if (first * kSampleStride * kSampleChunk >= len) return;
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) sh[i] = 0;
  __syncthreads();
  const float* r = scores + row * ld;
  for (int j = 0; j < kSamplePerBlock; ++j) {
    const int64_t begin = (first + j) * kSampleStride * kSampleChunk;
    if (begin >= len) break;
    const int64_t end = begin + kSampleChunk < len ? begin + kSampleChunk : len;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const uint32_t key = ordered_key(r[i]);
      if (key) atomicAdd(&sh[key >> kBinShift], 1u);
    }
  }
  __syncthreads();
  uint32_t* g = ghist + row * kBins;
  for (int i = threadIdx.x; i < kBins; i += blockDim.x)
    if (sh[i]) atomicAdd(&g[i], sh[i]);
}

// Picks the cut bin from the sample: the highest bin whose sampled suffix count reaches twice
// the expected sampled count of the top k (+16). Bin 0 = keep every valid candidate.
__global__ void __launch_bounds__(256) topk_sample_cut_kernel(const uint32_t* ghist, int64_t L,
                                                              const int32_t* row_len, int k, RowInfo* info) {
  __shared__ uint32_t s_warp[8];
  const int64_t row = blockIdx.x;
  const uint32_t* h = ghist + row * kBins;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const int64_t len = row_length(row_len, row, L);
  const int64_t pieces = (len + kSampleChunk - 1) / kSampleChunk;
  int64_t sampled = 0;  // sampled positions
  for (int64_t pc = 0; pc < pieces; pc += kSampleStride)
    sampled += (pc + 1) * kSampleChunk < len ? kSampleChunk : len - pc * kSampleChunk;
  const double frac = len > 0 ? static_cast<double>(sampled) / len : 1.0;
  const uint32_t want = static_cast<uint32_t>(2.0 * k * frac) + 16;
  uint32_t local[16];
  uint32_t sum = 0;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    local[j] = h[t * 16 + j];
    sum += local[j];
  }
  uint32_t incl = sum;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const uint32_t v = __shfl_down_sync(0xffffffffu, incl, off);
    if (lane + off < 32) incl += v;
  }
  if (lane == 0) s_warp[warp] = incl;
  __syncthreads();
  uint32_t later = 0, total = 0;
  for (int w = 0; w < 8; ++w) {
    total += s_warp[w];
    if (w > warp) later += s_warp[w];
  }
  incl += later;
  const uint32_t excl = incl - sum;
  if (total < want) {
    if (t == 0) info[row] = RowInfo{0, 0, 0, 0, 0, 0, {0, 0}};
    return;
  }
  if (excl < want && incl >= want) {
    uint32_t above = excl;
    for (int j = 15; j >= 0; --j) {
      if (above + local[j] >= want) {
        info[row] = RowInfo{t * 16 + j, 0, 0, 0, 0, 0, {0, 0}};
        break;
      }
      above += local[j];
    }
  }
}

// One read of every row: candidates in bins >= the cut go to the row's buffer (counted even
// when the buffer is full, so that an overflow is detected).
template <bool kVec>
__global__ void __launch_bounds__(512) topk_sample_collect_kernel(const float* scores, int64_t ld, int64_t L,
                                                                  const int32_t* row_len, int64_t chunk,
                                                                  RowInfo* info, uint64_t* cand) {
  const int64_t row = blockIdx.y;
  const int64_t len = row_length(row_len, row, L);
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < len ? begin + chunk : len;
  if (begin >= end) return;
  RowInfo* ri = info + row;
  const int32_t cut = ri->thr_bin;
  uint64_t* out = cand + row * kCandCap;
  for_each_in_chunk<kVec>(scores + row * ld, begin, end, [&](int64_t i, float x) {
    const uint32_t key = ordered_key(x);
    if (!key || static_cast<int32_t>(key >> kBinShift) < cut) return;
    const uint32_t slot = atomicAdd(&ri->ccount, 1u);
    if (slot < static_cast<uint32_t>(kCandCap)) out[slot] = make_composite(key, static_cast<uint32_t>(i));
  });
}

// Exact top-k of the buffer when it holds every candidate above the cut and either at least k
// of them or every valid candidate of the row (cut 0); otherwise flags the row for two-pass.
__global__ void __launch_bounds__(512) topk_sample_final_kernel(const RowInfo* info, const uint64_t* cand, int k,
                                                                int32_t* indices, int32_t* count, uint32_t* redo) {
  extern __shared__ uint64_t s_list[];
  __shared__ uint32_t s_hist[256];
  __shared__ uint32_t s_misc[4];
  __shared__ uint32_t s_n;
  const int64_t row = blockIdx.x;
  const RowInfo ri = info[row];
  const uint32_t n = ri.ccount, uk = static_cast<uint32_t>(k);
  const bool exact = n <= static_cast<uint32_t>(kCandCap) && (n >= uk || ri.thr_bin == 0);
  if (threadIdx.x == 0) {
    redo[row] = exact ? 0u : 1u;
    s_n = 0;
  }
  if (!exact) return;
  __syncthreads();
  const ArraySrc src{cand + row * kCandCap};
  const SelectCut cut = n <= uk ? SelectCut{1ull, 0} : block_radix_select(src, n, uk, 64, 0ull, s_hist, s_misc);
  collect(src, n, cut, s_list, &s_n);
  __syncthreads();
  sort_and_write(s_list, static_cast<int>(s_n), k, indices + row * k, count ? count + row : nullptr);
}

__global__ void __launch_bounds__(512) select_composites_kernel(const uint64_t* src, int64_t n, int k,
                                                                int32_t* indices, int32_t* count) {
  extern __shared__ uint64_t s_list[];
  __shared__ uint32_t s_hist[256];
  __shared__ uint32_t s_misc[4];
  __shared__ uint32_t s_n;
  __shared__ uint32_t s_total;
  const int64_t row = blockIdx.x;
  const ArraySrc a{src + row * n};
  if (threadIdx.x == 0) {
    s_n = 0;
    s_total = 0;
  }
  __syncthreads();
  uint32_t mine = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mine += a(i) != 0;
  atomicAdd(&s_total, mine);
  __syncthreads();
  const uint32_t total = s_total;
  if (total <= static_cast<uint32_t>(k)) {
    collect(a, n, SelectCut{1ull, 0}, s_list, &s_n);  // every nonzero entry
  } else {
    const SelectCut cut = block_radix_select(a, n, static_cast<uint32_t>(k), 64, 0ull, s_hist, s_misc);
    collect(a, n, cut, s_list, &s_n);
  }
  __syncthreads();
  sort_and_write(s_list, static_cast<int>(s_n), k, indices + row * k, count ? count + row : nullptr);
}

size_t sort_smem(int k) { return static_cast<size_t>(detail::next_pow2(k)) * 8; }

void set_smem_limits() {
  static bool done = [] {
    const int bytes = static_cast<int>(sort_smem(kTopkMaxK));
    IS_CUDA_CHECK(cudaFuncSetAttribute(topk_finalize_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    IS_CUDA_CHECK(cudaFuncSetAttribute(select_composites_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    IS_CUDA_CHECK(cudaFuncSetAttribute(topk_sample_final_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return true;
  }();
  (void)done;
}

}  // namespace

size_t topk_workspace_bytes(int64_t T, int k) {
  return align_up(static_cast<size_t>(T) * kBins * 4, 256) +
         align_up(static_cast<size_t>(T) * sizeof(RowInfo), 256) + align_up(static_cast<size_t>(T) * 4, 256) +
         align_up(static_cast<size_t>(T) * k * 8, 256) + static_cast<size_t>(T) * kCandCap * 8;
}

void validate(const TopkCudaParams& p) {
  IS_CHECK(p.T >= 0, "topk_cuda: T must be >= 0, got ", p.T);
  IS_CHECK(p.L >= 0 && p.L <= INT32_MAX, "topk_cuda: L must be in [0, 2^31), got ", p.L);
  IS_CHECK(p.k >= 0 && p.k <= kTopkMaxK, "topk_cuda: k must be in [0, ", kTopkMaxK, "], got ", p.k);
  const int64_t ld = p.ld ? p.ld : p.L;
  IS_CHECK(ld >= p.L, "topk_cuda: ld (", ld, ") must be >= L (", p.L, ")");
  if (p.T == 0 || p.k == 0) return;
  IS_CHECK(p.scores != nullptr || p.L == 0, "topk_cuda: scores is null");
  IS_CHECK(p.indices != nullptr, "topk_cuda: indices is null");
  IS_CHECK(p.workspace != nullptr, "topk_cuda: workspace is null");
  IS_CHECK(p.workspace_bytes >= topk_workspace_bytes(p.T, p.k), "topk_cuda: workspace_bytes ",
           p.workspace_bytes, " < required ", topk_workspace_bytes(p.T, p.k));
}

void topk_cuda(const TopkCudaParams& p) {
  validate(p);
  if (p.T == 0 || p.k == 0) return;
  set_smem_limits();
  cudaStream_t st = as_stream(p.stream);
  const int64_t ld = p.ld ? p.ld : p.L;
  const Workspace w = carve(p.workspace, p.T, p.k);
  // Auto: sampled for many medium rows. On rows of 512K and more the 12-bit bins near the k-th
  // score hold too many candidates for the buffer (measured on the H200: 256 x 1M rows took
  // 1.09 ms sampled vs 0.77 ms two-pass), so those stay two-pass.
  const bool sampled = p.method == TopkMethod::kSampled ||
                       (p.method == TopkMethod::kAuto && p.T * p.L >= (int64_t{1} << 25) && p.L >= 32768 &&
                        p.L < 524288);

  // Chunking: about 4 blocks per SM over all rows, chunks of at least 4K elements.
  const int64_t target = 4LL * detail::sm_count();
  int64_t per_row = std::max<int64_t>(1, (target + p.T - 1) / p.T);
  per_row = std::min<int64_t>(per_row, std::max<int64_t>(1, (p.L + 4095) / 4096));
  int64_t chunk = (p.L + per_row - 1) / per_row;
  chunk = std::max<int64_t>(kChunkAlign, (chunk + kChunkAlign - 1) / kChunkAlign * kChunkAlign);
  const int64_t nchunks = std::max<int64_t>(1, (p.L + chunk - 1) / chunk);
  const bool vec = (reinterpret_cast<uintptr_t>(p.scores) % 16 == 0) && (ld % 4 == 0);
  // grid.y is limited to 65535: rows go in batches.
  for (int64_t r0 = 0; r0 < p.T; r0 += 65535) {
    const int64_t nr = std::min<int64_t>(65535, p.T - r0);
    const float* sc = p.scores ? p.scores + r0 * ld : nullptr;
    const int32_t* rl = p.row_len ? p.row_len + r0 : nullptr;
    uint32_t* hist = w.hist + r0 * kBins;
    RowInfo* info = w.info + r0;
    uint32_t* redo = w.redo + r0;
    uint64_t* greater = w.greater + r0 * p.k;
    uint64_t* cand = w.cand + r0 * kCandCap;
    int32_t* idx = p.indices + r0 * p.k;
    int32_t* cnt = p.count ? p.count + r0 : nullptr;
    const dim3 grid(static_cast<unsigned>(nchunks), static_cast<unsigned>(nr));
    const uint32_t* only = nullptr;
    if (sampled && p.L > 0) {
      IS_CUDA_CHECK(cudaMemsetAsync(hist, 0, static_cast<size_t>(nr) * kBins * 4, st));
      const int64_t pieces = (p.L + kSampleChunk - 1) / kSampleChunk;
      const int64_t spieces = (pieces + kSampleStride - 1) / kSampleStride;
      const dim3 sgrid(static_cast<unsigned>((spieces + kSamplePerBlock - 1) / kSamplePerBlock),
                       static_cast<unsigned>(nr));
      topk_sample_hist_kernel<<<sgrid, 256, 0, st>>>(sc, ld, p.L, rl, hist);
      IS_CUDA_LAUNCH_CHECK("topk_sample_hist_kernel");
      topk_sample_cut_kernel<<<static_cast<unsigned>(nr), 256, 0, st>>>(hist, p.L, rl, p.k, info);
      IS_CUDA_LAUNCH_CHECK("topk_sample_cut_kernel");
      if (vec)
        topk_sample_collect_kernel<true><<<grid, 512, 0, st>>>(sc, ld, p.L, rl, chunk, info, cand);
      else
        topk_sample_collect_kernel<false><<<grid, 512, 0, st>>>(sc, ld, p.L, rl, chunk, info, cand);
      IS_CUDA_LAUNCH_CHECK("topk_sample_collect_kernel");
      topk_sample_final_kernel<<<static_cast<unsigned>(nr), 512, sort_smem(p.k), st>>>(info, cand, p.k, idx, cnt, redo);
      IS_CUDA_LAUNCH_CHECK("topk_sample_final_kernel");
      only = redo;  // the two-pass kernels below touch only the flagged rows
    }
    IS_CUDA_CHECK(cudaMemsetAsync(hist, 0, static_cast<size_t>(nr) * kBins * 4, st));
    if (p.L > 0) {
      if (vec)
        topk_hist_kernel<true><<<grid, 512, 0, st>>>(sc, ld, p.L, rl, chunk, hist, only);
      else
        topk_hist_kernel<false><<<grid, 512, 0, st>>>(sc, ld, p.L, rl, chunk, hist, only);
      IS_CUDA_LAUNCH_CHECK("topk_hist_kernel");
    }
    topk_threshold_kernel<<<static_cast<unsigned>(nr), 256, 0, st>>>(hist, p.k, info, only);
    IS_CUDA_LAUNCH_CHECK("topk_threshold_kernel");
    if (p.L > 0) {
      if (vec)
        topk_filter_kernel<true><<<grid, 512, 0, st>>>(sc, ld, p.L, rl, chunk, info, greater, p.k, cand, only);
      else
        topk_filter_kernel<false><<<grid, 512, 0, st>>>(sc, ld, p.L, rl, chunk, info, greater, p.k, cand, only);
      IS_CUDA_LAUNCH_CHECK("topk_filter_kernel");
    }
    topk_finalize_kernel<<<static_cast<unsigned>(nr), 512, sort_smem(p.k), st>>>(sc, ld, p.L, rl, info, greater,
                                                                                  cand, p.k, idx, cnt, only);
    IS_CUDA_LAUNCH_CHECK("topk_finalize_kernel");
  }
}

void select_composites_cuda(const uint64_t* src, int64_t rows, int64_t n, int k, int32_t* indices,
                            int32_t* count, void* stream) {
  IS_CHECK(k >= 1 && k <= kTopkMaxK, "select_composites_cuda: k must be in [1, ", kTopkMaxK,
           "], got ", k);
  IS_CHECK(rows >= 0 && rows <= INT32_MAX, "select_composites_cuda: bad rows ", rows);
  if (rows == 0) return;
  set_smem_limits();
  select_composites_kernel<<<static_cast<unsigned>(rows), 512, sort_smem(k), as_stream(stream)>>>(
      src, n, k, indices, count);
  IS_CUDA_LAUNCH_CHECK("select_composites_kernel");
}

}  // namespace indexshare::cuda

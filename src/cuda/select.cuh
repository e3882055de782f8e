// Internal to src/cuda: exact top-k building blocks shared by the top-k kernels and the fused
// indexer + top-k.
//
// A candidate is a 64-bit "composite": the high word is the score's order-preserving key
// (larger score -> larger key; -0 and +0 share one key; -inf and NaN map to 0 = masked) and
// the low word is ~position, so that on equal scores the lower position compares larger.
// Composites are unique per row, which makes selection exact and deterministic: the top-k of a
// row is the k largest composites, whatever order they were produced in. 0 = empty.
#pragma once

#include <cstdint>

namespace indexshare::cuda::detail {

__device__ __forceinline__ uint32_t ordered_key(float f) {
  uint32_t u = __float_as_uint(f);
  if (f != f || u == 0xff800000u) return 0u;  // NaN, -inf: masked
  if ((u & 0x7fffffffu) == 0u) u = 0u;        // -0 == +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint64_t make_composite(uint32_t key, uint32_t pos) {
  return key ? ((static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(~pos)) : 0ull;
}

__device__ __forceinline__ int32_t composite_pos(uint64_t c) {
  return c ? static_cast<int32_t>(~static_cast<uint32_t>(c)) : -1;
}

// Result of a radix select: the selected entries are exactly those with (c >> shift) >= prefix
// (and c != 0).
struct SelectCut {
  uint64_t prefix;
  int shift;
};

// Block-wide radix select over a source of composites.
//
//   src(i) for i in [0, n) gives a composite (0 = not a candidate);
//   every candidate satisfies (c >> start_shift) == start_prefix (start_shift = 64: no
//   constraint), and there are at least `rem` > 0 candidates.
// Returns the cut such that exactly `rem` candidates are selected. s_hist needs 256 words and
// s_misc 4 words of shared memory. Every thread of the block must call it.
template <class Src>
__device__ SelectCut block_radix_select(const Src& src, int64_t n, uint32_t rem, int start_shift,
                                        uint64_t start_prefix, uint32_t* s_hist,
                                        uint32_t* s_misc) {
  uint64_t prefix = start_prefix;
  int shift = start_shift;
  const int lane = threadIdx.x & 31;
  while (true) {
    const int d = shift >= 8 ? 8 : shift;
    const int upper = shift;  // bits above the digit are [upper, 64)
    shift -= d;
    const uint32_t mask = (1u << d) - 1u;
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s_hist[i] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const uint64_t c = src(i);
      if (c == 0) continue;
      if (upper < 64 && (c >> upper) != prefix) continue;
      atomicAdd(&s_hist[static_cast<uint32_t>(c >> shift) & mask], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // lane l owns bins [8l, 8l + 8); suffix sums from the top.
      uint32_t local[8];
      uint32_t sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        local[j] = s_hist[lane * 8 + j];
        sum += local[j];
      }
      uint32_t incl = sum;  // sum over lanes >= lane
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const uint32_t v = __shfl_down_sync(0xffffffffu, incl, off);
        if (lane + off < 32) incl += v;
      }
      const uint32_t excl = incl - sum;  // sum over lanes > lane
      if (excl < rem && incl >= rem) {
        uint32_t above = excl;
        for (int j = 7; j >= 0; --j) {
          if (above + local[j] >= rem) {
            s_misc[0] = static_cast<uint32_t>(lane * 8 + j);
            s_misc[1] = above;
            s_misc[2] = local[j];
            break;
          }
          above += local[j];
        }
      }
    }
    __syncthreads();
    const uint32_t digit = s_misc[0];
    const uint32_t above = s_misc[1];
    const uint32_t in_digit = s_misc[2];
    __syncthreads();
    rem -= above;
    prefix = (upper < 64 ? (prefix << d) : 0ull) | digit;
    if (in_digit == rem || shift == 0) return SelectCut{prefix, shift};
  }
}

__device__ __forceinline__ bool cut_selects(const SelectCut& cut, uint64_t c) {
  return c != 0 && (c >> cut.shift) >= cut.prefix;
}

// Block-wide bitonic sort of s[0, n2) descending (n2 a power of two, padding = 0).
__device__ inline void block_sort_desc(uint64_t* s, int n2) {
  for (int size = 2; size <= n2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < (n2 >> 1); i += blockDim.x) {
        const int lo = 2 * i - (i & (stride - 1));
        const int hi = lo + stride;
        const bool desc = (lo & size) == 0;
        const uint64_t a = s[lo], b = s[hi];
        if ((a < b) == desc) {
          s[lo] = b;
          s[hi] = a;
        }
      }
      __syncthreads();
    }
  }
}

__host__ __device__ constexpr int next_pow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

}  // namespace indexshare::cuda::detail

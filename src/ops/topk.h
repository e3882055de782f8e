// Exact top-k over score rows, CPU.
//
// Conventions (shared with the CUDA kernels):
//  - a candidate with score -inf is masked (never selected); +inf is an ordinary (best) score;
//  - NaN anywhere in [0, L) of a row is an error: topk throws Error naming the first such row
//    (the lowest row index, whatever the thread count) and its first NaN position;
//  - when fewer than k candidates are valid (k > L included), the row is padded with -1 and
//    count[t] says how many slots are valid: count[t] = min(k, #valid in row t);
//  - ties are broken deterministically: the lower position wins; -0.0 and +0.0 are equal
//    scores (a tie);
//  - output order: descending score, ties by ascending position (valid slots first);
//  - k = 0 writes no index (count, when given, is set to 0); L = 0 gives rows of -1.
// Positions are int32, so L must be < 2^31.
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct TopkParams {
  const float* scores = nullptr;  // [T, ld] row-major; candidates are columns [0, L)
  int64_t T = 0;
  int64_t L = 0;
  int64_t ld = 0;  // row stride (>= L); 0 means L
  int k = 0;
  int32_t* indices = nullptr;  // [T, k] out: positions, -1 = empty slot
  int32_t* count = nullptr;    // [T] out, nullable: number of valid slots per row
};

// Checks sizes (T, L, ld, k non-negative, ld >= L, L < 2^31) and pointers (scores when T*L > 0,
// indices when T*k > 0); throws Error naming the field.
void validate(const TopkParams& p);

// Multi-threaded over rows; the result does not depend on the thread count or on SIMD.
void topk(const TopkParams& p);

}  // namespace indexshare::ops

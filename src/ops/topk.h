// Exact top-k over score rows, CPU.
//
// Conventions (shared with the CUDA kernels):
//  - a candidate with score -inf is masked (never selected); NaN is an error;
//  - when fewer than k candidates are valid, the row is padded with -1 and count[t] says how
//    many slots are valid;
//  - ties are broken deterministically: the lower position wins;
//  - output order: descending score, ties by ascending position (valid slots first);
//  - k = 0 writes nothing; L = 0 gives a row of -1.
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct TopkParams {
  const float* scores = nullptr;  // [T, ld] row-major; candidates are columns [0, L)
  int64_t T = 0;
  int64_t L = 0;
  int64_t ld = 0;       // row stride (>= L); 0 means L
  int k = 0;
  int32_t* indices = nullptr;     // [T, k] out: positions, -1 = empty slot
  int32_t* count = nullptr;       // [T] out, nullable: number of valid slots per row
};

void validate(const TopkParams& p);
void topk(const TopkParams& p);

}  // namespace indexshare::ops

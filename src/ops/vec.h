// Small vector kernels shared by ops and model code (AVX2+FMA with a scalar fallback, chosen
// at run time). The summation order depends only on n, so results are reproducible.
#pragma once

#include <cstdint>

namespace indexshare::ops {

// sum_i a[i] * b[i]
float dot(const float* a, const float* b, int64_t n);

}  // namespace indexshare::ops

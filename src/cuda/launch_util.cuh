// Internal to src/cuda: small launch helpers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_check.cuh"

namespace indexshare::cuda::detail {

inline int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    IS_CUDA_CHECK(cudaGetDevice(&dev));
    IS_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    return v;
  }();
  return n;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Raises a kernel's dynamic shared memory limit once per kernel.
template <class K>
void allow_smem(K kernel, int bytes) {
  IS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

}  // namespace indexshare::cuda::detail

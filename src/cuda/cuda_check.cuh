// Internal to src/cuda: checked CUDA calls. Every runtime call and every launch goes through
// IS_CUDA_CHECK / IS_CUDA_LAUNCH_CHECK, which throw indexshare::Error naming the call, the file
// and the line.
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define IS_CUDA_CHECK(expr)                                                                  \
  do {                                                                                       \
    const cudaError_t is_cuda_err_ = (expr);                                                 \
    if (is_cuda_err_ != cudaSuccess)                                                         \
      ::indexshare::fail("CUDA error '", cudaGetErrorString(is_cuda_err_), "' in ", #expr,   \
                         " at ", __FILE__, ":", __LINE__);                                   \
  } while (0)

// After a <<<...>>> launch: reports bad launch configurations at once.
#define IS_CUDA_LAUNCH_CHECK(name)                                                          \
  do {                                                                                       \
    const cudaError_t is_cuda_err_ = cudaGetLastError();                                     \
    if (is_cuda_err_ != cudaSuccess)                                                         \
      ::indexshare::fail("CUDA launch of ", name, " failed: ", cudaGetErrorString(is_cuda_err_), \
                         " at ", __FILE__, ":", __LINE__);                                   \
  } while (0)

namespace indexshare::cuda {
inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
}  // namespace indexshare::cuda

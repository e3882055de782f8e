// The CUDA backend of backend/backend.h (plain C++ header: no CUDA types).
//
// Weights: f32 (cuBLAS SGEMM / f32 small-M kernel), bf16, or FP8 e4m3 with 128 x 128 block
// scales as the DeepSeek / GLM checkpoints ship them. How they are multiplied:
//   - rows <= 8 (decode): gemv.cu reads the weight once in its own format (fp8 codes are
//     widened in registers and each 8-wide chunk's dot product is multiplied by its block
//     scale), so a decode step reads 1 byte per fp8 weight;
//   - more rows (prefill): the fp8 matrix is dequantised into a bf16 scratch copy (one pass,
//     code * scale rounded to bf16), then cuBLAS runs a bf16 GEMM with f32 accumulation and f32
//     output; activations are rounded to bf16 first.
// Caches: the MLA latent in bf16 (the fast sparse-MLA kernel, 576 = 512 + 64 dims) or f32 (any
// dims, a generic kernel); indexer keys in the paged FP8 layout (fast fused indexer + top-k,
// D = 128, 32 or 64 heads) or f32 (any dims, generic scores + exact top-k in row blocks).
// Everything runs on one stream; uploads and downloads synchronise it.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace indexshare::cuda {

// Throws Error when no CUDA device is present.
std::unique_ptr<backend::Backend> make_cuda_backend();
// Makes backend::make_backend(Device::kCuda) return make_cuda_backend().
void register_cuda_backend();

inline constexpr int kRegions = static_cast<int>(backend::Region::kCount);

// Per-region GPU time: with profiling on, every Backend::mark records a CUDA event; a region's
// time is the span from its mark to the next one (kernels and any gap between them).
void set_profiling(backend::Backend& be, bool on);
// Milliseconds per region since profiling was switched on (synchronises); resets the sums.
std::array<double, kRegions> take_region_ms(backend::Backend& be);

struct DeviceMemory {
  size_t total = 0, free = 0;  // cudaMemGetInfo
};
DeviceMemory device_memory();

}  // namespace indexshare::cuda

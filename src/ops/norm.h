// Row normalisations, CPU.
//   rms_norm:   y = x / sqrt(mean(x^2) + eps) * weight
//   layer_norm: y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias   (biased variance)
// Rows are independent; accumulation in double-free fp32 with a fixed order (deterministic).
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct NormParams {
  const float* x = nullptr;       // [T, n]
  const float* weight = nullptr;  // [n] nullable (= 1)
  const float* bias = nullptr;    // [n] nullable (= 0); layer_norm only
  float* y = nullptr;             // [T, n]; may alias x
  int64_t T = 0;
  int64_t n = 0;
  float eps = 1e-5f;
};

void rms_norm(const NormParams& p);
void layer_norm(const NormParams& p);

// y = silu(gate) * up, elementwise over n values (SwiGLU); y may alias gate or up.
void swiglu(const float* gate, const float* up, float* y, int64_t n);

}  // namespace indexshare::ops

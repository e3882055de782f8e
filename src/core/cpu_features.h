// Run-time CPU feature detection; SIMD kernels are compiled with per-function target
// attributes and picked here, so the binary runs on any x86-64 (no -march=native).
#pragma once

namespace indexshare {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
};

// Detected once; INDEXSHARE_NO_SIMD=1 in the environment forces the scalar paths (tests use
// it to compare the two).
const CpuFeatures& cpu_features();

// True when the AVX2+FMA+F16C kernels may run.
bool use_avx2();

// Forces the scalar path on (false) or restores detection (true); for tests and benchmarks.
void set_simd_enabled(bool enabled);

}  // namespace indexshare

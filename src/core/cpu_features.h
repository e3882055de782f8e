// Run-time CPU feature detection; SIMD kernels are compiled with per-function target
// attributes and picked here, so the binary runs on any x86-64 (no -march=native).
#pragma once

namespace indexshare {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512_vnni = false;  // AVX-512 F, BW, VL and VNNI, with the OS saving ZMM state
};

// Detected once; INDEXSHARE_NO_SIMD=1 in the environment forces the scalar paths (tests use
// it to compare the two).
const CpuFeatures& cpu_features();

// True when the AVX2+FMA+F16C kernels may run.
bool use_avx2();

// True when the AVX-512 VNNI kernels may run (use_avx2() as well; INDEXSHARE_NO_AVX512=1
// turns them off and leaves AVX2).
bool use_avx512_vnni();

// Forces the scalar path on (false) or restores detection (true); for tests and benchmarks.
void set_simd_enabled(bool enabled);

// Turns the AVX-512 kernels off (false: AVX2 stays) or back to detection (true); for tests
// that compare the two paths and for benchmarks.
void set_avx512_enabled(bool enabled);

}  // namespace indexshare

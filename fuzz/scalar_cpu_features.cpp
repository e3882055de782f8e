// Scalar-only stand-in for src/core/cpu_features.cpp in fuzz builds: clang 14 (Debian 12) rejects
// __builtin_cpu_supports("f16c"), and the fuzzers exercise parsing, not SIMD kernels.
#include "core/cpu_features.h"

namespace indexshare {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f{};
  return f;
}
bool use_avx2() { return false; }
void set_simd_enabled(bool) {}

}  // namespace indexshare

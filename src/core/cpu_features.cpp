#include "core/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace indexshare {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
#endif
  return f;
}

bool env_disables_simd() {
  const char* v = std::getenv("INDEXSHARE_NO_SIMD");
  return v != nullptr && std::strcmp(v, "0") != 0 && v[0] != '\0';
}

std::atomic<bool> g_simd_enabled{!env_disables_simd()};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

bool use_avx2() {
  const CpuFeatures& f = cpu_features();
  return g_simd_enabled.load(std::memory_order_relaxed) && f.avx2 && f.fma && f.f16c;
}

void set_simd_enabled(bool enabled) { g_simd_enabled.store(enabled, std::memory_order_relaxed); }

}  // namespace indexshare

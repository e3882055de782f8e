// CPU feature detection for the fuzz build. src/core/cpu_features.cpp asks
// __builtin_cpu_supports("f16c"), which clang 14 rejects; this copy reads F16C from CPUID
// directly and is otherwise the same API (set_simd_enabled, INDEXSHARE_NO_SIMD).
#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/cpu_features.h"

namespace indexshare {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d)) f.f16c = (c & bit_F16C) != 0;
  return f;
}

bool env_disables_simd() {
  const char* v = std::getenv("INDEXSHARE_NO_SIMD");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
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

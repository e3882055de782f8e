#include "core/cpu_features.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace indexshare {
namespace {

// Reads CPUID directly (GCC and clang both provide <cpuid.h>; clang 14's
// __builtin_cpu_supports does not know "f16c"). AVX needs the OS to save YMM state (XGETBV).
CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c & (1u << 27)) != 0;
  const bool avx = (c & (1u << 28)) != 0;
  bool ymm_saved = false;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    ymm_saved = (lo & 0x6u) == 0x6u;
  }
  const bool avx_ok = avx && ymm_saved;
  f.fma = avx_ok && (c & (1u << 12)) != 0;
  f.f16c = avx_ok && (c & (1u << 29)) != 0;
  unsigned a7 = 0, b7 = 0, c7 = 0, d7 = 0;
  if (__get_cpuid_count(7, 0, &a7, &b7, &c7, &d7)) {
    f.avx2 = avx_ok && (b7 & (1u << 5)) != 0;
    // ZMM state: opmask, upper halves of ZMM0-15 and ZMM16-31 (XCR0 bits 5-7).
    unsigned lo = 0, hi = 0;
    if (osxsave) __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const bool zmm_saved = avx_ok && (lo & 0xe0u) == 0xe0u;
    const bool f512 = (b7 & (1u << 16)) != 0, bw = (b7 & (1u << 30)) != 0, vl = (b7 & (1u << 31)) != 0;
    f.avx512_vnni = zmm_saved && f512 && bw && vl && (c7 & (1u << 11)) != 0;
  }
#endif
  return f;
}

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, "0") != 0 && v[0] != '\0';
}

std::atomic<bool> g_simd_enabled{!env_set("INDEXSHARE_NO_SIMD")};
std::atomic<bool> g_avx512_enabled{!env_set("INDEXSHARE_NO_AVX512")};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

bool use_avx2() {
  const CpuFeatures& f = cpu_features();
  return g_simd_enabled.load(std::memory_order_relaxed) && f.avx2 && f.fma && f.f16c;
}

bool use_avx512_vnni() {
  return use_avx2() && cpu_features().avx512_vnni && g_avx512_enabled.load(std::memory_order_relaxed);
}

void set_simd_enabled(bool enabled) { g_simd_enabled.store(enabled, std::memory_order_relaxed); }

void set_avx512_enabled(bool enabled) { g_avx512_enabled.store(enabled, std::memory_order_relaxed); }

}  // namespace indexshare

// Shared helpers of the attention and RoPE tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/thread_pool.h"

namespace indexshare::test {

// Fresh seed per test, printed on failure.
inline uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

// Restores SIMD dispatch and the thread count at scope exit.
struct DispatchGuard {
  int threads = num_threads();
  ~DispatchGuard() {
    set_simd_enabled(true);
    set_num_threads(threads);
  }
};

// The SIMD settings every numeric test runs under: AVX2 (when the CPU has it) and scalar.
inline std::vector<bool> simd_modes() { return {true, false}; }

// Expects |got - want| <= atol + rtol |want| elementwise; reports the first few failures.
inline void expect_close(const std::vector<float>& got, const std::vector<double>& want,
                         double atol, double rtol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const double w = want[i];
    const double g = got[i];
    bool ok;
    if (std::isinf(w)) {
      ok = g == w;
    } else {
      ok = std::fabs(g - w) <= atol + rtol * std::fabs(w);
    }
    if (!ok) {
      ++bad;
      ADD_FAILURE() << what << "[" << i << "]: got " << g << ", want " << w;
    }
  }
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    uint32_t x, y;
    std::memcpy(&x, &a[i], 4);
    std::memcpy(&y, &b[i], 4);
    if (x != y) return false;
  }
  return true;
}

}  // namespace indexshare::test

// Shared helpers for the indexer / top-k tests: random inputs, error matching, SIMD and
// thread-count switches.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/indexer.h"

namespace indexshare::test {

// A fresh seed per call, to be printed with SCOPED_TRACE.
inline uint32_t fresh_seed() { return std::random_device{}(); }

// Runs fn and checks that it throws indexshare::Error whose message contains `needle`.
inline void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an Error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not mention '" << needle << "'";
  }
}

// Restores SIMD detection and the default thread count on scope exit.
struct ModeGuard {
  int threads = num_threads();
  ~ModeGuard() {
    set_simd_enabled(true);
    set_num_threads(threads);
  }
};

// The SIMD settings a test should cover: scalar always, AVX2 when the CPU has it.
inline std::vector<bool> simd_modes() {
  set_simd_enabled(true);
  const bool have = use_avx2();
  return have ? std::vector<bool>{false, true} : std::vector<bool>{false};
}

struct IndexerInputs {
  std::vector<float> q, k, w, q_scale, k_scale;
  ops::IndexerParams p;
};

enum class Values {
  kGaussian,  // N(0, 1) q / k, N(0, 1) weights: tie-free scores in practice
  kExact,     // small multiples of 1/4 (q, k) and 1/8 (w), power-of-two scales: fp32 sums are
              // exact, so any evaluation order gives the float64 value and ties are common
};

inline IndexerInputs make_inputs(int64_t T, int64_t L, int H, int D, int64_t q_start, uint32_t seed,
                                 Values values = Values::kGaussian, bool with_scales = false) {
  IndexerInputs in;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(-3, 3);
  std::uniform_int_distribution<int> pow2(-2, 1);
  auto draw = [&](int denom) {
    return values == Values::kExact ? static_cast<float>(small(rng)) / static_cast<float>(denom)
                                    : normal(rng);
  };
  in.q.resize(static_cast<size_t>(T * H * D));
  in.k.resize(static_cast<size_t>(L * D));
  in.w.resize(static_cast<size_t>(T * H));
  for (float& v : in.q) v = draw(4);
  for (float& v : in.k) v = draw(4);
  for (float& v : in.w) v = draw(8);
  if (with_scales) {
    std::uniform_real_distribution<float> pos(0.25f, 2.0f);
    in.q_scale.resize(static_cast<size_t>(T * H));
    in.k_scale.resize(static_cast<size_t>(L));
    for (float& v : in.q_scale)
      v = values == Values::kExact ? std::ldexp(1.0f, pow2(rng)) : pos(rng);
    for (float& v : in.k_scale)
      v = values == Values::kExact ? std::ldexp(1.0f, pow2(rng)) : pos(rng);
  }
  in.p.q = in.q.data();
  in.p.k = in.k.data();
  in.p.weights = in.w.data();
  in.p.q_scale = with_scales ? in.q_scale.data() : nullptr;
  in.p.k_scale = with_scales ? in.k_scale.data() : nullptr;
  in.p.scale = values == Values::kExact ? 0.5f : 1.0f / std::sqrt(static_cast<float>(H * D));
  in.p.T = T;
  in.p.L = L;
  in.p.H = H;
  in.p.D = D;
  in.p.q_start = q_start;
  return in;
}

}  // namespace indexshare::test

// GPU radix top-k against the float64 reference (tests/ref/cuda_ref.h): bitwise-exact
// indices, order and counts on random rows, heavy ties, masks, long rows and short rows.
#include "cuda/topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "../ref/cuda_ref.h"
#include "core/error.h"
#include "cuda/runtime.h"
#include "cuda_test_util.h"
#include "ops/topk.h"

namespace indexshare {
namespace {

using cudatest::download;
using cudatest::upload;

// Runs topk_cuda (both methods) on host rows [T, ld] and checks every row against the reference.
void run_and_check(const std::vector<float>& scores, int64_t T, int64_t L, int64_t ld, int k,
                   const std::vector<int32_t>& row_len = {}) {
  for (auto method : {cuda::TopkMethod::kTwoPass, cuda::TopkMethod::kSampled}) {
  SCOPED_TRACE(testing::Message() << "method " << static_cast<int>(method));
  auto d_scores = upload(scores);
  cuda::DeviceBuffer d_rl;
  if (!row_len.empty()) d_rl = upload(row_len);
  cuda::DeviceBuffer d_idx(static_cast<size_t>(T) * k * 4), d_cnt(static_cast<size_t>(T) * 4);
  cuda::fill_bytes(d_idx.get(), 0x5a, d_idx.bytes());  // poison
  cuda::fill_bytes(d_cnt.get(), 0x5a, d_cnt.bytes());
  cuda::DeviceBuffer ws(cuda::topk_workspace_bytes(T, k));
  cuda::TopkCudaParams p;
  p.scores = d_scores.as<float>();
  p.row_len = row_len.empty() ? nullptr : d_rl.as<int32_t>();
  p.T = T;
  p.L = L;
  p.ld = ld;
  p.k = k;
  p.indices = d_idx.as<int32_t>();
  p.count = d_cnt.as<int32_t>();
  p.workspace = ws.get();
  p.workspace_bytes = ws.bytes();
  p.method = method;
  cuda::topk_cuda(p);
  cuda::synchronize();
  const auto idx = download<int32_t>(d_idx, static_cast<size_t>(T) * k);
  const auto cnt = download<int32_t>(d_cnt, static_cast<size_t>(T));
  // The CPU op on the same rows (it throws on NaN, which the GPU treats as masked).
  std::vector<int32_t> cpu_idx(static_cast<size_t>(T) * k), cpu_cnt(static_cast<size_t>(T));
  std::vector<char> cpu_ok(static_cast<size_t>(T), 0);
  if (row_len.empty())
    for (int64_t t = 0; t < T; ++t) {
      if (std::any_of(scores.begin() + t * ld, scores.begin() + t * ld + L, [](float x) { return std::isnan(x); }))
        continue;
      ops::TopkParams cp;
      cp.scores = scores.data() + t * ld;
      cp.T = 1;
      cp.L = L;
      cp.ld = ld;
      cp.k = k;
      cp.indices = cpu_idx.data() + t * k;
      cp.count = cpu_cnt.data() + t;
      ops::topk(cp);
      cpu_ok[t] = 1;
    }
  std::vector<int32_t> want(k);
  for (int64_t t = 0; t < T; ++t) {
    if (cpu_ok[t]) {
      ASSERT_EQ(cnt[t], cpu_cnt[t]) << "cpu op, row " << t;
      for (int i = 0; i < k; ++i) ASSERT_EQ(idx[t * k + i], cpu_idx[t * k + i]) << "cpu op, row " << t << " slot " << i;
    }
    const int64_t len = row_len.empty() ? L : std::min<int64_t>(L, std::max(0, row_len[t]));
    const int n = ref::topk_row(scores.data() + t * ld, len, k, want.data());
    ASSERT_EQ(cnt[t], n) << "row " << t;
    for (int i = 0; i < k; ++i) ASSERT_EQ(idx[t * k + i], want[i]) << "row " << t << " slot " << i;
  }
  }
}

TEST(TopkCuda, RandomRowsExact) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t T = 7, L = 70001, ld = 70004;
  auto s = cudatest::normal(rng, static_cast<size_t>(T * ld));
  run_and_check(s, T, L, ld, 2048);
  run_and_check(s, T, L, ld, 1);
  run_and_check(s, T, L, ld, 777);
}

TEST(TopkCuda, LongRowOverAMillion) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t L = (1 << 20) + 4099;
  auto s = cudatest::normal(rng, static_cast<size_t>(2 * L));
  run_and_check(s, 2, L, L, 2048);
}

TEST(TopkCuda, MaskedShortAndRowLengths) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t T = 6, L = 5000;
  auto s = cudatest::normal(rng, static_cast<size_t>(T * L));
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < L; ++i) s[i] = ninf;                      // row 0: all masked
  for (int64_t i = 100; i < L; ++i) s[L + i] = ninf;                // row 1: 100 valid < k
  for (int64_t i = 0; i < L; i += 2) s[2 * L + i] = ninf;           // row 2: 2500 valid
  s[3 * L + 17] = std::numeric_limits<float>::infinity();           // row 3: +inf is best
  s[3 * L + 18] = std::numeric_limits<float>::quiet_NaN();          // NaN is masked on the GPU
  run_and_check(s, T, L, L, 2048);
  run_and_check(s, T, L, L, 2048, {0, 5000, 2047, 4999, 1, 3000});  // causal-style row lengths
  run_and_check(s, T, 0, 0, 16);                                    // L = 0: all -1
}

TEST(TopkCuda, TiesGoToLowerPositions) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t T = 5, L = 40000;
  std::vector<float> s(static_cast<size_t>(T * L));
  std::uniform_int_distribution<int> few(0, 3), many(0, 200);
  for (int64_t i = 0; i < L; ++i) {
    s[i] = 1.5f;                                         // all equal: the bin overflows the buffer
    s[L + i] = static_cast<float>(few(rng));             // 4 values
    s[2 * L + i] = static_cast<float>(many(rng)) * 0.25f;
    s[3 * L + i] = (i % 2) ? 0.0f : -0.0f;               // -0 == +0
    s[4 * L + i] = static_cast<float>(many(rng)) * 1e-30f;
  }
  run_and_check(s, T, L, L, 2048);
  run_and_check(s, T, L, L, 4096);
}

// Rows built against the sampled method's 1/8 sample (pieces of 1024, every 8th sampled): the
// cut it picks is wrong in both directions, so those rows must fall back to two-pass.
TEST(TopkCuda, SampleAdversarialRowsFallBack) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t T = 3, L = 100000;
  auto s = cudatest::normal(rng, static_cast<size_t>(T * L));
  for (int64_t i = 0; i < L; ++i) {
    const bool in_sample = (i / 1024) % 8 == 0;
    if (in_sample) s[i] += 100.0f;       // row 0: the sample sees only the best: too few kept
    if (!in_sample) s[L + i] += 100.0f;  // row 1: the sample sees only the worst: too many kept
  }
  run_and_check(s, T, L, L, 2048);
}

TEST(TopkCuda, ManyRowsUnalignedStride) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t T = 300, L = 3001, ld = 3003;  // scalar-load path
  auto s = cudatest::normal(rng, static_cast<size_t>(T * ld), 3.0f);
  run_and_check(s, T, L, ld, 2048);
  run_and_check(s, T, L, ld, 64);
}

TEST(TopkCuda, BadArgumentsThrow) {
  cuda::TopkCudaParams p;
  p.T = 1;
  p.L = 10;
  p.k = cuda::kTopkMaxK + 1;
  try {
    cuda::validate(p);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("k must be"), std::string::npos) << e.what();
  }
  p.k = 4;
  p.ld = 5;
  try {
    cuda::validate(p);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ld"), std::string::npos) << e.what();
  }
  p.ld = 0;
  float dummy = 0;
  int32_t out = 0;
  p.scores = &dummy;
  p.indices = &out;
  try {
    cuda::validate(p);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("workspace"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda::select_composites_cuda(nullptr, 1, 1, 0, nullptr, nullptr, nullptr), Error);
}

}  // namespace
}  // namespace indexshare

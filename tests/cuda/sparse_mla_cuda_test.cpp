// GPU sparse MLA (absorbed) against the float64 reference and the CPU op on the same bf16
// inputs: allclose + cosine on the output, LSE close, empty rows give 0 / -inf.
#include "cuda/sparse_mla.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "../ref/cuda_ref.h"
#include "core/error.h"
#include "cuda/runtime.h"
#include "cuda_test_util.h"
#include "ops/sparse_attention.h"

namespace indexshare {
namespace {

using cudatest::download;
using cudatest::upload;

void run_case(int64_t T, int64_t L, int H, int K, double empty_frac, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "seed " << seed << " T " << T << " L " << L << " H " << H << " K " << K);
  std::mt19937_64 rng(seed);
  const int Dqk = cuda::kMlaDqk, Dv = cuda::kMlaDv;
  std::vector<double> q_dec, kv_dec;
  const auto qb = cudatest::to_bf16(cudatest::normal(rng, static_cast<size_t>(T * H * Dqk)), &q_dec);
  const auto kvb = cudatest::to_bf16(cudatest::normal(rng, static_cast<size_t>(L * Dqk)), &kv_dec);
  std::vector<int32_t> idx(static_cast<size_t>(T * K));
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(L - 1));
  std::uniform_real_distribution<double> u(0, 1);
  for (auto& x : idx) x = u(rng) < empty_frac ? -1 : pick(rng);
  if (T > 1)
    for (int j = 0; j < K; ++j) idx[K + j] = -1;  // row 1: nothing to attend to
  const float scale = 1.0f / std::sqrt(192.0f);

  auto d_q = upload(qb);
  auto d_kv = upload(kvb);
  auto d_idx = upload(idx);
  cuda::DeviceBuffer d_out(static_cast<size_t>(T * H * Dv) * 4), d_lse(static_cast<size_t>(T * H) * 4);
  cuda::fill_bytes(d_out.get(), 0xff, d_out.bytes());
  cuda::fill_bytes(d_lse.get(), 0xff, d_lse.bytes());
  cuda::SparseMlaCudaParams p;
  p.q = d_q.as<uint16_t>();
  p.kv = d_kv.as<uint16_t>();
  p.indices = d_idx.as<int32_t>();
  p.T = T;
  p.L = L;
  p.H = H;
  p.K = K;
  p.scale = scale;
  p.out = d_out.as<float>();
  p.lse = d_lse.as<float>();
  cuda::sparse_mla_cuda(p);
  cuda::synchronize();
  const auto out = download<float>(d_out, static_cast<size_t>(T * H * Dv));
  const auto lse = download<float>(d_lse, static_cast<size_t>(T * H));

  std::vector<double> want, want_lse;
  ref::sparse_mla(q_dec, kv_dec, idx, T, L, H, Dqk, Dv, K, scale, want, want_lse);
  // CPU op on the same decoded inputs.
  std::vector<float> qf(q_dec.begin(), q_dec.end()), kvf(kv_dec.begin(), kv_dec.end());
  std::vector<float> cpu_out(static_cast<size_t>(T * H * Dv)), cpu_lse(static_cast<size_t>(T * H));
  ops::SparseMlaParams cp;
  cp.q = qf.data();
  cp.kv = kvf.data();
  cp.indices = idx.data();
  cp.T = T;
  cp.L = L;
  cp.H = H;
  cp.Dqk = Dqk;
  cp.Dv = Dv;
  cp.K = K;
  cp.scale = scale;
  cp.out = cpu_out.data();
  cp.lse = cpu_lse.data();
  ops::sparse_mla(cp);

  for (int64_t r = 0; r < T * H; ++r) {
    double dot = 0, ng = 0, nw = 0, maxw = 0;
    for (int d = 0; d < Dv; ++d) maxw = std::max(maxw, std::fabs(want[r * Dv + d]));  // the row's scale
    for (int d = 0; d < Dv; ++d) {
      const double g = out[r * Dv + d], w = want[r * Dv + d];
      ASSERT_TRUE(std::isfinite(g)) << "row " << r << " dim " << d;
      dot += g * w;
      ng += g * g;
      nw += w * w;
      ASSERT_NEAR(cpu_out[r * Dv + d], w, 1e-4 * (maxw + 1e-3)) << "cpu op, row " << r;
    }
    if (want_lse[r] == -INFINITY) {
      ASSERT_EQ(lse[r], -std::numeric_limits<float>::infinity()) << "row " << r;
      ASSERT_EQ(ng, 0.0) << "row " << r;
      continue;
    }
    // P is rounded to bf16 before P.V (as every tensor-core attention kernel does).
    for (int d = 0; d < Dv; ++d)
      ASSERT_NEAR(out[r * Dv + d], want[r * Dv + d], 1e-2 * maxw + 1e-3) << "row " << r << " dim " << d;
    ASSERT_GT(dot / std::sqrt(ng * nw), 0.9999) << "row " << r;
    ASSERT_NEAR(lse[r], want_lse[r], 1e-4 * std::max(1.0, std::fabs(want_lse[r]))) << "row " << r;
  }
}

TEST(SparseMlaCuda, DecodeGlm5Shape) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  run_case(4, 5000, 64, 2048, 0.05, seed);  // GLM-5: 64 heads, top-k 2048
}

TEST(SparseMlaCuda, DeepSeekHeadsOddKAndEmptySlots) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  run_case(3, 300, 128, 100, 0.5, seed);  // 128 heads, K not a multiple of the tile
  run_case(2, 50, 16, 7, 0.3, seed + 1);  // fewer heads than a block holds
}

TEST(SparseMlaCuda, BadArgumentsThrow) {
  cuda::SparseMlaCudaParams p;
  p.T = 1;
  p.H = 20;
  try {
    cuda::validate(p);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("H must be"), std::string::npos) << e.what();
  }
  p.H = 64;
  p.Dqk = 192;
  EXPECT_THROW(cuda::validate(p), Error);
}

}  // namespace
}  // namespace indexshare

// Fused indexer + top-k: identical to topk_cuda(indexer_scores_cuda) (same device scores), and
// equal to the float64 reference's top-k up to near-ties.
#include "cuda/indexer_topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <vector>

#include "core/error.h"
#include "cuda/indexer.h"
#include "cuda/runtime.h"
#include "cuda/topk.h"
#include "cuda_test_util.h"
#include "indexer_inputs.h"
#include "ops/indexer_topk.h"

namespace indexshare {
namespace {

using cudatest::download;
using cudatest::IndexerCase;

void run_case(const IndexerCase& c, int k, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "seed " << seed << " fmt " << static_cast<int>(c.format) << " B "
                                  << c.B << " H " << c.H << " T " << c.T << " L " << c.L << " k " << k);
  const auto in = cudatest::make_indexer_inputs(c, seed);
  const cuda::IndexerCudaParams& p = in.params;
  const int64_t rows = static_cast<int64_t>(c.B) * c.T, L = c.L;

  // Fused.
  cuda::DeviceBuffer ws(std::max<size_t>(1, cuda::indexer_topk_workspace_bytes(p, k)));
  cuda::DeviceBuffer f_idx(rows * k * 4), f_cnt(rows * 4);
  cuda::fill_bytes(f_idx.get(), 0x5a, f_idx.bytes());
  cuda::fill_bytes(f_cnt.get(), 0x5a, f_cnt.bytes());
  cuda::indexer_topk_cuda(p, k, f_idx.as<int32_t>(), f_cnt.as<int32_t>(), ws.get(), ws.bytes());

  // Separate: scores, then top-k.
  cuda::DeviceBuffer scores(rows * L * 4), s_idx(rows * k * 4), s_cnt(rows * 4);
  cuda::indexer_scores_cuda(p, scores.as<float>(), L);
  cuda::DeviceBuffer tws(cuda::topk_workspace_bytes(rows, k));
  cuda::TopkCudaParams tp;
  tp.scores = scores.as<float>();
  tp.T = rows;
  tp.L = L;
  tp.k = k;
  tp.indices = s_idx.as<int32_t>();
  tp.count = s_cnt.as<int32_t>();
  tp.workspace = tws.get();
  tp.workspace_bytes = tws.bytes();
  cuda::topk_cuda(tp);
  cuda::synchronize();

  const auto fi = download<int32_t>(f_idx, rows * k), si = download<int32_t>(s_idx, rows * k);
  const auto fc = download<int32_t>(f_cnt, rows), sc = download<int32_t>(s_cnt, rows);
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_EQ(fc[r], sc[r]) << "row " << r;
    for (int i = 0; i < k; ++i) ASSERT_EQ(fi[r * k + i], si[r * k + i]) << "row " << r << " slot " << i;
  }
  // Against the float64 reference, near-ties aside.
  for (int b = 0; b < c.B; ++b) {
    std::vector<double> want, bound;
    in.reference(b, want, bound);
    const int64_t sl = in.seq_len(b);
    for (int64_t t = 0; t < c.T; ++t) {
      std::vector<double> row(want.begin() + t * sl, want.begin() + (t + 1) * sl);
      double bmax = 0;
      for (int64_t s = 0; s < sl; ++s) bmax = std::max(bmax, bound[t * sl + s]);
      const double tol = (in.fp8() ? 2e-4 : 2e-5) * bmax;
      const int64_t r = b * c.T + t;
      const std::string err = cudatest::check_topk_near_ties(row, sl, k, fi.data() + r * k, fc[r], tol);
      ASSERT_EQ(err, "") << "batch " << b << " row " << t;
    }
    // The CPU op (streaming indexer + top-k) on the same decoded inputs: overlap >= 0.99.
    const int D = cuda::kIndexerDim, H = c.H;
    const int64_t T = c.T;
    std::vector<float> qf(in.q_dec.begin() + b * T * H * D, in.q_dec.begin() + (b + 1) * T * H * D);
    std::vector<float> kf(in.k_dec.begin() + b * L * D, in.k_dec.begin() + (b * L + sl) * D);
    std::vector<float> wf(in.w_h.begin() + b * T * H, in.w_h.begin() + (b + 1) * T * H);
    std::vector<float> qsf(in.qs_h.begin() + b * T * H, in.qs_h.begin() + (b + 1) * T * H);
    std::vector<float> ksf;
    if (in.fp8()) ksf.assign(in.ks_h.begin() + b * L, in.ks_h.begin() + b * L + sl);
    ops::IndexerParams ip;
    ip.q = qf.data();
    ip.k = kf.data();
    ip.weights = wf.data();
    ip.q_scale = qsf.data();
    ip.k_scale = in.fp8() ? ksf.data() : nullptr;
    ip.scale = in.scale;
    ip.T = T;
    ip.L = sl;
    ip.H = H;
    ip.D = D;
    ip.q_start = in.q_start(b);
    ops::IndexerTopkOptions o;
    o.k = k;
    std::vector<int32_t> ci(static_cast<size_t>(T) * k), cc(static_cast<size_t>(T));
    ops::indexer_topk(ip, o, ci.data(), cc.data());
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = b * T + t;
      ASSERT_EQ(fc[r], cc[t]) << "cpu op count, batch " << b << " row " << t;
      std::vector<int32_t> a(fi.begin() + r * k, fi.begin() + r * k + fc[r]), e(ci.begin() + t * k, ci.begin() + t * k + cc[t]);
      std::sort(a.begin(), a.end());
      std::sort(e.begin(), e.end());
      std::vector<int32_t> both;
      std::set_intersection(a.begin(), a.end(), e.begin(), e.end(), std::back_inserter(both));
      const double overlap = a.empty() ? 1.0 : static_cast<double>(both.size()) / a.size();
      ASSERT_GE(overlap, 0.99) << "cpu op overlap, batch " << b << " row " << t;
    }
  }
}

TEST(IndexerTopkCuda, PrefillMatchesSeparateAndReference) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  for (auto fmt : {cuda::IndexerFormat::kFp8, cuda::IndexerFormat::kBf16})
    for (int H : {32, 64}) {
      // L well above the candidate buffer (4096) so that compaction runs many times.
      run_case(IndexerCase{fmt, 1, H, 9, 20000, {}, {}, 20000 - 9, true}, 2048, seed + H);
      run_case(IndexerCase{fmt, 1, H, 6, 3000, {}, {}, 100, false}, 64, seed + H + 1);  // causal, short rows
    }
}

TEST(IndexerTopkCuda, DecodeMatchesSeparateAndReference) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  for (auto fmt : {cuda::IndexerFormat::kFp8, cuda::IndexerFormat::kBf16})
    for (int H : {32, 64})
      run_case(IndexerCase{fmt, 3, H, 1, 9000, {9000, 1000, 2}, {8999, 999, 1}, 0, true}, 2048, seed + H);
}

TEST(IndexerTopkCuda, BadArgumentsThrow) {
  cuda::IndexerCudaParams p;
  p.H = 32;
  p.T = 1;
  p.L = 10;
  int dummy = 0;
  p.q = &dummy;
  p.weights = reinterpret_cast<const float*>(&dummy);
  p.k_cache = &dummy;
  try {
    cuda::indexer_topk_cuda(p, cuda::kIndexerTopkMaxK + 1, nullptr, nullptr, nullptr, 0);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("k must be"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace indexshare

// GPU indexer scores against the float64 reference on the same (bf16- or fp8-dequantised)
// inputs: every entry written, masks exact, values within fp32 rounding of sum |terms|.
#include "cuda/indexer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "../ref/cuda_ref.h"
#include "core/error.h"
#include "cuda/runtime.h"
#include "cuda_test_util.h"
#include "indexer_inputs.h"
#include "ops/indexer.h"

namespace indexshare {
namespace {

using cudatest::download;
using cudatest::upload;

using cudatest::IndexerCase;

// Runs the score kernel on random inputs and compares with the reference batch by batch.
void run_case(const IndexerCase& c, uint64_t seed, cuda::IndexerKernel kernel = cuda::IndexerKernel::kAuto) {
  SCOPED_TRACE(testing::Message() << "seed " << seed << " fmt " << static_cast<int>(c.format) << " B "
                                  << c.B << " H " << c.H << " T " << c.T << " L " << c.L << " kernel "
                                  << static_cast<int>(kernel));
  const auto in = cudatest::make_indexer_inputs(c, seed);
  const int B = c.B;
  const int64_t T = c.T, L = c.L;
  const bool fp8 = in.fp8();
  const int64_t ld = L + 5;
  cuda::DeviceBuffer d_out(static_cast<size_t>(B * T * ld) * 4);
  cuda::fill_bytes(d_out.get(), 0xff, d_out.bytes());  // NaN poison

  cuda::IndexerCudaParams p = in.params;
  p.kernel = kernel;
  cuda::indexer_scores_cuda(p, d_out.as<float>(), ld);
  cuda::synchronize();
  const auto out = download<float>(d_out, static_cast<size_t>(B * T * ld));

  for (int b = 0; b < B; ++b) {
    const int64_t sl = in.seq_len(b);
    std::vector<double> want, bound;
    in.reference(b, want, bound);
    // The CPU op on the same decoded inputs: [T, sl].
    const int D = cuda::kIndexerDim, H = c.H;
    std::vector<float> qf(in.q_dec.begin() + b * T * H * D, in.q_dec.begin() + (b + 1) * T * H * D);
    std::vector<float> kf(in.k_dec.begin() + b * L * D, in.k_dec.begin() + (b * L + sl) * D);
    std::vector<float> wf(in.w_h.begin() + b * T * H, in.w_h.begin() + (b + 1) * T * H);
    std::vector<float> qsf(in.qs_h.begin() + b * T * H, in.qs_h.begin() + (b + 1) * T * H);
    std::vector<float> ksf;
    if (fp8) ksf.assign(in.ks_h.begin() + b * L, in.ks_h.begin() + b * L + sl);
    std::vector<float> cpu(static_cast<size_t>(T * sl));
    ops::IndexerParams ip;
    ip.q = qf.data();
    ip.k = kf.data();
    ip.weights = wf.data();
    ip.q_scale = qsf.data();
    ip.k_scale = fp8 ? ksf.data() : nullptr;
    ip.scale = in.scale;
    ip.T = T;
    ip.L = sl;
    ip.H = H;
    ip.D = D;
    ip.q_start = in.q_start(b);
    if (sl > 0) ops::indexer_scores(ip, cpu.data());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = 0; s < L; ++s) {
        const float got = out[(b * T + t) * ld + s];
        if (s < sl) {
          const double tolc = (fp8 ? 1e-4 : 1e-5) * bound[t * sl + s] + 1e-30;
          if (want[t * sl + s] == -INFINITY)
            ASSERT_EQ(cpu[t * sl + s], -std::numeric_limits<float>::infinity()) << "cpu op";
          else
            ASSERT_NEAR(got, cpu[t * sl + s], 2 * tolc) << "cpu op, b " << b << " t " << t << " s " << s;
        }
        if (s >= sl || want[t * sl + s] == -INFINITY) {
          ASSERT_EQ(got, -std::numeric_limits<float>::infinity()) << "b " << b << " t " << t << " s " << s;
          continue;
        }
        // fp32 accumulation; Hopper's e4m3 MMA accumulates with fewer bits, hence the wider fp8 bound.
        const double w = want[t * sl + s], tol = (fp8 ? 1e-4 : 1e-5) * bound[t * sl + s] + 1e-30;
        ASSERT_TRUE(std::isfinite(got)) << "b " << b << " t " << t << " s " << s;
        ASSERT_NEAR(got, w, tol) << "b " << b << " t " << t << " s " << s;
      }
  }
}

TEST(IndexerCuda, PrefillBf16MatchesReference) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  for (int H : {32, 64}) {
    run_case(IndexerCase{cuda::IndexerFormat::kBf16, 1, H, 37, 1000, {}, {}, 1000 - 37, true}, seed + H);  // chunk at the end
    run_case(IndexerCase{cuda::IndexerFormat::kBf16, 1, H, 70, 2100, {}, {}, 0, false}, seed + H + 1);     // future keys masked
  }
}

TEST(IndexerCuda, PrefillFp8PagedMatchesReference) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  for (int H : {32, 64}) {
    run_case(IndexerCase{cuda::IndexerFormat::kFp8, 1, H, 53, 1500, {}, {}, 1500 - 53, true}, seed + H);
    run_case(IndexerCase{cuda::IndexerFormat::kFp8, 1, H, 40, 777, {}, {}, 760, true}, seed + H + 1);  // L < q_start + T
  }
}

// Both kernels on the fp8 paged layout: prefill chunks (a tile ending mid-token block, causal
// masks inside pages, L not a whole page, a chunk past the keys), more pages than the 8-stage ring
// and more than one group of 32 page ids, and batched decode rows.
TEST(IndexerCuda, EveryKernelMatchesReferenceFp8) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  for (auto kernel : {cuda::IndexerKernel::kMmaSync, cuda::IndexerKernel::kWgmma})
    for (int H : {32, 64}) {
      run_case(IndexerCase{cuda::IndexerFormat::kFp8, 1, H, 53, 1500, {}, {}, 1500 - 53, true}, seed + H, kernel);
      run_case(IndexerCase{cuda::IndexerFormat::kFp8, 1, H, 40, 777, {}, {}, 760, true}, seed + H + 1, kernel);
      run_case(IndexerCase{cuda::IndexerFormat::kFp8, 1, H, 130, 4100, {}, {}, 3000, true}, seed + H + 2, kernel);
      run_case(IndexerCase{cuda::IndexerFormat::kFp8, 1, H, 96, 300, {}, {}, 0, false}, seed + H + 3, kernel);
      run_case(IndexerCase{cuda::IndexerFormat::kFp8, 3, H, 2, 900, {900, 65, 2}, {898, 63, 0}, 0, true}, seed + H + 4,
               kernel);
    }
}

TEST(IndexerCuda, DecodeBatchedPagedMatchesReference) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  for (auto fmt : {cuda::IndexerFormat::kFp8, cuda::IndexerFormat::kBf16})
    for (int H : {32, 64}) {
      // next_n = 1: query at seq_len - 1; next_n = 2: queries at seq_len - 2, seq_len - 1.
      run_case(IndexerCase{fmt, 4, H, 1, 1300, {1300, 1, 640, 1001}, {1299, 0, 639, 1000}, 0, true}, seed + H);
      run_case(IndexerCase{fmt, 3, H, 2, 900, {900, 65, 2}, {898, 63, 0}, 0, true}, seed + H + 7);
    }
}

TEST(IndexerCuda, BadArgumentsThrow) {
  cuda::IndexerCudaParams p;
  p.H = 48;
  p.T = 1;
  p.L = 1;
  auto expect_msg = [&](const char* needle) {
    try {
      cuda::validate(p);
      ADD_FAILURE() << "no throw for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg("H must be");
  p.H = 32;
  p.D = 64;
  expect_msg("D must be");
  p.D = 128;
  expect_msg("q is null");
  p.B = 0;
  expect_msg("B must be");
  p.B = 1;
  p.format = cuda::IndexerFormat::kBf16;
  p.kernel = cuda::IndexerKernel::kWgmma;
  expect_msg("fp8 format only");
  p.kernel = static_cast<cuda::IndexerKernel>(7);
  expect_msg("unknown kernel");
}

}  // namespace
}  // namespace indexshare

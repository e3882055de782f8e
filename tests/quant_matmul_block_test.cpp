// quant_matmul_block (activations quantised once, any [m0, m1) x [n0, n1) block, optional
// accumulate) against the float64 reference on the quantised activations, and against
// quant_matmul for the documented bitwise equality.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "ops/quant_matmul.h"
#include "ref/quant_ref.h"

namespace indexshare::ops {
namespace {

constexpr double kU = 0x1p-24;  // f32 unit roundoff

std::vector<uint8_t> random_quant_weights(std::mt19937& rng, uint32_t type, int64_t N, int64_t K) {
  std::vector<uint8_t> w(static_cast<size_t>(ref::ref_row_bytes(type, K) * N));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<double> scale(2e-3, 2e-2), minv(-0.15, 0.0);
  const int64_t bs = type == ref::kRefQ4_1 ? 20 : 34;
  for (int64_t b = 0; b < N * K / 32; ++b) {
    uint8_t* blk = &w[static_cast<size_t>(b * bs)];
    for (int64_t j = 0; j < bs; ++j) blk[j] = static_cast<uint8_t>(byte(rng));
    const uint16_t d = ref::f16_bits(scale(rng)), m = ref::f16_bits(minv(rng));
    std::memcpy(blk, &d, 2);
    if (type == ref::kRefQ4_1) std::memcpy(blk + 2, &m, 2);
  }
  return w;
}

struct BlockCase {
  GgmlType type;
  uint32_t ref_type;
  int64_t M, N, K;
};

class QuantMatmulBlock : public ::testing::TestWithParam<bool> {};  // param: SIMD on

TEST_P(QuantMatmulBlock, BlocksMatchReferenceAndWholeProduct) {
  set_simd_enabled(GetParam());
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (const BlockCase& c : {BlockCase{GgmlType::kQ4_1, ref::kRefQ4_1, 9, 37, 96},
                             BlockCase{GgmlType::kQ8_0, ref::kRefQ8_0, 5, 21, 64},
                             BlockCase{GgmlType::kQ4_1, ref::kRefQ4_1, 1, 13, 32}}) {
    SCOPED_TRACE("type " + std::to_string(c.ref_type) + " M=" + std::to_string(c.M));
    const auto w = random_quant_weights(rng, c.ref_type, c.N, c.K);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(c.M * c.K));
    for (float& v : x) v = g(rng);

    QuantizedActivations a;
    prepare_activations(c.type, c.M, c.K, a);
    // Quantise in two row ranges, as two threads would.
    quantize_activations(x.data(), c.K, 0, c.M / 2, a);
    quantize_activations(x.data(), c.K, c.M / 2, c.M, a);

    // y starts at a known value; blocks cover the outputs in an irregular pattern, half of
    // them accumulating onto the start value.
    std::vector<float> y0(static_cast<size_t>(c.M * c.N));
    for (float& v : y0) v = g(rng);
    std::vector<float> y = y0;
    QMatmulParams p;
    p.w = w.data();
    p.type = c.type;
    p.N = c.N;
    p.K = c.K;
    p.y = y.data();
    const int64_t mcut = (c.M + 1) / 3, ncut = c.N / 2 + 1;
    quant_matmul_block(p, a, 0, mcut, 0, ncut, false);
    quant_matmul_block(p, a, mcut, c.M, 0, ncut, false);
    quant_matmul_block(p, a, 0, c.M, ncut, c.N, true);

    // The whole product through quant_matmul for the bitwise comparison.
    std::vector<float> whole(static_cast<size_t>(c.M * c.N));
    QMatmulParams q = p;
    q.x = x.data();
    q.M = c.M;
    q.y = whole.data();
    quant_matmul(q);

    const int64_t rb = ref::ref_row_bytes(c.ref_type, c.K);
    for (int64_t m = 0; m < c.M; ++m) {
      std::vector<ref::RefQ8Block> qa;
      for (int64_t b = 0; b < c.K / 32; ++b) qa.push_back(ref::quantize_q8_block(&x[m * c.K + 32 * b]));
      for (int64_t n = 0; n < c.N; ++n) {
        double mag = 0;
        const double want = ref::dot_quantised(c.ref_type, &w[n * rb], qa, &mag);
        const size_t i = static_cast<size_t>(m * c.N + n);
        const bool acc = n >= ncut;
        const double got = acc ? static_cast<double>(y[i]) - y0[i] : y[i];
        const double tol = (c.K / 32 + 8) * kU * mag + (acc ? 2 * kU * std::fabs(y[i]) : 0.0) + 1e-30;
        ASSERT_NEAR(got, want, tol) << "m=" << m << " n=" << n;
        const float expect = acc ? y0[i] + whole[i] : whole[i];
        ASSERT_EQ(y[i], expect) << "m=" << m << " n=" << n << " (bitwise vs quant_matmul)";
      }
    }
  }
  set_simd_enabled(true);
}

INSTANTIATE_TEST_SUITE_P(Simd, QuantMatmulBlock, ::testing::Bool());

TEST(QuantMatmulBlockErrors, NamesTheArgument) {
  QuantizedActivations a;
  EXPECT_THROW(
      {
        try {
          prepare_activations(GgmlType::kQ4_1, 2, 48, a);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("K = 48"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  prepare_activations(GgmlType::kQ4_1, 2, 64, a);
  std::vector<float> x(128, 1.0f), y(8);
  EXPECT_THROW(quantize_activations(x.data(), 64, 1, 3, a), Error);  // rows past M
  quantize_activations(x.data(), 64, 0, 2, a);
  std::vector<uint8_t> w(static_cast<size_t>(4 * 2 * 34));
  QMatmulParams p;
  p.w = w.data();
  p.type = GgmlType::kQ8_0;  // activations were prepared for Q4_1
  p.N = 4;
  p.K = 64;
  p.y = y.data();
  try {
    quant_matmul_block(p, a, 0, 2, 0, 4);
    ADD_FAILURE() << "no error for a type mismatch";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("activations prepared for"), std::string::npos) << e.what();
  }
  p.type = GgmlType::kQ4_1;
  try {
    quant_matmul_block(p, a, 0, 2, 2, 5);
    ADD_FAILURE() << "no error for outputs past N";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outputs [2, 5)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quant_matmul_block(p, a, 1, 3, 0, 4), Error);  // rows past M
  EXPECT_NO_THROW(quant_matmul_block(p, a, 1, 1, 0, 4));      // empty block
}

}  // namespace
}  // namespace indexshare::ops

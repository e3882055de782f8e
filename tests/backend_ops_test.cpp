// The backend op table (tests/backend_cases.h) on the CPU backend. The same table runs on the
// CUDA backend in tests/cuda/backend_ops_cuda_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/cpu_backend.h"
#include "backend_cases.h"

namespace indexshare {
namespace {

class CpuBackendOps : public ::testing::TestWithParam<backend_cases::OpCase> {};

TEST_P(CpuBackendOps, MatchesFloat64Reference) {
  const uint64_t seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  backend::CpuBackend be;
  GetParam().run(be, seed);
}

INSTANTIATE_TEST_SUITE_P(Table, CpuBackendOps, ::testing::ValuesIn(backend_cases::all_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace indexshare

namespace indexshare {
namespace {

// A checkpoint block quantised the DeepSeek way (scale = max|w| / 448, so some code is +-448)
// dequantises and re-quantises to the same codes, and to the same scale up to its last bit
// ((448 s) / 448 is not always s in f32): an FP8 model keeps its checkpoint's numbers on the GPU
// to 2^-23 (GlmDsaModel uploads FP8 weights through make_host_weight).
TEST(HostWeight, Fp8BlocksOfACheckpointRoundTripExactly) {
  std::mt19937_64 rng(3);
  const int64_t N = 200, K = 300;  // partial blocks on both axes
  const int64_t nb = 2, kb = 3;
  std::vector<uint8_t> codes(static_cast<size_t>(N * K));
  std::vector<float> scale(static_cast<size_t>(nb * kb));
  for (auto& s : scale) s = std::uniform_real_distribution<float>(1e-4f, 1e-2f)(rng);
  for (auto& c : codes) c = f32_to_fp8e4m3(std::uniform_real_distribution<float>(-440.0f, 440.0f)(rng));
  for (int64_t b = 0; b < nb * kb; ++b) {  // every block holds one code of magnitude 448
    const int64_t n = (b / kb) * 128, k = (b % kb) * 128;
    codes[static_cast<size_t>(n * K + k)] = f32_to_fp8e4m3(b % 2 ? 448.0f : -448.0f);
  }
  std::vector<float> values(codes.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      values[static_cast<size_t>(n * K + k)] =
          fp8e4m3_to_f32(codes[static_cast<size_t>(n * K + k)]) * scale[static_cast<size_t>((n / 128) * kb + k / 128)];
  const backend::HostWeight w = backend::make_host_weight(values, 1, N, K, backend::WeightFormat::kFp8Block);
  for (size_t b = 0; b < scale.size(); ++b) EXPECT_NEAR(w.scale[b], scale[b], scale[b] * 0x1p-23f) << "block " << b;
  int diff = 0;
  for (size_t i = 0; i < codes.size(); ++i) diff += w.fp8[i] != codes[i] && (codes[i] & 0x7f) != 0;  // +-0 alike
  EXPECT_EQ(diff, 0);
  const auto back = backend::host_weight_values(w);
  for (size_t i = 0; i < values.size(); ++i)
    ASSERT_NEAR(back[i], values[i], std::fabs(values[i]) * 0x1p-22f) << "element " << i;
}

}  // namespace
}  // namespace indexshare

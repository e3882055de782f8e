// The backend op table (tests/backend_cases.h) on the CUDA backend: every op against the same
// float64 references as on the CPU, in every weight and cache format the backend offers.
#include <gtest/gtest.h>

#include <random>

#include "backend_cases.h"
#include "cuda/engine/cuda_backend.h"
#include "cuda_test_util.h"

namespace indexshare {
namespace {

class CudaBackendOps : public ::testing::TestWithParam<backend_cases::OpCase> {};

TEST_P(CudaBackendOps, MatchesFloat64Reference) {
  IS_REQUIRE_GPU();
  const uint64_t seed = cudatest::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto be = cuda::make_cuda_backend();
  GetParam().run(*be, seed);
  be->synchronize();
}

INSTANTIATE_TEST_SUITE_P(Table, CudaBackendOps, ::testing::ValuesIn(backend_cases::all_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(CudaBackend, MissingGpuAndBadRequestsAreErrors) {
  if (cuda::device_count() == 0) {
    EXPECT_THROW(cuda::make_cuda_backend(), Error);
    return;
  }
  auto be = cuda::make_cuda_backend();
  // Out of GPU memory: a clear Error naming the size, not a crash.
  try {
    (void)be->alloc(DType::kF32, {int64_t{1} << 40});
    ADD_FAILURE() << "a 4 TiB allocation succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of GPU memory"), std::string::npos) << e.what();
  }
  // A cache format the kernels do not take for these dims.
  backend::IndexerSpec spec;
  spec.heads = 8;
  spec.dim = 32;
  spec.topk = 16;
  spec.scale = 0.1f;
  spec.format = backend::CacheFormat::kFp8;
  EXPECT_THROW(be->new_indexer_cache(4, spec), Error);
  EXPECT_THROW(be->new_latent_cache(4, 32, 16, backend::CacheFormat::kBf16), Error);
  // The allocator is usable after the failed request.
  Tensor t = be->alloc(DType::kF32, {1024});
  be->fill_zero(t);
  be->synchronize();
}

}  // namespace
}  // namespace indexshare

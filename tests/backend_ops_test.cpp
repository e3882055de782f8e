// The backend op table (tests/backend_cases.h) on the CPU backend. The same table runs on the
// CUDA backend in tests/cuda/backend_ops_cuda_test.cpp.
#include <gtest/gtest.h>

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

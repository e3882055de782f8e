#include <fmt/core.h>

#include "command.h"
#include "core/cpu_features.h"
#include "core/thread_pool.h"

namespace indexshare::cli {
namespace {

CommandRegistrar reg("version", "print the version and what this machine offers", [](CLI::App&) {
  return [] {
    const auto& f = cpu_features();
    fmt::print("indexshare 0.1.0\nthreads {}  avx2 {}  fma {}  f16c {}  avx512-vnni {}  simd-in-use {}{}\n",
               num_threads(), f.avx2, f.fma, f.f16c, f.avx512_vnni, use_avx2(), use_avx512_vnni() ? " (avx512-vnni)" : "");
#ifdef INDEXSHARE_HAVE_CUDA
    fmt::print("cuda kernels: built\n");
#else
    fmt::print("cuda kernels: not built\n");
#endif
    return 0;
  };
});

}  // namespace
}  // namespace indexshare::cli

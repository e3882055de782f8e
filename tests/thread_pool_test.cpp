#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (int64_t n : {0, 1, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      parallel_for(n, 3, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1) << "threads=" << threads << " n=" << n;
    }
  }
  set_num_threads(2);
}

TEST(ThreadPool, RethrowsWorkerErrorsAndNestsInline) {
  set_num_threads(2);
  EXPECT_THROW(parallel_for(100, 1, [](int64_t b, int64_t) {
                 if (b > 0) fail("boom in worker");
               }),
               Error);
  std::atomic<int> total{0};
  parallel_for(4, 1, [&](int64_t b, int64_t e) {
    parallel_for(10, 1, [&](int64_t b2, int64_t e2) { total += static_cast<int>((e2 - b2) * (e - b)); });
  });
  EXPECT_EQ(total.load(), 40);
  EXPECT_THROW(set_num_threads(0), Error);
}

}  // namespace
}  // namespace indexshare

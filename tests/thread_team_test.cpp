// run_team / ThreadTeam: every unit of every phase runs exactly once, phases are ordered
// (a phase sees all writes of the previous one), errors come back, nesting runs inline.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "core/thread_team.h"

namespace indexshare {
namespace {

class ThreadTeamThreads : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { set_num_threads(GetParam()); }
  void TearDown() override { set_num_threads(2); }
};

// Phase p writes a[u] = b[u] + p after reading b, then b[u] = a[n - 1 - u]: any unit that ran
// early or twice, or a phase that started before the previous one finished, changes the sums.
TEST_P(ThreadTeamThreads, PhasesAreOrderedAndUnitsRunOnce) {
  constexpr int kPhases = 40;
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{257}}) {
    std::vector<int64_t> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
    for (int64_t u = 0; u < n; ++u) b[static_cast<size_t>(u)] = u;
    std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
    run_team(2 * kPhases, [&](ThreadTeam& team) {
      for (int p = 0; p < kPhases; ++p) {
        team.for_each(n, [&](int64_t u) {
          a[static_cast<size_t>(u)] = b[static_cast<size_t>(u)] + p;
          runs[static_cast<size_t>(u)].fetch_add(1);
        });
        team.for_each(n, [&](int64_t u) { b[static_cast<size_t>(u)] = a[static_cast<size_t>(n - 1 - u)]; });
      }
    });
    // Serial replay.
    std::vector<int64_t> ea(static_cast<size_t>(n)), eb(static_cast<size_t>(n));
    for (int64_t u = 0; u < n; ++u) eb[static_cast<size_t>(u)] = u;
    for (int p = 0; p < kPhases; ++p) {
      for (int64_t u = 0; u < n; ++u) ea[static_cast<size_t>(u)] = eb[static_cast<size_t>(u)] + p;
      for (int64_t u = 0; u < n; ++u) eb[static_cast<size_t>(u)] = ea[static_cast<size_t>(n - 1 - u)];
    }
    EXPECT_EQ(b, eb) << "n=" << n;
    for (int64_t u = 0; u < n; ++u) EXPECT_EQ(runs[static_cast<size_t>(u)].load(), kPhases) << "unit " << u;
  }
}

TEST_P(ThreadTeamThreads, TeamSizeAndRanks) {
  std::vector<std::atomic<int>> seen(static_cast<size_t>(GetParam()));
  std::atomic<int> size{0};
  run_team(1, [&](ThreadTeam& team) {
    size = team.size();
    seen[static_cast<size_t>(team.rank())].fetch_add(1);
    team.for_each(0, [](int64_t) {});
  });
  EXPECT_EQ(size.load(), GetParam());
  for (int r = 0; r < GetParam(); ++r) EXPECT_EQ(seen[static_cast<size_t>(r)].load(), 1) << "rank " << r;
}

TEST_P(ThreadTeamThreads, UnitErrorIsRethrownAfterEveryUnitRan) {
  std::atomic<int> ran{0};
  try {
    run_team(2, [&](ThreadTeam& team) {
      team.for_each(50, [&](int64_t u) {
        ran.fetch_add(1);
        if (u == 7) fail("unit ", u, " failed");
      });
      team.for_each(10, [&](int64_t) { ran.fetch_add(1); });
    });
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unit 7 failed"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ran.load(), 60);
}

TEST_P(ThreadTeamThreads, TooManyPhasesIsAnError) {
  int calls = 0;
  try {
    run_team(2, [&](ThreadTeam& team) {
      for (int p = 0; p < 4; ++p) team.for_each(3, [&](int64_t) {
        if (team.rank() == 0) ++calls;
      });
    });
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_phases = 2"), std::string::npos) << e.what();
  }
  EXPECT_LE(calls, 6);
  EXPECT_THROW(run_team(-1, [](ThreadTeam&) {}), Error);
}

INSTANTIATE_TEST_SUITE_P(Threads, ThreadTeamThreads, ::testing::Values(1, 2, 3));

TEST(ThreadTeam, NestedInsideParallelForRunsAsATeamOfOne) {
  set_num_threads(2);
  std::vector<int> sizes(2, 0);
  parallel_for(2, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      run_team(1, [&](ThreadTeam& team) {
        sizes[static_cast<size_t>(i)] = team.size();
        team.for_each(5, [](int64_t) {});
      });
    }
  });
  EXPECT_EQ(sizes, (std::vector<int>{1, 1}));
}

}  // namespace
}  // namespace indexshare

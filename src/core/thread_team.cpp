#include "core/thread_team.h"

#include <thread>

#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare {
namespace {

// Spin iterations before a waiting thread starts yielding its CPU.
constexpr int kSpinsBeforeYield = 2048;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// A phase slot that absorbs the calls past max_phases: its units are all "claimed", so such a
// call runs nothing and returns at once (the error is reported after the body).
ThreadTeam::Phase* overflow_phase() {
  static ThreadTeam::Phase p;
  p.claimed.store(INT64_MAX / 2, std::memory_order_relaxed);
  p.done.store(INT64_MAX / 2, std::memory_order_relaxed);
  return &p;
}

}  // namespace

void ThreadTeam::keep_error() {
  std::lock_guard<std::mutex> lock(shared_->error_mu);
  if (!shared_->error) shared_->error = std::current_exception();
}

ThreadTeam::Phase& ThreadTeam::next_phase() {
  const int64_t p = phase_++;
  if (p < shared_->max_phases) return shared_->phases[static_cast<size_t>(p)];
  {
    std::lock_guard<std::mutex> lock(shared_->error_mu);
    if (!shared_->error) {
      try {
        fail("run_team: the body ran more than max_phases = ", shared_->max_phases, " phases");
      } catch (...) {
        shared_->error = std::current_exception();
      }
    }
  }
  return *overflow_phase();
}

void ThreadTeam::wait_done(Phase& ph, int64_t n) {
  int spins = 0;
  while (ph.done.load(std::memory_order_acquire) < n) {
    if (spins < kSpinsBeforeYield) {
      ++spins;
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

void run_team(int64_t max_phases, const std::function<void(ThreadTeam&)>& body) {
  IS_CHECK(max_phases >= 0, "run_team: max_phases must be >= 0, got ", max_phases);
  const int n = num_threads();
  ThreadTeam::Shared shared;
  shared.size = n;
  shared.max_phases = max_phases;
  shared.phases = std::make_unique<ThreadTeam::Phase[]>(static_cast<size_t>(max_phases));
  parallel_for(n, 1, [&](int64_t b, int64_t e) {
    if (e - b != 1 || n == 1) {
      // parallel_for ran inline (nested call or one thread): a team of one.
      shared.size = 1;
      ThreadTeam team(&shared, 0);
      body(team);
      return;
    }
    ThreadTeam team(&shared, static_cast<int>(b));
    body(team);
  });
  if (shared.error) std::rethrow_exception(shared.error);
}

}  // namespace indexshare

// A team of threads that runs one body together and steps through phases of it: the pattern of
// a model forward, where each op is short (tens of microseconds in decode) and waking the pool
// once per op would cost more than the op.
//
//   run_team(phases, [&](ThreadTeam& team) {
//     for (int l = 0; l < layers; ++l) {
//       team.for_each(units, [&](int64_t u) { ... });  // one phase
//       team.for_each(...);                             // the next one
//     }
//   });
//
// Every thread of the team runs the body and must call for_each() the same number of times
// with the same unit counts (control flow must not depend on which thread runs it). Units are
// claimed one at a time from a per-phase counter, and a phase ends when all of its units are
// *complete*, not when all threads have arrived: a thread that the OS has descheduled holds up
// the others only while it holds an unfinished unit; when it comes back it finds the finished
// phases empty and catches up. A unit's result must not depend on the thread that runs it
// (then results are bitwise identical for any thread count).
//
// Waiting spins briefly, then yields the CPU, so an oversubscribed machine still makes
// progress. An exception thrown by a unit is kept (the first one wins), the remaining units
// still run, and run_team() rethrows it on the calling thread after the body has finished.
// The body itself (outside for_each) must not throw.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>

namespace indexshare {

class ThreadTeam {
 public:
  // Per-phase counters, one cache line each.
  struct alignas(64) Phase {
    std::atomic<int64_t> claimed{0};
    std::atomic<int64_t> done{0};
  };
  // Shared by the threads of one run_team call.
  struct Shared {
    int size = 1;
    int64_t max_phases = 0;
    std::unique_ptr<Phase[]> phases;
    std::mutex error_mu;
    std::exception_ptr error;
  };

  ThreadTeam(Shared* shared, int rank) : shared_(shared), rank_(rank) {}

  int size() const { return shared_->size; }
  int rank() const { return rank_; }

  // Runs f(u) for every u in [0, n) across the team; returns when all of them are complete.
  template <class F>
  void for_each(int64_t n, F&& f) {
    Phase& ph = next_phase();
    int64_t mine = 0;
    for (;;) {
      const int64_t u = ph.claimed.fetch_add(1, std::memory_order_relaxed);
      if (u >= n) break;
      try {
        f(u);
      } catch (...) {
        keep_error();
      }
      ++mine;
    }
    if (mine > 0) ph.done.fetch_add(mine, std::memory_order_acq_rel);
    wait_done(ph, n);
  }

 private:
  Phase& next_phase();
  void wait_done(Phase& ph, int64_t n);
  void keep_error();
  Shared* shared_;
  int rank_;
  int64_t phase_ = 0;
};

// Runs body on every thread of the pool (num_threads(), or one thread when called from inside
// a parallel_for or run_team), each with its own ThreadTeam view; the body may run at most
// max_phases for_each calls (Error otherwise, from the first one past it). Rethrows the
// first exception of a unit.
void run_team(int64_t max_phases, const std::function<void(ThreadTeam&)>& body);

}  // namespace indexshare

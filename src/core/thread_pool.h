// A small persistent thread pool with a static partition of the index range.
//
// Determinism rule: parallel_for hands out contiguous [begin, end) ranges; callers make each
// index's result independent of which thread computes it (no cross-index reductions inside),
// so results are bitwise identical for any thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace indexshare {

// Number of worker threads used by parallel_for (default: hardware concurrency).
int num_threads();
// Sets the thread count (>= 1). Not to be called while a parallel_for is running.
void set_num_threads(int n);

// Calls fn(begin, end) on disjoint sub-ranges covering [0, n). Ranges are at least `grain`
// long (except the last). Runs inline when n is small or one thread is configured.
// Exceptions thrown by fn are rethrown on the calling thread (the first one wins).
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace indexshare

// Streaming indexer + top-k: identical to topk(indexer_scores()) (same sets, same order) on
// random inputs with and without ties, across tiles, row blocks, key splits, threads and SIMD;
// its scratch figure, checked against the documented formula and against what it allocates.
#include "ops/indexer_topk.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <limits>
#include <new>
#include <vector>

#include "indexer_test_util.h"
#include "ops/indexer.h"
#include "ops/topk.h"
#include "ref/indexer_ref.h"

// ---- A counting global allocator (this test binary only) ------------------------------------
// Not under ThreadSanitizer, whose runtime defines the global allocator itself (the two would
// collide at link time); AllocatesWhatItSays is skipped there, the sets are still checked.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define INDEXSHARE_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define INDEXSHARE_TSAN 1
#endif
// Counts the bytes requested through operator new while g_counting is set, so a test can check
// that indexer_topk allocates what indexer_topk_scratch_bytes says.
namespace {
std::atomic<bool> g_counting{false};
std::atomic<size_t> g_bytes{0}, g_largest{0};

#ifndef INDEXSHARE_TSAN
void note(size_t n) {
  if (!g_counting.load(std::memory_order_relaxed)) return;
  g_bytes += n;
  size_t prev = g_largest.load();
  while (n > prev && !g_largest.compare_exchange_weak(prev, n)) {
  }
}

void* try_alloc(size_t n, size_t align) noexcept {
  note(n);
  return align <= alignof(std::max_align_t)
             ? std::malloc(n == 0 ? 1 : n)
             : std::aligned_alloc(align, (n + align - 1) / align * align + (n == 0 ? align : 0));
}

void* alloc(size_t n, size_t align) {
  void* p = try_alloc(n, align);
  if (!p) throw std::bad_alloc();
  return p;
}
#endif
}  // namespace

// Every form of the global operator new and delete is replaced, the nothrow ones included: memory
// the standard library takes with operator new(size, nothrow) (std::stable_sort's buffer) must be
// released by the matching replaced delete, or AddressSanitizer sees malloc/free mixed with new.
#ifndef INDEXSHARE_TSAN
void* operator new(size_t n) { return alloc(n, 0); }
void* operator new[](size_t n) { return alloc(n, 0); }
void* operator new(size_t n, std::align_val_t a) { return alloc(n, static_cast<size_t>(a)); }
void* operator new[](size_t n, std::align_val_t a) { return alloc(n, static_cast<size_t>(a)); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return try_alloc(n, 0); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return try_alloc(n, 0); }
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return try_alloc(n, static_cast<size_t>(a));
}
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return try_alloc(n, static_cast<size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
#endif

namespace indexshare {
namespace {

using test::IndexerInputs;
using test::make_inputs;
using test::Values;

struct Sel {
  std::vector<int32_t> idx, count;
};

Sel two_step(const ops::IndexerParams& p, int k) {
  std::vector<float> scores(static_cast<size_t>(p.T * p.L));
  ops::indexer_scores(p, scores.data());
  Sel r;
  r.idx.assign(static_cast<size_t>(p.T * k), 99);
  r.count.assign(static_cast<size_t>(p.T), 99);
  ops::TopkParams tp;
  tp.scores = scores.data();
  tp.T = p.T;
  tp.L = p.L;
  tp.k = k;
  tp.indices = r.idx.data();
  tp.count = r.count.data();
  ops::topk(tp);
  return r;
}

Sel streaming(const ops::IndexerParams& p, const ops::IndexerTopkOptions& o) {
  Sel r;
  r.idx.assign(static_cast<size_t>(p.T * o.k), 99);
  r.count.assign(static_cast<size_t>(p.T), 99);
  ops::indexer_topk(p, o, r.idx.data(), r.count.data());
  return r;
}

struct Case {
  int64_t T, L;
  int H, D;
  int64_t q_start;
  int k;
  int64_t key_tile, row_block;
};

const Case kCases[] = {
    {1, 3000, 8, 32, 2999, 100, 256, 16},  // decode: one row, keys split across threads
    {3, 1000, 4, 16, 997, 10, 64, 1},      // few rows, small tiles: many compactions
    {16, 777, 6, 20, 761, 50, 100, 5},     // decode-like block, odd tile sizes
    {40, 40, 5, 8, 0, 8, 7, 3},            // causal prefill from 0
    {12, 300, 3, 12, 250, 400, 128, 4},    // k > L
    {20, 100, 7, 9, 95, 30, 33, 6},        // L < q_start + T: keys not yet cached
    {9, 500, 4, 16, 100, 64, 4096, 16},    // L > q_start + T: keys past the block are masked
};

TEST(IndexerTopk, EqualsTopkOfIndexerScores) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      for (const Case& c : kCases) {
        for (Values values : {Values::kGaussian, Values::kExact}) {
          const uint32_t seed = test::fresh_seed();
          SCOPED_TRACE(testing::Message()
                       << "seed=" << seed << " simd=" << simd << " threads=" << threads
                       << " T=" << c.T << " L=" << c.L << " q_start=" << c.q_start << " k=" << c.k
                       << " tile=" << c.key_tile << " rb=" << c.row_block
                       << " exact=" << (values == Values::kExact));
          IndexerInputs in =
              make_inputs(c.T, c.L, c.H, c.D, c.q_start, seed, values, values == Values::kExact);
          const Sel want = two_step(in.p, c.k);
          const Sel got = streaming(in.p, {c.k, c.key_tile, c.row_block});
          EXPECT_EQ(got.idx, want.idx);
          EXPECT_EQ(got.count, want.count);
        }
      }
    }
  }
}

TEST(IndexerTopk, ExactDataMatchesFloat64ReferenceWithTies) {
  test::ModeGuard guard;
  for (bool simd : test::simd_modes()) {
    set_simd_enabled(simd);
    const uint32_t seed = test::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed=" << seed << " simd=" << simd);
    // Exact data: the fp32 scores equal the float64 ones, ties included (checked below).
    IndexerInputs in = make_inputs(10, 2000, 8, 16, 1990, seed, Values::kExact, true);
    ref::IndexerRefInput r{in.p.q, in.p.k, in.p.weights, in.p.q_scale, in.p.k_scale, in.p.scale,
                           in.p.T, in.p.L, in.p.H,       in.p.D,       in.p.q_start};
    const ref::IndexerRefOut scores = ref::indexer_scores(r);
    const int k = 300;
    const ref::TopkRefOut want = ref::topk(scores.score.data(), in.p.T, in.p.L, in.p.L, k);
    int64_t tied = 0;  // the data must actually hold ties at the selection boundary
    for (int64_t t = 0; t < in.p.T; ++t) {
      const double kth = scores.score[static_cast<size_t>(
          t * in.p.L + want.idx[static_cast<size_t>(t * k + k - 1)])];
      for (int64_t s = 0; s < in.p.L; ++s)
        tied += scores.score[static_cast<size_t>(t * in.p.L + s)] == kth;
    }
    EXPECT_GT(tied, in.p.T);  // each row counts its k-th itself; more means real ties
    const Sel got = streaming(in.p, {k, 512, 4});
    EXPECT_EQ(got.idx, want.idx);
    EXPECT_EQ(got.count, want.count);
  }
}

TEST(IndexerTopk, EdgeSizes) {
  IndexerInputs in = make_inputs(4, 50, 2, 8, 46, 3);
  Sel r = streaming(in.p, {0, 16, 2});  // k = 0
  EXPECT_TRUE(r.idx.empty());
  EXPECT_EQ(r.count, std::vector<int32_t>(4, 0));
  IndexerInputs empty_keys = make_inputs(4, 0, 2, 8, 0, 3);
  r = streaming(empty_keys.p, {3, 16, 2});  // L = 0
  EXPECT_EQ(r.idx, std::vector<int32_t>(12, -1));
  EXPECT_EQ(r.count, std::vector<int32_t>(4, 0));
  IndexerInputs no_rows = make_inputs(0, 50, 2, 8, 0, 3);
  EXPECT_NO_THROW(ops::indexer_topk(no_rows.p, {5, 16, 2}, nullptr, nullptr));
  // k > visible keys: row t has q_start + t + 1 = 47 + t candidates.
  r = streaming(in.p, {60, 16, 2});
  for (int64_t t = 0; t < 4; ++t)
    EXPECT_EQ(r.count[static_cast<size_t>(t)], std::min<int64_t>(50, 47 + t));
  ops::indexer_topk(in.p, {5, 16, 2}, r.idx.data(), nullptr);  // count is nullable
}

TEST(IndexerTopk, NanIsAnErrorNamingTheLowestRow) {
  test::ModeGuard guard;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (bool simd : test::simd_modes()) {
      set_simd_enabled(simd);
      IndexerInputs in = make_inputs(30, 400, 4, 16, 350, 5);
      in.k[static_cast<size_t>(370 * 16)] = std::nanf("");  // visible from row 20 on
      test::expect_error([&] { streaming(in.p, {10, 64, 4}); }, "row 20, position 370");
      in.k[static_cast<size_t>(370 * 16)] = 0.0f;
      in.k[static_cast<size_t>(390 * 16)] = std::nanf("");  // masked for every row
      EXPECT_NO_THROW(streaming(in.p, {10, 64, 4}));
      in.w[static_cast<size_t>(7 * 4 + 1)] = std::nanf("");
      test::expect_error([&] { streaming(in.p, {10, 64, 4}); }, "row 7,");
      // Decode: one row whose keys are split across threads; the NaN sits in the second half.
      IndexerInputs one = make_inputs(1, 3000, 4, 16, 2999, 6);
      one.k[static_cast<size_t>(2500 * 16 + 9)] = std::nanf("");
      test::expect_error([&] { streaming(one.p, {10, 256, 16}); }, "row 0, position 2500");
    }
  }
}

// The documented formula (indexer_topk.h), written out independently.
size_t formula(const ops::IndexerParams& p, const ops::IndexerTopkOptions& o, int threads) {
  if (p.T == 0 || p.L == 0 || o.k == 0) return 0;
  auto a64 = [](size_t b) { return (b + 63) / 64 * 64; };
  const int64_t rb = std::min(o.row_block, p.T), kt = std::min(o.key_tile, p.L);
  const int64_t nrb = (p.T + rb - 1) / rb;
  const int64_t splits =
      nrb >= threads ? 1 : std::min<int64_t>((threads + nrb - 1) / nrb, (p.L + kt - 1) / kt);
  const int64_t workers = std::min<int64_t>(threads, nrb * splits);
  const int64_t cap = std::min<int64_t>(2 * int64_t{o.k}, p.L);
  const auto slots = static_cast<size_t>(p.T * splits);
  return a64(slots * static_cast<size_t>(cap) * 8) + a64(slots * 8) + a64(slots * 4) +
         static_cast<size_t>(workers) *
             (a64(static_cast<size_t>(rb * kt) * 4) +
              a64(static_cast<size_t>(ops::indexer_tile_workspace_floats(p, rb)) * 4) +
              a64(static_cast<size_t>(std::min<int64_t>(o.k, p.L)) * 8));
}

TEST(IndexerTopk, ScratchFollowsTheFormulaAndStaysSmall) {
  ops::IndexerParams p;
  p.H = 32;
  p.D = 128;
  for (int threads : {1, 2, 8}) {
    for (int64_t T : {1, 5, 64, 300}) {
      for (int64_t L : {100, 70000}) {
        for (int k : {1, 64, 2048}) {
          p.T = T;
          p.L = L;
          const ops::IndexerTopkOptions o{k, 4096, 16};
          SCOPED_TRACE(testing::Message()
                       << "threads=" << threads << " T=" << T << " L=" << L << " k=" << k);
          EXPECT_EQ(ops::indexer_topk_scratch_bytes(p, o, threads), formula(p, o, threads));
        }
      }
    }
  }
  // O(T * k + row_block * key_tile): far below the [T, L] score matrix.
  p.T = 64;
  p.L = 1 << 20;
  const size_t bytes = ops::indexer_topk_scratch_bytes(p, {64, 4096, 16}, 2);
  EXPECT_LT(bytes, static_cast<size_t>(p.T * p.L * 4) / 200) << bytes;
  EXPECT_LT(bytes, size_t{2} << 20) << bytes;
  EXPECT_EQ(ops::indexer_topk_scratch_bytes(p, {0, 4096, 16}, 2), 0u);
}

TEST(IndexerTopk, AllocatesWhatItSays) {
#ifdef INDEXSHARE_TSAN
  GTEST_SKIP() << "the counting allocator is not built under ThreadSanitizer";
#endif
  test::ModeGuard guard;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Case& c : {kCases[0], kCases[2], kCases[3]}) {
      SCOPED_TRACE(testing::Message() << "threads=" << threads << " T=" << c.T << " L=" << c.L);
      IndexerInputs in = make_inputs(c.T, c.L, c.H, c.D, c.q_start, 11);
      const ops::IndexerTopkOptions o{c.k, c.key_tile, c.row_block};
      const size_t said = ops::indexer_topk_scratch_bytes(in.p, o, threads);
      std::vector<int32_t> idx(static_cast<size_t>(c.T * c.k)), count(static_cast<size_t>(c.T));
      g_bytes = 0;
      g_largest = 0;
      g_counting = true;
      ops::indexer_topk(in.p, o, idx.data(), count.data());
      g_counting = false;
      EXPECT_EQ(g_largest.load(), said);
      // Besides the scratch block: only the thread pool's small task wrappers.
      EXPECT_GE(g_bytes.load(), said);
      EXPECT_LE(g_bytes.load(), said + 512);
    }
  }
}

TEST(IndexerTopk, BadInputNamesTheField) {
  IndexerInputs in = make_inputs(4, 50, 2, 8, 46, 3);
  std::vector<int32_t> idx(40);
  auto run = [&](ops::IndexerParams p, ops::IndexerTopkOptions o, int32_t* out) {
    return [=] { ops::indexer_topk(p, o, out, nullptr); };
  };
  test::expect_error(run(in.p, {-1, 16, 2}, idx.data()), "k = -1");
  test::expect_error(run(in.p, {5, 0, 2}, idx.data()), "key_tile = 0");
  test::expect_error(run(in.p, {5, 16, -3}, idx.data()), "row_block = -3");
  test::expect_error(run(in.p, {5, 16, 2}, nullptr), "indices is null");
  ops::IndexerParams bad = in.p;
  bad.q_start = -5;
  test::expect_error(run(bad, {5, 16, 2}, idx.data()), "q_start");
  bad = in.p;
  bad.weights = nullptr;
  test::expect_error(run(bad, {5, 16, 2}, idx.data()), "weights is null");
  ops::IndexerParams huge;
  huge.T = 1;
  huge.H = 1;
  huge.D = 1;
  huge.L = int64_t{1} << 31;
  test::expect_error([&] { ops::indexer_topk_scratch_bytes(huge, {5, 16, 2}, 1); }, "int32");
  test::expect_error([&] { ops::indexer_topk_scratch_bytes(in.p, {5, 16, 2}, 0); }, "threads");
}

}  // namespace
}  // namespace indexshare

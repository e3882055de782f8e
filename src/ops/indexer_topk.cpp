// Streaming indexer + top-k: score a tile, merge it into running per-row candidate buffers.
//
// Why the result equals topk(indexer_scores(p)): the tile scores are bitwise the full-matrix
// scores (indexer.h), and candidates are ranked by the same (score, position) composite as
// topk (topk_select.h). Within one (row, split) keys arrive in increasing position, so once
// the buffer has been cut back to its best k, with k-th best score theta, a later key can only
// enter the final top-k of that range if its score is strictly greater than theta (an equal
// score loses the tie to the earlier position). Every (row, split) therefore keeps a superset
// of its own top-k; the top-k of a row lies in the union of its splits' top-k.
#include "ops/indexer_topk.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/topk_select.h"

namespace indexshare::ops {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

size_t align64(size_t bytes) { return (bytes + 63) / 64 * 64; }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Plan {
  int64_t rb = 0, kt = 0, nrb = 0, splits = 1, items = 0, workers = 0, cap = 0, ws_floats = 0;
  size_t cand_bytes = 0, ncand_bytes = 0, theta_bytes = 0, tile_bytes = 0, ws_bytes = 0,
         sort_bytes = 0;
  size_t total = 0;
};

void check_sizes(const IndexerParams& p, const IndexerTopkOptions& o) {
  IS_CHECK(p.T >= 0, "indexer_topk: T = ", p.T, " is negative");
  IS_CHECK(p.L >= 0, "indexer_topk: L = ", p.L, " is negative");
  IS_CHECK(p.H >= 1, "indexer_topk: H = ", p.H, " must be >= 1");
  IS_CHECK(p.D >= 1, "indexer_topk: D = ", p.D, " must be >= 1");
  IS_CHECK(p.L <= std::numeric_limits<int32_t>::max(), "indexer_topk: L = ", p.L,
           " exceeds the int32 position range");
  IS_CHECK(o.k >= 0, "indexer_topk: k = ", o.k, " is negative");
  IS_CHECK(o.key_tile >= 1, "indexer_topk: key_tile = ", o.key_tile, " must be >= 1");
  IS_CHECK(o.row_block >= 1, "indexer_topk: row_block = ", o.row_block, " must be >= 1");
}

Plan make_plan(const IndexerParams& p, const IndexerTopkOptions& o, int threads) {
  Plan pl;
  if (p.T == 0 || p.L == 0 || o.k == 0) return pl;
  pl.rb = std::min(o.row_block, p.T);
  pl.kt = std::min(o.key_tile, p.L);
  pl.nrb = ceil_div(p.T, pl.rb);
  if (pl.nrb < threads) pl.splits = std::min(ceil_div(threads, pl.nrb), ceil_div(p.L, pl.kt));
  pl.items = pl.nrb * pl.splits;
  pl.workers = std::min<int64_t>(threads, pl.items);
  pl.cap = std::min<int64_t>(2 * static_cast<int64_t>(o.k), p.L);
  pl.ws_floats = indexer_tile_workspace_floats(p, pl.rb);
  const double slots = static_cast<double>(p.T) * static_cast<double>(pl.splits);
  const double approx =
      slots * (static_cast<double>(pl.cap) * 8 + 12) +
      static_cast<double>(pl.workers) *
          (static_cast<double>(pl.rb * pl.kt + pl.ws_floats) * 4 + static_cast<double>(pl.cap) * 8);
  IS_CHECK(approx < 0x1p60, "indexer_topk: scratch of ~", approx, " bytes is too large (T = ", p.T,
           ", k = ", o.k, ", row_block * key_tile = ", pl.rb * pl.kt, ")");
  const auto rows = static_cast<size_t>(p.T * pl.splits);
  pl.cand_bytes = align64(rows * static_cast<size_t>(pl.cap) * sizeof(uint64_t));
  pl.ncand_bytes = align64(rows * sizeof(int64_t));
  pl.theta_bytes = align64(rows * sizeof(float));
  pl.tile_bytes = align64(static_cast<size_t>(pl.rb * pl.kt) * sizeof(float));
  pl.ws_bytes = align64(static_cast<size_t>(pl.ws_floats) * sizeof(float));
  pl.sort_bytes = align64(static_cast<size_t>(std::min<int64_t>(o.k, p.L)) * sizeof(uint64_t));
  pl.total = pl.cand_bytes + pl.ncand_bytes + pl.theta_bytes +
             static_cast<size_t>(pl.workers) * (pl.tile_bytes + pl.ws_bytes + pl.sort_bytes);
  return pl;
}

// Cuts a full buffer back to its best k and raises the threshold to the k-th best score.
inline void compact(uint64_t* cand, int64_t& n, int64_t k, float& theta) {
  if (n <= k) return;  // cap <= k only when every key fits: nothing to cut
  n = detail::keep_largest(cand, n, k);
  theta = detail::composite_score(cand[k - 1]);
}

// Merges scores x[0, n) at positions pos0 + i into one (row, split) state. Returns the index
// of the first NaN, or -1.
int64_t merge_scalar(const float* x, int64_t n, int64_t pos0, uint64_t* cand, int64_t& cnt,
                     float& theta, int64_t cap, int64_t k) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (std::isnan(v)) return i;
    if (v > theta) {
      cand[cnt++] = detail::make_composite(v, pos0 + i);
      if (cnt == cap) compact(cand, cnt, k, theta);
    }
  }
  return -1;
}

__attribute__((target("avx2,fma"))) int64_t merge_avx2(const float* x, int64_t n, int64_t pos0,
                                                       uint64_t* cand, int64_t& cnt, float& theta,
                                                       int64_t cap, int64_t k) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0) {
      return i + merge_scalar(x + i, 8, pos0 + i, cand, cnt, theta, cap, k);
    }
    unsigned bits = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(theta), _CMP_GT_OQ)));
    while (bits != 0) {
      const int l = __builtin_ctz(bits);
      bits &= bits - 1;
      const float s = x[i + l];
      if (s > theta) {  // theta may have risen within this vector
        cand[cnt++] = detail::make_composite(s, pos0 + i + l);
        if (cnt == cap) compact(cand, cnt, k, theta);
      }
    }
  }
  const int64_t r = merge_scalar(x + i, n - i, pos0 + i, cand, cnt, theta, cap, k);
  return r < 0 ? -1 : i + r;
}

struct Ctx {
  const IndexerParams* p = nullptr;
  const Plan* pl = nullptr;
  int64_t k = 0;
  bool simd = false;
  uint64_t* cand = nullptr;  // [T * splits, cap]
  int64_t* ncand = nullptr;  // [T * splits]: candidates held, or -1 - pos of a NaN
  float* theta = nullptr;    // [T * splits]
  int32_t* indices = nullptr;
  int32_t* count = nullptr;
  std::byte* worker_base = nullptr;  // per worker: [score tile][tile workspace][sort scratch]

  size_t worker_bytes() const { return pl->tile_bytes + pl->ws_bytes + pl->sort_bytes; }
  float* tile(int64_t w) const {
    return reinterpret_cast<float*>(worker_base + static_cast<size_t>(w) * worker_bytes());
  }
  float* workspace(int64_t w) const {
    return reinterpret_cast<float*>(worker_base + static_cast<size_t>(w) * worker_bytes() +
                                    pl->tile_bytes);
  }
  uint64_t* sort_tmp(int64_t w) const {
    return reinterpret_cast<uint64_t*>(worker_base + static_cast<size_t>(w) * worker_bytes() +
                                       pl->tile_bytes + pl->ws_bytes);
  }
};

void run_item(const Ctx& c, int64_t item, int64_t worker) {
  float* tile = c.tile(worker);
  float* ws = c.workspace(worker);
  const IndexerParams& p = *c.p;
  const Plan& pl = *c.pl;
  const int64_t j = item % pl.splits;
  const int64_t t0 = item / pl.splits * pl.rb, t1 = std::min(p.T, t0 + pl.rb);
  const int64_t vis = std::min(p.L, p.q_start + t1);  // keys seen by any row of the block
  const int64_t chunk = ceil_div(vis, pl.splits);
  const int64_t a = std::min(vis, j * chunk), b = std::min(vis, a + chunk);
  for (int64_t t = t0; t < t1; ++t) {
    c.ncand[t * pl.splits + j] = 0;
    c.theta[t * pl.splits + j] = kNegInf;
  }
  for (int64_t s0 = a; s0 < b; s0 += pl.kt) {
    const int64_t s1 = std::min(b, s0 + pl.kt);
    indexer_scores_tile(p, t0, t1, s0, s1, tile, pl.kt, ws);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t slot = t * pl.splits + j;
      const int64_t n = std::min(s1, p.q_start + t + 1) - s0;
      if (n <= 0 || c.ncand[slot] < 0) continue;
      uint64_t* cand = c.cand + slot * pl.cap;
      const float* row = tile + (t - t0) * pl.kt;
      const int64_t nan_at =
          c.simd ? merge_avx2(row, n, s0, cand, c.ncand[slot], c.theta[slot], pl.cap, c.k)
                 : merge_scalar(row, n, s0, cand, c.ncand[slot], c.theta[slot], pl.cap, c.k);
      if (nan_at >= 0) c.ncand[slot] = -1 - (s0 + nan_at);
    }
  }
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t slot = t * pl.splits + j;
    if (c.ncand[slot] < 0) continue;
    uint64_t* cand = c.cand + slot * pl.cap;
    if (pl.splits == 1) {
      const int64_t m =
          detail::write_topk(cand, c.ncand[slot], c.k, c.indices + t * c.k, c.sort_tmp(worker));
      if (c.count) c.count[t] = static_cast<int32_t>(m);
    } else {
      c.ncand[slot] = detail::keep_largest(cand, c.ncand[slot], c.k);
    }
  }
}

// Joins the splits' kept candidates of row t (each at most k) and writes the row's top-k.
void merge_splits(const Ctx& c, int64_t t, int64_t worker) {
  const Plan& pl = *c.pl;
  uint64_t* region = c.cand + t * pl.splits * pl.cap;
  int64_t total = 0;
  for (int64_t j = 0; j < pl.splits; ++j) {
    const int64_t n = c.ncand[t * pl.splits + j];
    std::memmove(region + total, region + j * pl.cap, static_cast<size_t>(n) * sizeof(uint64_t));
    total += n;
  }
  const int64_t m = detail::write_topk(region, total, c.k, c.indices + t * c.k, c.sort_tmp(worker));
  if (c.count) c.count[t] = static_cast<int32_t>(m);
}

struct FreeAligned {
  void operator()(std::byte* ptr) const { ::operator delete (ptr, std::align_val_t{64}); }
};

}  // namespace

size_t indexer_topk_scratch_bytes(const IndexerParams& p, const IndexerTopkOptions& o,
                                  int threads) {
  check_sizes(p, o);
  IS_CHECK(threads >= 1, "indexer_topk_scratch_bytes: threads = ", threads, " must be >= 1");
  return make_plan(p, o, threads).total;
}

void indexer_topk(const IndexerParams& p, const IndexerTopkOptions& o, int32_t* indices,
                  int32_t* count) {
  validate(p);
  check_sizes(p, o);
  IS_CHECK(indices != nullptr || p.T == 0 || o.k == 0, "indexer_topk: indices is null (T = ", p.T,
           ", k = ", o.k, ")");
  const int64_t T = p.T, k = o.k;
  if (T == 0) return;
  if (k == 0 || p.L == 0) {
    std::fill(indices, indices + T * k, -1);
    if (count) std::fill(count, count + T, 0);
    return;
  }
  const Plan pl = make_plan(p, o, num_threads());
  std::unique_ptr<std::byte, FreeAligned> scratch(
      static_cast<std::byte*>(::operator new (pl.total, std::align_val_t{64})));
  std::byte* base = scratch.get();
  Ctx c;
  c.p = &p;
  c.pl = &pl;
  c.k = k;
  c.simd = use_avx2();
  c.cand = reinterpret_cast<uint64_t*>(base);
  c.ncand = reinterpret_cast<int64_t*>(base + pl.cand_bytes);
  c.theta = reinterpret_cast<float*>(base + pl.cand_bytes + pl.ncand_bytes);
  c.indices = indices;
  c.count = count;
  c.worker_base = base + pl.cand_bytes + pl.ncand_bytes + pl.theta_bytes;
  // The lambdas capture one pointer so that std::function does not allocate.
  const Ctx* cp = &c;
  parallel_for(pl.workers, 1, [cp](int64_t w0, int64_t w1) {
    const Plan& q = *cp->pl;
    for (int64_t w = w0; w < w1; ++w)
      for (int64_t item = w; item < q.items; item += q.workers) run_item(*cp, item, w);
  });
  for (int64_t slot = 0; slot < T * pl.splits; ++slot) {
    IS_CHECK(c.ncand[slot] >= 0, "indexer_topk: NaN score at row ", slot / pl.splits, ", position ",
             -1 - c.ncand[slot], " (NaN in q, k, weights or scales)");
  }
  if (pl.splits == 1) return;
  parallel_for(pl.workers, 1, [cp](int64_t w0, int64_t w1) {
    const int64_t T = cp->p->T, workers = cp->pl->workers;
    for (int64_t w = w0; w < w1; ++w)
      for (int64_t t = T * w / workers; t < T * (w + 1) / workers; ++t) merge_splits(*cp, t, w);
  });
}

}  // namespace indexshare::ops

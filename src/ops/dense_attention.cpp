#include "ops/dense_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/attention_kernels.h"

namespace indexshare::ops {

void validate(const DenseAttentionParams& p) {
  constexpr const char* fn = "dense_attention";
  IS_CHECK(p.T >= 0, fn, ": T (query rows) must be >= 0, got ", p.T);
  IS_CHECK(p.L >= 0, fn, ": L (cached tokens) must be >= 0, got ", p.L);
  IS_CHECK(p.H > 0, fn, ": H (query heads) must be > 0, got ", p.H);
  IS_CHECK(p.H_kv > 0, fn, ": H_kv (KV heads) must be > 0, got ", p.H_kv);
  IS_CHECK(p.Dk > 0, fn, ": Dk (key head dim) must be > 0, got ", p.Dk);
  IS_CHECK(p.Dv > 0, fn, ": Dv (value head dim) must be > 0, got ", p.Dv);
  IS_CHECK(p.H % p.H_kv == 0, fn, ": H=", p.H, " is not a multiple of H_kv=", p.H_kv);
  IS_CHECK(p.q_start >= 0, fn, ": q_start must be >= 0, got ", p.q_start);
  IS_CHECK(p.q_start <= std::numeric_limits<int64_t>::max() - p.T, fn, ": q_start=", p.q_start,
           " + T=", p.T, " overflows");
  IS_CHECK(std::isfinite(p.scale), fn, ": scale must be finite, got ", p.scale);
  if (p.T > 0) {
    IS_CHECK(p.q != nullptr, fn, ": q is null");
    IS_CHECK(p.out != nullptr, fn, ": out is null");
    if (p.L > 0) {
      detail::check_kv_pair(fn, p.k, p.v, p.k16, p.v16);
    }
  }
}

void dense_attention(const DenseAttentionParams& p) {
  validate(p);
  if (p.T == 0) return;
  const int group = p.H / p.H_kv;
  const int64_t threads = num_threads();
  // A unit is a tile of rows and a range of heads (all KV groups by default, so each key row
  // is fetched once for all of them). Several rows share each pass over the keys (about 16
  // queries per group), fewer when that would leave threads idle. Tiling never changes a
  // query's result (attention_kernels.h).
  int64_t rows = std::clamp<int64_t>(16 / group, 1, 16);
  while (rows > 1 && (p.T + rows - 1) / rows < 2 * threads) rows = (rows + 1) / 2;
  const int64_t tiles = (p.T + rows - 1) / rows;
  const int part = detail::head_part_size(tiles, p.H, group);
  const int parts = (p.H + part - 1) / part;

  parallel_for(tiles * parts, 1, [&](int64_t u0, int64_t u1) {
    std::vector<detail::AttnQuery> queries;
    for (int64_t u = u0; u < u1; ++u) {
      // Causal rows grow in cost; alternate short and long tiles so that the contiguous
      // ranges handed to the threads carry similar work.
      const int64_t x = u / parts;
      const int64_t tile = (x % 2 == 0) ? x / 2 : tiles - 1 - x / 2;
      const int h0 = static_cast<int>(u % parts) * part;
      const int h1 = std::min(p.H, h0 + part);
      const int64_t t0 = tile * rows;
      const int64_t t1 = std::min(p.T, t0 + rows);
      queries.clear();
      int64_t n_max = 0;
      // Group-major order: the queries of one KV group are consecutive.
      for (int g = h0 / group; g * group < h1; ++g) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t n_keys = std::min(p.L, p.q_start + t + 1);
          n_max = std::max(n_max, n_keys);
          for (int h = std::max(h0, g * group); h < std::min(h1, (g + 1) * group); ++h) {
            const int64_t th = t * p.H + h;
            detail::AttnQuery aq;
            aq.q = p.q + th * p.Dk;
            aq.out = p.out + th * p.Dv;
            aq.lse = p.lse ? p.lse + th : nullptr;
            aq.n_keys = n_keys;
            aq.group = g;
            queries.push_back(aq);
          }
        }
      }
      detail::AttnKeys keys;
      if (n_max > 0) {
        keys.k = p.k;
        keys.v = p.v;
        keys.k16 = p.k16;
        keys.v16 = p.v16;
      }
      keys.k_stride = int64_t{p.H_kv} * p.Dk;
      keys.v_stride = int64_t{p.H_kv} * p.Dv;
      keys.k_group = p.Dk;
      keys.v_group = p.Dv;
      keys.n = n_max;
      detail::attend_tile(queries.data(), static_cast<int>(queries.size()), keys, p.Dk, p.Dv,
                          p.scale);
    }
  });
}

}  // namespace indexshare::ops

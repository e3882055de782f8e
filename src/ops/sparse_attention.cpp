#include "ops/sparse_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/attention_kernels.h"

namespace indexshare::ops {
namespace {

void check_indices(const char* fn, const int32_t* indices, int64_t T, int K, int64_t L) {
  for (int64_t t = 0; t < T; ++t) {
    const int32_t* row = indices + t * K;
    for (int j = 0; j < K; ++j) {
      const int64_t s = row[j];
      IS_CHECK(s >= -1 && s < L, fn, ": indices[", t, ", ", j, "] = ", s, " is outside [-1, L=",
               L, ")");
    }
  }
}

void check_common(const char* fn, int64_t T, int64_t L, int H, int K, float scale,
                  const void* q, const void* out) {
  IS_CHECK(T >= 0, fn, ": T (query rows) must be >= 0, got ", T);
  IS_CHECK(L >= 0, fn, ": L (cached tokens) must be >= 0, got ", L);
  IS_CHECK(H > 0, fn, ": H (query heads) must be > 0, got ", H);
  IS_CHECK(K >= 0, fn, ": K (index slots per row) must be >= 0, got ", K);
  IS_CHECK(std::isfinite(scale), fn, ": scale must be finite, got ", scale);
  if (T > 0) {
    IS_CHECK(q != nullptr, fn, ": q is null");
    IS_CHECK(out != nullptr, fn, ": out is null");
  }
}

void check_index_rows(const char* fn, const int32_t* indices, int64_t T, int K, int64_t L) {
  if (T == 0 || K == 0) return;
  IS_CHECK(indices != nullptr, fn, ": indices is null");
  check_indices(fn, indices, T, K, L);
}

// Copies the valid slots of one index row, in slot order.
int compact_row(const int32_t* row, int K, std::vector<int32_t>& tokens) {
  tokens.resize(static_cast<size_t>(K));
  int n = 0;
  for (int j = 0; j < K; ++j) {
    if (row[j] >= 0) tokens[static_cast<size_t>(n++)] = row[j];
  }
  return n;
}

// Runs every (row, KV group, head part) of a sparse call: the queries of a part are heads
// [h_begin, h_end) of row t; `keys_for` fills the key list of a KV group.
struct SparseJob {
  const float* q;  // [T, H, Dqk]
  float* out;      // [T, H, Dv]
  float* lse;      // [T, H] nullable
  const int32_t* indices;  // [T, K]
  int64_t T;
  int H, groups, Dqk, Dv, K;
  float scale;
  const float* k;  // [L, groups, Dqk] key of token s, group g: k + s * k_stride + g * k_group
  const float* v;  // [L, groups, Dv] value likewise (the latent itself for MLA)
  int64_t k_stride, v_stride, k_group, v_group;
  const uint16_t* k16 = nullptr;  // [L, groups, Dqk] half keys instead of k (nullable)
  const uint16_t* v16 = nullptr;  // [L, groups, Dv] half values instead of v (nullable)
};

void run_sparse(const SparseJob& job) {
  if (job.T == 0) return;
  const int group = job.H / job.groups;
  // A unit is a row and a range of its heads (all KV groups by default: each gathered token
  // row is then read once for all of them).
  const int part = detail::head_part_size(job.T, job.H, group);
  const int parts = (job.H + part - 1) / part;
  parallel_for(job.T * parts, 1, [&](int64_t u0, int64_t u1) {
    std::vector<int32_t> tokens;
    std::vector<detail::AttnQuery> queries;
    int64_t row_loaded = -1;
    int n_valid = 0;
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t t = u / parts;
      if (t != row_loaded) {
        n_valid = job.K > 0 ? compact_row(job.indices + t * job.K, job.K, tokens) : 0;
        row_loaded = t;
      }
      const int h0 = static_cast<int>(u % parts) * part;
      const int h1 = std::min(job.H, h0 + part);
      queries.resize(static_cast<size_t>(h1 - h0));
      for (int h = h0; h < h1; ++h) {
        const int64_t th = t * job.H + h;
        detail::AttnQuery& aq = queries[static_cast<size_t>(h - h0)];
        aq.q = job.q + th * job.Dqk;
        aq.out = job.out + th * job.Dv;
        aq.lse = job.lse ? job.lse + th : nullptr;
        aq.n_keys = n_valid;
        aq.group = h / group;
      }
      detail::AttnKeys keys;
      if (n_valid > 0) {  // k and v may be null when no slot is valid
        keys.k = job.k;
        keys.v = job.v;
        keys.k16 = job.k16;
        keys.v16 = job.v16;
      }
      keys.k_stride = job.k_stride;
      keys.v_stride = job.v_stride;
      keys.k_group = job.k_group;
      keys.v_group = job.v_group;
      keys.tokens = tokens.data();
      keys.n = n_valid;
      detail::attend_tile(queries.data(), h1 - h0, keys, job.Dqk, job.Dv, job.scale);
    }
  });
}

}  // namespace

void validate(const SparseAttentionParams& p) {
  constexpr const char* fn = "sparse_attention";
  IS_CHECK(p.H_kv > 0, fn, ": H_kv (KV heads) must be > 0, got ", p.H_kv);
  IS_CHECK(p.Dk > 0, fn, ": Dk (key head dim) must be > 0, got ", p.Dk);
  IS_CHECK(p.Dv > 0, fn, ": Dv (value head dim) must be > 0, got ", p.Dv);
  check_common(fn, p.T, p.L, p.H, p.K, p.scale, p.q, p.out);
  IS_CHECK(p.H % p.H_kv == 0, fn, ": H=", p.H, " is not a multiple of H_kv=", p.H_kv);
  if (p.T > 0 && p.K > 0 && p.L > 0) {
    detail::check_kv_pair(fn, p.k, p.v, p.k16, p.v16);
  }
  check_index_rows(fn, p.indices, p.T, p.K, p.L);
}

void validate(const SparseMlaParams& p) {
  constexpr const char* fn = "sparse_mla";
  IS_CHECK(p.Dqk > 0, fn, ": Dqk (latent dim) must be > 0, got ", p.Dqk);
  IS_CHECK(p.Dv > 0, fn, ": Dv (value dim) must be > 0, got ", p.Dv);
  IS_CHECK(p.Dv <= p.Dqk, fn, ": Dv=", p.Dv, " exceeds Dqk=", p.Dqk,
           " (the value is the first Dv columns of the latent)");
  check_common(fn, p.T, p.L, p.H, p.K, p.scale, p.q, p.out);
  if (p.T > 0 && p.K > 0 && p.L > 0) IS_CHECK(p.kv != nullptr, fn, ": kv is null");
  check_index_rows(fn, p.indices, p.T, p.K, p.L);
}

void sparse_attention(const SparseAttentionParams& p) {
  validate(p);
  SparseJob job{p.q, p.out, p.lse, p.indices, p.T, p.H, p.H_kv, p.Dk, p.Dv, p.K, p.scale,
                p.k, p.v, int64_t{p.H_kv} * p.Dk, int64_t{p.H_kv} * p.Dv, p.Dk, p.Dv,
                p.k16, p.v16};
  run_sparse(job);
}

void sparse_mla(const SparseMlaParams& p) {
  validate(p);
  SparseJob job{p.q, p.out, p.lse, p.indices, p.T, p.H, 1, p.Dqk, p.Dv, p.K, p.scale,
                p.kv, p.kv, p.Dqk, p.Dqk, 0, 0};
  run_sparse(job);
}

}  // namespace indexshare::ops

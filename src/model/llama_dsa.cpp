#include "model/llama_dsa.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "ops/attention_probs.h"
#include "ops/indexer_topk.h"
#include "ops/sparse_attention.h"
#include "ops/topk.h"

namespace indexshare::model {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Top-k of T rows (positions q_start ..) of a learned indexer's scores: q [T, H, D], w [T, H],
// kcache [L, D] with the keys up to the last row's position filled.
void learned_topk(const LearnedIndexerConfig& c, const float* q, const float* w, const float* kcache, int64_t T,
                  int64_t L, int64_t q_start, int k, int32_t* out) {
  ops::IndexerParams p;
  p.q = q;
  p.k = kcache;
  p.weights = w;
  p.scale = c.score_scale();
  p.T = T;
  p.L = L;
  p.H = c.heads;
  p.D = c.head_dim;
  p.q_start = q_start;
  ops::IndexerTopkOptions o;
  o.k = k;
  ops::indexer_topk(p, o, out, nullptr);
}

}  // namespace

LlamaDsaBackend::LlamaDsaBackend(const LlamaConfig& model, DsaOptions opt) : mc_(model), opt_(std::move(opt)) {
  const int N = mc_.n_layers;
  IS_CHECK(opt_.schedule.num_layers() == N, "DSA: the pattern has ", opt_.schedule.num_layers(),
           " layers but the model has ", N);
  IS_CHECK(opt_.topk > 0, "DSA: top-k must be > 0, got ", opt_.topk);
  IS_CHECK(opt_.capacity > 0, "DSA: capacity must be > 0");
  index_k_.resize(static_cast<size_t>(N));
  if (opt_.selection == DsaSelection::kIndexer) {
    IS_CHECK(opt_.indexers != nullptr, "DSA: indexer selection needs indexer weights (--indexers)");
    IS_CHECK(static_cast<int>(opt_.indexers->layers.size()) == N, "DSA: the indexer file has ",
             opt_.indexers->layers.size(), " layers but the model has ", N);
    IS_CHECK(opt_.indexers->cfg.d_model == mc_.d_model, "DSA: the indexers read d_model ", opt_.indexers->cfg.d_model,
             " but the model's hidden size is ", mc_.d_model);
    for (int l = 0; l < N; ++l) {
      if (!opt_.schedule.is_full(l)) continue;  // S layers: no indexer, no indexer-K cache
      IS_CHECK(opt_.indexers->has(l), "DSA: layer ", l, " is F in pattern ", opt_.schedule.pattern(),
               " but the indexer file has no indexer for it");
      index_k_[static_cast<size_t>(l)].assign(static_cast<size_t>(opt_.capacity) * opt_.indexers->cfg.head_dim, 0.0f);
    }
  }
  stats_.assign(static_cast<size_t>(N), {});
  recorded_.assign(static_cast<size_t>(N), {});
}

size_t LlamaDsaBackend::indexer_state_bytes(int layer) const {
  return index_k_.at(static_cast<size_t>(layer)).size() * sizeof(float);
}

void LlamaDsaBackend::begin_sequence() {
  topk_rows_ = 0;
  topk_pos0_ = -1;
}

void LlamaDsaBackend::restore_shared_topk(DsaSharedTopk s) {
  IS_CHECK(s.rows >= 0, "DSA restore_shared_topk: negative row count ", s.rows);
  IS_CHECK(static_cast<int64_t>(s.indices.size()) == s.rows * opt_.topk, "DSA restore_shared_topk: ",
           s.indices.size(), " indices for ", s.rows, " rows of top-", opt_.topk);
  topk_ = std::move(s.indices);
  topk_rows_ = s.rows;
  topk_pos0_ = s.pos0;
}

void LlamaDsaBackend::select_with_indexer(const AttentionCall& a, const LearnedIndexerWeights& w,
                                          std::vector<float>& kcache, int32_t* out) {
  const auto& c = w.cfg;
  IS_CHECK(a.L <= opt_.capacity, "DSA: context ", a.L, " exceeds the indexer-K cache capacity ", opt_.capacity);
  std::vector<float> q(static_cast<size_t>(a.T) * c.heads * c.head_dim), hw(static_cast<size_t>(a.T) * c.heads);
  learned_indexer_project(w, a.x_norm, a.T, a.pos0, q.data(), kcache.data() + a.pos0 * c.head_dim, hw.data());
  learned_topk(c, q.data(), hw.data(), kcache.data(), a.T, a.L, a.pos0, opt_.topk, out);
  double keys = 0.0;
  for (int64_t t = 0; t < a.T; ++t) keys += static_cast<double>(std::min(a.L, a.pos0 + t + 1));
  counters_.indexer_flops += 2.0 * static_cast<double>(a.T) * c.d_model * (c.heads * c.head_dim + c.head_dim + c.heads) +
                             2.0 * c.heads * c.head_dim * keys;
}

void LlamaDsaBackend::select_oracle(const AttentionCall& a, int32_t* out) {
  probs_.resize(static_cast<size_t>(a.T * a.L));
  const float* keys = attention_keys_f32(a, int64_t{mc_.n_kv_heads} * mc_.head_dim, keys_f32_);
  ops::attention_probs({.q = a.q, .k = keys, .T = a.T, .L = a.L, .H = mc_.n_heads, .H_kv = mc_.n_kv_heads,
                        .D = mc_.head_dim, .q_start = a.pos0, .scale = a.scale, .P = probs_.data()});
  // Future keys are out of the running (their probability 0 could otherwise tie with real ones).
  for (int64_t t = 0; t < a.T; ++t)
    for (int64_t s = a.pos0 + t + 1; s < a.L; ++s) probs_[static_cast<size_t>(t * a.L + s)] = -std::numeric_limits<float>::infinity();
  ops::TopkParams tp;
  tp.scores = probs_.data();
  tp.T = a.T;
  tp.L = a.L;
  tp.k = opt_.topk;
  tp.indices = out;
  ops::topk(tp);
}

void LlamaDsaBackend::measure(const AttentionCall& a) {
  const int l = a.layer;
  auto& st = stats_[static_cast<size_t>(l)];
  const int64_t k = opt_.topk, stride = std::max<int64_t>(opt_.measure_stride, 1);
  const int64_t Hq = static_cast<int64_t>(mc_.n_heads) * mc_.head_dim;
  // The measured rows: positions that are multiples of the stride, evenly spaced in this call.
  const int64_t t0 = (stride - a.pos0 % stride) % stride;
  if (t0 >= a.T) return;
  const int64_t M = (a.T - 1 - t0) / stride + 1;
  std::vector<int64_t> pos(static_cast<size_t>(M));
  for (int64_t i = 0; i < M; ++i) pos[static_cast<size_t>(i)] = a.pos0 + t0 + i * stride;
  // Overlap of the reused set with the S layer's own choice (prefill from position 0 only: the
  // own indexer's keys are projected from this call's rows). Only the measured rows are
  // scored; a row's top-k does not depend on which other rows are scored with it
  // (ops/indexer_topk.h), so this is what the full selection would give on those rows.
  const bool overlap =
      !opt_.schedule.is_full(l) && opt_.own_indexers && opt_.own_indexers->has(l) && a.pos0 == 0;
  if (overlap) {
    const auto& w = *opt_.own_indexers->layers[static_cast<size_t>(l)];
    const auto& c = w.cfg;
    std::vector<float> kc(static_cast<size_t>(a.L) * c.head_dim);
    learned_indexer_project(w, a.x_norm, a.T, a.pos0, nullptr, kc.data() + a.pos0 * c.head_dim, nullptr);
    std::vector<float> q(static_cast<size_t>(c.heads) * c.head_dim), hw(static_cast<size_t>(c.heads));
    own_.assign(static_cast<size_t>(M * k), -1);
    for (int64_t i = 0; i < M; ++i) {
      const int64_t t = t0 + i * stride;
      learned_indexer_project(w, a.x_norm + t * c.d_model, 1, a.pos0 + t, q.data(), nullptr, hw.data());
      learned_topk(c, q.data(), hw.data(), kc.data(), 1, a.L, a.pos0 + t, opt_.topk, own_.data() + i * k);
    }
  }
  // Recall: the measured rows' true attention in one call (threads split the rows).
  probs_.resize(static_cast<size_t>(M * a.L));
  const float* keys = attention_keys_f32(a, int64_t{mc_.n_kv_heads} * mc_.head_dim, keys_f32_);
  ops::attention_probs({.q = a.q + t0 * Hq, .k = keys, .T = M, .L = a.L, .H = mc_.n_heads, .H_kv = mc_.n_kv_heads,
                        .D = mc_.head_dim, .scale = a.scale, .P = probs_.data(), .ldq = stride * Hq,
                        .pos = pos.data()});
  std::vector<int32_t> x, y, both;
  for (int64_t i = 0; i < M; ++i) {
    const int64_t t = t0 + i * stride;
    const float* row = probs_.data() + i * a.L;
    double mass = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t s = topk_[static_cast<size_t>(t * k + j)];
      if (s >= 0) mass += row[s];
    }
    st.recall_sum += mass;
    ++st.rows;
    if (!overlap) continue;
    x.assign(topk_.begin() + t * k, topk_.begin() + (t + 1) * k);
    y.assign(own_.begin() + i * k, own_.begin() + (i + 1) * k);
    x.erase(std::remove(x.begin(), x.end(), -1), x.end());
    y.erase(std::remove(y.begin(), y.end(), -1), y.end());
    if (y.empty()) continue;
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    both.clear();
    std::set_intersection(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(both));
    st.overlap_sum += static_cast<double>(both.size()) / static_cast<double>(y.size());
    ++st.overlap_rows;
  }
}

bool LlamaDsaBackend::attend(const AttentionCall& a) {
  const int l = a.layer;
  const int64_t k = opt_.topk;
  IS_CHECK(l >= 0 && l < mc_.n_layers, "DSA: layer ", l, " out of range");
  if (opt_.schedule.is_full(l)) {
    const auto t0 = std::chrono::steady_clock::now();
    topk_.assign(static_cast<size_t>(a.T * k), -1);
    if (opt_.selection == DsaSelection::kIndexer) {
      select_with_indexer(a, *opt_.indexers->layers[static_cast<size_t>(l)], index_k_[static_cast<size_t>(l)],
                          topk_.data());
    } else {
      select_oracle(a, topk_.data());
    }
    topk_rows_ = a.T;
    topk_pos0_ = a.pos0;
    ++counters_.indexer_calls;
    counters_.select_seconds += seconds_since(t0);
  } else {
    IS_CHECK(topk_rows_ == a.T && topk_pos0_ == a.pos0, "DSA: shared layer ", l,
             " found no top-k from an F layer in this forward call (the first layer must be F)");
    ++counters_.reused;
  }
  const auto t1 = std::chrono::steady_clock::now();
  ops::SparseAttentionParams sp;
  sp.q = a.q;
  sp.k = a.k;
  sp.v = a.v;
  sp.k16 = a.k16;
  sp.v16 = a.v16;
  sp.indices = topk_.data();
  sp.T = a.T;
  sp.L = a.L;
  sp.H = mc_.n_heads;
  sp.H_kv = mc_.n_kv_heads;
  sp.Dk = mc_.head_dim;
  sp.Dv = mc_.head_dim;
  sp.K = static_cast<int>(k);
  sp.scale = a.scale;
  sp.out = a.out;
  ops::sparse_attention(sp);
  ++counters_.sparse_calls;
  counters_.attention_seconds += seconds_since(t1);
  if (opt_.measure) measure(a);
  if (opt_.record_stride > 0) {
    auto& rec = recorded_[static_cast<size_t>(l)];
    for (int64_t t = 0; t < a.T; ++t) {
      if ((a.pos0 + t) % opt_.record_stride != 0) continue;
      std::vector<int32_t> s(topk_.begin() + t * k, topk_.begin() + (t + 1) * k);
      s.erase(std::remove(s.begin(), s.end(), -1), s.end());
      std::sort(s.begin(), s.end());
      rec.push_back(std::move(s));
    }
  }
  return true;
}

}  // namespace indexshare::model

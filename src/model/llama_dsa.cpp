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

void sparse_attend(const AttentionCall& a, const LlamaConfig& c, const int32_t* indices, int K) {
  ops::SparseAttentionParams sp;
  sp.q = a.q;
  sp.k = a.k;
  sp.v = a.v;
  sp.k16 = a.k16;
  sp.v16 = a.v16;
  sp.indices = indices;
  sp.T = a.T;
  sp.L = a.L;
  sp.H = c.n_heads;
  sp.H_kv = c.n_kv_heads;
  sp.Dk = c.head_dim;
  sp.Dv = c.head_dim;
  sp.K = K;
  sp.scale = a.scale;
  sp.out = a.out;
  ops::sparse_attention(sp);
}

LlamaDsaBackend::LlamaDsaBackend(const LlamaConfig& model, DsaOptions opt) : mc_(model), opt_(std::move(opt)) {
  const int N = mc_.n_layers;
  IS_CHECK(opt_.schedule.num_layers() == N, "DSA: the pattern has ", opt_.schedule.num_layers(),
           " layers but the model has ", N);
  IS_CHECK(opt_.topk > 0, "DSA: top-k must be > 0, got ", opt_.topk);
  IS_CHECK(opt_.capacity > 0, "DSA: capacity must be > 0");
  share::DsaStackOptions so;
  so.topk = opt_.topk;
  so.pages = (opt_.capacity + backend::kPageTokens - 1) / backend::kPageTokens;
  if (opt_.selection == DsaSelection::kIndexer) {
    IS_CHECK(opt_.indexers != nullptr, "DSA: indexer selection needs indexer weights (--indexers)");
    IS_CHECK(static_cast<int>(opt_.indexers->layers.size()) == N, "DSA: the indexer file has ",
             opt_.indexers->layers.size(), " layers but the model has ", N);
    IS_CHECK(opt_.indexers->cfg.d_model == mc_.d_model, "DSA: the indexers read d_model ", opt_.indexers->cfg.d_model,
             " but the model's hidden size is ", mc_.d_model);
    for (int l = 0; l < N; ++l)
      IS_CHECK(!opt_.schedule.is_full(l) || opt_.indexers->has(l), "DSA: layer ", l, " is F in pattern ",
               opt_.schedule.pattern(), " but the indexer file has no indexer for it");
    so.index_heads = opt_.indexers->cfg.heads;
    so.index_dim = opt_.indexers->cfg.head_dim;
    so.index_scale = opt_.indexers->cfg.score_scale();
    IS_CHECK(opt_.candidates == 0 || opt_.candidates >= opt_.topk, "DSA: candidates C = ", opt_.candidates,
             " must be >= top-k ", opt_.topk);
    so.candidates = opt_.candidates;
    if (opt_.schedule.has_reindex()) {
      IS_CHECK(opt_.reindexers != nullptr, "DSA: pattern ", opt_.schedule.pattern(),
               " has reindex (R) layers, which need reindex indexers (--reindexers)");
      IS_CHECK(static_cast<int>(opt_.reindexers->layers.size()) == N, "DSA: the reindex indexer file has ",
               opt_.reindexers->layers.size(), " layers but the model has ", N);
      IS_CHECK(opt_.reindexers->cfg.d_model == mc_.d_model, "DSA: the reindex indexers read d_model ",
               opt_.reindexers->cfg.d_model, " but the model's hidden size is ", mc_.d_model);
      for (int l = 0; l < N; ++l)
        IS_CHECK(!opt_.schedule.is_reindex(l) || opt_.reindexers->has(l), "DSA: layer ", l, " is R in pattern ",
                 opt_.schedule.pattern(), " but the reindex indexer file has no indexer for it");
      IS_CHECK(opt_.candidates >= opt_.topk, "DSA: reindex (R) layers re-score the top-C candidates of an F layer; ",
               "C = ", opt_.candidates, " must be >= top-k ", opt_.topk);
      so.reindex_heads = opt_.reindexers->cfg.heads;
      so.reindex_dim = opt_.reindexers->cfg.head_dim;
      so.reindex_scale = opt_.reindexers->cfg.score_scale();
    }
  } else {
    // Oracle: a stack without indexer caches, its F layers' sets come from set_topk.
    IS_CHECK(!opt_.schedule.has_reindex(), "DSA: oracle selection has no reindex (R) layers (pattern ",
             opt_.schedule.pattern(), ")");
  }
  stack_ = std::make_unique<share::DsaStack>(opt_.schedule, so, cpu_);
  // One sequence whose pages are 0, 1, 2, ...: positions are slots (physical == logical).
  step_.B = 1;
  step_.max_pages = static_cast<int>(so.pages);
  step_.table_host.resize(static_cast<size_t>(so.pages));
  for (int64_t p = 0; p < so.pages; ++p) step_.table_host[static_cast<size_t>(p)] = static_cast<int32_t>(p);
  stats_.assign(static_cast<size_t>(N), {});
  recorded_.assign(static_cast<size_t>(N), {});
}

size_t LlamaDsaBackend::indexer_state_bytes(int layer) const { return stack_->indexer_cache_bytes(layer); }

const DsaCounters& LlamaDsaBackend::counters() const {
  const share::DsaCounters& c = stack_->counters();
  counters_.indexer_calls = c.indexer_calls + c.forced_sets;
  counters_.reused = c.shared_reuses;
  counters_.reindex_calls = c.reindex_calls;
  return counters_;
}

void LlamaDsaBackend::begin_sequence() {
  step_.T = 0;
  last_layer_ = -1;
}

void LlamaDsaBackend::begin(int64_t pos0, int64_t T) {
  IS_CHECK(pos0 + T <= opt_.capacity, "DSA: context ", pos0 + T, " exceeds the indexer-K cache capacity ",
           opt_.capacity);
  step_.T = T;
  step_.q_start = {pos0};
  backend::upload_step(cpu_, step_, step_buffer_);
  stack_->begin_step(step_);
  last_layer_ = -1;
}

void LlamaDsaBackend::enter(const AttentionCall& a) {
  const bool same_rows = step_.T == a.T && !step_.q_start.empty() && step_.q_start[0] == a.pos0;
  if (!same_rows || a.layer <= last_layer_) begin(a.pos0, a.T);
  last_layer_ = a.layer;
}

DsaSharedTopk LlamaDsaBackend::shared_topk() const {
  const share::DsaSavedTopk s = stack_->save();
  if (s.source < 0) return {};
  return {s.logical, s.rows, step_.q_start[0], s.source, s.cand_logical, s.cand_source};
}

void LlamaDsaBackend::restore_shared_topk(DsaSharedTopk s) {
  IS_CHECK(s.rows >= 0, "DSA restore_shared_topk: negative row count ", s.rows);
  IS_CHECK(static_cast<int64_t>(s.indices.size()) == s.rows * opt_.topk, "DSA restore_shared_topk: ",
           s.indices.size(), " indices for ", s.rows, " rows of top-", opt_.topk);
  if (s.rows == 0 || s.source < 0) {
    begin_sequence();
    return;
  }
  begin(s.pos0, s.rows);
  // Identity pages: the physical slots are the positions.
  stack_->restore({s.indices, s.indices, s.rows, s.source, s.candidates, s.candidates, s.cand_source});
}

void LlamaDsaBackend::select_with_indexer(const AttentionCall& a, const LearnedIndexerWeights& w, bool reindex) {
  const auto& c = w.cfg;
  std::vector<float> q(static_cast<size_t>(a.T) * c.heads * c.head_dim), k(static_cast<size_t>(a.T) * c.head_dim),
      hw(static_cast<size_t>(a.T) * c.heads);
  learned_indexer_project(w, a.x_norm, a.T, a.pos0, q.data(), k.data(), hw.data());
  const Tensor tq = Tensor::wrap(q.data(), DType::kF32, Device::kCpu, {a.T, int64_t{c.heads} * c.head_dim});
  const Tensor tw = Tensor::wrap(hw.data(), DType::kF32, Device::kCpu, {a.T, c.heads});
  const Tensor tk = Tensor::wrap(k.data(), DType::kF32, Device::kCpu, {a.T, c.head_dim});
  if (reindex) {
    stack_->reindex(a.layer, tq, tw, tk);
  } else {
    stack_->index(a.layer, tq, tw, tk);
  }
  // Row t scores its visible keys (F) or min(C, its visible keys) candidates (R).
  const int64_t cap = reindex ? int64_t{opt_.candidates} : a.L;
  double keys = 0.0;
  for (int64_t t = 0; t < a.T; ++t) keys += static_cast<double>(std::min({cap, a.L, a.pos0 + t + 1}));
  counters_.indexer_flops += 2.0 * static_cast<double>(a.T) * c.d_model * (c.heads * c.head_dim + c.head_dim + c.heads) +
                             2.0 * c.heads * c.head_dim * keys;
}

void LlamaDsaBackend::select_oracle(const AttentionCall& a) {
  probs_.resize(static_cast<size_t>(a.T * a.L));
  const float* keys = attention_keys_f32(a, int64_t{mc_.n_kv_heads} * mc_.head_dim, keys_f32_);
  ops::attention_probs({.q = a.q, .k = keys, .T = a.T, .L = a.L, .H = mc_.n_heads, .H_kv = mc_.n_kv_heads,
                        .D = mc_.head_dim, .q_start = a.pos0, .scale = a.scale, .P = probs_.data()});
  // Future keys are out of the running (their probability 0 could otherwise tie with real ones).
  for (int64_t t = 0; t < a.T; ++t)
    for (int64_t s = a.pos0 + t + 1; s < a.L; ++s) probs_[static_cast<size_t>(t * a.L + s)] = -std::numeric_limits<float>::infinity();
  std::vector<int32_t> sel(static_cast<size_t>(a.T * opt_.topk), -1);
  ops::TopkParams tp;
  tp.scores = probs_.data();
  tp.T = a.T;
  tp.L = a.L;
  tp.k = opt_.topk;
  tp.indices = sel.data();
  ops::topk(tp);
  stack_->set_topk(a.layer, sel);
}

void LlamaDsaBackend::measure(const AttentionCall& a, const int32_t* topk) {
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
      opt_.schedule.is_shared(l) && opt_.own_indexers && opt_.own_indexers->has(l) && a.pos0 == 0;
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
  // Recall: each head's true attention over the measured rows (one call per head, threads split
  // the rows), its mass inside the row's set; the layer's recall is the heads' mean.
  const int H = mc_.n_heads, Hkv = mc_.n_kv_heads, Dh = mc_.head_dim, group = H / Hkv;
  probs_.resize(static_cast<size_t>(M * a.L));
  const float* keys = attention_keys_f32(a, int64_t{Hkv} * Dh, keys_f32_);
  group_keys_.resize(static_cast<size_t>(a.L * Dh));
  std::vector<double> row_mass(static_cast<size_t>(M), 0.0);
  st.head_recall_sum.resize(static_cast<size_t>(H), 0.0);
  for (int g = 0; g < Hkv; ++g) {
    for (int64_t s = 0; s < a.L; ++s)
      std::copy_n(keys + (s * Hkv + g) * Dh, Dh, group_keys_.begin() + s * Dh);
    for (int h = g * group; h < (g + 1) * group; ++h) {
      ops::attention_probs({.q = a.q + t0 * Hq + int64_t{h} * Dh, .k = group_keys_.data(), .T = M, .L = a.L, .H = 1,
                            .H_kv = 1, .D = Dh, .scale = a.scale, .P = probs_.data(), .ldq = stride * Hq,
                            .pos = pos.data()});
      double head_sum = 0.0;
      for (int64_t i = 0; i < M; ++i) {
        const int64_t t = t0 + i * stride;
        const float* row = probs_.data() + i * a.L;
        double mass = 0.0;
        for (int64_t j = 0; j < k; ++j) {
          const int32_t s = topk[t * k + j];
          if (s >= 0) mass += row[s];
        }
        head_sum += mass;
        row_mass[static_cast<size_t>(i)] += mass / H;
      }
      st.head_recall_sum[static_cast<size_t>(h)] += head_sum;
    }
  }
  std::vector<int32_t> x, y, both;
  for (int64_t i = 0; i < M; ++i) {
    const int64_t t = t0 + i * stride;
    st.recall_sum += row_mass[static_cast<size_t>(i)];
    ++st.rows;
    if (!overlap) continue;
    x.assign(topk + t * k, topk + (t + 1) * k);
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
  enter(a);
  if (opt_.schedule.is_full(l)) {
    const auto t0 = std::chrono::steady_clock::now();
    if (opt_.selection == DsaSelection::kIndexer) {
      select_with_indexer(a, *opt_.indexers->layers[static_cast<size_t>(l)]);
    } else {
      select_oracle(a);
    }
    counters_.select_seconds += seconds_since(t0);
  } else if (opt_.schedule.is_reindex(l)) {
    const auto t0 = std::chrono::steady_clock::now();
    select_with_indexer(a, *opt_.reindexers->layers[static_cast<size_t>(l)], /*reindex=*/true);
    counters_.select_seconds += seconds_since(t0);
  }
  // Physical slots == positions (identity pages), so the buffer indexes the KV cache directly.
  const int32_t* topk = stack_->topk(l).as<int32_t>();
  const auto t1 = std::chrono::steady_clock::now();
  sparse_attend(a, mc_, topk, static_cast<int>(k));
  ++counters_.sparse_calls;
  counters_.attention_seconds += seconds_since(t1);
  if (opt_.measure) measure(a, topk);
  if (opt_.record_stride > 0) {
    auto& rec = recorded_[static_cast<size_t>(l)];
    for (int64_t t = 0; t < a.T; ++t) {
      if ((a.pos0 + t) % opt_.record_stride != 0 || a.pos0 + t < opt_.record_from) continue;
      std::vector<int32_t> s(topk + t * k, topk + (t + 1) * k);
      s.erase(std::remove(s.begin(), s.end(), -1), s.end());
      std::sort(s.begin(), s.end());
      rec.push_back(std::move(s));
    }
  }
  return true;
}

}  // namespace indexshare::model

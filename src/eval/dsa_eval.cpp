#include "eval/dsa_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace indexshare::eval {

double llama_matmul_flops_per_token(const model::LlamaConfig& c) {
  const double d = c.d_model, qd = double(c.n_heads) * c.head_dim, kd = double(c.n_kv_heads) * c.head_dim;
  const double per_layer = d * (qd + 2 * kd) + qd * d + 3.0 * d * c.ffn_dim;
  return 2.0 * (c.n_layers * per_layer + double(c.vocab) * d);
}

ModeResult run_mode(const model::LlamaModel& m, std::span<const int32_t> tokens, const ModeSpec& spec,
                    const EvalSettings& s) {
  const auto& c = m.config();
  ModeResult r;
  r.name = spec.name;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const int64_t ctx = s.ppl.ctx;
  // Attention FLOPs per token over one window: QK^T and PV for every head over the keys attended.
  double keys_dense = 0.0, keys_sparse = 0.0;
  for (int64_t t = 0; t < ctx; ++t) {
    keys_dense += static_cast<double>(t + 1);
    keys_sparse += static_cast<double>(std::min<int64_t>(t + 1, s.topk));
  }
  const double attn_per_key = 2.0 * 2.0 * c.n_heads * c.head_dim;
  PerplexityResult pr;
  if (spec.dense) {
    r.pattern = "dense";
    pr = perplexity(m, tokens, s.ppl);
    r.attention_flops = attn_per_key * keys_dense / ctx * c.n_layers;
    r.recall = r.overlap = nan;
  } else {
    IS_CHECK(spec.schedule.has_value(), "eval: mode ", spec.name, " has no schedule");
    model::DsaOptions o;
    o.topk = s.topk;
    o.schedule = *spec.schedule;
    o.selection = spec.selection;
    o.indexers = spec.indexers;
    o.reindexers = spec.reindexers;
    o.candidates = spec.candidates;
    o.own_indexers = s.own_indexers;
    o.measure = s.measure_stride > 0;
    o.measure_stride = std::max<int64_t>(s.measure_stride, 1);
    o.record_stride = s.record_stride;
    o.record_from = s.record_from;
    o.capacity = ctx;
    model::LlamaDsaBackend be(c, o);
    pr = perplexity(m, tokens, s.ppl, &be);
    r.pattern = spec.schedule->pattern();
    r.num_full = spec.schedule->num_full();
    r.num_reindex = spec.schedule->num_reindex();
    r.candidates = spec.schedule->has_reindex() ? spec.candidates : 0;
    const auto& k = be.counters();
    r.indexer_calls = k.indexer_calls / pr.windows;
    r.reindex_calls = k.reindex_calls / pr.windows;
    r.reused = k.reused / pr.windows;
    r.indexer_flops = k.indexer_flops / static_cast<double>(pr.windows * ctx);
    r.select_seconds = k.select_seconds;
    r.attention_flops = attn_per_key * keys_sparse / ctx * c.n_layers;
    double rs = 0, os = 0;
    int rn = 0, on = 0;
    for (const auto& st : be.layer_stats()) {
      const double lr = st.rows ? st.recall_sum / st.rows : nan;
      const double lo = st.overlap_rows ? st.overlap_sum / st.overlap_rows : nan;
      r.layer_recall.push_back(lr);
      r.layer_overlap.push_back(lo);
      for (int h = 0; h < c.n_heads; ++h)
        r.head_recall.push_back(st.rows && static_cast<size_t>(h) < st.head_recall_sum.size()
                                    ? st.head_recall_sum[static_cast<size_t>(h)] / st.rows
                                    : nan);
      if (st.rows) rs += lr, ++rn;
      if (st.overlap_rows) os += lo, ++on;
    }
    r.recall = rn ? rs / rn : nan;
    r.overlap = on ? os / on : nan;
    if (s.record_stride > 0) r.recorded = be.recorded();
  }
  r.ppl = pr.ppl;
  r.mean_nll = pr.mean_nll;
  r.token_nll = std::move(pr.token_nll);
  r.token_top1 = std::move(pr.token_top1);
  r.seconds = pr.seconds;
  r.total_flops = llama_matmul_flops_per_token(c) + r.attention_flops + r.indexer_flops;
  return r;
}

std::vector<double> jaccard_matrix(const std::vector<std::vector<std::vector<int32_t>>>& rec) {
  const size_t N = rec.size();
  std::vector<double> J(N * N, std::numeric_limits<double>::quiet_NaN());
  std::vector<int32_t> both;
  for (size_t i = 0; i < N; ++i)
    for (size_t j = 0; j < N; ++j) {
      const size_t rows = std::min(rec[i].size(), rec[j].size());
      if (rows == 0) continue;
      double sum = 0;
      for (size_t r = 0; r < rows; ++r) {
        const auto& a = rec[i][r];
        const auto& b = rec[j][r];
        both.clear();
        std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
        const size_t uni = a.size() + b.size() - both.size();
        sum += uni ? static_cast<double>(both.size()) / static_cast<double>(uni) : 1.0;
      }
      J[i * N + j] = sum / static_cast<double>(rows);
    }
  return J;
}

std::vector<double> selection_by_distance(const std::vector<std::vector<std::vector<int32_t>>>& rec, int64_t ctx,
                                          int64_t from, int64_t stride, int64_t min_pos,
                                          const std::vector<int64_t>& edges) {
  IS_CHECK(stride >= 1 && ctx >= 1 && from >= 0, "selection_by_distance: stride ", stride, ", ctx ", ctx, ", from ", from);
  IS_CHECK(edges.size() >= 2 && edges[0] >= 0, "selection_by_distance: need >= 2 edges from >= 0");
  for (size_t b = 1; b < edges.size(); ++b)
    IS_CHECK(edges[b] > edges[b - 1], "selection_by_distance: edges must increase");
  const size_t B = edges.size() - 1;
  const int64_t first = (from + stride - 1) / stride * stride;
  const int64_t per_window = first < ctx ? (ctx - 1 - first) / stride + 1 : 0;
  std::vector<double> hit(B, 0.0), avail(B, 0.0);
  // The bin of distance d, or B when outside.
  auto bin_of = [&](int64_t d) -> size_t {
    const auto it = std::upper_bound(edges.begin(), edges.end(), d);
    if (it == edges.begin() || it == edges.end()) return B;
    return static_cast<size_t>(it - edges.begin()) - 1;
  };
  for (const auto& layer : rec)
    for (size_t i = 0; i < layer.size() && per_window > 0; ++i) {
      const int64_t t = first + static_cast<int64_t>(i % static_cast<size_t>(per_window)) * stride;
      if (t < min_pos) continue;
      for (size_t b = 0; b < B; ++b) {  // keys s in [0, t] with t - s in [edges[b], edges[b+1])
        const int64_t lo = edges[b], hi = std::min(edges[b + 1], t + 1);
        if (hi > lo) avail[b] += static_cast<double>(hi - lo);
      }
      for (int32_t sp : layer[i]) {
        if (sp < 0 || sp > t) continue;
        const size_t b = bin_of(t - sp);
        if (b < B) hit[b] += 1.0;
      }
    }
  std::vector<double> out(B, std::numeric_limits<double>::quiet_NaN());
  for (size_t b = 0; b < B; ++b)
    if (avail[b] > 0) out[b] = hit[b] / avail[b];
  return out;
}

}  // namespace indexshare::eval

#include "train/pattern_search.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "eval/perplexity.h"

namespace indexshare::train {
namespace {

using model::DsaOptions;
using model::DsaSharedTopk;
using model::IndexerSet;
using model::KvCache;
using model::LlamaDsaBackend;
using model::LlamaModel;
using share::Schedule;

constexpr int64_t kHeadRows = 64;  // rows per LM-head call: bounds the logits scratch

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Validates what every evaluation needs; returns the first scored position. `needs` (nullable)
// is the pattern whose F layers need an indexer; null = every layer.
int64_t check_inputs(const LlamaModel& m, const CalibrationSet& c, const IndexerSet& ix, int topk, int64_t first,
                     const Schedule* needs) {
  const auto& cfg = m.config();
  const int N = cfg.n_layers;
  IS_CHECK(!c.inputs.empty(), "pattern search: the calibration set is empty (no windows)");
  IS_CHECK(c.targets.size() == c.inputs.size(), "pattern search: calibration set has ", c.inputs.size(),
           " input windows but ", c.targets.size(), " target windows");
  IS_CHECK(c.ctx >= 2, "pattern search: calibration ctx must be >= 2, got ", c.ctx);
  IS_CHECK(c.ctx <= cfg.context_length, "pattern search: calibration ctx ", c.ctx,
           " exceeds the model's context length of ", cfg.context_length);
  for (size_t w = 0; w < c.inputs.size(); ++w)
    IS_CHECK(static_cast<int64_t>(c.inputs[w].size()) == c.ctx && static_cast<int64_t>(c.targets[w].size()) == c.ctx - 1,
             "pattern search: calibration window ", w, " has ", c.inputs[w].size(), " inputs and ", c.targets[w].size(),
             " targets, expected ", c.ctx, " and ", c.ctx - 1);
  IS_CHECK(topk >= 1 && topk <= c.ctx, "pattern search: topk ", topk, " outside [1, ctx = ", c.ctx, "]");
  const int64_t f = first >= 0 ? first : c.ctx / 2;
  IS_CHECK(f < c.ctx - 1, "pattern search: first scored position ", f, " leaves nothing to score in a window of ",
           c.ctx);
  IS_CHECK(static_cast<int>(ix.layers.size()) == N, "pattern search: the indexer set has ", ix.layers.size(),
           " layers but the model has ", N);
  IS_CHECK(ix.cfg.d_model == cfg.d_model, "pattern search: the indexers read d_model ", ix.cfg.d_model,
           " but the model's hidden size is ", cfg.d_model);
  for (int l = 0; l < N; ++l) {
    if (needs && !needs->is_full(l)) continue;
    IS_CHECK(ix.has(l), "pattern search: the indexer set has no indexer for layer ", l,
             needs ? std::string(", which is F in ") + needs->pattern()
                   : std::string("; the search needs one per layer (a per-layer distill, not a training-aware one)"));
  }
  return f;
}

DsaOptions dsa_options(const IndexerSet& ix, Schedule s, int topk, int64_t ctx, const ReindexSpec& rx) {
  return {.topk = topk,
          .schedule = std::move(s),
          .indexers = &ix,
          .reindexers = rx.indexers,
          .candidates = rx.candidates,
          .capacity = ctx};
}

// -Σ log p(target) over rows [first, ctx - 1) of one window, from its final hidden state
// x [ctx, d_model]; rows are summed in order, in double.
double window_nll(const LlamaModel& m, const float* x, const std::vector<int32_t>& targets, int64_t first, int64_t ctx,
                  std::vector<float>& logits) {
  const int64_t d = m.config().d_model, V = m.config().vocab;
  double nll = 0.0;
  for (int64_t j0 = first; j0 < ctx - 1; j0 += kHeadRows) {
    const int64_t rows = std::min(kHeadRows, ctx - 1 - j0);
    logits.resize(static_cast<size_t>(rows * V));
    m.output_logits(x + j0 * d, rows, logits.data());
    for (int64_t r = 0; r < rows; ++r)
      nll -= eval::log_prob({logits.data() + r * V, static_cast<size_t>(V)}, targets[static_cast<size_t>(j0 + r)]);
  }
  return nll;
}

std::string pattern_of(const std::vector<bool>& full, const ReindexSpec& rx) {
  std::string s;
  for (bool f : full) s += f ? 'F' : (rx.indexers ? 'R' : 'S');
  return s;
}

}  // namespace

CalibrationSet make_calibration_set(std::span<const int32_t> tokens, int64_t ctx, int windows, int32_t bos) {
  IS_CHECK(ctx >= 2, "calibration: ctx must be >= 2, got ", ctx);
  IS_CHECK(windows >= 1, "calibration: windows must be >= 1, got ", windows);
  const int64_t have = static_cast<int64_t>(tokens.size()) / ctx;
  IS_CHECK(have >= windows, "calibration: the text has ", tokens.size(), " tokens, fewer than ", windows,
           " windows of ", ctx);
  CalibrationSet c;
  c.ctx = ctx;
  for (int w = 0; w < windows; ++w) {
    const auto begin = tokens.begin() + w * ctx;
    c.inputs.emplace_back(begin, begin + ctx);
    if (bos >= 0) c.inputs.back()[0] = bos;
    c.targets.emplace_back(begin + 1, begin + ctx);
  }
  return c;
}

std::string uniform_pattern(int layers, int keep) {
  IS_CHECK(layers >= 1, "uniform pattern: layers must be >= 1, got ", layers);
  IS_CHECK(keep >= 1 && keep <= layers, "uniform pattern: keep ", keep, " F layers outside [1, ", layers, "]");
  std::string s(static_cast<size_t>(layers), 'S');
  for (int i = 0; i < keep; ++i) s[static_cast<size_t>(int64_t{i} * layers / keep)] = 'F';
  return s;
}

double pattern_loss(const LlamaModel& m, const CalibrationSet& calib, const IndexerSet& indexers,
                    const Schedule& pattern, int topk, int64_t first, const ReindexSpec& reindex) {
  const auto& cfg = m.config();
  IS_CHECK(pattern.num_layers() == cfg.n_layers, "pattern loss: the pattern has ", pattern.num_layers(),
           " layers but the model has ", cfg.n_layers);
  const int64_t f = check_inputs(m, calib, indexers, topk, first, &pattern);
  const int64_t ctx = calib.ctx, V = cfg.vocab;
  LlamaDsaBackend be(cfg, dsa_options(indexers, pattern, topk, ctx, reindex));
  KvCache cache;
  cache.reset(cfg, ctx);
  std::vector<float> logits(static_cast<size_t>(ctx * V));
  double nll = 0.0;
  for (size_t w = 0; w < calib.inputs.size(); ++w) {
    cache.clear();
    be.begin_sequence();
    m.forward(calib.inputs[w].data(), ctx, cache, logits.data(), true, &be);
    double win = 0.0;
    for (int64_t j = f; j < ctx - 1; ++j)
      win -= eval::log_prob({logits.data() + j * V, static_cast<size_t>(V)}, calib.targets[w][static_cast<size_t>(j)]);
    nll += win;
  }
  return nll / static_cast<double>(static_cast<int64_t>(calib.inputs.size()) * (ctx - 1 - f));
}

PatternSearchResult search_pattern(const LlamaModel& m, const CalibrationSet& calib, const IndexerSet& indexers,
                                   const PatternSearchOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  const auto& cfg = m.config();
  const int N = cfg.n_layers;
  const int64_t first = check_inputs(m, calib, indexers, o.topk, o.first, nullptr);
  IS_CHECK(o.keep >= 1 && o.keep <= N, "pattern search: keep ", o.keep, " F layers outside [1, ", N, "]");
  const int64_t ctx = calib.ctx, d = cfg.d_model;
  const int64_t W = static_cast<int64_t>(calib.inputs.size());
  const size_t plane = static_cast<size_t>(ctx * d);

  PatternSearchResult r;
  r.windows = W;
  r.scored = W * (ctx - 1 - first);
  int64_t total = 0;
  for (int f = N; f > o.keep; --f) total += static_cast<int64_t>(f - 1) * W;
  int64_t done = 0;

  std::vector<bool> full(static_cast<size_t>(N), true);
  KvCache cache;
  cache.reset(cfg, ctx);
  std::vector<float> states(static_cast<size_t>(N) * plane);  // hidden state entering layer l (one window)
  std::vector<DsaSharedTopk> left(static_cast<size_t>(N));    // buffer F layer l left (one window)
  std::vector<float> x(plane), logits;

  // One step: the current pattern's NLL (returned) and each candidate's NLL (into cand_nll), summed
  // over windows. Every window: one layer-by-layer run of the current pattern keeping the states,
  // then each candidate from the state entering its layer.
  auto evaluate = [&](const std::vector<int>& cands, std::vector<double>& cand_nll) {
    const Schedule cur = Schedule::from_pattern(pattern_of(full, o.reindex));
    std::vector<Schedule> cand_sched;
    for (int c : cands) {
      std::vector<bool> f = full;
      f[static_cast<size_t>(c)] = false;
      cand_sched.push_back(Schedule::from_pattern(pattern_of(f, o.reindex)));
    }
    cand_nll.assign(cands.size(), 0.0);
    double base = 0.0;
    for (int64_t w = 0; w < W; ++w) {
      const auto& in = calib.inputs[static_cast<size_t>(w)];
      const auto& tg = calib.targets[static_cast<size_t>(w)];
      LlamaDsaBackend be(cfg, dsa_options(indexers, cur, o.topk, ctx, o.reindex));
      be.begin_sequence();
      cache.clear();
      m.embed_tokens(in.data(), ctx, x.data());
      for (int l = 0; l < N; ++l) {
        std::copy(x.begin(), x.end(), states.begin() + static_cast<ptrdiff_t>(l * plane));
        m.forward_layers(l, l + 1, x.data(), ctx, 0, cache, &be);
        if (cur.has_indexer(l)) left[static_cast<size_t>(l)] = be.shared_topk();
      }
      r.layer_runs += N;
      base += window_nll(m, x.data(), tg, first, ctx, logits);
      for (size_t i = 0; i < cands.size(); ++i) {
        const int c = cands[i];
        LlamaDsaBackend cb(cfg, dsa_options(indexers, cand_sched[i], o.topk, ctx, o.reindex));
        cb.begin_sequence();
        cb.restore_shared_topk(left[static_cast<size_t>(cur.source(c - 1))]);
        std::copy(states.begin() + static_cast<ptrdiff_t>(c * plane),
                  states.begin() + static_cast<ptrdiff_t>((c + 1) * plane), x.begin());
        m.forward_layers(c, N, x.data(), ctx, 0, cache, &cb);
        cand_nll[i] += window_nll(m, x.data(), tg, first, ctx, logits);
        r.layer_runs += N - c;
        if (o.progress) o.progress(++done, total, nullptr);
      }
    }
    return base;
  };

  const double scored = static_cast<double>(r.scored);
  r.layer_runs_uncached = N;  // one full forward for the all-F loss
  if (o.keep == N) {
    std::vector<double> none;
    r.all_full_loss = evaluate({}, none) / scored;
  }
  for (int num_full = N; num_full > o.keep; --num_full) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int> cands;
    for (int l = 1; l < N; ++l)
      if (full[static_cast<size_t>(l)]) cands.push_back(l);
    std::vector<double> nll;
    const double base = evaluate(cands, nll) / scored;
    if (r.steps.empty()) r.all_full_loss = base;
    SearchStep s;
    s.base_loss = base;
    size_t best = 0;
    for (size_t i = 0; i < cands.size(); ++i) {
      s.candidates.push_back({cands[i], nll[i] / scored});
      if (nll[i] < nll[best]) best = i;  // strict: ties keep the lower layer
    }
    s.layer = cands[best];
    s.loss = nll[best] / scored;
    full[static_cast<size_t>(s.layer)] = false;
    s.num_full = num_full - 1;
    s.pattern = pattern_of(full, o.reindex);
    s.seconds = seconds_since(t0);
    r.candidate_evaluations += static_cast<int64_t>(cands.size());
    r.layer_runs_uncached += static_cast<int64_t>(cands.size()) * N;
    r.steps.push_back(std::move(s));
    if (o.progress) o.progress(done, total, &r.steps.back());
  }
  r.layer_runs_uncached *= W;
  r.pattern = pattern_of(full, o.reindex);
  r.seconds = seconds_since(t_start);
  return r;
}

}  // namespace indexshare::train

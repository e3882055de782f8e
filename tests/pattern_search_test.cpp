// IndexCache's greedy pattern search on a tiny random Llama: every candidate loss the prefix cache
// computes equals a full forward under that pattern (computed here with model.forward and an
// independent log-softmax), the greedy choices equal a brute-force argmin, layer 0 stays F, keep is
// honoured, ties go to the lower layer, the result is a valid pattern, bad inputs are errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/llama_dsa.h"
#include "share/schedule.h"
#include "tiny_llama.h"
#include "train/pattern_search.h"

namespace indexshare::train {
namespace {

using model::IndexerSet;
using model::LlamaModel;

IndexerSet random_indexers(const model::LlamaConfig& c, std::mt19937& rng, float sd = 0.3f) {
  IndexerSet set;
  set.cfg = {c.d_model, 2, 8, 4, c.rope_theta};
  std::normal_distribution<float> nd(0.0f, sd);
  for (int l = 0; l < c.n_layers; ++l) {
    auto w = model::LearnedIndexerWeights::zeros(set.cfg);
    for (auto* v : {&w.wq, &w.wk, &w.ww})
      for (auto& e : *v) e = nd(rng);
    set.layers.emplace_back(std::move(w));
  }
  return set;
}

std::vector<int32_t> random_tokens(int n, int vocab, std::mt19937& rng) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

// The reference: full forwards under `pattern`, mean NLL of positions [first, ctx - 1) predicting
// the stream's next token, log-softmax in double written here. It rounds differently from
// eval::log_prob (which subtracts the max in float), hence kTol; the search's own full-forward path
// (pattern_loss) shares log_prob and must match the cached evaluation exactly.
constexpr double kTol = 1e-7;
double reference_loss(const LlamaModel& m, const std::vector<int32_t>& stream, int64_t ctx, int windows,
                      const IndexerSet& ix, const std::string& pattern, int topk, int64_t first) {
  const int V = m.config().vocab;
  model::LlamaDsaBackend be(m.config(), {.topk = topk, .schedule = share::Schedule::from_pattern(pattern),
                                         .indexers = &ix, .capacity = ctx});
  double nll = 0.0;
  int64_t n = 0;
  for (int w = 0; w < windows; ++w) {
    model::KvCache c;
    c.reset(m.config(), ctx);
    be.begin_sequence();
    std::vector<float> logits(static_cast<size_t>(ctx * V));
    m.forward(stream.data() + w * ctx, ctx, c, logits.data(), true, &be);
    for (int64_t j = first; j < ctx - 1; ++j) {
      const float* row = logits.data() + j * V;
      double mx = row[0];
      for (int v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
      double s = 0.0;
      for (int v = 0; v < V; ++v) s += std::exp(static_cast<double>(row[v]) - mx);
      nll -= static_cast<double>(row[stream[static_cast<size_t>(w * ctx + j + 1)]]) - mx - std::log(s);
      ++n;
    }
  }
  return nll / static_cast<double>(n);
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

struct TinyCase {
  testing_util::TinyLlama tiny;
  IndexerSet ix;
  std::vector<int32_t> stream;
  CalibrationSet calib;
};

TinyCase make_case(uint32_t seed, int layers, int64_t ctx, int windows) {
  std::mt19937 rng(seed);
  TinyCase s{testing_util::make_tiny_llama(rng(), layers), {}, {}, {}};
  s.ix = random_indexers(s.tiny.cfg, rng);
  s.stream = random_tokens(static_cast<int>(ctx * windows + 5), s.tiny.cfg.vocab, rng);
  s.calib = make_calibration_set(s.stream, ctx, windows);
  return s;
}

class PatternSearchSimd : public ::testing::TestWithParam<bool> {
 protected:
  void TearDown() override { set_simd_enabled(true); }
};

TEST_P(PatternSearchSimd, GreedyEqualsBruteForceAndEveryCachedLossEqualsAFullForward) {
  set_simd_enabled(GetParam());
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed) + (GetParam() ? " simd" : " scalar"));
  const int N = 5, topk = 8, windows = 2;
  const int64_t ctx = 64, first = ctx / 2;
  TinyCase s = make_case(seed, N, ctx, windows);
  const LlamaModel& m = *s.tiny.model;
  PatternSearchOptions o;
  o.keep = 1;
  o.topk = topk;
  const PatternSearchResult r = search_pattern(m, s.calib, s.ix, o);
  ASSERT_EQ(r.steps.size(), 4u);

  std::string cur(N, 'F');
  EXPECT_NEAR(r.all_full_loss, reference_loss(m, s.stream, ctx, windows, s.ix, cur, topk, first), kTol);
  for (const SearchStep& st : r.steps) {
    SCOPED_TRACE("pattern before the step " + cur);
    EXPECT_NEAR(st.base_loss, reference_loss(m, s.stream, ctx, windows, s.ix, cur, topk, first), kTol);
    int best = -1;
    double best_loss = 0.0;
    std::vector<int> tried;
    for (int l = 1; l < N; ++l) {
      if (cur[static_cast<size_t>(l)] != 'F') continue;
      std::string cand = cur;
      cand[static_cast<size_t>(l)] = 'S';
      const double ref = reference_loss(m, s.stream, ctx, windows, s.ix, cand, topk, first);
      const auto it = std::find_if(st.candidates.begin(), st.candidates.end(),
                                   [&](const SearchCandidate& c) { return c.layer == l; });
      ASSERT_NE(it, st.candidates.end()) << "layer " << l << " was not tried";
      EXPECT_NEAR(it->loss, ref, kTol) << "candidate layer " << l;
      EXPECT_EQ(it->loss, pattern_loss(m, s.calib, s.ix, share::Schedule::from_pattern(cand), topk))
          << "candidate layer " << l << ": the prefix cache is not bit for bit a full forward";
      if (best < 0 || ref < best_loss) best = l, best_loss = ref;
      tried.push_back(l);
    }
    EXPECT_EQ(st.candidates.size(), tried.size());
    EXPECT_EQ(st.layer, best);
    EXPECT_NEAR(st.loss, best_loss, kTol);
    cur[static_cast<size_t>(best)] = 'S';
    EXPECT_EQ(st.pattern, cur);
  }
  EXPECT_EQ(r.pattern, cur);
  EXPECT_EQ(r.pattern, "FSSSS");  // keep 1: only layer 0 is left
  // DSA mattered: the candidates of the first step do not all score the same.
  const auto& c0 = r.steps[0].candidates;
  EXPECT_TRUE(std::any_of(c0.begin(), c0.end(), [&](const SearchCandidate& c) { return c.loss != c0[0].loss; }));
}

INSTANTIATE_TEST_SUITE_P(Paths, PatternSearchSimd, ::testing::Bool());

// With reindex set, layers leave F for R: every cached candidate loss is bit for bit the full
// forward of its F/R pattern (the prefix cache restores the R layers' sets and the F layer's
// candidates), the pick is the least loss, and the result holds only F and R.
TEST(PatternSearch, ReindexFillSearchesAnFrSchedule) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int N = 5, topk = 6;
  const int64_t ctx = 48;
  TinyCase s = make_case(seed, N, ctx, 1);
  std::mt19937 rng(seed + 1);
  const IndexerSet rx = random_indexers(s.tiny.cfg, rng);
  const LlamaModel& m = *s.tiny.model;
  PatternSearchOptions o;
  o.keep = 2;
  o.topk = topk;
  o.reindex = {.indexers = &rx, .candidates = 14};
  const PatternSearchResult r = search_pattern(m, s.calib, s.ix, o);
  ASSERT_EQ(r.steps.size(), 3u);
  std::string cur(N, 'F');
  for (const SearchStep& st : r.steps) {
    int best = -1;
    double best_loss = 0.0;
    for (const SearchCandidate& c : st.candidates) {
      std::string cand = cur;
      cand[static_cast<size_t>(c.layer)] = 'R';
      EXPECT_EQ(c.loss, pattern_loss(m, s.calib, s.ix, share::Schedule::from_pattern(cand), topk, -1, o.reindex))
          << cand << ": the prefix cache is not bit for bit a full forward";
      if (best < 0 || c.loss < best_loss) best = c.layer, best_loss = c.loss;
    }
    EXPECT_EQ(st.layer, best);
    cur[static_cast<size_t>(best)] = 'R';
    EXPECT_EQ(st.pattern, cur);
  }
  EXPECT_EQ(r.pattern, cur);
  EXPECT_EQ(std::count(cur.begin(), cur.end(), 'F'), 2);
  EXPECT_EQ(std::count(cur.begin(), cur.end(), 'S'), 0);
}

TEST(PatternSearch, KeepIsHonouredLayerZeroStaysFullAndCountsAddUp) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int N = 6, windows = 2;
  const int64_t ctx = 48;
  TinyCase s = make_case(seed, N, ctx, windows);
  const LlamaModel& m = *s.tiny.model;
  for (int keep : {1, 2, 4, 6}) {
    SCOPED_TRACE("keep " + std::to_string(keep));
    PatternSearchOptions o;
    o.keep = keep;
    o.topk = 6;
    int64_t last_done = 0, total_seen = -1;
    int steps_seen = 0;
    o.progress = [&](int64_t done, int64_t total, const SearchStep* st) {
      if (st) {
        ++steps_seen;
        EXPECT_EQ(done, last_done);
      } else {
        EXPECT_EQ(done, last_done + 1);
      }
      last_done = done;
      total_seen = total;
    };
    const PatternSearchResult r = search_pattern(m, s.calib, s.ix, o);
    EXPECT_EQ(static_cast<int>(r.steps.size()), N - keep);
    EXPECT_EQ(steps_seen, N - keep);
    const share::Schedule sched = share::Schedule::from_pattern(r.pattern);  // valid
    EXPECT_EQ(sched.num_full(), keep);
    EXPECT_TRUE(sched.is_full(0));
    int64_t cands = 0, runs = 0;
    for (int f = N; f > keep; --f) cands += f - 1;
    for (size_t i = 0; i < r.steps.size(); ++i) {
      EXPECT_NE(r.steps[i].layer, 0);
      EXPECT_EQ(r.steps[i].num_full, N - 1 - static_cast<int>(i));
      runs += N;
      for (const auto& c : r.steps[i].candidates) runs += N - c.layer;
      if (i > 0) {
        EXPECT_EQ(r.steps[i].base_loss, r.steps[i - 1].loss) << "step " << i;
      }
    }
    if (keep == N) {
      runs = N;
      EXPECT_EQ(total_seen, -1);  // no callback: nothing to evaluate
      EXPECT_NEAR(r.all_full_loss, reference_loss(m, s.stream, ctx, windows, s.ix, std::string(N, 'F'), 6, ctx / 2), kTol);
    } else {
      EXPECT_EQ(total_seen, cands * windows);
      EXPECT_EQ(last_done, cands * windows);
    }
    EXPECT_EQ(r.candidate_evaluations, cands);
    EXPECT_EQ(r.layer_runs, runs * windows);
    EXPECT_EQ(r.layer_runs_uncached, (N + cands * N) * windows);
    EXPECT_EQ(r.scored, windows * (ctx - 1 - ctx / 2));
  }
}

TEST(PatternSearch, TiesGoToTheLowerLayer) {
  // Zero indexers score every key 0: every F layer selects the same (lowest) positions, so every
  // candidate of a step has exactly the same loss.
  auto tiny = testing_util::make_tiny_llama(5, 5);
  const LlamaModel& m = *tiny.model;
  IndexerSet ix;
  ix.cfg = {tiny.cfg.d_model, 2, 8, 4, tiny.cfg.rope_theta};
  ix.layers.assign(5, model::LearnedIndexerWeights::zeros(ix.cfg));
  std::mt19937 rng(6);
  const auto stream = random_tokens(80, tiny.cfg.vocab, rng);
  PatternSearchOptions o;
  o.keep = 2;
  o.topk = 5;
  const PatternSearchResult r = search_pattern(m, make_calibration_set(stream, 40, 2), ix, o);
  ASSERT_EQ(r.steps.size(), 3u);
  for (const auto& st : r.steps)
    for (const auto& c : st.candidates) EXPECT_EQ(c.loss, st.candidates[0].loss);
  EXPECT_EQ(r.steps[0].layer, 1);
  EXPECT_EQ(r.steps[1].layer, 2);
  EXPECT_EQ(r.steps[2].layer, 3);
  EXPECT_EQ(r.pattern, "FSSSF");
}

TEST(PatternSearch, SameResultOnOneAndTwoThreadsAndScoringEveryPosition) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TinyCase s = make_case(seed, 4, 40, 1);
  const LlamaModel& m = *s.tiny.model;
  PatternSearchOptions o;
  o.keep = 1;
  o.topk = 5;
  o.first = 0;
  const int before = num_threads();
  set_num_threads(1);
  const PatternSearchResult a = search_pattern(m, s.calib, s.ix, o);
  set_num_threads(2);
  const PatternSearchResult b = search_pattern(m, s.calib, s.ix, o);
  set_num_threads(before);
  ASSERT_EQ(a.steps.size(), b.steps.size());
  for (size_t i = 0; i < a.steps.size(); ++i) {
    EXPECT_EQ(a.steps[i].layer, b.steps[i].layer);
    ASSERT_EQ(a.steps[i].candidates.size(), b.steps[i].candidates.size());
    for (size_t j = 0; j < a.steps[i].candidates.size(); ++j)
      EXPECT_EQ(a.steps[i].candidates[j].loss, b.steps[i].candidates[j].loss);
  }
  EXPECT_EQ(a.scored, 39);
  std::string cur = "FFFF";
  cur[static_cast<size_t>(a.steps[0].layer)] = 'S';
  EXPECT_NEAR(a.steps[0].loss, reference_loss(m, s.stream, 40, 1, s.ix, cur, 5, 0), kTol);
}

TEST(PatternSearch, UniformPattern) {
  EXPECT_EQ(uniform_pattern(30, 8), "FSSFSSSFSSSFSSSFSSFSSSFSSSFSSS");  // F at 0 3 7 11 15 18 22 26
  EXPECT_EQ(uniform_pattern(4, 4), "FFFF");
  EXPECT_EQ(uniform_pattern(5, 1), "FSSSS");
  EXPECT_EQ(uniform_pattern(6, 2), "FSSFSS");
  expect_error([] { uniform_pattern(4, 0); }, "keep 0");
  expect_error([] { uniform_pattern(4, 5); }, "keep 5");
}

TEST(PatternSearch, BadInputsAreErrors) {
  TinyCase s = make_case(7, 4, 32, 2);
  const LlamaModel& m = *s.tiny.model;
  auto opts = [](int keep, int topk, int64_t first = -1) {
    PatternSearchOptions o;
    o.keep = keep;
    o.topk = topk;
    o.first = first;
    return o;
  };
  expect_error([&] { search_pattern(m, s.calib, s.ix, opts(0, 4)); }, "keep 0");
  expect_error([&] { search_pattern(m, s.calib, s.ix, opts(5, 4)); }, "keep 5");
  expect_error([&] { search_pattern(m, s.calib, s.ix, opts(1, 0)); }, "topk 0");
  expect_error([&] { search_pattern(m, s.calib, s.ix, opts(1, 33)); }, "topk 33");
  expect_error([&] { search_pattern(m, s.calib, s.ix, opts(1, 4, 31)); }, "first scored position");
  expect_error([&] { search_pattern(m, CalibrationSet{}, s.ix, opts(1, 4)); }, "calibration set is empty");
  CalibrationSet ragged = s.calib;
  ragged.inputs[1].pop_back();
  expect_error([&] { search_pattern(m, ragged, s.ix, opts(1, 4)); }, "window 1");
  IndexerSet missing = s.ix;
  missing.layers[2].reset();
  expect_error([&] { search_pattern(m, s.calib, missing, opts(1, 4)); }, "no indexer for layer 2");
  IndexerSet short_set = s.ix;
  short_set.layers.pop_back();
  expect_error([&] { search_pattern(m, s.calib, short_set, opts(1, 4)); }, "3 layers but the model has 4");
  // pattern_loss only needs the F layers' indexers, and checks the pattern's length.
  EXPECT_NO_THROW(pattern_loss(m, s.calib, missing, share::Schedule::from_pattern("FSSF"), 4));
  expect_error([&] { pattern_loss(m, s.calib, missing, share::Schedule::from_pattern("FSFF"), 4); },
               "no indexer for layer 2");
  expect_error([&] { pattern_loss(m, s.calib, s.ix, share::Schedule::from_pattern("FSF"), 4); }, "pattern has 3");

  expect_error([&] { make_calibration_set(s.stream, 32, 3); }, "fewer than 3 windows of 32");
  expect_error([&] { make_calibration_set(s.stream, 1, 1); }, "ctx must be >= 2");
  expect_error([&] { make_calibration_set(s.stream, 32, 0); }, "windows must be >= 1");
}

TEST(PatternSearch, CalibrationWindowsAndBos) {
  std::vector<int32_t> stream(25);
  for (int i = 0; i < 25; ++i) stream[static_cast<size_t>(i)] = i + 100;
  const CalibrationSet c = make_calibration_set(stream, 10, 2, 7);
  ASSERT_EQ(c.inputs.size(), 2u);
  EXPECT_EQ(c.inputs[0], (std::vector<int32_t>{7, 101, 102, 103, 104, 105, 106, 107, 108, 109}));
  EXPECT_EQ(c.inputs[1], (std::vector<int32_t>{7, 111, 112, 113, 114, 115, 116, 117, 118, 119}));
  EXPECT_EQ(c.targets[1], (std::vector<int32_t>{111, 112, 113, 114, 115, 116, 117, 118, 119}));
  const CalibrationSet n = make_calibration_set(stream, 10, 1);
  EXPECT_EQ(n.inputs[0][0], 100);
}

}  // namespace
}  // namespace indexshare::train

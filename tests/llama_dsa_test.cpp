// DSA / IndexShare on a (tiny, random) Llama: it ran, S layers reuse, it equals dense while the
// context fits in k and differs beyond, decode equals prefill, bad configurations are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <random>
#include <vector>

#include "core/error.h"
#include "model/llama_dsa.h"
#include "tiny_llama.h"

namespace indexshare::model {
namespace {

IndexerSet random_indexers(const LlamaConfig& c, uint32_t seed, const share::Schedule* only = nullptr, int heads = 2,
                           int dim = 8) {
  IndexerSet set;
  set.cfg = {c.d_model, heads, dim, 4, c.rope_theta};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (int l = 0; l < c.n_layers; ++l) {
    if (only && !only->is_full(l)) {
      set.layers.emplace_back();
      continue;
    }
    auto w = LearnedIndexerWeights::zeros(set.cfg);
    for (auto* v : {&w.wq, &w.wk, &w.ww})
      for (auto& e : *v) e = nd(rng);
    set.layers.emplace_back(std::move(w));
  }
  return set;
}

std::vector<int32_t> tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

std::vector<float> run(const LlamaModel& m, const std::vector<int32_t>& ids, AttentionBackend* be, int64_t cap,
                       KvType kv = KvType::kF16) {
  KvCache c;
  c.reset(m.config(), cap, kv);
  if (be) be->begin_sequence();
  std::vector<float> logits(ids.size() * static_cast<size_t>(m.config().vocab));
  m.forward(ids.data(), static_cast<int64_t>(ids.size()), c, logits.data(), true, be);
  return logits;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(double(a[i]) - b[i]));
  return d;
}

TEST(LlamaDsa, EqualsDenseWhileContextFitsInKAndDiffersBeyond) {
  auto tiny = testing_util::make_tiny_llama(1);
  const auto& m = *tiny.model;
  const IndexerSet ix = random_indexers(m.config(), 2);
  const auto ids = tokens(40, m.config().vocab, 3);
  const auto dense = run(m, ids, nullptr, 64);
  DsaOptions o{.topk = 40, .schedule = share::Schedule::all_full(4), .indexers = &ix, .capacity = 64};
  LlamaDsaBackend all(m.config(), o);
  double scale = 0.0;
  for (float v : dense) scale = std::max(scale, std::fabs(double(v)));
  // f32 cache: the same keys in a different order, so only f32 summation order differs (the
  // per-layer attention outputs agree to ~1e-7 relative).
  EXPECT_LT(max_abs_diff(run(m, ids, &all, 64, KvType::kF32), run(m, ids, nullptr, 64, KvType::kF32)), 1e-5 * scale);
  // f16 cache: those ~1e-7 differences reach the next layer's K/V before they are rounded to
  // half, and a value on a rounding boundary moves by one half ulp (2^-11 relative); so the
  // bound is a few half ulps of the logits, not f32 rounding.
  EXPECT_LT(max_abs_diff(run(m, ids, &all, 64), dense), 2e-3 * scale) << "max |logit| " << scale;
  o.topk = 8;
  LlamaDsaBackend sparse(m.config(), o);
  EXPECT_GT(max_abs_diff(run(m, ids, &sparse, 64), dense), 1e-2) << "top-8 of 40 keys did not change the output";
  EXPECT_EQ(sparse.counters().indexer_calls, 4);
  EXPECT_EQ(sparse.counters().reused, 0);
  EXPECT_EQ(sparse.counters().sparse_calls, 4);
}

TEST(LlamaDsa, SharedLayersReuseTheFullLayersSetAndHoldNoIndexerState) {
  auto tiny = testing_util::make_tiny_llama(4);
  const auto& m = *tiny.model;
  const auto sched = share::Schedule::from_pattern("FSFS");
  const IndexerSet ix = random_indexers(m.config(), 5, &sched);
  DsaOptions o{.topk = 6, .schedule = sched, .indexers = &ix, .record_stride = 1, .capacity = 64};
  LlamaDsaBackend be(m.config(), o);
  const auto ids = tokens(30, m.config().vocab, 6);
  run(m, ids, &be, 64);
  EXPECT_EQ(be.counters().indexer_calls, 2);
  EXPECT_EQ(be.counters().reused, 2);
  EXPECT_GT(be.indexer_state_bytes(0), 0u);
  EXPECT_EQ(be.indexer_state_bytes(1), 0u);
  EXPECT_EQ(be.indexer_state_bytes(3), 0u);
  EXPECT_EQ(be.recorded()[1], be.recorded()[0]);
  EXPECT_EQ(be.recorded()[3], be.recorded()[2]);
  EXPECT_NE(be.recorded()[2], be.recorded()[0]);
  for (const auto& row : be.recorded()[0]) EXPECT_LE(row.size(), 6u);
}

TEST(LlamaDsa, DecodeStepByStepEqualsPrefill) {
  auto tiny = testing_util::make_tiny_llama(7);
  const auto& m = *tiny.model;
  const auto sched = share::Schedule::from_pattern("FSSF");
  const IndexerSet ix = random_indexers(m.config(), 8, &sched);
  DsaOptions o{.topk = 5, .schedule = sched, .indexers = &ix, .capacity = 64};
  const auto ids = tokens(20, m.config().vocab, 9);
  LlamaDsaBackend a(m.config(), o), b(m.config(), o);
  const auto pre = run(m, ids, &a, 64);
  KvCache c;
  c.reset(m.config(), 64);
  b.begin_sequence();
  const int V = m.config().vocab;
  std::vector<float> step(static_cast<size_t>(V));
  for (size_t t = 0; t < ids.size(); ++t) {
    m.forward(&ids[t], 1, c, step.data(), false, &b);
    for (int v = 0; v < V; ++v) ASSERT_NEAR(step[static_cast<size_t>(v)], pre[t * V + static_cast<size_t>(v)], 1e-4) << t;
  }
}

TEST(LlamaDsa, OracleRecallIsAnUpperBoundAndMeasuresAreSane) {
  auto tiny = testing_util::make_tiny_llama(10);
  const auto& m = *tiny.model;
  const IndexerSet ix = random_indexers(m.config(), 11);
  const auto ids = tokens(48, m.config().vocab, 12);
  DsaOptions o{.topk = 6, .schedule = share::Schedule::from_pattern("FSFS"), .indexers = &ix, .own_indexers = &ix,
               .measure = true, .capacity = 64};
  LlamaDsaBackend learned(m.config(), o);
  run(m, ids, &learned, 64);
  o.selection = DsaSelection::kOracle;
  o.schedule = share::Schedule::all_full(4);
  LlamaDsaBackend oracle(m.config(), o);
  run(m, ids, &oracle, 64);
  for (int l = 0; l < 4; ++l) {
    const auto& so = oracle.layer_stats()[static_cast<size_t>(l)];
    const auto& sl = learned.layer_stats()[static_cast<size_t>(l)];
    ASSERT_EQ(so.rows, 48);
    const double ro = so.recall_sum / so.rows, rl = sl.recall_sum / sl.rows;
    EXPECT_LE(ro, 1.0 + 1e-5);
    EXPECT_GE(ro, rl - 1e-6) << "layer " << l << ": the oracle set must hold the most attention mass";
    if (l % 2 == 1) {
      EXPECT_EQ(sl.overlap_rows, 48);
      EXPECT_GE(sl.overlap_sum, 0.0);
      EXPECT_LE(sl.overlap_sum, 48.0);
    }
  }
}

// Per-head recall against float64: a wrapper computes each head's softmax attention of every
// measured row from the call's own q and keys, the wrapped DSA backend records its sets on the
// same rows, and each head's mean mass inside its row's set must equal head_recall_sum / rows
// (GQA: 4 heads over 2 KV heads, so the head -> KV-group mapping is exercised); the layer's
// recall is the heads' mean.
TEST(LlamaDsa, PerHeadRecallMatchesFloat64) {
  auto tiny = testing_util::make_tiny_llama(18);
  const auto& m = *tiny.model;
  const auto& c = m.config();
  const IndexerSet ix = random_indexers(c, 19);
  const auto ids = tokens(40, c.vocab, 20);
  const int64_t stride = 3;
  DsaOptions o{.topk = 6, .schedule = share::Schedule::from_pattern("FSFS"), .indexers = &ix, .measure = true,
               .measure_stride = stride, .record_stride = stride, .capacity = 64};
  struct Probe : AttentionBackend {
    LlamaDsaBackend& inner;
    const LlamaConfig& c;
    int64_t stride;
    // [layer][row] -> [head][key] float64 attention of the measured rows
    std::vector<std::vector<std::vector<std::vector<double>>>> P;
    Probe(LlamaDsaBackend& b, const LlamaConfig& cfg, int64_t st) : inner(b), c(cfg), stride(st), P(cfg.n_layers) {}
    void begin_sequence() override { inner.begin_sequence(); }
    bool attend(const AttentionCall& a) override {
      std::vector<float> scratch;
      const float* k = attention_keys_f32(a, int64_t{c.n_kv_heads} * c.head_dim, scratch);
      for (int64_t t = 0; t < a.T; ++t) {
        const int64_t pos = a.pos0 + t;
        if (pos % stride) continue;
        std::vector<std::vector<double>> row(static_cast<size_t>(c.n_heads));
        for (int h = 0; h < c.n_heads; ++h) {
          const int g = h / (c.n_heads / c.n_kv_heads);
          std::vector<double> sc(static_cast<size_t>(pos + 1));
          double mx = -INFINITY, z = 0.0;
          for (int64_t s = 0; s <= pos; ++s) {
            double d = 0.0;
            for (int i = 0; i < c.head_dim; ++i)
              d += double(a.q[(t * c.n_heads + h) * c.head_dim + i]) * k[(s * c.n_kv_heads + g) * c.head_dim + i];
            sc[static_cast<size_t>(s)] = a.scale * d;
            mx = std::max(mx, sc[static_cast<size_t>(s)]);
          }
          for (auto& v : sc) z += (v = std::exp(v - mx));
          for (auto& v : sc) v /= z;
          row[static_cast<size_t>(h)] = std::move(sc);
        }
        P[static_cast<size_t>(a.layer)].push_back(std::move(row));
      }
      return inner.attend(a);
    }
  };
  LlamaDsaBackend dsa(c, o);
  Probe probe(dsa, c, stride);
  run(m, ids, &probe, 64);
  double spread = 0.0;  // how far the heads' recalls differ somewhere (the test must see heads apart)
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& st = dsa.layer_stats()[static_cast<size_t>(l)];
    const auto& sets = dsa.recorded()[static_cast<size_t>(l)];
    const auto& rows = probe.P[static_cast<size_t>(l)];
    ASSERT_EQ(st.rows, static_cast<int64_t>(rows.size()));
    ASSERT_EQ(sets.size(), rows.size());
    ASSERT_EQ(st.head_recall_sum.size(), static_cast<size_t>(c.n_heads));
    double mean_of_heads = 0.0, lo = 1.0, hi = 0.0;
    for (int h = 0; h < c.n_heads; ++h) {
      double want = 0.0;
      for (size_t i = 0; i < rows.size(); ++i)
        for (int32_t s : sets[i])
          if (s >= 0) want += rows[i][static_cast<size_t>(h)][static_cast<size_t>(s)];
      want /= static_cast<double>(rows.size());
      const double got = st.head_recall_sum[static_cast<size_t>(h)] / static_cast<double>(st.rows);
      EXPECT_NEAR(got, want, 1e-5) << "layer " << l << " head " << h;
      mean_of_heads += got / c.n_heads;
      lo = std::min(lo, want);
      hi = std::max(hi, want);
    }
    EXPECT_NEAR(st.recall_sum / static_cast<double>(st.rows), mean_of_heads, 1e-9) << "layer " << l;
    spread = std::max(spread, hi - lo);
  }
  EXPECT_GT(spread, 1e-3);
}

// The S-layer overlap statistic against sets recorded independently: with pattern FSFS, layer 1
// reuses layer 0's sets, and what layer 1's own indexer would pick is what it picks when it is F
// (pattern FFFF: layer 1 sees the same input, since layer 0 runs the same way in both). Measured
// on every third row, as eval measures every 16th.
TEST(LlamaDsa, OverlapEqualsTheSetsRecordedWithTheLayerF) {
  auto tiny = testing_util::make_tiny_llama(15);
  const auto& m = *tiny.model;
  const IndexerSet ix = random_indexers(m.config(), 16);
  const auto ids = tokens(45, m.config().vocab, 17);
  const int64_t stride = 3;
  DsaOptions o{.topk = 7, .schedule = share::Schedule::from_pattern("FSFS"), .indexers = &ix, .own_indexers = &ix,
               .measure = true, .measure_stride = stride, .capacity = 64};
  LlamaDsaBackend shared(m.config(), o);
  run(m, ids, &shared, 64);
  o.schedule = share::Schedule::all_full(4);
  o.measure = false;
  o.record_stride = 1;
  LlamaDsaBackend full(m.config(), o);
  run(m, ids, &full, 64);
  const auto& reused = full.recorded()[0];  // layer 0 is F in both runs: the set layer 1 reuses
  const auto& own = full.recorded()[1];
  ASSERT_EQ(static_cast<int64_t>(own.size()), 45);
  double want = 0.0;
  int64_t rows = 0;
  for (size_t t = 0; t < own.size(); t += stride) {
    std::vector<int32_t> both;
    std::set_intersection(reused[t].begin(), reused[t].end(), own[t].begin(), own[t].end(), std::back_inserter(both));
    want += static_cast<double>(both.size()) / static_cast<double>(own[t].size());
    ++rows;
  }
  const auto& st = shared.layer_stats()[1];
  EXPECT_EQ(st.overlap_rows, rows);
  EXPECT_EQ(st.rows, rows);
  EXPECT_NEAR(st.overlap_sum, want, 1e-12);
  EXPECT_LT(want, static_cast<double>(rows)) << "random indexers of two layers should disagree somewhere";
}

// Reindex (R) layers: layer 0 (F) carries its top-C over, each R layer keeps k of exactly those
// (checked against layer 0's top-C recorded in a run where layer 0 selects C), the S layer after
// an R layer reuses the R layer's set, R layers hold a (smaller) indexer-K cache, and decode
// step by step equals prefill.
TEST(LlamaDsa, ReindexLayersPickFromTheirFullLayersCandidates) {
  auto tiny = testing_util::make_tiny_llama(21);
  const auto& m = *tiny.model;
  const auto sched = share::Schedule::from_pattern("FRSR");
  const IndexerSet ix = random_indexers(m.config(), 22);
  const IndexerSet rx = random_indexers(m.config(), 23, nullptr, 1, 4);
  const auto ids = tokens(40, m.config().vocab, 24);
  const int K = 5, C = 11;
  DsaOptions o{.topk = K, .schedule = sched, .indexers = &ix, .reindexers = &rx, .candidates = C, .record_stride = 1,
               .capacity = 64};
  LlamaDsaBackend be(m.config(), o);
  const auto pre = run(m, ids, &be, 64);
  EXPECT_EQ(be.counters().indexer_calls, 1);
  EXPECT_EQ(be.counters().reindex_calls, 2);
  EXPECT_EQ(be.counters().reused, 1);
  EXPECT_GT(be.indexer_state_bytes(1), 0u);
  EXPECT_LT(be.indexer_state_bytes(1), be.indexer_state_bytes(0)) << "1 x 4 dims against 2 x 8";
  EXPECT_EQ(be.indexer_state_bytes(2), 0u);
  EXPECT_EQ(be.recorded()[2], be.recorded()[1]) << "S after R reuses the R layer's set";
  // Layer 0's candidates: its top-C, recorded with k = C (layer 0 sees the same input either way).
  LlamaDsaBackend wide(m.config(), {.topk = C, .schedule = share::Schedule::all_full(4), .indexers = &ix,
                                    .record_stride = 1, .capacity = 64});
  run(m, ids, &wide, 64);
  const auto& cand = wide.recorded()[0];
  ASSERT_EQ(cand.size(), ids.size());
  int differs = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    EXPECT_EQ(be.recorded()[0][t].size(), std::min<size_t>(t + 1, K));
    for (int l : {1, 3}) {
      const auto& got = be.recorded()[static_cast<size_t>(l)][t];
      EXPECT_EQ(got.size(), std::min<size_t>(t + 1, K)) << "layer " << l << " row " << t;
      EXPECT_TRUE(std::includes(cand[t].begin(), cand[t].end(), got.begin(), got.end()))
          << "layer " << l << " row " << t << " picked outside layer 0's top-" << C;
      differs += got != be.recorded()[0][t];
    }
  }
  EXPECT_GT(differs, 0) << "the R layers' own indexers should re-rank somewhere";
  // Decode one token at a time gives the same logits.
  LlamaDsaBackend step_be(m.config(), o);
  KvCache c;
  c.reset(m.config(), 64);
  step_be.begin_sequence();
  const int V = m.config().vocab;
  std::vector<float> step(static_cast<size_t>(V));
  for (size_t t = 0; t < ids.size(); ++t) {
    m.forward(&ids[t], 1, c, step.data(), false, &step_be);
    for (int v = 0; v < V; ++v) ASSERT_NEAR(step[static_cast<size_t>(v)], pre[t * V + static_cast<size_t>(v)], 1e-4) << t;
  }
}

// With every visible key a candidate (C >= context) and the layer's own indexer as its R indexer,
// an R layer selects what the layer selects as F.
TEST(LlamaDsa, ReindexOverEveryKeyEqualsFull) {
  auto tiny = testing_util::make_tiny_llama(25);
  const auto& m = *tiny.model;
  const IndexerSet ix = random_indexers(m.config(), 26);
  const auto ids = tokens(48, m.config().vocab, 27);
  DsaOptions o{.topk = 6, .schedule = share::Schedule::from_pattern("FRRR"), .indexers = &ix, .reindexers = &ix,
               .candidates = 64, .record_stride = 1, .capacity = 64};
  LlamaDsaBackend r(m.config(), o);
  const auto lr = run(m, ids, &r, 64, KvType::kF32);
  o.schedule = share::Schedule::all_full(4);
  LlamaDsaBackend f(m.config(), o);
  const auto lf = run(m, ids, &f, 64, KvType::kF32);
  // The scores are the same sums in the same order, up to fused multiply-adds in the F path.
  int same = 0, rows = 0;
  for (int l = 1; l < 4; ++l)
    for (size_t t = 0; t < ids.size(); ++t, ++rows) same += r.recorded()[static_cast<size_t>(l)][t] == f.recorded()[static_cast<size_t>(l)][t];
  EXPECT_GE(same, rows - 2) << "R over every key must select as F does";
  EXPECT_GT(r.counters().reindex_calls, 0);
}

TEST(LlamaDsa, RefusesBadConfigurations) {
  auto tiny = testing_util::make_tiny_llama(13);
  const auto& m = *tiny.model;
  const auto sched = share::Schedule::from_pattern("FSFS");
  const IndexerSet partial = random_indexers(m.config(), 14, &sched);
  EXPECT_THROW(LlamaDsaBackend(m.config(), {.topk = 4, .schedule = share::Schedule::from_pattern("FFS"), .indexers = &partial, .capacity = 8}), Error);
  try {
    LlamaDsaBackend(m.config(), {.topk = 4, .schedule = share::Schedule::from_pattern("FFFF"), .indexers = &partial, .capacity = 8});
    FAIL() << "missing indexer accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(LlamaDsaBackend(m.config(), {.topk = 0, .schedule = sched, .indexers = &partial, .capacity = 8}), Error);
  EXPECT_THROW(LlamaDsaBackend(m.config(), {.topk = 4, .schedule = sched, .indexers = nullptr, .capacity = 8}), Error);
  EXPECT_THROW(share::Schedule::from_pattern("SFFF"), Error);
  // Reindex layers need their own indexers, for every R layer, and C >= k; oracle has no R.
  const IndexerSet all = random_indexers(m.config(), 15);
  const auto frsr = share::Schedule::from_pattern("FRSR");
  EXPECT_THROW(LlamaDsaBackend(m.config(), {.topk = 4, .schedule = frsr, .indexers = &all, .candidates = 8, .capacity = 8}), Error);
  EXPECT_THROW(LlamaDsaBackend(m.config(), {.topk = 4, .schedule = frsr, .indexers = &all, .reindexers = &all, .candidates = 3, .capacity = 8}), Error);
  try {
    LlamaDsaBackend(m.config(), {.topk = 4, .schedule = frsr, .indexers = &all, .reindexers = &partial, .candidates = 8, .capacity = 8});
    FAIL() << "missing reindex indexer accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1 is R"), std::string::npos) << e.what();
  }
  EXPECT_THROW(LlamaDsaBackend(m.config(), {.topk = 4, .schedule = frsr, .selection = DsaSelection::kOracle, .capacity = 8}), Error);
}

}  // namespace
}  // namespace indexshare::model

#include "share/layer_stack.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/sparse_attention.h"
#include "ref/share_ref.h"

namespace indexshare::share {
namespace {

struct Dims {
  int Dm = 16;              // hidden width of the toy model
  int HI = 2, DI = 8, K = 8;  // indexer heads, dim, top-k
  int H = 2, Hkv = 1, Dk = 8, Dv = 8;
  int64_t max_ctx = 48;
  bool mla = false;         // MLA form: latent [L, Dk], value = first Dv
};

std::vector<float> random_vec(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// y[t, :] = x[t, :] @ W, W: [in, out] row-major.
void matmul(const float* x, const std::vector<float>& W, int64_t T, int in, int out, float* y) {
  for (int64_t t = 0; t < T; ++t)
    for (int o = 0; o < out; ++o) {
      float acc = 0;
      for (int i = 0; i < in; ++i) acc += x[t * in + i] * W[static_cast<size_t>(i) * out + o];
      y[t * out + o] = acc;
    }
}

// A random decoder layer that records what it saw.
class RandomLayer : public DsaLayer {
 public:
  struct Record {
    StepInfo s;
    std::vector<float> iq, iw;   // indexer query / weights (F layers)
    std::vector<float> q, out;   // attention query and output
    std::vector<int32_t> idx;    // the shared buffer as this layer read it [T, K]
  };

  RandomLayer(bool full, const Dims& d, std::mt19937& rng) : d_(d), full_(full) {
    const float s = 1.0f / std::sqrt(static_cast<float>(d.Dm));
    if (full) {  // S layers own no indexer weights at all
      wq_i = random_vec(static_cast<size_t>(d.Dm * d.HI * d.DI), rng, s);
      wk_i = random_vec(static_cast<size_t>(d.Dm * d.DI), rng, s);
      ww_i = random_vec(static_cast<size_t>(d.Dm * d.HI), rng, s);
    }
    const int kw = d.mla ? d.Dk : d.Hkv * d.Dk;
    wq = random_vec(static_cast<size_t>(d.Dm * d.H * d.Dk), rng, 2 * s);
    wk = random_vec(static_cast<size_t>(d.Dm * kw), rng, 2 * s);
    if (!d.mla) wv = random_vec(static_cast<size_t>(d.Dm * d.Hkv * d.Dv), rng, s);
    wo = random_vec(static_cast<size_t>(d.H * d.Dv * d.Dm), rng, s);
    kcache.resize(static_cast<size_t>(d.max_ctx * kw));
    if (!d.mla) vcache.resize(static_cast<size_t>(d.max_ctx * d.Hkv * d.Dv));
  }

  void indexer_inputs(int, const StepInfo& s, const float* hidden, float* q, float* w, float* k_new) override {
    if (!full_) throw Error("indexer_inputs called on a shared layer");
    ++indexer_calls;
    matmul(hidden, wq_i, s.T, d_.Dm, d_.HI * d_.DI, q);
    matmul(hidden, ww_i, s.T, d_.Dm, d_.HI, w);
    matmul(hidden, wk_i, s.T, d_.Dm, d_.DI, k_new);
    Record r;
    r.iq.assign(q, q + s.T * d_.HI * d_.DI);
    r.iw.assign(w, w + s.T * d_.HI);
    pending_ = std::move(r);
    ikeys.insert(ikeys.end(), k_new, k_new + s.T * d_.DI);
  }

  AttentionView attention_inputs(int, const StepInfo& s, const float* hidden) override {
    Record r = full_ ? std::move(pending_) : Record{};
    r.s = s;
    r.q.resize(static_cast<size_t>(s.T * d_.H * d_.Dk));
    matmul(hidden, wq, s.T, d_.Dm, d_.H * d_.Dk, r.q.data());
    const int kw = d_.mla ? d_.Dk : d_.Hkv * d_.Dk;
    matmul(hidden, wk, s.T, d_.Dm, kw, kcache.data() + s.q_start * kw);
    if (!d_.mla) matmul(hidden, wv, s.T, d_.Dm, d_.Hkv * d_.Dv, vcache.data() + s.q_start * d_.Hkv * d_.Dv);
    r.idx.assign(stack->topk_indices(), stack->topk_indices() + stack->topk_rows() * d_.K);
    recs.push_back(std::move(r));
    out.assign(static_cast<size_t>(s.T * d_.H * d_.Dv), 0.0f);
    AttentionView v;
    v.form = d_.mla ? AttentionView::Form::kMla : AttentionView::Form::kGqa;
    v.q = recs.back().q.data();
    v.k = kcache.data();
    v.v = d_.mla ? nullptr : vcache.data();
    v.H = d_.H;
    v.H_kv = d_.Hkv;
    v.Dk = d_.Dk;
    v.Dv = d_.Dv;
    v.scale = 1.0f / std::sqrt(static_cast<float>(d_.Dk));
    v.out = out.data();
    return v;
  }

  void finish(int, const StepInfo& s, float* hidden) override {
    recs.back().out = out;
    std::vector<float> delta(static_cast<size_t>(s.T * d_.Dm));
    matmul(out.data(), wo, s.T, d_.H * d_.Dv, d_.Dm, delta.data());
    for (size_t i = 0; i < delta.size(); ++i) hidden[i] += 0.25f * delta[i];
  }

  Dims d_;
  bool full_;
  std::vector<float> wq_i, wk_i, ww_i, wq, wk, wv, wo, kcache, vcache, out, ikeys;
  std::vector<Record> recs;
  Record pending_;
  int indexer_calls = 0;
  const LayerStack* stack = nullptr;
};

struct Run {
  std::vector<std::unique_ptr<RandomLayer>> layers;
  std::unique_ptr<LayerStack> stack;
  std::vector<float> final_hidden;
};

// Prefill of `prefill` tokens, then `decode` single-token steps.
Run run(const Schedule& sched, const Dims& d, unsigned seed, int64_t prefill, int decode) {
  std::mt19937 rng(seed);
  Run r;
  std::vector<DsaLayer*> ptrs;
  for (int i = 0; i < sched.num_layers(); ++i) {
    r.layers.push_back(std::make_unique<RandomLayer>(sched.is_full(i), d, rng));
    ptrs.push_back(r.layers.back().get());
  }
  LayerStackOptions o;
  o.index_heads = d.HI;
  o.index_dim = d.DI;
  o.topk = d.K;
  o.max_context = d.max_ctx;
  o.key_tile = 7;  // several key tiles even for short contexts
  o.row_block = 3;
  r.stack = std::make_unique<LayerStack>(sched, o, ptrs);
  for (auto& l : r.layers) l->stack = r.stack.get();
  for (int step = 0; step <= decode; ++step) {
    const int64_t T = step == 0 ? prefill : 1;
    auto h = random_vec(static_cast<size_t>(T * d.Dm), rng, 1.0f);
    r.stack->forward(h.data(), T);
    r.final_hidden.insert(r.final_hidden.end(), h.begin(), h.end());
  }
  return r;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double mag = 0;
  for (double w : want) mag = std::max(mag, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + mag) + 1e-4 * std::abs(want[i])) << what << " at " << i << ", max|want| " << mag;
}

void check_run(const Schedule& sched, const Dims& d, const Run& r, int steps) {
  const auto& c = r.stack->counters();
  EXPECT_EQ(c.steps, steps);
  EXPECT_EQ(c.indexer_calls, sched.num_full() * steps);
  EXPECT_EQ(c.shared_reuses, sched.num_shared() * steps);
  EXPECT_EQ(c.attention_calls, sched.num_layers() * steps);
  const size_t per_f = static_cast<size_t>(d.max_ctx) * d.DI * sizeof(float);
  EXPECT_EQ(r.stack->indexer_state_bytes_total(), per_f * sched.num_full());
  const double iscale = 1.0 / std::sqrt(static_cast<double>(d.HI) * d.DI);
  bool differs_from_dense = false, had_long_rows = false;

  for (int i = 0; i < sched.num_layers(); ++i) {
    SCOPED_TRACE(testing::Message() << "layer " << i << (sched.is_full(i) ? " (F)" : " (S)"));
    const RandomLayer& L = *r.layers[static_cast<size_t>(i)];
    const RandomLayer& src = *r.layers[static_cast<size_t>(sched.source(i))];
    ASSERT_EQ(L.recs.size(), static_cast<size_t>(steps));
    if (sched.is_full(i)) {
      EXPECT_EQ(r.stack->indexer_state_bytes(i), per_f);
      EXPECT_EQ(L.indexer_calls, steps);
    } else {
      EXPECT_EQ(r.stack->indexer_state_bytes(i), 0u);
      EXPECT_EQ(L.indexer_calls, 0);
      EXPECT_TRUE(L.wq_i.empty() && L.wk_i.empty() && L.ww_i.empty());
    }
    for (int st = 0; st < steps; ++st) {
      SCOPED_TRACE(testing::Message() << "step " << st);
      const auto& rec = L.recs[static_cast<size_t>(st)];
      const StepInfo& s = rec.s;
      // An S layer reads exactly what its source F layer left in the buffer.
      EXPECT_EQ(rec.idx, src.recs[static_cast<size_t>(st)].idx);
      if (sched.is_full(i)) {
        // The F layer's rows are a correct top-k of the float64 reference scores.
        const auto sc = share_ref::indexer_scores(rec.iq.data(), L.ikeys.data(), rec.iw.data(), s.T, s.L, d.HI, d.DI,
                                                  s.q_start, iscale);
        for (int64_t t = 0; t < s.T; ++t) {
          const auto sel = share_ref::row_set(rec.idx.data(), t, d.K);
          const int64_t visible = s.q_start + t + 1;
          ASSERT_EQ(static_cast<int64_t>(sel.size()), std::min<int64_t>(d.K, visible)) << "row " << t;
          std::set<int64_t> chosen(sel.begin(), sel.end());
          ASSERT_EQ(chosen.size(), sel.size()) << "duplicate index, row " << t;
          double min_sel = INFINITY, max_rest = -INFINITY, mag = 0;
          for (int64_t p = 0; p < visible; ++p) {
            const double v = sc[static_cast<size_t>(t * s.L + p)];
            mag = std::max(mag, std::abs(v));
            if (chosen.count(p)) min_sel = std::min(min_sel, v);
            else max_rest = std::max(max_rest, v);
          }
          ASSERT_LT(*chosen.rbegin(), visible) << "future key selected, row " << t;
          EXPECT_GE(min_sel, max_rest - 1e-5 * (1 + mag)) << "row " << t;
        }
      }
      // Output = sparse attention of this layer's own q / K / V over the buffer's indices.
      const double ascale = 1.0 / std::sqrt(static_cast<double>(d.Dk));
      const auto want = d.mla ? share_ref::sparse_mla(rec.q.data(), L.kcache.data(), rec.idx.data(), s.T, d.H, d.Dk,
                                                      d.Dv, d.K, ascale)
                              : share_ref::sparse_gqa(rec.q.data(), L.kcache.data(), L.vcache.data(), rec.idx.data(),
                                                      s.T, d.H, d.Hkv, d.Dk, d.Dv, d.K, ascale);
      expect_close(rec.out, want, "attention output");
      if (!sched.is_full(i)) {
        // Bitwise: the S layer's output is what the op gives with its F layer's indices.
        std::vector<float> direct(rec.out.size());
        if (d.mla) {
          ops::SparseMlaParams p;
          p.q = rec.q.data(), p.kv = L.kcache.data(), p.indices = src.recs[static_cast<size_t>(st)].idx.data();
          p.T = s.T, p.L = s.L, p.H = d.H, p.Dqk = d.Dk, p.Dv = d.Dv, p.K = d.K;
          p.scale = 1.0f / std::sqrt(static_cast<float>(d.Dk)), p.out = direct.data();
          ops::sparse_mla(p);
        } else {
          ops::SparseAttentionParams p;
          p.q = rec.q.data(), p.k = L.kcache.data(), p.v = L.vcache.data();
          p.indices = src.recs[static_cast<size_t>(st)].idx.data();
          p.T = s.T, p.L = s.L, p.H = d.H, p.H_kv = d.Hkv, p.Dk = d.Dk, p.Dv = d.Dv, p.K = d.K;
          p.scale = 1.0f / std::sqrt(static_cast<float>(d.Dk)), p.out = direct.data();
          ops::sparse_attention(p);
        }
        EXPECT_EQ(direct, rec.out);
      }
      if (!d.mla) {
        const auto dense = share_ref::dense_gqa(rec.q.data(), L.kcache.data(), L.vcache.data(), s.T, s.q_start, d.H,
                                                d.Hkv, d.Dk, d.Dv, ascale);
        for (int64_t t = 0; t < s.T; ++t) {
          double diff = 0;
          for (int j = 0; j < d.H * d.Dv; ++j) {
            const size_t k = static_cast<size_t>(t * d.H * d.Dv + j);
            diff = std::max(diff, std::abs(rec.out[k] - dense[k]));
          }
          if (s.q_start + t + 1 <= d.K) EXPECT_LT(diff, 1e-4) << "row " << t << ": context <= k must equal dense";
          else {
            had_long_rows = true;
            if (diff > 1e-3) differs_from_dense = true;
          }
        }
      }
    }
  }
  if (had_long_rows) {
    EXPECT_TRUE(differs_from_dense) << "context > k but sparse output equals dense";
  }
}

TEST(LayerStack, GqaLayersFollowTheSchedule) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  ScheduleInput in;
  in.num_layers = 8;
  in.index_topk_freq = 4;
  in.index_skip_topk_offset = 3;
  const auto sched = Schedule::resolve(in);  // FFFSSSFS
  ASSERT_EQ(sched.pattern(), "FFFSSSFS");
  Dims d;
  for (bool simd : {true, false}) {
    SCOPED_TRACE(testing::Message() << "simd " << simd);
    set_simd_enabled(simd);
    const auto r = run(sched, d, seed, 24, 5);  // L up to 29 > K = 8
    check_run(sched, d, r, 6);
  }
  set_simd_enabled(true);
}

TEST(LayerStack, MlaLayersAndASearchedPattern) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  const auto sched = Schedule::from_pattern("FSFFSSSF");
  Dims d;
  d.mla = true;
  d.H = 3;
  d.Dk = 12;
  d.Dv = 8;
  d.K = 5;
  const auto r = run(sched, d, seed, 9, 4);
  check_run(sched, d, r, 5);
}

TEST(LayerStack, ShortContextEqualsDenseAndAllFullHasNoReuse) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  const auto sched = Schedule::all_full(3);
  Dims d;
  d.K = 16;
  const auto r = run(sched, d, seed, 10, 3);  // context <= K throughout
  check_run(sched, d, r, 4);
  EXPECT_EQ(r.stack->counters().shared_reuses, 0);
}

TEST(LayerStack, BitwiseIdenticalForOneAndTwoThreads) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  const auto sched = Schedule::from_pattern("FSSFS");
  Dims d;
  set_num_threads(1);
  const auto a = run(sched, d, seed, 20, 2);
  set_num_threads(2);
  const auto b = run(sched, d, seed, 20, 2);
  EXPECT_EQ(a.final_hidden, b.final_hidden);
}

TEST(LayerStack, ResetAndZeroRowsAndBadInput) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  const auto sched = Schedule::from_pattern("FS");
  Dims d;
  d.max_ctx = 6;
  std::mt19937 rng(seed);
  RandomLayer l0(true, d, rng), l1(false, d, rng);
  LayerStackOptions o;
  o.index_heads = d.HI;
  o.index_dim = d.DI;
  o.topk = d.K;
  o.max_context = d.max_ctx;
  LayerStack st(sched, o, {&l0, &l1});
  l0.stack = l1.stack = &st;
  std::vector<float> h(static_cast<size_t>(6 * d.Dm), 0.5f);
  st.forward(h.data(), 0);
  EXPECT_EQ(st.counters().steps, 0);
  st.forward(h.data(), 4);
  EXPECT_EQ(st.tokens(), 4);
  try {
    st.forward(h.data(), 3);
    ADD_FAILURE() << "no error past max_context";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceed max_context = 6"), std::string::npos) << e.what();
  }
  st.reset();
  EXPECT_EQ(st.tokens(), 0);
  st.forward(h.data(), 6);
  EXPECT_EQ(st.counters().indexer_calls, 2);
  EXPECT_EQ(st.counters().shared_reuses, 2);
  EXPECT_THROW(st.forward(h.data(), -1), Error);
  EXPECT_THROW(st.indexer_state_bytes(2), Error);

  auto expect_ctor_error = [&](LayerStackOptions opt, std::vector<DsaLayer*> ls, const std::string& needle) {
    try {
      LayerStack bad(sched, opt, std::move(ls));
      ADD_FAILURE() << "no error; expected " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_ctor_error(o, {&l0}, "layers: 1 given but the schedule has 2");
  expect_ctor_error(o, {&l0, nullptr}, "layers[1] is null");
  LayerStackOptions bad = o;
  bad.topk = 0;
  expect_ctor_error(bad, {&l0, &l1}, "topk = 0");
  bad = o;
  bad.max_context = 0;
  expect_ctor_error(bad, {&l0, &l1}, "max_context = 0");
  bad = o;
  bad.index_dim = -2;
  expect_ctor_error(bad, {&l0, &l1}, "index_dim = -2");
}

}  // namespace
}  // namespace indexshare::share

// The MTP head (model/mtp.h), its file (io/mtp_file.h) and speculative decoding
// (model/speculative.h): the head against a float64 forward written here from the definition,
// greedy speculative output against plain greedy decoding for every draft length and draft
// attention, rejection sampling against the target distribution (closed form), bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "io/mtp_file.h"
#include "io/safetensors.h"
#include "model/mtp.h"
#include "model/speculative.h"
#include "tiny_llama.h"

namespace indexshare {
namespace {

using model::DraftAttention;
using io::StDType;
using io::StWriteTensor;
using io::write_safetensors;

// Random head weights for a tiny model, f32 (owned by `store`), optionally with an indexer.
struct TinyHead {
  std::vector<std::vector<float>> store;
  model::MtpWeights w;
};

TinyHead make_head(const model::LlamaConfig& c, uint32_t seed, bool indexer, float qk_scale = 3.0f) {
  TinyHead h;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto make = [&](int64_t n, float scale, float offset = 0.0f) {
    h.store.emplace_back(static_cast<size_t>(n));
    for (auto& v : h.store.back()) v = offset + scale * nd(rng);
    return h.store.size() - 1;
  };
  auto mat = [&](int64_t N, int64_t K, float gain = 1.0f) {
    const size_t i = make(N * K, gain / std::sqrt(static_cast<float>(K)));
    return model::QMatrix{h.store[i].data(), GgmlType::kF32, N, K};
  };
  const int64_t d = c.d_model, q = int64_t{c.n_heads} * c.head_dim, kv = int64_t{c.n_kv_heads} * c.head_dim;
  h.w.enorm = h.store[make(d, 0.1f, 1.0f)];
  h.w.hnorm = h.store[make(d, 0.1f, 1.0f)];
  h.w.shared_head_norm = h.store[make(d, 0.1f, 1.0f)];
  h.w.eh_proj = mat(d, 2 * d);
  h.w.block.attn_norm = h.store[make(d, 0.1f, 1.0f)].data();
  h.w.block.ffn_norm = h.store[make(d, 0.1f, 1.0f)].data();
  h.w.block.wq = mat(q, d, qk_scale);
  h.w.block.wk = mat(kv, d, qk_scale);
  h.w.block.wv = mat(kv, d);
  h.w.block.wo = mat(d, q);
  h.w.block.w_gate = mat(c.ffn_dim, d);
  h.w.block.w_up = mat(c.ffn_dim, d);
  h.w.block.w_down = mat(d, c.ffn_dim);
  if (indexer) {
    model::LearnedIndexerConfig ic{static_cast<int>(d), 2, 8, 4, c.rope_theta};
    auto iw = model::LearnedIndexerWeights::zeros(ic);
    for (auto* v : {&iw.wq, &iw.wk, &iw.ww})
      for (auto& x : *v) x = nd(rng) / std::sqrt(static_cast<float>(d));
    h.w.indexer = std::move(iw);
  }
  return h;
}

double f64(const model::QMatrix& m, int64_t n, int64_t k) { return static_cast<const float*>(m.data)[n * m.K + k]; }

std::vector<double> rms(const std::vector<double>& x, const float* w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
  return y;
}

std::vector<double> mv(const model::QMatrix& m, const std::vector<double>& x) {
  std::vector<double> y(static_cast<size_t>(m.N), 0.0);
  for (int64_t n = 0; n < m.N; ++n)
    for (int64_t k = 0; k < m.K; ++k) y[static_cast<size_t>(n)] += f64(m, n, k) * x[static_cast<size_t>(k)];
  return y;
}

// Adjacent-pair RoPE (the GGUF Q/K layout): pair (2j, 2j + 1) turns by pos * theta^(-2j / Dh).
void rope(std::vector<double>& v, int heads, int Dh, int64_t pos, double theta) {
  for (int h = 0; h < heads; ++h)
    for (int j = 0; j < Dh / 2; ++j) {
      const double a = static_cast<double>(pos) * std::pow(theta, -2.0 * j / Dh);
      double& x = v[static_cast<size_t>(h * Dh + 2 * j)];
      double& y = v[static_cast<size_t>(h * Dh + 2 * j + 1)];
      const double x0 = x, y0 = y;
      x = x0 * std::cos(a) - y0 * std::sin(a);
      y = y0 * std::cos(a) + x0 * std::sin(a);
    }
}

// The head over rows 0 .. T-1 from the definition, in float64: logits [T, V] and g [T, d].
void reference_head(const model::LlamaModel& base, const model::MtpWeights& w, const std::vector<std::vector<double>>& h,
                    const std::vector<int32_t>& next, std::vector<std::vector<double>>& logits,
                    std::vector<std::vector<double>>& g) {
  const auto& c = base.config();
  const int64_t d = c.d_model, T = static_cast<int64_t>(next.size());
  const int H = c.n_heads, Hk = c.n_kv_heads, Dh = c.head_dim;
  std::vector<std::vector<double>> K(static_cast<size_t>(T)), Vv(static_cast<size_t>(T)), Q(static_cast<size_t>(T)),
      X(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> e(static_cast<size_t>(d));
    for (int64_t i = 0; i < d; ++i) e[static_cast<size_t>(i)] = f64(base.weights().token_embd, next[static_cast<size_t>(t)], i);
    std::vector<double> cat = rms(e, w.enorm.data(), c.rms_eps);
    const std::vector<double> hn = rms(h[static_cast<size_t>(t)], w.hnorm.data(), c.rms_eps);
    cat.insert(cat.end(), hn.begin(), hn.end());
    X[static_cast<size_t>(t)] = mv(w.eh_proj, cat);
    const std::vector<double> xn = rms(X[static_cast<size_t>(t)], w.block.attn_norm, c.rms_eps);
    Q[static_cast<size_t>(t)] = mv(w.block.wq, xn);
    K[static_cast<size_t>(t)] = mv(w.block.wk, xn);
    Vv[static_cast<size_t>(t)] = mv(w.block.wv, xn);
    rope(Q[static_cast<size_t>(t)], H, Dh, t, c.rope_theta);
    rope(K[static_cast<size_t>(t)], Hk, Dh, t, c.rope_theta);
  }
  logits.assign(static_cast<size_t>(T), {});
  g.assign(static_cast<size_t>(T), {});
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> att(static_cast<size_t>(H * Dh), 0.0);
    for (int hh = 0; hh < H; ++hh) {
      const int kh = hh / (H / Hk);
      std::vector<double> s(static_cast<size_t>(t + 1));
      double mx = -1e300;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (int i = 0; i < Dh; ++i)
          dot += Q[static_cast<size_t>(t)][static_cast<size_t>(hh * Dh + i)] * K[static_cast<size_t>(j)][static_cast<size_t>(kh * Dh + i)];
        s[static_cast<size_t>(j)] = dot / std::sqrt(static_cast<double>(Dh));
        mx = std::max(mx, s[static_cast<size_t>(j)]);
      }
      double z = 0;
      for (auto& v : s) z += (v = std::exp(v - mx));
      for (int64_t j = 0; j <= t; ++j)
        for (int i = 0; i < Dh; ++i)
          att[static_cast<size_t>(hh * Dh + i)] += s[static_cast<size_t>(j)] / z * Vv[static_cast<size_t>(j)][static_cast<size_t>(kh * Dh + i)];
    }
    std::vector<double> x = X[static_cast<size_t>(t)];
    const std::vector<double> o = mv(w.block.wo, att);
    for (int64_t i = 0; i < d; ++i) x[static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
    const std::vector<double> xn = rms(x, w.block.ffn_norm, c.rms_eps);
    const std::vector<double> gate = mv(w.block.w_gate, xn), up = mv(w.block.w_up, xn);
    std::vector<double> act(gate.size());
    for (size_t i = 0; i < gate.size(); ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
    const std::vector<double> dn = mv(w.block.w_down, act);
    for (int64_t i = 0; i < d; ++i) x[static_cast<size_t>(i)] += dn[static_cast<size_t>(i)];
    g[static_cast<size_t>(t)] = rms(x, w.shared_head_norm.data(), c.rms_eps);
    logits[static_cast<size_t>(t)] = mv(base.weights().output, g[static_cast<size_t>(t)]);
  }
}

TEST(MtpHead, ForwardMatchesFloat64Reference) {
  auto tiny = testing_util::make_tiny_llama(7, 2, 32, 4, 2, 48, 50, 64);
  const auto& base = *tiny.model;
  TinyHead th = make_head(base.config(), 11, false);
  const model::MtpHead head(base, th.w);
  const int64_t T = 21, d = base.config().d_model, V = base.config().vocab;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> h(static_cast<size_t>(T * d));
  for (auto& v : h) v = nd(rng);
  std::vector<int32_t> next(static_cast<size_t>(T));
  for (auto& t : next) t = static_cast<int32_t>(rng() % V);
  std::vector<std::vector<double>> hd(static_cast<size_t>(T)), ref_logits, ref_g;
  for (int64_t t = 0; t < T; ++t) hd[static_cast<size_t>(t)].assign(h.begin() + t * d, h.begin() + (t + 1) * d);
  reference_head(base, th.w, hd, next, ref_logits, ref_g);

  // All rows in one call, then the same rows in two calls (13 + 8) continuing the cache.
  for (int split : {0, 13}) {
    SCOPED_TRACE(split == 0 ? "one call" : "two calls");
    model::KvCache cache;
    cache.reset(head.block_model().config(), 64, model::KvType::kF32);
    std::vector<float> g(static_cast<size_t>(T * d)), logits(static_cast<size_t>(T * V));
    if (split == 0) {
      head.forward(h.data(), next.data(), T, cache, g.data(), logits.data(), T);
    } else {
      head.forward(h.data(), next.data(), split, cache, g.data(), logits.data(), split);
      head.forward(h.data() + split * d, next.data() + split, T - split, cache, g.data() + split * d,
                   logits.data() + split * V, T - split);
    }
    EXPECT_EQ(cache.length, T);
    double worst = 0, scale = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t v = 0; v < V; ++v) {
        worst = std::max(worst, std::fabs(logits[static_cast<size_t>(t * V + v)] - ref_logits[static_cast<size_t>(t)][static_cast<size_t>(v)]));
        scale = std::max(scale, std::fabs(ref_logits[static_cast<size_t>(t)][static_cast<size_t>(v)]));
      }
    // f32 weights, activations and cache: a few float ulps of the logit scale per op.
    EXPECT_LT(worst, 2e-5 * scale) << "scale " << scale;
    double gw = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < d; ++i)
        gw = std::max(gw, std::fabs(g[static_cast<size_t>(t * d + i)] - ref_g[static_cast<size_t>(t)][static_cast<size_t>(i)]));
    EXPECT_LT(gw, 1e-4);
  }
}

// Greedy speculative decoding emits exactly plain greedy decoding's tokens. A vocabulary of 6
// makes a random head's drafts right often enough that rounds accept 0 .. N drafts.
TEST(Speculative, GreedyEqualsPlainDecodingForEveryDraftLengthAndAttention) {
  auto tiny = testing_util::make_tiny_llama(5, 3, 32, 4, 2, 48, 6, 256);
  const auto& m = *tiny.model;
  TinyHead th = make_head(m.config(), 9, true);
  const model::MtpHead head(m, th.w);
  std::mt19937 rng(1);
  std::vector<int32_t> prompt(40);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % 6);
  const int max_new = 60;
  const int64_t cap = 128;
  for (bool dsa : {false, true}) {
    // The target's DSA: oracle top-8 at every layer (sets differ from dense from 9 keys on).
    model::DsaOptions o;
    o.topk = 8;
    o.schedule = share::Schedule::from_pattern("FSF");
    o.selection = model::DsaSelection::kOracle;
    o.capacity = cap;
    model::LlamaDsaBackend target_dsa(m.config(), o);
    model::AttentionBackend* be = dsa ? &target_dsa : nullptr;
    const std::vector<int32_t> plain = model::plain_decode(m, prompt, max_new, 0.0f, 0, cap, be);
    ASSERT_EQ(plain.size(), static_cast<size_t>(max_new));
    // One decoder for every configuration (set_draft): after its first call each call reuses the
    // prompt's prefill, which must not change a token.
    model::SpeculativeOptions first;
    first.topk = 8;
    first.capacity = cap;
    model::SpeculativeDecoder dec(m, head, first, be);
    bool first_call = true;
    for (DraftAttention da : {DraftAttention::kDense, DraftAttention::kIndexer, DraftAttention::kShareStep0,
                              DraftAttention::kShareTarget}) {
      if (da == DraftAttention::kShareTarget && !dsa) continue;
      for (int N = 1; N <= 4; ++N) {
        SCOPED_TRACE(std::string(dsa ? "DSA target, " : "dense target, ") + model::draft_attention_name(da) +
                     ", N = " + std::to_string(N));
        dec.set_draft(N, da);
        std::vector<int32_t> streamed;
        const std::vector<int32_t> spec = dec.generate(prompt, max_new, [&](int32_t t) {
          streamed.push_back(t);
          return true;
        });
        EXPECT_EQ(spec, plain);
        EXPECT_EQ(streamed, spec);
        const auto& s = dec.stats();
        EXPECT_EQ(s.prefill_reused, !first_call);
        first_call = false;
        // Accounting: every round emits its accepted drafts and one token of the target's
        // (the last round may stop early at max_new); the histogram sums to the rounds.
        int64_t rounds = 0, accepted = 0;
        for (size_t a = 0; a < s.accepted_hist.size(); ++a) {
          rounds += s.accepted_hist[a];
          accepted += static_cast<int64_t>(a) * s.accepted_hist[a];
        }
        EXPECT_EQ(rounds, s.rounds);
        EXPECT_EQ(accepted, s.accepted);
        EXPECT_EQ(s.emitted + 1, static_cast<int64_t>(spec.size()));  // + the token after prefill
        EXPECT_LE(s.emitted, s.accepted + s.rounds);
        EXPECT_GE(s.emitted, s.accepted + s.rounds - 1);
        if (N >= 2) {
          EXPECT_GT(s.accepted, 0);                      // some drafts are right ...
          EXPECT_LT(s.accepted, s.drafted);              // ... some are not
        }
        const bool indexer = da == DraftAttention::kIndexer || da == DraftAttention::kShareStep0;
        EXPECT_EQ(s.draft_indexer_calls > 0, indexer);
        // The head's indexer runs once per head forward (kIndexer: every draft step, i.e. each
        // drafted token) or once per round (kShareStep0: step 0 only).
        if (da == DraftAttention::kShareStep0) {
          EXPECT_EQ(s.draft_indexer_calls, s.rounds);
        }
        if (da == DraftAttention::kIndexer) {
          EXPECT_EQ(s.draft_indexer_calls, s.drafted);
        }
      }
    }
  }
}

// A reduced draft vocabulary: the head's logits are the full logits' columns of the chosen
// tokens, and greedy speculative output is still plain greedy decoding's.
TEST(Speculative, ReducedDraftVocabularyKeepsTheOutput) {
  auto tiny = testing_util::make_tiny_llama(5, 3, 32, 4, 2, 48, 6, 256);
  const auto& m = *tiny.model;
  TinyHead th = make_head(m.config(), 9, false);
  th.w.vocab_by_frequency = {4, 1, 5, 0, 2, 3};
  const model::MtpHead full(m, th.w), reduced(m, th.w, 3);
  EXPECT_EQ(full.draft_vocab(), 6);
  EXPECT_EQ(reduced.draft_vocab(), 3);
  EXPECT_EQ(reduced.token_of(2), 5);
  const int64_t T = 5, d = m.config().d_model;
  std::vector<float> h(static_cast<size_t>(T * d), 0.5f);
  for (size_t i = 0; i < h.size(); ++i) h[i] = std::sin(0.37f * static_cast<float>(i));
  std::vector<int32_t> next = {1, 2, 3, 4, 5};
  std::vector<float> lf(static_cast<size_t>(T * 6)), lr(static_cast<size_t>(T * 3));
  model::KvCache cf, cr;
  cf.reset(full.block_model().config(), 8, model::KvType::kF32);
  cr.reset(reduced.block_model().config(), 8, model::KvType::kF32);
  full.forward(h.data(), next.data(), T, cf, nullptr, lf.data(), T);
  reduced.forward(h.data(), next.data(), T, cr, nullptr, lr.data(), T);
  for (int64_t t = 0; t < T; ++t)
    for (int i = 0; i < 3; ++i)
      EXPECT_NEAR(lr[static_cast<size_t>(t * 3 + i)], lf[static_cast<size_t>(t * 6 + reduced.token_of(i))], 1e-5);

  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 0, 1, 2, 3, 3, 4, 0, 0, 1};
  const std::vector<int32_t> plain = model::plain_decode(m, prompt, 50, 0.0f, 0, 128, nullptr);
  for (int N : {1, 3}) {
    model::SpeculativeOptions so;
    so.draft_tokens = N;
    so.capacity = 128;
    model::SpeculativeDecoder dec(m, reduced, so);
    EXPECT_EQ(dec.generate(prompt, 50), plain) << "N = " << N;
  }
  // Bad: a reduction without the frequency order, or a list that is not a permutation.
  TinyHead bare = make_head(m.config(), 9, false);
  EXPECT_THROW(model::MtpHead(m, bare.w, 3), Error);
  bare.w.vocab_by_frequency = {4, 1, 5, 0, 2, 2};
  EXPECT_THROW(model::MtpHead(m, bare.w), Error);
  EXPECT_THROW(model::MtpHead(m, th.w, 7), Error);
}

// Q8_0 requantisation of the head's matrices: logits within Q8_0's rounding of the stored
// weights', and a K that is no multiple of 32 is an Error naming the matrix.
TEST(MtpHead, Q8RequantisationStaysCloseAndChecksK) {
  auto tiny = testing_util::make_tiny_llama(7, 2, 32, 4, 2, 64, 50, 64);
  const auto& base = *tiny.model;
  TinyHead th = make_head(base.config(), 11, false);
  const model::MtpHead exact(base, th.w), q8(base, th.w, 0, true);
  const int64_t T = 7, d = 32, V = 50;
  std::vector<float> h(static_cast<size_t>(T * d));
  for (size_t i = 0; i < h.size(); ++i) h[i] = std::cos(0.11f * static_cast<float>(i * i % 97));
  std::vector<int32_t> next = {1, 7, 3, 9, 11, 2, 40};
  std::vector<float> a(static_cast<size_t>(T * V)), b(a.size());
  model::KvCache ca, cb;
  ca.reset(exact.block_model().config(), 8, model::KvType::kF32);
  cb.reset(q8.block_model().config(), 8, model::KvType::kF32);
  exact.forward(h.data(), next.data(), T, ca, nullptr, a.data(), T);
  q8.forward(h.data(), next.data(), T, cb, nullptr, b.data(), T);
  double worst = 0, scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max<double>(worst, std::fabs(a[i] - b[i]));
    scale = std::max<double>(scale, std::fabs(a[i]));
    diff += std::fabs(a[i] - b[i]);
  }
  EXPECT_LT(worst, 0.03 * scale);
  EXPECT_GT(diff, 0.0);  // it did requantise
  auto odd = testing_util::make_tiny_llama(7, 2, 32, 4, 2, 48, 50, 64);
  TinyHead oh = make_head(odd.model->config(), 11, false);
  try {
    model::MtpHead(*odd.model, oh.w, 0, true);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block w_down has rows of 48 values"), std::string::npos) << e.what();
  }
}

// The stop token ends generation, on the emitted token, as plain decoding does.
TEST(Speculative, StopTokenEndsGenerationWhereverItFalls) {
  auto tiny = testing_util::make_tiny_llama(5, 3, 32, 4, 2, 48, 6, 256);
  const auto& m = *tiny.model;
  TinyHead th = make_head(m.config(), 9, false);
  const model::MtpHead head(m, th.w);
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 0, 1, 2};
  const std::vector<int32_t> plain = model::plain_decode(m, prompt, 40, 0.0f, 0, 64, nullptr);
  const int32_t stop = plain[7];
  const std::vector<int32_t> want = model::plain_decode(m, prompt, 40, 0.0f, 0, 64, nullptr, stop);
  ASSERT_LT(want.size(), plain.size());
  for (int N = 1; N <= 4; ++N) {
    model::SpeculativeOptions so;
    so.draft_tokens = N;
    so.capacity = 64;
    so.stop_token = stop;
    model::SpeculativeDecoder dec(m, head, so);
    EXPECT_EQ(dec.generate(prompt, 40), want) << "N = " << N;
  }
}

// Accept with min(1, p/q), else draw from norm(max(0, p - q)): the emitted token is distributed
// as p whatever q is (the closed form the method rests on).
TEST(Speculative, RejectionSamplingEmitsTheTargetDistribution) {
  const std::vector<float> p = {0.5f, 0.2f, 0.15f, 0.1f, 0.05f, 0.0f};
  const std::vector<float> q = {0.1f, 0.4f, 0.1f, 0.1f, 0.1f, 0.2f};
  std::mt19937_64 rng(42);
  const int n = 400000;
  std::vector<double> count(p.size(), 0.0);
  int accepted = 0;
  for (int i = 0; i < n; ++i) {
    const int32_t d = model::sample_index(q, rng);
    const model::VerifyResult r = model::verify_draft_token(p, q, d, rng);
    if (r.accepted) {
      ++accepted;
      EXPECT_EQ(r.token, d);
    }
    count[static_cast<size_t>(r.token)] += 1.0;
  }
  double chi2 = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0f) {
      EXPECT_EQ(count[i], 0.0) << "token " << i << " has target probability 0";
      continue;
    }
    const double e = n * p[i];
    chi2 += (count[i] - e) * (count[i] - e) / e;
  }
  // 4 degrees of freedom: P(chi2 > 23.5) < 1e-4.
  EXPECT_LT(chi2, 23.5);
  // Acceptance rate = sum_i min(p_i, q_i) = 0.1 + 0.2 + 0.1 + 0.1 + 0.05 = 0.55.
  EXPECT_NEAR(static_cast<double>(accepted) / n, 0.55, 0.005);
}

// With sampling the decoder runs every mode, and at temperature -> 0 it is greedy decoding.
TEST(Speculative, SamplingRunsAndTinyTemperatureIsGreedy) {
  auto tiny = testing_util::make_tiny_llama(5, 3, 32, 4, 2, 48, 6, 256);
  const auto& m = *tiny.model;
  TinyHead th = make_head(m.config(), 9, true);
  const model::MtpHead head(m, th.w);
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 0, 1, 2, 3, 3, 4};
  const std::vector<int32_t> plain = model::plain_decode(m, prompt, 30, 0.0f, 0, 64, nullptr);
  model::SpeculativeOptions so;
  so.draft_tokens = 3;
  so.capacity = 64;
  so.temperature = 1e-4f;
  so.seed = 5;
  model::SpeculativeDecoder cold(m, head, so);
  EXPECT_EQ(cold.generate(prompt, 30), plain);
  so.temperature = 1.0f;
  so.draft_attention = DraftAttention::kIndexer;
  so.topk = 4;
  model::SpeculativeDecoder warm(m, head, so);
  const auto out = warm.generate(prompt, 30);
  EXPECT_EQ(out.size(), 30u);
  EXPECT_EQ(warm.stats().emitted + 1, 30);
  model::SpeculativeDecoder again(m, head, so);
  EXPECT_EQ(again.generate(prompt, 30), out) << "same seed, same tokens";
}

TEST(Speculative, BadOptionsAreErrors) {
  auto tiny = testing_util::make_tiny_llama(5, 3, 32, 4, 2, 48, 6, 256);
  const auto& m = *tiny.model;
  TinyHead plain_head = make_head(m.config(), 9, false);
  const model::MtpHead head(m, plain_head.w);
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  model::SpeculativeOptions so;
  so.capacity = 64;
  so.draft_tokens = 0;
  expect_error([&] { model::SpeculativeDecoder(m, head, so); }, "--draft must be >= 1");
  so.draft_tokens = 2;
  so.draft_attention = DraftAttention::kIndexer;
  so.topk = 4;
  expect_error([&] { model::SpeculativeDecoder(m, head, so); }, "has none");
  so.draft_attention = DraftAttention::kShareTarget;
  expect_error([&] { model::SpeculativeDecoder(m, head, so); }, "target runs dense attention");
  so.draft_attention = DraftAttention::kShareStep0;
  so.topk = 0;
  expect_error([&] { model::SpeculativeDecoder(m, head, so); }, "top-k > 0");
  so.draft_attention = DraftAttention::kDense;
  model::SpeculativeDecoder dec(m, head, so);
  const std::vector<int32_t> prompt(60, 1);
  expect_error([&] { dec.generate(prompt, 10); }, "exceed the capacity of 64");
  expect_error([&] { dec.generate({}, 10); }, "prompt is empty");
  auto other = testing_util::make_tiny_llama(6, 3, 32, 4, 2, 48, 6, 256);
  expect_error([&] { model::SpeculativeDecoder(*other.model, head, so); }, "another model object");
  // A head whose shapes do not fit the model.
  auto wide = testing_util::make_tiny_llama(5, 3, 32, 4, 2, 64, 6, 256);
  expect_error([&] { model::MtpHead(*wide.model, plain_head.w); }, "block w_gate has shape [48, 32], expected [64, 32]");
}

// ---- the file -------------------------------------------------------------------------------

struct FileSpec {
  bool indexer = true;
  std::string drop, extra, fingerprint = "fnv1a64:0123456789abcdef:42", format = "indexshare-mtp/1";
  int64_t wrong_shape_rows = 0;  // > 0: block.wv gets this many rows
  StDType matrix_dtype = StDType::kF16;
  std::string ffn_meta;
};

std::string write_head_file(const std::string& name, const model::LlamaConfig& c, const TinyHead& th, const FileSpec& s) {
  const std::string path = (std::filesystem::temp_directory_path() / name).string();
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<StWriteTensor> ts;
  auto add_f32 = [&](const std::string& n, std::vector<int64_t> shape, const float* v) {
    if (n == s.drop) return;
    size_t count = 1;
    for (auto x : shape) count *= static_cast<size_t>(x);
    bufs.emplace_back(reinterpret_cast<const uint8_t*>(v), reinterpret_cast<const uint8_t*>(v) + count * 4);
    ts.push_back({n, StDType::kF32, shape, bufs.back()});
  };
  auto add_mat = [&](const std::string& n, const model::QMatrix& m, int64_t rows_override = 0) {
    if (n == s.drop) return;
    const int64_t N = rows_override > 0 ? rows_override : m.N;
    const float* v = static_cast<const float*>(m.data);
    std::vector<uint8_t> b;
    if (s.matrix_dtype == StDType::kF32) {
      b.resize(static_cast<size_t>(N * m.K) * 4, 0);
      std::memcpy(b.data(), v, static_cast<size_t>(std::min(N, m.N) * m.K) * 4);
    } else {
      b.resize(static_cast<size_t>(N * m.K) * 2, 0);
      auto* h = reinterpret_cast<uint16_t*>(b.data());
      for (int64_t i = 0; i < std::min(N, m.N) * m.K; ++i) h[i] = f32_to_f16(v[i]);
    }
    bufs.push_back(std::move(b));
    ts.push_back({n, s.matrix_dtype, {N, m.K}, bufs.back()});
  };
  const int64_t d = c.d_model;
  add_f32("enorm", {d}, th.w.enorm.data());
  add_f32("hnorm", {d}, th.w.hnorm.data());
  add_f32("shared_head_norm", {d}, th.w.shared_head_norm.data());
  add_mat("eh_proj", th.w.eh_proj);
  add_f32("block.attn_norm", {d}, th.w.block.attn_norm);
  add_f32("block.ffn_norm", {d}, th.w.block.ffn_norm);
  add_mat("block.wq", th.w.block.wq);
  add_mat("block.wk", th.w.block.wk);
  add_mat("block.wv", th.w.block.wv, s.wrong_shape_rows);
  add_mat("block.wo", th.w.block.wo);
  add_mat("block.w_gate", th.w.block.w_gate);
  add_mat("block.w_up", th.w.block.w_up);
  add_mat("block.w_down", th.w.block.w_down);
  std::map<std::string, std::string> meta = {
      {"format", s.format}, {"model_fingerprint", s.fingerprint}, {"d_model", std::to_string(d)},
      {"n_heads", std::to_string(c.n_heads)}, {"n_kv_heads", std::to_string(c.n_kv_heads)},
      {"head_dim", std::to_string(c.head_dim)}, {"ffn_dim", s.ffn_meta.empty() ? std::to_string(c.ffn_dim) : s.ffn_meta},
      {"rope_theta", "10000.0"}, {"rms_eps", "1e-05"}};
  if (s.indexer && th.w.indexer) {
    const auto& iw = *th.w.indexer;
    add_f32("indexer.wq", {int64_t{iw.cfg.heads} * iw.cfg.head_dim, d}, iw.wq.data());
    add_f32("indexer.wk", {iw.cfg.head_dim, d}, iw.wk.data());
    add_f32("indexer.ww", {iw.cfg.heads, d}, iw.ww.data());
    meta["indexer_heads"] = std::to_string(iw.cfg.heads);
    meta["indexer_head_dim"] = std::to_string(iw.cfg.head_dim);
    meta["indexer_rope_dim"] = std::to_string(iw.cfg.rope_dim);
  }
  if (!s.extra.empty()) add_f32(s.extra, {d}, th.w.enorm.data());
  write_safetensors(path, ts, meta);
  return path;
}

TEST(MtpFile, LoadsWhatWasWrittenAndRunsLikeTheWeights) {
  auto tiny = testing_util::make_tiny_llama(7, 2, 32, 4, 2, 48, 50, 64);
  const auto& base = *tiny.model;
  TinyHead th = make_head(base.config(), 11, true);
  const std::string fp = "fnv1a64:0123456789abcdef:42";
  for (StDType dt : {StDType::kF32, StDType::kF16}) {
    FileSpec s;
    s.matrix_dtype = dt;
    const std::string path = write_head_file("mtp_roundtrip.safetensors", base.config(), th, s);
    const io::MtpFile f = io::load_mtp(path, base, fp);
    ASSERT_TRUE(f.weights.indexer.has_value());
    EXPECT_EQ(f.weights.indexer->wq, th.w.indexer->wq);
    EXPECT_EQ(f.weights.enorm, th.w.enorm);
    const model::MtpHead from_file(base, f.weights), from_memory(base, th.w);
    const int64_t T = 9, d = base.config().d_model, V = base.config().vocab;
    std::vector<float> h(static_cast<size_t>(T * d));
    std::mt19937 rng(2);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : h) v = nd(rng);
    std::vector<int32_t> next(static_cast<size_t>(T), 3);
    std::vector<float> a(static_cast<size_t>(T * V)), b(a.size());
    model::KvCache ca, cb;
    ca.reset(from_file.block_model().config(), 16, model::KvType::kF32);
    cb.reset(from_memory.block_model().config(), 16, model::KvType::kF32);
    from_file.forward(h.data(), next.data(), T, ca, nullptr, a.data(), T);
    from_memory.forward(h.data(), next.data(), T, cb, nullptr, b.data(), T);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max<double>(worst, std::fabs(a[i] - b[i]));
      scale = std::max<double>(scale, std::fabs(b[i]));
    }
    if (dt == StDType::kF32) {
      EXPECT_EQ(worst, 0.0);
    } else {
      EXPECT_LT(worst, 5e-3 * scale);  // f16 weights: 11-bit mantissa
    }
    std::filesystem::remove(path);
  }
}

TEST(MtpFile, BadFilesAreErrorsNamingTheProblem) {
  auto tiny = testing_util::make_tiny_llama(7, 2, 32, 4, 2, 48, 50, 64);
  const auto& base = *tiny.model;
  TinyHead th = make_head(base.config(), 11, true);
  auto expect = [&](const FileSpec& s, const std::string& needle, const std::string& fp = "fnv1a64:0123456789abcdef:42") {
    const std::string path = write_head_file("mtp_bad.safetensors", base.config(), th, s);
    try {
      io::load_mtp(path, base, fp);
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    std::filesystem::remove(path);
  };
  expect({}, "made for another model", "fnv1a64:ffffffffffffffff:42");
  FileSpec s;
  s.drop = "block.wo";
  expect(s, "lacks tensor 'block.wo'");
  s = {};
  s.extra = "block.bias";
  expect(s, "unknown tensor 'block.bias'");
  s = {};
  s.wrong_shape_rows = 7;
  expect(s, "tensor block.wv has the wrong shape");
  s = {};
  s.format = "indexshare-indexers/1";
  expect(s, "not an IndexShare MTP file");
  s = {};
  s.ffn_meta = "64";
  expect(s, "ffn_dim = 64 but the model has 48");
  s = {};
  s.drop = "indexer.ww";
  expect(s, "lacks tensor 'indexer.ww'");
  // A truncated file.
  const std::string path = write_head_file("mtp_trunc.safetensors", base.config(), th, {});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  EXPECT_THROW(io::load_mtp(path, base), Error);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace indexshare

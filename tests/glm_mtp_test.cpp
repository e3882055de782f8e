// The GLM-MoE-DSA nextn (MTP) layer and speculative decoding with it.
//
// Reference: tests/data/dsa_fixtures/glm_moe_dsa/mtp, made by tests/golden/make_mtp_fixtures.py
// from transformers' own modules (its decoder layer with the lightning indexer run as a one-layer
// model over u = eh_proj . [enorm(embed(x_{i+1})) ; hnorm(h_i)]; transformers has no MTP forward
// of its own). The target is the glm_moe_dsa fixture model under the types_glm52 schedule.
// Tolerances as in glm_dsa_test.cpp: fp32 on both sides, differing in summation order, MLA form
// and RoPE angle precision: 1e-4 x max(1, max|logit|) for logits (measured ~1e-6), near-ties
// allowed at the top-k boundary.
//
// Speculative decoding: on a synthetic 4-token vocabulary (random weights) drafts are right often
// enough that rounds accept anywhere from 0 to N drafts; greedy speculative output must equal
// greedy plain decoding token for token for every draft length and draft-attention rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/glm_dsa_loader.h"
#include "io/safetensors.h"
#include "model/glm_dsa.h"
#include "model/sampler.h"
#include "model/speculative.h"
#include "run_tool.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

namespace indexshare {
namespace {

using model::GlmDsaModel;

using testing_util::max_abs;
using testing_util::max_abs_diff;
using testing_util::TempDir;

const std::string kFixtures = testing_util::glm_fixtures();

void make_mtp_dir(const TempDir& dir, const std::function<bool(std::string&, std::vector<float>&)>& edit = {}) {
  testing_util::write_mtp_checkpoint(dir, edit);
}

template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

model::ModelOptions mtp_options() {
  model::ModelOptions o;
  o.mtp = true;
  return o;
}

TEST(GlmMtp, MatchesTheComposedTransformersReference) {
  TempDir dir;
  make_mtp_dir(dir);
  std::vector<std::string> warnings;
  GlmDsaModel m = io::load_glm_dsa_dir(dir.path.string(), &warnings, nullptr, mtp_options());
  ASSERT_TRUE(m.has_mtp());
  EXPECT_TRUE(m.mtp_has_indexer());
  for (const auto& w : warnings) EXPECT_EQ(w.find("MTP"), std::string::npos) << w;  // everything was loaded

  const auto ref = io::SafetensorsFile::open(kFixtures + "/mtp/ref.safetensors");
  std::vector<int32_t> ids;
  for (int64_t v : ref.read_i64("input_ids")) ids.push_back(static_cast<int32_t>(v));
  const auto T = static_cast<int64_t>(ids.size());
  const int64_t d = m.config().hidden_size, V = m.config().vocab_size;
  const int K = m.config().index_topk;
  const std::vector<float> want_hidden = ref.read_f32("hidden"), want_logits = ref.read_f32("logits"),
                           want_mtp = ref.read_f32("mtp_logits");

  // The target: logits and the final-normed hidden rows the head reads.
  auto cache = m.new_cache();
  std::vector<float> hidden;
  model::ForwardOptions fo;
  fo.hidden = &hidden;
  const auto logits = m.forward(cache, ids, fo);
  const float lscale = std::max(1.0f, max_abs(want_logits));
  EXPECT_LE(max_abs_diff(logits, want_logits), 1e-4f * lscale);
  EXPECT_LE(max_abs_diff(hidden, want_hidden), 1e-4f * std::max(1.0f, max_abs(want_hidden)));

  // The MTP layer over rows 0 .. T-2 from the engine's own hidden states.
  model::MtpCall c;
  c.pos0 = 0;
  c.T = T - 1;
  c.hidden = hidden.data();
  c.next = ids.data() + 1;
  c.logit_rows = T - 1;
  const model::MtpOutput out = m.mtp_forward(cache, c);
  EXPECT_EQ(cache.length, T) << "the MTP layer leaves the target's length alone";
  const float mscale = std::max(1.0f, max_abs(want_mtp));
  const float diff = max_abs_diff(out.logits, want_mtp);
  std::printf("MTP logits vs the transformers composition: max |diff| %.3g of max |logit| %.3g\n", diff, mscale);
  EXPECT_LE(diff, 1e-4f * mscale);
  EXPECT_TRUE(out.indexer_ran);
  // Sparse selection was active and chose transformers' sets (index_topk 16 of up to 63 keys).
  const auto tk = ref.read_i64("mtp_topk");
  ASSERT_EQ(out.topk.size(), static_cast<size_t>((T - 1) * K));
  int rows_equal = 0;
  for (int64_t t = 0; t < T - 1; ++t) {
    std::set<int64_t> a, b;
    for (int j = 0; j < K; ++j) {
      if (out.topk[static_cast<size_t>(t * K + j)] >= 0) a.insert(out.topk[static_cast<size_t>(t * K + j)]);
      if (tk[static_cast<size_t>(t * K + j)] >= 0) b.insert(tk[static_cast<size_t>(t * K + j)]);
    }
    rows_equal += a == b;
  }
  EXPECT_GE(rows_equal, T - 3) << "top-k sets differ beyond a near-tie or two";
  // g is the shared-head norm of the block output: the LM head of g gives the logits.
  ASSERT_EQ(out.g.size(), static_cast<size_t>((T - 1) * d));

  // Two calls (rows 0..29, then 30..62) give what one call gave.
  auto c2 = m.new_cache();
  m.forward(c2, ids, {});
  model::MtpCall a = c, b = c;
  a.T = 30;
  a.logit_rows = 30;
  b.pos0 = 30;
  b.T = T - 1 - 30;
  b.hidden = hidden.data() + 30 * d;
  b.next = ids.data() + 31;
  b.logit_rows = b.T;
  auto la = m.mtp_forward(c2, a).logits;
  const auto lb = m.mtp_forward(c2, b).logits;
  la.insert(la.end(), lb.begin(), lb.end());
  EXPECT_LE(max_abs_diff(la, out.logits), 1e-5f * mscale);
  EXPECT_EQ(static_cast<int64_t>(la.size()), (T - 1) * V);

  // Forced sets: every earlier position (dense) differs from the sparse result.
  std::vector<int32_t> dense(static_cast<size_t>((T - 1) * (T - 1)), -1);
  for (int64_t t = 0; t < T - 1; ++t)
    for (int64_t s = 0; s <= t; ++s) dense[static_cast<size_t>(t * (T - 1) + s)] = static_cast<int32_t>(s);
  model::MtpCall dc = c;
  dc.sets = dense.data();
  dc.set_width = static_cast<int>(T - 1);
  const auto dl = m.mtp_forward(c2, dc);
  EXPECT_FALSE(dl.indexer_ran);
  EXPECT_GT(max_abs_diff(dl.logits, out.logits), 1e-2f) << "sparse selection changes the MTP layer's output";
  // The sets the indexer chose, forced, give the indexer's result.
  model::MtpCall fc = c;
  fc.sets = out.topk.data();
  fc.set_width = K;
  EXPECT_LE(max_abs_diff(m.mtp_forward(c2, fc).logits, out.logits), 1e-5f * mscale);
}

TEST(GlmMtp, BadInputsNameTheProblem) {
  {  // MTP asked for, config without nextn layers.
    TempDir dir;
    make_mtp_dir(dir);
    std::string cfg;
    {
      std::ifstream f(dir.file("config.json"));
      cfg.assign(std::istreambuf_iterator<char>(f), {});
    }
    const auto p = cfg.find("\"num_nextn_predict_layers\": 1");
    ASSERT_NE(p, std::string::npos);
    cfg.replace(p, 29, "\"num_nextn_predict_layers\": 0");
    std::ofstream(dir.file("config.json")) << cfg;
    expect_error([&] { io::load_glm_dsa_dir(dir.path.string(), nullptr, nullptr, mtp_options()); },
                 "num_nextn_predict_layers = 0");
  }
  {  // A missing MTP tensor.
    TempDir dir;
    make_mtp_dir(dir, [](std::string& n, std::vector<float>&) { return n != "model.layers.7.hnorm.weight"; });
    expect_error([&] { io::load_glm_dsa_dir(dir.path.string(), nullptr, nullptr, mtp_options()); },
                 "missing tensor 'model.layers.7.hnorm.weight'");
  }
  {  // A separate MTP head is not silently replaced by the model's.
    TempDir dir;
    make_mtp_dir(dir, [](std::string& n, std::vector<float>& v) {
      if (n == "model.layers.7.shared_head.head.weight") v[5] += 1.0f;
      return true;
    });
    expect_error([&] { io::load_glm_dsa_dir(dir.path.string(), nullptr, nullptr, mtp_options()); },
                 "differs from lm_head.weight");
  }
  TempDir dir;
  make_mtp_dir(dir);
  {  // Without ModelOptions::mtp the layer is reported, not loaded, and mtp_forward refuses.
    std::vector<std::string> warnings;
    GlmDsaModel plain = io::load_glm_dsa_dir(dir.path.string(), &warnings);
    EXPECT_FALSE(plain.has_mtp());
    bool reported = false;
    for (const auto& w : warnings) reported = reported || w.find("(MTP / nextn) were not loaded") != std::string::npos;
    EXPECT_TRUE(reported);
    auto cache = plain.new_cache();
    const std::vector<float> h(64, 0.0f);
    const int32_t next = 3;
    model::MtpCall c;
    c.T = 1;
    c.hidden = h.data();
    c.next = &next;
    expect_error([&] { plain.mtp_forward(cache, c); }, "no MTP layer loaded");
    expect_error([&] { model::make_glm_pair(plain); }, "no MTP layer loaded");
  }
  GlmDsaModel m = io::load_glm_dsa_dir(dir.path.string(), nullptr, nullptr, mtp_options());
  auto cache = m.new_cache();
  const std::vector<float> h(2 * 64, 0.0f);
  const int32_t bad[2] = {3, 256};
  model::MtpCall c;
  c.T = 2;
  c.hidden = h.data();
  c.next = bad;
  expect_error([&] { m.mtp_forward(cache, c); }, "token id 256 at row 1");
  const int32_t ok[2] = {3, 4};
  c.next = ok;
  const int32_t sets[2] = {0, 5};  // row 1 is position 1: position 5 is in its future
  c.sets = sets;
  c.set_width = 1;
  expect_error([&] { m.mtp_forward(cache, c); }, "set entry 5 of row 1");
  c.sets = nullptr;
  c.logit_rows = 3;
  expect_error([&] { m.mtp_forward(cache, c); }, "logit_rows 3");
  model::SpeculativeOptions so;
  so.draft_attention = model::DraftAttention::kIndexer;
  so.topk = 7;
  expect_error([&] { model::SpeculativeDecoder(model::make_glm_pair(m), so); }, "--draft-topk 7 differs");
}

// A tiny GLM-5.2-shaped model (6 layers, FFFSF..: freq 4 offset 3, index_topk 3) with a 4-token
// vocabulary and an MTP layer, random weights.
std::string tiny_config() {
  return R"({"model_type": "glm_moe_dsa", "architectures": ["GlmMoeDsaForCausalLM"],
  "vocab_size": 4, "hidden_size": 16, "intermediate_size": 16, "moe_intermediate_size": 8,
  "num_hidden_layers": 6, "num_attention_heads": 2, "num_key_value_heads": 2,
  "n_shared_experts": 1, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
  "routed_scaling_factor": 2.5, "norm_topk_prob": true, "kv_lora_rank": 8, "q_lora_rank": 8,
  "qk_rope_head_dim": 4, "qk_nope_head_dim": 4, "v_head_dim": 4, "index_n_heads": 2, "index_head_dim": 8,
  "index_topk": 3, "first_k_dense_replace": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 256,
  "rope_interleave": true, "indexer_rope_interleave": true,
  "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
  "index_topk_freq": 4, "index_skip_topk_offset": 3, "tie_word_embeddings": false,
  "num_nextn_predict_layers": 1})";
}

void write_tiny(const TempDir& dir, uint32_t seed) {
  std::ofstream(dir.file("config.json")) << tiny_config();
  const model::GlmDsaConfig c = io::glm_dsa_config_from_hf(io::read_hf_config(dir.file("config.json")));
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  std::map<std::string, std::vector<float>> data;
  std::vector<io::StWriteTensor> ws;
  const auto shapes = model::glm_dsa_tensor_shapes(c, false);
  for (const auto& [n, s] : shapes) {
    int64_t count = 1;
    for (int64_t x : s) count *= x;
    std::vector<float> v(static_cast<size_t>(count));
    for (float& x : v) x = nd(rng);
    if (n.find("norm.weight") != std::string::npos) std::fill(v.begin(), v.end(), 1.0f);
    data[n] = std::move(v);
  }
  data["model.layers.6.shared_head.head.weight"] = data["lm_head.weight"];
  data["model.layers.6.embed_tokens.weight"] = data["model.embed_tokens.weight"];
  for (const auto& [n, s] : shapes) ws.push_back(io::st_f32(n, s, data[n]));
  io::write_safetensors(dir.file("model.safetensors"), ws);
}

std::vector<int32_t> plain_greedy(GlmDsaModel& m, const std::vector<int32_t>& prompt, int max_new) {
  auto cache = m.new_cache();
  auto logits = m.forward(cache, prompt, {.logits = model::LogitRows::kLast});
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < max_new) {
    const int32_t t = model::greedy_token(logits);
    out.push_back(t);
    const int32_t one[1] = {t};
    logits = m.forward(cache, one);
  }
  return out;
}

TEST(GlmMtp, GreedySpeculativeDecodingEqualsPlainDecoding) {
  TempDir dir;
  write_tiny(dir, 11);
  model::ModelOptions o = mtp_options();
  o.max_tokens = 256;
  GlmDsaModel m = io::load_glm_dsa_dir(dir.path.string(), nullptr, nullptr, o);
  ASSERT_EQ(m.config().schedule.pattern(), "FFFSSS") << "an S layer in the target";
  std::mt19937 rng(5);
  std::vector<int32_t> prompt(14);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % 4);
  const int kNew = 40;
  const auto ref = plain_greedy(m, prompt, kNew);

  model::SpeculativeOptions so;
  so.draft_tokens = 1;
  so.draft_attention = model::DraftAttention::kIndexer;
  model::SpeculativeDecoder dec(model::make_glm_pair(m), so);
  std::vector<int64_t> hist_all(5, 0);
  std::map<std::pair<int, int>, std::vector<int64_t>> hists;  // (rule, N) -> rounds by drafts accepted
  for (auto da : {model::DraftAttention::kIndexer, model::DraftAttention::kShareStep0, model::DraftAttention::kDense,
                  model::DraftAttention::kShareTarget}) {
    for (int N = 1; N <= 4; ++N) {
      SCOPED_TRACE(std::string(model::draft_attention_name(da)) + " N=" + std::to_string(N));
      dec.set_draft(N, da);
      std::vector<int32_t> streamed;
      const auto out = dec.generate(prompt, kNew, [&](int32_t t) {
        streamed.push_back(t);
        return true;
      });
      EXPECT_EQ(out, ref);
      EXPECT_EQ(streamed, out);
      const auto& s = dec.stats();
      EXPECT_EQ(s.emitted + 1, kNew);  // the first token comes from the prefill
      EXPECT_EQ(s.accepted + s.rounds, s.emitted);
      for (int a = 0; a <= N; ++a) hist_all[static_cast<size_t>(a)] += s.accepted_hist[static_cast<size_t>(a)];
      hists[{static_cast<int>(da), N}] = s.accepted_hist;
      // Indexer runs: every head step (indexer), the first of each round (share-step0), none (dense).
      const int64_t head_steps = s.rounds + (s.drafted - s.rounds);
      if (da == model::DraftAttention::kIndexer) EXPECT_EQ(s.draft_indexer_calls, head_steps);
      if (da == model::DraftAttention::kShareStep0) EXPECT_EQ(s.draft_indexer_calls, s.rounds);
      if (da == model::DraftAttention::kDense || da == model::DraftAttention::kShareTarget)
        EXPECT_EQ(s.draft_indexer_calls, 0);
    }
  }
  // Rounds accepted none, some and all of their drafts: both branches of the verification ran.
  EXPECT_GT(hist_all[0], 0);
  EXPECT_GT(hist_all[1] + hist_all[2] + hist_all[3] + hist_all[4], 0);
  EXPECT_GT(hist_all[2] + hist_all[3] + hist_all[4], 0);

  // A prefill in chunks of 5 tokens (the head reads each chunk after the target, one row
  // behind): the same tokens.
  model::ModelOptions oc = o;
  oc.max_step_rows = 5;
  GlmDsaModel mc = io::load_glm_dsa_dir(dir.path.string(), nullptr, nullptr, oc);
  for (auto da : {model::DraftAttention::kShareStep0, model::DraftAttention::kDense, model::DraftAttention::kShareTarget}) {
    model::SpeculativeOptions co;
    co.draft_tokens = 3;
    co.draft_attention = da;
    model::SpeculativeDecoder cd(model::make_glm_pair(mc), co);
    EXPECT_EQ(cd.generate(prompt, kNew), ref) << model::draft_attention_name(da) << ", chunked prefill";
    EXPECT_EQ(cd.generate(prompt, kNew), ref) << model::draft_attention_name(da) << ", reused chunked prefill";
    EXPECT_TRUE(cd.stats().prefill_reused);
    // The head read the same rows as after an unchunked prefill: the same drafts were accepted.
    EXPECT_EQ(cd.stats().accepted_hist, (hists[{static_cast<int>(da), 3}])) << model::draft_attention_name(da);
  }

  // Sampling runs and its accounting adds up (the distribution is checked on the shared loop in
  // mtp_test.cpp's closed-form test).
  so.temperature = 0.8f;
  so.seed = 3;
  so.draft_tokens = 3;
  model::SpeculativeDecoder sd(model::make_glm_pair(m), so);
  const auto sampled = sd.generate(prompt, 30);
  EXPECT_EQ(sampled.size(), 30u);
  EXPECT_EQ(sd.stats().accepted + sd.stats().rounds, sd.stats().emitted);
}

TEST(GlmMtp, DsaRunGeneratesTheSameTokensWithMtp) {
  TempDir dir;
  make_mtp_dir(dir);
  const std::string base = "dsa-run --model " + dir.path.string() + " --tokens 5,17,200,3,9,41,77,120,8,64,1,2,250,19 ";
  auto r = testing_util::run_tool(base + "--generate 12 --json", "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto plain = nlohmann::json::parse(r.out).at("generated");
  ASSERT_EQ(plain.size(), 12u);
  for (const char* da : {"share-step0", "indexer", "dense", "share-target"}) {
    SCOPED_TRACE(da);
    r = testing_util::run_tool(base + "--generate 12 --json --mtp --draft 3 --draft-attention " + da, "2>/dev/null");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("generated"), plain);
    const auto& sp = j.at("speculative");
    EXPECT_EQ(sp.at("draft_attention").get<std::string>(), da);
    EXPECT_EQ(sp.at("accepted").get<int64_t>() + sp.at("rounds").get<int64_t>() + 1, 12);
  }
  r = testing_util::run_tool(base + "--generate 4 --mtp --draft-attention shared", "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--draft-attention must be dense, indexer, share-step0 or share-target"), std::string::npos)
      << r.out;
  r = testing_util::run_tool(base + "--perplexity --mtp", "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--mtp drafts for --generate"), std::string::npos) << r.out;
  r = testing_util::run_tool("dsa-run --model " + kFixtures + "/types_glm52 --weights " + kFixtures +
                                 "/model.safetensors --tokens 1,2,3 --generate 2 --mtp",
                             "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("num_nextn_predict_layers = 0"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace indexshare

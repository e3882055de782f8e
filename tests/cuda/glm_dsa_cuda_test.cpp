// The GLM-MoE-DSA / DeepSeek-V3.2 model on the GPU: logits against the transformers fixtures and
// the CPU forward, index sets against the CPU's, S layers reading their F layer's set, decode
// (single and batched) against prefill, caches of F layers only, and bad inputs.
//
// Tolerances. f32 weights and f32 caches: both sides compute in f32 and differ in summation order
// only (cuBLAS / the small-M kernel vs the CPU's fixed-order dots), ~1e-6 of the logit scale; the
// fixture bound stays the CPU test's 1e-4 x max(1, max|logit|). bf16 / fp8 runs (production
// attention shapes): the GPU also rounds activations to bf16 before each tensor-core product and
// quantises indexer queries and keys to e4m3; against the CPU run on the same rounded weights the
// normwise logit error is bounded by 5e-2 (a few products of relative error ~2^-9 each over 4
// layers; the measured value is printed), and the indexer's F-layer sets overlap by >= 0.85.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "cuda/engine/cuda_backend.h"
#include "cuda_test_util.h"
#include "test_util.h"
#include "io/glm_dsa_loader.h"
#include "io/safetensors.h"
#include "model/glm_dsa.h"

namespace indexshare {
namespace {

using model::ForwardOptions;
using model::ForwardTrace;
using model::GlmDsaModel;
using model::ModelOptions;

const std::string kFixtures = std::string(INDEXSHARE_SOURCE_DIR) + "/tests/data/dsa_fixtures";

struct Fixture {
  std::string arch, name;
  std::string dir() const { return kFixtures + "/" + arch + "/" + name; }
  std::string weights() const { return kFixtures + "/" + arch + "/model.safetensors"; }
};

const std::vector<Fixture> kAll = {{"glm_moe_dsa", "all_full"},    {"glm_moe_dsa", "freq2_off2"},
                                   {"glm_moe_dsa", "pattern"},     {"glm_moe_dsa", "types_glm52"},
                                   {"deepseek_v32", "all_full"}};

std::vector<int32_t> ref_ids(const Fixture& fx) {
  const auto f = io::SafetensorsFile::open(fx.dir() + "/ref.safetensors");
  std::vector<int32_t> ids;
  for (int64_t v : f.read_i64("input_ids")) ids.push_back(static_cast<int32_t>(v));
  return ids;
}

std::vector<std::vector<int32_t>> ref_topk(const Fixture& fx, int layers) {
  const auto f = io::SafetensorsFile::open(fx.dir() + "/ref.safetensors");
  std::vector<std::vector<int32_t>> out;
  for (int l = 0; l < layers; ++l) {
    std::vector<int32_t> v;
    for (int64_t x : f.read_i64("topk." + std::to_string(l))) v.push_back(static_cast<int32_t>(x));
    out.push_back(v);
  }
  return out;
}

using testing_util::max_abs;
using testing_util::max_abs_diff;

double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::set<int32_t> row_set(const std::vector<int32_t>& v, int64_t t, int K) {
  std::set<int32_t> s;
  for (int j = 0; j < K; ++j)
    if (v[static_cast<size_t>(t * K + j)] >= 0) s.insert(v[static_cast<size_t>(t * K + j)]);
  return s;
}

// Mean over rows of |a ∩ b| / |b|.
double overlap(const std::vector<int32_t>& a, const std::vector<int32_t>& b, int64_t rows, int K) {
  double sum = 0;
  for (int64_t t = 0; t < rows; ++t) {
    const auto x = row_set(a, t, K), y = row_set(b, t, K);
    int both = 0;
    for (int32_t v : x) both += y.count(v);
    sum += y.empty() ? 1.0 : static_cast<double>(both) / static_cast<double>(y.size());
  }
  return sum / static_cast<double>(rows);
}

std::shared_ptr<backend::Backend> gpu() { return cuda::make_cuda_backend(); }

TEST(GlmDsaCuda, FixturesMatchTransformersAndTheCpu) {
  IS_REQUIRE_GPU();
  auto be = gpu();
  for (const Fixture& fx : kAll) {
    SCOPED_TRACE(fx.arch + "/" + fx.name);
    GlmDsaModel cpu = io::load_glm_dsa(fx.dir() + "/config.json", fx.weights());
    GlmDsaModel g = io::load_glm_dsa(fx.dir() + "/config.json", fx.weights(), nullptr, be);
    EXPECT_EQ(g.latent_format(), backend::CacheFormat::kF32);
    const auto& c = cpu.config();
    const auto ids = ref_ids(fx);
    const auto ref = io::SafetensorsFile::open(fx.dir() + "/ref.safetensors").read_f32("logits");
    const int K = c.index_topk;
    const auto T = static_cast<int64_t>(ids.size());
    ForwardOptions opt;
    opt.capture_topk = true;
    opt.capture_scores = true;
    ForwardTrace tc, tg;
    auto cc = cpu.new_cache();
    auto gc = g.new_cache();
    const auto lc = cpu.forward(cc, ids, opt, &tc);
    const auto lg = g.forward(gc, ids, opt, &tg);
    EXPECT_EQ(tg.indexer_calls, c.schedule.num_full());
    EXPECT_EQ(tg.shared_layers, c.schedule.num_shared());
    // Index sets: S layers read their F layer's; F layers agree with the CPU except at near-ties.
    int tie_rows = 0;
    for (int l = 0; l < c.num_layers; ++l) {
      const int src = c.schedule.source(l);
      EXPECT_EQ(tg.topk[static_cast<size_t>(l)], tg.topk[static_cast<size_t>(src)]) << "S layer " << l;
      if (!c.schedule.is_full(l)) continue;
      const auto& scores = tc.scores[static_cast<size_t>(l)];
      for (int64_t t = 0; t < T; ++t) {
        const auto a = row_set(tg.topk[static_cast<size_t>(l)], t, K), b = row_set(tc.topk[static_cast<size_t>(l)], t, K);
        if (a == b) continue;
        ++tie_rows;
        std::vector<float> row(scores.begin() + t * T, scores.begin() + t * T + t + 1);
        std::sort(row.begin(), row.end(), std::greater<float>());
        const float kth = row[static_cast<size_t>(K - 1)];
        std::vector<int32_t> diff;
        std::set_symmetric_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(diff));
        for (int32_t s : diff)
          EXPECT_NEAR(scores[static_cast<size_t>(t * T + s)], kth, 1e-5f * std::max(1.0f, std::fabs(kth)))
              << "layer " << l << " row " << t << ": " << s << " is not a near-tie";
      }
    }
    const float scale = std::max(1.0f, max_abs(ref));
    // Logits with the transformers sets forced (independent of tie-breaking), and own sets.
    const auto forced = ref_topk(fx, c.num_layers);
    ForwardOptions fo;
    fo.forced_topk = &forced;
    auto gc2 = g.new_cache();
    const auto lf = g.forward(gc2, ids, fo);
    const float d_forced = max_abs_diff(lf, ref), d_cpu = max_abs_diff(lg, lc), d_own = max_abs_diff(lg, ref);
    std::printf("[%s/%s] gpu vs transformers (forced sets) %.3g, gpu vs cpu %.3g, own vs transformers %.3g, "
                "near-tie rows %d\n",
                fx.arch.c_str(), fx.name.c_str(), d_forced, d_cpu, d_own, tie_rows);
    EXPECT_LE(d_forced, 1e-4f * scale);
    if (tie_rows == 0) {
      EXPECT_LE(d_cpu, 1e-4f * scale);
      EXPECT_LE(d_own, 1e-4f * scale);
    }
  }
}

TEST(GlmDsaCuda, DecodeAndBatchedDecodeEqualPrefill) {
  IS_REQUIRE_GPU();
  auto be = gpu();
  const Fixture fx = kAll[3];  // GLM-5.2-style schedule FFFSSSF
  GlmDsaModel g = io::load_glm_dsa(fx.dir() + "/config.json", fx.weights(), nullptr, be);
  const auto ids = ref_ids(fx);
  const auto T = static_cast<int64_t>(ids.size());
  const int64_t V = g.config().vocab_size;
  auto full = g.new_cache();
  const auto prefill = g.forward(full, ids);
  const float scale = std::max(1.0f, max_abs(prefill));
  // Token by token (the small-M kernels instead of cuBLAS: same function, other summation order).
  auto one = g.new_cache();
  std::vector<float> decoded;
  for (int64_t t = 0; t < T; ++t) {
    const auto row = g.forward(one, std::span<const int32_t>(ids).subspan(static_cast<size_t>(t), 1));
    decoded.insert(decoded.end(), row.begin(), row.end());
  }
  EXPECT_EQ(one.length, T);
  const float d_dec = max_abs_diff(decoded, prefill);
  std::printf("decode vs prefill: max diff %.3g (logit scale %.3g)\n", d_dec, scale);
  EXPECT_LE(d_dec, 1e-4f * scale);
  // Three sequences at different depths decoded in one batched step equal each decoded alone.
  const std::vector<int64_t> lens = {40, 17, 63};
  std::vector<model::GlmDsaCache> caches;
  for (int64_t n : lens) {
    caches.push_back(g.new_cache());
    g.forward(caches.back(), std::span<const int32_t>(ids).first(static_cast<size_t>(n)), {.logits = model::LogitRows::kNone});
  }
  std::vector<model::GlmDsaCache*> ptrs;
  std::vector<int32_t> next;
  for (size_t b = 0; b < caches.size(); ++b) {
    ptrs.push_back(&caches[b]);
    next.push_back(ids[static_cast<size_t>(lens[b])]);
  }
  const auto batched = g.decode(ptrs, next);
  ASSERT_EQ(static_cast<int64_t>(batched.size()), 3 * V);
  for (size_t b = 0; b < caches.size(); ++b) {
    EXPECT_EQ(caches[b].length, lens[b] + 1);
    const std::vector<float> want(prefill.begin() + lens[b] * V, prefill.begin() + (lens[b] + 1) * V);
    const std::vector<float> got(batched.begin() + static_cast<int64_t>(b) * V, batched.begin() + static_cast<int64_t>(b + 1) * V);
    EXPECT_LE(max_abs_diff(got, want), 1e-4f * scale) << "sequence " << b;
  }
}

// GLM-5's attention and indexer dimensions on a small random model: the fast kernels (bf16
// latent, fp8 indexer cache, bf16 / fp8 weights) against the CPU.
model::GlmDsaConfig production_shapes() {
  model::GlmDsaConfig c;
  c.arch = model::DsaArch::kGlmMoeDsa;
  c.vocab_size = 1000;
  c.hidden_size = 512;
  c.num_layers = 4;
  c.num_heads = 16;
  c.q_lora_rank = 256;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 64;
  c.attn_scale = 1.0f / std::sqrt(128.0f);
  c.rope_inv_freq = model::rope_inv_freq_default(10000.0, 64);
  c.index_n_heads = 32;
  c.index_head_dim = 128;
  c.index_topk = 64;
  c.indexer_rope_interleave = true;
  c.schedule = share::Schedule::from_pattern("FFSF");
  c.intermediate_size = 512;
  c.moe_intermediate_size = 128;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.routed_scaling_factor = 2.5f;
  c.moe_layer = {false, true, true, true};
  return c;
}

std::vector<int32_t> random_ids(int64_t n, int64_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& x : ids) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(V));
  return ids;
}

TEST(GlmDsaCuda, ProductionShapesMatchTheCpu) {
  IS_REQUIRE_GPU();
  auto be = gpu();
  std::shared_ptr<backend::Backend> cpu_be = backend::make_backend(Device::kCpu);
  const auto c = production_shapes();
  const auto ids = random_ids(300, c.vocab_size, 5);  // context 300 > top-k 64
  const int K = c.index_topk;
  const int64_t T = static_cast<int64_t>(ids.size());
  ForwardOptions opt;
  opt.capture_topk = true;
  struct Run {
    backend::WeightFormat w;
    std::optional<backend::CacheFormat> latent, index;
    double bound;
    double min_overlap;
  };
  for (const Run& r : {Run{backend::WeightFormat::kF32, backend::CacheFormat::kF32, backend::CacheFormat::kF32, 1e-4, 0.99},
                       Run{backend::WeightFormat::kBf16, std::nullopt, std::nullopt, 5e-2, 0.85},
                       Run{backend::WeightFormat::kFp8Block, std::nullopt, std::nullopt, 5e-2, 0.85}}) {
    const std::string label = std::string(backend::weight_format_name(r.w));
    SCOPED_TRACE(label);
    ModelOptions go;
    go.weights = r.w;
    go.latent_cache = r.latent;
    go.indexer_cache = r.index;
    go.max_tokens = 1024;
    ModelOptions co = go;
    co.weights = r.w == backend::WeightFormat::kFp8Block ? backend::WeightFormat::kFp8Block : r.w;
    co.latent_cache.reset();
    co.indexer_cache.reset();
    auto g = GlmDsaModel::random(c, be, go, 11);
    auto cpu = GlmDsaModel::random(c, cpu_be, co, 11);
    if (!r.latent) {
      EXPECT_EQ(g->latent_format(), backend::CacheFormat::kBf16);
      EXPECT_EQ(g->indexer_format(), backend::CacheFormat::kFp8);
    }
    // Indexer caches exist for the F layers only.
    const size_t per = g->stack().indexer_cache_bytes(0);
    EXPECT_EQ(g->stack().indexer_cache_bytes(2), 0u);
    EXPECT_EQ(g->indexer_cache_bytes(), 3 * per);
    ForwardTrace tg, tc;
    auto gc = g->new_cache();
    auto cc = cpu->new_cache();
    const auto lg = g->forward(gc, ids, opt, &tg);
    const auto lc = cpu->forward(cc, ids, opt, &tc);
    const double e = rel_err(lg, lc);
    double ov = 1.0;
    for (int l : {0, 1, 3}) ov = std::min(ov, overlap(tg.topk[static_cast<size_t>(l)], tc.topk[static_cast<size_t>(l)], T, K));
    std::printf("[production shapes, %s weights, latent %s, indexer %s] logits rel err vs cpu %.3g, min F-layer "
                "top-k overlap %.4f, indexer cache %zu bytes\n",
                label.c_str(), backend::cache_format_name(g->latent_format()).data(),
                backend::cache_format_name(g->indexer_format()).data(), e, ov, g->indexer_cache_bytes());
    EXPECT_LE(e, r.bound);
    EXPECT_GE(ov, r.min_overlap);
    EXPECT_EQ(tg.topk[2], tg.topk[1]) << "S layer 2 reads layer 1's set";
    // The same forward with the CPU's sets forced isolates the attention numerics.
    auto gc2 = g->new_cache();
    ForwardOptions fo;
    fo.forced_topk = &tc.topk;
    const double ef = rel_err(g->forward(gc2, ids, fo), lc);
    std::printf("  with the cpu's sets forced: rel err %.3g\n", ef);
    EXPECT_LE(ef, r.bound);
  }
}

TEST(GlmDsaCuda, CapturedDecodeStepsEqualEagerOnes) {
  // decode() replays captured graphs (fixed shapes, lengths bucketed); the logits must be
  // bit-identical to eager steps, across a page boundary and with the batch changing size.
  IS_REQUIRE_GPU();
  auto be = gpu();
  const auto c = production_shapes();
  auto run = [&](bool graphs) {
    ModelOptions o;
    o.weights = backend::WeightFormat::kBf16;
    o.max_tokens = 1024;
    o.graphs = graphs;
    o.graph_bucket = 128;
    auto g = GlmDsaModel::random(c, be, o, 21);
    std::vector<model::GlmDsaCache> seqs;
    for (int64_t n : {60, 97}) {
      seqs.push_back(g->new_cache());
      g->forward(seqs.back(), random_ids(n, c.vocab_size, static_cast<uint64_t>(n)), {.logits = model::LogitRows::kNone});
    }
    std::vector<float> all;
    for (int step = 0; step < 12; ++step) {
      std::vector<model::GlmDsaCache*> ptrs = {&seqs[0]};
      if (step % 4 != 3) ptrs.push_back(&seqs[1]);  // batch 2, sometimes 1
      std::vector<int32_t> toks(ptrs.size(), static_cast<int32_t>(step * 7 + 1));
      const auto l = g->decode(ptrs, toks);
      all.insert(all.end(), l.begin(), l.end());
    }
    EXPECT_EQ(g->stack().counters().indexer_calls, g->stack().counters().steps * 3);
    return all;
  };
  const auto eager = run(false), graphed = run(true);
  ASSERT_EQ(eager.size(), graphed.size());
  EXPECT_EQ(max_abs_diff(eager, graphed), 0.0f);
}

TEST(GlmDsaCuda, CapacityAndBadInputsAreErrors) {
  IS_REQUIRE_GPU();
  auto be = gpu();
  const auto c = production_shapes();
  ModelOptions o;
  o.weights = backend::WeightFormat::kBf16;
  o.max_tokens = 128;
  auto g = GlmDsaModel::random(c, be, o, 3);
  auto cache = g->new_cache();
  const auto ids = random_ids(200, c.vocab_size, 1);
  try {
    g->forward(cache, ids);
    ADD_FAILURE() << "200 tokens fit a 128-token cache";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cache capacity"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cache.length, 0);
  // A format the GPU kernels do not take for these dims is an Error naming it, not a fallback.
  ModelOptions bad = o;
  bad.indexer_cache = backend::CacheFormat::kBf16;
  EXPECT_THROW(GlmDsaModel::random(c, be, bad, 3), Error);
  // Out of GPU memory: a cache larger than the card.
  ModelOptions huge = o;
  huge.max_tokens = int64_t{1} << 30;
  try {
    GlmDsaModel::random(c, be, huge, 3);
    ADD_FAILURE() << "a 1G-token cache fit on the GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of GPU memory"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace indexshare

// GLM-MoE-DSA model forward on the CPU: prefill of a prompt and one decode step after it, for
// a small random model (hidden 512, 4 layers with schedule FSFS, 16 experts top-4,
// index_topk 128) — end-to-end cost of the model glue around the ops.
#include <benchmark/benchmark.h>

#include <cmath>
#include <map>
#include <random>

#include "model/glm_dsa.h"

namespace indexshare::model {
namespace {

class RandomSource : public WeightSource {
 public:
  explicit RandomSource(const GlmDsaConfig& c) {
    std::mt19937 rng(11);
    for (auto& [name, shape] : glm_dsa_tensor_shapes(c, false)) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      const float s = shape.size() == 2 ? 1.0f / std::sqrt(static_cast<float>(shape[1])) : 0.1f;
      std::normal_distribution<float> nd(0.0f, s);
      std::vector<float> v(static_cast<size_t>(n));
      for (float& x : v) x = nd(rng);
      if (name.find("norm.weight") != std::string::npos)
        for (float& x : v) x += 1.0f;
      t_[name] = {shape, std::move(v)};
    }
  }
  std::string label() const override { return "random"; }
  bool has(const std::string& n) const override { return t_.count(n) != 0; }
  std::vector<int64_t> shape(const std::string& n) const override { return t_.at(n).first; }
  std::vector<float> read_f32(const std::string& n) const override { return t_.at(n).second; }
  std::vector<std::string> names() const override {
    std::vector<std::string> r;
    for (const auto& [k, v] : t_) r.push_back(k);
    return r;
  }

 private:
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> t_;
};

GlmDsaModel& bench_model() {
  static GlmDsaModel m = [] {
    GlmDsaConfig c;
    c.vocab_size = 4096;
    c.hidden_size = 512;
    c.num_layers = 4;
    c.num_heads = 8;
    c.q_lora_rank = 256;
    c.kv_lora_rank = 128;
    c.qk_nope_head_dim = 64;
    c.qk_rope_head_dim = 32;
    c.v_head_dim = 64;
    c.attn_scale = 1.0f / std::sqrt(96.0f);
    c.rope_inv_freq = rope_inv_freq_default(10000.0, 32);
    c.index_n_heads = 8;
    c.index_head_dim = 64;
    c.index_topk = 128;
    c.indexer_rope_interleave = true;
    c.schedule = share::Schedule::from_pattern("FSFS");
    c.intermediate_size = 1024;
    c.moe_intermediate_size = 128;
    c.n_routed_experts = 16;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
    c.routed_scaling_factor = 2.5f;
    c.moe_layer = {false, true, true, true};
    RandomSource src(c);
    ModelOptions o;
    o.max_tokens = 2048;
    return GlmDsaModel(c, load_glm_dsa_weights(c, src, nullptr), nullptr, o);
  }();
  return m;
}

std::vector<int32_t> prompt(int64_t n) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919) % 4096);
  return ids;
}

void BM_GlmDsaPrefill(benchmark::State& st) {
  auto& m = bench_model();
  const auto ids = prompt(st.range(0));
  for (auto _ : st) {
    auto cache = m.new_cache();
    benchmark::DoNotOptimize(m.forward(cache, ids));
  }
  st.SetItemsProcessed(st.iterations() * st.range(0));
}
BENCHMARK(BM_GlmDsaPrefill)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);

void BM_GlmDsaDecodeStep(benchmark::State& st) {
  auto& m = bench_model();
  auto cache = m.new_cache();
  m.forward(cache, prompt(st.range(0)));
  const int64_t base = cache.length;
  const std::vector<int32_t> next = {42};
  for (auto _ : st) {
    st.PauseTiming();
    m.truncate(cache, base);
    st.ResumeTiming();
    benchmark::DoNotOptimize(m.forward(cache, next));
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_GlmDsaDecodeStep)->Arg(1024)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace indexshare::model

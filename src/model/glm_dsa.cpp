#include "model/glm_dsa.h"

#include <algorithm>

#include "core/error.h"
#include "model/glm_dsa_moe.h"
#include "ops/norm.h"

namespace indexshare::model {

size_t GlmDsaCache::latent_bytes() const {
  size_t n = 0;
  for (const auto& l : layers) n += l.latent.size() * sizeof(float);
  return n;
}

size_t GlmDsaCache::index_k_bytes() const {
  size_t n = 0;
  for (const auto& l : layers) n += l.index_k.size() * sizeof(float);
  return n;
}

GlmDsaModel::GlmDsaModel(GlmDsaConfig config, GlmDsaWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  config_.validate();
  IS_CHECK(static_cast<int>(weights_.layers.size()) == config_.num_layers, "GlmDsaModel: weights have ",
           weights_.layers.size(), " layers, config ", config_.num_layers);
  for (int i = 0; i < config_.num_layers; ++i)
    IS_CHECK(weights_.layers[static_cast<size_t>(i)].has_indexer == config_.schedule.is_full(i),
             "GlmDsaModel: layer ", i, " is ", config_.schedule.is_full(i) ? "F" : "S", " but its weights ",
             weights_.layers[static_cast<size_t>(i)].has_indexer ? "have" : "lack", " an indexer");
}

GlmDsaCache GlmDsaModel::new_cache() const {
  GlmDsaCache c;
  c.layers.resize(static_cast<size_t>(config_.num_layers));
  return c;
}

std::vector<float> GlmDsaModel::forward(GlmDsaCache& cache, std::span<const int32_t> tokens,
                                        const ForwardOptions& opt, ForwardTrace* trace) const {
  const GlmDsaConfig& c = config_;
  const auto T = static_cast<int64_t>(tokens.size());
  const int64_t d = c.hidden_size, V = c.vocab_size, p0 = cache.length;
  IS_CHECK(static_cast<int>(cache.layers.size()) == c.num_layers, "GlmDsaModel::forward: cache has ",
           cache.layers.size(), " layers, model ", c.num_layers, " (use new_cache())");
  for (int64_t t = 0; t < T; ++t)
    IS_CHECK(tokens[static_cast<size_t>(t)] >= 0 && tokens[static_cast<size_t>(t)] < V,
             "GlmDsaModel::forward: token id ", tokens[static_cast<size_t>(t)], " at position ", t,
             " is outside the vocabulary [0, ", V, ")");
  if (opt.forced_topk)
    IS_CHECK(static_cast<int>(opt.forced_topk->size()) == c.num_layers,
             "GlmDsaModel::forward: forced_topk has ", opt.forced_topk->size(), " layers, model ", c.num_layers);
  if (trace) {
    *trace = ForwardTrace{};
    if (opt.capture_topk) trace->topk.resize(static_cast<size_t>(c.num_layers));
    if (opt.capture_scores) trace->scores.resize(static_cast<size_t>(c.num_layers));
  }
  if (T == 0) return {};

  std::vector<float> h(static_cast<size_t>(T * d)), x(static_cast<size_t>(T * d)), y(static_cast<size_t>(T * d));
  for (int64_t t = 0; t < T; ++t)
    std::copy_n(weights_.embed.begin() + tokens[static_cast<size_t>(t)] * d, d, h.begin() + t * d);

  auto norm = [&](const std::vector<float>& w, const float* in, float* out) {
    ops::NormParams np;
    np.x = in;
    np.y = out;
    np.weight = w.data();
    np.T = T;
    np.n = d;
    np.eps = c.rms_norm_eps;
    ops::rms_norm(np);
  };

  std::vector<int32_t> topk;  // the shared top-k buffer of this call
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerWeights& L = weights_.layers[static_cast<size_t>(i)];
    const bool full = c.schedule.is_full(i);
    norm(L.input_norm, h.data(), x.data());
    AttentionIo io;
    io.x = x.data();
    io.T = T;
    io.p0 = p0;
    io.topk = &topk;
    if (opt.forced_topk && full) {
      const auto& f = (*opt.forced_topk)[static_cast<size_t>(i)];
      IS_CHECK(static_cast<int64_t>(f.size()) == T * c.index_topk, "GlmDsaModel::forward: forced_topk[", i,
               "] has ", f.size(), " entries, expected ", T * c.index_topk);
      io.forced_topk = f.data();
    }
    if (trace && opt.capture_scores && full) io.scores = &trace->scores[static_cast<size_t>(i)];
    io.out = y.data();
    attention_forward(c, L, full, cache.layers[static_cast<size_t>(i)], io);
    for (int64_t k = 0; k < T * d; ++k) h[static_cast<size_t>(k)] += y[static_cast<size_t>(k)];
    if (trace) {
      (full ? trace->indexer_calls : trace->shared_layers) += 1;
      if (opt.capture_topk) trace->topk[static_cast<size_t>(i)] = topk;
    }

    norm(L.post_norm, h.data(), x.data());
    if (L.moe) {
      moe_forward(c, L, x.data(), T, y.data());
    } else {
      mlp_forward(L.mlp, x.data(), T, y.data());
    }
    for (int64_t k = 0; k < T * d; ++k) h[static_cast<size_t>(k)] += y[static_cast<size_t>(k)];
  }
  cache.length = p0 + T;

  norm(weights_.final_norm, h.data(), x.data());
  std::vector<float> logits(static_cast<size_t>(T * V));
  linear(weights_.lm_head, x.data(), T, logits.data());
  return logits;
}

}  // namespace indexshare::model

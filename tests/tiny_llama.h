// A tiny random Llama (f32 weights) for tests that need a whole model but not the real one.
#pragma once

#include <memory>
#include <random>
#include <vector>

#include "model/llama_model.h"

namespace indexshare::testing_util {

struct TinyLlama {
  model::LlamaConfig cfg;
  std::vector<std::vector<float>> store;  // owns every weight array
  std::unique_ptr<model::LlamaModel> model;
};

inline TinyLlama make_tiny_llama(uint32_t seed, int layers = 4, int d = 32, int heads = 4, int kv = 2, int ffn = 48,
                                 int vocab = 50, int ctx = 256) {
  TinyLlama t;
  t.cfg = {layers, d, heads, kv, d / heads, ffn, vocab, ctx, 10000.0f, 1e-5f};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto make = [&](int64_t n, float scale, float offset = 0.0f) {
    t.store.emplace_back(static_cast<size_t>(n));
    for (auto& v : t.store.back()) v = offset + scale * nd(rng);
    return t.store.back().data();
  };
  auto mat = [&](int64_t N, int64_t K) {
    return model::QMatrix{make(N * K, 1.0f / std::sqrt(static_cast<float>(K))), GgmlType::kF32, N, K};
  };
  const int64_t hd = d / heads;
  model::LlamaWeights w;
  w.token_embd = mat(vocab, d);
  w.output_norm = make(d, 0.1f, 1.0f);
  w.output = w.token_embd;
  for (int l = 0; l < layers; ++l) {
    model::LlamaLayerWeights L;
    L.attn_norm = make(d, 0.1f, 1.0f);
    // Larger q/k weights give peaked attention, so top-k selection matters.
    L.wq = {make(heads * hd * d, 3.0f / std::sqrt(static_cast<float>(d))), GgmlType::kF32, heads * hd, d};
    L.wk = {make(kv * hd * d, 3.0f / std::sqrt(static_cast<float>(d))), GgmlType::kF32, kv * hd, d};
    L.wv = mat(kv * hd, d);
    L.wo = mat(d, heads * hd);
    L.ffn_norm = make(d, 0.1f, 1.0f);
    L.w_gate = mat(ffn, d);
    L.w_up = mat(ffn, d);
    L.w_down = mat(d, ffn);
    w.layers.push_back(L);
  }
  t.model = std::make_unique<model::LlamaModel>(t.cfg, std::move(w));
  return t;
}

}  // namespace indexshare::testing_util

#include "model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/dense_attention.h"
#include "ops/norm.h"
#include "ops/quant.h"
#include "ops/quant_matmul.h"
#include "ops/rope.h"

namespace indexshare::model {

void LlamaConfig::validate() const {
  IS_CHECK(n_layers > 0 && d_model > 0 && n_heads > 0 && n_kv_heads > 0 && head_dim > 0 && ffn_dim > 0 && vocab > 0,
           "llama config: every size must be > 0 (layers ", n_layers, ", d_model ", d_model, ", heads ", n_heads,
           ", kv heads ", n_kv_heads, ", head_dim ", head_dim, ", ffn ", ffn_dim, ", vocab ", vocab, ")");
  IS_CHECK(n_heads % n_kv_heads == 0, "llama config: heads (", n_heads, ") not a multiple of kv heads (", n_kv_heads, ")");
  IS_CHECK(head_dim % 2 == 0, "llama config: head_dim must be even for RoPE, got ", head_dim);
  IS_CHECK(context_length > 0, "llama config: context_length must be > 0");
}

void KvCache::reset(const LlamaConfig& c, int64_t cap) {
  IS_CHECK(cap > 0, "KvCache: capacity must be > 0, got ", cap);
  IS_CHECK(cap <= c.context_length, "KvCache: context ", cap, " exceeds the model's limit of ", c.context_length,
           " tokens");
  capacity = cap;
  length = 0;
  const size_t per = static_cast<size_t>(cap) * c.n_kv_heads * c.head_dim;
  k.assign(static_cast<size_t>(c.n_layers), std::vector<float>(per));
  v.assign(static_cast<size_t>(c.n_layers), std::vector<float>(per));
}

void matmul(const QMatrix& W, const float* x, int64_t M, float* y) {
  ops::QMatmulParams p;
  p.w = W.data;
  p.type = W.type;
  p.N = W.N;
  p.K = W.K;
  p.x = x;
  p.M = M;
  p.y = y;
  ops::quant_matmul(p);
}

static void check_matrix(const QMatrix& m, int64_t N, int64_t K, const char* name, int layer) {
  IS_CHECK(m.data != nullptr, "llama weights: layer ", layer, " ", name, " is missing");
  IS_CHECK(m.N == N && m.K == K, "llama weights: layer ", layer, " ", name, " has shape [", m.N, ", ", m.K,
           "], expected [", N, ", ", K, "]");
}

LlamaModel::LlamaModel(LlamaConfig cfg, LlamaWeights w) : cfg_(cfg), w_(std::move(w)) {
  cfg_.validate();
  const int64_t d = cfg_.d_model, qd = int64_t{cfg_.n_heads} * cfg_.head_dim, kd = int64_t{cfg_.n_kv_heads} * cfg_.head_dim;
  IS_CHECK(static_cast<int>(w_.layers.size()) == cfg_.n_layers, "llama weights: ", w_.layers.size(), " layers, config says ",
           cfg_.n_layers);
  check_matrix(w_.token_embd, cfg_.vocab, d, "token_embd", -1);
  check_matrix(w_.output, cfg_.vocab, d, "output", -1);
  IS_CHECK(w_.output_norm != nullptr, "llama weights: output_norm is missing");
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const auto& L = w_.layers[static_cast<size_t>(l)];
    IS_CHECK(L.attn_norm && L.ffn_norm, "llama weights: layer ", l, " norm weights missing");
    check_matrix(L.wq, qd, d, "attn_q", l);
    check_matrix(L.wk, kd, d, "attn_k", l);
    check_matrix(L.wv, kd, d, "attn_v", l);
    check_matrix(L.wo, d, qd, "attn_output", l);
    check_matrix(L.w_gate, cfg_.ffn_dim, d, "ffn_gate", l);
    check_matrix(L.w_up, cfg_.ffn_dim, d, "ffn_up", l);
    check_matrix(L.w_down, d, cfg_.ffn_dim, "ffn_down", l);
  }
}

void LlamaModel::embed(const int32_t* tokens, int64_t T, float* x) const {
  const int64_t d = cfg_.d_model;
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = tokens[t];
    IS_CHECK(id >= 0 && id < cfg_.vocab, "llama: token id ", id, " at position ", t, " outside the vocabulary [0, ",
             cfg_.vocab, ")");
    const int64_t row_bytes = ggml_row_bytes(w_.token_embd.type, d);
    ops::dequantize_row(w_.token_embd.type, static_cast<const uint8_t*>(w_.token_embd.data) + id * row_bytes, x + t * d, d);
  }
}

void LlamaModel::dense(const AttentionCall& a, int n_heads, int n_kv_heads, int head_dim) {
  ops::DenseAttentionParams p;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.T = a.T;
  p.L = a.L;
  p.H = n_heads;
  p.H_kv = n_kv_heads;
  p.Dk = head_dim;
  p.Dv = head_dim;
  p.q_start = a.pos0;
  p.scale = a.scale;
  p.out = a.out;
  ops::dense_attention(p);
}

void LlamaModel::forward(const int32_t* tokens, int64_t T, KvCache& cache, float* logits, bool all_logits,
                         AttentionBackend* backend) const {
  IS_CHECK(T > 0, "llama forward: empty input (no tokens)");
  IS_CHECK(tokens != nullptr, "llama forward: tokens is null");
  IS_CHECK(cache.capacity > 0 && static_cast<int>(cache.k.size()) == cfg_.n_layers,
           "llama forward: the KV cache was not reset for this model");
  IS_CHECK(cache.length + T <= cache.capacity, "llama forward: ", cache.length, " cached + ", T,
           " new tokens exceed the cache capacity of ", cache.capacity, " (the model's limit is ",
           cfg_.context_length, ")");
  const int64_t d = cfg_.d_model;
  std::vector<float> x(static_cast<size_t>(T * d));
  embed(tokens, T, x.data());
  forward_layers(0, cfg_.n_layers, x.data(), T, cache.length, cache, backend);
  cache.length += T;
  if (!logits) return;
  const int64_t first = all_logits ? 0 : T - 1;
  output_logits(x.data() + first * d, T - first, logits);
}

void LlamaModel::embed_tokens(const int32_t* tokens, int64_t T, float* x) const {
  IS_CHECK(T >= 0, "llama embed_tokens: negative row count ", T);
  IS_CHECK(T == 0 || (tokens != nullptr && x != nullptr), "llama embed_tokens: tokens or x is null");
  embed(tokens, T, x);
}

// The layer loop; forward() is embed + forward_layers(0, n_layers) + output_logits.
void LlamaModel::forward_layers(int first, int end, float* x_io, int64_t T, int64_t pos0, KvCache& cache,
                                AttentionBackend* backend) const {
  IS_CHECK(0 <= first && first <= end && end <= cfg_.n_layers, "llama forward_layers: layer range [", first, ", ", end,
           ") outside [0, ", cfg_.n_layers, "]");
  IS_CHECK(T > 0, "llama forward_layers: empty input (no rows)");
  IS_CHECK(x_io != nullptr, "llama forward_layers: x is null");
  IS_CHECK(pos0 >= 0, "llama forward_layers: negative pos0 ", pos0);
  IS_CHECK(cache.capacity > 0 && static_cast<int>(cache.k.size()) == cfg_.n_layers,
           "llama forward_layers: the KV cache was not reset for this model");
  IS_CHECK(pos0 + T <= cache.capacity, "llama forward_layers: positions ", pos0, " + ", T,
           " rows exceed the cache capacity of ", cache.capacity);
  const int64_t d = cfg_.d_model, H = cfg_.n_heads, Hkv = cfg_.n_kv_heads, Dh = cfg_.head_dim;
  const int64_t qd = H * Dh, kd = Hkv * Dh, F = cfg_.ffn_dim;
  const int64_t L = pos0 + T;
  const size_t n = static_cast<size_t>(T * d);

  std::vector<float> h(n);
  std::vector<float> q(static_cast<size_t>(T * qd)), att(static_cast<size_t>(T * qd));
  std::vector<float> g(static_cast<size_t>(T * F)), u(static_cast<size_t>(T * F));

  ops::RopeParams rp;
  rp.pos0 = pos0;
  rp.T = T;
  rp.head_dim = static_cast<int>(Dh);
  rp.rot_offset = 0;
  rp.rot_dim = static_cast<int>(Dh);
  rp.theta = cfg_.rope_theta;
  rp.pairing = ops::RopePairing::kInterleaved;

  for (int l = first; l < end; ++l) {
    const auto& W = w_.layers[static_cast<size_t>(l)];
    ops::rms_norm({.x = x_io, .weight = W.attn_norm, .y = h.data(), .T = T, .n = d, .eps = cfg_.rms_eps});
    matmul(W.wq, h.data(), T, q.data());
    float* kc = cache.k[static_cast<size_t>(l)].data() + pos0 * kd;
    float* vc = cache.v[static_cast<size_t>(l)].data() + pos0 * kd;
    matmul(W.wk, h.data(), T, kc);
    matmul(W.wv, h.data(), T, vc);
    rp.x = q.data();
    rp.H = static_cast<int>(H);
    ops::rope(rp);
    rp.x = kc;
    rp.H = static_cast<int>(Hkv);
    ops::rope(rp);

    AttentionCall a;
    a.layer = l;
    a.T = T;
    a.pos0 = pos0;
    a.L = L;
    a.x_norm = h.data();
    a.q = q.data();
    a.k = cache.k[static_cast<size_t>(l)].data();
    a.v = cache.v[static_cast<size_t>(l)].data();
    a.out = att.data();
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
    if (!backend || !backend->attend(a)) dense(a, static_cast<int>(H), static_cast<int>(Hkv), static_cast<int>(Dh));

    matmul(W.wo, att.data(), T, h.data());
    for (size_t i = 0; i < n; ++i) x_io[i] += h[i];

    ops::rms_norm({.x = x_io, .weight = W.ffn_norm, .y = h.data(), .T = T, .n = d, .eps = cfg_.rms_eps});
    matmul(W.w_gate, h.data(), T, g.data());
    matmul(W.w_up, h.data(), T, u.data());
    ops::swiglu(g.data(), u.data(), g.data(), T * F);
    matmul(W.w_down, g.data(), T, h.data());
    for (size_t i = 0; i < n; ++i) x_io[i] += h[i];
  }
}

void LlamaModel::output_logits(const float* x, int64_t rows, float* logits) const {
  IS_CHECK(rows >= 0, "llama output_logits: negative row count ", rows);
  if (rows == 0) return;
  IS_CHECK(x != nullptr && logits != nullptr, "llama output_logits: x or logits is null");
  std::vector<float> h(static_cast<size_t>(rows * cfg_.d_model));
  ops::rms_norm({.x = x, .weight = w_.output_norm, .y = h.data(), .T = rows, .n = cfg_.d_model, .eps = cfg_.rms_eps});
  matmul(w_.output, h.data(), rows, logits);
}

}  // namespace indexshare::model

#include "model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
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

void KvCache::reset(const LlamaConfig& c, int64_t cap, KvType kv_type) {
  IS_CHECK(cap > 0, "KvCache: capacity must be > 0, got ", cap);
  IS_CHECK(cap <= c.context_length, "KvCache: context ", cap, " exceeds the model's limit of ", c.context_length,
           " tokens");
  IS_CHECK(kv_type == KvType::kF32 || kv_type == KvType::kF16, "KvCache: unknown KV type ",
           static_cast<int>(kv_type));
  capacity = cap;
  length = 0;
  type = kv_type;
  const size_t per = static_cast<size_t>(cap) * c.n_kv_heads * c.head_dim;
  const size_t layers = static_cast<size_t>(c.n_layers);
  k.clear();
  v.clear();
  k16.clear();
  v16.clear();
  if (type == KvType::kF32) {
    k.assign(layers, std::vector<float>(per));
    v.assign(layers, std::vector<float>(per));
  } else {
    k16.assign(layers, std::vector<uint16_t>(per));
    v16.assign(layers, std::vector<uint16_t>(per));
  }
}

const float* attention_keys_f32(const AttentionCall& a, int64_t kv_dim, std::vector<float>& scratch) {
  if (a.k) return a.k;
  IS_CHECK(a.k16 != nullptr, "attention call of layer ", a.layer, " has no keys (neither f32 nor f16)");
  const size_t n = static_cast<size_t>(a.L * kv_dim);
  if (scratch.size() < n) scratch.resize(n);
  f16_to_f32(std::span<const uint16_t>(a.k16, n), std::span<float>(scratch.data(), n));
  return scratch.data();
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
  const auto traits = ggml_type_traits(static_cast<uint32_t>(m.type));
  IS_CHECK(traits && (m.type == GgmlType::kF32 || m.type == GgmlType::kF16 || m.type == GgmlType::kBF16 ||
                      m.type == GgmlType::kQ4_1 || m.type == GgmlType::kQ8_0),
           "llama weights: layer ", layer, " ", name, " has type ", ggml_type_name(m.type),
           ", which this engine does not compute on (supported: f32, f16, bf16, q4_1, q8_0)");
  IS_CHECK(K % traits->block_size == 0, "llama weights: layer ", layer, " ", name, " has rows of ", K,
           " elements, not a multiple of the ", traits->name, " block size ", traits->block_size);
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

void LlamaModel::dense(const AttentionCall& a, int n_heads, int n_kv_heads, int head_dim) {
  ops::DenseAttentionParams p;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.k16 = a.k16;
  p.v16 = a.v16;
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

}  // namespace indexshare::model

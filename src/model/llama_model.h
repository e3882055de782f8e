// Llama-family decoder (SmolLM2 and friends) on the CPU: RMSNorm, RoPE (adjacent-pair layout of
// GGUF Q/K rows), GQA attention with a KV cache, SwiGLU MLP, tied or separate LM head.
// Batched prefill of any number of tokens and single-token decode share one forward.
//
// Attention can be replaced per layer through AttentionBackend (the DSA / IndexShare path and
// the distillation capture use it); without one every layer runs dense causal attention.
//
// Execution: a forward runs as one team of the pool's threads (core/thread_team.h) stepping
// through the ops of every layer; each op is cut into units (row blocks x output columns,
// attention row tiles x KV groups, or key chunks in decode) whose results do not depend on the
// thread that runs them, so logits are bitwise identical for any thread count. Activations are
// quantised once per op input (Q, K, V share one quantisation, gate and up another), SwiGLU is
// fused into the gate/up product, the residual adds are fused into the output products, and
// only the requested rows reach the LM head. With a backend the team stops around each
// layer's attention so the backend runs on the calling thread with the whole pool.
//
// KV cache: f16 by default (IEEE half, round to nearest even; as llama.cpp stores it), or f32.
#pragma once

#include <cstdint>
#include <vector>

#include "core/ggml_type.h"

namespace indexshare::model {

struct LlamaConfig {
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_dim = 0;
  int vocab = 0;
  int context_length = 0;  // the model's limit
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  void validate() const;
};

// A weight matrix [N, K] (N output rows of K inputs) in a GGUF type, viewed in place.
struct QMatrix {
  const void* data = nullptr;
  GgmlType type = GgmlType::kF32;
  int64_t N = 0, K = 0;
};

struct LlamaLayerWeights {
  const float* attn_norm = nullptr;  // [d_model]
  QMatrix wq, wk, wv, wo;            // [H*Dh, d], [Hkv*Dh, d], [Hkv*Dh, d], [d, H*Dh]
  const float* ffn_norm = nullptr;   // [d_model]
  QMatrix w_gate, w_up, w_down;      // [F, d], [F, d], [d, F]
};

struct LlamaWeights {
  QMatrix token_embd;                // [vocab, d]
  const float* output_norm = nullptr;
  QMatrix output;                    // [vocab, d]; == token_embd when tied
  std::vector<LlamaLayerWeights> layers;
};

enum class KvType { kF32, kF16 };

// KV cache: per layer K (after RoPE) and V [capacity, H_kv, Dh], in f32 (k, v) or in IEEE half
// (k16, v16); the other pair is empty. f16 halves the bytes decode reads per cached token.
struct KvCache {
  int64_t capacity = 0;
  int64_t length = 0;  // tokens written
  KvType type = KvType::kF16;
  std::vector<std::vector<float>> k, v;
  std::vector<std::vector<uint16_t>> k16, v16;
  void reset(const LlamaConfig& c, int64_t capacity, KvType type = KvType::kF16);
  void clear() { length = 0; }
  int layers() const { return static_cast<int>(type == KvType::kF32 ? k.size() : k16.size()); }
};

// What a backend sees for one layer of one forward call. The cache is exposed in its own
// type: f32 caches fill k / v (k16 / v16 null), f16 caches fill k16 / v16 (k / v null).
// ops::dense_attention and ops::sparse_attention (GQA form) take either pair as they are
// (k16 / v16 fields), so a backend that passes the pointers through works with both; one that
// needs f32 rows should ask its users for KvType::kF32 (KvCache::reset) or widen the rows it
// reads (core/dtype.h f16_to_f32).
struct AttentionCall {
  int layer = 0;
  int64_t T = 0;      // new tokens in this call
  int64_t pos0 = 0;   // absolute position of the first new token
  int64_t L = 0;      // cache length after appending the new tokens (= pos0 + T)
  const float* x_norm = nullptr;  // [T, d_model] the attention input (after attn_norm)
  const float* q = nullptr;       // [T, H, Dh] after RoPE
  KvType kv_type = KvType::kF32;
  const float* k = nullptr;       // [L, H_kv, Dh] f32 cache (RoPE applied); null for f16
  const float* v = nullptr;       // [L, H_kv, Dh] f32 cache; null for f16
  const uint16_t* k16 = nullptr;  // [L, H_kv, Dh] f16 cache (RoPE applied); null for f32
  const uint16_t* v16 = nullptr;  // [L, H_kv, Dh] f16 cache; null for f32
  float* out = nullptr;           // [T, H, Dh] to be written by the hook
  float scale = 0.0f;             // 1/sqrt(Dh)
};
// Replaces (or observes) attention per layer: the DSA / IndexShare path and the distillation
// capture implement it. State that lives across calls (indexer-K caches, counters) belongs to
// the backend; begin_sequence() is called by users of the model when a new sequence starts
// (the KV cache is cleared).
class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual void begin_sequence() {}
  // Returns true when it wrote a.out; false lets the model run dense attention.
  virtual bool attend(const AttentionCall& a) = 0;
};

class LlamaModel {
 public:
  LlamaModel(LlamaConfig cfg, LlamaWeights w);
  const LlamaConfig& config() const { return cfg_; }

  // Runs tokens [T] at positions cache.length .. cache.length + T - 1 and appends to the cache.
  // logits: [T, vocab] when all_logits, else [vocab] for the last token; may be null (then
  // the LM head is skipped). Scratch memory is kept per calling thread and reused.
  void forward(const int32_t* tokens, int64_t T, KvCache& cache, float* logits, bool all_logits,
               AttentionBackend* backend = nullptr) const;

  // Step-wise forward, for callers that resume a forward from a saved hidden state (the sharing-
  // pattern search). embed_tokens(), then forward_layers(0, n_layers), then output_logits() on
  // every row computes what forward() does, bit for bit.
  //   embed_tokens:   x [T, d_model] = the token embeddings.
  //   forward_layers: runs decoder layers [first, end) in place on x [T, d_model], the hidden state
  //                   entering layer `first` of the rows at positions pos0 .. pos0 + T - 1; writes
  //                   those rows' K/V of these layers into the cache (K/V of earlier positions must
  //                   be there already) and calls the backend for their attention. It does not
  //                   change cache.length.
  //   output_logits:  logits [rows, vocab] of the final hidden rows x [rows, d_model].
  void embed_tokens(const int32_t* tokens, int64_t T, float* x) const;
  void forward_layers(int first, int end, float* x, int64_t T, int64_t pos0, KvCache& cache,
                      AttentionBackend* backend = nullptr) const;
  void output_logits(const float* x, int64_t rows, float* logits) const;

  // Dense attention for one call, f32 or f16 cache (also what a backend can fall back to).
  static void dense(const AttentionCall& a, int n_heads, int n_kv_heads, int head_dim);

  const LlamaWeights& weights() const { return w_; }

 private:
  LlamaConfig cfg_;
  LlamaWeights w_;
};

// The call's keys [L, H_kv, Dh] in f32: a.k itself for an f32 cache, else the f16 rows widened
// into `scratch` (for backends whose ops read f32 keys: attention probabilities, capture).
const float* attention_keys_f32(const AttentionCall& a, int64_t kv_dim, std::vector<float>& scratch);

// y[M, N] = x[M, K] * W^T for any QMatrix type (dispatches to ops/quant_matmul).
void matmul(const QMatrix& W, const float* x, int64_t M, float* y);

}  // namespace indexshare::model

// Llama-family decoder (SmolLM2 and friends) on the CPU: RMSNorm, RoPE (adjacent-pair layout of
// GGUF Q/K rows), GQA attention with a KV cache, SwiGLU MLP, tied or separate LM head.
// Batched prefill of any number of tokens and single-token decode share one forward.
//
// Attention can be replaced per layer through AttentionHook (the DSA / IndexShare path and the
// distillation capture use it); without a hook every layer runs dense causal attention.
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

// KV cache in fp32: per layer K and V [capacity, H_kv, Dh].
struct KvCache {
  int64_t capacity = 0;
  int64_t length = 0;  // tokens written
  std::vector<std::vector<float>> k, v;
  void reset(const LlamaConfig& c, int64_t capacity);
  void clear() { length = 0; }
};

// What a hook sees for one layer of one forward call.
struct AttentionCall {
  int layer = 0;
  int64_t T = 0;      // new tokens in this call
  int64_t pos0 = 0;   // absolute position of the first new token
  int64_t L = 0;      // cache length after appending the new tokens (= pos0 + T)
  const float* x_norm = nullptr;  // [T, d_model] the attention input (after attn_norm)
  const float* q = nullptr;       // [T, H, Dh] after RoPE
  const float* k = nullptr;       // [L, H_kv, Dh] cache (RoPE applied)
  const float* v = nullptr;       // [L, H_kv, Dh]
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
  // logits: [T, vocab] when all_logits, else [vocab] for the last token; may be null.
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

  // Dense attention for one call (also what a hook can fall back to).
  static void dense(const AttentionCall& a, int n_heads, int n_kv_heads, int head_dim);

 private:
  void embed(const int32_t* tokens, int64_t T, float* x) const;
  LlamaConfig cfg_;
  LlamaWeights w_;
};

// y[M, N] = x[M, K] * W^T for any QMatrix type (dispatches to ops/quant_matmul).
void matmul(const QMatrix& W, const float* x, int64_t M, float* y);

}  // namespace indexshare::model

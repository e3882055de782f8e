// One decoder layer's attention for the GLM-MoE-DSA / DeepSeek-V3.2 family: MLA with DeepSeek
// Sparse Attention, CPU.
//
// MLA (per token, x = the input-normed hidden state):
//   c_q = RMSNorm(q_a_proj(x));  q = q_b_proj(c_q) -> [H, nope + rope], RoPE on the last `rope`
//   dims (MLA pairing);  [c_kv, k_pe] = kv_a_proj_with_mqa(x);  c_kv = RMSNorm(c_kv);
//   k_pe = RoPE(k_pe). The cache keeps the latent [c_kv ; k_pe] per token (kv_lora + rope).
//   Attention runs in the absorbed form: q_lat[h] = [W_UK[h]^T q_nope[h] ; q_pe[h]] against the
//   latents of the selected tokens, then o[h] = W_UV[h] (sum_s p_s c_kv[s]), out = o_proj(o).
//   (W_UK / W_UV are the per-head row blocks of kv_b_proj.) This equals the expanded form of
//   transformers up to fp32 rounding.
// Indexer (F layers only): q_I = wq_b(c_q) -> [H_I, D_I]; k_I = LayerNorm(wk(x)) (eps 1e-6, with
//   bias); RoPE on the FIRST `rope` dims of both, with the indexer pairing; w = weights_proj(x);
//   I[t, s] = sum_h w[t, h] * H_I^-0.5 * D_I^-0.5 * ReLU(q_I[t, h] . k_I[s]) for s <= t, and
//   the top index_topk keys (ties: lower position) become the row's index set. The indexer K
//   cache holds k_I per token. S layers take the index set of the previous F layer.
#pragma once

#include <cstdint>
#include <vector>

#include "model/glm_dsa_config.h"
#include "model/glm_dsa_weights.h"

namespace indexshare::model {

// Per-layer caches. `latent` grows for every layer; `index_k` only for F layers.
struct LayerCache {
  std::vector<float> latent;   // [L, kv_lora + rope]
  std::vector<float> index_k;  // [L, index_head_dim], F layers only (empty for S layers)
};

struct AttentionIo {
  const float* x = nullptr;          // [T, hidden] input-normed hidden states
  int64_t T = 0;
  int64_t p0 = 0;                    // absolute position of row 0 = tokens already cached
  std::vector<int32_t>* topk = nullptr;  // [T, index_topk]: written by F layers, read by S
  const int32_t* forced_topk = nullptr;  // [T, index_topk] nullable: F layers use it instead
  std::vector<float>* scores = nullptr;  // nullable: F layers write I [T, p0 + T] (-inf masked)
  float* out = nullptr;              // [T, hidden] attention output (after o_proj)
};

// Runs the layer for T new tokens, appends them to `cache`. `full` = the schedule's F flag.
void attention_forward(const GlmDsaConfig& c, const LayerWeights& L, bool full, LayerCache& cache,
                       const AttentionIo& io);

}  // namespace indexshare::model

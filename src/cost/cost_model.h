// Per-token FLOP and byte model of a DSA architecture, with and without indexer sharing.
// The accounting is written out term by term in docs/cost-model.md; in short:
//
//  - FLOPs: 2 per multiply-accumulate; matrix products only. Norms, RoPE, activations, softmax,
//    ReLU, router scoring and the top-k selection itself are left out (top-k: about one
//    comparison per candidate key, < 1/8000 of the scoring FLOPs for DSA shapes).
//  - Attention runs in the absorbed (MQA) form of MLA in both phases, as DSA is defined.
//  - Decode: one new token with a context of L tokens (its own included): the indexer scores L
//    keys and attention reads min(K, L) selected latents.
//  - Prefill: the average over the L tokens of one causal sequence: token t (0-based) scores
//    t + 1 keys, i.e. (L + 1) / 2 on average, and attends to min(K, t + 1). Logits are computed
//    for the last position only (LM head / L per token).
//  - S (shared) layers run no indexer at all (no q / k / weight projections, no scoring, no
//    top-k, no indexer-K cache); they still run their own MLA projections, write their own MLA
//    cache, attend over the F layer's min(K, L) indices and run their own MLP / MoE.
//  - R (reindex) layers run their own small indexer (H_R heads x D_R dims, CostOptions) over
//    only the C candidates their F layer carried over: projections as an F layer's at that
//    shape, scoring min(C, L) keys in decode and the mean of min(C, t + 1) in prefill, and they
//    store their own indexer keys (D_R per token).
//  - Bytes (decode only, batch 1): every active weight read once per token at the chosen weight
//    width, plus the cache entries read: min(K, L) MLA latents per layer, L indexer keys per
//    F layer and min(C, L) per R layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "share/schedule.h"

namespace indexshare::cost {

enum class Phase { kDecode, kPrefill };
std::string_view phase_name(Phase p);

// The numbers the model uses, taken from a config.
struct Arch {
  std::string name;
  bool dsa = true;             // false: plain llama (dense GQA attention, no indexer, no MoE)
  int64_t layers = 0, hidden = 0, vocab = 0;
  int64_t heads = 0, kv_heads = 0, head_dim = 0;           // head_dim / kv_heads: llama only
  int64_t q_lora_rank = 0;                                 // 0: q projected from the hidden state
  int64_t kv_lora_rank = 0, qk_nope = 0, qk_rope = 0, v_head = 0;
  int64_t intermediate = 0;                                // dense MLP width
  int64_t moe_intermediate = 0, n_routed = 0, n_shared = 0, experts_per_tok = 0;
  std::vector<bool> moe_layer;                             // per layer: MoE (true) or dense MLP
  int64_t index_heads = 0, index_head_dim = 0, index_topk = 0;
};
Arch arch_from_config(const io::HfConfig& c, std::string name);

struct CostOptions {
  double weight_bytes = 1.0;   // bytes per weight (fp8 1, bf16 2, f32 4)
  double kv_elem_bytes = 2.0;  // llama only: bytes per cached K or V element
  // R layers (needed when the schedule has any): the candidates C an F layer carries over, and
  // the R indexer's shape (0 = the F indexer's heads / head dim).
  int64_t candidates = 0;
  int64_t reindex_heads = 0, reindex_head_dim = 0;
};

// FLOPs per token by component.
struct Flops {
  double indexer_proj = 0;   // wq_b, wk, weights_proj (F layers)
  double indexer_score = 0;  // q.k over the keys + head-weighted sum (F layers)
  double reindex_proj = 0;   // the same projections of the R layers' indexers
  double reindex_score = 0;  // R layers: scores of their candidates
  double attn_proj = 0;      // q_a, q_b, kv_a, absorbed kv_b (both halves), o
  double attn_core = 0;      // scores and values over the selected keys
  double mlp_dense = 0;      // dense SwiGLU layers
  double mlp_moe = 0;        // router + routed top-k experts + shared experts
  double lm_head = 0;
  double indexer() const { return indexer_proj + indexer_score + reindex_proj + reindex_score; }
  double total() const { return indexer() + attn_proj + attn_core + mlp_dense + mlp_moe + lm_head; }
};

// Bytes read per decoded token.
struct Bytes {
  double weights = 0;        // active weights
  double mla_cache = 0;      // attention cache entries read (MLA latents; llama: K and V)
  double indexer_cache = 0;  // indexer-K entries read (F and R layers)
  double total() const { return weights + mla_cache + indexer_cache; }
};

struct TokenCost {
  Flops flops;
  Bytes bytes;
  bool bytes_modelled = false;  // true for decode
  double keys_scored = 0;       // per F layer: keys the indexer scores for this token
  double keys_rescored = 0;     // per R layer: candidates its indexer scores
  double keys_attended = 0;     // per layer: keys attention reads
};

// Per-token cost at context L (>= 1) of `arch` run under `schedule`.
TokenCost token_cost(const Arch& arch, const share::Schedule& schedule, Phase phase, int64_t context,
                     const CostOptions& opt = {});

// The same model under its schedule and with every layer F.
struct Comparison {
  Phase phase = Phase::kDecode;
  int64_t context = 0;
  TokenCost shared, all_full;
  double ratio = 1;        // all_full FLOPs / shared FLOPs
  double bytes_ratio = 1;  // decode only (1 for prefill)
};
Comparison compare(const Arch& arch, const share::Schedule& schedule, Phase phase, int64_t context,
                   const CostOptions& opt = {});

// Cache bytes stored per token of context (all layers): MLA latent on every layer, indexer K on
// F and R layers only (R at its own head dim). Llama: K and V at kv_elem_bytes.
double cache_bytes_per_token(const Arch& arch, const share::Schedule& schedule, const CostOptions& opt = {});
// Bytes of one MLA cache entry (FP8 latent + one fp32 scale per 128 + bf16 rope): 656 for
// kv_lora_rank 512, rope 64. And of one indexer-K entry (FP8 key + fp32 scale): 132 for 128.
double mla_entry_bytes(const Arch& arch);
double indexer_entry_bytes(const Arch& arch);

}  // namespace indexshare::cost

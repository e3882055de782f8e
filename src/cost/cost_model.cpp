#include "cost/cost_model.h"

#include <algorithm>

#include "core/error.h"

namespace indexshare::cost {
namespace {

constexpr double kFlopsPerMac = 2.0;

double d(int64_t v) { return static_cast<double>(v); }

// Keys the indexer scores and keys attention reads, per query token.
struct KeyCounts {
  double scored;    // causal candidates
  double attended;  // selected (DSA: min(K, candidates); llama: all candidates)
};

KeyCounts key_counts(const Arch& a, Phase phase, int64_t L) {
  const double K = d(a.index_topk);
  if (phase == Phase::kDecode) {
    const double att = a.dsa ? std::min(K, d(L)) : d(L);
    return {d(L), att};
  }
  // Prefill: mean over t = 0..L-1 of (t + 1) and of min(K, t + 1).
  const double mean_all = (d(L) + 1.0) / 2.0;
  if (!a.dsa || L <= a.index_topk) return {mean_all, mean_all};
  const double sum_sel = K * (K + 1.0) / 2.0 + (d(L) - K) * K;
  return {mean_all, sum_sel / d(L)};
}

// Multiply-accumulates (= weights read) of the indexer projections of one layer with an H x D
// indexer, per token.
double indexer_proj_macs(const Arch& a, int64_t heads, int64_t dim) {
  const double q_in = a.q_lora_rank > 0 ? d(a.q_lora_rank) : d(a.hidden);
  return q_in * d(heads * dim)   // wq_b
         + d(a.hidden) * d(dim)  // wk
         + d(a.hidden) * d(heads);  // weights_proj
}
double indexer_proj_macs(const Arch& a) { return indexer_proj_macs(a, a.index_heads, a.index_head_dim); }

// Candidates an R layer scores per token: min(C, L) in decode, the mean of min(C, t + 1) over a
// causal sequence in prefill.
double rescored_keys(Phase phase, int64_t L, int64_t C) {
  if (phase == Phase::kDecode || L <= C) return phase == Phase::kDecode ? d(std::min(C, L)) : (d(L) + 1.0) / 2.0;
  return (d(C) * (d(C) + 1.0) / 2.0 + (d(L) - d(C)) * d(C)) / d(L);
}

int64_t reindex_heads(const Arch& a, const CostOptions& o) { return o.reindex_heads > 0 ? o.reindex_heads : a.index_heads; }
int64_t reindex_dim(const Arch& a, const CostOptions& o) {
  return o.reindex_head_dim > 0 ? o.reindex_head_dim : a.index_head_dim;
}

// Attention projections of one layer, per token (MACs = weights read).
double attn_proj_macs(const Arch& a) {
  if (!a.dsa) {
    const double D = d(a.hidden), hd = d(a.head_dim);
    return D * d(a.heads) * hd + 2.0 * D * d(a.kv_heads) * hd + d(a.heads) * hd * D;
  }
  const double D = d(a.hidden), H = d(a.heads);
  const double qk = d(a.qk_nope + a.qk_rope);
  const double q = a.q_lora_rank > 0 ? D * d(a.q_lora_rank) + d(a.q_lora_rank) * H * qk : D * H * qk;
  const double kv_a = D * d(a.kv_lora_rank + a.qk_rope);
  // Absorbed kv_b: q_nope -> latent (H * nope * r_kv) and latent -> v (H * r_kv * v_head).
  const double kv_b = H * d(a.kv_lora_rank) * d(a.qk_nope + a.v_head);
  const double o = H * d(a.v_head) * D;
  return q + kv_a + kv_b + o;
}

// MACs per attended key of one layer.
double attn_core_macs_per_key(const Arch& a) {
  if (!a.dsa) return 2.0 * d(a.heads) * d(a.head_dim);  // q.k and p.v per head
  // Key = [latent ; rope], value = latent.
  return d(a.heads) * (d(a.kv_lora_rank + a.qk_rope) + d(a.kv_lora_rank));
}

double dense_mlp_macs(const Arch& a) { return 3.0 * d(a.hidden) * d(a.intermediate); }
double moe_mlp_macs(const Arch& a) {
  return d(a.hidden) * d(a.n_routed)  // router
         + d(a.experts_per_tok + a.n_shared) * 3.0 * d(a.hidden) * d(a.moe_intermediate);
}

}  // namespace

std::string_view phase_name(Phase p) { return p == Phase::kDecode ? "decode" : "prefill"; }

Arch arch_from_config(const io::HfConfig& c, std::string name) {
  Arch a;
  a.name = std::move(name);
  a.dsa = c.is_dsa();
  a.layers = c.num_hidden_layers;
  a.hidden = c.hidden_size;
  a.vocab = c.vocab_size;
  a.heads = c.num_attention_heads;
  a.kv_heads = c.num_key_value_heads;
  a.intermediate = c.intermediate_size;
  a.moe_layer.resize(static_cast<size_t>(a.layers));
  for (int64_t i = 0; i < a.layers; ++i) a.moe_layer[static_cast<size_t>(i)] = c.is_moe_layer(i);
  if (!a.dsa) {
    a.head_dim = c.head_dim.value_or(c.hidden_size / c.num_attention_heads);
    return a;
  }
  a.q_lora_rank = c.q_lora_rank.value_or(0);
  a.kv_lora_rank = c.kv_lora_rank;
  a.qk_nope = c.qk_nope_head_dim;
  a.qk_rope = c.qk_rope_head_dim;
  a.v_head = c.v_head_dim;
  a.moe_intermediate = c.moe_intermediate_size;
  a.n_routed = c.n_routed_experts;
  a.n_shared = c.n_shared_experts;
  a.experts_per_tok = c.num_experts_per_tok;
  a.index_heads = c.index_n_heads;
  a.index_head_dim = c.index_head_dim;
  a.index_topk = c.index_topk;
  return a;
}

double mla_entry_bytes(const Arch& a) {
  if (!a.dsa) return 0;
  return d(a.kv_lora_rank) + 4.0 * d((a.kv_lora_rank + 127) / 128) + 2.0 * d(a.qk_rope);
}
double indexer_entry_bytes(const Arch& a, int64_t dim) {
  if (!a.dsa) return 0;
  return d(dim) + 4.0 * d((dim + 127) / 128);
}
double indexer_entry_bytes(const Arch& a) { return indexer_entry_bytes(a, a.index_head_dim); }

TokenCost token_cost(const Arch& a, const share::Schedule& s, Phase phase, int64_t L, const CostOptions& opt) {
  IS_CHECK(L >= 1, "context = ", L, " must be >= 1");
  IS_CHECK(s.num_layers() == a.layers, "schedule has ", s.num_layers(), " layers but the model (", a.name,
           ") has ", a.layers);
  IS_CHECK(a.dsa || s.num_shared() == 0, "model ", a.name, " has no indexer, so no shared layers");
  IS_CHECK(opt.weight_bytes > 0 && opt.kv_elem_bytes > 0, "weight_bytes and kv_elem_bytes must be > 0");
  IS_CHECK(opt.candidates >= 0 && opt.reindex_heads >= 0 && opt.reindex_head_dim >= 0,
           "candidates and the reindex indexer's shape must be >= 0");
  const KeyCounts keys = key_counts(a, phase, L);
  const int64_t n_full = a.dsa ? s.num_full() : 0, n_re = a.dsa ? s.num_reindex() : 0;
  IS_CHECK(n_re == 0 || opt.candidates >= a.index_topk, "schedule ", s.pattern(),
           " has reindex (R) layers: candidates C = ", opt.candidates, " must be >= top-k ", a.index_topk);
  const int64_t hr = reindex_heads(a, opt), dr = reindex_dim(a, opt);
  const double rescored = n_re > 0 ? rescored_keys(phase, L, opt.candidates) : 0.0;

  TokenCost c;
  c.keys_scored = a.dsa ? keys.scored : 0;
  c.keys_rescored = rescored;
  c.keys_attended = keys.attended;
  Flops& f = c.flops;
  const double score_macs_per_key = d(a.index_heads) * d(a.index_head_dim + 1);  // dot + weighted sum
  f.indexer_proj = kFlopsPerMac * d(n_full) * indexer_proj_macs(a);
  f.indexer_score = kFlopsPerMac * d(n_full) * keys.scored * score_macs_per_key;
  f.reindex_proj = kFlopsPerMac * d(n_re) * indexer_proj_macs(a, hr, dr);
  f.reindex_score = kFlopsPerMac * d(n_re) * rescored * d(hr) * d(dr + 1);
  f.attn_proj = kFlopsPerMac * d(a.layers) * attn_proj_macs(a);
  f.attn_core = kFlopsPerMac * d(a.layers) * keys.attended * attn_core_macs_per_key(a);
  int64_t n_moe = 0;
  for (bool m : a.moe_layer) n_moe += m ? 1 : 0;
  f.mlp_dense = kFlopsPerMac * d(a.layers - n_moe) * dense_mlp_macs(a);
  f.mlp_moe = kFlopsPerMac * d(n_moe) * moe_mlp_macs(a);
  const double head = kFlopsPerMac * d(a.hidden) * d(a.vocab);
  f.lm_head = phase == Phase::kDecode ? head : head / d(L);

  if (phase == Phase::kDecode) {
    c.bytes_modelled = true;
    const double weights = d(n_full) * indexer_proj_macs(a) + d(n_re) * indexer_proj_macs(a, hr, dr) +
                           d(a.layers) * attn_proj_macs(a) +
                           d(a.layers - n_moe) * dense_mlp_macs(a) + d(n_moe) * moe_mlp_macs(a) +
                           d(a.hidden) * d(a.vocab);
    c.bytes.weights = weights * opt.weight_bytes;
    if (a.dsa) {
      c.bytes.mla_cache = d(a.layers) * keys.attended * mla_entry_bytes(a);
      c.bytes.indexer_cache = d(n_full) * keys.scored * indexer_entry_bytes(a) +
                              d(n_re) * rescored * indexer_entry_bytes(a, dr);
    } else {
      c.bytes.mla_cache = d(a.layers) * keys.attended * 2.0 * d(a.kv_heads * a.head_dim) * opt.kv_elem_bytes;
    }
  }
  return c;
}

Comparison compare(const Arch& a, const share::Schedule& s, Phase phase, int64_t L, const CostOptions& opt) {
  Comparison r;
  r.phase = phase;
  r.context = L;
  r.shared = token_cost(a, s, phase, L, opt);
  r.all_full = token_cost(a, share::Schedule::all_full(static_cast<int>(a.layers)), phase, L, opt);
  r.ratio = r.all_full.flops.total() / r.shared.flops.total();
  r.bytes_ratio = r.shared.bytes_modelled ? r.all_full.bytes.total() / r.shared.bytes.total() : 1.0;
  return r;
}

double cache_bytes_per_token(const Arch& a, const share::Schedule& s, const CostOptions& opt) {
  if (!a.dsa) return d(a.layers) * 2.0 * d(a.kv_heads * a.head_dim) * opt.kv_elem_bytes;
  return d(a.layers) * mla_entry_bytes(a) + d(s.num_full()) * indexer_entry_bytes(a) +
         d(s.num_reindex()) * indexer_entry_bytes(a, reindex_dim(a, opt));
}

}  // namespace indexshare::cost

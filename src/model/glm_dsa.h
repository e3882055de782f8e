// GLM-MoE-DSA / DeepSeek-V3.2 causal LM on the CPU (model_type glm_moe_dsa and deepseek_v32):
// MLA + DeepSeek Sparse Attention with cross-layer indexer sharing, dense-MLP then MoE layers,
// RMSNorm, LM head. Numerics follow transformers' GlmMoeDsaForCausalLM / DeepseekV32ForCausalLM
// in fp32 (see glm_dsa_attention.h and glm_dsa_moe.h for the per-block equations).
//
// Sharing: the F/S schedule is fixed at load (GlmDsaConfig::schedule). One top-k buffer
// [T, index_topk] lives per forward call: F layers overwrite it with their indexer's picks, S
// layers read it. S layers hold no indexer weights and no indexer-K cache.
//
// Caching: forward() runs a block of new tokens after what the cache holds (prefill, chunked
// prefill or one-token decode alike) and appends them. Every op is row-independent, so decoding
// token by token gives the same logits as one prefill (bitwise with the scalar linear layer).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/glm_dsa_attention.h"
#include "model/glm_dsa_config.h"
#include "model/glm_dsa_weights.h"

namespace indexshare::model {

struct GlmDsaCache {
  std::vector<LayerCache> layers;
  int64_t length = 0;  // tokens cached
  // Bytes held by the MLA latent caches and the indexer-K caches.
  size_t latent_bytes() const;
  size_t index_k_bytes() const;
};

struct ForwardOptions {
  bool capture_topk = false;    // fill ForwardTrace::topk for every layer
  bool capture_scores = false;  // fill ForwardTrace::scores for F layers
  // Per layer [T * index_topk] (-1 padded), nullable: F layers use these sets instead of their
  // own top-k (their indexer still runs and fills its cache). Used to compare attention
  // numerics against a reference independently of top-k tie-breaking.
  const std::vector<std::vector<int32_t>>* forced_topk = nullptr;
};

struct ForwardTrace {
  std::vector<std::vector<int32_t>> topk;  // [layer][T * index_topk], the set each layer used
  std::vector<std::vector<float>> scores;  // [layer][T * length]: F layers' index scores
  int indexer_calls = 0;                   // F layers run in this call
  int shared_layers = 0;                   // S layers (reused a top-k) in this call
};

class GlmDsaModel {
 public:
  GlmDsaModel(GlmDsaConfig config, GlmDsaWeights weights);

  const GlmDsaConfig& config() const { return config_; }
  const GlmDsaWeights& weights() const { return weights_; }
  GlmDsaCache new_cache() const;

  // Runs `tokens` (ids in [0, vocab)) at positions cache.length, cache.length + 1, ...; appends
  // them to the cache and returns the logits [tokens.size(), vocab]. Throws Error naming a bad
  // token id (position and value) before touching the cache.
  std::vector<float> forward(GlmDsaCache& cache, std::span<const int32_t> tokens,
                             const ForwardOptions& opt = {}, ForwardTrace* trace = nullptr) const;

 private:
  GlmDsaConfig config_;
  GlmDsaWeights weights_;
};

}  // namespace indexshare::model

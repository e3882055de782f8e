// Reader for a Hugging Face config.json of a DSA architecture (model_type "glm_moe_dsa" or
// "deepseek_v32"), or of a plain "llama" model (for the cost model).
//
// Strictness:
//  - the JSON must parse and be an object; model_type must be one of the three above;
//  - every key we read must have the right JSON type (integers must be JSON integers);
//    dimensions must be > 0;
//  - required keys (see kRequired* in hf_config.cpp) must be present; q_lora_rank must be
//    present for DSA models but may be null (no q LoRA);
//  - a key we do not know that starts with "index_" or "indexer_" is an Error: it is most
//    likely a misspelt schedule key that would silently change which layers run an indexer;
//  - any other key we neither read nor recognise goes to `warnings` (the file still loads).
// Every error message starts with the source name (the file path) and names the key.
//
// For DSA models the F/S schedule is resolved and validated at load time (see
// share/schedule.h); its errors are reported with the file name in front.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "share/schedule.h"

namespace indexshare::io {

enum class ModelFamily { kGlmMoeDsa, kDeepseekV32, kLlama };

// RoPE settings from rope_parameters (newer transformers) or rope_theta + rope_scaling.
struct RopeConfig {
  std::string rope_type = "default";  // "default", "yarn", "linear", "llama3", ...
  double theta = 10000.0;
  std::optional<double> factor;
  std::optional<int64_t> original_max_position_embeddings;
  std::optional<double> beta_fast, beta_slow, mscale, mscale_all_dim;
};

struct HfConfig {
  std::string source;      // the path (or label) used in messages
  std::string model_type;  // as written in the file
  ModelFamily family = ModelFamily::kLlama;

  // ---- shape ----
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;     // absent -> num_attention_heads
  std::optional<int64_t> head_dim;     // llama only; DSA configs carry a misleading one (ignored)
  int64_t intermediate_size = 0;       // dense MLP width
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;  // absent -> 0 (unknown)
  bool tie_word_embeddings = false;
  bool attention_bias = false;

  // ---- MLA (DSA models) ----
  std::optional<int64_t> q_lora_rank;  // null = q projected straight from the hidden state
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;

  // ---- MoE (DSA models) ----
  int64_t moe_intermediate_size = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  std::optional<int64_t> n_group, topk_group;
  std::optional<double> routed_scaling_factor;
  std::optional<bool> norm_topk_prob;
  std::optional<std::string> scoring_func, topk_method;
  std::optional<int64_t> first_k_dense_replace;
  std::optional<int64_t> moe_layer_freq;                // DeepSeek: every n-th layer is MoE
  std::optional<std::vector<std::string>> mlp_layer_types;  // "dense" / "sparse" per layer

  // ---- RoPE ----
  RopeConfig rope;
  bool rope_interleave = true;           // MLA RoPE pairing; absent -> true (DeepSeek, GLM)
  bool indexer_rope_interleave = false;  // absent -> false (NeoX pairing), as vLLM / SGLang read it

  // ---- lightning indexer and sharing (DSA models) ----
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;
  std::optional<std::vector<std::string>> indexer_types;
  std::optional<std::string> index_topk_pattern;
  int64_t index_topk_freq = 1;
  int64_t index_skip_topk_offset = 2;
  // Reindex (R) layers (ours): candidates an F layer carries over, and the R indexer's shape
  // (0 = absent: the F indexer's heads / head dim).
  int64_t index_reindex_candidates = 0;
  int64_t index_reindex_n_heads = 0;
  int64_t index_reindex_head_dim = 0;
  std::optional<bool> index_share_for_mtp_iteration;
  int64_t num_nextn_predict_layers = 0;

  // Unknown keys that were ignored, one message each.
  std::vector<std::string> warnings;

  bool is_dsa() const { return family != ModelFamily::kLlama; }
  // True when decoder layer i uses the routed MoE block (false: dense MLP). Resolved from
  // mlp_layer_types if present, else first_k_dense_replace (+ moe_layer_freq). Llama: false.
  bool is_moe_layer(int64_t layer) const;
  // The schedule keys as read, for share::Schedule::resolve.
  share::ScheduleInput schedule_input() const;
  // The resolved F/S schedule (DSA models; a llama config has no indexer and throws).
  const share::Schedule& schedule() const;

  std::optional<share::Schedule> resolved_schedule;  // set by the parser for DSA models
};

// Parses config.json text; `source` names it in error messages.
HfConfig parse_hf_config(std::string_view json_text, std::string_view source = "config.json");
// Reads and parses a file.
HfConfig read_hf_config(const std::string& path);

std::string_view family_name(ModelFamily f);

}  // namespace indexshare::io

#include "cost/presets.h"

#include <array>
#include <utility>

#include "core/error.h"

namespace indexshare::cost {
namespace {

// The shapes GLM-5, GLM-5.1 and GLM-5.2 share.
#define IS_GLM5_SHAPES                                                                        \
  R"("model_type": "glm_moe_dsa", "hidden_size": 6144, "num_hidden_layers": 78,)"            \
  R"("num_attention_heads": 64, "num_key_value_heads": 64, "q_lora_rank": 2048,)"            \
  R"("kv_lora_rank": 512, "qk_nope_head_dim": 192, "qk_rope_head_dim": 64, "v_head_dim": 256,)" \
  R"("intermediate_size": 12288, "moe_intermediate_size": 2048, "n_routed_experts": 256,)"   \
  R"("n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 1, "topk_group": 1,)"       \
  R"("routed_scaling_factor": 2.5, "norm_topk_prob": true, "scoring_func": "sigmoid",)"      \
  R"("topk_method": "noaux_tc", "first_k_dense_replace": 3, "vocab_size": 154880,)"          \
  R"("rms_norm_eps": 1e-05, "rope_interleave": true, "indexer_rope_interleave": true,)"      \
  R"("index_n_heads": 32, "index_head_dim": 128, "index_topk": 2048,)"                       \
  R"("num_nextn_predict_layers": 1, "tie_word_embeddings": false, "attention_bias": false)"

constexpr std::array<std::pair<const char*, const char*>, 3> kPresets = {{
    {"glm5", "{" IS_GLM5_SHAPES R"(, "max_position_embeddings": 202752,
       "rope_parameters": {"rope_type": "default", "rope_theta": 1000000}})"},
    {"glm5.2", "{" IS_GLM5_SHAPES R"(, "max_position_embeddings": 1048576,
       "rope_parameters": {"rope_type": "default", "rope_theta": 8000000},
       "index_topk_freq": 4, "index_skip_topk_offset": 3, "index_topk_pattern": null,
       "index_share_for_mtp_iteration": true})"},
    {"deepseek-v3.2", R"({"model_type": "deepseek_v32", "hidden_size": 7168,
       "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
       "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
       "v_head_dim": 128, "intermediate_size": 18432, "moe_intermediate_size": 2048,
       "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 8,
       "topk_group": 4, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
       "norm_topk_prob": true, "routed_scaling_factor": 2.5, "first_k_dense_replace": 3,
       "moe_layer_freq": 1, "vocab_size": 129280, "rms_norm_eps": 1e-06,
       "max_position_embeddings": 163840, "rope_theta": 10000,
       "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
       "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048,
       "num_nextn_predict_layers": 1, "tie_word_embeddings": false})"},
}};

#undef IS_GLM5_SHAPES

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> r;
  for (const auto& p : kPresets) r.emplace_back(p.first);
  return r;
}

std::string preset_json(std::string_view name) {
  for (const auto& p : kPresets)
    if (name == p.first) return p.second;
  std::string valid;
  for (const auto& p : kPresets) valid += cat(valid.empty() ? "" : ", ", p.first);
  fail("unknown preset '", name, "'; valid presets: ", valid);
}

io::HfConfig preset_config(std::string_view name) {
  return io::parse_hf_config(preset_json(name), cat("preset ", name));
}

}  // namespace indexshare::cost

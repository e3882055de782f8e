#include "io/glm_dsa_loader.h"

#include <cmath>

#include "core/error.h"

namespace indexshare::io {

model::GlmDsaConfig glm_dsa_config_from_hf(const HfConfig& hf) {
  const std::string& src = hf.source;
  IS_CHECK(hf.is_dsa(), src, ": model_type '", hf.model_type,
           "' is not a DSA architecture (supported: glm_moe_dsa, deepseek_v32)");
  IS_CHECK(hf.q_lora_rank.has_value(), src,
           ": key 'q_lora_rank' is null; DSA needs the q LoRA latent (the indexer reads it)");
  if (hf.scoring_func)
    IS_CHECK(*hf.scoring_func == "sigmoid", src, ": key 'scoring_func' = '", *hf.scoring_func,
             "' is not supported (sigmoid only)");
  if (hf.topk_method)
    IS_CHECK(*hf.topk_method == "noaux_tc", src, ": key 'topk_method' = '", *hf.topk_method,
             "' is not supported (noaux_tc only)");

  model::GlmDsaConfig c;
  c.arch = hf.family == ModelFamily::kGlmMoeDsa ? model::DsaArch::kGlmMoeDsa : model::DsaArch::kDeepseekV32;
  c.vocab_size = hf.vocab_size;
  c.hidden_size = hf.hidden_size;
  c.num_layers = static_cast<int>(hf.num_hidden_layers);
  c.rms_norm_eps = static_cast<float>(hf.rms_norm_eps);
  c.tie_word_embeddings = hf.tie_word_embeddings;
  c.attention_bias = hf.attention_bias;
  c.num_heads = static_cast<int>(hf.num_attention_heads);
  c.q_lora_rank = static_cast<int>(*hf.q_lora_rank);
  c.kv_lora_rank = static_cast<int>(hf.kv_lora_rank);
  c.qk_nope_head_dim = static_cast<int>(hf.qk_nope_head_dim);
  c.qk_rope_head_dim = static_cast<int>(hf.qk_rope_head_dim);
  c.v_head_dim = static_cast<int>(hf.v_head_dim);
  c.mla_rope_interleave = hf.rope_interleave;
  c.indexer_rope_interleave = hf.indexer_rope_interleave;
  c.index_n_heads = static_cast<int>(hf.index_n_heads);
  c.index_head_dim = static_cast<int>(hf.index_head_dim);
  c.index_topk = static_cast<int>(hf.index_topk);
  c.schedule = hf.schedule();

  // RoPE table and the softmax scale, as transformers derives them.
  double scale = 1.0 / std::sqrt(static_cast<double>(c.qk_head_dim()));
  const RopeConfig& r = hf.rope;
  if (r.rope_type == "default") {
    c.rope_inv_freq = model::rope_inv_freq_default(r.theta, c.qk_rope_head_dim);
  } else if (r.rope_type == "yarn") {
    IS_CHECK(r.original_max_position_embeddings.has_value(), src,
             ": key 'original_max_position_embeddings' is required for rope_type yarn");
    const double factor = r.factor.value_or(static_cast<double>(hf.max_position_embeddings) /
                                            static_cast<double>(*r.original_max_position_embeddings));
    c.rope_inv_freq = model::rope_inv_freq_yarn(r.theta, c.qk_rope_head_dim, factor, *r.original_max_position_embeddings,
                                                r.beta_fast.value_or(32.0), r.beta_slow.value_or(1.0));
    const double ms = r.mscale.value_or(0.0), ms_all = r.mscale_all_dim.value_or(0.0);
    c.rope_attention_factor = static_cast<float>(
        ms != 0.0 && ms_all != 0.0 ? model::yarn_get_mscale(factor, ms) / model::yarn_get_mscale(factor, ms_all)
                                   : model::yarn_get_mscale(factor, 1.0));
    if (ms_all != 0.0) scale *= model::yarn_get_mscale(factor, ms_all) * model::yarn_get_mscale(factor, ms_all);
  } else {
    fail(src, ": rope_type '", r.rope_type, "' is not supported for DSA models (default, yarn)");
  }
  c.attn_scale = static_cast<float>(scale);

  c.intermediate_size = hf.intermediate_size;
  c.moe_intermediate_size = hf.moe_intermediate_size;
  c.n_routed_experts = static_cast<int>(hf.n_routed_experts);
  c.n_shared_experts = static_cast<int>(hf.n_shared_experts);
  c.num_experts_per_tok = static_cast<int>(hf.num_experts_per_tok);
  c.n_group = static_cast<int>(hf.n_group.value_or(1));
  c.topk_group = static_cast<int>(hf.topk_group.value_or(1));
  c.norm_topk_prob = hf.norm_topk_prob.value_or(true);
  c.routed_scaling_factor = static_cast<float>(hf.routed_scaling_factor.value_or(1.0));
  c.num_nextn_predict_layers = static_cast<int>(hf.num_nextn_predict_layers);
  c.moe_layer.resize(static_cast<size_t>(c.num_layers));
  for (int i = 0; i < c.num_layers; ++i) c.moe_layer[static_cast<size_t>(i)] = hf.is_moe_layer(i);
  try {
    c.validate();
  } catch (const Error& e) {
    fail(src, ": ", e.what());
  }
  return c;
}

model::GlmDsaModel load_glm_dsa(const std::string& config_path, const std::string& weights_path,
                                std::vector<std::string>* warnings, std::shared_ptr<backend::Backend> be,
                                const model::ModelOptions& options) {
  const HfConfig hf = read_hf_config(config_path);
  if (warnings)
    for (const auto& w : hf.warnings) warnings->push_back(config_path + ": " + w);
  model::GlmDsaConfig c = glm_dsa_config_from_hf(hf);
  const SafetensorsWeightSource src(SafetensorsModel::open(weights_path));
  model::GlmDsaWeights w = model::load_glm_dsa_weights(c, src, warnings, options.mtp);
  return model::GlmDsaModel(std::move(c), std::move(w), std::move(be), options);
}

model::GlmDsaModel load_glm_dsa_dir(const std::string& model_dir, std::vector<std::string>* warnings,
                                    std::shared_ptr<backend::Backend> be, const model::ModelOptions& options) {
  return load_glm_dsa(model_dir + "/config.json", model_dir, warnings, std::move(be), options);
}

}  // namespace indexshare::io

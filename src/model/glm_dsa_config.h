// Configuration of a DSA model of the GLM-MoE-DSA / DeepSeek-V3.2 family (one class serves
// both: model_type glm_moe_dsa and deepseek_v32), in plain C++ (no JSON): src/io builds it from
// config.json (io/glm_dsa_loader.h).
//
// Layer stack: every decoder layer is MLA (q LoRA, kv LoRA, rope slice last) with DeepSeek
// Sparse Attention: a lightning indexer picks index_topk keys per query (F layers) or the layer
// reuses the previous F layer's picks (S layers, per `schedule`). The MLP is dense for some
// layers (moe_layer[i] = false) and a sigmoid-routed MoE with a shared expert for the others.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "share/schedule.h"

namespace indexshare::model {

enum class DsaArch { kGlmMoeDsa, kDeepseekV32 };

struct GlmDsaConfig {
  DsaArch arch = DsaArch::kGlmMoeDsa;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int num_layers = 0;
  float rms_norm_eps = 1e-6f;     // input / post-attention / final norms
  float lora_norm_eps = 1e-6f;    // q_a_layernorm, kv_a_layernorm (transformers' default)
  bool tie_word_embeddings = false;
  bool attention_bias = false;    // biases on q_a_proj, kv_a_proj_with_mqa, o_proj

  // ---- MLA ----
  int num_heads = 0;
  int q_lora_rank = 0;            // required: the indexer reads the q LoRA latent
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  float attn_scale = 0.0f;        // softmax scale: qk_head_dim^-0.5 (x YaRN mscale^2)
  bool mla_rope_interleave = true;

  // ---- RoPE (shared by MLA and the indexer) ----
  std::vector<float> rope_inv_freq;   // [qk_rope_head_dim / 2]
  float rope_attention_factor = 1.0f; // YaRN cos/sin magnitude (1 when mscale == mscale_all_dim)

  // ---- lightning indexer ----
  int index_n_heads = 0;
  int index_head_dim = 0;
  int index_topk = 0;
  bool indexer_rope_interleave = false;  // GLM: true (interleaved); DeepSeek: false (half-split)
  float index_k_norm_eps = 1e-6f;        // LayerNorm on the indexer key
  share::Schedule schedule = share::Schedule::all_full(1);

  // ---- MLP / MoE ----
  int64_t intermediate_size = 0;      // dense MLP
  int64_t moe_intermediate_size = 0;  // per routed expert
  int n_routed_experts = 0;
  int n_shared_experts = 0;
  int num_experts_per_tok = 0;
  int n_group = 1;
  int topk_group = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
  std::vector<bool> moe_layer;        // [num_layers]: routed MoE (true) or dense MLP

  // ---- multi-token prediction ----
  // nextn (MTP) layers the checkpoint holds after the decoder stack (model.layers.<num_layers>..);
  // the engine runs the first one as a draft head when asked (ModelOptions::mtp).
  int num_nextn_predict_layers = 0;

  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }  // cached per token
  // Checks sizes and consistency; throws Error naming the field.
  void validate() const;
};

std::string_view arch_name(DsaArch a);  // "glm_moe_dsa" / "deepseek_v32"

// RoPE frequency tables, computed the way transformers computes them in fp32.
// default: inv_freq[j] = 1 / theta^(2j / dim)
std::vector<float> rope_inv_freq_default(double theta, int dim);
// YaRN (DeepSeek): blend of interpolated (/factor) and extrapolated frequencies with a linear
// ramp between the correction dims of beta_fast and beta_slow (truncated to integers).
std::vector<float> rope_inv_freq_yarn(double theta, int dim, double factor,
                                      int64_t original_max_position_embeddings, double beta_fast,
                                      double beta_slow, bool truncate = true);
// YaRN magnitude: 0.1 * mscale * ln(scale) + 1 (1 for scale <= 1).
double yarn_get_mscale(double scale, double mscale);

}  // namespace indexshare::model

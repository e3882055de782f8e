#include "model/glm_dsa_config.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace indexshare::model {

std::string_view arch_name(DsaArch a) {
  return a == DsaArch::kGlmMoeDsa ? "glm_moe_dsa" : "deepseek_v32";
}

void GlmDsaConfig::validate() const {
  auto pos = [](int64_t v, const char* name) { IS_CHECK(v > 0, "GlmDsaConfig: ", name, " = ", v, " must be > 0"); };
  pos(vocab_size, "vocab_size");
  pos(hidden_size, "hidden_size");
  pos(num_layers, "num_hidden_layers");
  pos(num_heads, "num_attention_heads");
  pos(q_lora_rank, "q_lora_rank");
  pos(kv_lora_rank, "kv_lora_rank");
  pos(qk_nope_head_dim, "qk_nope_head_dim");
  pos(qk_rope_head_dim, "qk_rope_head_dim");
  pos(v_head_dim, "v_head_dim");
  pos(index_n_heads, "index_n_heads");
  pos(index_head_dim, "index_head_dim");
  pos(index_topk, "index_topk");
  IS_CHECK(qk_rope_head_dim % 2 == 0, "GlmDsaConfig: qk_rope_head_dim = ", qk_rope_head_dim, " must be even");
  IS_CHECK(qk_rope_head_dim <= index_head_dim, "GlmDsaConfig: qk_rope_head_dim = ", qk_rope_head_dim,
           " exceeds index_head_dim = ", index_head_dim);
  IS_CHECK(static_cast<int>(rope_inv_freq.size()) == qk_rope_head_dim / 2, "GlmDsaConfig: rope_inv_freq has ",
           rope_inv_freq.size(), " entries, expected qk_rope_head_dim / 2 = ", qk_rope_head_dim / 2);
  IS_CHECK(std::isfinite(attn_scale) && attn_scale > 0, "GlmDsaConfig: attn_scale = ", attn_scale,
           " must be finite and > 0");
  IS_CHECK(schedule.num_layers() == num_layers, "GlmDsaConfig: schedule has ", schedule.num_layers(),
           " layers, num_hidden_layers = ", num_layers);
  IS_CHECK(num_nextn_predict_layers >= 0, "GlmDsaConfig: num_nextn_predict_layers = ", num_nextn_predict_layers, " < 0");
  IS_CHECK(static_cast<int>(moe_layer.size()) == num_layers, "GlmDsaConfig: moe_layer has ", moe_layer.size(),
           " entries, num_hidden_layers = ", num_layers);
  const bool any_dense = std::find(moe_layer.begin(), moe_layer.end(), false) != moe_layer.end();
  const bool any_moe = std::find(moe_layer.begin(), moe_layer.end(), true) != moe_layer.end();
  if (any_dense) pos(intermediate_size, "intermediate_size");
  if (any_moe) {
    pos(moe_intermediate_size, "moe_intermediate_size");
    pos(n_routed_experts, "n_routed_experts");
    pos(num_experts_per_tok, "num_experts_per_tok");
    pos(n_group, "n_group");
    pos(topk_group, "topk_group");
    IS_CHECK(n_shared_experts >= 0, "GlmDsaConfig: n_shared_experts = ", n_shared_experts, " must be >= 0");
    IS_CHECK(n_routed_experts % n_group == 0, "GlmDsaConfig: n_routed_experts = ", n_routed_experts,
             " is not a multiple of n_group = ", n_group);
    IS_CHECK(topk_group <= n_group, "GlmDsaConfig: topk_group = ", topk_group, " exceeds n_group = ", n_group);
    IS_CHECK(num_experts_per_tok <= topk_group * (n_routed_experts / n_group),
             "GlmDsaConfig: num_experts_per_tok = ", num_experts_per_tok, " exceeds the ",
             topk_group * (n_routed_experts / n_group), " experts of topk_group groups");
  }
}

namespace {

// theta^(2j / dim) as torch holds it in fp32: exponent in fp32, power rounded to fp32.
std::vector<float> pos_freqs(double theta, int dim, const char* who) {
  IS_CHECK(dim > 0 && dim % 2 == 0, who, ": dim = ", dim, " must be even and > 0");
  IS_CHECK(std::isfinite(theta) && theta > 1, who, ": theta = ", theta, " must be finite and > 1");
  std::vector<float> p(static_cast<size_t>(dim / 2));
  for (int j = 0; j < dim / 2; ++j) {
    const float e = static_cast<float>(2 * j) / static_cast<float>(dim);
    p[static_cast<size_t>(j)] = static_cast<float>(std::pow(theta, static_cast<double>(e)));
  }
  return p;
}

}  // namespace

std::vector<float> rope_inv_freq_default(double theta, int dim) {
  std::vector<float> out = pos_freqs(theta, dim, "rope_inv_freq_default");
  for (float& v : out) v = 1.0f / v;
  return out;
}

double yarn_get_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

std::vector<float> rope_inv_freq_yarn(double theta, int dim, double factor,
                                      int64_t original_max_position_embeddings, double beta_fast,
                                      double beta_slow, bool truncate) {
  IS_CHECK(std::isfinite(factor) && factor > 0, "rope_inv_freq_yarn: factor = ", factor, " must be > 0");
  IS_CHECK(original_max_position_embeddings > 0, "rope_inv_freq_yarn: original_max_position_embeddings = ",
           original_max_position_embeddings, " must be > 0");
  const std::vector<float> pf = pos_freqs(theta, dim, "rope_inv_freq_yarn");
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(static_cast<double>(original_max_position_embeddings) /
                           (rotations * 2 * std::numbers::pi))) /
           (2 * std::log(theta));
  };
  double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
  if (truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  const float lo = static_cast<float>(low), hi = static_cast<float>(high);
  const float f = static_cast<float>(factor);
  std::vector<float> out(pf.size());
  for (size_t j = 0; j < pf.size(); ++j) {
    const float p = pf[j];
    const float inv_extra = 1.0f / p;
    const float inv_inter = 1.0f / (f * p);
    const float ramp = std::clamp((static_cast<float>(j) - lo) / (hi - lo), 0.0f, 1.0f);
    const float extra_factor = 1.0f - ramp;
    out[j] = inv_inter * (1.0f - extra_factor) + inv_extra * extra_factor;
  }
  return out;
}

}  // namespace indexshare::model

// Feed-forward blocks of the GLM-MoE-DSA / DeepSeek-V3.2 family: the dense SwiGLU MLP and the
// sigmoid-routed MoE with a shared expert ("noaux_tc" routing).
//
// Routing of one token with router logits r [E]:
//   s = sigmoid(r)                       (the weights come from s)
//   c = s + e_score_correction_bias      (used only to choose experts)
//   group score = sum of the top-2 c in each of n_group groups; keep the topk_group best groups
//   experts = top num_experts_per_tok of c inside the kept groups
//   w = s[experts]; if norm_topk_prob: w /= sum(w) + 1e-20; w *= routed_scaling_factor
// Ties pick the lower group / expert id. Output: sum over the chosen experts in ascending id
// order of w_e * expert_e(x), plus the shared expert (as transformers accumulates it).
#pragma once

#include <cstdint>

#include "model/glm_dsa_config.h"
#include "model/glm_dsa_weights.h"

namespace indexshare::model {

// Chooses the experts of one token. logits, bias: [E]; experts, weights: [num_experts_per_tok]
// out, experts in ascending id order.
void route_token(const GlmDsaConfig& c, const float* logits, const float* bias, int32_t* experts,
                 float* weights);

// y[T, hidden] = down(silu(gate x) * up x) for x [T, hidden].
void mlp_forward(const MlpWeights& m, const float* x, int64_t T, float* y);

// y[T, hidden] = the layer's MoE (routed experts + shared expert) applied to x [T, hidden].
void moe_forward(const GlmDsaConfig& c, const LayerWeights& L, const float* x, int64_t T, float* y);

}  // namespace indexshare::model

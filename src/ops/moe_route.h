// The sigmoid MoE router of DeepSeek-V3 / V3.2 and GLM-5 ("noaux_tc"), CPU. For one token with
// router logits r [E]:
//   s = sigmoid(r)                       (the weights come from s)
//   c = s + e_score_correction_bias      (used only to choose experts)
//   group score = sum of the top-2 c in each of n_group groups; keep the topk_group best groups
//   experts = top top_k of c inside the kept groups
//   w = s[experts]; if norm_topk_prob: w /= sum(w) + 1e-20; w *= routed_scaling
// Ties pick the lower group / expert id. The sum of the chosen weights is taken in descending
// choice order (as transformers' topk returns them); experts come out in ascending id order.
// A NaN logit throws Error naming the expert.
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct MoeRouteParams {
  int experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  bool norm_topk_prob = true;
  float routed_scaling = 1.0f;
};

// Checks E % n_group == 0, 1 <= top_k <= E, 1 <= topk_group <= n_group, top_k experts
// reachable inside topk_group groups; Error naming the field.
void validate(const MoeRouteParams& p);

// logits, bias: [E]; experts, weights: [top_k] out.
void route_token(const MoeRouteParams& p, const float* logits, const float* bias, int32_t* experts, float* weights);

}  // namespace indexshare::ops

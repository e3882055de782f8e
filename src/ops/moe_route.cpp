#include "ops/moe_route.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace indexshare::ops {
namespace {

// Indices of the k largest values (ties: lower index first), in descending value order.
std::vector<int> top_indices(const std::vector<float>& v, int k) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
    return v[static_cast<size_t>(a)] != v[static_cast<size_t>(b)] ? v[static_cast<size_t>(a)] > v[static_cast<size_t>(b)]
                                                                    : a < b;
  });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

}  // namespace

void validate(const MoeRouteParams& p) {
  IS_CHECK(p.experts >= 1, "moe router: experts = ", p.experts, " must be >= 1");
  IS_CHECK(p.n_group >= 1 && p.experts % p.n_group == 0, "moe router: n_group = ", p.n_group,
           " must divide the ", p.experts, " experts");
  IS_CHECK(p.topk_group >= 1 && p.topk_group <= p.n_group, "moe router: topk_group = ", p.topk_group,
           " must be in [1, n_group = ", p.n_group, "]");
  IS_CHECK(p.top_k >= 1 && p.top_k <= p.topk_group * (p.experts / p.n_group), "moe router: top_k = ", p.top_k,
           " must be in [1, ", p.topk_group * (p.experts / p.n_group), "] (the experts of topk_group groups)");
}

void route_token(const MoeRouteParams& p, const float* logits, const float* bias, int32_t* experts, float* weights) {
  const int e = p.experts, g = p.n_group, per = e / g, k = p.top_k;
  std::vector<float> s(static_cast<size_t>(e)), choice(static_cast<size_t>(e));
  for (int i = 0; i < e; ++i) {
    IS_CHECK(!std::isnan(logits[i]), "moe router: NaN logit for expert ", i);
    s[static_cast<size_t>(i)] = 1.0f / (1.0f + std::exp(-logits[i]));
    choice[static_cast<size_t>(i)] = s[static_cast<size_t>(i)] + bias[i];
  }
  if (g > 1) {
    std::vector<float> group_score(static_cast<size_t>(g));
    const int top = std::min(2, per);
    for (int j = 0; j < g; ++j) {
      std::vector<float> members(choice.begin() + j * per, choice.begin() + (j + 1) * per);
      float sum = 0.0f;
      for (int m : top_indices(members, top)) sum += members[static_cast<size_t>(m)];
      group_score[static_cast<size_t>(j)] = sum;
    }
    std::vector<bool> keep(static_cast<size_t>(g), false);
    for (int j : top_indices(group_score, p.topk_group)) keep[static_cast<size_t>(j)] = true;
    for (int i = 0; i < e; ++i)
      if (!keep[static_cast<size_t>(i / per)]) choice[static_cast<size_t>(i)] = -std::numeric_limits<float>::infinity();
  }
  const std::vector<int> by_score = top_indices(choice, k);
  float sum = 0.0f;
  for (int j : by_score) sum += s[static_cast<size_t>(j)];
  std::vector<int> chosen = by_score;
  std::sort(chosen.begin(), chosen.end());
  for (int i = 0; i < k; ++i) {
    experts[i] = chosen[static_cast<size_t>(i)];
    float w = s[static_cast<size_t>(chosen[static_cast<size_t>(i)])];
    if (p.norm_topk_prob) w /= sum + 1e-20f;
    weights[i] = w * p.routed_scaling;
  }
}

}  // namespace indexshare::ops

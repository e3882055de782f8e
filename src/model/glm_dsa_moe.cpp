#include "model/glm_dsa_moe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "ops/norm.h"

namespace indexshare::model {
namespace {

// Indices of the k largest values (ties: lower index first), returned in descending value order.
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

void route_token(const GlmDsaConfig& c, const float* logits, const float* bias, int32_t* experts,
                 float* weights) {
  const int e = c.n_routed_experts, g = c.n_group, per = e / g, k = c.num_experts_per_tok;
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
    for (int j : top_indices(group_score, c.topk_group)) keep[static_cast<size_t>(j)] = true;
    for (int i = 0; i < e; ++i)
      if (!keep[static_cast<size_t>(i / per)]) choice[static_cast<size_t>(i)] = -std::numeric_limits<float>::infinity();
  }
  // transformers sums the chosen weights in topk's order (descending choice); so does this.
  const std::vector<int> by_score = top_indices(choice, k);
  float sum = 0.0f;
  for (int j : by_score) sum += s[static_cast<size_t>(j)];
  std::vector<int> chosen = by_score;
  std::sort(chosen.begin(), chosen.end());
  for (int i = 0; i < k; ++i) {
    experts[i] = chosen[static_cast<size_t>(i)];
    float w = s[static_cast<size_t>(chosen[static_cast<size_t>(i)])];
    if (c.norm_topk_prob) w /= sum + 1e-20f;
    weights[i] = w * c.routed_scaling_factor;
  }
}

void mlp_forward(const MlpWeights& m, const float* x, int64_t T, float* y) {
  const int64_t w = m.gate.out;
  std::vector<float> gate(static_cast<size_t>(T * w)), up(static_cast<size_t>(T * w));
  linear(m.gate, x, T, gate.data());
  linear(m.up, x, T, up.data());
  ops::swiglu(gate.data(), up.data(), gate.data(), T * w);
  linear(m.down, gate.data(), T, y);
}

void moe_forward(const GlmDsaConfig& c, const LayerWeights& L, const float* x, int64_t T, float* y) {
  const int64_t d = c.hidden_size;
  const int e = c.n_routed_experts, k = c.num_experts_per_tok;
  std::vector<float> logits(static_cast<size_t>(T * e));
  linear(L.router, x, T, logits.data());
  std::vector<int32_t> experts(static_cast<size_t>(T * k));
  std::vector<float> weights(static_cast<size_t>(T * k));
  for (int64_t t = 0; t < T; ++t)
    route_token(c, logits.data() + t * e, L.router_bias.data(), experts.data() + t * k, weights.data() + t * k);

  // Per expert: gather its tokens, run it once over them, keep each (token, slot) result.
  std::vector<float> slot_out(static_cast<size_t>(T * k * d));
  std::vector<float> xs, ys;
  std::vector<int64_t> slots;
  for (int ex = 0; ex < e; ++ex) {
    slots.clear();
    for (int64_t i = 0; i < T * k; ++i)
      if (experts[static_cast<size_t>(i)] == ex) slots.push_back(i);
    if (slots.empty()) continue;
    const auto n = static_cast<int64_t>(slots.size());
    xs.resize(static_cast<size_t>(n * d));
    ys.resize(static_cast<size_t>(n * d));
    for (int64_t j = 0; j < n; ++j)
      std::copy_n(x + (slots[static_cast<size_t>(j)] / k) * d, d, xs.begin() + j * d);
    mlp_forward(L.experts[static_cast<size_t>(ex)], xs.data(), n, ys.data());
    for (int64_t j = 0; j < n; ++j) {
      const int64_t sl = slots[static_cast<size_t>(j)];
      const float wgt = weights[static_cast<size_t>(sl)];
      for (int64_t i = 0; i < d; ++i) slot_out[static_cast<size_t>(sl * d + i)] = ys[static_cast<size_t>(j * d + i)] * wgt;
    }
  }
  // Accumulate in ascending expert id (slots are sorted that way), then add the shared expert.
  std::fill(y, y + T * d, 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int s = 0; s < k; ++s) {
      const float* src = slot_out.data() + (t * k + s) * d;
      for (int64_t i = 0; i < d; ++i) y[t * d + i] += src[i];
    }
  if (L.has_shared) {
    std::vector<float> sh(static_cast<size_t>(T * d));
    mlp_forward(L.shared, x, T, sh.data());
    for (int64_t i = 0; i < T * d; ++i) y[i] += sh[static_cast<size_t>(i)];
  }
}

}  // namespace indexshare::model

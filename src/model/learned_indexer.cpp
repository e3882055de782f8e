#include "model/learned_indexer.h"

#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/rope.h"
#include "ops/vec.h"

namespace indexshare::model {

float LearnedIndexerConfig::score_scale() const {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(heads) * static_cast<double>(head_dim)));
}

void LearnedIndexerConfig::validate() const {
  IS_CHECK(d_model > 0, "indexer config: d_model must be > 0, got ", d_model);
  IS_CHECK(heads > 0, "indexer config: heads must be > 0, got ", heads);
  IS_CHECK(head_dim > 0, "indexer config: head_dim must be > 0, got ", head_dim);
  IS_CHECK(rope_dim >= 0 && rope_dim <= head_dim && rope_dim % 2 == 0,
           "indexer config: rope_dim must be even and in [0, head_dim=", head_dim, "], got ", rope_dim);
  IS_CHECK(rope_theta > 0, "indexer config: rope_theta must be > 0");
}

LearnedIndexerWeights LearnedIndexerWeights::zeros(const LearnedIndexerConfig& cfg) {
  cfg.validate();
  LearnedIndexerWeights w;
  w.cfg = cfg;
  w.wq.assign(static_cast<size_t>(cfg.heads) * cfg.head_dim * cfg.d_model, 0.0f);
  w.wk.assign(static_cast<size_t>(cfg.head_dim) * cfg.d_model, 0.0f);
  w.ww.assign(static_cast<size_t>(cfg.heads) * cfg.d_model, 0.0f);
  return w;
}

int64_t LearnedIndexerWeights::parameter_count() const {
  return static_cast<int64_t>(wq.size() + wk.size() + ww.size());
}

std::vector<float> indexer_inv_freq(const LearnedIndexerConfig& cfg, float sign) {
  std::vector<float> f(static_cast<size_t>(cfg.rope_dim / 2));
  for (size_t j = 0; j < f.size(); ++j)
    f[j] = sign * static_cast<float>(std::pow(static_cast<double>(cfg.rope_theta),
                                              -2.0 * static_cast<double>(j) / cfg.rope_dim));
  return f;
}

void linear_f32(const float* x, int64_t T, int64_t K, const float* W, int64_t N, float* y) {
  parallel_for(T * N, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t t = i / N, n = i % N;
      y[i] = ops::dot(x + t * K, W + n * K, K);
    }
  });
}

void learned_indexer_rope(float* v, int64_t T, int heads, int64_t pos0, const LearnedIndexerConfig& c,
                          const float* inv_freq) {
  if (c.rope_dim == 0 || T == 0) return;
  ops::RopeParams rp;
  rp.x = v;
  rp.pos0 = pos0;
  rp.T = T;
  rp.H = heads;
  rp.head_dim = c.head_dim;
  rp.rot_offset = 0;
  rp.rot_dim = c.rope_dim;
  rp.inv_freq = inv_freq;
  rp.pairing = ops::RopePairing::kHalfSplit;
  ops::rope(rp);
}

void learned_indexer_project(const LearnedIndexerWeights& wts, const float* x, int64_t T, int64_t pos0,
                             float* q, float* k, float* w) {
  const auto& c = wts.cfg;
  c.validate();
  IS_CHECK(T >= 0 && pos0 >= 0, "learned_indexer_project: bad T=", T, " or pos0=", pos0);
  IS_CHECK(x != nullptr || T == 0, "learned_indexer_project: x is null");
  if (T == 0) return;
  const std::vector<float> inv_freq = indexer_inv_freq(c);
  auto rotate = [&](float* v, int heads) { learned_indexer_rope(v, T, heads, pos0, c, inv_freq.data()); };
  if (q) {
    linear_f32(x, T, c.d_model, wts.wq.data(), static_cast<int64_t>(c.heads) * c.head_dim, q);
    rotate(q, c.heads);
  }
  if (k) {
    linear_f32(x, T, c.d_model, wts.wk.data(), c.head_dim, k);
    rotate(k, 1);
  }
  if (w) linear_f32(x, T, c.d_model, wts.ww.data(), c.heads, w);
}

}  // namespace indexshare::model

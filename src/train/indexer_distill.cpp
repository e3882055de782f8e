#include "train/indexer_distill.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/thread_pool.h"

namespace indexshare::train {

using model::LearnedIndexerWeights;

void IndexerGrads::resize_like(const LearnedIndexerWeights& w) {
  wq.assign(w.wq.size(), 0.0f);
  wk.assign(w.wk.size(), 0.0f);
  ww.assign(w.ww.size(), 0.0f);
}

namespace {

// Rows are dealt to a fixed number of interleaved groups (t % kGroups), independent of the
// thread count, so the per-group partial sums and their ordered reduction are deterministic.
constexpr int kGroups = 16;

// Rotates each row r of v [n, heads, head_dim] by the angles of position rows[r].
void rope_at_rows(float* v, const int64_t* rows, int64_t n, int heads, const model::LearnedIndexerConfig& c,
                  const std::vector<float>& inv_freq) {
  const int64_t stride = static_cast<int64_t>(heads) * c.head_dim;
  for (int64_t r = 0; r < n; ++r) model::learned_indexer_rope(v + r * stride, 1, heads, rows[r], c, inv_freq.data());
}

// dW[n, :] = sum_t dy[t, n] * x[t, :]
void weight_grad(const float* dy, const float* x, int64_t T, int64_t N, int64_t K, float* dW) {
  parallel_for(N, 1, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      float* row = dW + n * K;
      std::fill(row, row + K, 0.0f);
      for (int64_t t = 0; t < T; ++t) {
        const float g = dy[t * N + n];
        if (g == 0.0f) continue;
        const float* xr = x + t * K;
        for (int64_t j = 0; j < K; ++j) row[j] += g * xr[j];
      }
    }
  });
}

}  // namespace

double indexer_kl_loss(const LearnedIndexerWeights& wts, const DistillExample& ex, IndexerGrads* grads) {
  const auto& c = wts.cfg;
  c.validate();
  IS_CHECK(ex.T > 0, "indexer_kl_loss: empty example (T = 0)");
  IS_CHECK(ex.x && ex.target, "indexer_kl_loss: x and target must be non-null");
  const int64_t T = ex.T;
  const int H = c.heads, D = c.head_dim;
  const float scale = c.score_scale();
  // Query rows: all T, or the sample ex.rows (positions pos0 + rows[i]).
  const int64_t R = ex.rows ? ex.n_rows : T;
  IS_CHECK(R > 0, "indexer_kl_loss: no query rows");
  std::vector<int64_t> pos(static_cast<size_t>(R));
  for (int64_t i = 0; i < R; ++i) {
    const int64_t t = ex.rows ? ex.rows[i] : i;
    IS_CHECK(t >= 0 && t < T && (i == 0 || t > (ex.rows ? ex.rows[i - 1] : i - 1)),
             "indexer_kl_loss: query rows must increase strictly within [0, ", T, "), got ", t, " at ", i);
    pos[static_cast<size_t>(i)] = ex.pos0 + t;
  }
  const auto row_of = [&](int64_t i) { return ex.rows ? ex.rows[i] : i; };

  std::vector<float> q(static_cast<size_t>(R * H * D)), k(static_cast<size_t>(T * D)), w(static_cast<size_t>(R * H));
  std::vector<float> xq;  // [R, d] the sampled rows' inputs
  if (ex.rows) {
    xq.resize(static_cast<size_t>(R * c.d_model));
    for (int64_t i = 0; i < R; ++i)
      std::copy(ex.x + ex.rows[i] * c.d_model, ex.x + (ex.rows[i] + 1) * c.d_model, xq.data() + i * c.d_model);
    model::learned_indexer_project(wts, ex.x, T, ex.pos0, nullptr, k.data(), nullptr);
    model::linear_f32(xq.data(), R, c.d_model, wts.wq.data(), static_cast<int64_t>(H) * D, q.data());
    rope_at_rows(q.data(), pos.data(), R, H, c, model::indexer_inv_freq(c));
    model::linear_f32(xq.data(), R, c.d_model, wts.ww.data(), H, w.data());
  } else {
    model::learned_indexer_project(wts, ex.x, T, ex.pos0, q.data(), k.data(), w.data());
  }
  const float* xrows = ex.rows ? xq.data() : ex.x;

  const bool want_grad = grads != nullptr;
  std::vector<float> dq(want_grad ? q.size() : 0), dw(want_grad ? w.size() : 0);
  std::vector<float> dk_part(want_grad ? static_cast<size_t>(kGroups) * T * D : 0);
  std::vector<double> loss_part(kGroups, 0.0);
  std::vector<int64_t> rows_part(kGroups, 0);
  const double inv_R = 1.0 / static_cast<double>(R);

  parallel_for(kGroups, 1, [&](int64_t gb, int64_t ge) {
    std::vector<float> z(static_cast<size_t>(T * H)), I(static_cast<size_t>(T)), g(static_cast<size_t>(T));
    for (int64_t grp = gb; grp < ge; ++grp) {
      float* dk = want_grad ? dk_part.data() + grp * T * D : nullptr;
      for (int64_t i = grp; i < R; i += kGroups) {
        const int64_t t = row_of(i);
        const float* p = ex.target + i * T;
        const int64_t n = t + 1;
        double mass = 0.0;
        for (int64_t s = 0; s < n; ++s) {
          IS_CHECK(std::isfinite(p[s]) && p[s] >= 0.0f, "indexer_kl_loss: target row ", t, " has an invalid value ",
                   p[s], " at ", s);
          mass += p[s];
        }
        if (mass <= 0.0) continue;
        // Scores.
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t s = 0; s < n; ++s) {
          float acc = 0.0f;
          for (int h = 0; h < H; ++h) {
            const float* qh = q.data() + (i * H + h) * D;
            const float* ks = k.data() + s * D;
            float d = 0.0f;
            for (int j = 0; j < D; ++j) d += qh[j] * ks[j];
            z[static_cast<size_t>(s * H + h)] = d;
            if (d > 0.0f) acc += w[static_cast<size_t>(i * H + h)] * d;
          }
          I[static_cast<size_t>(s)] = scale * acc;
          mx = std::max(mx, I[static_cast<size_t>(s)]);
        }
        double sum = 0.0;
        for (int64_t s = 0; s < n; ++s) sum += std::exp(static_cast<double>(I[static_cast<size_t>(s)] - mx));
        const double log_z = static_cast<double>(mx) + std::log(sum);
        double row_loss = 0.0;
        for (int64_t s = 0; s < n; ++s) {
          const double ps = p[s] / mass;  // L1-normalise the target row
          const double log_q = static_cast<double>(I[static_cast<size_t>(s)]) - log_z;
          if (ps > 0.0) row_loss += ps * (std::log(ps) - log_q);
          g[static_cast<size_t>(s)] = static_cast<float>((std::exp(log_q) - ps) * inv_R);
        }
        loss_part[static_cast<size_t>(grp)] += row_loss;
        rows_part[static_cast<size_t>(grp)] += 1;
        if (!want_grad) continue;
        // Backward through I = scale * sum_h w_h relu(z_h).
        float* dqt = dq.data() + i * H * D;
        for (int64_t s = 0; s < n; ++s) {
          const float gs = g[static_cast<size_t>(s)];
          if (gs == 0.0f) continue;
          const float* ks = k.data() + s * D;
          float* dks = dk + s * D;
          for (int h = 0; h < H; ++h) {
            const float zh = z[static_cast<size_t>(s * H + h)];
            if (zh <= 0.0f) continue;
            dw[static_cast<size_t>(i * H + h)] += scale * gs * zh;
            const float coef = scale * gs * w[static_cast<size_t>(i * H + h)];
            const float* qh = q.data() + (i * H + h) * D;
            float* dqh = dqt + h * D;
            for (int j = 0; j < D; ++j) {
              dqh[j] += coef * ks[j];
              dks[j] += coef * qh[j];
            }
          }
        }
      }
    }
  });

  double loss = 0.0;
  int64_t rows = 0;
  for (int i = 0; i < kGroups; ++i) {
    loss += loss_part[static_cast<size_t>(i)];
    rows += rows_part[static_cast<size_t>(i)];
  }
  IS_CHECK(rows > 0, "indexer_kl_loss: every target row is empty");
  // Rows without target mass did not count; rescale the gradient accordingly (g used 1/R).
  const double mean = loss / static_cast<double>(rows);
  if (!want_grad) return mean;

  std::vector<float> dk(static_cast<size_t>(T * D), 0.0f);
  for (int grp = 0; grp < kGroups; ++grp)
    for (size_t i = 0; i < dk.size(); ++i) dk[i] += dk_part[static_cast<size_t>(grp) * dk.size() + i];
  const float rescale = static_cast<float>(static_cast<double>(R) / static_cast<double>(rows));
  if (rows != R) {
    for (auto& v : dq) v *= rescale;
    for (auto& v : dk) v *= rescale;
    for (auto& v : dw) v *= rescale;
  }
  const std::vector<float> neg = model::indexer_inv_freq(c, -1.0f);
  if (ex.rows) {
    rope_at_rows(dq.data(), pos.data(), R, H, c, neg);
  } else {
    model::learned_indexer_rope(dq.data(), T, H, ex.pos0, c, neg.data());  // -angle: the transpose
  }
  model::learned_indexer_rope(dk.data(), T, 1, ex.pos0, c, neg.data());
  grads->resize_like(wts);
  weight_grad(dq.data(), xrows, R, static_cast<int64_t>(H) * D, c.d_model, grads->wq.data());
  weight_grad(dk.data(), ex.x, T, D, c.d_model, grads->wk.data());
  weight_grad(dw.data(), xrows, R, H, c.d_model, grads->ww.data());
  return mean;
}

void Adam::apply(LearnedIndexerWeights& w, const IndexerGrads& g) {
  if (m.wq.size() != w.wq.size()) {
    m.resize_like(w);
    v.resize_like(w);
  }
  ++step;
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float a = static_cast<float>(lr * std::sqrt(bc2) / bc1);
  auto upd = [&](std::vector<float>& p, const std::vector<float>& gr, std::vector<float>& mm, std::vector<float>& vv) {
    IS_CHECK(gr.size() == p.size(), "Adam: gradient size ", gr.size(), " != parameter size ", p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      mm[i] = beta1 * mm[i] + (1 - beta1) * gr[i];
      vv[i] = beta2 * vv[i] + (1 - beta2) * gr[i] * gr[i];
      p[i] -= a * mm[i] / (std::sqrt(vv[i]) + eps);
    }
  };
  upd(w.wq, g.wq, m.wq, v.wq);
  upd(w.wk, g.wk, m.wk, v.wk);
  upd(w.ww, g.ww, m.ww, v.ww);
}

}  // namespace indexshare::train

// Distillation loss and gradient: loss against a float64 reference, gradient against central
// finite differences, Adam decreasing the loss, determinism across thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/learned_indexer.h"
#include "train/indexer_distill.h"

namespace indexshare {
namespace {

using model::LearnedIndexerConfig;
using model::LearnedIndexerWeights;

struct Problem {
  LearnedIndexerWeights w;
  std::vector<float> x, target;
  int64_t T = 0, pos0 = 0;
  std::vector<int64_t> rows;        // a query-row sample (empty: every row)
  std::vector<float> target_rows;   // [rows, T] the target rows of the sample
  train::DistillExample ex() const { return {x.data(), target.data(), T, pos0}; }
  train::DistillExample ex_rows() const {
    return {.x = x.data(), .target = target_rows.data(), .T = T, .pos0 = pos0, .rows = rows.data(),
            .n_rows = static_cast<int64_t>(rows.size())};
  }
  void sample_rows(std::vector<int64_t> r) {
    rows = std::move(r);
    target_rows.clear();
    // A row outside [0, T) gets a zero target row: the library must reject the sample itself,
    // and this helper must not read past the target to build it.
    for (int64_t t : rows) {
      if (t >= 0 && t < T) target_rows.insert(target_rows.end(), target.begin() + t * T, target.begin() + (t + 1) * T);
      else target_rows.insert(target_rows.end(), static_cast<size_t>(T), 0.0f);
    }
  }
};

Problem make_problem(uint32_t seed, int d, int H, int D, int rope, int64_t T, int64_t pos0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::uniform_real_distribution<float> u01(0.05f, 1.0f);
  Problem p;
  p.w = LearnedIndexerWeights::zeros({d, H, D, rope, 100.0f});
  for (auto* v : {&p.w.wq, &p.w.wk, &p.w.ww})
    for (auto& e : *v) e = 0.5f * n01(rng);
  p.T = T;
  p.pos0 = pos0;
  p.x.resize(static_cast<size_t>(T * d));
  for (auto& e : p.x) e = n01(rng);
  p.target.assign(static_cast<size_t>(T * T), 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    double sum = 0;
    for (int64_t s = 0; s <= t; ++s) sum += (p.target[static_cast<size_t>(t * T + s)] = u01(rng));
    for (int64_t s = 0; s <= t; ++s) p.target[static_cast<size_t>(t * T + s)] /= static_cast<float>(sum);
  }
  return p;
}

// Independent float64 reference of the whole forward and loss, rope included (half-split on
// the first `rope` dims, angle = pos * theta^(-2j/rope)).
// With p.rows set (and use_rows) the mean is over those query rows only.
double reference_loss(const Problem& p, bool use_rows = false) {
  const auto& c = p.w.cfg;
  const int d = c.d_model, H = c.heads, D = c.head_dim, R = c.rope_dim;
  auto proj = [&](const std::vector<float>& W, int64_t t, int row) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += static_cast<double>(W[static_cast<size_t>(row * d + j)]) * p.x[static_cast<size_t>(t * d + j)];
    return s;
  };
  auto rot = [&](std::vector<double>& v, int64_t pos) {
    for (int j = 0; j < R / 2; ++j) {
      const double ang = static_cast<double>(pos) * std::pow(static_cast<double>(c.rope_theta), -2.0 * j / R);
      const double a = v[static_cast<size_t>(j)], b = v[static_cast<size_t>(j + R / 2)];
      v[static_cast<size_t>(j)] = a * std::cos(ang) - b * std::sin(ang);
      v[static_cast<size_t>(j + R / 2)] = b * std::cos(ang) + a * std::sin(ang);
    }
  };
  std::vector<std::vector<double>> K(static_cast<size_t>(p.T));
  for (int64_t s = 0; s < p.T; ++s) {
    K[static_cast<size_t>(s)].resize(static_cast<size_t>(D));
    for (int j = 0; j < D; ++j) K[static_cast<size_t>(s)][static_cast<size_t>(j)] = proj(p.w.wk, s, j);
    rot(K[static_cast<size_t>(s)], p.pos0 + s);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(H) * D);
  double total = 0;
  std::vector<int64_t> queries = p.rows;
  if (!use_rows) {
    queries.clear();
    for (int64_t t = 0; t < p.T; ++t) queries.push_back(t);
  }
  for (int64_t t : queries) {
    std::vector<std::vector<double>> Q(static_cast<size_t>(H), std::vector<double>(static_cast<size_t>(D)));
    std::vector<double> W(static_cast<size_t>(H));
    for (int h = 0; h < H; ++h) {
      for (int j = 0; j < D; ++j) Q[static_cast<size_t>(h)][static_cast<size_t>(j)] = proj(p.w.wq, t, h * D + j);
      rot(Q[static_cast<size_t>(h)], p.pos0 + t);
      W[static_cast<size_t>(h)] = proj(p.w.ww, t, h);
    }
    std::vector<double> I(static_cast<size_t>(t + 1));
    double mx = -INFINITY;
    for (int64_t s = 0; s <= t; ++s) {
      double acc = 0;
      for (int h = 0; h < H; ++h) {
        double z = 0;
        for (int j = 0; j < D; ++j) z += Q[static_cast<size_t>(h)][static_cast<size_t>(j)] * K[static_cast<size_t>(s)][static_cast<size_t>(j)];
        acc += W[static_cast<size_t>(h)] * std::max(z, 0.0);
      }
      I[static_cast<size_t>(s)] = scale * acc;
      mx = std::max(mx, I[static_cast<size_t>(s)]);
    }
    double z = 0;
    for (double v : I) z += std::exp(v - mx);
    for (int64_t s = 0; s <= t; ++s) {
      const double ps = p.target[static_cast<size_t>(t * p.T + s)];
      total += ps * (std::log(ps) - (I[static_cast<size_t>(s)] - mx - std::log(z)));
    }
  }
  return total / static_cast<double>(queries.size());
}

TEST(IndexerDistill, LossMatchesFloat64Reference) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  Problem p = make_problem(seed, 12, 3, 8, 4, 21, 5);
  const double got = train::indexer_kl_loss(p.w, p.ex(), nullptr);
  const double ref = reference_loss(p);
  EXPECT_NEAR(got, ref, 1e-4 * std::max(1.0, std::fabs(ref)));
  EXPECT_GE(got, 0.0);
}

TEST(IndexerDistill, SampledRowsLossMatchesFloat64Reference) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  Problem p = make_problem(seed, 12, 3, 8, 4, 21, 5);
  p.sample_rows({0, 3, 4, 11, 20});
  const double got = train::indexer_kl_loss(p.w, p.ex_rows(), nullptr);
  const double ref = reference_loss(p, true);
  EXPECT_NEAR(got, ref, 1e-4 * std::max(1.0, std::fabs(ref)));
  EXPECT_GT(std::fabs(ref - reference_loss(p, false)), 1e-6) << "the sample must not average like every row";
  // Every row given as a sample equals the default.
  std::vector<int64_t> all;
  for (int64_t t = 0; t < p.T; ++t) all.push_back(t);
  p.sample_rows(all);
  EXPECT_NEAR(train::indexer_kl_loss(p.w, p.ex_rows(), nullptr), train::indexer_kl_loss(p.w, p.ex(), nullptr), 1e-6);
  p.sample_rows({4, 3});
  EXPECT_THROW(train::indexer_kl_loss(p.w, p.ex_rows(), nullptr), Error);
  p.sample_rows({2, 21});
  EXPECT_THROW(train::indexer_kl_loss(p.w, p.ex_rows(), nullptr), Error);
}

class GradientCheck : public testing::TestWithParam<bool> {};

TEST_P(GradientCheck, MatchesFiniteDifferences) {
  const bool sampled = GetParam();
  const char* env = std::getenv("INDEXSHARE_SEED");
  const uint32_t seed = env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed << (sampled ? " (sampled rows)" : ""));
  Problem p = make_problem(seed, 6, 2, 4, 2, 9, 3);
  if (sampled) p.sample_rows({1, 5, 8});
  train::IndexerGrads g;
  train::indexer_kl_loss(p.w, sampled ? p.ex_rows() : p.ex(), &g);
  int checked = 0, bad = 0;
  int straddled = 0;
  auto check = [&](std::vector<float>& param, const std::vector<float>& grad, const char* name) {
    for (size_t i = 0; i < param.size(); ++i) {
      const float keep = param[i];
      const double l0 = reference_loss(p, sampled);
      // Central difference plus both one-sided ones. The float64 reference makes a small step
      // usable; the step actually taken is the difference of the float parameters. Where the
      // one-sided slopes disagree the step straddles a ReLU kink (some q.k crosses zero), where
      // no derivative exists: retry with a 100x smaller step, and count the parameter as
      // straddled only if the kink is still inside it.
      double fd = 0;
      bool kink = true;
      for (float h = 1e-5f; kink && h >= 1e-7f; h *= 1e-2f) {
        const float up = keep + h, down = keep - h;
        param[i] = up;
        const double lp = reference_loss(p, sampled);
        param[i] = down;
        const double lm = reference_loss(p, sampled);
        param[i] = keep;
        const double right = (lp - l0) / (static_cast<double>(up) - keep);
        const double left = (l0 - lm) / (static_cast<double>(keep) - down);
        fd = (lp - lm) / (static_cast<double>(up) - static_cast<double>(down));
        kink = std::fabs(right - left) > 1e-4 + 1e-2 * std::fabs(fd);
      }
      ++checked;
      if (kink) {
        ++straddled;
        continue;
      }
      if (std::fabs(fd - grad[i]) > 1e-4 + 1e-2 * std::fabs(fd)) {
        ++bad;
        ADD_FAILURE_AT(__FILE__, __LINE__) << name << "[" << i << "]: analytic " << grad[i] << " vs finite difference " << fd;
        if (bad > 3) return;
      }
    }
  };
  check(p.w.wq, g.wq, "wq");
  check(p.w.wk, g.wk, "wk");
  check(p.w.ww, g.ww, "ww");
  EXPECT_EQ(checked, static_cast<int>(p.w.wq.size() + p.w.wk.size() + p.w.ww.size()));
  EXPECT_LE(straddled, 2) << "a kink inside a 1e-7 step is rare; many mean the loss is not smooth where it should be";
}

INSTANTIATE_TEST_SUITE_P(IndexerDistill, GradientCheck, testing::Bool(),
                         [](const testing::TestParamInfo<bool>& i) { return i.param ? "SampledRows" : "EveryRow"; });

TEST(IndexerDistill, AdamDecreasesTheLoss) {
  Problem p = make_problem(7, 16, 4, 8, 4, 48, 0);
  train::Adam opt;
  opt.lr = 1e-2f;
  train::IndexerGrads g;
  const double first = train::indexer_kl_loss(p.w, p.ex(), &g);
  double last = first;
  for (int i = 0; i < 60; ++i) {
    last = train::indexer_kl_loss(p.w, p.ex(), &g);
    opt.apply(p.w, g);
  }
  last = train::indexer_kl_loss(p.w, p.ex(), nullptr);
  EXPECT_LT(last, 0.8 * first) << "first " << first << " last " << last;
}

TEST(IndexerDistill, BitwiseSameForOneAndTwoThreads) {
  Problem p = make_problem(11, 10, 2, 8, 4, 40, 2);
  train::IndexerGrads g1, g2;
  set_num_threads(1);
  const double l1 = train::indexer_kl_loss(p.w, p.ex(), &g1);
  set_num_threads(2);
  const double l2 = train::indexer_kl_loss(p.w, p.ex(), &g2);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g1.wq, g2.wq);
  EXPECT_EQ(g1.wk, g2.wk);
  EXPECT_EQ(g1.ww, g2.ww);
}

TEST(IndexerDistill, RejectsBadInput) {
  Problem p = make_problem(3, 6, 2, 4, 2, 5, 0);
  train::DistillExample ex = p.ex();
  ex.T = 0;
  EXPECT_THROW(train::indexer_kl_loss(p.w, ex, nullptr), Error);
  p.target[6] = NAN;  // row 1, s = 1
  try {
    train::indexer_kl_loss(p.w, p.ex(), nullptr);
    FAIL() << "NaN target accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("target row 1"), std::string::npos) << e.what();
  }
  LearnedIndexerConfig bad{6, 2, 4, 3, 100.0f};
  EXPECT_THROW(bad.validate(), Error);
}

}  // namespace
}  // namespace indexshare

// Indexer distillation on a whole (tiny, random) Llama: the capture against the model's own
// attention computed independently in float64, the loss going down, the training-aware mode
// giving indexers to F layers only, and the result bitwise the same for one and two threads
// (what makes `indexshare distill` reproduce a committed indexer file on any core count).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "train/distill_llama.h"
#include "tiny_llama.h"

namespace indexshare::train {
namespace {

std::vector<int32_t> random_tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

DistillOptions small_options() {
  DistillOptions o;
  o.heads = 2;
  o.head_dim = 8;
  o.rope_dim = 4;
  o.seq_len = 48;
  o.sequences = 3;
  o.steps_per_sequence = 6;
  o.rows_per_sequence = 16;
  o.lr = 1e-2f;
  return o;
}

TEST(DistillLlama, CapturedRowsAreTheSampledRowsOfTheFullCapture) {
  auto tiny = testing_util::make_tiny_llama(21);
  const auto ids = random_tokens(40, tiny.cfg.vocab, 22);
  const LayerCapture full = capture_layers(*tiny.model, ids);
  const std::vector<int64_t> rows = {0, 7, 19, 39};
  const LayerCapture part = capture_layers(*tiny.model, ids, rows);
  ASSERT_EQ(part.P.size(), full.P.size());
  for (size_t l = 0; l < full.P.size(); ++l) {
    EXPECT_EQ(part.x[l], full.x[l]);
    ASSERT_EQ(part.P[l].size(), rows.size() * ids.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      double mass = 0.0;
      for (size_t s = 0; s < ids.size(); ++s) {
        const float a = part.P[l][i * ids.size() + s], b = full.P[l][static_cast<size_t>(rows[i]) * ids.size() + s];
        EXPECT_NEAR(a, b, 1e-6) << "layer " << l << " row " << rows[i] << " key " << s;
        if (static_cast<int64_t>(s) > rows[i]) {
          EXPECT_EQ(a, 0.0f) << "future key has attention";
        }
        mass += a;
      }
      EXPECT_NEAR(mass, 1.0, 1e-4) << "head-averaged attention of a row sums to 1";
    }
  }
  EXPECT_THROW(capture_layers(*tiny.model, ids, {5, 5}), Error);
  EXPECT_THROW(capture_layers(*tiny.model, ids, {40}), Error);
}

// max-target capture (max_weight 1): each row is a distribution over the visible keys, and since max_h A_h >= mean_h
// A_h pointwise and both sum to 1 over the row, P_max[s] >= P_mean[s] / Z with Z = sum max_h A_h
// in [1, H]; the two targets differ; distillation on it is bitwise the same for 1 and 2 threads.
TEST(DistillLlama, HeadMaxCaptureAndDistillation) {
  auto tiny = testing_util::make_tiny_llama(31);
  const auto ids = random_tokens(40, tiny.cfg.vocab, 32);
  const std::vector<int64_t> rows = {3, 20, 39};
  const LayerCapture mean = capture_layers(*tiny.model, ids, rows);
  const LayerCapture mx = capture_layers(*tiny.model, ids, rows, 1.0f);
  const double H = tiny.cfg.n_heads;
  double differ = 0.0;
  for (size_t l = 0; l < mean.P.size(); ++l) {
    EXPECT_EQ(mx.x[l], mean.x[l]);
    for (size_t i = 0; i < rows.size(); ++i) {
      double sum = 0.0, ratio_min = 1e300, ratio_max = 0.0;
      for (size_t s = 0; s < ids.size(); ++s) {
        const double a = mx.P[l][i * ids.size() + s], b = mean.P[l][i * ids.size() + s];
        if (static_cast<int64_t>(s) > rows[i]) {
          EXPECT_EQ(a, 0.0) << "future key";
          continue;
        }
        sum += a;
        if (b > 1e-6) {
          ratio_min = std::min(ratio_min, a / b);
          ratio_max = std::max(ratio_max, a / b);
        }
        differ = std::max(differ, std::abs(a - b));
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
      // a / b = (max_h A_h / mean_h A_h) / Z lies in [1 / Z, H / Z] with Z in [1, H].
      EXPECT_GE(ratio_min, 1.0 / H - 1e-4) << "layer " << l << " row " << rows[i];
      EXPECT_LE(ratio_max, H + 1e-4) << "layer " << l << " row " << rows[i];
    }
  }
  EXPECT_GT(differ, 1e-3) << "the max target should differ from the mean somewhere";
  // A blend captures (1 - w) mean + w max of the two captures above.
  const LayerCapture blend = capture_layers(*tiny.model, ids, rows, 0.25f);
  for (size_t l = 0; l < mean.P.size(); ++l)
    for (size_t i = 0; i < mean.P[l].size(); ++i)
      EXPECT_NEAR(blend.P[l][i], 0.75 * mean.P[l][i] + 0.25 * mx.P[l][i], 1e-6) << "layer " << l << " at " << i;
  EXPECT_EQ(target_name(0.0f), "mean");
  EXPECT_EQ(target_name(1.0f), "max");
  EXPECT_EQ(target_name(0.25f), "blend 0.25");
  DistillOptions o = small_options();
  o.max_weight = 1.0f;
  const auto tok = random_tokens(48 * 3, tiny.cfg.vocab, 33);
  const int keep = num_threads();
  set_num_threads(1);
  const model::IndexerSet a = distill_indexers(*tiny.model, tok, o);
  set_num_threads(2);
  const model::IndexerSet b = distill_indexers(*tiny.model, tok, o);
  set_num_threads(keep);
  o.max_weight = 0.0f;
  const model::IndexerSet c = distill_indexers(*tiny.model, tok, o);
  for (int l = 0; l < tiny.cfg.n_layers; ++l) {
    EXPECT_EQ(a.layers[static_cast<size_t>(l)]->wq, b.layers[static_cast<size_t>(l)]->wq) << "layer " << l;
    EXPECT_NE(a.layers[static_cast<size_t>(l)]->wq, c.layers[static_cast<size_t>(l)]->wq) << "layer " << l;
  }
}

TEST(DistillLlama, LossDecreasesOnEveryLayer) {
  auto tiny = testing_util::make_tiny_llama(23);
  const auto ids = random_tokens(48 * 3, tiny.cfg.vocab, 24);
  DistillOptions o = small_options();
  o.epochs = 3;
  DistillReport rep;
  const model::IndexerSet set = distill_indexers(*tiny.model, ids, o, &rep);
  ASSERT_EQ(static_cast<int>(set.layers.size()), tiny.cfg.n_layers);
  for (int l = 0; l < tiny.cfg.n_layers; ++l) {
    EXPECT_TRUE(set.has(l));
    EXPECT_LT(rep.last_loss[static_cast<size_t>(l)], rep.first_loss[static_cast<size_t>(l)]) << "layer " << l;
  }
}

TEST(DistillLlama, TrainingAwareGivesIndexersToFullLayersOnly) {
  auto tiny = testing_util::make_tiny_llama(25);
  const auto ids = random_tokens(48 * 3, tiny.cfg.vocab, 26);
  DistillOptions o = small_options();
  o.training_aware = share::Schedule::from_pattern("FSSF");
  DistillReport rep;
  const model::IndexerSet set = distill_indexers(*tiny.model, ids, o, &rep);
  EXPECT_TRUE(set.has(0));
  EXPECT_FALSE(set.has(1));
  EXPECT_FALSE(set.has(2));
  EXPECT_TRUE(set.has(3));
  EXPECT_TRUE(std::isnan(rep.first_loss[1]));
  EXPECT_LT(rep.last_loss[0], rep.first_loss[0]);
  o.training_aware = share::Schedule::from_pattern("FSF");
  EXPECT_THROW(distill_indexers(*tiny.model, ids, o), Error);
}

TEST(DistillLlama, BitwiseSameForOneAndTwoThreads) {
  auto tiny = testing_util::make_tiny_llama(27);
  const auto ids = random_tokens(48 * 3, tiny.cfg.vocab, 28);
  const DistillOptions o = small_options();
  const int keep = num_threads();
  set_num_threads(1);
  const model::IndexerSet a = distill_indexers(*tiny.model, ids, o);
  set_num_threads(2);
  const model::IndexerSet b = distill_indexers(*tiny.model, ids, o);
  set_num_threads(keep);
  for (int l = 0; l < tiny.cfg.n_layers; ++l) {
    const auto& x = *a.layers[static_cast<size_t>(l)];
    const auto& y = *b.layers[static_cast<size_t>(l)];
    EXPECT_EQ(x.wq, y.wq) << "layer " << l;
    EXPECT_EQ(x.wk, y.wk) << "layer " << l;
    EXPECT_EQ(x.ww, y.ww) << "layer " << l;
  }
}

TEST(DistillLlama, RejectsBadOptions) {
  auto tiny = testing_util::make_tiny_llama(29);
  const auto ids = random_tokens(100, tiny.cfg.vocab, 30);
  DistillOptions o = small_options();
  o.rows_per_sequence = -1;
  EXPECT_THROW(distill_indexers(*tiny.model, ids, o), Error);
  o = small_options();
  o.sequences = 10;  // 480 tokens needed, 100 given
  try {
    distill_indexers(*tiny.model, ids, o);
    FAIL() << "a corpus too short was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("100 tokens"), std::string::npos) << e.what();
  }
  o = small_options();
  o.max_weight = 1.5f;
  EXPECT_THROW(distill_indexers(*tiny.model, ids, o), Error);
  o = small_options();
  o.rope_theta = -1.0f;
  EXPECT_THROW(distill_indexers(*tiny.model, ids, o), Error);
  o.rope_theta = NAN;
  EXPECT_THROW(distill_indexers(*tiny.model, ids, o), Error);
}

// The indexer's RoPE base: the model's by default, the option's when set (it is what the file
// records and what scoring uses), and a different base trains different weights.
TEST(DistillLlama, RopeThetaOption) {
  auto tiny = testing_util::make_tiny_llama(33);
  const auto ids = random_tokens(48 * 3, tiny.cfg.vocab, 34);
  DistillOptions o = small_options();
  const model::IndexerSet a = distill_indexers(*tiny.model, ids, o);
  EXPECT_EQ(a.cfg.rope_theta, tiny.cfg.rope_theta);
  o.rope_theta = 50.0f;
  const model::IndexerSet b = distill_indexers(*tiny.model, ids, o);
  EXPECT_EQ(b.cfg.rope_theta, 50.0f);
  EXPECT_NE(a.layers[0]->wq, b.layers[0]->wq);
}

}  // namespace
}  // namespace indexshare::train

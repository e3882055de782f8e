// The step-wise Llama forward (embed_tokens, forward_layers, output_logits) against forward():
// bit for bit at every split point, dense and under DSA with the shared top-k buffer saved and
// restored across the split, continuing a cached sequence, and bad inputs.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/llama_dsa.h"
#include "tiny_llama.h"

namespace indexshare::model {
namespace {

std::vector<int32_t> random_tokens(int n, int vocab, std::mt19937& rng) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

IndexerSet random_indexers(const LlamaConfig& c, std::mt19937& rng) {
  IndexerSet set;
  set.cfg = {c.d_model, 2, 8, 4, c.rope_theta};
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (int l = 0; l < c.n_layers; ++l) {
    auto w = LearnedIndexerWeights::zeros(set.cfg);
    for (auto* v : {&w.wq, &w.wk, &w.ww})
      for (auto& e : *v) e = nd(rng);
    set.layers.emplace_back(std::move(w));
  }
  return set;
}

std::vector<float> full_forward(const LlamaModel& m, const std::vector<int32_t>& ids, AttentionBackend* be) {
  KvCache c;
  c.reset(m.config(), 64);
  if (be) be->begin_sequence();
  std::vector<float> logits(ids.size() * static_cast<size_t>(m.config().vocab));
  m.forward(ids.data(), static_cast<int64_t>(ids.size()), c, logits.data(), true, be);
  return logits;
}

void expect_bitwise_equal(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << what << " at " << i;
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

TEST(LlamaStep, SplitAtEveryLayerEqualsForwardDense) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  auto tiny = testing_util::make_tiny_llama(rng(), 5);
  const auto& m = *tiny.model;
  const int N = m.config().n_layers, d = m.config().d_model, V = m.config().vocab;
  const auto ids = random_tokens(37, V, rng);
  const int64_t T = static_cast<int64_t>(ids.size());
  const auto ref = full_forward(m, ids, nullptr);
  for (int split = 0; split <= N; ++split) {
    KvCache c;
    c.reset(m.config(), 64);
    std::vector<float> x(static_cast<size_t>(T * d)), logits(static_cast<size_t>(T * V));
    m.embed_tokens(ids.data(), T, x.data());
    m.forward_layers(0, split, x.data(), T, 0, c, nullptr);
    m.forward_layers(split, N, x.data(), T, 0, c, nullptr);
    EXPECT_EQ(c.length, 0) << "forward_layers must not move cache.length";
    m.output_logits(x.data(), T, logits.data());
    expect_bitwise_equal(logits, ref, "split at layer " + std::to_string(split));
  }
}

TEST(LlamaStep, ResumingUnderDsaWithTheSavedTopkEqualsForward) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  auto tiny = testing_util::make_tiny_llama(rng(), 5);
  const auto& m = *tiny.model;
  const int N = m.config().n_layers, d = m.config().d_model, V = m.config().vocab;
  const IndexerSet ix = random_indexers(m.config(), rng);
  const auto ids = random_tokens(48, V, rng);
  const int64_t T = static_cast<int64_t>(ids.size());
  for (const char* pat : {"FSFSS", "FFSFF", "FSSSS"}) {
    const DsaOptions o{.topk = 6, .schedule = share::Schedule::from_pattern(pat), .indexers = &ix, .capacity = 64};
    LlamaDsaBackend ref_be(m.config(), o);
    const auto ref = full_forward(m, ids, &ref_be);
    for (int split = 1; split < N; ++split) {
      KvCache c;
      c.reset(m.config(), 64);
      std::vector<float> x(static_cast<size_t>(T * d)), logits(static_cast<size_t>(T * V));
      LlamaDsaBackend a(m.config(), o), b(m.config(), o);
      a.begin_sequence();
      m.embed_tokens(ids.data(), T, x.data());
      m.forward_layers(0, split, x.data(), T, 0, c, &a);
      const DsaSharedTopk saved = a.shared_topk();
      EXPECT_EQ(saved.rows, T);
      EXPECT_EQ(saved.pos0, 0);
      b.begin_sequence();
      b.restore_shared_topk(saved);
      m.forward_layers(split, N, x.data(), T, 0, c, &b);
      m.output_logits(x.data(), T, logits.data());
      expect_bitwise_equal(logits, ref, std::string(pat) + " resumed at layer " + std::to_string(split));
    }
  }
}

TEST(LlamaStep, AShiftedBlockContinuesACachedSequence) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  auto tiny = testing_util::make_tiny_llama(rng(), 3);
  const auto& m = *tiny.model;
  const int N = m.config().n_layers, d = m.config().d_model, V = m.config().vocab;
  const auto ids = random_tokens(30, V, rng);
  const int64_t T1 = 18, T2 = 12;
  KvCache a, b;
  a.reset(m.config(), 64);
  b.reset(m.config(), 64);
  std::vector<float> ref(static_cast<size_t>(T2 * V)), got(static_cast<size_t>(T2 * V));
  m.forward(ids.data(), T1, a, nullptr, false);
  m.forward(ids.data() + T1, T2, a, ref.data(), true);
  m.forward(ids.data(), T1, b, nullptr, false);
  std::vector<float> x(static_cast<size_t>(T2 * d));
  m.embed_tokens(ids.data() + T1, T2, x.data());
  m.forward_layers(0, N, x.data(), T2, T1, b, nullptr);
  m.output_logits(x.data(), T2, got.data());
  expect_bitwise_equal(got, ref, "second block at pos0 " + std::to_string(T1));
}

TEST(LlamaStep, BadInputsAreErrors) {
  auto tiny = testing_util::make_tiny_llama(3, 2);
  const auto& m = *tiny.model;
  const int d = m.config().d_model;
  KvCache c;
  c.reset(m.config(), 16);
  std::vector<float> x(static_cast<size_t>(20 * d));
  expect_error([&] { m.forward_layers(1, 0, x.data(), 4, 0, c); }, "layer range");
  expect_error([&] { m.forward_layers(0, 3, x.data(), 4, 0, c); }, "layer range");
  expect_error([&] { m.forward_layers(-1, 1, x.data(), 4, 0, c); }, "layer range");
  expect_error([&] { m.forward_layers(0, 2, x.data(), 0, 0, c); }, "no rows");
  expect_error([&] { m.forward_layers(0, 2, nullptr, 4, 0, c); }, "x is null");
  expect_error([&] { m.forward_layers(0, 2, x.data(), 4, 14, c); }, "capacity");
  expect_error([&] { m.forward_layers(0, 2, x.data(), 4, -1, c); }, "pos0");
  KvCache fresh;
  expect_error([&] { m.forward_layers(0, 2, x.data(), 4, 0, fresh); }, "not reset");
  const int32_t bad = m.config().vocab;
  expect_error([&] { m.embed_tokens(&bad, 1, x.data()); }, "outside the vocabulary");
  expect_error([&] { m.output_logits(x.data(), -1, x.data()); }, "negative row count");
  m.output_logits(x.data(), 0, nullptr);  // nothing to do is fine

  IndexerSet ix;
  ix.cfg = {d, 2, 8, 4, 10000.0f};
  ix.layers.assign(2, LearnedIndexerWeights::zeros(ix.cfg));
  LlamaDsaBackend be(m.config(), {.topk = 4, .schedule = share::Schedule::all_full(2), .indexers = &ix, .capacity = 16});
  expect_error([&] { be.restore_shared_topk({std::vector<int32_t>(7, 0), 2, 0}); }, "restore_shared_topk");
  expect_error([&] { be.restore_shared_topk({{}, -1, 0}); }, "negative row count");
}

}  // namespace
}  // namespace indexshare::model

#include "train/distill_llama.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "core/error.h"
#include "ops/attention_probs.h"
#include "train/indexer_distill.h"

namespace indexshare::train {
namespace {

class CaptureBackend : public model::AttentionBackend {
 public:
  CaptureBackend(const model::LlamaConfig& c, LayerCapture& out, float max_weight)
      : c_(c), out_(out), max_weight_(max_weight) {
    out_.x.assign(static_cast<size_t>(c.n_layers), {});
    out_.P.assign(static_cast<size_t>(c.n_layers), {});
  }
  bool attend(const model::AttentionCall& a) override {
    IS_CHECK(a.pos0 == 0 && a.T == a.L, "capture: expects one prefill from position 0");
    auto& x = out_.x[static_cast<size_t>(a.layer)];
    x.assign(a.x_norm, a.x_norm + a.T * c_.d_model);
    auto& P = out_.P[static_cast<size_t>(a.layer)];
    const float* keys = model::attention_keys_f32(a, int64_t{c_.n_kv_heads} * c_.head_dim, keys_);
    if (out_.rows.empty()) {
      P.resize(static_cast<size_t>(a.T * a.T));
      ops::attention_probs({.q = a.q, .k = keys, .T = a.T, .L = a.L, .H = c_.n_heads, .H_kv = c_.n_kv_heads,
                            .D = c_.head_dim, .q_start = 0, .scale = a.scale, .P = P.data(), .max_weight = max_weight_});
    } else {
      const int64_t R = static_cast<int64_t>(out_.rows.size()), qd = int64_t{c_.n_heads} * c_.head_dim;
      P.resize(static_cast<size_t>(R * a.T));
      // The sampled rows' queries side by side, scored in one call (threads split the rows).
      q_.resize(static_cast<size_t>(R * qd));
      for (int64_t i = 0; i < R; ++i) {
        const float* qt = a.q + out_.rows[static_cast<size_t>(i)] * qd;
        std::copy(qt, qt + qd, q_.begin() + i * qd);
      }
      ops::attention_probs({.q = q_.data(), .k = keys, .T = R, .L = a.L, .H = c_.n_heads, .H_kv = c_.n_kv_heads,
                            .D = c_.head_dim, .scale = a.scale, .P = P.data(), .pos = out_.rows.data(),
                            .max_weight = max_weight_});
    }
    return false;  // the model runs dense attention itself
  }

 private:
  const model::LlamaConfig& c_;
  LayerCapture& out_;
  float max_weight_;
  std::vector<float> keys_;  // widened f16 keys
  std::vector<float> q_;     // the sampled rows' queries
};

}  // namespace

LayerCapture capture_layers(const model::LlamaModel& m, std::span<const int32_t> ids, std::vector<int64_t> rows,
                            float max_weight) {
  LayerCapture cap;
  for (size_t i = 0; i < rows.size(); ++i)
    IS_CHECK(rows[i] >= 0 && rows[i] < static_cast<int64_t>(ids.size()) && (i == 0 || rows[i] > rows[i - 1]),
             "capture_layers: rows must increase strictly within [0, ", ids.size(), ")");
  cap.rows = std::move(rows);
  CaptureBackend be(m.config(), cap, max_weight);
  model::KvCache cache;
  cache.reset(m.config(), static_cast<int64_t>(ids.size()));
  m.forward(ids.data(), static_cast<int64_t>(ids.size()), cache, nullptr, false, &be);
  return cap;
}

std::string target_name(float max_weight) {
  if (max_weight == 0.0f) return "mean";
  if (max_weight == 1.0f) return "max";
  std::ostringstream s;
  s << "blend " << max_weight;
  return s.str();
}

model::IndexerSet distill_indexers(const model::LlamaModel& m, std::span<const int32_t> tokens,
                                   const DistillOptions& o, DistillReport* report) {
  const auto& c = m.config();
  const int N = c.n_layers;
  IS_CHECK(o.seq_len >= 2 && o.sequences >= 1 && o.epochs >= 1 && o.steps_per_sequence >= 1,
           "distill: seq_len >= 2, sequences, epochs and steps must be >= 1");
  IS_CHECK(o.max_weight >= 0.0f && o.max_weight <= 1.0f, "distill: the target's max weight ", o.max_weight,
           " is outside [0, 1]");
  IS_CHECK(o.seq_len <= c.context_length, "distill: --seq-len ", o.seq_len, " exceeds the model's context ", c.context_length);
  IS_CHECK(o.rows_per_sequence >= 0, "distill: --rows must be >= 0, got ", o.rows_per_sequence);
  const int64_t need = o.seq_len * o.sequences;
  IS_CHECK(static_cast<int64_t>(tokens.size()) >= need, "distill: the corpus has ", tokens.size(), " tokens; ",
           o.sequences, " sequences of ", o.seq_len, " need ", need);
  if (o.training_aware) {
    IS_CHECK(o.training_aware->num_layers() == N, "distill: the pattern has ", o.training_aware->num_layers(),
             " layers but the model has ", N);
    IS_CHECK(!o.training_aware->has_reindex(), "distill: training-aware distillation takes an F/S pattern; ",
             o.training_aware->pattern(), " has reindex (R) layers (distil their small indexers per layer instead: "
             "indexshare distill --heads 1)");
  }
  model::IndexerSet set;
  IS_CHECK(o.rope_theta >= 0.0f && std::isfinite(o.rope_theta), "distill: --rope-theta ", o.rope_theta,
           " must be finite and >= 0 (0 = the model's)");
  set.cfg = {c.d_model, o.heads, o.head_dim, o.rope_dim, o.rope_theta > 0.0f ? o.rope_theta : c.rope_theta};
  set.cfg.validate();
  std::mt19937_64 rng(o.seed);
  const float std_in = 1.0f / std::sqrt(static_cast<float>(c.d_model));
  std::normal_distribution<float> nd(0.0f, std_in);
  std::vector<int> trained;
  std::vector<std::vector<int>> serves(static_cast<size_t>(N));
  for (int l = 0; l < N; ++l) {
    const bool has = !o.training_aware || o.training_aware->is_full(l);
    if (!has) {
      set.layers.emplace_back();
      serves[static_cast<size_t>(o.training_aware->source(l))].push_back(l);
      continue;
    }
    auto w = model::LearnedIndexerWeights::zeros(set.cfg);
    for (auto* v : {&w.wq, &w.wk, &w.ww})
      for (auto& e : *v) e = nd(rng);
    set.layers.emplace_back(std::move(w));
    trained.push_back(l);
    serves[static_cast<size_t>(l)].push_back(l);
  }
  std::vector<Adam> opt(static_cast<size_t>(N));
  for (auto& a : opt) a.lr = o.lr;
  std::vector<double> first(static_cast<size_t>(N), std::numeric_limits<double>::quiet_NaN()), last = first;

  const auto t0 = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(o.epochs) * o.sequences * o.steps_per_sequence;
  int64_t done = 0;
  IndexerGrads g;
  std::vector<float> target;
  for (int ep = 0; ep < o.epochs; ++ep) {
    for (int s = 0; s < o.sequences; ++s) {
      std::vector<int64_t> rows;
      if (o.rows_per_sequence > 0 && o.rows_per_sequence < o.seq_len) {
        // A fixed random sample of query rows per (epoch, sequence), from the seed.
        std::mt19937_64 rr(o.seed * 1000003ull + static_cast<uint64_t>(ep) * 7919ull + static_cast<uint64_t>(s));
        std::vector<int64_t> all(static_cast<size_t>(o.seq_len));
        for (int64_t t = 0; t < o.seq_len; ++t) all[static_cast<size_t>(t)] = t;
        for (int64_t i = 0; i < o.rows_per_sequence; ++i) {  // partial Fisher-Yates with our own draws
          const uint64_t span = static_cast<uint64_t>(o.seq_len - i);
          const int64_t j = i + static_cast<int64_t>(rr() % span);
          std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(j)]);
        }
        rows.assign(all.begin(), all.begin() + o.rows_per_sequence);
        std::sort(rows.begin(), rows.end());
      }
      const LayerCapture cap = capture_layers(
          m, tokens.subspan(static_cast<size_t>(s * o.seq_len), static_cast<size_t>(o.seq_len)), rows, o.max_weight);
      for (int step = 0; step < o.steps_per_sequence; ++step) {
        double mean = 0.0;
        for (int l : trained) {
          const auto& src = serves[static_cast<size_t>(l)];
          const float* tp = cap.P[static_cast<size_t>(l)].data();
          if (src.size() > 1) {  // multi-layer target: the mean of the served layers' P
            target.assign(cap.P[static_cast<size_t>(l)].size(), 0.0f);
            const float inv = 1.0f / static_cast<float>(src.size());
            for (int j : src)
              for (size_t i = 0; i < target.size(); ++i) target[i] += inv * cap.P[static_cast<size_t>(j)][i];
            tp = target.data();
          }
          auto& w = *set.layers[static_cast<size_t>(l)];
          const DistillExample ex{.x = cap.x[static_cast<size_t>(l)].data(), .target = tp, .T = o.seq_len, .pos0 = 0,
                                  .rows = cap.rows.empty() ? nullptr : cap.rows.data(),
                                  .n_rows = static_cast<int64_t>(cap.rows.size())};
          const double loss = indexer_kl_loss(w, ex, &g);
          opt[static_cast<size_t>(l)].apply(w, g);
          if (std::isnan(first[static_cast<size_t>(l)])) first[static_cast<size_t>(l)] = loss;
          last[static_cast<size_t>(l)] = loss;
          mean += loss;
        }
        ++done;
        if (o.progress) o.progress(done, total, mean / static_cast<double>(trained.size()));
      }
    }
  }
  if (report) {
    report->first_loss = first;
    report->last_loss = last;
    report->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return set;
}

}  // namespace indexshare::train

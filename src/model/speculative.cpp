#include "model/speculative.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "core/error.h"
#include "model/sampler.h"

namespace indexshare::model {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Target forward of T tokens: appends to the cache, writes every row's logits [T, V] and final
// hidden state after the final norm [T, d] (bit for bit what forward() computes for the logits).
void target_forward(const LlamaModel& m, const int32_t* tokens, int64_t T, KvCache& cache, AttentionBackend* be,
                    std::vector<float>& logits, std::vector<float>& hidden, bool all_logits) {
  const int64_t d = m.config().d_model, V = m.config().vocab;
  IS_CHECK(cache.length + T <= cache.capacity, "speculative: ", cache.length, " cached + ", T,
           " new tokens exceed the capacity of ", cache.capacity);
  std::vector<float>& x = hidden;
  x.resize(static_cast<size_t>(T * d));
  m.embed_tokens(tokens, T, x.data());
  m.forward_layers(0, m.config().n_layers, x.data(), T, cache.length, cache, be);
  cache.length += T;
  const int64_t rows = all_logits ? T : 1;
  logits.resize(static_cast<size_t>(rows * V));
  m.output_logits(x.data() + (T - rows) * d, rows, logits.data());
  final_norm(m, x.data(), T, x.data());
}

void check_draft_attention(const SpeculativeOptions& o, const MtpHead& head, AttentionBackend* target_backend) {
  if (o.draft_attention != DraftAttention::kDense)
    IS_CHECK(o.topk > 0, "speculative: draft attention '", draft_attention_name(o.draft_attention),
             "' needs a top-k > 0");
  if (o.draft_attention == DraftAttention::kIndexer || o.draft_attention == DraftAttention::kShareStep0)
    IS_CHECK(head.has_indexer(), "speculative: draft attention '", draft_attention_name(o.draft_attention),
             "' runs the MTP head's own indexer, but this MTP file has none");
  if (o.draft_attention == DraftAttention::kShareTarget) {
    const auto* dsa = dynamic_cast<LlamaDsaBackend*>(target_backend);
    IS_CHECK(dsa != nullptr,
             "speculative: draft attention 'share-target' reuses the target's DSA top-k, but the target runs dense "
             "attention (give it --dsa)");
    IS_CHECK(dsa->options().topk == o.topk, "speculative: share-target reuses the target's top-", dsa->options().topk,
             " sets; the draft's top-k is ", o.topk);
  }
}

}  // namespace

DraftAttention parse_draft_attention(std::string_view s) {
  for (auto a : {DraftAttention::kDense, DraftAttention::kIndexer, DraftAttention::kShareStep0, DraftAttention::kShareTarget})
    if (s == draft_attention_name(a)) return a;
  fail("--draft-attention must be dense, indexer, share-step0 or share-target, got '", s, "'");
}

const char* draft_attention_name(DraftAttention a) {
  switch (a) {
    case DraftAttention::kDense: return "dense";
    case DraftAttention::kIndexer: return "indexer";
    case DraftAttention::kShareStep0: return "share-step0";
    case DraftAttention::kShareTarget: return "share-target";
  }
  return "?";
}

int reused_sets(std::span<const int32_t> set, int64_t from, int64_t pos0, int64_t T, std::vector<int32_t>& rows) {
  IS_CHECK(from >= 0, "speculative: a later draft step ran before step 0");
  const int64_t width = static_cast<int64_t>(set.size()) + std::max<int64_t>(0, pos0 + T - 1 - from);
  rows.assign(static_cast<size_t>(T * width), -1);
  for (int64_t t = 0; t < T; ++t) {
    int32_t* r = rows.data() + t * width;
    std::copy(set.begin(), set.end(), r);
    int64_t j = static_cast<int64_t>(set.size());
    for (int64_t s = from + 1; s <= pos0 + t; ++s) r[j++] = static_cast<int32_t>(s);
  }
  return static_cast<int>(width);
}

void softmax_t(std::span<const float> logits, float temperature, std::span<float> p) {
  IS_CHECK(temperature > 0.0f && std::isfinite(temperature), "speculative: temperature must be > 0, got ", temperature);
  IS_CHECK(p.size() == logits.size(), "speculative: softmax sizes differ");
  const float mx = logits[static_cast<size_t>(greedy_token(logits))];
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += (p[i] = std::exp((logits[i] - mx) / temperature));
  for (float& v : p) v = static_cast<float>(v / sum);
}

int32_t sample_index(std::span<const float> p, std::mt19937_64& rng) {
  IS_CHECK(!p.empty(), "speculative: empty distribution");
  double total = 0.0;
  for (float v : p) total += v;
  IS_CHECK(total > 0.0 && std::isfinite(total), "speculative: the distribution sums to ", total);
  double r = std::uniform_real_distribution<double>(0.0, total)(rng);
  int32_t last = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0f) continue;
    last = static_cast<int32_t>(i);
    r -= p[i];
    if (r < 0.0) return last;
  }
  return last;
}

VerifyResult verify_draft_token(std::span<const float> p, std::span<const float> q, int32_t d, std::mt19937_64& rng) {
  IS_CHECK(p.size() == q.size() && !p.empty(), "speculative: p and q sizes differ");
  IS_CHECK(d >= 0 && static_cast<size_t>(d) < p.size(), "speculative: draft token ", d, " outside [0, ", p.size(), ")");
  const double pd = p[static_cast<size_t>(d)], qd = q[static_cast<size_t>(d)];
  IS_CHECK(qd > 0.0, "speculative: the draft token ", d, " has draft probability 0");
  if (pd >= qd || std::uniform_real_distribution<double>(0.0, 1.0)(rng) < pd / qd) return {true, d};
  std::vector<float> r(p.size());
  double total = 0.0;
  for (size_t i = 0; i < p.size(); ++i) total += (r[i] = std::max(0.0f, p[i] - q[i]));
  if (!(total > 0.0)) return {false, sample_index(p, rng)};
  return {false, sample_index(r, rng)};
}

namespace {

// The head's attention backend: dense, its own indexer (a one-layer LlamaDsaBackend), or a
// set shared from an earlier step or from the target.
class DraftBackend : public AttentionBackend {
 public:
  DraftBackend(const MtpHead& head, const SpeculativeOptions& o) : head_(head), o_(o) {
    const LlamaConfig& c = head.block_model().config();
    if (o.draft_attention == DraftAttention::kIndexer || o.draft_attention == DraftAttention::kShareStep0) {
      set_.cfg = head.weights().indexer->cfg;
      set_.layers = {head.weights().indexer};
      DsaOptions d;
      d.topk = o.topk;
      d.schedule = share::Schedule::all_full(1);
      d.indexers = &set_;
      d.capacity = o.capacity;
      dsa_ = std::make_unique<LlamaDsaBackend>(c, d);
    }
  }

  // Before each head forward: step 0 (catch-up rows) or a later draft step.
  void begin_step(bool step0) { step0_ = step0; }
  // kShareTarget: the target's sets for rows at positions pos0 .. pos0 + rows - 1.
  void add_target_sets(const DsaSharedTopk& s) {
    IS_CHECK(s.source >= 0 && s.rows > 0, "speculative: the target's DSA backend left no top-k (share-target)");
    const size_t k = static_cast<size_t>(o_.topk);
    IS_CHECK(s.indices.size() == static_cast<size_t>(s.rows) * k, "speculative: the target's top-k is ",
             s.indices.size() / std::max<int64_t>(1, s.rows), " wide, the draft's is ", k,
             " (share-target needs the same --dsa-topk)");
    for (int64_t r = 0; r < s.rows; ++r)
      target_sets_[s.pos0 + r].assign(s.indices.begin() + static_cast<ptrdiff_t>(r * k),
                                      s.indices.begin() + static_cast<ptrdiff_t>((r + 1) * k));
  }
  // Sets of positions < pos are no longer needed.
  void drop_target_sets_before(int64_t pos) { target_sets_.erase(target_sets_.begin(), target_sets_.lower_bound(pos)); }
  void begin_sequence() override {
    if (dsa_) dsa_->begin_sequence();
    target_sets_.clear();
    saved_.clear();
    saved_pos_ = -1;
  }
  int64_t indexer_calls = 0;

  bool attend(const AttentionCall& a) override {
    switch (o_.draft_attention) {
      case DraftAttention::kDense: return false;
      case DraftAttention::kIndexer: ++indexer_calls; return dsa_->attend(a);
      case DraftAttention::kShareStep0:
        if (step0_) {
          ++indexer_calls;
          dsa_->attend(a);
          const DsaSharedTopk s = dsa_->shared_topk();
          const size_t k = static_cast<size_t>(o_.topk);
          saved_.assign(s.indices.end() - static_cast<ptrdiff_t>(k), s.indices.end());
          saved_pos_ = a.pos0 + a.T - 1;
          return true;
        }
        return reuse(a, saved_, saved_pos_);
      case DraftAttention::kShareTarget: {
        if (step0_) {
          // Row i attends over the target's set for position i.
          const size_t k = static_cast<size_t>(o_.topk);
          rows_.assign(static_cast<size_t>(a.T) * k, -1);
          for (int64_t t = 0; t < a.T; ++t) {
            const auto it = target_sets_.find(a.pos0 + t);
            IS_CHECK(it != target_sets_.end(), "speculative: no target top-k for position ", a.pos0 + t);
            std::copy(it->second.begin(), it->second.end(), rows_.begin() + static_cast<ptrdiff_t>(t * k));
          }
          run_sparse(a, rows_, static_cast<int>(k));
          last_target_ = target_sets_.rbegin()->second;
          last_target_pos_ = target_sets_.rbegin()->first;
          return true;
        }
        return reuse(a, last_target_, last_target_pos_);
      }
    }
    return false;
  }

 private:
  // Rows after position `from`: the set chosen at `from` plus every position in (from, row].
  bool reuse(const AttentionCall& a, const std::vector<int32_t>& set, int64_t from) {
    run_sparse(a, rows_, reused_sets(set, from, a.pos0, a.T, rows_));
    return true;
  }
  void run_sparse(const AttentionCall& a, const std::vector<int32_t>& idx, int K) {
    sparse_attend(a, head_.block_model().config(), idx.data(), K);
  }

  const MtpHead& head_;
  SpeculativeOptions o_;
  IndexerSet set_;
  std::unique_ptr<LlamaDsaBackend> dsa_;
  bool step0_ = true;
  std::vector<int32_t> saved_, rows_, last_target_;
  int64_t saved_pos_ = -1, last_target_pos_ = -1;
  std::map<int64_t, std::vector<int32_t>> target_sets_;
};

// The Llama family: LlamaModel + KvCache + its attention backend, MtpHead + its own cache.
class LlamaPair : public SpecPair {
 public:
  LlamaPair(const LlamaModel& target, const MtpHead& head, AttentionBackend* target_backend, int64_t capacity)
      : target_(target), head_(head), target_backend_(target_backend), capacity_(capacity) {
    IS_CHECK(&head.base() == &target, "speculative: the MTP head was loaded for another model object");
    IS_CHECK(capacity > 0, "speculative: capacity must be > 0");
    tcache_.reset(target.config(), capacity);
    hcache_.reset(head.block_model().config(), capacity);
  }
  int64_t vocab() const override { return target_.config().vocab; }
  int64_t hidden_size() const override { return target_.config().d_model; }
  int64_t capacity() const override { return capacity_; }
  int64_t draft_vocab() const override { return head_.draft_vocab(); }
  int32_t draft_token(int32_t column) const override { return head_.token_of(column); }
  void configure(const SpeculativeOptions& o) override {
    check_draft_attention(o, head_, target_backend_);
    o_ = o;
    draft_ = std::make_unique<DraftBackend>(head_, o_);
  }
  void begin_sequence(int64_t keep) override {
    tcache_.length = 0;
    hcache_.clear();
    if (target_backend_) target_backend_->begin_sequence();
    draft_->begin_sequence();
    draft_->indexer_calls = 0;
    tcache_.length = keep;  // the cached rows beyond keep are overwritten as the sequence grows
  }
  int64_t target_length() const override { return tcache_.length; }
  void target_forward(const int32_t* tokens, int64_t T, bool all_logits, std::vector<float>& logits,
                      std::vector<float>& hidden) override {
    indexshare::model::target_forward(target_, tokens, T, tcache_, target_backend_, logits, hidden, all_logits);
  }
  void prefill_done(bool reused) override {
    auto* dsa = dynamic_cast<LlamaDsaBackend*>(target_backend_);
    if (!reused && dsa) prefill_sets_ = dsa->shared_topk();
    if (o_.draft_attention == DraftAttention::kShareTarget) draft_->add_target_sets(prefill_sets_);
  }
  void verified(int64_t m, int64_t kept) override {
    tcache_.length = m + kept;
    if (o_.draft_attention == DraftAttention::kShareTarget) {
      DsaSharedTopk s = dynamic_cast<LlamaDsaBackend*>(target_backend_)->shared_topk();
      s.rows = kept;
      s.indices.resize(static_cast<size_t>(s.rows) * static_cast<size_t>(o_.topk));
      draft_->drop_target_sets_before(m);
      draft_->add_target_sets(s);
    }
  }
  int64_t head_length() const override { return hcache_.length; }
  void head_forward(const float* h, const int32_t* next, int64_t T, bool step0, float* g_last,
                    float* logits_last) override {
    const int64_t d = hidden_size();
    g_.resize(static_cast<size_t>(T * d));
    draft_->begin_step(step0);
    head_.forward(h, next, T, hcache_, g_.data(), logits_last, 1, draft_.get());
    std::copy(g_.end() - d, g_.end(), g_last);
  }
  void head_rollback(int64_t length) override { hcache_.length = length; }
  int64_t draft_indexer_calls() const override { return draft_->indexer_calls; }

 private:
  const LlamaModel& target_;
  const MtpHead& head_;
  AttentionBackend* target_backend_;
  int64_t capacity_;
  SpeculativeOptions o_;
  std::unique_ptr<DraftBackend> draft_;
  KvCache tcache_, hcache_;
  DsaSharedTopk prefill_sets_;
  std::vector<float> g_;
};

}  // namespace

std::unique_ptr<SpecPair> make_llama_pair(const LlamaModel& target, const MtpHead& head, AttentionBackend* target_backend,
                                          int64_t capacity) {
  return std::make_unique<LlamaPair>(target, head, target_backend, capacity);
}

SpeculativeDecoder::SpeculativeDecoder(std::unique_ptr<SpecPair> pair, SpeculativeOptions o)
    : pair_(std::move(pair)), o_(o), rng_(o.seed) {
  IS_CHECK(o_.draft_tokens >= 1, "speculative: --draft must be >= 1, got ", o_.draft_tokens);
  IS_CHECK(o_.temperature >= 0.0f && std::isfinite(o_.temperature), "speculative: temperature must be >= 0, got ",
           o_.temperature);
  pair_->configure(o_);
}

SpeculativeDecoder::SpeculativeDecoder(const LlamaModel& target, const MtpHead& head, SpeculativeOptions o,
                                       AttentionBackend* target_backend)
    : SpeculativeDecoder(make_llama_pair(target, head, target_backend, o.capacity), o) {}

SpeculativeDecoder::~SpeculativeDecoder() = default;

std::vector<int32_t> SpeculativeDecoder::generate(std::span<const int32_t> prompt, int max_new,
                                                  const std::function<bool(int32_t)>& on_token) {
  IS_CHECK(!prompt.empty(), "speculative: the prompt is empty");
  IS_CHECK(max_new >= 0, "speculative: max_new must be >= 0");
  SpecPair& P = *pair_;
  const int N = o_.draft_tokens;
  const int64_t n = static_cast<int64_t>(prompt.size());
  IS_CHECK(n + max_new + N <= P.capacity(), "speculative: prompt (", n, ") + new tokens (", max_new, ") + draft (", N,
           ") exceed the capacity of ", P.capacity());
  const int64_t d = P.hidden_size(), V = P.vocab(), Vd = P.draft_vocab();
  const bool greedy = o_.temperature == 0.0f;
  stats_ = {};
  stats_.accepted_hist.assign(static_cast<size_t>(N + 1), 0);
  const bool reuse = last_prompt_.size() == prompt.size() && std::equal(prompt.begin(), prompt.end(), last_prompt_.begin());
  P.begin_sequence(reuse ? n : 0);

  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  std::vector<int32_t> out;
  std::vector<float> logits, hidden, pending_h;  // pending_h: hidden rows the head has not read (from head_length())
  std::vector<float> p(static_cast<size_t>(V)), g(static_cast<size_t>(d)), hl(static_cast<size_t>(Vd)),
      ql(static_cast<size_t>(Vd));
  std::vector<float> q(static_cast<size_t>(N) * V);
  bool stop = max_new == 0;
  auto emit = [&](int32_t t) {
    seq.push_back(t);
    out.push_back(t);
    if ((on_token && !on_token(t)) || t == o_.stop_token || static_cast<int>(out.size()) >= max_new) stop = true;
  };
  auto choose = [&](const float* row) -> int32_t {
    const std::span<const float> r(row, static_cast<size_t>(V));
    if (greedy) return greedy_token(r);
    softmax_t(r, o_.temperature, p);
    return sample_index(p, rng_);
  };

  auto t0 = std::chrono::steady_clock::now();
  if (reuse) {
    logits = last_logits_;
    hidden = last_hidden_;
  } else {
    last_prompt_.clear();
    P.prefill(seq.data(), n, logits, hidden);
    last_prompt_.assign(prompt.begin(), prompt.end());
    last_logits_ = logits;
    last_hidden_ = hidden;
  }
  P.prefill_done(reuse);
  pending_h = hidden;
  stats_.prefill_reused = reuse;
  stats_.prefill_seconds = seconds_since(t0);
  const auto t_gen = std::chrono::steady_clock::now();
  if (!stop) emit(choose(logits.data()));

  std::vector<int32_t> drafts(static_cast<size_t>(N)), verify(static_cast<size_t>(N + 1));
  while (!stop) {
    const int64_t m = P.target_length();  // seq[m] is the pending token
    // Never draft past the tokens still wanted.
    const int n_draft = static_cast<int>(std::min<int64_t>(N, max_new - static_cast<int64_t>(out.size())));
    // 1. The head catches up on rows head_length() .. m - 1 (true hidden states) and drafts d_1.
    t0 = std::chrono::steady_clock::now();
    const int64_t c0 = P.head_length(), rows = m - c0;
    IS_CHECK(rows >= 1 && static_cast<int64_t>(pending_h.size()) == rows * d, "speculative: internal state");
    P.head_forward(pending_h.data(), seq.data() + c0 + 1, rows, true, g.data(), hl.data());
    for (int j = 0; j < n_draft; ++j) {
      float* qj = q.data() + static_cast<size_t>(j) * V;
      // Logit column -> token id (a reduced draft vocabulary maps; q is zero outside it).
      if (greedy) {
        drafts[static_cast<size_t>(j)] = P.draft_token(greedy_token(hl));
      } else {
        softmax_t(hl, o_.temperature, ql);
        std::fill(qj, qj + V, 0.0f);
        for (int64_t i = 0; i < Vd; ++i) qj[P.draft_token(static_cast<int32_t>(i))] = ql[static_cast<size_t>(i)];
        drafts[static_cast<size_t>(j)] = P.draft_token(sample_index(ql, rng_));
      }
      if (j + 1 == n_draft) break;
      const int32_t next = drafts[static_cast<size_t>(j)];
      P.head_forward(g.data(), &next, 1, false, g.data(), hl.data());
    }
    P.head_rollback(m);  // draft rows are rewritten from true hidden states next round
    stats_.draft_seconds += seconds_since(t0);
    stats_.draft_indexer_calls = P.draft_indexer_calls();
    stats_.drafted += n_draft;

    // 2. The target scores [pending, d_1 .. d_n] in one forward.
    t0 = std::chrono::steady_clock::now();
    verify[0] = seq[static_cast<size_t>(m)];
    std::copy(drafts.begin(), drafts.begin() + n_draft, verify.begin() + 1);
    P.target_forward(verify.data(), n_draft + 1, true, logits, hidden);
    stats_.target_seconds += seconds_since(t0);

    // 3. Accept the longest agreeing prefix, then the target's own token.
    int a = 0;
    int32_t next = -1;
    for (; a < n_draft; ++a) {
      const float* row = logits.data() + static_cast<size_t>(a) * V;
      const int32_t dj = drafts[static_cast<size_t>(a)];
      if (greedy) {
        const int32_t t = greedy_token(std::span<const float>(row, static_cast<size_t>(V)));
        if (t != dj) {
          next = t;
          break;
        }
      } else {
        softmax_t(std::span<const float>(row, static_cast<size_t>(V)), o_.temperature, p);
        const VerifyResult r = verify_draft_token(p, std::span<const float>(q.data() + static_cast<size_t>(a) * V, static_cast<size_t>(V)), dj, rng_);
        if (!r.accepted) {
          next = r.token;
          break;
        }
      }
    }
    if (a == n_draft) next = choose(logits.data() + static_cast<size_t>(n_draft) * V);
    ++stats_.rounds;
    stats_.accepted += a;
    ++stats_.accepted_hist[static_cast<size_t>(a)];
    // Rows m .. m + a are verified; later rows are rolled back.
    P.verified(m, a + 1);
    pending_h.assign(hidden.begin(), hidden.begin() + static_cast<ptrdiff_t>((a + 1) * d));
    const size_t before = out.size();
    for (int j = 0; j < a && !stop; ++j) emit(drafts[static_cast<size_t>(j)]);
    if (!stop) emit(next);
    stats_.emitted += static_cast<int64_t>(out.size() - before);
  }
  stats_.generate_seconds = seconds_since(t_gen);
  return out;
}

void SpeculativeDecoder::set_draft(int draft_tokens, DraftAttention attention) {
  SpeculativeOptions o = o_;
  o.draft_tokens = draft_tokens;
  o.draft_attention = attention;
  IS_CHECK(draft_tokens >= 1, "speculative: --draft must be >= 1, got ", draft_tokens);
  pair_->configure(o);
  o_ = o;
}

std::vector<int32_t> plain_decode(const LlamaModel& target, std::span<const int32_t> prompt, int max_new, float temperature,
                                  uint64_t seed, int64_t capacity, AttentionBackend* backend, int32_t stop_token,
                                  PlainStats* stats) {
  IS_CHECK(!prompt.empty(), "plain decode: the prompt is empty");
  IS_CHECK(static_cast<int64_t>(prompt.size()) + max_new <= capacity, "plain decode: prompt + new tokens exceed the capacity");
  const int64_t V = target.config().vocab;
  KvCache cache;
  cache.reset(target.config(), capacity);
  if (backend) backend->begin_sequence();
  std::vector<float> logits(static_cast<size_t>(V)), p(static_cast<size_t>(V));
  std::mt19937_64 rng(seed);
  auto choose = [&]() -> int32_t {
    if (temperature == 0.0f) return greedy_token(logits);
    softmax_t(logits, temperature, p);
    return sample_index(p, rng);
  };
  auto t0 = std::chrono::steady_clock::now();
  target.forward(prompt.data(), static_cast<int64_t>(prompt.size()), cache, logits.data(), false, backend);
  if (stats) stats->prefill_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < max_new) {
    const int32_t t = choose();
    out.push_back(t);
    if (t == stop_token || static_cast<int>(out.size()) == max_new) break;
    target.forward(&t, 1, cache, logits.data(), false, backend);
  }
  if (stats) stats->decode_seconds = seconds_since(t0);
  return out;
}

}  // namespace indexshare::model

// The GLM-MoE-DSA / DeepSeek-V3.2 side of speculative decoding (model/speculative.h): the
// target is GlmDsaModel::forward, the head its nextn layer (GlmDsaModel::mtp_forward). Both write
// their caches by position through the one sequence's page table, so rollbacks are lengths.
#include <algorithm>
#include <map>

#include "core/error.h"
#include "model/glm_dsa.h"
#include "model/speculative.h"

namespace indexshare::model {
namespace {

class GlmPair : public SpecPair {
 public:
  explicit GlmPair(GlmDsaModel& m) : m_(m), cache_(m.new_cache()) {
    IS_CHECK(m.has_mtp(), "speculative: the model has no MTP layer loaded (load it with ModelOptions::mtp / --mtp; "
             "its config.json needs num_nextn_predict_layers >= 1)");
    for (int l = 0; l < m.config().num_layers; ++l)
      if (m.config().schedule.is_full(l)) last_full_ = l;
  }
  int64_t vocab() const override { return m_.config().vocab_size; }
  int64_t hidden_size() const override { return m_.config().hidden_size; }
  int64_t capacity() const override {
    return m_.free_tokens() + static_cast<int64_t>(cache_.pages.size()) * backend::kPageTokens;
  }
  void configure(const SpeculativeOptions& o) override {
    if (o.draft_attention == DraftAttention::kIndexer || o.draft_attention == DraftAttention::kShareStep0)
      IS_CHECK(m_.mtp_has_indexer(), "speculative: draft attention '", draft_attention_name(o.draft_attention),
               "' runs the MTP layer's own indexer, but the checkpoint's MTP layer has none");
    IS_CHECK(o.topk == 0 || o.topk == m_.config().index_topk, "speculative: the MTP layer selects index_topk = ",
             m_.config().index_topk, " keys (the model's); --draft-topk ", o.topk, " differs");
    mode_ = o.draft_attention;
  }
  void begin_sequence(int64_t keep) override {
    if (keep == 0) {
      cache_ = m_.new_cache();
      target_sets_.clear();
    } else {
      m_.truncate(cache_, keep);
      target_sets_.clear();  // the head's first catch-up row is the prompt's last
      IS_CHECK(!prompt_last_set_.empty(), "speculative: the reused prefill kept no set of its last row");
      if (mode_ == DraftAttention::kShareTarget) target_sets_[keep - 1] = prompt_last_set_;
    }
    // prefill() left the head's rows 0 .. keep - 2 (written by position, never rolled back
    // below keep - 1 since).
    head_len_ = keep > 0 ? keep - 1 : 0;
    indexer_calls_ = 0;
    saved_.clear();
    saved_pos_ = -1;
  }
  int64_t target_length() const override { return cache_.length; }
  void target_forward(const int32_t* tokens, int64_t T, bool all_logits, std::vector<float>& logits,
                      std::vector<float>& hidden) override {
    ForwardOptions opt;
    opt.logits = all_logits ? LogitRows::kAll : LogitRows::kLast;
    opt.last_rows = 1;
    opt.hidden = &hidden;
    logits = run_target(tokens, T, opt, mode_ == DraftAttention::kShareTarget);
  }
  // The target in chunks of max_step_rows; after each, the head reads the chunk's rows but the
  // last (row i needs x_{i+1}, the next chunk's first token): host memory is one chunk of hidden
  // rows, not [n, hidden] (a 1M-token prompt would need 24 GB of it at GLM-5's width).
  void prefill(const int32_t* tokens, int64_t n, std::vector<float>& logits, std::vector<float>& pending) override {
    const int64_t d = hidden_size(), chunk = m_.options().max_step_rows;
    IS_CHECK(cache_.length == 0 && head_len_ == 0, "speculative: prefill on a non-empty sequence");
    std::vector<float> h, rows, g(static_cast<size_t>(d)), hl(static_cast<size_t>(vocab()));
    for (int64_t a = 0; a < n; a += chunk) {
      const int64_t b = std::min(n, a + chunk);
      ForwardOptions opt;
      opt.logits = b == n ? LogitRows::kLast : LogitRows::kNone;
      opt.hidden = &h;
      // The last chunk's sets are kept whatever the rule: a later call may reuse this prefill
      // under share-target.
      std::vector<float> l = run_target(tokens + a, b - a, opt, mode_ == DraftAttention::kShareTarget || b == n);
      if (b == n) logits = std::move(l);
      // Head rows head_len_ .. b - 2: the carried row (a - 1) and this chunk's rows but its last.
      rows.insert(rows.end(), h.begin(), h.end());
      const int64_t T = b - 1 - head_len_;
      if (T > 0) {
        head_forward(rows.data(), tokens + head_len_ + 1, T, true, g.data(), hl.data());
        rows.erase(rows.begin(), rows.begin() + static_cast<ptrdiff_t>(T * d));
      }
    }
    pending = std::move(rows);  // row n - 1
    indexer_calls_ = 0;          // counts draft steps, not the prompt's
    prompt_last_set_ = target_sets_.at(n - 1);
    if (mode_ != DraftAttention::kShareTarget) target_sets_.clear();
  }
  void prefill_done(bool) override {}
  void verified(int64_t m, int64_t kept) override {
    m_.truncate(cache_, m + kept);
    target_sets_.erase(target_sets_.lower_bound(m + kept), target_sets_.end());
  }
  int64_t head_length() const override { return head_len_; }
  void head_forward(const float* h, const int32_t* next, int64_t T, bool step0, float* g_last,
                    float* logits_last) override {
    const int64_t d = hidden_size();
    const auto K = static_cast<size_t>(m_.config().index_topk);
    // Dense sets are [rows, position + 1]: at most 16M entries a chunk. Rows the model takes in one
    // step otherwise (a long prompt's catch-up); only the last chunk's last row is read.
    const int64_t cap = mode_ == DraftAttention::kDense ? std::max<int64_t>(1, (int64_t{1} << 24) / (head_len_ + T)) : T;
    const int64_t chunk = std::max<int64_t>(1, std::min(m_.options().max_step_rows, cap));
    MtpOutput out;
    bool ran = false;
    for (int64_t r0 = 0; r0 < T; r0 += chunk) {
      const int64_t n = std::min(chunk, T - r0);
      MtpCall c;
      c.pos0 = head_len_;
      c.T = n;
      c.hidden = h + r0 * d;
      c.next = next + r0;
      c.logit_rows = r0 + n == T ? 1 : 0;
      const bool own = mode_ == DraftAttention::kIndexer || (mode_ == DraftAttention::kShareStep0 && step0);
      if (mode_ == DraftAttention::kShareTarget && step0) {
        // Row i attends over the set the target's last F layer chose for row i.
        sets_.resize(static_cast<size_t>(n) * K);
        for (int64_t t = 0; t < n; ++t) {
          const auto it = target_sets_.find(c.pos0 + t);
          IS_CHECK(it != target_sets_.end(), "speculative: no target top-k for position ", c.pos0 + t);
          std::copy(it->second.begin(), it->second.end(), sets_.begin() + static_cast<ptrdiff_t>(t * K));
        }
        c.sets = sets_.data();
        c.set_width = static_cast<int>(K);
      } else if (mode_ == DraftAttention::kDense) {
        // Every position up to the row.
        const int64_t width = c.pos0 + n;
        sets_.assign(static_cast<size_t>(n * width), -1);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t s = 0; s <= c.pos0 + t; ++s) sets_[static_cast<size_t>(t * width + s)] = static_cast<int32_t>(s);
        c.sets = sets_.data();
        c.set_width = static_cast<int>(width);
      } else if (!own) {
        // After step 0 (share-step0, share-target): the saved set plus the positions after the
        // row that chose it.
        c.set_width = reused_sets(saved_, saved_pos_, c.pos0, n, sets_);
        c.sets = sets_.data();
      }
      out = m_.mtp_forward(cache_, c);
      ran = ran || out.indexer_ran;
      head_len_ += n;
    }
    if (ran) ++indexer_calls_;
    if (step0 && mode_ == DraftAttention::kShareStep0) {
      saved_.assign(out.topk.end() - static_cast<ptrdiff_t>(K), out.topk.end());
      saved_pos_ = head_len_ - 1;
    } else if (step0 && mode_ == DraftAttention::kShareTarget) {
      saved_pos_ = head_len_ - 1;
      saved_ = target_sets_.at(saved_pos_);
      target_sets_.erase(target_sets_.begin(), target_sets_.lower_bound(saved_pos_));  // read
    }
    std::copy(out.g.end() - d, out.g.end(), g_last);
    std::copy(out.logits.begin(), out.logits.end(), logits_last);
  }
  void head_rollback(int64_t length) override { head_len_ = length; }
  int64_t draft_indexer_calls() const override { return indexer_calls_; }

 private:
  // The target forward; share-target keeps its last F layer's sets of the rows, by position.
  std::vector<float> run_target(const int32_t* tokens, int64_t T, ForwardOptions& opt, bool capture) {
    ForwardTrace tr;
    if (capture) {
      opt.capture_topk = true;
      opt.capture_topk_layer = last_full_;
    }
    const int64_t pos0 = cache_.length;
    std::vector<float> logits = m_.forward(cache_, std::span<const int32_t>(tokens, static_cast<size_t>(T)), opt,
                                           capture ? &tr : nullptr);
    if (capture) {
      const auto K = static_cast<size_t>(m_.config().index_topk);
      const auto& s = tr.topk[static_cast<size_t>(last_full_)];
      IS_CHECK(s.size() == static_cast<size_t>(T) * K, "speculative: the target left ", s.size(), " set entries for ",
               T, " rows");
      for (int64_t t = 0; t < T; ++t)
        target_sets_[pos0 + t].assign(s.begin() + static_cast<ptrdiff_t>(t * K),
                                      s.begin() + static_cast<ptrdiff_t>((t + 1) * K));
    }
    return logits;
  }

  GlmDsaModel& m_;
  GlmDsaCache cache_;
  DraftAttention mode_ = DraftAttention::kIndexer;
  int last_full_ = 0;  // the target's last F layer (share-target)
  int64_t head_len_ = 0, indexer_calls_ = 0;
  std::vector<int32_t> saved_, sets_;
  int64_t saved_pos_ = -1;
  std::map<int64_t, std::vector<int32_t>> target_sets_;  // share-target: position -> the target's set
  std::vector<int32_t> prompt_last_set_;                  // the target's set of the prompt's last row
};

}  // namespace

std::unique_ptr<SpecPair> make_glm_pair(GlmDsaModel& model) { return std::make_unique<GlmPair>(model); }

}  // namespace indexshare::model

// The GLM-MoE-DSA / DeepSeek-V3.2 side of speculative decoding (model/speculative.h): the
// target is GlmDsaModel::forward, the head its nextn layer (GlmDsaModel::mtp_forward). Both write
// their caches by position through the one sequence's page table, so rollbacks are lengths.
#include <algorithm>

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
  }
  int64_t vocab() const override { return m_.config().vocab_size; }
  int64_t hidden_size() const override { return m_.config().hidden_size; }
  int64_t capacity() const override {
    return m_.free_tokens() + static_cast<int64_t>(cache_.pages.size()) * backend::kPageTokens;
  }
  void configure(const SpeculativeOptions& o) override {
    IS_CHECK(o.draft_attention != DraftAttention::kShareTarget,
             "speculative: draft attention 'share-target' is implemented for the Llama family only; this "
             "GLM-MoE-DSA / DeepSeek-V3.2 model's MTP layer runs dense, indexer or share-step0");
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
    } else {
      m_.truncate(cache_, keep);
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
    logits = m_.forward(cache_, std::span<const int32_t>(tokens, static_cast<size_t>(T)), opt);
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
      std::vector<float> l = m_.forward(cache_, std::span<const int32_t>(tokens + a, static_cast<size_t>(b - a)), opt);
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
  }
  void prefill_done(bool) override {}
  void verified(int64_t m, int64_t kept) override { m_.truncate(cache_, m + kept); }
  int64_t head_length() const override { return head_len_; }
  void head_forward(const float* h, const int32_t* next, int64_t T, bool step0, float* g_last,
                    float* logits_last) override {
    const int64_t d = hidden_size();
    // Rows in chunks the model takes in one step (a long prompt's catch-up); only the last
    // chunk's last row is read.
    // Dense sets are [rows, position + 1]: at most 16M entries a chunk.
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
      if (!own) {
        // kDense: every position up to the row; kShareStep0 after step 0: the saved set plus
        // the positions after the row that chose it.
        const bool dense = mode_ == DraftAttention::kDense;
        const int64_t last = c.pos0 + n - 1;
        const int64_t width = dense ? last + 1 : static_cast<int64_t>(saved_.size()) + std::max<int64_t>(0, last - saved_pos_);
        IS_CHECK(dense || saved_pos_ >= 0, "speculative: a later draft step ran before step 0");
        sets_.assign(static_cast<size_t>(n * width), -1);
        for (int64_t t = 0; t < n; ++t) {
          int32_t* r = sets_.data() + t * width;
          const int64_t pos = c.pos0 + t;
          int64_t j = 0;
          if (dense) {
            for (int64_t s = 0; s <= pos; ++s) r[j++] = static_cast<int32_t>(s);
          } else {
            for (int32_t s : saved_) r[j++] = s;
            for (int64_t s = saved_pos_ + 1; s <= pos; ++s) r[j++] = static_cast<int32_t>(s);
          }
        }
        c.sets = sets_.data();
        c.set_width = static_cast<int>(width);
      }
      out = m_.mtp_forward(cache_, c);
      ran = ran || out.indexer_ran;
      head_len_ += n;
    }
    if (ran) ++indexer_calls_;
    if (mode_ == DraftAttention::kShareStep0 && step0) {
      const auto K = static_cast<size_t>(m_.config().index_topk);
      saved_.assign(out.topk.end() - static_cast<ptrdiff_t>(K), out.topk.end());
      saved_pos_ = head_len_ - 1;
    }
    std::copy(out.g.end() - d, out.g.end(), g_last);
    std::copy(out.logits.begin(), out.logits.end(), logits_last);
  }
  void head_rollback(int64_t length) override { head_len_ = length; }
  int64_t draft_indexer_calls() const override { return indexer_calls_; }

 private:
  GlmDsaModel& m_;
  GlmDsaCache cache_;
  DraftAttention mode_ = DraftAttention::kIndexer;
  int64_t head_len_ = 0, indexer_calls_ = 0;
  std::vector<int32_t> saved_, sets_;
  int64_t saved_pos_ = -1;
};

}  // namespace

std::unique_ptr<SpecPair> make_glm_pair(GlmDsaModel& model) { return std::make_unique<GlmPair>(model); }

}  // namespace indexshare::model

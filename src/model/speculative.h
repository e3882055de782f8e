// Speculative decoding with an MTP head as the drafter: a Llama model with model/mtp.h's head
// (CPU), or a GLM-MoE-DSA / DeepSeek-V3.2 model with its own nextn layer (GlmDsaModel::mtp_forward,
// any backend). The loop is written once over SpecPair; each family adapts its target and head.
//
// Each round: the MTP head catches up on the positions the target has verified since the last
// round (their true hidden states), drafts N tokens (the first from that catch-up, the rest by
// applying the head to its own output), and the target scores the pending token and the N drafts
// in one forward. Greedy: a draft is accepted while it equals the target's argmax (lower id on
// ties, as model::Sampler); the first mismatch, or the row after the last draft, gives the target's
// own token. Sampling (temperature > 0): draft d_j ~ q_j is kept with probability
// min(1, p_j(d_j) / q_j(d_j)), a rejection draws from norm(max(0, p_j - q_j)) (Leviathan et al.,
// Chen et al. 2023), so every emitted token is distributed as the target alone would give it.
// Rejected rows are rolled back by cache length: the target's KV cache, its DSA backend's
// indexer-K cache and the head's cache are written by position, so the next round overwrites them.
//
// The head's attention (DraftAttention):
//   kDense       dense causal attention over the head's KV cache;
//   kIndexer     DSA with the head's own lightning indexer at every draft step (top-k `topk`);
//   kShareStep0  the indexer runs at the round's first draft step (the catch-up rows, whose last
//                row drafts d_1); later steps reuse that row's top-k plus the positions after it
//                (vLLM's index_share_for_mtp_iteration rule);
//   kShareTarget no draft indexer: each catch-up row i uses the top-k the target's last F layer
//                chose for row i; later steps reuse the last verified row's set plus the positions
//                after it (a Llama target needs a LlamaDsaBackend; a GLM target keeps its last F
//                layer's sets of the rows the head has not read).
// Below `topk` keys every mode is dense.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include "model/llama_dsa.h"
#include "model/llama_model.h"
#include "model/mtp.h"
#include "model/sampler.h"

namespace indexshare::model {

class GlmDsaModel;

enum class DraftAttention { kDense, kIndexer, kShareStep0, kShareTarget };
const char* draft_attention_name(DraftAttention a);  // "dense", "indexer", "share-step0", "share-target"
// The inverse of draft_attention_name; Error listing the names otherwise.
DraftAttention parse_draft_attention(std::string_view s);

struct SpeculativeOptions {
  int draft_tokens = 3;       // N >= 1
  float temperature = 0.0f;   // 0 = greedy
  uint64_t seed = 0;
  DraftAttention draft_attention = DraftAttention::kDense;
  int topk = 0;               // the draft's DSA top-k (Llama heads, every mode but kDense; GLM heads use the model's index_topk)
  int64_t capacity = 0;       // tokens per sequence (prompt + generated + N; Llama)
  int32_t stop_token = -1;    // generation ends after emitting it (-1: none)
};

struct SpeculativeStats {
  int64_t rounds = 0;            // target verification forwards
  int64_t drafted = 0;           // draft tokens proposed
  int64_t accepted = 0;          // draft tokens accepted
  int64_t emitted = 0;           // tokens emitted by the rounds (accepted + the target's own)
  std::vector<int64_t> accepted_hist;  // [N + 1]: rounds by number of accepted drafts
  int64_t draft_indexer_calls = 0;     // draft steps that ran the head's indexer
  bool prefill_reused = false;   // the prompt was the previous call's: its prefill was kept
  double prefill_seconds = 0.0, target_seconds = 0.0, draft_seconds = 0.0;
  double generate_seconds = 0.0;  // wall time after the prefill (every round, all overheads)
  // Tokens per target forward (each round emits accepted + 1).
  double acceptance_length() const { return rounds > 0 ? static_cast<double>(emitted) / rounds : 0.0; }
};

// One verification position under sampling: target probabilities p, draft probabilities q
// (each [V], summing to 1), the draft token d (drawn from q). Accepts d with probability
// min(1, p[d] / q[d]); otherwise draws from max(0, p - q) renormalised (from p if that is all
// zero, which only happens when p == q).
struct VerifyResult {
  bool accepted = false;
  int32_t token = -1;
};
VerifyResult verify_draft_token(std::span<const float> p, std::span<const float> q, int32_t d, std::mt19937_64& rng);
// A draw from probabilities p (summing to 1).
int32_t sample_index(std::span<const float> p, std::mt19937_64& rng);
// The sets of a later draft step that reuses an earlier step's set (share-step0, share-target):
// rows at positions pos0 .. pos0 + T - 1 each attend over `set` (chosen for the row at position
// `from`, -1 entries allowed) plus every position in (from, row]. Writes rows [T, width] (-1
// padded) and returns width = |set| + max(0, pos0 + T - 1 - from). Error if from < 0.
int reused_sets(std::span<const int32_t> set, int64_t from, int64_t pos0, int64_t T, std::vector<int32_t>& rows);
// softmax(logits / temperature) into p.
void softmax_t(std::span<const float> logits, float temperature, std::span<float> p);

// What the speculative loop drives: a target model and its MTP head, of one model family. The
// loop (SpeculativeDecoder) is written once over this; make_llama_pair and make_glm_pair adapt
// the two families. Positions are those of one sequence; caches are written by position, so a
// rollback is a length.
class SpecPair {
 public:
  virtual ~SpecPair() = default;
  virtual int64_t vocab() const = 0;
  virtual int64_t hidden_size() const = 0;
  virtual int64_t capacity() const = 0;  // tokens one sequence may hold
  virtual int64_t draft_vocab() const { return vocab(); }
  virtual int32_t draft_token(int32_t column) const { return column; }  // logit column -> id
  // Checks and takes the options (draft attention and top-k); Error naming what cannot run.
  virtual void configure(const SpeculativeOptions& o) = 0;
  // A new sequence: the target keeps its first `keep` positions (a reused prefill) or none; the
  // head forgets what prefill() did not leave it for those positions.
  virtual void begin_sequence(int64_t keep) = 0;
  virtual int64_t target_length() const = 0;
  // T tokens at positions target_length() ..: logits of every row (all_logits) or of the last,
  // and every row's final hidden state after the final norm [T, hidden].
  virtual void target_forward(const int32_t* tokens, int64_t T, bool all_logits, std::vector<float>& logits,
                              std::vector<float>& hidden) = 0;
  // The prompt's prefill: the target runs the n tokens (logits of the last row) and `pending` gets
  // the hidden rows the head has not read yet, [n - head_length(), hidden]. By default the head
  // reads none of them here (pending = every row); a pair may run the head's catch-up over rows
  // 0 .. n - 2 chunk by chunk as the target goes (so no [n, hidden] buffer exists) and return
  // only the last row.
  virtual void prefill(const int32_t* tokens, int64_t n, std::vector<float>& logits, std::vector<float>& pending) {
    target_forward(tokens, n, false, logits, pending);
  }
  // The prompt's prefill has run (or was reused): the target's state for the head (share-target).
  virtual void prefill_done(bool reused) = 0;
  // Of the last verification forward (which started at position m), rows [m, m + kept) are kept;
  // the target rolls back to m + kept.
  virtual void verified(int64_t m, int64_t kept) = 0;
  virtual int64_t head_length() const = 0;
  // Head rows at head_length() ..: h [T, hidden], next [T]. step0: the round's first call (the
  // catch-up rows, true hidden states); else one drafted row. Writes the last row's g [hidden]
  // and logits [draft_vocab].
  virtual void head_forward(const float* h, const int32_t* next, int64_t T, bool step0, float* g_last,
                            float* logits_last) = 0;
  virtual void head_rollback(int64_t length) = 0;
  virtual int64_t draft_indexer_calls() const = 0;  // head steps that ran the head's own indexer
};

// The Llama family: target (with its attention backend: nullptr = dense; kShareTarget needs a
// LlamaDsaBackend) and an MtpHead loaded for it; capacity from the options.
std::unique_ptr<SpecPair> make_llama_pair(const LlamaModel& target, const MtpHead& head, AttentionBackend* target_backend,
                                          int64_t capacity);

// The GLM-MoE-DSA / DeepSeek-V3.2 family: the model (loaded with ModelOptions::mtp) drafts with
// its own nextn layer (GlmDsaModel::mtp_forward), on the model's backend. Draft attention:
// kIndexer (the layer's indexer, index_topk, at every step), kShareStep0 (at the round's first
// step; later steps reuse that row's set plus the newer positions), kShareTarget (the target's
// last F layer's sets), kDense (every position). Capacity: the model's max_tokens.
std::unique_ptr<SpecPair> make_glm_pair(GlmDsaModel& model);

class SpeculativeDecoder {
 public:
  SpeculativeDecoder(std::unique_ptr<SpecPair> pair, SpeculativeOptions o);
  // The Llama family (make_llama_pair with o.capacity).
  SpeculativeDecoder(const LlamaModel& target, const MtpHead& head, SpeculativeOptions o,
                     AttentionBackend* target_backend = nullptr);
  ~SpeculativeDecoder();

  // Prefills the prompt (>= 1 token) and generates up to max_new tokens (fewer after the stop
  // token). on_token (optional) sees each emitted token in order; returning false stops.
  // When the prompt equals the previous call's, its prefill (the target's caches up to the
  // prompt, the last logits, the hidden rows) is reused: the output is the same either way.
  std::vector<int32_t> generate(std::span<const int32_t> prompt, int max_new,
                                const std::function<bool(int32_t)>& on_token = {});
  const SpeculativeStats& stats() const { return stats_; }
  // Another draft length / draft attention for the next calls (the prefill stays reusable).
  void set_draft(int draft_tokens, DraftAttention attention);

 private:
  std::unique_ptr<SpecPair> pair_;
  SpeculativeOptions o_;
  SpeculativeStats stats_;
  std::mt19937_64 rng_;
  // The last prompt's prefill.
  std::vector<int32_t> last_prompt_;
  std::vector<float> last_logits_, last_hidden_;
};

// Plain decoding for comparison (the same sampling rule as the speculative path's target: greedy
// or softmax at `temperature`): prefill, then one forward per token.
struct PlainStats {
  double prefill_seconds = 0.0, decode_seconds = 0.0;
};
std::vector<int32_t> plain_decode(const LlamaModel& target, std::span<const int32_t> prompt, int max_new, float temperature,
                                  uint64_t seed, int64_t capacity, AttentionBackend* backend = nullptr,
                                  int32_t stop_token = -1, PlainStats* stats = nullptr);

}  // namespace indexshare::model

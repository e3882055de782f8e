// A multi-token-prediction (MTP) head for a Llama-family model: one extra module, as in
// DeepSeek-V3, that predicts the token after next. At row i it reads h_i, the base model's final
// hidden state after its final norm (as vLLM and SGLang pass it), and x_{i+1}, the next token:
//
//   u_i      = eh_proj · [enorm(embed(x_{i+1})) ; hnorm(h_i)]     eh_proj [d, 2d]
//   v        = block(u)     one Llama decoder layer at RoPE position i, causal over the MTP rows,
//                           with its own KV cache (block_model()'s one layer)
//   g_i      = shared_head_norm(v_i)
//   logits_i = output · g_i  (the base model's LM head)  -> a draft for x_{i+2}
//
// The embedding and the LM head are the base model's. For drafting further ahead, g_i takes the
// place of h_i at the next row (the module applied recursively, as vLLM does with one module).
// The block runs on the engine's own layer code: a one-layer LlamaModel over the base model's
// embedding and head, so an AttentionBackend (DSA, sharing) plugs in as for the base model.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "model/learned_indexer.h"
#include "model/llama_model.h"
#include "ops/quant.h"

namespace indexshare::model {

struct MtpWeights {
  std::vector<float> enorm, hnorm, shared_head_norm;  // [d]
  QMatrix eh_proj;                                    // [d, 2d]: columns [0, d) read the embedding
  LlamaLayerWeights block;                            // the decoder layer (Q/K rows in GGUF layout)
  std::optional<LearnedIndexerWeights> indexer;       // the block's own lightning indexer, if any
  // Every token id, most frequent first in the head's training text (empty: not recorded). The
  // first V' of them are a reduced draft vocabulary (see MtpHead).
  std::vector<int32_t> vocab_by_frequency;
  std::shared_ptr<const void> storage;                // keeps the memory the views point into
};

// A reduced draft vocabulary (draft_vocab > 0): the head's logits cover only the draft_vocab
// most frequent tokens (the first entries of vocab_by_frequency), the rows of the LM head gathered
// once; a small head's cost is mostly its LM head, and this cuts it by V / V' (FR-Spec, Zhao et
// al. 2025; EAGLE-3 drafts over a reduced vocabulary too). The target still verifies over the
// whole vocabulary, so outputs are unchanged: a token outside the subset is never drafted.
class MtpHead {
 public:
  // Checks every shape against the base model (Error naming the tensor). draft_vocab: 0 (or the
  // model's vocabulary size) = every token; else 1 .. vocab, and the weights must record
  // vocab_by_frequency. q8_0: the block's and eh_proj's matrices are requantised to Q8_0 once
  // (as llama.cpp would serve a draft model; half the bytes of F16 and the integer kernels);
  // every K must then be a multiple of 32.
  MtpHead(const LlamaModel& base, MtpWeights w, int draft_vocab = 0, bool q8_0 = false);

  // The block as a one-layer model: reset its KvCache with block_model().config(), build DSA
  // backends for it with it.
  const LlamaModel& block_model() const { return *block_; }
  const LlamaModel& base() const { return base_; }
  const MtpWeights& weights() const { return w_; }
  bool has_indexer() const { return w_.indexer.has_value(); }
  // Tokens the head's logits cover (the model's vocabulary size unless reduced) and the token id
  // of logit column i.
  int draft_vocab() const { return block_->config().vocab; }
  int32_t token_of(int32_t column) const {
    return ids_.empty() ? column : ids_[static_cast<size_t>(column)];
  }

  // Rows i = pos0 .. pos0 + T - 1 with pos0 = cache.length: h [T, d] the hidden state each row
  // reads, next [T] the token x_{i+1}. Appends the rows' K/V to `cache` (block_model()'s) and
  // writes g [T, d] (nullable) and the logits of the last `logit_rows` rows
  // ([logit_rows, draft_vocab()] over the columns token_of() maps; nullable when logit_rows is 0).
  void forward(const float* h, const int32_t* next, int64_t T, KvCache& cache, float* g, float* logits,
               int64_t logit_rows, AttentionBackend* backend = nullptr) const;

 private:
  const LlamaModel& base_;
  MtpWeights w_;
  std::vector<int32_t> ids_;          // the draft vocabulary (empty: all tokens)
  std::vector<uint8_t> head_rows_;    // the LM head rows of ids_, gathered
  std::vector<std::vector<ops::BlockQ8_0>> q8_;  // requantised matrices (q8_0)
  std::unique_ptr<LlamaModel> block_;
};

// The base model's final hidden rows after its final norm: y [rows, d] from x [rows, d] (what
// forward_layers leaves after the last layer). y may alias x.
void final_norm(const LlamaModel& m, const float* x, int64_t rows, float* y);

}  // namespace indexshare::model

// Perplexity over fixed-size windows, computed as llama.cpp's llama-perplexity does: the token
// stream is cut into consecutive windows of `ctx` tokens; each window is evaluated from an empty
// cache (its first token replaced by BOS when the model adds one), and only the predictions of
// the second half of the window are scored (positions [ctx/2, ctx-1) predicting the next token),
// so every scored token has at least ctx/2 tokens of context.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/llama_model.h"

namespace indexshare::eval {

struct PerplexityOptions {
  int64_t ctx = 512;
  int64_t max_windows = 0;  // 0 = every whole window in the text
  int64_t first = -1;       // first scored position; -1 = ctx / 2
  int32_t bos = -1;         // >= 0: replace each window's first token by it
  model::KvType kv = model::KvType::kF16;
  bool keep_tokens = false;  // fill PerplexityResult::token_nll / token_top1
};

struct PerplexityResult {
  double ppl = 0.0;
  double mean_nll = 0.0;
  int64_t windows = 0;
  int64_t scored = 0;
  std::vector<double> running_ppl;  // after each window, as llama-perplexity prints
  double seconds = 0.0;
  double tokens_per_second = 0.0;   // tokens evaluated (windows * ctx) per second
  // With keep_tokens, per scored prediction (window-major, positions first .. ctx-2): its negative
  // log-likelihood, and whether the target is the row's arg-max (the lowest id among equal maxima).
  std::vector<float> token_nll;
  std::vector<uint8_t> token_top1;
};

// progress(done_windows, total_windows, running_ppl) after each window; may be empty.
PerplexityResult perplexity(const model::LlamaModel& m, std::span<const int32_t> tokens, const PerplexityOptions& o,
                            model::AttentionBackend* backend = nullptr,
                            const std::function<void(int64_t, int64_t, double)>& progress = {});

// log-softmax of one row evaluated at `target` (stable; double accumulation).
double log_prob(std::span<const float> logits, int32_t target);

}  // namespace indexshare::eval

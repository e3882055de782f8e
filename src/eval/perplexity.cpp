#include "eval/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"

namespace indexshare::eval {

double log_prob(std::span<const float> logits, int32_t target) {
  IS_CHECK(target >= 0 && static_cast<size_t>(target) < logits.size(), "log_prob: target ", target, " outside [0, ",
           logits.size(), ")");
  float mx = logits[0];
  for (float v : logits) mx = std::max(mx, v);
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v - mx));
  IS_CHECK(std::isfinite(sum), "log_prob: logits are not finite");
  return static_cast<double>(logits[static_cast<size_t>(target)] - mx) - std::log(sum);
}

PerplexityResult perplexity(const model::LlamaModel& m, std::span<const int32_t> tokens, const PerplexityOptions& o,
                            model::AttentionBackend* backend,
                            const std::function<void(int64_t, int64_t, double)>& progress) {
  const auto& cfg = m.config();
  IS_CHECK(o.ctx >= 2, "perplexity: --ctx must be >= 2, got ", o.ctx);
  IS_CHECK(o.ctx <= cfg.context_length, "perplexity: --ctx ", o.ctx, " exceeds the model's context length of ",
           cfg.context_length);
  const int64_t first = o.first >= 0 ? o.first : o.ctx / 2;
  IS_CHECK(first < o.ctx - 1, "perplexity: first scored position ", first, " leaves nothing to score in a window of ",
           o.ctx);
  int64_t windows = static_cast<int64_t>(tokens.size()) / o.ctx;
  IS_CHECK(windows > 0, "perplexity: the text has ", tokens.size(), " tokens, fewer than one window of ", o.ctx);
  if (o.max_windows > 0) windows = std::min(windows, o.max_windows);

  PerplexityResult r;
  model::KvCache cache;
  cache.reset(cfg, o.ctx, o.kv);
  // Logits only of the scored rows [first, ctx - 1), in blocks of kBlock rows (no [ctx, vocab]
  // buffer): the step-wise forward, bit-equal to forward().
  constexpr int64_t kBlock = 256;
  std::vector<float> logits(static_cast<size_t>(std::min(kBlock, o.ctx - 1 - first)) * cfg.vocab);
  std::vector<float> x(static_cast<size_t>(o.ctx) * cfg.d_model);
  std::vector<int32_t> win(static_cast<size_t>(o.ctx));
  double nll = 0.0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t w = 0; w < windows; ++w) {
    std::copy(tokens.begin() + w * o.ctx, tokens.begin() + (w + 1) * o.ctx, win.begin());
    if (o.bos >= 0) win[0] = o.bos;
    cache.clear();
    if (backend) backend->begin_sequence();
    m.embed_tokens(win.data(), o.ctx, x.data());
    m.forward_layers(0, cfg.n_layers, x.data(), o.ctx, 0, cache, backend);
    for (int64_t j0 = first; j0 < o.ctx - 1; j0 += kBlock) {
      const int64_t j1 = std::min(j0 + kBlock, o.ctx - 1);
      m.output_logits(x.data() + j0 * cfg.d_model, j1 - j0, logits.data());
      for (int64_t j = j0; j < j1; ++j) {
        const std::span<const float> row(logits.data() + (j - j0) * cfg.vocab, static_cast<size_t>(cfg.vocab));
        const int32_t target = tokens[static_cast<size_t>(w * o.ctx + j + 1)];
        const double lp = log_prob(row, target);
        nll -= lp;
        ++r.scored;
        if (o.keep_tokens) {
          r.token_nll.push_back(static_cast<float>(-lp));
          r.token_top1.push_back(std::max_element(row.begin(), row.end()) - row.begin() == target);
        }
      }
    }
    r.running_ppl.push_back(std::exp(nll / static_cast<double>(r.scored)));
    if (progress) progress(w + 1, windows, r.running_ppl.back());
  }
  r.windows = windows;
  r.mean_nll = nll / static_cast<double>(r.scored);
  r.ppl = std::exp(r.mean_nll);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_second = static_cast<double>(windows * o.ctx) / r.seconds;
  return r;
}

}  // namespace indexshare::eval

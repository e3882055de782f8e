// indexshare bench: prompt processing and generation speed of a GGUF model, measured the way
// llama-bench measures them so the two can be put side by side:
//   ppN @ dD: one forward of N random tokens (logits of the last one only) after D tokens are
//             already in the KV cache;
//   tgN @ dD: N single-token forwards, one after another, after D cached tokens.
// The D-token context is prefilled once per depth (untimed) and every repetition starts from
// it again (the cache is truncated back to D). One untimed warm-up run precedes the timed
// repetitions of each test. Reported: mean and standard deviation of tokens/s over the
// repetitions, as llama-bench reports them.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "command.h"
#include "dsa_options.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include <filesystem>

#include "io/llama_gguf.h"
#include "model_session.h"

namespace indexshare::cli {
namespace {

struct BenchArgs {
  std::string model;
  std::vector<int64_t> prompt{512};
  std::vector<int64_t> gen{128};
  std::vector<int64_t> depth{0, 4096};
  int reps = 3;
  std::string kv = "f16";
  bool json = false;
  DsaArgs dsa;  // --dsa: time DSA / IndexShare instead of dense attention
};

struct TestResult {
  std::string name;  // "pp512" / "tg128"
  int64_t tokens = 0, depth = 0;
  std::vector<double> tps;  // tokens/s per repetition
  double select_share = std::nan("");  // DSA: share of the timed wall time spent in selection
  double mean() const {
    double s = 0.0;
    for (double v : tps) s += v;
    return tps.empty() ? 0.0 : s / static_cast<double>(tps.size());
  }
  double stddev() const {
    if (tps.size() < 2) return 0.0;
    const double m = mean();
    double s = 0.0;
    for (double v : tps) s += (v - m) * (v - m);
    return std::sqrt(s / static_cast<double>(tps.size() - 1));
  }
};

model::KvType parse_kv(const std::string& s) {
  if (s == "f16") return model::KvType::kF16;
  if (s == "f32") return model::KvType::kF32;
  fail("bench: --kv must be f16 or f32, got '", s, "'");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(const BenchArgs& a) {
  IS_CHECK(a.reps >= 1, "bench: --reps must be >= 1, got ", a.reps);
  for (int64_t v : a.prompt) IS_CHECK(v >= 0, "bench: -p values must be >= 0, got ", v);
  for (int64_t v : a.gen) IS_CHECK(v >= 0, "bench: -n values must be >= 0, got ", v);
  for (int64_t v : a.depth) IS_CHECK(v >= 0, "bench: -d values must be >= 0, got ", v);
  const model::KvType kv = parse_kv(a.kv);
  // The model alone: speed needs no tokenizer.
  IS_CHECK(std::filesystem::exists(a.model), a.model, ": model file not found",
           a.model == io::default_model_path() ? " (run scripts/fetch_model.sh to download the default model)" : "");
  const io::LoadedLlama loaded = io::load_llama(a.model);
  const model::LlamaModel& m = *loaded.model;
  const auto& cfg = m.config();
  int64_t longest = 0;
  for (int64_t v : a.prompt) longest = std::max(longest, v);
  for (int64_t v : a.gen) longest = std::max(longest, v);

  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, cfg.vocab - 1);
  const auto random_tokens = [&](int64_t n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = pick(rng);
    return t;
  };

  std::vector<TestResult> results;
  std::vector<float> logits(static_cast<size_t>(cfg.vocab));
  for (int64_t depth : a.depth) {
    const int64_t cap = depth + std::max<int64_t>(longest, 1);
    IS_CHECK(cap <= cfg.context_length, "bench: depth ", depth, " + ", longest, " tokens exceeds the model's limit of ",
             cfg.context_length);
    model::KvCache cache;
    cache.reset(cfg, cap, kv);
    // DSA: top-k defaults to (depth + longest test) / 8; the indexer-K cache spans cap tokens.
    DsaArgs da = a.dsa;
    if (da.dsa && da.topk == 0) da.topk = static_cast<int>(std::max<int64_t>(1, cap / 8));
    DsaSetup dsa = make_dsa(da, cfg, a.model, cap);
    model::AttentionBackend* be = dsa.backend.get();
    if (be) {
      be->begin_sequence();
      if (!a.json) fmt::print(stderr, "depth {}: {}\n", depth, dsa.summary);
    }
    const auto selected = [&] { return dsa.backend ? dsa.backend->counters().select_seconds : 0.0; };
    // The shared context, prefilled once in 512-token batches (llama-bench's default ubatch).
    const std::vector<int32_t> ctx_tokens = random_tokens(depth);
    for (int64_t i = 0; i < depth; i += 512) {
      m.forward(ctx_tokens.data() + i, std::min<int64_t>(512, depth - i), cache, nullptr, false, be);
    }
    for (int64_t n : a.prompt) {
      if (n == 0) continue;
      TestResult r{fmt::format("pp{}", n), n, depth, {}};
      const std::vector<int32_t> toks = random_tokens(n);
      double wall = 0.0, sel = 0.0;
      for (int rep = -1; rep < a.reps; ++rep) {  // rep -1: warm-up
        cache.length = depth;
        const double s0 = selected();
        const auto t0 = std::chrono::steady_clock::now();
        m.forward(toks.data(), n, cache, logits.data(), false, be);
        const double dt = seconds_since(t0);
        if (rep >= 0) {
          r.tps.push_back(static_cast<double>(n) / dt);
          wall += dt;
          sel += selected() - s0;
        }
      }
      if (be) r.select_share = sel / wall;
      results.push_back(std::move(r));
    }
    for (int64_t n : a.gen) {
      if (n == 0) continue;
      TestResult r{fmt::format("tg{}", n), n, depth, {}};
      const std::vector<int32_t> toks = random_tokens(n);
      cache.length = depth;  // warm-up: one token, as llama-bench does
      m.forward(toks.data(), 1, cache, logits.data(), false, be);
      double wall = 0.0, sel = 0.0;
      for (int rep = 0; rep < a.reps; ++rep) {
        cache.length = depth;
        const double s0 = selected();
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < n; ++i) m.forward(toks.data() + i, 1, cache, logits.data(), false, be);
        const double dt = seconds_since(t0);
        r.tps.push_back(static_cast<double>(n) / dt);
        wall += dt;
        sel += selected() - s0;
      }
      if (be) r.select_share = sel / wall;
      results.push_back(std::move(r));
    }
  }

  const std::string mode = !a.dsa.dsa ? "dense"
                           : fmt::format("dsa {}{}", a.dsa.oracle ? "oracle " : "",
                                         a.dsa.sched.freq > 0   ? fmt::format("freq {}", a.dsa.sched.freq)
                                         : a.dsa.sched.pattern.empty() ? std::string("every layer")
                                                                       : "pattern");
  if (a.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : results) {
      j.push_back({{"test", r.name},          {"n_tokens", r.tokens},      {"n_depth", r.depth},
                   {"threads", num_threads()}, {"kv", a.kv},                 {"avg_ts", r.mean()},
                   {"stddev_ts", r.stddev()},  {"samples_ts", r.tps}});
      if (!std::isnan(r.select_share)) j.back()["select_share"] = r.select_share;
      if (a.dsa.dsa) j.back()["mode"] = mode;
    }
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("| engine     | mode {:<16} | threads | kv  | test            |            t/s | selection |\n", "");
  fmt::print("| ---------- | {:<21} | ------: | --- | --------------: | -------------: | --------: |\n", "---");
  for (const auto& r : results) {
    const std::string test = r.depth > 0 ? fmt::format("{} @ d{}", r.name, r.depth) : r.name;
    fmt::print("| indexshare | {:<21} | {:7} | {} | {:>15} | {:>8.2f} ± {:4.2f} | {:>9} |\n", mode, num_threads(), a.kv,
               test, r.mean(), r.stddev(), std::isnan(r.select_share) ? "-" : fmt::format("{:.1f}%", 100 * r.select_share));
  }
  return 0;
}

CommandRegistrar reg("bench", "prompt (ppN) and generation (tgN) speed, as llama-bench measures them",
                     [](CLI::App& app) {
                       auto a = std::make_shared<BenchArgs>();
                       add_model_option(app, a->model);
                       app.add_option("-p,--n-prompt", a->prompt, "prompt lengths")->delimiter(',')->capture_default_str();
                       app.add_option("-n,--n-gen", a->gen, "generation lengths")->delimiter(',')->capture_default_str();
                       app.add_option("-d,--n-depth", a->depth, "tokens already in the cache")
                           ->delimiter(',')
                           ->capture_default_str();
                       app.add_option("-r,--reps", a->reps, "timed repetitions per test")->capture_default_str();
                       add_dsa_options(app, a->dsa);
                       app.add_option("--kv", a->kv, "KV-cache type: f16 or f32")->capture_default_str();
                       app.add_flag("--json", a->json, "print the results as JSON");
                       return [a] { return run(*a); };
                     });

}  // namespace
}  // namespace indexshare::cli

// indexshare search: IndexCache's training-free greedy search of an F/S sharing pattern for a Llama
// model with per-layer learned indexers (src/train/pattern_search.h; docs/search.md).
#include <fmt/core.h>

#include <optional>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "command.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "eval/corpus.h"
#include "eval/domains.h"
#include "io/indexer_file.h"
#include "model_session.h"
#include "progress.h"
#include "train/pattern_search.h"

namespace indexshare::cli {
namespace {

struct SearchArgs {
  std::string model, indexers, corpus, domains;
  std::string reindexers;  // non-F layers are R (reindex) instead of S
  int candidates = 0;      // R: 0 = 2 x top-k
  int keep = 0;  // 0 = from --ratio
  double ratio = 0.25;
  int topk = 0;  // 0 = ctx / 8
  int64_t ctx = 1024;
  int windows = 2;
  bool json = false;
};

void print_row(int step, const std::string& layer, int num_full, double loss, double all_full, double seconds) {
  fmt::print("{:>4}  {:>5}  {:>3}  {:>9.5f}  {:>+10.5f}  {:>8.1f}\n", step, layer, num_full, loss, loss - all_full,
             seconds);
}

int run(const SearchArgs& a, bool keep_given, bool ratio_given) {
  IS_CHECK(!(keep_given && ratio_given), "search: give --keep or --ratio, not both");
  ModelSession s = load_model_session(a.model);
  const auto& cfg = s.model().config();
  const int N = cfg.n_layers;
  int keep = a.keep;
  if (!keep_given) {
    IS_CHECK(a.ratio > 0.0 && a.ratio <= 1.0, "search: --ratio ", a.ratio, " outside (0, 1]");
    keep = std::max(1, static_cast<int>(std::lround(a.ratio * N)));
  }
  IS_CHECK(keep >= 1 && keep <= N, "search: --keep ", keep, " outside [1, ", N, "] (the model has ", N, " layers)");
  IS_CHECK(a.ctx >= 2 && a.ctx <= cfg.context_length, "search: --ctx ", a.ctx, " outside [2, ", cfg.context_length,
           "] (the model's context length)");
  const int topk = a.topk > 0 ? a.topk : static_cast<int>(a.ctx / 8);
  IS_CHECK(a.topk >= 0 && topk >= 1, "search: --dsa-topk must be >= 1, got ", a.topk);
  IS_CHECK(topk <= a.ctx, "search: --dsa-topk ", topk, " exceeds --ctx ", a.ctx);
  IS_CHECK(a.windows >= 1, "search: --windows must be >= 1, got ", a.windows);

  const io::IndexerFile ix = io::load_indexers(a.indexers, io::model_fingerprint(a.model), N);
  const eval::Corpus corpus = eval::load_training_text(a.corpus, a.domains, a.ctx * a.windows * 8 + (1 << 20));
  const std::vector<int32_t> tokens = s.tokenizer->encode(corpus.text, false, false);
  const train::CalibrationSet calib =
      train::make_calibration_set(tokens, a.ctx, a.windows, s.tokenizer->add_bos() ? s.tokenizer->bos_id() : -1);

  fmt::print(stderr, "search: {} layers -> keep {} F, top-k {}, {} windows x {} tokens, indexers {}\n", N, keep, topk,
             a.windows, a.ctx, a.indexers);
  fmt::print(stderr, "calibration: {} (first {} of {} tokens)\n", corpus.description(), a.windows * a.ctx, tokens.size());
  int64_t total = 0;
  for (int f = N; f > keep; --f) total += static_cast<int64_t>(f - 1) * a.windows;
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  ProgressBar bar("search", total, "evals");
  if (!a.json) fmt::print("{:>4}  {:>5}  {:>3}  {:>9}  {:>10}  {:>8}\n", "step", "layer", "F", "loss", "Δ vs all-F", "step s");
  train::PatternSearchOptions o;
  o.keep = keep;
  o.topk = topk;
  std::optional<io::IndexerFile> rx;
  IS_CHECK(a.candidates >= 0, "search: --candidates must be > 0, got ", a.candidates);
  IS_CHECK(!a.reindexers.empty() || a.candidates == 0, "search: --candidates needs --reindexers");
  if (!a.reindexers.empty()) {
    rx.emplace(io::load_indexers(a.reindexers, io::model_fingerprint(a.model), N));
    o.reindex = {.indexers = &rx->set, .candidates = a.candidates > 0 ? a.candidates : 2 * topk};
    IS_CHECK(o.reindex.candidates >= topk, "search: --candidates ", o.reindex.candidates, " is less than top-k ", topk);
    fmt::print(stderr, "search: layers leave F for R (reindex, {} candidates, indexers {})\n", o.reindex.candidates,
               a.reindexers);
  }
  int steps_done = 0;
  double all_full = 0.0;  // the first step's base loss
  o.progress = [&](int64_t done, int64_t, const train::SearchStep* st) {
    if (!st) {
      bar.update(done, fmt::format("step {}/{}", steps_done + 1, N - keep));
      return;
    }
    if (!a.json) {
      if (tty) fmt::print(stderr, "\r\x1b[K");
      if (steps_done == 0) {
        all_full = st->base_loss;
        print_row(0, "-", N, all_full, all_full, 0.0);
      }
      print_row(steps_done + 1, std::to_string(st->layer), st->num_full, st->loss, all_full, st->seconds);
      std::fflush(stdout);
    }
    ++steps_done;
    bar.update(done, fmt::format("loss {:.4f}", st->loss));
  };
  const train::PatternSearchResult r = train::search_pattern(s.model(), calib, ix.set, o);
  bar.finish(fmt::format("loss {:.4f}", r.steps.empty() ? r.all_full_loss : r.steps.back().loss));
  const double final_loss = r.steps.empty() ? r.all_full_loss : r.steps.back().loss;
  std::string uniform = train::uniform_pattern(N, keep);
  if (o.reindex.indexers)
    for (char& c : uniform)
      if (c == 'S') c = 'R';
  const double uniform_loss =
      keep == N ? r.all_full_loss
                : train::pattern_loss(s.model(), calib, ix.set, share::Schedule::from_pattern(uniform), topk, -1,
                                      o.reindex);
  const share::Schedule result = share::Schedule::from_pattern(r.pattern);

  if (a.json) {
    nlohmann::json steps = nlohmann::json::array();
    for (size_t i = 0; i < r.steps.size(); ++i) {
      const auto& st = r.steps[i];
      nlohmann::json cands = nlohmann::json::array();
      for (const auto& c : st.candidates) cands.push_back({{"layer", c.layer}, {"loss", c.loss}});
      steps.push_back({{"step", i + 1}, {"layer", st.layer}, {"num_full", st.num_full}, {"loss", st.loss},
                       {"delta", st.loss - r.all_full_loss}, {"base_loss", st.base_loss}, {"pattern", st.pattern},
                       {"seconds", st.seconds}, {"candidates", cands}});
    }
    const nlohmann::json j = {
        {"model", a.model}, {"indexers", a.indexers}, {"corpus", corpus.description()},
        {"layers", N}, {"keep", keep}, {"topk", topk}, {"ctx", a.ctx}, {"windows", r.windows},
        {"scored", r.scored}, {"scoring", "mean next-token NLL of positions [ctx/2, ctx-1) of each window"},
        {"all_full_loss", r.all_full_loss}, {"loss", final_loss}, {"delta", final_loss - r.all_full_loss},
        {"pattern", r.pattern}, {"num_full", result.num_full()}, {"full_layers", result.full_layers()},
        {"num_reindex", result.num_reindex()},
        {"reindex", o.reindex.indexers ? nlohmann::json{{"indexers", a.reindexers}, {"candidates", o.reindex.candidates}}
                                       : nlohmann::json(nullptr)},
        {"uniform", {{"pattern", uniform}, {"loss", uniform_loss}, {"delta", uniform_loss - r.all_full_loss}}},
        {"steps", steps}, {"candidate_evaluations", r.candidate_evaluations}, {"layer_runs", r.layer_runs},
        {"layer_runs_uncached", r.layer_runs_uncached}, {"seconds", r.seconds}, {"threads", num_threads()}};
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  if (r.steps.empty()) print_row(0, "-", N, r.all_full_loss, r.all_full_loss, r.seconds);
  fmt::print("\nsearched {}  loss {:.5f} ({:+.5f} vs all-F)\n", r.pattern, final_loss, final_loss - r.all_full_loss);
  fmt::print("uniform  {}  loss {:.5f} ({:+.5f} vs all-F)\n", uniform, uniform_loss, uniform_loss - r.all_full_loss);
  fmt::print("{} candidate patterns x {} windows, {} layer runs with the prefix cache ({} without), {:.1f} s\n",
             r.candidate_evaluations, r.windows, r.layer_runs, r.layer_runs_uncached, r.seconds);
  fmt::print("index_topk_pattern: {}\n", r.pattern);
  return 0;
}

CommandRegistrar reg("search", "greedy search of an F/S (or F/R) sharing pattern (IndexCache, training-free)", [](CLI::App& app) {
  auto a = std::make_shared<SearchArgs>();
  add_model_option(app, a->model);
  app.add_option("--indexers", a->indexers, "per-layer indexer file (indexshare distill)")->required();
  auto* keep = app.add_option("--keep", a->keep, "F layers to keep (default: round(layers * --ratio))");
  auto* ratio = app.add_option("--ratio", a->ratio, "share of layers kept F when --keep is not given")->capture_default_str();
  app.add_option("--dsa-topk", a->topk, "top-k of DSA (default: ctx / 8)");
  app.add_option("--reindexers", a->reindexers,
                 "small indexers for R layers: search the F layers of an F/R schedule (non-F layers R, not S)");
  app.add_option("--candidates", a->candidates, "with --reindexers: candidates per F layer (default 2 x top-k)");
  app.add_option("-c,--ctx", a->ctx, "calibration window in tokens")->capture_default_str();
  app.add_option("--windows", a->windows, "calibration windows")->capture_default_str();
  app.add_option("--corpus", a->corpus, "folder of *.py text (default: the Python standard library; train split)");
  app.add_option("--domains", a->domains,
                 "calibrate on the train splits of these text domains instead: all (every one not held out) or a "
                 "comma list of python, c, cmake, prose, config");
  app.add_flag("--json", a->json, "print everything as JSON");
  return [a, keep, ratio] { return run(*a, keep->count() > 0, ratio->count() > 0); };
});

}  // namespace
}  // namespace indexshare::cli

// indexshare distill: train lightning indexers for a Llama model (DSA dense warm-up), per layer
// or training-aware for a sharing schedule, and write them to a safetensors file.
#include <fmt/core.h>

#include <chrono>
#include <cmath>

#include "command.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "dsa_options.h"
#include "eval/corpus.h"
#include "eval/domains.h"
#include "io/indexer_file.h"
#include "model_session.h"
#include "progress.h"
#include "train/distill_llama.h"

namespace indexshare::cli {
namespace {

struct DistillArgs {
  std::string model, corpus, out, domains, target = "mean";
  float blend = 0.5f;
  size_t blend_given = 0;
  train::DistillOptions opt;
  ScheduleArgs sched;
  std::string command_line;
};

int run(const DistillArgs& a) {
  ModelSession s = load_model_session(a.model);
  const auto& cfg = s.model().config();
  const eval::Corpus corpus =
      eval::load_training_text(a.corpus, a.domains, a.opt.seq_len * a.opt.sequences * 8 + (1 << 20));
  const std::vector<int32_t> tokens = s.tokenizer->encode(corpus.text, false, false);
  train::DistillOptions o = a.opt;
  o.training_aware = schedule_from_args(a.sched, cfg.n_layers);
  o.max_weight = a.target == "mean" ? 0.0f : a.target == "max" ? 1.0f : a.blend;
  IS_CHECK(a.target == "blend" || a.blend_given == 0, "distill: --blend is the max's weight of --target blend; the target is ",
           a.target);
  fmt::print(stderr, "distill: {} layers, indexer {} heads x {} dims (rope {}), {} sequences x {} tokens, {} epoch(s), {} steps each{}\n",
             cfg.n_layers, o.heads, o.head_dim, o.rope_dim, o.sequences, o.seq_len, o.epochs, o.steps_per_sequence,
             o.training_aware ? ", training-aware for " + o.training_aware->summary() : "");
  fmt::print(stderr, "corpus: {} -> {} tokens\n", corpus.description(), tokens.size());
  ProgressBar bar("distill", static_cast<int64_t>(o.epochs) * o.sequences * o.steps_per_sequence, "steps");
  o.progress = [&](int64_t done, int64_t, double loss) { bar.update(done, fmt::format("KL {:.4f}", loss)); };
  train::DistillReport rep;
  const model::IndexerSet set = train::distill_indexers(s.model(), tokens, o, &rep);
  bar.finish();
  double f = 0, l = 0;
  int n = 0;
  for (size_t i = 0; i < rep.first_loss.size(); ++i)
    if (!std::isnan(rep.first_loss[i])) {
      f += rep.first_loss[i];
      l += rep.last_loss[i];
      ++n;
    }
  std::map<std::string, std::string> meta = {
      {"model_fingerprint", io::model_fingerprint(a.model)},
      {"model", a.model},
      {"corpus", corpus.description()},
      {"seed", std::to_string(o.seed)},
      {"target", train::target_name(o.max_weight)},
      {"command", a.command_line},
      {"mode", o.training_aware ? "training-aware " + o.training_aware->pattern() : "per-layer"},
      {"kl_first", fmt::format("{:.5f}", f / n)},
      {"kl_last", fmt::format("{:.5f}", l / n)},
      {"threads", std::to_string(num_threads())},
  };
  io::save_indexers(a.out, set, meta);
  fmt::print("wrote {} ({} indexers, mean KL {:.4f} -> {:.4f}, {:.1f} s)\n", a.out, n, f / n, l / n, rep.seconds);
  return 0;
}

CommandRegistrar reg("distill", "train lightning indexers for a Llama model (KL to its own attention)", [](CLI::App& app) {
  auto a = std::make_shared<DistillArgs>();
  add_model_option(app, a->model);
  app.add_option("--corpus", a->corpus, "folder of *.py text (default: the Python standard library; train split)");
  app.add_option("--domains", a->domains,
                 "train on the train splits of these text domains instead: all (every one not held out) or a "
                 "comma list of python, c, cmake, prose, config");
  app.add_option("-o,--out", a->out, "output safetensors file")->required();
  app.add_option("--heads", a->opt.heads, "indexer heads H_I")->capture_default_str();
  app.add_option("--head-dim", a->opt.head_dim, "indexer head dim D_I")->capture_default_str();
  app.add_option("--rope-dim", a->opt.rope_dim, "rotated dims at the start of each indexer head")->capture_default_str();
  app.add_option("--rope-theta", a->opt.rope_theta, "RoPE base of the indexer's rotated dims (0 = the model's)")
      ->capture_default_str();
  app.add_option("--seq-len", a->opt.seq_len, "tokens per training sequence")->capture_default_str();
  app.add_option("--sequences", a->opt.sequences, "training sequences")->capture_default_str();
  app.add_option("--rows", a->opt.rows_per_sequence, "query rows sampled per sequence (0 = all)")->capture_default_str();
  app.add_option("--epochs", a->opt.epochs, "passes over the sequences")->capture_default_str();
  app.add_option("--steps", a->opt.steps_per_sequence, "Adam steps per sequence")->capture_default_str();
  app.add_option("--lr", a->opt.lr, "Adam learning rate")->capture_default_str();
  app.add_option("--seed", a->opt.seed, "initialisation seed")->capture_default_str();
  app.add_option("--target", a->target,
                 "what the indexer learns: mean (the heads' mean attention, DSA's warm-up), max (their "
                 "renormalised maximum: a key one head needs counts fully) or blend ((1 - W) mean + W max, "
                 "W from --blend)")
      ->check(CLI::IsMember({"mean", "max", "blend"}))
      ->capture_default_str();
  app.add_option("--blend", a->blend, "W of --target blend: the renormalised maximum's weight")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  add_schedule_options(app, a->sched);
  return [a, &app] {
    a->blend_given = app.count("--blend");
    a->command_line = "indexshare distill";
    for (const auto* opt : app.get_options())
      if (opt->count() > 0 && opt->get_name() != "--help")
        a->command_line += " " + opt->get_name() + " " + (opt->get_expected_min() ? opt->as<std::string>() : std::string());
    return run(*a);
  };
});

}  // namespace
}  // namespace indexshare::cli

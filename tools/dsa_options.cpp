#include "dsa_options.h"

#include <fmt/core.h>

#include "core/error.h"

namespace indexshare::cli {

void add_schedule_options(CLI::App& app, ScheduleArgs& a) {
  app.add_option("--pattern", a.pattern,
                 "sharing pattern, one F/S/R per layer (index_topk_pattern; R = reindex, ours)");
  app.add_option("--freq", a.freq, "one indexer per FREQ layers (index_topk_freq)");
  app.add_option("--offset", a.offset, "phase of --freq (index_skip_topk_offset)")->capture_default_str();
}

std::optional<share::Schedule> schedule_from_args(const ScheduleArgs& a, int layers) {
  if (a.pattern.empty() && a.freq == 0) return std::nullopt;
  share::ScheduleInput in;
  in.num_layers = layers;
  if (!a.pattern.empty()) in.index_topk_pattern = a.pattern;
  in.index_topk_freq = a.freq > 0 ? a.freq : 1;
  in.index_skip_topk_offset = a.offset;
  return share::Schedule::resolve(in);
}

void add_dsa_options(CLI::App& app, DsaArgs& a) {
  app.add_flag("--dsa", a.dsa, "sparse attention (DSA) on every layer, IndexShare under a pattern");
  app.add_option("--dsa-topk", a.topk, "DSA: keys kept per query (default: context / 8)");
  app.add_option("--indexers", a.indexers, "DSA: learned indexer file (indexshare distill)");
  app.add_flag("--oracle", a.oracle, "DSA: select by the layer's true attention instead of an indexer");
  app.add_option("--reindexers", a.reindexers, "DSA: the R layers' small indexers (indexshare distill --heads 1)");
  app.add_option("--candidates", a.candidates, "DSA: candidates an F layer carries over to R layers (default 2 x top-k)");
  add_schedule_options(app, a.sched);
}

DsaSetup make_dsa(const DsaArgs& a, const model::LlamaConfig& cfg, const std::string& model_path, int64_t ctx) {
  DsaSetup s;
  const std::optional<share::Schedule> sched = schedule_from_args(a.sched, cfg.n_layers);
  if (!a.dsa) {
    IS_CHECK(!sched && a.topk == 0 && a.indexers.empty() && !a.oracle && a.reindexers.empty() && a.candidates == 0,
             "--dsa-topk, --indexers, --oracle, --pattern, --freq, --reindexers and --candidates need --dsa");
    return s;
  }
  IS_CHECK(ctx > 0, "DSA: the context must be > 0");
  const int k = a.topk > 0 ? a.topk : static_cast<int>(std::max<int64_t>(1, ctx / 8));
  IS_CHECK(a.topk >= 0, "--dsa-topk must be > 0, got ", a.topk);
  IS_CHECK(k <= ctx, "--dsa-topk ", k, " is larger than the context of ", ctx, " tokens");
  model::DsaOptions o;
  o.topk = k;
  o.schedule = sched ? *sched : share::Schedule::all_full(cfg.n_layers);
  o.capacity = ctx;
  if (a.oracle) {
    IS_CHECK(a.indexers.empty(), "--oracle selects by the true attention; drop --indexers");
    o.selection = model::DsaSelection::kOracle;
  } else {
    IS_CHECK(!a.indexers.empty(), "--dsa needs --indexers FILE (from indexshare distill) or --oracle");
    s.file = std::make_unique<io::IndexerFile>(io::load_indexers(a.indexers, io::model_fingerprint(model_path), cfg.n_layers));
    o.indexers = &s.file->set;
  }
  IS_CHECK(a.candidates >= 0, "--candidates must be > 0, got ", a.candidates);
  if (o.schedule.has_reindex()) {
    IS_CHECK(!a.reindexers.empty(), "pattern ", o.schedule.pattern(),
             " has reindex (R) layers: give --reindexers FILE (their small indexers)");
    s.refile = std::make_unique<io::IndexerFile>(
        io::load_indexers(a.reindexers, io::model_fingerprint(model_path), cfg.n_layers));
    o.reindexers = &s.refile->set;
    o.candidates = a.candidates > 0 ? a.candidates : 2 * k;
  } else {
    IS_CHECK(a.reindexers.empty() && a.candidates == 0, "--reindexers and --candidates need R layers in --pattern");
  }
  s.summary = fmt::format("DSA: top-{} of {} tokens, {} selection, pattern {} ({})", k, ctx,
                          a.oracle ? "oracle" : "learned-indexer", o.schedule.pattern(), o.schedule.summary());
  if (o.schedule.has_reindex()) s.summary += fmt::format(", R layers re-score {} candidates", o.candidates);
  s.backend = std::make_unique<model::LlamaDsaBackend>(cfg, std::move(o));
  return s;
}

}  // namespace indexshare::cli

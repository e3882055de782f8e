// indexshare eval — the main job: DSA and IndexShare on a real model. One table of attention
// modes (dense; oracle top-k; learned DSA on every layer; uniform sharing 1/2, 1/4, 1/8; a
// searched 1/4 pattern; training-aware 1/4) x perplexity and the DSA measures, two PNGs (layer-
// to-layer top-k overlap; quality vs indexer cost) and --json of everything.
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "command.h"
#include "core/error.h"
#include "dsa_options.h"
#include "eval/corpus.h"
#include "eval/domains.h"
#include "eval/dsa_eval.h"
#include "eval/loss_split.h"
#include "eval/plot.h"
#include "eval/probes.h"
#include "io/indexer_file.h"
#include "model_session.h"
#include "progress.h"
#include "train/distill_llama.h"

namespace indexshare::cli {
namespace {

namespace fs = std::filesystem;

struct EvalArgs {
  std::string model, corpus, indexers, aware_indexers, searched, reindexers, out_dir = "eval-out";
  int candidates = 0;  // R layers: 0 = 2 x top-k
  int64_t ctx = 4096;
  int64_t windows = 1;
  int topk = 0;
  int64_t measure_stride = 16;
  bool json = false;
  bool probes = false;
  std::vector<double> passkey_depths = {0.1, 0.5, 0.9};
  std::string domains;  // "all" or a comma list: the per-domain table
  std::string only;     // --modes: a comma list of mode names to run (default: all)
  train::DistillOptions distill;
};

std::string cache_dir() {
  const char* c = std::getenv("INDEXSHARE_CACHE");
  const char* home = std::getenv("HOME");
  return c && *c ? c : std::string(home ? home : ".") + "/.cache/indexshare";
}

// Uniform sharing "1/n": every n-th layer is F, starting at layer 0 (freq n, offset 1).
share::Schedule uniform(int layers, int n) {
  return share::Schedule::resolve({.num_layers = layers, .index_topk_freq = n, .index_skip_topk_offset = 1});
}

// The same F layers with every S layer made R (reindex).
share::Schedule with_reindex(const share::Schedule& s) {
  std::string p = s.pattern();
  for (char& c : p)
    if (c == 'S') c = 'R';
  return share::Schedule::from_pattern(p);
}

#ifndef INDEXSHARE_DATA_DIR
#define INDEXSHARE_DATA_DIR "data"
#endif

// A committed artifact (data/...) when it exists and was made for this model (fingerprint),
// else "".
std::string committed_indexers(const std::string& name, const std::string& fingerprint) {
  const std::string path = std::string(INDEXSHARE_DATA_DIR) + "/indexers/" + name;
  if (!fs::exists(path)) return "";
  try {
    const io::IndexerFile f = io::load_indexers(path);
    const auto it = f.metadata.find("model_fingerprint");
    return it != f.metadata.end() && it->second == fingerprint ? path : "";
  } catch (const Error&) {
    return "";
  }
}

// The searched pattern committed beside the indexers: data/patterns/<name>, line 1 the pattern,
// then "# key: value" lines, one of them "# model_fingerprint: ...". "" when absent or made for
// another model.
std::string committed_pattern(const std::string& name, const std::string& fingerprint) {
  std::ifstream in(std::string(INDEXSHARE_DATA_DIR) + "/patterns/" + name);
  if (!in) return "";
  std::string pattern, line;
  std::getline(in, pattern);
  while (std::getline(in, line))
    if (line == "# model_fingerprint: " + fingerprint) return pattern;
  return "";
}

// Loads an indexer file, or distils one (a one-time step) when it does not exist yet.
io::IndexerFile ensure_indexers(const std::string& path, const ModelSession& s, const std::string& model_path,
                                const std::string& fingerprint, const std::string& corpus_dir,
                                train::DistillOptions o, std::optional<share::Schedule> aware) {
  const int N = s.model().config().n_layers;
  if (fs::exists(path)) return io::load_indexers(path, fingerprint, N);
  fmt::print(stderr, "eval: {} not found; distilling it now (one-time){}\n", path,
             aware ? " — training-aware for " + aware->summary() : " — one indexer per layer");
  const eval::Corpus corpus = eval::load_corpus(corpus_dir, eval::CorpusSplit::kTrain, o.seq_len * o.sequences * 8 + (1 << 20));
  const std::vector<int32_t> tokens = s.tokenizer->encode(corpus.text, false, false);
  o.training_aware = aware;
  ProgressBar bar(aware ? "distill (aware)" : "distill", int64_t{o.epochs} * o.sequences * o.steps_per_sequence, "steps");
  o.progress = [&](int64_t d, int64_t, double loss) { bar.update(d, fmt::format("KL {:.4f}", loss)); };
  const model::IndexerSet set = train::distill_indexers(s.model(), tokens, o);
  bar.finish();
  fs::create_directories(fs::path(path).parent_path());
  io::save_indexers(path, set,
                    {{"model_fingerprint", fingerprint},
                     {"model", model_path},
                     {"corpus", corpus.description()},
                     {"seed", std::to_string(o.seed)},
                     {"mode", aware ? "training-aware " + aware->pattern() : "per-layer"},
                     {"target", train::target_name(o.max_weight)},
                     {"command", fmt::format("indexshare distill --seq-len {} --rows {} --sequences {} --steps {} --lr {} --seed {} --target {}{} -o {}",
                                             o.seq_len, o.rows_per_sequence, o.sequences, o.steps_per_sequence, o.lr, o.seed,
                                              o.max_weight == 0.0f ? "mean" : o.max_weight == 1.0f ? "max" : fmt::format("blend --blend {}", o.max_weight), aware ? " --pattern " + aware->pattern() : "", path)}});
  return io::load_indexers(path, fingerprint, N);
}

std::string fmt_or_dash(double v, const char* f) { return std::isnan(v) ? "-" : fmt::format(fmt::runtime(f), v); }

int run(const EvalArgs& a) {
  ModelSession s = load_model_session(a.model);
  const auto& cfg = s.model().config();
  const int N = cfg.n_layers;
  const int topk = a.topk > 0 ? a.topk : static_cast<int>(a.ctx / 8);
  IS_CHECK(topk <= a.ctx, "eval: --dsa-topk ", topk, " is larger than the context ", a.ctx);
  IS_CHECK(a.windows >= 1, "eval: --windows must be >= 1");
  IS_CHECK(!a.passkey_depths.empty(), "eval: --passkey-depths needs at least one depth");
  for (double d : a.passkey_depths)
    IS_CHECK(d >= 0.0 && d <= 1.0, "eval: --passkey-depths: depth ", d, " is outside [0, 1]");
  const std::string fp = io::model_fingerprint(a.model);
  const std::string corpus_dir = a.corpus.empty() ? eval::default_corpus_dir() : a.corpus;
  const std::string cdir = cache_dir();
  // Indexers: --indexers / --aware-indexers, else the committed ones when they were made for this
  // model, else the cache (distilled there once when missing).
  std::string per_layer_path = a.indexers, aware_path = a.aware_indexers;
  const std::string stem = fs::path(a.model).stem().string();
  if (per_layer_path.empty()) per_layer_path = committed_indexers(stem + ".per-layer.safetensors", fp);
  if (per_layer_path.empty()) per_layer_path = cdir + "/" + stem + ".per-layer.safetensors";
  if (aware_path.empty()) aware_path = committed_indexers(stem + ".aware-freq4.safetensors", fp);
  if (aware_path.empty()) aware_path = cdir + "/" + stem + ".aware-freq4.safetensors";
  const share::Schedule u4 = uniform(N, 4);

  // A one-time per-layer distillation (models without committed indexers) learns the heads'
  // maximum attention, as the committed SmolLM2 file does (docs/indexer-quality.md).
  train::DistillOptions per_layer_recipe = a.distill;
  per_layer_recipe.max_weight = 1.0f;
  const io::IndexerFile per_layer = ensure_indexers(per_layer_path, s, a.model, fp, corpus_dir, per_layer_recipe, std::nullopt);
  const io::IndexerFile aware = ensure_indexers(aware_path, s, a.model, fp, corpus_dir, a.distill, u4);
  IS_CHECK(aware.metadata.count("pattern") && share::Schedule::from_pattern(aware.metadata.at("pattern")).pattern() == u4.pattern(),
           aware_path, ": the training-aware indexers were trained for pattern ",
           aware.metadata.count("pattern") ? aware.metadata.at("pattern") : "?", ", not ", u4.pattern());

  // Reindex indexers (small, for R layers): --reindexers, else the committed ones when made for
  // this model; without them the reindex modes are left out (named in a note).
  std::string reindex_path = a.reindexers;
  if (reindex_path.empty()) reindex_path = committed_indexers(stem + ".reindex-h1.safetensors", fp);
  std::optional<io::IndexerFile> reindex;
  if (!reindex_path.empty()) reindex.emplace(io::load_indexers(reindex_path, fp, N));
  IS_CHECK(a.candidates >= 0, "eval: --candidates must be > 0");
  const int candidates = a.candidates > 0 ? a.candidates : 2 * topk;
  IS_CHECK(candidates >= topk, "eval: --candidates ", candidates, " is less than top-k ", topk);

  const eval::Corpus corpus = eval::load_corpus(corpus_dir, eval::CorpusSplit::kEval, a.ctx * a.windows * 8 + (1 << 20));
  const std::vector<int32_t> tokens = s.tokenizer->encode(corpus.text, false, false);
  IS_CHECK(static_cast<int64_t>(tokens.size()) >= a.ctx * a.windows, "eval: the eval corpus has ", tokens.size(),
           " tokens; ", a.windows, " windows of ", a.ctx, " need ", a.ctx * a.windows);

  std::vector<eval::ModeSpec> modes = {
      {.name = "dense", .dense = true},
      {.name = "oracle top-k", .selection = model::DsaSelection::kOracle, .schedule = share::Schedule::all_full(N)},
      {.name = "DSA every layer", .schedule = share::Schedule::all_full(N), .indexers = &per_layer.set},
      {.name = "uniform 1/2", .schedule = uniform(N, 2), .indexers = &per_layer.set},
      {.name = "uniform 1/4", .schedule = u4, .indexers = &per_layer.set},
      {.name = "uniform 1/8", .schedule = uniform(N, 8), .indexers = &per_layer.set},
  };
  std::string searched = a.searched;
  if (!searched.empty() && fs::exists(searched)) {
    std::ifstream in(searched);
    std::getline(in, searched);
  }
  // Default: the pattern committed for these indexers (searched with them on this model).
  if (searched.empty() && a.indexers.empty()) searched = committed_pattern(stem + ".searched-1of4.txt", fp);
  if (!searched.empty()) modes.push_back({.name = "searched 1/4", .schedule = share::Schedule::from_pattern(searched), .indexers = &per_layer.set});
  modes.push_back({.name = "training-aware 1/4", .schedule = u4, .indexers = &aware.set});
  if (reindex) {
    auto add_reindex = [&](std::string name, const share::Schedule& f) {
      modes.push_back({.name = std::move(name), .schedule = with_reindex(f), .indexers = &per_layer.set,
                       .reindexers = &reindex->set, .candidates = candidates});
    };
    add_reindex("reindex 1/4", u4);
    if (!searched.empty()) add_reindex("searched 1/4 + R", share::Schedule::from_pattern(searched));
  }

  if (!a.only.empty()) {
    // Keep the named modes (in the table's order). dense and DSA every layer are the baselines of
    // the table's two delta columns, so they always run.
    std::vector<std::string> want = {"dense", "DSA every layer"};
    for (size_t b = 0; b <= a.only.size();) {
      const size_t e = std::min(a.only.find(',', b), a.only.size());
      want.push_back(a.only.substr(b, e - b));
      b = e + 1;
    }
    std::string names;
    for (const auto& m : modes) names += (names.empty() ? "" : ", ") + m.name;
    for (const auto& w : want)
      IS_CHECK(std::any_of(modes.begin(), modes.end(), [&](const eval::ModeSpec& m) { return m.name == w; }),
               "eval --modes: unknown mode '", w, "'; modes: ", names);
    std::erase_if(modes, [&](const eval::ModeSpec& m) { return std::find(want.begin(), want.end(), m.name) == want.end(); });
  }

  eval::EvalSettings es;
  es.ppl.ctx = a.ctx;
  es.ppl.max_windows = a.windows;
  es.ppl.bos = s.tokenizer->add_bos() ? s.tokenizer->bos_id() : -1;
  es.topk = topk;
  es.own_indexers = &per_layer.set;
  es.measure_stride = a.measure_stride;
  es.ppl.keep_tokens = true;  // for the loss split (eval/loss_split.h)
  fmt::print(stderr, "eval: {} layers, context {}, top-k {}, {} window(s) of the eval split: {}\n", N, a.ctx, topk,
             a.windows, corpus.description());
  ProgressBar bar("eval", static_cast<int64_t>(modes.size()), "modes");
  std::vector<eval::ModeResult> res;
  for (size_t i = 0; i < modes.size(); ++i) {
    bar.update(static_cast<int64_t>(i), modes[i].name);
    eval::EvalSettings e = es;
    if (modes[i].name == "DSA every layer" || modes[i].name == "oracle top-k") e.record_stride = 64;
    res.push_back(eval::run_mode(s.model(), tokens, modes[i], e));
  }
  bar.finish();

  // Copy and retrieval probes (eval/probes.h), built from the same held-out text.
  std::vector<eval::Probe> probes;
  std::vector<std::vector<eval::RegionScore>> probe_scores(modes.size());  // [mode][probe region]
  // [mode][probe][layer]: the share of the needle's positions in the sets of the answer rows
  // (pass-key probes, DSA modes; empty otherwise).
  std::vector<std::vector<std::vector<double>>> needle(modes.size());
  if (a.probes) {
    probes = eval::make_probes(tokens, [&](std::string_view t) { return s.tokenizer->encode(t, false, false); }, a.ctx,
                               a.passkey_depths);
    ProgressBar pbar("probes", static_cast<int64_t>(modes.size() * probes.size()), "windows");
    for (auto& m : needle) m.resize(probes.size());
    for (size_t i = 0; i < modes.size(); ++i)
      for (size_t p = 0; p < probes.size(); ++p) {
        pbar.update(static_cast<int64_t>(i * probes.size() + p), modes[i].name + ", " + probes[p].name);
        eval::EvalSettings e = es;
        e.ppl.first = probes[p].first;
        e.ppl.max_windows = 1;
        e.ppl.keep_tokens = true;
        e.measure_stride = 0;
        const bool record = probes[p].evidence_end > probes[p].evidence_begin && !modes[i].dense;
        // Repeat probe: every 4th row's sets, for the share holding the copy source.
        const bool copy = probes[p].copy_period > 0 && !modes[i].dense;
        constexpr int64_t kCopyStride = 4;
        if (record || copy) {
          e.record_stride = record ? 1 : kCopyStride;
          e.record_from = probes[p].first;
        }
        const eval::ModeResult r = eval::run_mode(s.model(), probes[p].tokens, modes[i], e);
        for (auto& sc : eval::score_probe(probes[p], r.token_nll, r.token_top1)) probe_scores[i].push_back(std::move(sc));
        if (record) needle[i][p] = eval::evidence_recall(probes[p], r.recorded);
        if (copy) needle[i][p] = eval::copy_recall(probes[p], r.recorded, probes[p].first, kCopyStride);
      }
    pbar.finish();
  }

  const eval::ModeResult& dense = res[0];
  // Where each mode's extra NLL over dense goes: predictions an induction head could copy, by
  // distance, and the rest (eval/loss_split.h).
  auto split_of = [&](std::span<const int32_t> text, const eval::ModeResult& base, const eval::ModeResult& r) {
    const int64_t per = a.ctx - 1 - a.ctx / 2;
    return eval::split_loss(text, a.ctx, a.ctx / 2, static_cast<int64_t>(base.token_nll.size()) / per, es.ppl.bos,
                            base.token_nll, r.token_nll);
  };
  std::vector<eval::LossSplit> splits;
  for (const auto& r : res) splits.push_back(split_of(tokens, dense, r));
  auto split_json = [](const eval::LossSplit& sp) {
    nlohmann::json o;
    for (int c = 0; c < eval::kCopyClasses; ++c)
      o[eval::copy_class_name(static_cast<eval::CopyClass>(c))] = {
          {"predictions", sp.count[c]}, {"delta_nll", sp.delta(c)}, {"share_of_extra_nll", sp.share(c)}};
    return o;
  };
  // Which distances the sets reach (scored half of the window): oracle vs the learned indexers.
  std::vector<int64_t> dist_edges = {0};
  for (int64_t e = 16; e < a.ctx; e = e < 256 ? e * 4 : e * 2) dist_edges.push_back(e);  // 16, 64, 256, 512, ...
  dist_edges.push_back(a.ctx);
  std::vector<std::vector<double>> by_dist(res.size());
  for (size_t i = 0; i < res.size(); ++i)
    if (!res[i].recorded.empty())
      by_dist[i] = eval::selection_by_distance(res[i].recorded, a.ctx, 0, 64, a.ctx / 2, dist_edges);
  const eval::ModeResult& dsa =
      *std::find_if(res.begin(), res.end(), [](const eval::ModeResult& r) { return r.name == "DSA every layer"; });
  fs::create_directories(a.out_dir);
  const std::vector<double> J = eval::jaccard_matrix(dsa.recorded);
  const std::string heat = (fs::path(a.out_dir) / "topk_overlap.png").string();
  eval::write_heatmap_png(heat, J, N, N,
                          {.title = fmt::format("top-{} overlap between layers (Jaccard)", topk), .x_label = "layer", .y_label = "layer"});
  // Per layer and head: the attention mass DSA every layer's sets miss (1 - the head's recall).
  const int Hq = cfg.n_heads;
  std::vector<double> head_missed(dsa.head_recall.size());
  double head_max = 0.0;
  for (size_t i = 0; i < head_missed.size(); ++i) {
    head_missed[i] = 1.0 - dsa.head_recall[i];
    if (!std::isnan(head_missed[i])) head_max = std::max(head_max, head_missed[i]);
  }
  const std::string head_png = (fs::path(a.out_dir) / "head_missed.png").string();
  if (!head_missed.empty())
    eval::write_heatmap_png(head_png, head_missed, N, Hq,
                            {.title = "mass missed per head",  // DSA every layer; the scale bar gives the range
                             .x_label = "head",
                             .y_label = "layer",
                             .vmin = 0.0,
                             .vmax = std::max(head_max, 1e-3)});
  std::vector<eval::Series> series;
  eval::Series uni{.name = "uniform sharing", .color = {31, 119, 180}};
  eval::Series other{.name = "other modes", .color = {214, 39, 40}, .lines = false};
  eval::Series rx{.name = "reindex (F + R)", .color = {44, 160, 44}, .lines = false};
  const double base_flops = dsa.indexer_flops > 0 ? dsa.indexer_flops : 1.0;
  for (const auto& r : res) {
    if (r.name == "dense" || r.name == "oracle top-k") continue;
    const double x = r.indexer_flops / base_flops;
    eval::Series& tgt = r.name.rfind("uniform", 0) == 0 || r.name == "DSA every layer" ? uni
                        : r.num_reindex > 0                                             ? rx
                                                                                        : other;
    tgt.x.push_back(x);
    tgt.y.push_back(r.ppl);
    tgt.point_labels.push_back(r.name == "DSA every layer" ? "all F" : r.name);
  }
  // Uniform curve from most to least indexer work.
  std::vector<size_t> ord(uni.x.size());
  for (size_t i = 0; i < ord.size(); ++i) ord[i] = i;
  std::sort(ord.begin(), ord.end(), [&](size_t p, size_t q) { return uni.x[p] > uni.x[q]; });
  eval::Series sorted = uni;
  for (size_t i = 0; i < ord.size(); ++i) {
    sorted.x[i] = uni.x[ord[i]];
    sorted.y[i] = uni.y[ord[i]];
    sorted.point_labels[i] = uni.point_labels[ord[i]];
  }
  eval::Series dense_line{.name = "dense", .x = {0.0, 1.0}, .y = {dense.ppl, dense.ppl}, .color = {120, 120, 120}};
  const std::string curve = (fs::path(a.out_dir) / "quality_vs_indexer_cost.png").string();
  std::vector<eval::Series> curves = {sorted, other, dense_line};
  if (!rx.x.empty()) curves.push_back(rx);
  eval::write_chart_png(curve, curves,
                        {.title = "perplexity vs indexer cost", .x_label = "indexer FLOPs per token (DSA every layer = 1)",
                         .y_label = "perplexity"});

  std::string needle_png, copy_png;
  if (a.probes) {
    // Per layer, how much of the needle the answer rows' sets hold, at the middle one of the
    // pass-key depths (probes[0] is the repeat probe).
    const size_t mid = 1 + (probes.size() - 1) / 2;
    const eval::Rgb colors[] = {{0, 0, 0}, {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189}, {140, 86, 75}};
    std::vector<eval::Series> ns;
    for (size_t i = 0; i < modes.size(); ++i) {
      if (needle[i].empty() || needle[i][mid].empty()) continue;
      eval::Series se{.name = modes[i].name, .color = colors[ns.size() % std::size(colors)]};
      for (size_t l = 0; l < needle[i][mid].size(); ++l) {
        se.x.push_back(static_cast<double>(l));
        se.y.push_back(needle[i][mid][l]);
      }
      ns.push_back(std::move(se));
    }
    needle_png = (fs::path(a.out_dir) / "passkey_needle_recall.png").string();
    eval::write_chart_png(needle_png, ns,
                          {.title = fmt::format("pass key at {}: needle share of top-{}",
                                                probes[mid].name.substr(probes[mid].name.rfind(' ') + 1), topk),
                           .x_label = "layer", .y_label = "needle positions selected"});
    // The repeat probe: per layer, how often the copy source is in the row's set.
    std::vector<eval::Series> cs;
    for (size_t i = 0; i < modes.size(); ++i) {
      if (needle[i].empty() || needle[i][0].empty() || probes[0].copy_period == 0) continue;
      eval::Series se{.name = modes[i].name, .color = colors[cs.size() % std::size(colors)]};
      for (size_t l = 0; l < needle[i][0].size(); ++l) {
        se.x.push_back(static_cast<double>(l));
        se.y.push_back(needle[i][0][l]);
      }
      cs.push_back(std::move(se));
    }
    if (!cs.empty()) {
      copy_png = (fs::path(a.out_dir) / "repeat_copy_recall.png").string();
      eval::write_chart_png(copy_png, cs,
                            {.title = fmt::format("repeats: rows whose top-{} holds the copy source", topk),
                             .x_label = "layer", .y_label = "copy source selected"});
    }
  }

  // Per-domain table (eval/domains.h): the eval split of each domain, the modes that tell
  // generalisation apart (sparse attention itself, the learned indexers, sharing, reindex).
  struct DomainRow {
    eval::DomainSpec spec;
    std::string corpus;
    std::vector<eval::ModeResult> res;  // in the order of dmodes
    std::string skipped;                // why, when the domain could not be run
    std::vector<eval::LossSplit> splits;  // per mode, against the domain's dense run
  };
  std::vector<DomainRow> drows;
  std::vector<size_t> dmodes;  // indices into modes
  std::string domain_png;
  if (!a.domains.empty()) {
    for (const char* n : {"dense", "oracle top-k", "DSA every layer", "uniform 1/4", "searched 1/4", "reindex 1/4"})
      for (size_t i = 0; i < modes.size(); ++i)
        if (modes[i].name == n) dmodes.push_back(i);
    std::vector<eval::DomainSpec> specs;
    if (a.domains == "all") {
      specs = eval::builtin_domains();
    } else {
      for (size_t b = 0; b <= a.domains.size();) {
        const size_t e = std::min(a.domains.find(',', b), a.domains.size());
        specs.push_back(eval::find_domain(a.domains.substr(b, e - b)));
        b = e + 1;
      }
    }
    ProgressBar dbar("domains", static_cast<int64_t>(specs.size() * dmodes.size()), "runs");
    int64_t done = 0;
    for (const auto& d : specs) {
      DomainRow row{d, "", {}, ""};
      std::vector<int32_t> dt;
      try {
        const eval::Corpus dc = eval::load_domain(d, eval::CorpusSplit::kEval, a.ctx * a.windows * 8 + (1 << 20));
        row.corpus = fmt::format("{} files, {:.2f} MB", dc.files.size(), dc.text.size() / 1e6);
        dt = s.tokenizer->encode(dc.text, false, false);
        if (static_cast<int64_t>(dt.size()) < a.ctx * a.windows)
          row.skipped = fmt::format("its eval split has {} tokens, fewer than {} x {}", dt.size(), a.windows, a.ctx);
      } catch (const Error& e) {
        row.skipped = e.what();
      }
      for (size_t i : dmodes) {
        dbar.update(done++, d.name + ", " + modes[i].name);
        if (row.skipped.empty()) row.res.push_back(eval::run_mode(s.model(), dt, modes[i], es));
      }
      for (const auto& r : row.res) row.splits.push_back(split_of(dt, row.res[0], r));
      drows.push_back(std::move(row));
    }
    dbar.finish();
    // What the learned indexers lose, per layer and domain: 1 - attention recall of DSA every layer.
    const eval::Rgb colors[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189}, {140, 86, 75}, {0, 0, 0}};
    std::vector<eval::Series> ls;
    size_t dsa_col = dmodes.size();
    for (size_t c = 0; c < dmodes.size(); ++c)
      if (modes[dmodes[c]].name == "DSA every layer") dsa_col = c;
    for (const auto& r : drows) {
      if (!r.skipped.empty() || dsa_col == dmodes.size()) continue;
      eval::Series se{.name = r.spec.name + (r.spec.held_out ? " (held out)" : ""), .color = colors[ls.size() % std::size(colors)]};
      const auto& lr = r.res[dsa_col].layer_recall;
      for (size_t l = 0; l < lr.size(); ++l) {
        se.x.push_back(static_cast<double>(l));
        se.y.push_back(1.0 - lr[l]);
      }
      ls.push_back(std::move(se));
    }
    if (!ls.empty()) {
      fs::create_directories(a.out_dir);
      domain_png = (fs::path(a.out_dir) / "domain_layer_loss.png").string();
      eval::write_chart_png(domain_png, ls,
                            {.title = fmt::format("DSA every layer: attention mass missed by the top-{}, per domain", topk),
                             .x_label = "layer", .y_label = "1 - attention recall"});
    }
  }

  nlohmann::json j;
  j["model"] = a.model;
  j["model_fingerprint"] = fp;
  j["corpus"] = corpus.description();
  j["context"] = a.ctx;
  j["topk"] = topk;
  j["reindex"] = reindex ? nlohmann::json{{"indexers", reindex_path},
                                          {"candidates", candidates},
                                          {"heads", reindex->set.cfg.heads},
                                          {"head_dim", reindex->set.cfg.head_dim}}
                         : nlohmann::json(nullptr);
  j["windows"] = a.windows;
  j["tokens_scored_per_window"] = a.ctx - 1 - a.ctx / 2;
  j["indexer_shape"] = {{"heads", per_layer.set.cfg.heads}, {"head_dim", per_layer.set.cfg.head_dim}, {"rope_dim", per_layer.set.cfg.rope_dim}};
  j["pictures"] = {heat, curve};
  if (!head_missed.empty()) j["pictures"].push_back(head_png);
  if (!needle_png.empty()) j["pictures"].push_back(needle_png);
  if (!copy_png.empty()) j["pictures"].push_back(copy_png);
  j["jaccard"] = J;
  for (const auto& r : res) {
    auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
    j["modes"].push_back({{"mode", r.name}, {"pattern", r.pattern}, {"ppl", r.ppl}, {"delta_vs_dense", r.ppl / dense.ppl - 1},
                          {"delta_vs_dsa", r.ppl / dsa.ppl - 1}, {"recall", num(r.recall)}, {"s_overlap", num(r.overlap)},
                          {"layer_recall", r.layer_recall}, {"layer_overlap", r.layer_overlap},
                          {"head_recall", r.head_recall},
                          {"indexer_calls", r.indexer_calls}, {"f_layers", r.num_full},
                          {"r_layers", r.num_reindex}, {"reindex_calls", r.reindex_calls},
                          {"candidates", r.candidates ? nlohmann::json(r.candidates) : nlohmann::json(nullptr)},
                          {"indexer_flops_per_token", r.indexer_flops}, {"attention_flops_per_token", r.attention_flops},
                          {"total_flops_per_token", r.total_flops}, {"seconds", r.seconds}, {"select_seconds", r.select_seconds},
                          {"loss_split_vs_dense", split_json(splits[static_cast<size_t>(&r - res.data())])}});
    if (const auto& bd = by_dist[static_cast<size_t>(&r - res.data())]; !bd.empty()) {
      nlohmann::json rate = nlohmann::json::array();
      for (double v : bd) rate.push_back(std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v));
      j["modes"].back()["selection_by_distance"] = {{"edges", dist_edges}, {"rate", rate}};
    }
  }
  if (a.probes) {
    j["probes_source"] = "the eval split (held out from distillation and search)";
    for (size_t i = 0; i < modes.size(); ++i) {
      nlohmann::json m{{"mode", modes[i].name}};
      for (const auto& sc : probe_scores[i])
        m["regions"].push_back({{"probe", sc.probe}, {"region", sc.region}, {"tokens", sc.tokens}, {"ppl", sc.ppl},
                                {"mean_nll", sc.mean_nll}, {"top1", sc.top1}, {"exact", sc.exact}});
      for (size_t p = 0; p < probes.size(); ++p)
        if (!needle[i][p].empty()) {
          nlohmann::json layers = nlohmann::json::array();
          for (double v : needle[i][p]) layers.push_back(std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v));
          m[probes[p].copy_period > 0 ? "copy_recall" : "needle_recall"][probes[p].name] = layers;
        }
      j["probes"].push_back(m);
    }
  }
  if (!a.domains.empty()) {
    nlohmann::json dj = nlohmann::json::array();
    for (const auto& r : drows) {
      nlohmann::json row{{"domain", r.spec.name}, {"what", r.spec.what}, {"held_out", r.spec.held_out},
                         {"eval_split", r.corpus}};
      if (!r.skipped.empty()) row["skipped"] = r.skipped;
      for (size_t c = 0; c < r.res.size(); ++c)
        row["modes"].push_back({{"mode", r.res[c].name}, {"ppl", r.res[c].ppl},
                                {"delta_vs_dense", r.res[c].ppl / r.res[0].ppl - 1},
                                {"recall", std::isnan(r.res[c].recall) ? nlohmann::json(nullptr) : nlohmann::json(r.res[c].recall)},
                                {"layer_recall", r.res[c].layer_recall},
                                {"loss_split_vs_dense", split_json(r.splits[c])}});
      dj.push_back(row);
    }
    j["domains"] = dj;
    if (!domain_png.empty()) j["pictures"].push_back(domain_png);
  }
  if (a.json) {
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("IndexShare on {} — context {}, top-k {}, {} window(s), eval text: {}\n", fs::path(a.model).filename().string(),
             a.ctx, topk, a.windows, corpus.description());
  fmt::print("{:<19} {:>9} {:>9} {:>9} {:>7} {:>9} {:>5} {:>10} {:>10} {:>8}\n", "mode", "ppl", "vs dense", "vs DSA",
             "recall", "S-overlap", "idx", "idx MFLOP", "tot MFLOP", "time s");
  for (const auto& r : res) {
    // Indexer runs per forward: F layers, plus R layers as "+n".
    const std::string calls =
        r.reindex_calls ? fmt::format("{}+{}", r.indexer_calls, r.reindex_calls) : fmt::format("{}", r.indexer_calls);
    fmt::print("{:<19} {:>9.4f} {:>+8.2f}% {:>+8.2f}% {:>7} {:>9} {:>5} {:>10.2f} {:>10.1f} {:>8.1f}\n", r.name, r.ppl,
               100 * (r.ppl / dense.ppl - 1), 100 * (r.ppl / dsa.ppl - 1), fmt_or_dash(r.recall, "{:.3f}"),
               fmt_or_dash(r.overlap, "{:.3f}"), calls, r.indexer_flops / 1e6, r.total_flops / 1e6, r.seconds);
  }
  for (const auto& r : res)
    if (!r.pattern.empty() && r.pattern != "dense") fmt::print("  {:<19} {}\n", r.name, r.pattern);
  // Selection rate by distance (modes whose sets were recorded).
  fmt::print("\nshare of the keys at each distance that the sets hold (rows of the scored half, all layers):\n{:<19}", "mode");
  for (size_t b = 0; b + 1 < dist_edges.size(); ++b) fmt::print(" {:>10}", fmt::format("{}-{}", dist_edges[b], dist_edges[b + 1] - 1));
  fmt::print("\n");
  for (size_t i = 0; i < res.size(); ++i) {
    if (by_dist[i].empty()) continue;
    fmt::print("{:<19}", res[i].name);
    for (double v : by_dist[i]) fmt::print(" {:>10}", fmt_or_dash(v, "{:.3f}"));
    fmt::print("\n");
  }
  // Where the extra NLL goes: per class of prediction, the mean extra NLL against dense (nats per
  // prediction) and that class's share of the mode's total extra.
  if (!head_missed.empty()) {
    // The heads whose attention the learned sets miss most, beside what the oracle's sets (the
    // heads' mean attention's top-k) miss of the same head.
    const auto orc = std::find_if(res.begin(), res.end(), [](const eval::ModeResult& r) { return r.name == "oracle top-k"; });
    std::vector<size_t> idx;
    for (size_t i = 0; i < head_missed.size(); ++i)
      if (!std::isnan(head_missed[i])) idx.push_back(i);
    const size_t show = std::min<size_t>(8, idx.size());
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(show), idx.end(),
                      [&](size_t x, size_t y) { return head_missed[x] > head_missed[y]; });
    fmt::print("\nheads whose attention DSA every layer misses most (mass outside the set, measured rows):\n");
    for (size_t i = 0; i < show; ++i) {
      const size_t h = idx[i];
      const std::string o = orc != res.end() && h < orc->head_recall.size()
                                ? fmt::format("   oracle top-k misses {:.3f}", 1.0 - orc->head_recall[h])
                                : "";
      fmt::print("  layer {:>2} head {:>2}: {:.3f}{}\n", h / static_cast<size_t>(Hq), h % static_cast<size_t>(Hq),
                 head_missed[h], o);
    }
  }
  fmt::print("\nwhere the loss goes (extra NLL vs dense per prediction, nats; share of the total extra):\n{:<19}", "mode");
  for (int c = 0; c < eval::kCopyClasses; ++c)
    fmt::print(" {:>21}", fmt::format("{} ({})", eval::copy_class_name(static_cast<eval::CopyClass>(c)), splits[0].count[c]));
  fmt::print("\n");
  for (size_t i = 1; i < res.size(); ++i) {
    fmt::print("{:<19}", res[i].name);
    for (int c = 0; c < eval::kCopyClasses; ++c)
      fmt::print(" {:>21}", fmt::format("{:+.4f} ({:.0f}%)", splits[i].delta(c), 100 * splits[i].share(c)));
    fmt::print("\n");
  }
  if (a.probes) {
    // One column per probe region: perplexity of the region; for the pass key, the answer's NLL,
    // whether every answer token is the arg-max (yes / no) and, for DSA modes, the mean over
    // layers of the needle's share in the answer rows' sets (r); for the repeats, the mean over
    // layers of the share of rows whose set holds the copy source (c).
    fmt::print("\ncopy and retrieval probes (context {}, top-k {}, text of the eval split):\n", a.ctx, topk);
    fmt::print("{:<19}", "mode");
    for (const auto& sc : probe_scores[0])
      fmt::print(" {:>20}", sc.probe.rfind("passkey", 0) == 0 ? sc.probe : sc.probe + ": " + sc.region);
    fmt::print("\n");
    auto mean_of = [](const std::vector<double>& v) {
      double sum = 0.0;
      int n = 0;
      for (double x : v)
        if (!std::isnan(x)) sum += x, ++n;
      return n ? sum / n : std::nan("");
    };
    for (size_t i = 0; i < modes.size(); ++i) {
      fmt::print("{:<19}", modes[i].name);
      for (const auto& sc : probe_scores[i]) {
        if (sc.probe.rfind("passkey", 0) == 0) {
          size_t p = 0;
          while (p < probes.size() && probes[p].name != sc.probe) ++p;
          const std::string r = p < probes.size() && !needle[i][p].empty() ? fmt::format(" r{:.2f}", mean_of(needle[i][p])) : "";
          fmt::print(" {:>20}", fmt::format("nll {:.2f} {}{}", sc.mean_nll * static_cast<double>(sc.tokens), sc.exact ? "yes" : "no", r));
        } else {
          size_t p = 0;
          while (p < probes.size() && probes[p].name != sc.probe) ++p;
          const bool c = sc.region == "repeats" && p < probes.size() && !needle[i][p].empty();
          fmt::print(" {:>20}", fmt::format("ppl {:.3f}{}", sc.ppl, c ? fmt::format(" c{:.2f}", mean_of(needle[i][p])) : ""));
        }
      }
      fmt::print("\n");
    }
  }
  if (!a.domains.empty()) {
    // Rows: domains; columns: the dense perplexity and every other mode's change against it; last,
    // the share of DSA every layer's extra NLL that falls on copyable predictions.
    fmt::print("\nper domain (eval split of each; * = held out of distillation and search), ppl vs dense:\n");
    fmt::print("{:<10} {:>9}", "domain", "dense ppl");
    for (size_t c = 1; c < dmodes.size(); ++c) fmt::print(" {:>17}", modes[dmodes[c]].name);
    size_t dsa_c = 0;
    for (size_t c = 1; c < dmodes.size(); ++c)
      if (modes[dmodes[c]].name == "DSA every layer") dsa_c = c;
    if (dsa_c) fmt::print(" {:>18}", "DSA extra on copies");
    fmt::print("\n");
    std::vector<double> sum(dmodes.size(), 0.0), worst(dmodes.size(), -1e300);
    int ran = 0;
    for (const auto& r : drows) {
      const std::string name = r.spec.name + (r.spec.held_out ? "*" : "");
      if (!r.skipped.empty()) {
        fmt::print("{:<10} skipped: {}\n", name, r.skipped);
        continue;
      }
      ++ran;
      fmt::print("{:<10} {:>9.3f}", name, r.res[0].ppl);
      for (size_t c = 1; c < r.res.size(); ++c) {
        const double dlt = 100 * (r.res[c].ppl / r.res[0].ppl - 1);
        sum[c] += dlt;
        worst[c] = std::max(worst[c], dlt);
        fmt::print(" {:>+16.2f}%", dlt);
      }
      if (dsa_c) {
        const auto& sp = r.splits[dsa_c];
        fmt::print(" {:>17.0f}%", 100 * (sp.share(0) + sp.share(1) + sp.share(2)));
      }
      fmt::print("\n");
    }
    if (ran > 0) {
      fmt::print("{:<10} {:>9}", "mean", "");
      for (size_t c = 1; c < dmodes.size(); ++c) fmt::print(" {:>+16.2f}%", sum[c] / ran);
      fmt::print("\n{:<10} {:>9}", "worst", "");
      for (size_t c = 1; c < dmodes.size(); ++c) fmt::print(" {:>+16.2f}%", worst[c]);
      fmt::print("\n");
    }
  }
  fmt::print("pictures: {}, {}{}{}{}{}\n", heat, curve, head_missed.empty() ? "" : ", " + head_png,
             needle_png.empty() ? "" : ", " + needle_png,
             copy_png.empty() ? "" : ", " + copy_png, domain_png.empty() ? "" : ", " + domain_png);
  if (searched.empty()) fmt::print("note: no --searched-pattern given; run `indexshare search` to find one\n");
  if (reindex)
    fmt::print("reindex: R layers re-score the top-{} candidates of their F layer with {} ({} head(s) x {} dims)\n",
               candidates, reindex_path, reindex->set.cfg.heads, reindex->set.cfg.head_dim);
  else
    fmt::print("note: no reindex indexers for this model (--reindexers, from `indexshare distill --heads 1`); "
               "the reindex modes were left out\n");
  return 0;
}

CommandRegistrar reg("eval", "the main job: quality and cost of DSA and IndexShare modes on a real model", [](CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  add_model_option(app, a->model);
  app.add_option("--corpus", a->corpus, "folder of *.py text (default: the Python standard library; eval split)");
  app.add_option("--indexers", a->indexers, "per-layer indexer file (default: cached; distilled when absent)");
  app.add_option("--aware-indexers", a->aware_indexers, "training-aware 1/4 indexer file (default: cached; distilled when absent)");
  app.add_option("--searched-pattern", a->searched, "a pattern from `indexshare search` (string or file)");
  app.add_option("--reindexers", a->reindexers,
                 "small indexers for reindex (R) layers (default: the committed ones for this model, else no R modes)");
  app.add_option("--candidates", a->candidates, "candidates an F layer carries over to R layers (default 2 x top-k)");
  app.add_option("-c,--ctx", a->ctx, "evaluation context")->capture_default_str();
  app.add_option("--windows", a->windows, "windows of ctx tokens")->capture_default_str();
  app.add_option("--dsa-topk", a->topk, "top-k (default ctx/8)");
  app.add_option("--measure-stride", a->measure_stride, "measure recall/overlap on every n-th row (0 = off)")->capture_default_str();
  app.add_option("-o,--out-dir", a->out_dir, "folder for the PNG pictures")->capture_default_str();
  app.add_flag("--json", a->json, "print everything as JSON");
  app.add_option("--modes", a->only,
                 "run only these modes (comma list of the table's names; dense and DSA every layer always run)");
  app.add_option("--domains", a->domains,
                 "also the per-domain table: all, or a comma list of python, c, cmake, prose, config, perl "
                 "(perl is held out of training)");
  app.add_flag("--probes", a->probes,
               "also run the copy and retrieval probes (a passage repeated three times; a pass key at each of "
               "--passkey-depths)");
  app.add_option("--passkey-depths", a->passkey_depths, "depths of the pass key in the filler, fractions in [0, 1]")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--distill-sequences", a->distill.sequences, "sequences for a one-time distillation")->capture_default_str();
  app.add_option("--distill-seq-len", a->distill.seq_len, "tokens per distillation sequence")->capture_default_str();
  app.add_option("--distill-steps", a->distill.steps_per_sequence, "Adam steps per sequence")->capture_default_str();
  app.add_option("--distill-rows", a->distill.rows_per_sequence, "query rows sampled per sequence")->capture_default_str();
  return [a] { return run(*a); };
});

}  // namespace
}  // namespace indexshare::cli

// indexshare cost: per-token FLOPs and bytes of a DSA model under its F/S schedule versus the
// same model with every layer F (src/cost/cost_model.h, docs/cost-model.md).
#include <fmt/core.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.h"
#include "core/error.h"
#include "cost/cost_model.h"
#include "cost/presets.h"
#include "io/hf_config.h"

namespace indexshare::cli {
namespace {

using nlohmann::json;

struct CostArgs {
  std::string preset;
  std::string config;
  std::vector<std::string> contexts;
  std::string phase = "decode";
  std::string weight_dtype = "fp8";
  std::string pattern;          // overrides the config's schedule (F / S / R per layer)
  int64_t candidates = 0;       // overrides index_reindex_candidates
  int64_t reindex_heads = 0, reindex_dim = 0;
  bool json = false;
};

// "131072", "128K", "1M" (binary multiples).
int64_t parse_context(const std::string& s) {
  IS_CHECK(!s.empty(), "--context: empty value");
  size_t pos = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &pos);
  } catch (const std::exception&) {
    fail("--context '", s, "': expected a positive integer, optionally with K or M");
  }
  int64_t mult = 1;
  if (pos < s.size()) {
    const char u = static_cast<char>(std::toupper(static_cast<unsigned char>(s[pos])));
    IS_CHECK(pos + 1 == s.size() && (u == 'K' || u == 'M'), "--context '", s,
             "': expected a positive integer, optionally with K or M");
    mult = u == 'K' ? 1024 : 1024 * 1024;
  }
  IS_CHECK(v >= 1 && v <= (int64_t{1} << 40) / mult, "--context '", s, "': must be in [1, 2^40]");
  return v * mult;
}

double weight_bytes_of(const std::string& dtype) {
  if (dtype == "fp8") return 1;
  if (dtype == "bf16" || dtype == "f16") return 2;
  if (dtype == "f32") return 4;
  fail("--weight-dtype '", dtype, "': expected fp8, bf16, f16 or f32");
}

// 1234567 -> "1.235 G" (SI prefixes).
std::string si(double v) {
  const char* units[] = {"", "K", "M", "G", "T", "P"};
  int u = 0;
  while (v >= 1000.0 && u < 5) {
    v /= 1000.0;
    ++u;
  }
  return fmt::format("{:.3f} {}", v, units[u]);
}

std::string ratio_text(double all_full, double shared) {
  if (shared == 0) return all_full == 0 ? "-" : "inf";
  return fmt::format("{:.2f}x", all_full / shared);
}

json flops_json(const cost::Flops& f) {
  return {{"indexer_proj", f.indexer_proj}, {"indexer_score", f.indexer_score}, {"reindex_proj", f.reindex_proj},
          {"reindex_score", f.reindex_score}, {"attn_proj", f.attn_proj},       {"attn_core", f.attn_core},
          {"mlp_dense", f.mlp_dense},         {"mlp_moe", f.mlp_moe},           {"lm_head", f.lm_head},
          {"total", f.total()}};
}

json cost_json(const cost::TokenCost& c) {
  json j = {{"flops", flops_json(c.flops)}};
  if (c.bytes_modelled)
    j["bytes"] = {{"weights", c.bytes.weights},
                  {"mla_cache", c.bytes.mla_cache},
                  {"indexer_cache", c.bytes.indexer_cache},
                  {"total", c.bytes.total()}};
  else
    j["bytes"] = nullptr;
  return j;
}

void print_table(const cost::Comparison& r) {
  fmt::print("\n{} at context {} (indexer scores {:.1f} keys, attention reads {:.1f} per layer)\n",
             cost::phase_name(r.phase), r.context, r.shared.keys_scored, r.shared.keys_attended);
  fmt::print("{:<22}{:>16}{:>16}{:>14}\n", "component", "shared", "all-F", "all-F/shared");
  auto row = [](const char* name, double s, double f, const char* unit) {
    fmt::print("{:<22}{:>16}{:>16}{:>14}\n", name, si(s) + unit, si(f) + unit, ratio_text(f, s));
  };
  const auto &s = r.shared.flops, &f = r.all_full.flops;
  row("indexer.proj", s.indexer_proj, f.indexer_proj, "FLOP");
  row("indexer.score", s.indexer_score, f.indexer_score, "FLOP");
  if (s.reindex_proj > 0) {
    row("reindex.proj", s.reindex_proj, f.reindex_proj, "FLOP");
    row("reindex.score", s.reindex_score, f.reindex_score, "FLOP");
  }
  row("attention.proj", s.attn_proj, f.attn_proj, "FLOP");
  row("attention.core", s.attn_core, f.attn_core, "FLOP");
  row("mlp.dense", s.mlp_dense, f.mlp_dense, "FLOP");
  row("mlp.moe", s.mlp_moe, f.mlp_moe, "FLOP");
  row("lm_head", s.lm_head, f.lm_head, "FLOP");
  row("total", s.total(), f.total(), "FLOP");
  if (r.shared.bytes_modelled) {
    const auto &sb = r.shared.bytes, &fb = r.all_full.bytes;
    row("bytes.weights", sb.weights, fb.weights, "B");
    row("bytes.mla_cache", sb.mla_cache, fb.mla_cache, "B");
    row("bytes.indexer_cache", sb.indexer_cache, fb.indexer_cache, "B");
    row("bytes.total", sb.total(), fb.total(), "B");
  }
  fmt::print("FLOP ratio (all-F / shared): {:.3f}x", r.ratio);
  if (r.shared.bytes_modelled) fmt::print("   byte ratio: {:.3f}x", r.bytes_ratio);
  fmt::print("\n");
}

int run_cost(const CostArgs& a) {
  IS_CHECK(a.preset.empty() || a.config.empty(), "give either --preset or --config, not both");
  const std::string name = a.config.empty() ? (a.preset.empty() ? "glm5.2" : a.preset) : a.config;
  const io::HfConfig cfg = a.config.empty() ? cost::preset_config(name) : io::read_hf_config(a.config);
  const cost::Arch arch = cost::arch_from_config(cfg, name);
  IS_CHECK(a.pattern.empty() || cfg.is_dsa(), "--pattern: model_type ", cfg.model_type, " has no indexer");
  const share::Schedule schedule =
      !a.pattern.empty() ? share::Schedule::from_pattern(a.pattern)
      : cfg.is_dsa()     ? cfg.schedule()
                         : share::Schedule::all_full(static_cast<int>(cfg.num_hidden_layers));
  IS_CHECK(schedule.num_layers() == cfg.num_hidden_layers, "--pattern has ", schedule.num_layers(),
           " layers but the model has ", cfg.num_hidden_layers);
  cost::CostOptions opt;
  opt.weight_bytes = weight_bytes_of(a.weight_dtype);
  opt.candidates = a.candidates > 0 ? a.candidates : cfg.index_reindex_candidates;
  opt.reindex_heads = a.reindex_heads > 0 ? a.reindex_heads : cfg.index_reindex_n_heads;
  opt.reindex_head_dim = a.reindex_dim > 0 ? a.reindex_dim : cfg.index_reindex_head_dim;
  IS_CHECK(!schedule.has_reindex() || opt.candidates > 0, "the schedule ", schedule.pattern(),
           " has reindex (R) layers: give --candidates (or index_reindex_candidates in the config)");

  std::vector<int64_t> contexts;
  for (const auto& c : a.contexts) contexts.push_back(parse_context(c));
  if (contexts.empty()) contexts.push_back(1048576);
  IS_CHECK(a.phase == "decode" || a.phase == "prefill" || a.phase == "both", "--phase '", a.phase,
           "': expected decode, prefill or both");
  std::vector<cost::Phase> phases;
  if (a.phase != "prefill") phases.push_back(cost::Phase::kDecode);
  if (a.phase != "decode") phases.push_back(cost::Phase::kPrefill);

  std::vector<cost::Comparison> results;
  for (int64_t L : contexts)
    for (auto p : phases) results.push_back(cost::compare(arch, schedule, p, L, opt));

  const double cache_shared = cost::cache_bytes_per_token(arch, schedule, opt);
  const double cache_full = cost::cache_bytes_per_token(arch, share::Schedule::all_full(schedule.num_layers()), opt);
  for (const auto& w : cfg.warnings) fmt::print(stderr, "indexshare: warning: {}: {}\n", cfg.source, w);

  if (a.json) {
    json out;
    out["model"] = {{"name", name},
                    {"source", cfg.source},
                    {"model_type", cfg.model_type},
                    {"layers", cfg.num_hidden_layers}};
    out["schedule"] = {{"summary", schedule.summary()},
                       {"pattern", schedule.pattern()},
                       {"num_full", schedule.num_full()},
                       {"num_shared", schedule.num_shared()},
                       {"num_reindex", schedule.num_reindex()},
                       {"candidates", schedule.has_reindex() ? json(opt.candidates) : json(nullptr)},
                       {"full_layers", schedule.full_layers()},
                       {"origin", cfg.is_dsa() ? std::string(share::origin_name(schedule.origin())) : "no indexer"}};
    out["weight_dtype"] = a.weight_dtype;
    out["weight_bytes"] = opt.weight_bytes;
    out["cache_bytes_per_token"] = {{"shared", cache_shared}, {"all_full", cache_full}};
    out["conventions"] =
        "2 FLOPs per MAC, matrix products only (norms, RoPE, softmax, activations, router scoring and "
        "top-k selection excluded); absorbed MLA; decode: L keys scored, min(K, L) attended; prefill: "
        "mean over a causal sequence of length L, logits for the last position only; bytes: decode, "
        "batch 1, active weights + cache entries read; see docs/cost-model.md";
    json rs = json::array();
    for (const auto& r : results)
      rs.push_back({{"phase", cost::phase_name(r.phase)},
                    {"context", r.context},
                    {"keys_scored", r.shared.keys_scored},
                    {"keys_attended", r.shared.keys_attended},
                    {"keys_rescored", r.shared.keys_rescored},
                    {"shared", cost_json(r.shared)},
                    {"all_full", cost_json(r.all_full)},
                    {"ratio", r.ratio},
                    {"bytes_ratio", r.shared.bytes_modelled ? json(r.bytes_ratio) : json(nullptr)}});
    out["results"] = rs;
    out["ratio"] = results.front().ratio;  // the first context, decode first when both phases
    out["warnings"] = cfg.warnings;
    fmt::print("{}\n", out.dump(2));
    return 0;
  }

  fmt::print("model     {} ({}, {} layers), weights {} ({} B/param)\n", name, cfg.model_type, cfg.num_hidden_layers,
             a.weight_dtype, opt.weight_bytes);
  if (cfg.is_dsa()) {
    fmt::print("schedule  {}  (from {})\n", schedule.summary(),
               a.pattern.empty() ? share::origin_name(schedule.origin()) : "--pattern");
    if (schedule.has_reindex())
      fmt::print("reindex   R layers re-score the top-{} candidates of their F layer with {} heads x {} dims\n",
                 opt.candidates, opt.reindex_heads > 0 ? opt.reindex_heads : arch.index_heads,
                 opt.reindex_head_dim > 0 ? opt.reindex_head_dim : arch.index_head_dim);
    fmt::print("cache     {}B per token shared, {}B all-F (MLA {} B x {} layers, indexer K {} B x F layers)\n",
               si(cache_shared), si(cache_full), cost::mla_entry_bytes(arch), arch.layers,
               cost::indexer_entry_bytes(arch));
  } else {
    fmt::print("schedule  none (model_type {} has no indexer)\n", cfg.model_type);
  }
  for (const auto& r : results) print_table(r);
  return 0;
}

CommandRegistrar reg("cost", "per-token FLOPs and bytes of a DSA model, shared schedule vs all layers F",
                     [](CLI::App& app) {
                       auto a = std::make_shared<CostArgs>();
                       app.add_option("--preset", a->preset,
                                      "built-in model: glm5, glm5.2, deepseek-v3.2 (default glm5.2)");
                       app.add_option("--config", a->config, "a Hugging Face config.json instead of a preset");
                       app.add_option("--context", a->contexts,
                                      "context length(s) L, e.g. 131072,1M (K/M = 1024/1024^2; default 1M)")
                           ->delimiter(',');
                       app.add_option("--phase", a->phase, "decode, prefill or both (default decode)");
                       app.add_option("--weight-dtype", a->weight_dtype, "fp8, bf16, f16 or f32 (default fp8)");
                       app.add_option("--pattern", a->pattern,
                                      "schedule to cost instead of the config's: one F / S / R per layer");
                       app.add_option("--candidates", a->candidates,
                                      "R layers: candidates C an F layer carries over (index_reindex_candidates)");
                       app.add_option("--reindex-heads", a->reindex_heads, "R layers: indexer heads (default: the F indexer's)");
                       app.add_option("--reindex-dim", a->reindex_dim, "R layers: indexer head dim (default: the F indexer's)");
                       app.add_flag("--json", a->json, "print one JSON object");
                       return [a] { return run_cost(*a); };
                     });

}  // namespace
}  // namespace indexshare::cli

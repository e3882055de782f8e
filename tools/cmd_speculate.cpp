// indexshare speculate: MTP speculative decoding measured on held-out text — acceptance length
// and tokens/s against plain decoding, per domain, draft length and draft attention.
//
// Per domain (eval/domains.h, eval split) and window: the prompt is `--ctx` tokens of the text,
// then `--new` tokens are generated greedily by plain decoding (the baseline: one target forward
// per token) and by speculative decoding for every draft length and draft attention, all with
// the same target (DSA on by default: the committed per-layer indexers, top-k --dsa-topk). The
// prompt's prefill is done once per window and reused (SpeculativeDecoder keeps it); tokens/s
// counts generation only. Every speculative output is checked against the plain one.
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "command.h"
#include "core/error.h"
#include "eval/domains.h"
#include "eval/plot.h"
#include "io/indexer_file.h"
#include "io/mtp_file.h"
#include "model/speculative.h"
#include "model_session.h"
#include "progress.h"

#ifndef INDEXSHARE_DATA_DIR
#define INDEXSHARE_DATA_DIR "data"
#endif

namespace indexshare::cli {
namespace {
namespace fs = std::filesystem;

struct SpeculateArgs {
  std::string model, mtp, domains = "all", drafts = "1,2,3,4", attentions = "dense,indexer,share-step0,share-target";
  std::string indexers, json, plot;
  int64_t ctx = 4096;
  int windows = 2, max_new = 128, topk = 512, draft_vocab = 0;
  float temperature = 0.0f;
  uint64_t seed = 1;
  bool dense_target = false;
  std::string draft_weights = "q8_0";
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  for (size_t b = 0; b <= s.size();) {
    const size_t e = std::min(s.find(',', b), s.size());
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}


// Per configuration: rounds' accepted counts (for the mean and its interval), tokens and time.
struct Tally {
  std::vector<int> accepted;  // per round
  int64_t tokens = 0, drafted = 0, equal = 0, runs = 0;
  double seconds = 0.0, target_seconds = 0.0, draft_seconds = 0.0;
  std::vector<double> window_lengths;  // acceptance length per window
  void add(const model::SpeculativeStats& s, int64_t generated, bool same) {
    for (size_t a = 0; a < s.accepted_hist.size(); ++a)
      for (int64_t r = 0; r < s.accepted_hist[a]; ++r) accepted.push_back(static_cast<int>(a));
    tokens += generated;
    drafted += s.drafted;
    seconds += s.generate_seconds;
    target_seconds += s.target_seconds;
    draft_seconds += s.draft_seconds;
    equal += same ? 1 : 0;
    ++runs;
    window_lengths.push_back(s.acceptance_length());
  }
  // Tokens per target forward = 1 + mean accepted per round; 95% interval over rounds (normal).
  std::pair<double, double> length_ci() const {
    if (accepted.empty()) return {0.0, 0.0};
    double m = 0.0, v = 0.0;
    for (int a : accepted) m += a;
    m /= static_cast<double>(accepted.size());
    for (int a : accepted) v += (a - m) * (a - m);
    v /= std::max<double>(1.0, static_cast<double>(accepted.size()) - 1.0);
    return {1.0 + m, 1.96 * std::sqrt(v / static_cast<double>(accepted.size()))};
  }
  int64_t accepted_total() const {
    int64_t s = 0;
    for (int a : accepted) s += a;
    return s;
  }
};

int run(const SpeculateArgs& a) {
  IS_CHECK(!a.mtp.empty(), "speculate: give --mtp FILE (an MTP head, scripts/train_mtp.py)");
  IS_CHECK(a.ctx >= 16 && a.windows >= 1 && a.max_new >= 1, "speculate: --ctx >= 16, --windows >= 1, --new >= 1");
  IS_CHECK(a.temperature >= 0.0f && std::isfinite(a.temperature), "speculate: --temp must be >= 0, got ", a.temperature);
  std::vector<int> drafts;
  for (const auto& d : split_list(a.drafts)) {
    try {
      drafts.push_back(std::stoi(d));
    } catch (const std::exception&) {
      fail("speculate: --drafts '", a.drafts, "' is not a comma list of integers");
    }
    IS_CHECK(drafts.back() >= 1 && drafts.back() <= 16, "speculate: a draft length must be in [1, 16], got ", drafts.back());
  }
  IS_CHECK(!drafts.empty(), "speculate: --drafts is empty");
  std::vector<model::DraftAttention> atts;
  for (const auto& s : split_list(a.attentions)) atts.push_back(model::parse_draft_attention(s));
  IS_CHECK(!atts.empty(), "speculate: --draft-attention is empty");
  const int maxN = *std::max_element(drafts.begin(), drafts.end());

  ModelSession s = load_model_session(a.model);
  const auto& cfg = s.model().config();
  const std::string fp = io::model_fingerprint(a.model);
  const io::MtpFile mf = io::load_mtp(a.mtp, s.model(), fp);
  IS_CHECK(a.draft_weights == "q8_0" || a.draft_weights == "stored", "speculate: --draft-weights must be q8_0 or stored, got '",
           a.draft_weights, "'");
  const model::MtpHead head(s.model(), mf.weights, static_cast<int>(a.draft_vocab), a.draft_weights == "q8_0");
  const int64_t cap = a.ctx + a.max_new + maxN;
  IS_CHECK(cap <= cfg.context_length, "speculate: --ctx ", a.ctx, " + --new ", a.max_new, " + the longest draft ", maxN,
           " exceeds the model's context of ", cfg.context_length);

  // The target: DSA every layer with the per-layer indexers (or dense with --dense-target).
  std::unique_ptr<io::IndexerFile> idx;
  std::unique_ptr<model::LlamaDsaBackend> dsa;
  std::string target = "dense";
  if (!a.dense_target) {
    std::string path = a.indexers;
    if (path.empty()) {
      fs::path m(a.model);
      path = std::string(INDEXSHARE_DATA_DIR) + "/indexers/" + m.stem().string() + ".per-layer.safetensors";
    }
    idx = std::make_unique<io::IndexerFile>(io::load_indexers(path, fp, cfg.n_layers));
    IS_CHECK(a.topk >= 1 && a.topk <= a.ctx, "speculate: --dsa-topk must be in [1, --ctx], got ", a.topk);
    model::DsaOptions o;
    o.topk = a.topk;
    o.schedule = share::Schedule::all_full(cfg.n_layers);
    o.indexers = &idx->set;
    o.capacity = cap;
    dsa = std::make_unique<model::LlamaDsaBackend>(cfg, o);
    target = fmt::format("DSA every layer, top-{} ({})", a.topk, path);
  } else {
    for (auto at : atts)
      IS_CHECK(at != model::DraftAttention::kShareTarget,
               "speculate: share-target reuses the target's DSA sets; drop it with --dense-target");
  }
  std::vector<eval::DomainSpec> specs;
  if (a.domains == "all") {
    specs = eval::builtin_domains();
  } else {
    for (const auto& n : split_list(a.domains)) specs.push_back(eval::find_domain(n));
  }
  fmt::print(stderr, "speculate: target {}; MTP head {} (draft vocabulary {}); prompt {} tokens, {} new, {} window(s) "
                     "per domain; head weights {}\n", target, a.mtp, head.draft_vocab(), a.ctx, a.max_new, a.windows, a.draft_weights);

  // Results: [domain][attention][draft] and the plain baseline per domain.
  struct Key {
    std::string domain;
    int att, N;
    bool operator<(const Key& o) const { return std::tie(domain, att, N) < std::tie(o.domain, o.att, o.N); }
  };
  std::map<Key, Tally> tally;
  std::map<std::string, std::pair<int64_t, double>> plain;  // domain -> tokens, seconds
  std::map<std::string, std::string> skipped, corpus;
  const int64_t runs = static_cast<int64_t>(specs.size()) * a.windows * (1 + static_cast<int64_t>(atts.size() * drafts.size()));
  ProgressBar bar("speculate", runs, "runs");
  int64_t done = 0;
  model::SpeculativeOptions so;
  so.topk = a.topk;
  so.capacity = cap;
  so.temperature = a.temperature;
  so.seed = a.seed;
  so.draft_tokens = drafts[0];
  so.draft_attention = atts[0];
  for (const auto& d : specs) {
    std::vector<int32_t> toks;
    try {
      const eval::Corpus dc = eval::load_domain(d, eval::CorpusSplit::kEval, (a.ctx + a.max_new) * a.windows * 8 + (1 << 20));
      corpus[d.name] = fmt::format("{} files, {:.2f} MB", dc.files.size(), dc.text.size() / 1e6);
      toks = s.tokenizer->encode(dc.text, false, false);
    } catch (const Error& e) {
      skipped[d.name] = e.what();
    }
    const int64_t need = (a.ctx + a.max_new) * a.windows;
    if (skipped.count(d.name) == 0 && static_cast<int64_t>(toks.size()) < need)
      skipped[d.name] = fmt::format("its eval split has {} tokens, fewer than {}", toks.size(), need);
    if (skipped.count(d.name)) {
      done += a.windows * (1 + static_cast<int64_t>(atts.size() * drafts.size()));
      bar.update(done, d.name + ": skipped");
      continue;
    }
    model::SpeculativeDecoder dec(s.model(), head, so, dsa.get());
    for (int w = 0; w < a.windows; ++w) {
      // Windows spread over the split (the text after each prompt is the text it continues).
      const int64_t start = static_cast<int64_t>(toks.size() - a.ctx - a.max_new) * w / std::max(1, a.windows);
      const std::span<const int32_t> prompt(toks.data() + start, static_cast<size_t>(a.ctx));
      bar.update(done, fmt::format("{} window {}: plain", d.name, w + 1));
      model::PlainStats ps;
      const std::vector<int32_t> ref =
          model::plain_decode(s.model(), prompt, a.max_new, a.temperature, a.seed, cap, dsa.get(), -1, &ps);
      plain[d.name].first += static_cast<int64_t>(ref.size());
      plain[d.name].second += ps.decode_seconds;
      ++done;
      for (size_t ai = 0; ai < atts.size(); ++ai)
        for (int N : drafts) {
          bar.update(done, fmt::format("{} window {}: {} N={}", d.name, w + 1, model::draft_attention_name(atts[ai]), N));
          dec.set_draft(N, atts[ai]);
          const std::vector<int32_t> out = dec.generate(prompt, a.max_new);
          tally[{d.name, static_cast<int>(ai), N}].add(dec.stats(), static_cast<int64_t>(out.size()), out == ref);
          ++done;
        }
    }
  }
  bar.finish();

  // Tables: per draft attention and N over all domains, then per domain.
  auto speed = [&](const std::string& dom, const Tally& t) {
    const auto& p = plain[dom];
    return (t.tokens / t.seconds) / (p.first / p.second);
  };
  fmt::print("\nMTP speculative decoding, {}; target: {}; prompt {} tokens, {} generated per window.\n",
             a.temperature == 0.0f ? std::string("greedy") : fmt::format("sampling at temperature {}", a.temperature), target,
             a.ctx, a.max_new);
  if (a.temperature > 0.0f)
    fmt::print("Sampling: outputs differ from plain decoding's draws (other random streams), so 'output == plain' "
               "does not apply; the distribution is the target's (tests/mtp_test.cpp).\n");
  fmt::print("Acceptance length = tokens per target forward (1 + accepted drafts per round), 95% interval over "
             "rounds; speed-up = generation tokens/s against plain decoding of the same windows.\n\n");
  fmt::print("| draft attention | N | acceptance length | drafts accepted | speed-up (all domains) | ms per round: verify + draft | output == plain |\n");
  fmt::print("|---|---|---|---|---|---|---|\n");
  nlohmann::json jrows = nlohmann::json::array();
  for (size_t ai = 0; ai < atts.size(); ++ai)
    for (int N : drafts) {
      Tally all;
      double plain_s = 0, plain_t = 0;
      for (const auto& [k, t] : tally) {
        if (k.att != static_cast<int>(ai) || k.N != N) continue;
        all.accepted.insert(all.accepted.end(), t.accepted.begin(), t.accepted.end());
        all.tokens += t.tokens;
        all.drafted += t.drafted;
        all.seconds += t.seconds;
        all.target_seconds += t.target_seconds;
        all.draft_seconds += t.draft_seconds;
        all.equal += t.equal;
        all.runs += t.runs;
        plain_t += static_cast<double>(plain[k.domain].first);
        plain_s += plain[k.domain].second;
      }
      if (all.runs == 0) continue;
      const auto [len, ci] = all.length_ci();
      const double sp = (all.tokens / all.seconds) / (plain_t / plain_s);
      const double rounds = static_cast<double>(std::max<size_t>(1, all.accepted.size()));
      fmt::print("| {} | {} | {:.3f} ± {:.3f} | {:.1f}% | {:.2f}x | {:.1f} + {:.1f} | {}/{} |\n",
                 model::draft_attention_name(atts[ai]), N, len, ci,
                 all.drafted ? 100.0 * all.accepted_total() / all.drafted : 0.0, sp, 1e3 * all.target_seconds / rounds,
                 1e3 * all.draft_seconds / rounds, all.equal, all.runs);
      jrows.push_back({{"draft_attention", model::draft_attention_name(atts[ai])}, {"draft", N},
                       {"acceptance_length", len}, {"ci95", ci}, {"rounds", all.accepted.size()},
                       {"accepted", all.accepted_total()}, {"drafted", all.drafted}, {"tokens", all.tokens},
                       {"seconds", all.seconds}, {"target_seconds", all.target_seconds},
                       {"draft_seconds", all.draft_seconds}, {"speedup", sp}, {"equal_outputs", all.equal}, {"runs", all.runs}});
    }
  if (!a.plot.empty()) {
    // Acceptance length against N, one curve per draft attention (all domains pooled), each
    // point with its 95% interval as a vertical bar (curves shifted apart a little in N).
    const eval::Rgb colors[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}};
    std::vector<eval::Series> ser;
    for (size_t ai = 0; ai < atts.size(); ++ai) {
      eval::Series se{.name = model::draft_attention_name(atts[ai]), .color = colors[ai % 4]};
      const double dx = 0.04 * (static_cast<double>(ai) - 0.5 * static_cast<double>(atts.size() - 1));
      for (const auto& row : jrows)
        if (row["draft_attention"] == model::draft_attention_name(atts[ai])) {
          const double x = row["draft"].get<double>() + dx, y = row["acceptance_length"].get<double>();
          const double ci = row["ci95"].get<double>();
          se.x.push_back(x);
          se.y.push_back(y);
          ser.push_back(eval::Series{.x = {x, x}, .y = {y - ci, y + ci}, .color = colors[ai % 4]});
        }
      ser.push_back(std::move(se));
    }
    eval::write_chart_png(a.plot, ser,
                          {.title = "MTP drafts: tokens per target forward (95% intervals)",
                           .x_label = "draft length N", .y_label = "acceptance length"});
  }
  fmt::print("\nPlain decoding: {:.1f} ms per token over all domains.\n", [&] {
    double t = 0, n = 0;
    for (const auto& [k, v] : plain) {
      n += static_cast<double>(v.first);
      t += v.second;
    }
    return n > 0 ? 1e3 * t / n : 0.0;
  }());
  fmt::print("\nPer domain (acceptance length ± 95% interval / speed-up):\n\n| domain | plain tokens/s |");
  for (size_t ai = 0; ai < atts.size(); ++ai)
    for (int N : drafts) fmt::print(" {} N={} |", model::draft_attention_name(atts[ai]), N);
  fmt::print("\n|---|---|");
  for (size_t i = 0; i < atts.size() * drafts.size(); ++i) fmt::print("---|");
  fmt::print("\n");
  nlohmann::json jdom = nlohmann::json::array();
  for (const auto& d : specs) {
    const std::string name = d.name + (d.held_out ? " (held out)" : "");
    if (skipped.count(d.name)) {
      fmt::print("| {} | skipped: {} |\n", name, skipped[d.name]);
      jdom.push_back({{"domain", d.name}, {"skipped", skipped[d.name]}});
      continue;
    }
    const auto& p = plain[d.name];
    fmt::print("| {} | {:.1f} |", name, p.first / p.second);
    nlohmann::json jd = {{"domain", d.name}, {"corpus", corpus[d.name]}, {"plain_tokens", p.first},
                         {"plain_seconds", p.second}, {"configs", nlohmann::json::array()}};
    for (size_t ai = 0; ai < atts.size(); ++ai)
      for (int N : drafts) {
        const Tally& t = tally[{d.name, static_cast<int>(ai), N}];
        const auto [len, ci] = t.length_ci();
        fmt::print(" {:.2f} ± {:.2f} / {:.2f}x |", len, ci, speed(d.name, t));
        jd["configs"].push_back({{"draft_attention", model::draft_attention_name(atts[ai])}, {"draft", N},
                                 {"acceptance_length", len}, {"ci95", ci}, {"tokens", t.tokens},
                                 {"seconds", t.seconds}, {"speedup", speed(d.name, t)},
                                 {"equal_outputs", t.equal}, {"runs", t.runs}, {"window_lengths", t.window_lengths}});
      }
    fmt::print("\n");
    jdom.push_back(jd);
  }
  if (!a.json.empty()) {
    nlohmann::json j = {{"target", target},           {"mtp", a.mtp},       {"mtp_metadata", mf.metadata},
                        {"draft_vocab", head.draft_vocab()}, {"draft_weights", a.draft_weights}, {"ctx", a.ctx}, {"new", a.max_new},
                        {"windows", a.windows}, {"temperature", a.temperature},       {"summary", jrows},   {"domains", jdom}};
    std::ofstream(a.json) << j.dump(1) << "\n";
  }
  return 0;
}

CommandRegistrar reg("speculate", "MTP speculative decoding on held-out text: acceptance and speed-up per draft length and draft attention",
                     [](CLI::App& app) {
  auto a = std::make_shared<SpeculateArgs>();
  add_model_option(app, a->model);
  app.add_option("--mtp", a->mtp, "the model's MTP head (scripts/train_mtp.py)")->required();
  app.add_option("--domains", a->domains, "'all' or a comma list of text domains (eval splits)")->capture_default_str();
  app.add_option("--windows", a->windows, "prompts per domain")->capture_default_str();
  app.add_option("--ctx", a->ctx, "prompt tokens (the context generation starts at)")->capture_default_str();
  app.add_option("--new", a->max_new, "tokens generated per prompt")->capture_default_str();
  app.add_option("--drafts", a->drafts, "draft lengths N, comma list")->capture_default_str();
  app.add_option("--draft-attention", a->attentions, "the head's attention, comma list of dense, indexer, share-step0, share-target")
      ->capture_default_str();
  app.add_option("--draft-vocab", a->draft_vocab, "the head drafts from its V most frequent tokens (0 = all)")->capture_default_str();
  app.add_option("--draft-weights", a->draft_weights, "the head's matrices: q8_0 (requantised once) or stored (as in the file)")
      ->capture_default_str();
  app.add_option("--dsa-topk", a->topk, "top-k of the target's DSA and of the head's")->capture_default_str();
  app.add_option("--indexers", a->indexers, "the target's indexers (default: the committed per-layer file)");
  app.add_flag("--dense-target", a->dense_target, "the target runs dense attention (no DSA)");
  app.add_option("--temp", a->temperature, "0 = greedy; > 0: sampling with rejection (Leviathan et al.)")->capture_default_str();
  app.add_option("--seed", a->seed, "sampling seed")->capture_default_str();
  app.add_option("--json", a->json, "write the results as JSON");
  app.add_option("--plot", a->plot, "write acceptance length against N per draft attention as a PNG");
  return [a] { return run(*a); };
});

}  // namespace
}  // namespace indexshare::cli

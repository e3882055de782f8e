// indexshare dsa-run: runs a GLM-MoE-DSA / DeepSeek-V3.2 model (config.json + safetensors) on
// token ids: perplexity of the ids (teacher forcing) and/or greedy generation after them.
#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "dsa_run.h"
#include "core/error.h"
#include "io/glm_dsa_loader.h"
#include "io/mapped_file.h"
#include "backend/backend.h"
#include "model/sampler.h"
#include "model/speculative.h"
#include <optional>

namespace indexshare::cli {
namespace {

using nlohmann::json;

// Ids separated by commas and/or whitespace.
std::vector<int32_t> parse_ids(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  std::string s = text;
  for (char& ch : s)
    if (ch == ',') ch = ' ';
  std::istringstream in(s);
  std::string tok;
  while (in >> tok) {
    size_t pos = 0;
    long long v = -1;
    try {
      v = std::stoll(tok, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    IS_CHECK(pos == tok.size() && v >= 0 && v <= INT32_MAX, what, ": '", tok, "' is not a token id");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

backend::WeightFormat parse_weight_format(const std::string& s) {
  if (s == "f32") return backend::WeightFormat::kF32;
  if (s == "bf16") return backend::WeightFormat::kBf16;
  if (s == "fp8") return backend::WeightFormat::kFp8Block;
  fail("--weights-format: '", s, "' is not one of f32, bf16, fp8");
}

std::optional<backend::CacheFormat> parse_cache_format(const std::string& s, const char* opt) {
  if (s.empty()) return std::nullopt;
  if (s == "f32") return backend::CacheFormat::kF32;
  if (s == "bf16") return backend::CacheFormat::kBf16;
  if (s == "fp8") return backend::CacheFormat::kFp8;
  fail(opt, ": '", s, "' is not one of f32, bf16, fp8");
}

}  // namespace

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::kCpu;
  if (s == "cuda") return Device::kCuda;
  fail("--device: '", s, "' is not one of cpu, cuda");
}

int run_dsa_model(const DsaRunArgs& a) {
  IS_CHECK(!a.model_dir.empty() || (!a.config.empty() && !a.weights.empty()),
           "give --model DIR, or --config FILE and --weights PATH");
  IS_CHECK(a.tokens.empty() == !a.tokens_files.empty(), "give exactly one of --tokens and --tokens-file");
  IS_CHECK(a.perplexity || a.generate > 0 || !a.logits_out.empty(),
           "nothing to do: give --perplexity, --generate N and/or --logits-out FILE");
  IS_CHECK(a.logits_rows >= 1, "--logits-rows must be >= 1");
  std::vector<std::vector<int32_t>> lists;
  if (a.tokens_files.empty()) lists.push_back(parse_ids(a.tokens, "--tokens"));
  for (const auto& f : a.tokens_files) lists.push_back(parse_ids(io::read_text_file(f), f));
  for (const auto& l : lists) IS_CHECK(!l.empty(), "no token ids given");
  IS_CHECK(lists.size() == 1 || (!a.perplexity && a.generate == 0),
           "--perplexity and --generate take one --tokens-file (several are for timings and --logits-out)");
  const std::vector<int32_t>& ids = lists[0];
  size_t longest = 0;
  for (const auto& l : lists) longest = std::max(longest, l.size());
  IS_CHECK(!a.perplexity || ids.size() >= 2, "--perplexity needs at least 2 token ids");

  const std::string cfg = a.config.empty() ? a.model_dir + "/config.json" : a.config;
  const std::string wts = a.weights.empty() ? a.model_dir : a.weights;
  std::vector<std::string> warnings;
  const Device device = parse_device(a.device);
  IS_CHECK(a.chunk >= 1, "--chunk must be >= 1");
  model::ModelOptions mo;
  mo.weights = a.weight_format.empty()
                   ? (device == Device::kCpu ? backend::WeightFormat::kF32 : backend::WeightFormat::kBf16)
                   : parse_weight_format(a.weight_format);
  mo.latent_cache = parse_cache_format(a.latent_cache, "--latent-cache");
  mo.indexer_cache = parse_cache_format(a.indexer_cache, "--indexer-cache");
  IS_CHECK(!a.mtp || a.generate > 0, "--mtp drafts for --generate: give --generate N");
  IS_CHECK(a.draft >= 1, "--draft must be >= 1, got ", a.draft);
  mo.mtp = a.mtp;
  const int64_t needed = static_cast<int64_t>(longest) + a.generate + (a.mtp ? a.draft : 0);
  IS_CHECK(a.max_tokens == 0 || a.max_tokens >= needed, "--ctx ", a.max_tokens, " is below the ", needed,
           " tokens this run needs (ids + --generate + --draft with --mtp)");
  mo.max_tokens = a.max_tokens > 0 ? a.max_tokens : (a.warmup ? 2 : 1) * needed + 64;
  mo.max_step_rows = a.chunk;
  std::shared_ptr<backend::Backend> be = backend::make_backend(device);
  const auto t_load = std::chrono::steady_clock::now();
  model::GlmDsaModel m = io::load_glm_dsa(cfg, wts, &warnings, be, mo);
  const double load_s = seconds_since(t_load);
  for (const auto& w : warnings) fmt::print(stderr, "indexshare: warning: {}\n", w);
  const auto& c = m.config();
  const int64_t V = c.vocab_size;

  model::ForwardTrace tr;
  model::ForwardOptions fo;
  fo.logits = a.perplexity ? model::LogitRows::kAll : model::LogitRows::kLast;
  std::vector<double> run_s;
  model::GlmDsaCache cache;
  std::vector<float> logits;
  for (size_t i = 0; i < lists.size(); ++i) {
    fo.last_rows = std::min<int64_t>(a.logits_rows, static_cast<int64_t>(lists[i].size()));
    if (a.warmup) {
      auto w = m.new_cache();
      m.forward(w, lists[i], fo);
    }
    cache = m.new_cache();
    const auto t_pre = std::chrono::steady_clock::now();
    logits = m.forward(cache, lists[i], fo, i == 0 ? &tr : nullptr);
    be->synchronize();
    run_s.push_back(seconds_since(t_pre));
    if (!a.logits_out.empty()) {
      const int64_t rows = std::min<int64_t>(a.logits_rows, static_cast<int64_t>(logits.size()) / V);
      const std::string path = lists.size() == 1 ? a.logits_out : a.logits_out + "." + std::to_string(i);
      std::ofstream f(path, std::ios::binary);
      f.write(reinterpret_cast<const char*>(logits.data() + logits.size() - static_cast<size_t>(rows * V)),
              static_cast<std::streamsize>(rows * V * sizeof(float)));
      IS_CHECK(f.good(), "--logits-out: cannot write ", path);
    }
  }
  const double prefill_s = run_s[0];

  double nll = 0;
  const int64_t n_pred = static_cast<int64_t>(ids.size()) - 1;
  if (a.perplexity) {
    for (int64_t t = 0; t < n_pred; ++t) {
      const float* row = logits.data() + t * V;
      double mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
      nll += mx + std::log(z) - row[ids[static_cast<size_t>(t + 1)]];
    }
    nll /= static_cast<double>(n_pred);
  }

  std::vector<int32_t> generated;
  double decode_s = 0;
  model::SpeculativeStats spec;
  if (a.generate > 0 && a.mtp) {
    // The prefill above stays the timed one; the decoder runs its own on a fresh sequence.
    cache = model::GlmDsaCache{};
    model::SpeculativeOptions so;
    so.draft_tokens = a.draft;
    so.draft_attention = model::parse_draft_attention(a.draft_attention);
    model::SpeculativeDecoder dec(model::make_glm_pair(m), so);
    generated = dec.generate(ids, a.generate);
    spec = dec.stats();
    decode_s = spec.generate_seconds;
  } else if (a.generate > 0) {
    std::vector<float> last(logits.end() - V, logits.end());
    const auto t_dec = std::chrono::steady_clock::now();
    for (int g = 0; g < a.generate; ++g) {
      int32_t best = 0;
      for (int64_t v = 1; v < V; ++v)
        if (last[static_cast<size_t>(v)] > last[static_cast<size_t>(best)]) best = static_cast<int32_t>(v);
      generated.push_back(best);
      if (g + 1 < a.generate) last = m.forward(cache, std::vector<int32_t>{best});
    }
    decode_s = seconds_since(t_dec);
  }

  const std::string arch(model::arch_name(c.arch));
  if (a.json) {
    json out;
    out["model"] = {{"config", cfg}, {"weights", wts}, {"arch", arch}, {"layers", c.num_layers}};
    out["device"] = {{"backend", be->name()},
                     {"weights", backend::weight_format_name(mo.weights)},
                     {"latent_cache", backend::cache_format_name(m.latent_format())},
                     {"indexer_cache", backend::cache_format_name(m.indexer_format())},
                     {"weight_bytes", m.weight_bytes()},
                     {"latent_cache_bytes", m.latent_cache_bytes()},
                     {"indexer_cache_bytes", m.indexer_cache_bytes()}};
    out["schedule"] = {{"pattern", c.schedule.pattern()},
                       {"num_full", c.schedule.num_full()},
                       {"num_shared", c.schedule.num_shared()}};
    out["index_topk"] = c.index_topk;
    out["tokens"] = ids.size();
    out["indexer_calls"] = tr.indexer_calls;
    out["shared_layers"] = tr.shared_layers;
    if (a.perplexity) out["nll"] = nll, out["perplexity"] = std::exp(nll), out["predictions"] = n_pred;
    if (a.generate > 0) out["generated"] = generated;
    if (a.mtp)
      out["speculative"] = {{"draft", a.draft},
                            {"draft_attention", a.draft_attention},
                            {"rounds", spec.rounds},
                            {"drafted", spec.drafted},
                            {"accepted", spec.accepted},
                            {"accepted_hist", spec.accepted_hist},
                            {"tokens_per_target_forward", spec.acceptance_length()},
                            {"draft_indexer_calls", spec.draft_indexer_calls},
                            {"target_seconds", spec.target_seconds},
                            {"draft_seconds", spec.draft_seconds}};
    out["seconds"] = {{"load", load_s}, {"prefill", prefill_s}, {"decode", decode_s}};
    out["runs"] = json::array();
    for (size_t i = 0; i < lists.size(); ++i)
      out["runs"].push_back({{"tokens", lists[i].size()}, {"prefill_seconds", run_s[i]}});
    out["warnings"] = warnings;
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("model     {} ({} layers, index_topk {}), loaded in {:.2f} s\n", arch, c.num_layers, c.index_topk,
             load_s);
  fmt::print("device    {}: {} weights ({:.1f} MB), latent cache {} ({:.1f} MB), indexer cache {} ({:.1f} MB, F layers only)\n",
             be->name(), backend::weight_format_name(mo.weights), m.weight_bytes() / 1e6,
             backend::cache_format_name(m.latent_format()), m.latent_cache_bytes() / 1e6,
             backend::cache_format_name(m.indexer_format()), m.indexer_cache_bytes() / 1e6);
  fmt::print("schedule  {}\n", c.schedule.summary());
  fmt::print("prefill   {} tokens in {:.3f} s ({:.1f} tok/s)\n", ids.size(), prefill_s,
             static_cast<double>(ids.size()) / std::max(prefill_s, 1e-9));
  if (a.perplexity) fmt::print("nll       {:.6f}  perplexity {:.4f}  ({} predictions)\n", nll, std::exp(nll), n_pred);
  if (a.generate > 0) {
    std::string s;
    for (size_t i = 0; i < generated.size(); ++i) s += (i ? " " : "") + std::to_string(generated[i]);
    fmt::print("generated {}  ({:.1f} tok/s)\n", s, static_cast<double>(a.generate) / std::max(decode_s, 1e-9));
    if (a.mtp)
      fmt::print("mtp       --draft {}, draft attention {}: {} rounds, {:.2f} tokens per target forward, {} of {} drafts "
                 "accepted\n",
                 a.draft, a.draft_attention, spec.rounds, spec.acceptance_length(), spec.accepted, spec.drafted);
  }
  return 0;
}

namespace {

CommandRegistrar reg("dsa-run", "run a glm_moe_dsa / deepseek_v32 model on token ids (perplexity, greedy generation)",
                     [](CLI::App& app) {
                       auto a = std::make_shared<DsaRunArgs>();
                       app.add_option("--model", a->model_dir, "model directory (config.json + safetensors)");
                       app.add_option("--config", a->config, "config.json (instead of --model)");
                       app.add_option("--weights", a->weights, "safetensors file or directory (instead of --model)");
                       app.add_option("--tokens", a->tokens, "token ids, comma or space separated");
                       app.add_option("--tokens-file", a->tokens_files,
                                      "file of token ids (repeatable: each file is its own sequence)");
                       app.add_option("--generate", a->generate, "greedy-generate N tokens after the ids")
                           ->check(CLI::NonNegativeNumber);
                       app.add_flag("--perplexity", a->perplexity, "mean NLL / perplexity of the ids");
                       app.add_flag("--json", a->json, "print JSON");
                       app.add_option("--device", a->device, "cpu or cuda (default cpu)");
                       app.add_option("--weights-format", a->weight_format,
                                      "weights on the device: f32, bf16 or fp8 (128x128 block scales); default f32 on "
                                      "the CPU, bf16 on CUDA");
                       app.add_option("--latent-cache", a->latent_cache, "MLA latent cache: f32 or bf16 (default: fastest)");
                       app.add_option("--indexer-cache", a->indexer_cache, "indexer key cache: f32 or fp8 (default: fastest)");
                       app.add_option("-c,--ctx", a->max_tokens, "cache capacity in tokens (default: what the run needs)")
                           ->check(CLI::NonNegativeNumber);
                       app.add_option("--chunk", a->chunk, "prefill chunk in tokens (default 4096)")->check(CLI::PositiveNumber);
                       app.add_option("--logits-out", a->logits_out, "write the logits of the last --logits-rows ids (raw f32)");
                       app.add_option("--logits-rows", a->logits_rows, "rows for --logits-out (default 1)")
                           ->check(CLI::PositiveNumber);
                       app.add_flag("--warmup", a->warmup, "run the prefill once before the timed run");
                       app.add_flag("--mtp", a->mtp,
                                    "--generate by speculative decoding, the checkpoint's MTP (nextn) layer drafting");
                       app.add_option("--draft", a->draft, "with --mtp: draft tokens per round (default 3)");
                       app.add_option("--draft-attention", a->draft_attention,
                                      "with --mtp: the draft layer's attention: dense, indexer, share-target or "
                                      "share-step0 (default; GLM-5.2's index_share_for_mtp_iteration)");
                       return [a] { return run_dsa_model(*a); };
                     });

}  // namespace
}  // namespace indexshare::cli

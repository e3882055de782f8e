// indexshare perplexity: text file -> perplexity over fixed-size windows (llama-perplexity's way).
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "command.h"
#include "dsa_options.h"
#include "dsa_run.h"

#include <filesystem>
#include "core/error.h"
#include "eval/perplexity.h"
#include "io/mapped_file.h"
#include "model_session.h"
#include "progress.h"

namespace indexshare::cli {
namespace {

struct PerplexityArgs {
  std::string model, file;
  int64_t ctx = 512;
  int64_t windows = 0;
  bool json = false;
  std::string kv = "f16";
  std::string device = "cpu";
  DsaArgs dsa;
};

int run(const PerplexityArgs& a) {
  if (std::filesystem::is_directory(a.model)) {  // a DSA-native model: --file holds token ids
    IS_CHECK(!a.dsa.dsa, "perplexity: --dsa is for GGUF models; a model directory runs its own indexers");
    return run_dsa_model(
        {.model_dir = a.model, .tokens_files = {a.file}, .perplexity = true, .json = a.json, .device = a.device});
  }
  IS_CHECK(parse_device(a.device) == Device::kCpu,
           "perplexity: GGUF (Llama-family) models run on the CPU; --device cuda is for model directories");
  ModelSession s = load_model_session(a.model);
  const std::string text = io::read_text_file(a.file);
  IS_CHECK(!text.empty(), a.file, ": the file is empty");
  const std::vector<int32_t> tokens = s.tokenizer->encode(text, true, false);
  IS_CHECK(a.ctx >= 2, "perplexity: --ctx must be >= 2, got ", a.ctx);
  DsaSetup dsa = make_dsa(a.dsa, s.model().config(), a.model, a.ctx);
  if (dsa.backend) fmt::print(stderr, "{}\n", dsa.summary);
  eval::PerplexityOptions o;
  IS_CHECK(a.kv == "f16" || a.kv == "f32", "perplexity: --kv must be f16 or f32, got '", a.kv, "'");
  o.kv = a.kv == "f32" ? model::KvType::kF32 : model::KvType::kF16;
  o.ctx = a.ctx;
  o.max_windows = a.windows;
  o.bos = s.tokenizer->add_bos() ? s.tokenizer->bos_id() : -1;
  const int64_t total = std::min<int64_t>(static_cast<int64_t>(tokens.size()) / std::max<int64_t>(a.ctx, 1),
                                          a.windows > 0 ? a.windows : INT64_MAX);
  ProgressBar bar("perplexity", std::max<int64_t>(total, 1), "windows");
  const eval::PerplexityResult r = eval::perplexity(s.model(), tokens, o, dsa.backend.get(), [&](int64_t done, int64_t, double ppl) {
    bar.update(done, fmt::format("ppl {:.4f}", ppl));
  });
  bar.finish(fmt::format("ppl {:.4f}", r.ppl));
  if (a.json) {
    nlohmann::json j = {{"file", a.file},          {"tokens", tokens.size()},   {"ctx", a.ctx},
                        {"windows", r.windows},    {"scored", r.scored},        {"ppl", r.ppl},
                        {"mean_nll", r.mean_nll},  {"running_ppl", r.running_ppl},
                        {"seconds", r.seconds},    {"tokens_per_second", r.tokens_per_second}};
    if (dsa.backend) {
      const auto& o2 = dsa.backend->options();
      j["dsa"] = {{"topk", o2.topk}, {"pattern", o2.schedule.pattern()},
                  {"selection", o2.selection == model::DsaSelection::kOracle ? "oracle" : "indexer"},
                  {"indexer_calls", dsa.backend->counters().indexer_calls}, {"reused", dsa.backend->counters().reused}};
    }
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("file {}: {} tokens, {} windows of {} (scored {} predictions)\n", a.file, tokens.size(), r.windows, a.ctx,
               r.scored);
    fmt::print("perplexity {:.4f}  (mean NLL {:.5f}) in {:.1f} s, {:.1f} tokens/s\n", r.ppl, r.mean_nll, r.seconds,
               r.tokens_per_second);
  }
  return 0;
}

CommandRegistrar reg("perplexity", "perplexity of a text file over fixed-size windows", [](CLI::App& app) {
  auto a = std::make_shared<PerplexityArgs>();
  add_model_option(app, a->model);
  app.add_option("-f,--file", a->file, "text file (token ids for a model directory without a tokenizer)")->required();
  app.add_option("-c,--ctx", a->ctx, "window size in tokens")->capture_default_str();
  app.add_option("--windows", a->windows, "evaluate at most this many windows (0 = all)")->capture_default_str();
  app.add_flag("--json", a->json, "print the result as JSON");
  app.add_option("--device", a->device, "cpu or cuda (cuda: model directories)")->capture_default_str();
  app.add_option("--kv", a->kv, "KV-cache type: f16 or f32")->capture_default_str();
  add_dsa_options(app, a->dsa);
  return [a] { return run(*a); };
});

}  // namespace
}  // namespace indexshare::cli

// indexshare generate: prompt -> streamed text, then prompt and generation speed.
#include <fmt/core.h>

#include <chrono>
#include <cstdio>

#include "command.h"
#include "dsa_options.h"
#include "dsa_run.h"

#include <filesystem>
#include "core/error.h"
#include "io/mtp_file.h"
#include "model/sampler.h"
#include "model/speculative.h"
#include "model_session.h"

namespace indexshare::cli {
namespace {

// Length of the longest prefix of s that ends on a UTF-8 character boundary.
size_t complete_utf8_prefix(const std::string& s) {
  size_t i = s.size();
  for (size_t back = 0; back < 4 && i > 0; ++back) {
    const unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) {  // a lead byte or ASCII at i-1
      const size_t need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
      return (s.size() - (i - 1) >= need) ? s.size() : i - 1;
    }
    --i;
  }
  return s.size();
}

// Prints generated tokens as they come, holding back an incomplete UTF-8 character.
struct TextStream {
  const io::Tokenizer& tok;
  std::vector<int32_t> out;
  std::string shown;
  void add(int32_t id) {
    out.push_back(id);
    const std::string text = tok.decode(out, {.special = false});
    const size_t upto = complete_utf8_prefix(text);
    if (upto > shown.size()) {
      fmt::print("{}", text.substr(shown.size(), upto - shown.size()));
      std::fflush(stdout);
      shown = text.substr(0, upto);
    }
  }
  void finish() {
    const std::string text = tok.decode(out, {.special = false});
    if (text.size() > shown.size()) fmt::print("{}", text.substr(shown.size()));
  }
};

struct GenerateArgs {
  std::string model, prompt, system, tokens;
  bool chat = false;
  int max_tokens = 64;
  int64_t ctx = 0;
  std::string kv = "f16";
  std::string device = "cpu";
  model::SamplerOptions sampling;
  DsaArgs dsa;
  // Speculative decoding with an MTP head.
  std::string mtp;
  int draft = 3;
  std::string draft_attention = "dense";
  int draft_topk = 0;
  int draft_vocab = 0;
  std::string draft_weights = "q8_0";
};


// Speculative decoding: the MTP head drafts, the model verifies (model/speculative.h).
int run_speculative(const GenerateArgs& a, ModelSession& s, const std::vector<int32_t>& ids, int64_t ctx, const DsaSetup& dsa,
                    int32_t stop) {
  IS_CHECK(a.sampling.top_p == 1.0f && a.sampling.top_k == 0,
           "generate: speculative decoding (--mtp) samples by --temp alone; drop --top-p and --top-k");
  const auto& cfg = s.model().config();
  const io::MtpFile f = io::load_mtp(a.mtp, s.model(), io::model_fingerprint(a.model));
  IS_CHECK(a.draft_weights == "q8_0" || a.draft_weights == "stored", "generate: --draft-weights must be q8_0 or stored, got '",
           a.draft_weights, "'");
  const model::MtpHead head(s.model(), f.weights, a.draft_vocab, a.draft_weights == "q8_0");
  model::SpeculativeOptions o;
  o.draft_tokens = a.draft;
  o.temperature = a.sampling.temperature;
  o.seed = a.sampling.seed;
  o.draft_attention = model::parse_draft_attention(a.draft_attention);
  IS_CHECK(a.draft_topk >= 0, "generate: --draft-topk must be > 0, got ", a.draft_topk);
  o.topk = a.draft_topk > 0 ? a.draft_topk
           : dsa.backend   ? dsa.backend->options().topk
                           : static_cast<int>(std::max<int64_t>(1, ctx / 8));
  o.capacity = ctx + a.draft;
  o.stop_token = stop;
  IS_CHECK(o.capacity <= cfg.context_length, "generate: the context ", ctx, " + --draft ", a.draft,
           " exceeds the model's limit of ", cfg.context_length);
  model::SpeculativeDecoder dec(s.model(), head, o, dsa.backend.get());
  TextStream ts{*s.tokenizer, {}, {}};
  const std::vector<int32_t> gen = dec.generate(ids, a.max_tokens, [&](int32_t id) {
    if (id == stop) return false;
    ts.add(id);
    return true;
  });
  ts.finish();
  const auto& st = dec.stats();
  const double gt = st.generate_seconds;
  fmt::print(stderr, "\n\nprompt: {} tokens in {:.3f} s ({:.1f} tokens/s); generation: {} tokens in {:.3f} s ({:.1f} tokens/s)\n",
             ids.size(), st.prefill_seconds, static_cast<double>(ids.size()) / st.prefill_seconds, gen.size(), gt,
             gt > 0 ? static_cast<double>(gen.size()) / gt : 0.0);
  std::string hist;
  for (size_t i = 0; i < st.accepted_hist.size(); ++i) hist += fmt::format("{}{}", i ? " " : "", st.accepted_hist[i]);
  fmt::print(stderr,
             "speculative (MTP, --draft {}, draft attention {}): {} rounds, {:.2f} tokens per target forward, "
             "{} of {} drafts accepted ({:.1f}%); rounds by drafts accepted 0..{}: {}\n",
             o.draft_tokens, model::draft_attention_name(o.draft_attention), st.rounds, st.acceptance_length(),
             st.accepted, st.drafted, st.drafted ? 100.0 * st.accepted / st.drafted : 0.0, o.draft_tokens, hist);
  return 0;
}

int run(const GenerateArgs& a) {
  if (std::filesystem::is_directory(a.model)) {  // a DSA-native model: token ids in, greedy out
    IS_CHECK(!a.tokens.empty(), "generate: ", a.model, " is a model directory without a tokenizer; give --tokens IDS");
    IS_CHECK(!a.dsa.dsa, "generate: --dsa is for GGUF models; a model directory runs its own indexers");
    IS_CHECK(a.sampling.temperature == 0.0f, "generate: model directories are decoded greedily (--temp 0)");
    IS_CHECK(a.mtp.empty(), "generate: --mtp HEAD is a head file for GGUF models; a model directory drafts with its own "
             "MTP layer: indexshare dsa-run --model DIR --tokens IDS --generate N --mtp");
    return run_dsa_model(
        {.model_dir = a.model, .tokens = a.tokens, .generate = a.max_tokens, .device = a.device, .max_tokens = a.ctx});
  }
  IS_CHECK(parse_device(a.device) == Device::kCpu,
           "generate: GGUF (Llama-family) models run on the CPU; --device cuda is for model directories");
  IS_CHECK(a.tokens.empty(), "generate: --tokens is for model directories; give --prompt TEXT for a GGUF model");
  IS_CHECK(!a.prompt.empty(), "generate: the prompt is empty (give --prompt TEXT)");
  IS_CHECK(a.max_tokens >= 0, "generate: --max-tokens must be >= 0");
  ModelSession s = load_model_session(a.model);
  const auto& cfg = s.model().config();
  const io::Tokenizer& tok = *s.tokenizer;
  std::vector<int32_t> ids;
  if (a.chat) {
    std::vector<io::ChatMessage> msgs;
    if (!a.system.empty()) msgs.push_back({"system", a.system});
    msgs.push_back({"user", a.prompt});
    ids = tok.encode(tok.format_chat(msgs, true), true, true);
  } else {
    ids = tok.encode(a.prompt, true, false);
  }
  IS_CHECK(!ids.empty(), "generate: the prompt tokenizes to nothing");
  const int64_t need = static_cast<int64_t>(ids.size()) + a.max_tokens;
  const int64_t ctx = a.ctx > 0 ? a.ctx : std::min<int64_t>(need, cfg.context_length);
  IS_CHECK(need <= ctx, "generate: prompt (", ids.size(), " tokens) + --max-tokens ", a.max_tokens, " = ", need,
           " exceeds the context of ", ctx, " tokens (the model's limit is ", cfg.context_length, ")");
  model::KvCache cache;
  IS_CHECK(a.kv == "f16" || a.kv == "f32", "generate: --kv must be f16 or f32, got '", a.kv, "'");
  cache.reset(cfg, ctx, a.kv == "f32" ? model::KvType::kF32 : model::KvType::kF16);
  // Speculative verification writes up to --draft positions past the context.
  DsaSetup dsa = make_dsa(a.dsa, cfg, a.model, a.mtp.empty() ? ctx : ctx + a.draft);
  if (dsa.backend) {
    fmt::print(stderr, "{}\n", dsa.summary);
    dsa.backend->begin_sequence();
  }
  const int32_t im_end = tok.find_token("<|im_end|>");
  if (!a.mtp.empty()) return run_speculative(a, s, ids, ctx, dsa, a.chat ? im_end : tok.eos_id());
  IS_CHECK(a.draft == 3 && a.draft_attention == "dense" && a.draft_topk == 0 && a.draft_vocab == 0 &&
               a.draft_weights == "q8_0",
           "generate: --draft, --draft-attention, --draft-topk, --draft-vocab and --draft-weights need --mtp FILE");
  model::Sampler sampler(a.sampling);
  std::vector<float> logits(static_cast<size_t>(cfg.vocab));

  const auto t0 = std::chrono::steady_clock::now();
  s.model().forward(ids.data(), static_cast<int64_t>(ids.size()), cache, logits.data(), false, dsa.backend.get());
  const auto t1 = std::chrono::steady_clock::now();
  TextStream ts{tok, {}, {}};
  int generated = 0;
  for (; generated < a.max_tokens; ++generated) {
    const int32_t id = sampler.sample(logits);
    if (id == tok.eos_id() || (a.chat && id == im_end)) break;
    ts.add(id);
    if (generated + 1 < a.max_tokens) s.model().forward(&id, 1, cache, logits.data(), false, dsa.backend.get());
  }
  const auto t2 = std::chrono::steady_clock::now();
  ts.finish();
  const double pt = std::chrono::duration<double>(t1 - t0).count();
  const double gt = std::chrono::duration<double>(t2 - t1).count();
  fmt::print(stderr, "\n\nprompt: {} tokens in {:.3f} s ({:.1f} tokens/s); generation: {} tokens in {:.3f} s ({:.1f} tokens/s)\n",
             ids.size(), pt, static_cast<double>(ids.size()) / pt, generated, gt,
             generated > 0 ? generated / gt : 0.0);
  return 0;
}

CommandRegistrar reg("generate", "generate text from a prompt with a GGUF model", [](CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  add_model_option(app, a->model);
  app.add_option("-p,--prompt", a->prompt, "prompt text");
  app.add_option("--tokens", a->tokens, "prompt token ids (for a model directory without a tokenizer)");
  app.add_flag("--chat", a->chat, "wrap the prompt in the model's chat template");
  app.add_option("--system", a->system, "system message for --chat");
  app.add_option("-n,--max-tokens", a->max_tokens, "tokens to generate")->capture_default_str();
  app.add_option("-c,--ctx", a->ctx, "KV-cache size in tokens (default: prompt + max-tokens)");
  app.add_option("--device", a->device, "cpu or cuda (cuda: model directories)")->capture_default_str();
  app.add_option("--kv", a->kv, "KV-cache type: f16 or f32")->capture_default_str();
  app.add_option("--temp", a->sampling.temperature, "temperature (0 = greedy)")->capture_default_str();
  app.add_option("--top-p", a->sampling.top_p, "nucleus sampling threshold")->capture_default_str();
  app.add_option("--top-k", a->sampling.top_k, "keep the k most likely tokens (0 = all)")->capture_default_str();
  app.add_option("--seed", a->sampling.seed, "sampling seed")->capture_default_str();
  add_dsa_options(app, a->dsa);
  app.add_option("--mtp", a->mtp, "speculative decoding: the model's MTP head (scripts/train_mtp.py)");
  app.add_option("--draft", a->draft, "speculative: tokens drafted per round")->capture_default_str();
  app.add_option("--draft-attention", a->draft_attention,
                 "speculative: the head's attention: dense, indexer (its own, every step), share-step0 (indexer at "
                 "the first draft step, reused after), share-target (the target's last F layer's top-k)")
      ->capture_default_str();
  app.add_option("--draft-vocab", a->draft_vocab,
                 "speculative: the head drafts from the V most frequent tokens of its training text (0 = all)");
  app.add_option("--draft-weights", a->draft_weights, "speculative: the head's matrices: q8_0 (requantised once) or stored")
      ->capture_default_str();
  app.add_option("--draft-topk", a->draft_topk, "speculative: the head's DSA top-k (default: --dsa-topk, else ctx / 8)");
  return [a] { return run(*a); };
});

}  // namespace
}  // namespace indexshare::cli

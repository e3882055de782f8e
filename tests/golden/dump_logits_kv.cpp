// Golden logits from llama.cpp with a chosen KV-cache type and flash-attention mode, for
// tests/llama_model_test.cpp. Not part of the IndexShare build: tests/golden/make_llama_golden2.sh
// compiles it against a prebuilt llama.cpp (public llama.h API only).
//
//   dump_logits_kv MODEL.gguf KV(f16|f32) FA(on|off|auto) N_THREADS ALL_POS_INDEX PROMPT_FILE...
//
// Writes one JSON object to stdout: the settings and, per prompt (the file's bytes, tokenized
// with parse_special and no BOS, run as one batch from position 0 in a fresh context), its
// tokens and a summary of the last position's logits (mean, std, min, max, logsumexp and the
// 100 largest as [id, logit]); the prompt at ALL_POS_INDEX (-1: none) also gets the summary
// (top 20) of every position.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

void quiet(ggml_log_level level, const char* text, void*) {
  if (level >= GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "dump_logits_kv: %s\n", msg.c_str());
  std::exit(1);
}

std::string slurp(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) die(std::string("cannot read ") + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

std::string g9(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

// Statistics and the k largest logits of one row, as a JSON object.
std::string row_summary(const float* x, int n, int k) {
  double sum = 0.0, mx = -INFINITY, mn = INFINITY;
  for (int i = 0; i < n; ++i) {
    sum += x[i];
    mx = std::max<double>(mx, x[i]);
    mn = std::min<double>(mn, x[i]);
  }
  const double mean = sum / n;
  double var = 0.0, se = 0.0;
  for (int i = 0; i < n; ++i) {
    var += (x[i] - mean) * (x[i] - mean);
    se += std::exp(x[i] - mx);
  }
  std::vector<int> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  std::string o = "{\"mean\": " + g9(mean) + ", \"std\": " + g9(std::sqrt(var / n)) + ", \"min\": " + g9(mn) +
                  ", \"max\": " + g9(mx) + ", \"logsumexp\": " + g9(mx + std::log(se)) + ", \"top\": [";
  for (int i = 0; i < k; ++i) {
    o += (i ? ", [" : "[") + std::to_string(idx[static_cast<size_t>(i)]) + ", " + g9(x[idx[static_cast<size_t>(i)]]) + "]";
  }
  return o + "]}";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) die("usage: dump_logits_kv MODEL KV(f16|f32) FA(on|off|auto) N_THREADS ALL_POS_INDEX PROMPT...");
  const std::string kv = argv[2], fa = argv[3];
  const int threads = std::atoi(argv[4]);
  const int all_pos = std::atoi(argv[5]);
  if (kv != "f16" && kv != "f32") die("KV must be f16 or f32");
  if (fa != "on" && fa != "off" && fa != "auto") die("FA must be on, off or auto");
  llama_log_set(quiet, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.progress_callback = [](float, void*) { return true; };  // no progress dots
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) die(std::string("cannot load ") + argv[1]);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);

  std::string out = "{\n \"kv\": " + quote(kv) + ",\n \"flash_attn\": " + quote(fa) + ",\n \"n_threads\": " +
                    std::to_string(threads) + ",\n \"n_vocab\": " + std::to_string(n_vocab) + ",\n \"prompts\": [";
  for (int p = 6; p < argc; ++p) {
    const std::string text = slurp(argv[p]);
    std::vector<llama_token> toks(text.size() + 8);
    const int n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), toks.data(),
                                 static_cast<int32_t>(toks.size()), false, true);
    if (n <= 0) die(std::string("cannot tokenize ") + argv[p]);
    toks.resize(static_cast<size_t>(n));

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(std::max(n, 64));
    cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(std::max(n, 64));
    cp.n_threads = cp.n_threads_batch = threads;
    cp.type_k = cp.type_v = kv == "f32" ? GGML_TYPE_F32 : GGML_TYPE_F16;
    cp.flash_attn_type = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                         : fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                       : LLAMA_FLASH_ATTN_TYPE_AUTO;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx) die("cannot create a context");
    const bool every = p - 6 == all_pos;
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) {
      batch.token[i] = toks[static_cast<size_t>(i)];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = every || i == n - 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) die(std::string("decode failed for ") + argv[p]);
    out += std::string(p > 6 ? "," : "") + "\n  {\"text\": " + quote(text) + ", \"tokens\": [";
    for (int i = 0; i < n; ++i) out += (i ? ", " : "") + std::to_string(toks[static_cast<size_t>(i)]);
    out += "],\n   \"last\": " + row_summary(llama_get_logits_ith(ctx, n - 1), n_vocab, 100);
    if (every) {
      out += ",\n   \"all\": [";
      for (int i = 0; i < n; ++i) out += (i ? ",\n    " : "\n    ") + row_summary(llama_get_logits_ith(ctx, i), n_vocab, 20);
      out += "]";
    }
    out += "}";
    llama_batch_free(batch);
    llama_free(ctx);
  }
  out += "\n ]\n}\n";
  std::fputs(out.c_str(), stdout);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}

// Golden logits from llama.cpp, for checking our forward pass. Not part of the IndexShare
// build: tests/golden/make_llamacpp_golden.sh compiles it against a llama.cpp build given by
// path (public llama.h API only).
//
//   dump_logits MODEL.gguf OUT.json N_THREADS ALL_POSITIONS_INDEX PROMPT_FILE...
//
// Each prompt (the bytes of a file) is tokenized with parse_special (no BOS for SmolLM2, as
// the model asks), run as one batch from position 0 in a fresh context, and summarised:
//   last:   the final position's logits: top 100 (id, logit), mean, std, min, max,
//           logsumexp (the log of softmax's denominator, so log p(id) = logit - logsumexp)
//   greedy: 16 tokens generated greedily after the prompt (one token per decode)
//   all:    (only for the prompt at ALL_POSITIONS_INDEX) the same summary with the top 20
//           for every position
// Logits are written with 9 significant digits (float32 round-trips).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

constexpr int kTopLast = 100;
constexpr int kTopAll = 20;
constexpr int kGreedy = 16;
constexpr int kCtx = 512;

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level >= GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

std::string read_file(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "dump_logits: cannot read %s\n", path);
    std::exit(1);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

template <class T>
std::string json_list(const std::vector<T>& v) {
  std::string o = "[";
  for (size_t i = 0; i < v.size(); ++i) o += (i ? ", " : "") + std::to_string(v[i]);
  return o + "]";
}

// Summary of one row of logits.
std::string summarise(const float* x, int n_vocab, int top) {
  double sum = 0, mx = -INFINITY, mn = INFINITY;
  for (int i = 0; i < n_vocab; ++i) {
    sum += x[i];
    mx = std::max(mx, static_cast<double>(x[i]));
    mn = std::min(mn, static_cast<double>(x[i]));
  }
  const double mean = sum / n_vocab;
  double var = 0, se = 0;
  for (int i = 0; i < n_vocab; ++i) {
    var += (x[i] - mean) * (x[i] - mean);
    se += std::exp(x[i] - mx);
  }
  std::vector<int> idx(n_vocab);
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + top, idx.end(), [&](int a, int b) {
    return x[a] != x[b] ? x[a] > x[b] : a < b;
  });
  std::string o = "{\"mean\": " + num(mean) + ", \"std\": " + num(std::sqrt(var / n_vocab)) +
                  ", \"min\": " + num(mn) + ", \"max\": " + num(mx) +
                  ", \"logsumexp\": " + num(mx + std::log(se)) + ", \"top\": [";
  for (int k = 0; k < top; ++k) {
    o += (k ? ", [" : "[") + std::to_string(idx[k]) + ", " + num(x[idx[k]]) + "]";
  }
  return o + "]}";
}

int argmax(const float* x, int n) {
  return static_cast<int>(std::max_element(x, x + n) - x);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s MODEL OUT.json N_THREADS ALL_POSITIONS_INDEX PROMPT_FILE...\n",
                 argv[0]);
    return 2;
  }
  const char* model_path = argv[1];
  const char* out_path = argv[2];
  const int n_threads = std::atoi(argv[3]);
  const int all_index = std::atoi(argv[4]);

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(model_path, mp);
  if (!model) {
    std::fprintf(stderr, "dump_logits: cannot load %s\n", model_path);
    return 1;
  }
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);

  std::string out = "{\n  \"n_vocab\": " + std::to_string(n_vocab) +
                    ",\n  \"n_threads\": " + std::to_string(n_threads) +
                    ",\n  \"n_ctx\": " + std::to_string(kCtx) + ",\n  \"prompts\": [\n";
  for (int p = 5; p < argc; ++p) {
    const std::string text = read_file(argv[p]);
    std::vector<llama_token> toks(text.size() + 8);
    const int n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()),
                                 toks.data(), static_cast<int32_t>(toks.size()),
                                 /*add_special=*/true, /*parse_special=*/true);
    if (n <= 0 || n + kGreedy > kCtx) {
      std::fprintf(stderr, "dump_logits: prompt %s gives %d tokens\n", argv[p], n);
      return 1;
    }
    toks.resize(n);
    const bool all = (p - 5) == all_index;

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = kCtx;
    cp.n_batch = kCtx;
    cp.n_ubatch = kCtx;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.no_perf = true;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx) {
      std::fprintf(stderr, "dump_logits: cannot create a context\n");
      return 1;
    }
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) {
      batch.token[i] = toks[i];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = all || i == n - 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) {
      std::fprintf(stderr, "dump_logits: decode failed\n");
      return 1;
    }
    std::string all_json;
    if (all) {
      all_json = ",\n     \"all\": [";
      for (int i = 0; i < n; ++i) {
        all_json += (i ? ",\n       " : "\n       ") +
                    summarise(llama_get_logits_ith(ctx, i), n_vocab, kTopAll);
      }
      all_json += "]";
    }
    const std::string last = summarise(llama_get_logits_ith(ctx, n - 1), n_vocab, kTopLast);
    std::vector<llama_token> greedy;
    llama_token next = argmax(llama_get_logits_ith(ctx, n - 1), n_vocab);
    for (int g = 0; g < kGreedy; ++g) {
      greedy.push_back(next);
      llama_batch one = llama_batch_get_one(&next, 1);
      if (llama_decode(ctx, one) != 0) {
        std::fprintf(stderr, "dump_logits: decode failed\n");
        return 1;
      }
      next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
    }
    std::string greedy_text;
    for (llama_token t : greedy) {
      char buf[256];
      const int k = llama_token_to_piece(vocab, t, buf, sizeof buf, 0, true);
      if (k > 0) greedy_text.append(buf, k);
    }
    llama_batch_free(batch);
    llama_free(ctx);

    out += std::string(p > 5 ? ",\n" : "") + "    {\"text\": " + json_string(text) +
           ",\n     \"tokens\": " + json_list(toks) + ",\n     \"last\": " + last +
           ",\n     \"greedy\": " + json_list(greedy) +
           ",\n     \"greedy_text\": " + json_string(greedy_text) + all_json + "}";
  }
  out += "\n  ]\n}\n";
  llama_model_free(model);
  llama_backend_free();
  std::ofstream(out_path, std::ios::binary) << out;
  return 0;
}

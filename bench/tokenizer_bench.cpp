// Tokenizer throughput on the real SmolLM2 vocabulary (skipped when the model is not cached):
// loading from GGUF, encoding a licence text with a cold and a warm word cache, decoding.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "io/gguf.h"
#include "io/tokenizer.h"

namespace {

using indexshare::io::GgufFile;
using indexshare::io::Tokenizer;

std::string model_path() {
  if (const char* m = std::getenv("INDEXSHARE_MODEL")) return m;
  const char* cache = std::getenv("INDEXSHARE_CACHE");
  const char* home = std::getenv("HOME");
  return (cache ? std::string(cache) : std::string(home ? home : "") + "/.cache/indexshare") +
         "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string text() {
  std::ifstream in("/usr/share/common-licenses/GPL-3", std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void BM_TokenizerLoad(benchmark::State& state) {
  if (!std::filesystem::exists(model_path())) {
    state.SkipWithError("model not cached; run scripts/fetch_model.sh");
    return;
  }
  const GgufFile f = GgufFile::open(model_path());
  for (auto _ : state) benchmark::DoNotOptimize(Tokenizer::from_gguf(f));
}
BENCHMARK(BM_TokenizerLoad)->Unit(benchmark::kMillisecond);

// state.range(0): 1 = warm word cache (one shared tokenizer), 0 = a fresh tokenizer per pass.
void BM_TokenizerEncode(benchmark::State& state) {
  if (!std::filesystem::exists(model_path())) {
    state.SkipWithError("model not cached; run scripts/fetch_model.sh");
    return;
  }
  const GgufFile f = GgufFile::open(model_path());
  const std::string s = text();
  auto tok = std::make_unique<Tokenizer>(Tokenizer::from_gguf(f));
  const bool warm = state.range(0) == 1;
  if (warm) benchmark::DoNotOptimize(tok->encode(s));
  for (auto _ : state) {
    if (!warm) {
      state.PauseTiming();
      tok = std::make_unique<Tokenizer>(Tokenizer::from_gguf(f));
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(tok->encode(s));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * s.size()));
}
BENCHMARK(BM_TokenizerEncode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_TokenizerDecode(benchmark::State& state) {
  if (!std::filesystem::exists(model_path())) {
    state.SkipWithError("model not cached; run scripts/fetch_model.sh");
    return;
  }
  const Tokenizer tok = Tokenizer::from_gguf(GgufFile::open(model_path()));
  const std::string s = text();
  const std::vector<int32_t> ids = tok.encode(s);
  for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * s.size()));
}
BENCHMARK(BM_TokenizerDecode)->Unit(benchmark::kMicrosecond);

}  // namespace

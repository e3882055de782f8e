// CPU lightning indexer, top-k two-step vs streaming, and this machine's FP32 FMA peak.
//
// Shape: a decode-like block of T = 64 query rows at the end of an L-token context
// (q_start = L - T), H = 16 indexer heads (GLM-5 has 32, DeepSeek-V3.2 64; halved to keep a
// CPU run short), D = 128, k = 2048. "GFLOP/s" counts 2 * T * H * D * L per call (the whole
// block, as a dense GEMM would; the causal mask removes only T^2 / 2 of T * L pairs here).
// "peak_frac" divides it by the FMA peak measured in this binary (BM_FmaPeak's loop) for the
// thread count in use. Run e.g. with --benchmark_min_time=0.05.
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <chrono>
#include <cmath>
#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/thread_pool.h"
#include "ops/indexer.h"
#include "ops/indexer_rescore.h"
#include "ops/indexer_topk.h"
#include "ops/topk.h"

namespace indexshare {
namespace {

constexpr int64_t kT = 64;
constexpr int kH = 16, kD = 128, kK = 2048;
constexpr int kFmaChains = 12;  // independent accumulators: > latency x FMA ports
constexpr double kFlopsPerFmaStep = kFmaChains * 8 * 2;

// A register-resident FMA loop: 12 independent 8-wide chains, `steps` FMAs each.
__attribute__((target("avx2,fma"), noinline)) float fma_loop(int64_t steps) {
  __m256 a[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) a[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 m = _mm256_set1_ps(0.99999f), c = _mm256_set1_ps(1e-6f);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  }
  __m256 sum = a[0];
  for (int i = 1; i < kFmaChains; ++i) sum = _mm256_add_ps(sum, a[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, sum);
  return out[0];
}

// Runs the FMA loop on `threads` threads at once; returns the flops done.
double run_fma(int threads, int64_t steps) {
  set_num_threads(threads);
  std::vector<float> sink(static_cast<size_t>(threads));
  parallel_for(threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sink[static_cast<size_t>(i)] = fma_loop(steps);
  });
  benchmark::DoNotOptimize(sink.data());
  return kFlopsPerFmaStep * static_cast<double>(steps) * threads;
}

// Peak GFLOP/s for `threads`, measured once (best of a few ~20 ms runs).
double peak_gflops(int threads) {
  static std::map<int, double> cache;
  if (!use_avx2()) return 0.0;
  auto it = cache.find(threads);
  if (it != cache.end()) return it->second;
  const int saved = num_threads();
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    const double flops = run_fma(threads, 2'000'000);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, flops / s * 1e-9);
  }
  set_num_threads(saved);
  return cache[threads] = best;
}

void BM_FmaPeak(benchmark::State& state) {
  if (!use_avx2()) {
    state.SkipWithError("no AVX2/FMA");
    return;
  }
  const int threads = static_cast<int>(state.range(0));
  const int saved = num_threads();
  double flops = 0.0;
  for (auto _ : state) flops += run_fma(threads, 1'000'000);
  set_num_threads(saved);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_FmaPeak)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

struct Inputs {
  std::vector<float> q, k, w;
  ops::IndexerParams p;
  explicit Inputs(int64_t L, int64_t T = kT, int H = kH) {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal;
    q.resize(static_cast<size_t>(T * H * kD));
    k.resize(static_cast<size_t>(L * kD));
    w.resize(static_cast<size_t>(T * H));
    for (float& v : q) v = normal(rng);
    for (float& v : k) v = normal(rng);
    for (float& v : w) v = normal(rng);
    p.q = q.data();
    p.k = k.data();
    p.weights = w.data();
    p.scale = 1.0f / std::sqrt(static_cast<float>(H * kD));
    p.T = T;
    p.L = L;
    p.H = H;
    p.D = kD;
    p.q_start = L - T;
  }
  double flops() const {
    return 2.0 * static_cast<double>(p.T) * p.H * p.D * static_cast<double>(p.L);
  }
};

void set_flop_counters(benchmark::State& state, const Inputs& in) {
  const double flops = in.flops() * static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
  // peak_frac = (GFLOP/s) / peak: a rate of flops / peak, so the same kIsRate division applies.
  const double peak = peak_gflops(num_threads());
  if (peak > 0)
    state.counters["peak_frac"] =
        benchmark::Counter(flops * 1e-9 / peak, benchmark::Counter::kIsRate);
  state.counters["threads"] = num_threads();
}

void BM_IndexerScores(benchmark::State& state) {
  const Inputs in(state.range(0));
  std::vector<float> scores(static_cast<size_t>(in.p.T * in.p.L));
  for (auto _ : state) {
    ops::indexer_scores(in.p, scores.data());
    benchmark::DoNotOptimize(scores.data());
  }
  set_flop_counters(state, in);
}

void BM_TopkOnly(benchmark::State& state) {
  const Inputs in(state.range(0));
  std::vector<float> scores(static_cast<size_t>(in.p.T * in.p.L));
  ops::indexer_scores(in.p, scores.data());
  std::vector<int32_t> idx(static_cast<size_t>(in.p.T * kK));
  ops::TopkParams tp;
  tp.scores = scores.data();
  tp.T = in.p.T;
  tp.L = in.p.L;
  tp.k = kK;
  tp.indices = idx.data();
  for (auto _ : state) {
    ops::topk(tp);
    benchmark::DoNotOptimize(idx.data());
  }
  state.counters["Mscores/s"] = benchmark::Counter(
      static_cast<double>(in.p.T * in.p.L) * 1e-6 * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

void BM_TwoStepIndexerTopk(benchmark::State& state) {
  const Inputs in(state.range(0));
  std::vector<float> scores(static_cast<size_t>(in.p.T * in.p.L));
  std::vector<int32_t> idx(static_cast<size_t>(in.p.T * kK));
  ops::TopkParams tp;
  tp.scores = scores.data();
  tp.T = in.p.T;
  tp.L = in.p.L;
  tp.k = kK;
  tp.indices = idx.data();
  for (auto _ : state) {
    ops::indexer_scores(in.p, scores.data());
    ops::topk(tp);
    benchmark::DoNotOptimize(idx.data());
  }
  set_flop_counters(state, in);
  state.counters["scratch_MB"] = static_cast<double>(scores.size() * sizeof(float)) / 1e6;
}

void BM_StreamingIndexerTopk(benchmark::State& state) {
  const Inputs in(state.range(0), state.range(1), static_cast<int>(state.range(2)));
  std::vector<int32_t> idx(static_cast<size_t>(in.p.T * kK));
  const ops::IndexerTopkOptions o{kK, 4096, 16};
  for (auto _ : state) {
    ops::indexer_topk(in.p, o, idx.data(), nullptr);
    benchmark::DoNotOptimize(idx.data());
  }
  set_flop_counters(state, in);
  state.counters["scratch_MB"] =
      static_cast<double>(ops::indexer_topk_scratch_bytes(in.p, o, num_threads())) / 1e6;
}

BENCHMARK(BM_IndexerScores)
    ->Arg(4096)
    ->Arg(32768)
    ->Arg(131072)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TopkOnly)
    ->Arg(4096)
    ->Arg(32768)
    ->Arg(131072)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TwoStepIndexerTopk)
    ->Arg(4096)
    ->Arg(32768)
    ->Arg(131072)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StreamingIndexerTopk)
    ->Args({4096, kT, kH})
    ->Args({32768, kT, kH})
    ->Args({131072, kT, kH})
    ->Args({131072, 1, 32})  // one decode token, GLM-5's 32 heads: keys split across threads
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// F layer against R (reindex) layer selection, per query row, SmolLM2's shapes: an F layer's
// indexer (4 heads x 32) scores every key of an L-token context and keeps k = 512; an R layer's
// (1 head x 32) scores only the C = 1024 candidates its F layer carried over (spread over the
// whole context, as they are) and keeps 512. Rows: a block of 64 (prefill) or 1 (decode). Args:
// {L, rows, reindex (0 = F, 1 = R)}. Compare the two at the same {L, rows} in one run.
void BM_SelectFOrR(benchmark::State& state) {
  const int64_t L = state.range(0), T = state.range(1);
  const bool reindex = state.range(2) != 0;
  const int k = 512, C = 1024, D = 32, H = reindex ? 1 : 4;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(T * H * D)), w(static_cast<size_t>(T * H)), keys(static_cast<size_t>(L * D));
  for (auto* v : {&q, &w, &keys})
    for (float& x : *v) x = u(rng);
  std::vector<int32_t> out(static_cast<size_t>(T * k)), out_slots(static_cast<size_t>(T * k));
  std::vector<int32_t> cand(static_cast<size_t>(T * C));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> all(static_cast<size_t>(L - T + t + 1));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    std::copy_n(all.begin(), C, cand.begin() + t * C);
  }
  for (auto _ : state) {
    if (reindex) {
      ops::IndexerRescoreParams p{q.data(), w.data(), keys.data(), L, cand.data(), cand.data(),
                                  1.0f / std::sqrt(float(H * D)), T, C, H, D, k, out.data(), out_slots.data()};
      ops::indexer_rescore(p);
    } else {
      ops::IndexerParams p;
      p.q = q.data();
      p.k = keys.data();
      p.weights = w.data();
      p.scale = 1.0f / std::sqrt(float(H * D));
      p.T = T;
      p.L = L;
      p.H = H;
      p.D = D;
      p.q_start = L - T;
      ops::IndexerTopkOptions o;
      o.k = k;
      ops::indexer_topk(p, o, out.data(), nullptr);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["per_row"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetLabel(reindex ? "R: 1x32 indexer over C=1024 candidates" : "F: 4x32 indexer over every key");
}

BENCHMARK(BM_SelectFOrR)
    ->ArgsProduct({{4096, 8192, 32768, 131072}, {64, 1}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace indexshare

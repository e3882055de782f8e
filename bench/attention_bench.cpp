// Attention and RoPE microbenchmarks (CPU).
//
// Counters (per second):
//   GFLOP/s  multiply-adds counted as 2 FLOPs over the keys each query really attends:
//            sparse  2 * T * H * K_valid * (Dqk + Dv)   (Dqk for q.k, Dv for p.v)
//            dense   2 * H * (Dk + Dv) * sum_t min(L, q_start + t + 1)
//            exp, max and the normalisation are not counted.
//   GB/s     cache bytes the op must read: every gathered latent / KV row once per query row
//            (sparse: T * K * Dqk * 4 for MLA, T * K * H_kv * (Dk + Dv) * 4 for GQA; dense:
//            L * H_kv * (Dk + Dv) * 4 per call). Sparse decode at long L is where this binds.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "ops/dense_attention.h"
#include "ops/rope.h"
#include "ops/sparse_attention.h"

namespace {

using namespace indexshare;

std::vector<float> random_vector(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n);
  for (auto& e : x) e = dist(rng);
  return x;
}

// Large caches are made once per shape and shared by every benchmark that needs them.
const std::vector<float>& cached(size_t n, uint64_t seed) {
  static std::map<std::pair<size_t, uint64_t>, std::unique_ptr<std::vector<float>>> cache;
  auto& slot = cache[{n, seed}];
  if (!slot) slot = std::make_unique<std::vector<float>>(random_vector(n, seed));
  return *slot;
}

// Per row K distinct tokens among the L - T + t + 1 causal ones, sorted ascending (the order
// top-k kernels usually emit).
std::vector<int32_t> topk_like_indices(int64_t T, int64_t L, int K, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> idx(static_cast<size_t>(T * K), -1);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t visible = L - T + t + 1;
    std::vector<int32_t> pick;
    if (visible <= K) {
      pick.resize(static_cast<size_t>(visible));
      std::iota(pick.begin(), pick.end(), 0);
    } else {
      std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(visible - 1));
      std::vector<char> seen(static_cast<size_t>(visible), 0);
      while (static_cast<int>(pick.size()) < K) {
        const int32_t s = d(rng);
        if (!seen[static_cast<size_t>(s)]) {
          seen[static_cast<size_t>(s)] = 1;
          pick.push_back(s);
        }
      }
      std::sort(pick.begin(), pick.end());
    }
    std::copy(pick.begin(), pick.end(), idx.begin() + t * K);
  }
  return idx;
}

void set_rates(benchmark::State& state, double flops, double bytes) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// args: L, T, threads
void BM_SparseMla(benchmark::State& state) {
  const int64_t L = state.range(0), T = state.range(1);
  set_num_threads(static_cast<int>(state.range(2)));
  constexpr int H = 16, Dqk = 576, Dv = 512, K = 2048;
  const std::vector<float>& kv = cached(static_cast<size_t>(L * Dqk), 1);
  const std::vector<float> q = random_vector(static_cast<size_t>(T * H * Dqk), 2);
  const std::vector<int32_t> idx = topk_like_indices(T, L, K, 3);
  std::vector<float> out(static_cast<size_t>(T * H * Dv)), lse(static_cast<size_t>(T * H));
  ops::SparseMlaParams p;
  p.q = q.data(), p.kv = kv.data(), p.indices = idx.data();
  p.T = T, p.L = L, p.H = H, p.Dqk = Dqk, p.Dv = Dv, p.K = K;
  p.scale = 1.0f / std::sqrt(192.0f);
  p.out = out.data(), p.lse = lse.data();
  for (auto _ : state) {
    ops::sparse_mla(p);
    benchmark::DoNotOptimize(out.data());
  }
  set_rates(state, 2.0 * T * H * K * (Dqk + Dv), 4.0 * T * K * Dqk);
  set_num_threads(2);
}
BENCHMARK(BM_SparseMla)
    ->ArgNames({"L", "T", "threads"})
    ->ArgsProduct({{4096, 32768, 131072}, {1, 16}, {2}})
    ->Args({32768, 1, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// GQA: 32 query heads on 8 KV heads of dim 128, K = 2048.
void BM_SparseGqa(benchmark::State& state) {
  const int64_t L = state.range(0), T = state.range(1);
  constexpr int H = 32, Hkv = 8, D = 128, K = 2048;
  const std::vector<float>& k = cached(static_cast<size_t>(L * Hkv * D), 4);
  const std::vector<float>& v = cached(static_cast<size_t>(L * Hkv * D), 5);
  const std::vector<float> q = random_vector(static_cast<size_t>(T * H * D), 6);
  const std::vector<int32_t> idx = topk_like_indices(T, L, K, 7);
  std::vector<float> out(static_cast<size_t>(T * H * D)), lse(static_cast<size_t>(T * H));
  ops::SparseAttentionParams p;
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.indices = idx.data();
  p.T = T, p.L = L, p.H = H, p.H_kv = Hkv, p.Dk = D, p.Dv = D, p.K = K;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  p.out = out.data(), p.lse = lse.data();
  for (auto _ : state) {
    ops::sparse_attention(p);
    benchmark::DoNotOptimize(out.data());
  }
  set_rates(state, 2.0 * T * H * K * (2 * D), 4.0 * T * K * Hkv * 2 * D);
}
BENCHMARK(BM_SparseGqa)
    ->ArgNames({"L", "T"})
    ->ArgsProduct({{32768}, {1, 16}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Dense causal attention. args: L, T (the last T positions of the cache), H, H_kv, Dk, Dv.
void BM_Dense(benchmark::State& state) {
  const int64_t L = state.range(0), T = state.range(1);
  const int H = static_cast<int>(state.range(2)), Hkv = static_cast<int>(state.range(3));
  const int Dk = static_cast<int>(state.range(4)), Dv = static_cast<int>(state.range(5));
  const std::vector<float>& k = cached(static_cast<size_t>(L * Hkv * Dk), 8);
  const std::vector<float>& v = cached(static_cast<size_t>(L * Hkv * Dv), 9);
  const std::vector<float> q = random_vector(static_cast<size_t>(T * H * Dk), 10);
  std::vector<float> out(static_cast<size_t>(T * H * Dv)), lse(static_cast<size_t>(T * H));
  ops::DenseAttentionParams p;
  p.q = q.data(), p.k = k.data(), p.v = v.data();
  p.T = T, p.L = L, p.H = H, p.H_kv = Hkv, p.Dk = Dk, p.Dv = Dv, p.q_start = L - T;
  p.scale = 1.0f / std::sqrt(static_cast<float>(Dk));
  p.out = out.data(), p.lse = lse.data();
  for (auto _ : state) {
    ops::dense_attention(p);
    benchmark::DoNotOptimize(out.data());
  }
  double keys = 0.0;
  for (int64_t t = 0; t < T; ++t) keys += static_cast<double>(std::min(L, L - T + t + 1));
  set_rates(state, 2.0 * H * (Dk + Dv) * keys, 4.0 * L * Hkv * (Dk + Dv));
}
BENCHMARK(BM_Dense)
    ->ArgNames({"L", "T", "H", "Hkv", "Dk", "Dv"})
    // MLA-shaped decode over the whole cache (what sparse replaces).
    ->Args({4096, 1, 16, 1, 576, 512})
    ->Args({32768, 1, 16, 1, 576, 512})
    // SmolLM2-135M prefill (9 heads on 3 KV heads, dim 64) and decode.
    ->Args({1024, 1024, 9, 3, 64, 64})
    ->Args({4096, 1, 9, 3, 64, 64})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// RoPE on the indexer / MLA slice: T rows of H heads, 64 rotated dims. args: T, H, head_dim.
void BM_Rope(benchmark::State& state) {
  const int64_t T = state.range(0);
  const int H = static_cast<int>(state.range(1)), head_dim = static_cast<int>(state.range(2));
  std::vector<float> x = random_vector(static_cast<size_t>(T * H * head_dim), 11);
  ops::RopeParams p;
  p.x = x.data(), p.pos0 = 100000, p.T = T, p.H = H, p.head_dim = head_dim;
  p.rot_offset = head_dim - 64, p.rot_dim = 64, p.theta = 8e6f;
  p.pairing = ops::RopePairing::kInterleaved;
  for (auto _ : state) {
    ops::rope(p);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * T * H);
}
BENCHMARK(BM_Rope)->Args({2048, 32, 128})->Args({1, 64, 576})->Unit(benchmark::kMicrosecond);

}  // namespace

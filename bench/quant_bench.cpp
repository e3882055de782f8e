// quant_matmul throughput on SmolLM2-135M shapes: decode (M = 1) and prefill (M = 64).
// Counters: weight bytes read per second (W_B/s) and FLOP/s (2 M N K per call). Compare with
// the 2-core build machine's ~10-12.5 GB/s DRAM read and ~233 GFLOP/s f32 FMA peak; the small
// matrices (<= 0.6 MB) sit in L2/L3, so their decode figure is a cache bandwidth, and only
// token_embd (30 MB Q8_0) streams from DRAM.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/dtype.h"
#include "core/ggml_type.h"
#include "core/thread_pool.h"
#include "core/cpu_features.h"
#include "ops/quant.h"
#include "ops/quant_matmul.h"

namespace indexshare::ops {
namespace {

// Random weights of a type: a row of random floats quantised (so scales are realistic).
AlignedBuffer<uint8_t> make_weights(GgmlType type, int64_t N, int64_t K) {
  const int64_t row = ggml_row_bytes(type, K);
  AlignedBuffer<uint8_t> w(static_cast<size_t>(row * N));
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 0.05f);
  std::vector<float> x(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    for (float& v : x) v = g(rng);
    uint8_t* dst = w.data() + n * row;
    switch (type) {
      case GgmlType::kQ4_1: quantize_row_q4_1(x.data(), reinterpret_cast<BlockQ4_1*>(dst), K); break;
      case GgmlType::kQ8_0: quantize_row_q8_0(x.data(), reinterpret_cast<BlockQ8_0*>(dst), K); break;
      case GgmlType::kF16:
        for (int64_t k = 0; k < K; ++k) {
          const uint16_t h = f32_to_f16(x[k]);
          std::memcpy(dst + 2 * k, &h, 2);
        }
        break;
      default: std::memcpy(dst, x.data(), static_cast<size_t>(K) * 4); break;
    }
  }
  return w;
}

// Args: type id, N, K, M, threads, avx512 (1: the AVX-512 VNNI kernel where the type has one
// and the CPU offers it; 0: AVX2).
void BM_QuantMatmul(benchmark::State& state) {
  const auto type = static_cast<GgmlType>(state.range(0));
  const int64_t N = state.range(1), K = state.range(2), M = state.range(3);
  set_avx512_enabled(state.range(5) != 0);
  if (state.range(5) != 0 && !use_avx512_vnni()) {
    state.SkipWithError("this CPU has no AVX-512 VNNI");
    set_avx512_enabled(true);
    return;
  }
  const int saved = num_threads();
  set_num_threads(static_cast<int>(state.range(4)));
  const auto w = make_weights(type, N, K);
  std::vector<float> x(static_cast<size_t>(M * K)), y(static_cast<size_t>(M * N));
  std::mt19937 rng(2);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (float& v : x) v = g(rng);
  const QMatmulParams p{w.data(), type, N, K, x.data(), M, y.data()};
  for (auto _ : state) {
    quant_matmul(p);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double iters = static_cast<double>(state.iterations());
  state.counters["W_B/s"] = benchmark::Counter(static_cast<double>(w.size()) * iters,
                                               benchmark::Counter::kIsRate);
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * M * N * K * iters, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(ggml_type_name(type)));
  set_num_threads(saved);
  set_avx512_enabled(true);
}

constexpr int64_t kQ41 = static_cast<int64_t>(GgmlType::kQ4_1);
constexpr int64_t kQ80 = static_cast<int64_t>(GgmlType::kQ8_0);
constexpr int64_t kF32 = static_cast<int64_t>(GgmlType::kF32);

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"type", "N", "K", "M", "thr", "avx512"});
  for (int64_t thr : {1, 2}) {
    for (int64_t M : {1, 64}) {
      for (int64_t v : {0, 1}) {  // Q4_1: the AVX2 kernel, then the VNNI one, in the same run
        b->Args({kQ41, 576, 576, M, thr, v});    // attn_q / attn_output
        b->Args({kQ41, 1536, 576, M, thr, v});   // ffn_gate / ffn_up
        b->Args({kQ41, 576, 1536, M, thr, v});   // ffn_down
      }
      b->Args({kQ80, 49152, 576, M, thr, 0});  // token_embd as the tied output projection
      b->Args({kF32, 576, 576, M, thr, 0});    // f32 reference point
    }
  }
}

BENCHMARK(BM_QuantMatmul)->Apply(shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace indexshare::ops

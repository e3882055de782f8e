// H200 benchmark driver for the CUDA kernels. Prints one line per case and writes JSON lines
// (--out FILE) that bench/torch_baseline.py joins with PyTorch timings of the same
// computations on the same GPU. Times are CUDA-event medians after a warm-up, with inputs
// rotated over several copies when one copy would sit in L2.
//
//   h200_bench [--out FILE] [--only indexer|topk|fused|mla|stack|profile] [--quick]
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "cuda/indexer.h"
#include "cuda/indexer_topk.h"
#include "cuda/runtime.h"
#include "cuda/sparse_mla.h"
#include "cuda/topk.h"
#include "share/schedule.h"

namespace indexshare::bench {
namespace {

using cuda::DeviceBuffer;

FILE* g_json = nullptr;
bool g_quick = false;
constexpr int kTopK = 2048;
constexpr int64_t kRotateBytes = 256ll << 20;

void emit(const std::string& json) {
  if (g_json) {
    std::fprintf(g_json, "%s\n", json.c_str());
    std::fflush(g_json);
  }
}
std::string fmt_name(cuda::IndexerFormat f) { return f == cuda::IndexerFormat::kFp8 ? "fp8" : "bf16"; }
int rotations(int64_t set_bytes) {
  return static_cast<int>(std::clamp<int64_t>((kRotateBytes + set_bytes - 1) / std::max<int64_t>(set_bytes, 1), 1, 16));
}

// One set of indexer inputs: B sequences of L keys (paged, shuffled page table), T queries each.
struct IndexerSet {
  DeviceBuffer q, w, qs, cache, table, seq_lens, q_starts;
  cuda::IndexerCudaParams p;
};

IndexerSet make_indexer_set(cuda::IndexerFormat fmt, int B, int H, int64_t T, int64_t L, uint64_t seed) {
  IndexerSet s;
  const bool fp8 = fmt == cuda::IndexerFormat::kFp8;
  const int64_t pages = (L + 63) / 64;
  const int64_t row_bytes = fp8 ? 128 : 256;
  s.q = DeviceBuffer(static_cast<size_t>(B * T * H * row_bytes));
  s.w = DeviceBuffer(static_cast<size_t>(B * T * H * 4));
  s.qs = DeviceBuffer(static_cast<size_t>(B * T * H * 4));
  const size_t page_bytes = fp8 ? cuda::kIndexerFp8PageBytes : 64 * 256;
  s.cache = DeviceBuffer(static_cast<size_t>(B * pages) * page_bytes);
  if (fp8) {
    fill_fp8<<<fill_grid(), 256>>>(s.q.as<uint8_t>(), B * T * H * 128, seed);
    fill_fp8<<<fill_grid(), 256>>>(s.cache.as<uint8_t>(), static_cast<int64_t>(s.cache.bytes()), seed + 1);
    fill_fp8_page_scales<<<fill_grid(), 256>>>(s.cache.as<uint8_t>(), B * pages, seed + 2);
  } else {
    fill_normal_bf16<<<fill_grid(), 256>>>(s.q.as<uint16_t>(), B * T * H * 128, seed, 1.0f);
    fill_normal_bf16<<<fill_grid(), 256>>>(s.cache.as<uint16_t>(), static_cast<int64_t>(s.cache.bytes() / 2), seed + 1, 1.0f);
  }
  fill_normal_f32<<<fill_grid(), 256>>>(s.w.as<float>(), B * T * H, seed + 3, 1.0f);
  fill_normal_f32<<<fill_grid(), 256>>>(s.qs.as<float>(), B * T * H, seed + 4, 0.01f);
  IS_CUDA_LAUNCH_CHECK("fill");
  std::vector<int32_t> table(static_cast<size_t>(B * pages));
  std::iota(table.begin(), table.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(table.begin(), table.end(), rng);
  s.table = cuda::to_device(table.data(), table.size() * 4);
  std::vector<int32_t> sl(B, static_cast<int32_t>(L)), qst(B, static_cast<int32_t>(L - T));
  s.seq_lens = cuda::to_device(sl.data(), sl.size() * 4);
  s.q_starts = cuda::to_device(qst.data(), qst.size() * 4);
  auto& p = s.p;
  p.format = fmt;
  p.q = s.q.get();
  p.q_scale = nullptr;  // q scales folded into the weights, as DeepGEMM takes them
  p.weights = s.w.as<float>();
  p.k_cache = s.cache.get();
  p.block_table = s.table.as<int32_t>();
  p.max_pages = static_cast<int>(pages);
  p.seq_lens = s.seq_lens.as<int32_t>();
  p.q_starts = s.q_starts.as<int32_t>();
  p.scale = 1.0f / std::sqrt(static_cast<float>(H * 128));
  p.B = B;
  p.T = T;
  p.L = L;
  p.H = H;
  return s;
}

int64_t indexer_set_bytes(cuda::IndexerFormat fmt, int B, int64_t L) {
  return B * ((L + 63) / 64) * (fmt == cuda::IndexerFormat::kFp8 ? 64 * 132 : 64 * 256);
}

const char* kernel_name(cuda::IndexerKernel k) {
  return k == cuda::IndexerKernel::kWgmma ? "wgmma" : k == cuda::IndexerKernel::kMmaSync ? "mma" : "auto";
}

void bench_indexer(cuda::IndexerFormat fmt, const char* phase, int B, int H, int64_t T, int64_t L,
                   cuda::IndexerKernel kernel = cuda::IndexerKernel::kAuto) {
  const int R = rotations(indexer_set_bytes(fmt, B, L));
  std::vector<IndexerSet> sets;
  for (int r = 0; r < R; ++r) {
    sets.push_back(make_indexer_set(fmt, B, H, T, L, 1000 + r));
    sets.back().p.kernel = kernel;
  }
  DeviceBuffer out(static_cast<size_t>(B * T * L) * 4);
  const double ms = time_ms([&](int i) { cuda::indexer_scores_cuda(sets[i % R].p, out.as<float>(), L); });
  const double flops = 2.0 * B * T * H * 128.0 * L;  // the whole [T, L] block, as the baseline counts
  const double bytes = static_cast<double>(indexer_set_bytes(fmt, B, L)) + B * T * L * 4.0;
  std::printf("indexer %-7s %-4s %-5s H%-3d B%-3d T%-5ld L%-8ld %9.3f ms %8.1f TFLOP/s %7.0f GB/s\n", phase,
              fmt_name(fmt).c_str(), kernel_name(kernel), H, B, static_cast<long>(T), static_cast<long>(L), ms,
              flops / ms / 1e9, bytes / ms / 1e6);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"op\":\"indexer\",\"phase\":\"%s\",\"fmt\":\"%s\",\"kernel\":\"%s\",\"H\":%d,\"B\":%d,"
                "\"T\":%ld,\"L\":%ld,\"ours_ms\":%.5f,\"flops\":%.6g,\"bytes\":%.6g}",
                phase, fmt_name(fmt).c_str(), kernel_name(kernel), H, B, static_cast<long>(T), static_cast<long>(L), ms,
                flops, bytes);
  emit(buf);
}

struct TopkRun {
  DeviceBuffer idx, cnt, ws;
  cuda::TopkCudaParams p;
  TopkRun(int64_t rows, int64_t L) {
    idx = DeviceBuffer(static_cast<size_t>(rows) * kTopK * 4);
    cnt = DeviceBuffer(static_cast<size_t>(rows) * 4);
    ws = DeviceBuffer(cuda::topk_workspace_bytes(rows, kTopK));
    p.T = rows;
    p.L = L;
    p.k = kTopK;
    p.indices = idx.as<int32_t>();
    p.count = cnt.as<int32_t>();
    p.workspace = ws.get();
    p.workspace_bytes = ws.bytes();
  }
  void run(const float* scores) {
    p.scores = scores;
    cuda::topk_cuda(p);
  }
};

void bench_topk(int64_t rows, int64_t L, cuda::TopkMethod method = cuda::TopkMethod::kAuto) {
  const int64_t set = rows * L * 4;
  const int R = rotations(set);
  std::vector<DeviceBuffer> in;
  for (int r = 0; r < R; ++r) {
    in.emplace_back(static_cast<size_t>(set));
    fill_normal_f32<<<fill_grid(), 256>>>(in.back().as<float>(), rows * L, 77 + r, 1.0f);
  }
  IS_CUDA_LAUNCH_CHECK("fill");
  TopkRun t(rows, L);
  t.p.method = method;
  const double ms = time_ms([&](int i) { t.run(in[i % R].as<float>()); });
  const char* mname = method == cuda::TopkMethod::kAuto ? "auto" : method == cuda::TopkMethod::kTwoPass ? "2pass" : "sampled";
  std::printf("topk    rows %-5ld L%-8ld k%d %-7s %9.3f ms %7.0f GB/s (one read of the scores)\n", static_cast<long>(rows),
              static_cast<long>(L), kTopK, mname, ms, set / ms / 1e6);
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"op\":\"topk\",\"rows\":%ld,\"L\":%ld,\"k\":%d,\"method\":\"%s\",\"ours_ms\":%.5f,\"bytes\":%.6g}",
                static_cast<long>(rows), static_cast<long>(L), kTopK, mname, ms, static_cast<double>(set));
  emit(buf);
}

void bench_fused(cuda::IndexerFormat fmt, const char* phase, int B, int H, int64_t T, int64_t L) {
  const int R = rotations(indexer_set_bytes(fmt, B, L));
  std::vector<IndexerSet> sets;
  for (int r = 0; r < R; ++r) sets.push_back(make_indexer_set(fmt, B, H, T, L, 2000 + r));
  const int64_t rows = B * T;
  DeviceBuffer idx(static_cast<size_t>(rows) * kTopK * 4), cnt(static_cast<size_t>(rows) * 4);
  DeviceBuffer ws(cuda::indexer_topk_workspace_bytes(sets[0].p, kTopK));
  const double fused = time_ms([&](int i) {
    cuda::indexer_topk_cuda(sets[i % R].p, kTopK, idx.as<int32_t>(), cnt.as<int32_t>(), ws.get(), ws.bytes());
  });
  DeviceBuffer scores(static_cast<size_t>(rows * L) * 4);
  TopkRun t(rows, L);
  const double sep = time_ms([&](int i) {
    cuda::indexer_scores_cuda(sets[i % R].p, scores.as<float>(), L);
    t.run(scores.as<float>());
  });
  const double flops = 2.0 * B * T * H * 128.0 * L;
  std::printf("fused   %-7s %-4s H%-3d B%-3d T%-5ld L%-8ld fused %9.3f ms  separate %9.3f ms  x%.2f  (workspace %.1f MB vs scores %.1f MB)\n",
              phase, fmt_name(fmt).c_str(), H, B, static_cast<long>(T), static_cast<long>(L), fused, sep, sep / fused,
              ws.bytes() / 1e6, rows * L * 4 / 1e6);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"op\":\"fused\",\"phase\":\"%s\",\"fmt\":\"%s\",\"H\":%d,\"B\":%d,\"T\":%ld,\"L\":%ld,\"k\":%d,"
                "\"ours_ms\":%.5f,\"separate_ms\":%.5f,\"flops\":%.6g}",
                phase, fmt_name(fmt).c_str(), H, B, static_cast<long>(T), static_cast<long>(L), kTopK, fused, sep, flops);
  emit(buf);
}

struct MlaSet {
  DeviceBuffer q, kv, idx;
  cuda::SparseMlaCudaParams p;
};
MlaSet make_mla_set(int64_t T, int H, int64_t L, uint64_t seed, float* out, float* lse) {
  MlaSet s;
  s.q = DeviceBuffer(static_cast<size_t>(T * H * cuda::kMlaDqk) * 2);
  s.kv = DeviceBuffer(static_cast<size_t>(L * cuda::kMlaDqk) * 2);
  s.idx = DeviceBuffer(static_cast<size_t>(T * kTopK) * 4);
  fill_normal_bf16<<<fill_grid(), 256>>>(s.q.as<uint16_t>(), T * H * cuda::kMlaDqk, seed, 1.0f);
  fill_normal_bf16<<<fill_grid(), 256>>>(s.kv.as<uint16_t>(), L * cuda::kMlaDqk, seed + 1, 1.0f);
  fill_indices<<<fill_grid(), 256>>>(s.idx.as<int32_t>(), T * kTopK, L, seed + 2);
  IS_CUDA_LAUNCH_CHECK("fill");
  s.p.q = s.q.as<uint16_t>();
  s.p.kv = s.kv.as<uint16_t>();
  s.p.indices = s.idx.as<int32_t>();
  s.p.T = T;
  s.p.L = L;
  s.p.H = H;
  s.p.K = kTopK;
  s.p.scale = 1.0f / std::sqrt(192.0f);
  s.p.out = out;
  s.p.lse = lse;
  return s;
}

void bench_mla(const char* phase, int64_t T, int H, int64_t L) {
  DeviceBuffer out(static_cast<size_t>(T * H * cuda::kMlaDv) * 4), lse(static_cast<size_t>(T * H) * 4);
  const int R = T * kTopK * 1152 >= kRotateBytes ? 1 : 4;
  std::vector<MlaSet> sets;
  for (int r = 0; r < R; ++r) sets.push_back(make_mla_set(T, H, L, 3000 + 10 * r, out.as<float>(), lse.as<float>()));
  const double ms = time_ms([&](int i) { cuda::sparse_mla_cuda(sets[i % R].p); });
  const double flops = 2.0 * T * H * kTopK * (cuda::kMlaDqk + cuda::kMlaDv);
  std::printf("mla     %-7s H%-3d T%-5ld K%d L%-8ld %9.3f ms %8.1f TFLOP/s\n", phase, H, static_cast<long>(T), kTopK,
              static_cast<long>(L), ms, flops / ms / 1e9);
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"op\":\"mla\",\"phase\":\"%s\",\"H\":%d,\"T\":%ld,\"K\":%d,\"L\":%ld,\"ours_ms\":%.5f,\"flops\":%.6g}",
                phase, H, static_cast<long>(T), kTopK, static_cast<long>(L), ms, flops);
  emit(buf);
}

size_t used_device_bytes() {
  size_t free_b = 0, total_b = 0;
  IS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

// N GLM-5-shaped DSA layers: fused indexer + top-k (F layers only) and sparse MLA (every layer).
// Projections, norms and MoE are left out. All layers share one set of caches (each far larger
// than L2 where it matters); the [T, L] score matrix never exists.
void bench_stack(const char* phase, int B, int64_t T, int64_t L) {
  const int kLayers = 78, kH = 32, kHq = 64;
  share::ScheduleInput si;
  si.num_layers = kLayers;
  si.index_topk_freq = 4;
  si.index_skip_topk_offset = 3;
  const share::Schedule glm = share::Schedule::resolve(si);
  const share::Schedule all = share::Schedule::all_full(kLayers);
  const size_t before = used_device_bytes();
  IndexerSet in = make_indexer_set(cuda::IndexerFormat::kFp8, B, kH, T, L, 4000);
  const int64_t rows = B * T;
  DeviceBuffer idx(static_cast<size_t>(rows) * kTopK * 4), cnt(static_cast<size_t>(rows) * 4);
  DeviceBuffer ws(cuda::indexer_topk_workspace_bytes(in.p, kTopK));
  DeviceBuffer out(static_cast<size_t>(rows * kHq * cuda::kMlaDv) * 4), lse(static_cast<size_t>(rows * kHq) * 4);
  MlaSet mla = make_mla_set(rows, kHq, L, 4100, out.as<float>(), lse.as<float>());
  mla.p.indices = idx.as<int32_t>();  // attention reads what the indexer selected
  // Prefill rows see keys up to their own position; indices are absolute positions < L.
  cuda::indexer_topk_cuda(in.p, kTopK, idx.as<int32_t>(), cnt.as<int32_t>(), ws.get(), ws.bytes());
  IS_CUDA_CHECK(cudaDeviceSynchronize());
  const size_t peak = used_device_bytes();

  auto run_layers = [&](const share::Schedule& s) {
    for (int l = 0; l < kLayers; ++l) {
      if (s.is_full(l))
        cuda::indexer_topk_cuda(in.p, kTopK, idx.as<int32_t>(), cnt.as<int32_t>(), ws.get(), ws.bytes());
      cuda::sparse_mla_cuda(mla.p);
    }
  };
  const int reps = g_quick ? 1 : 3;
  const double t_idx = time_ms([&](int) {
    cuda::indexer_topk_cuda(in.p, kTopK, idx.as<int32_t>(), cnt.as<int32_t>(), ws.get(), ws.bytes());
  });
  const double t_att = time_ms([&](int) { cuda::sparse_mla_cuda(mla.p); });
  const double t_all = time_ms([&](int) { run_layers(all); }, reps, reps);
  const double t_glm = time_ms([&](int) { run_layers(glm); }, reps, reps);
  const int nf = glm.num_full();
  const double pred_all = kLayers * (t_idx + t_att), pred_glm = nf * t_idx + kLayers * t_att;
  const double amdahl = pred_all / pred_glm, measured = t_all / t_glm;
  std::printf("stack   %-7s B%-3d T%-5ld L%-8ld 78 layers: all-F %9.2f ms  GLM-5.2 (%d F) %9.2f ms  speedup %.3f  "
              "Amdahl %.3f (%.1f%%)  per-op idx %.3f ms attn %.3f ms  device memory %.2f GB (+%.2f GB for the stack)\n",
              phase, B, static_cast<long>(T), static_cast<long>(L), t_all, nf, t_glm, measured, amdahl,
              100.0 * measured / amdahl, t_idx, t_att, peak / 1e9, (peak - before) / 1e9);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"op\":\"stack\",\"phase\":\"%s\",\"B\":%d,\"T\":%ld,\"L\":%ld,\"layers\":%d,\"full\":%d,"
                "\"all_ms\":%.4f,\"glm_ms\":%.4f,\"speedup\":%.4f,\"amdahl\":%.4f,\"idx_ms\":%.5f,\"attn_ms\":%.5f,"
                "\"peak_gb\":%.3f}",
                phase, B, static_cast<long>(T), static_cast<long>(L), kLayers, nf, t_all, t_glm, measured, amdahl,
                t_idx, t_att, peak / 1e9);
  emit(buf);
}

}  // namespace
}  // namespace indexshare::bench

int main(int argc, char** argv) {
  using namespace indexshare::bench;
  using indexshare::cuda::IndexerFormat;
  std::string only, out_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--quick") g_quick = true;
    else {
      std::fprintf(stderr, "usage: h200_bench [--out FILE] [--only indexer|topk|fused|mla|stack] [--quick]\n");
      return 2;
    }
  }
  if (indexshare::cuda::device_count() == 0) {
    std::fprintf(stderr, "h200_bench: no CUDA device\n");
    return 1;
  }
  if (!out_path.empty()) g_json = std::fopen(out_path.c_str(), "w");
  std::printf("device: %s\n", indexshare::cuda::device_name().c_str());
  auto want = [&](const char* s) { return (only.empty() && std::strcmp(s, "profile") != 0) || only == s; };
  try {
    const int64_t K = 1024;
    if (want("indexer")) {
      for (IndexerFormat f : {IndexerFormat::kFp8, IndexerFormat::kBf16}) {
        // fp8 prefill: both kernels, one after the other on the same shapes.
        auto prefill = [&](int H, int64_t T, int64_t L) {
          if (f == IndexerFormat::kFp8) {
            bench_indexer(f, "prefill", 1, H, T, L, indexshare::cuda::IndexerKernel::kMmaSync);
            bench_indexer(f, "prefill", 1, H, T, L, indexshare::cuda::IndexerKernel::kWgmma);
          } else {
            bench_indexer(f, "prefill", 1, H, T, L);
          }
        };
        prefill(32, 1024, 8 * K);
        prefill(32, 1024, 64 * K);
        prefill(32, 1024, 128 * K);
        prefill(32, 256, 256 * K);
        if (!g_quick) prefill(32, 256, 1024 * K);
        prefill(64, 1024, 128 * K);
        bench_indexer(f, "decode", 64, 32, 1, 32 * K);
        bench_indexer(f, "decode", 64, 32, 1, 128 * K);
        if (!g_quick) bench_indexer(f, "decode", 64, 32, 1, 1024 * K);
        bench_indexer(f, "decode", 64, 64, 1, 128 * K);
      }
    }
    if (want("topk")) {
      bench_topk(1024, 128 * K);
      bench_topk(1024, 128 * K, indexshare::cuda::TopkMethod::kTwoPass);
      bench_topk(256, 1024 * K);
      bench_topk(256, 1024 * K, indexshare::cuda::TopkMethod::kTwoPass);
      bench_topk(64, 128 * K);
      bench_topk(1, 128 * K);
      bench_topk(1, 1024 * K);
      bench_topk(1024, 8 * K);
    }
    if (want("fused")) {
      bench_fused(IndexerFormat::kFp8, "prefill", 1, 32, 1024, 128 * K);
      bench_fused(IndexerFormat::kFp8, "prefill", 1, 32, 256, 256 * K);
      if (!g_quick) bench_fused(IndexerFormat::kFp8, "prefill", 1, 32, 256, 1024 * K);
      bench_fused(IndexerFormat::kFp8, "decode", 64, 32, 1, 128 * K);
      if (!g_quick) bench_fused(IndexerFormat::kFp8, "decode", 64, 32, 1, 1024 * K);
    }
    if (want("mla")) {
      for (int H : {64, 128}) {
        bench_mla("decode", 1, H, 128 * K);
        bench_mla("decode", 64, H, 128 * K);
        bench_mla("prefill", 4096, H, 128 * K);
      }
    }
    if (only == "profile") {  // one launch each, for ncu
      IndexerSet a = make_indexer_set(IndexerFormat::kFp8, 1, 32, 1024, 64 * K, 5000);
      DeviceBuffer sa(static_cast<size_t>(1024 * 64 * K) * 4);
      IndexerSet d = make_indexer_set(IndexerFormat::kFp8, 64, 32, 1, 128 * K, 5001);
      DeviceBuffer sd(static_cast<size_t>(64 * 128 * K) * 4);
      indexshare::cuda::indexer_scores_cuda(a.p, sa.as<float>(), 64 * K);
      indexshare::cuda::indexer_scores_cuda(d.p, sd.as<float>(), 128 * K);
      IS_CUDA_CHECK(cudaDeviceSynchronize());
    }
    if (want("stack")) {
      for (int64_t L : {32 * K, 128 * K, 256 * K, 1024 * K}) {
        bench_stack("decode", 32, 1, L);
        bench_stack("prefill", 1, 256, L);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "h200_bench: %s\n", e.what());
    return 1;
  }
  if (g_json) std::fclose(g_json);
  return 0;
}

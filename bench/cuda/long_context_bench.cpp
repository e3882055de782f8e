// The long-context benchmark of the GPU engine: a GLM-5.2-shaped model with random weights (all
// 78 layers, GLM-5's attention and indexer dimensions, 3 dense-MLP layers first, the MoE reduced
// to fit one GPU) at contexts of 128K .. 1M tokens, GLM-5.2's schedule (freq 4, offset 3: 21 F)
// against every layer F, on the same engine in the same run.
//
// Per context L (the cache filled with L random tokens of latents and indexer keys, which costs
// the same to attend over as real ones):
//   - prefill: the time of one chunk of --chunk new tokens at depth L (median of --reps);
//   - decode: the time of one step at batch 1 and at --batch sequences that share the L-token
//     prefix (prefix sharing: the same pages, as a server does for one long document); steps are
//     replayed CUDA graphs (GlmDsaModel::decode), after one eager and one capturing step;
//   - a per-region profile of the same step (CUDA events at every region mark), from which the
//     Amdahl prediction of the sharing speedup is taken: the all-F step without the indexer time
//     of the layers GLM-5.2 shares;
//   - the cost model's ratio (src/cost) for the same reduced model and context;
//   - GPU busy / idle time of a decode step (CUPTI activity records);
//   - peak device memory and the indexer-cache bytes each schedule allocates.
//
//   long_context_bench [--contexts 131072,262144,524288,1048576] [--chunk 1024] [--batch 8]
//                      [--experts 4] [--experts-per-token 4] [--reps 3] [--decode-steps 8]
//                      [--weights fp8] [--json FILE] [--schedules glm5.2,all-f]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "cost/cost_model.h"
#include "cost/presets.h"
#include "cuda/engine/cuda_backend.h"
#include "cuda/runtime.h"
#include "gpu_trace.h"
#include "io/glm_dsa_loader.h"
#include "model/glm_dsa.h"

namespace indexshare::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::vector<int64_t> contexts = {131072, 262144, 524288, 1048576};
  int64_t chunk = 1024;
  int batch = 8;
  int experts = 4, experts_per_token = 4;
  int reps = 3, decode_steps = 8;
  std::string weights = "fp8";
  std::string json;
  std::vector<std::string> schedules = {"glm5.2", "all-f"};
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) out.push_back(x);
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> std::string {
      IS_CHECK(i + 1 < argc, k, " needs a value");
      return argv[++i];
    };
    if (k == "--contexts") {
      a.contexts.clear();
      for (const auto& x : split(val())) a.contexts.push_back(std::stoll(x));
    } else if (k == "--chunk") {
      a.chunk = std::stoll(val());
    } else if (k == "--batch") {
      a.batch = std::stoi(val());
    } else if (k == "--experts") {
      a.experts = std::stoi(val());
    } else if (k == "--experts-per-token") {
      a.experts_per_token = std::stoi(val());
    } else if (k == "--reps") {
      a.reps = std::stoi(val());
    } else if (k == "--decode-steps") {
      a.decode_steps = std::stoi(val());
    } else if (k == "--weights") {
      a.weights = val();
    } else if (k == "--json") {
      a.json = val();
    } else if (k == "--schedules") {
      a.schedules = split(val());
    } else {
      fail("unknown option ", k);
    }
  }
  return a;
}

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}
double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

// The GLM-5.2 preset with the MoE reduced, as HF config fields (the cost model reads the same).
io::HfConfig model_config(const Args& a, bool all_full) {
  io::HfConfig hf = cost::preset_config("glm5.2");
  hf.n_routed_experts = a.experts;
  hf.num_experts_per_tok = a.experts_per_token;
  if (all_full) {
    hf.index_topk_freq = 1;
    hf.index_skip_topk_offset = 2;
    hf.index_topk_pattern.reset();
    hf.indexer_types.reset();
  }
  hf.resolved_schedule = share::Schedule::resolve(hf.schedule_input());
  return hf;
}

struct Point {
  double prefill_ms = 0, decode1_ms = 0, decodeB_ms = 0;
  std::array<double, cuda::kRegions> prefill_regions{}, decode1_regions{}, decodeB_regions{};
  BusyStats decode1_busy, decodeB_busy;
};

struct ScheduleRun {
  std::string name;
  std::string pattern;
  int num_full = 0;
  size_t weight_bytes = 0, latent_bytes = 0, indexer_bytes = 0, indexer_bytes_per_f = 0;
  double peak_gib = 0;
  std::map<int64_t, Point> at;
};

std::vector<int32_t> random_ids(int64_t n, int64_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& x : ids) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(V));
  return ids;
}

ScheduleRun run_schedule(const Args& a, const std::string& name) {
  const bool all_full = name == "all-f";
  const model::GlmDsaConfig c = io::glm_dsa_config_from_hf(model_config(a, all_full));
  std::shared_ptr<backend::Backend> be = cuda::make_cuda_backend();
  model::ModelOptions o;
  o.weights = a.weights == "fp8" ? backend::WeightFormat::kFp8Block : backend::WeightFormat::kBf16;
  const int64_t max_ctx = *std::max_element(a.contexts.begin(), a.contexts.end());
  o.max_tokens = max_ctx + a.chunk + static_cast<int64_t>(a.batch + 2) * backend::kPageTokens * 2;
  o.max_step_rows = a.chunk;
  const cuda::DeviceMemory before = cuda::device_memory();
  std::printf("== %s: %s\n", name.c_str(), c.schedule.summary().c_str());
  const auto t0 = Clock::now();
  auto m = model::GlmDsaModel::random(c, be, o, 20261207);
  be->synchronize();
  ScheduleRun r;
  r.name = name;
  r.pattern = c.schedule.pattern();
  r.num_full = c.schedule.num_full();
  r.weight_bytes = m->weight_bytes();
  r.latent_bytes = m->latent_cache_bytes();
  r.indexer_bytes = m->indexer_cache_bytes();
  r.indexer_bytes_per_f = m->stack().indexer_cache_bytes(0);
  std::printf("   model made in %.1f s: weights %.2f GiB (%s), latent cache %.2f GiB (%s), indexer cache %.2f GiB "
              "(%s, %d F layers), device memory used %.2f GiB of %.2f\n",
              ms_since(t0) / 1e3, gib(r.weight_bytes), a.weights.c_str(), gib(r.latent_bytes),
              backend::cache_format_name(m->latent_format()).data(), gib(r.indexer_bytes),
              backend::cache_format_name(m->indexer_format()).data(), r.num_full,
              gib(static_cast<double>(cuda::device_memory().total - cuda::device_memory().free)),
              gib(static_cast<double>(before.total)));
  const auto chunk_ids = random_ids(a.chunk, c.vocab_size, 7);
  model::ForwardOptions last;
  last.logits = model::LogitRows::kLast;
  for (int64_t L : a.contexts) {
    Point p;
    auto base = m->new_cache();
    m->fill_random(base, L, static_cast<uint64_t>(L));
    // Prefill: one chunk at depth L.
    std::vector<double> t;
    for (int rep = 0; rep <= a.reps; ++rep) {
      const auto s0 = Clock::now();
      m->forward(base, chunk_ids, last);
      if (rep > 0) t.push_back(ms_since(s0));  // rep 0 warms up
      m->truncate(base, L);
    }
    p.prefill_ms = median(t);
    cuda::set_profiling(*be, true);
    m->forward(base, chunk_ids, last);
    p.prefill_regions = cuda::take_region_ms(*be);
    cuda::set_profiling(*be, false);
    m->truncate(base, L);
    // Decode at batch 1 and at batch B sharing the prefix.
    for (int B : {1, a.batch}) {
      std::vector<model::GlmDsaCache> seqs;
      std::vector<model::GlmDsaCache*> ptrs;
      if (B == 1) {
        ptrs.push_back(&base);
      } else {
        for (int b = 0; b < B; ++b) seqs.push_back(m->fork(base));
        for (auto& s : seqs) ptrs.push_back(&s);
      }
      std::vector<int32_t> toks(static_cast<size_t>(B), 1);
      t.clear();
      // Two untimed steps: the first runs eagerly (buffers), the second captures the step graph.
      for (int step = 0; step < a.decode_steps + 2; ++step) {
        const auto s0 = Clock::now();
        m->decode(ptrs, toks);
        if (step >= 2) t.push_back(ms_since(s0));
      }
      const double step_ms = median(t);
      cuda::set_profiling(*be, true);
      m->decode(ptrs, toks);
      const auto regions = cuda::take_region_ms(*be);
      cuda::set_profiling(*be, false);
      GpuTrace trace;
      trace.start();
      m->decode(ptrs, toks);
      const BusyStats busy = busy_stats(trace.stop());
      if (B == 1) {
        p.decode1_ms = step_ms, p.decode1_regions = regions, p.decode1_busy = busy;
        m->truncate(base, L);
      } else {
        p.decodeB_ms = step_ms, p.decodeB_regions = regions, p.decodeB_busy = busy;
      }
    }
    r.at[L] = p;
    const double idx = p.decode1_regions[static_cast<size_t>(backend::Region::kIndexer)];
    std::printf("   L %8lld: prefill chunk %lld: %9.2f ms (indexer %7.2f ms) | decode B1 %7.2f ms (indexer %6.2f, "
                "GPU idle %4.1f%%) | decode B%d %7.2f ms (GPU idle %4.1f%%)\n",
                static_cast<long long>(L), static_cast<long long>(a.chunk), p.prefill_ms,
                p.prefill_regions[static_cast<size_t>(backend::Region::kIndexer)], p.decode1_ms, idx,
                100.0 * p.decode1_busy.idle_ms / std::max(p.decode1_busy.window_ms, 1e-9), a.batch, p.decodeB_ms,
                100.0 * p.decodeB_busy.idle_ms / std::max(p.decodeB_busy.window_ms, 1e-9));
    std::fflush(stdout);
  }
  r.peak_gib = gib(static_cast<double>(be->peak_bytes()));
  return r;
}

double sum(const std::array<double, cuda::kRegions>& a) {
  double s = 0;
  for (double x : a) s += x;
  return s;
}

}  // namespace
}  // namespace indexshare::bench

int main(int argc, char** argv) {
  using namespace indexshare;
  using namespace indexshare::bench;
  try {
    const Args a = parse(argc, argv);
    IS_CHECK(cuda::device_count() > 0, "no CUDA device");
    std::printf("device: %s; weights %s; MoE reduced to %d routed experts (top %d) + 1 shared, intermediate 2048\n",
                cuda::device_name().c_str(), a.weights.c_str(), a.experts, a.experts_per_token);
    std::vector<ScheduleRun> runs;
    for (const auto& s : a.schedules) runs.push_back(run_schedule(a, s));
    const ScheduleRun* shared = nullptr;
    const ScheduleRun* full = nullptr;
    for (const auto& r : runs) (r.name == "all-f" ? full : shared) = &r;
    std::ostringstream js;
    js << "{\"device\": \"" << cuda::device_name() << "\", \"weights\": \"" << a.weights << "\", \"chunk\": " << a.chunk
       << ", \"batch\": " << a.batch << ", \"experts\": " << a.experts << ", \"experts_per_token\": "
       << a.experts_per_token << ", \"runs\": [";
    for (size_t i = 0; i < runs.size(); ++i) {
      const auto& r = runs[i];
      js << (i ? ", " : "") << "{\"schedule\": \"" << r.name << "\", \"pattern\": \"" << r.pattern
         << "\", \"num_full\": " << r.num_full << ", \"weight_bytes\": " << r.weight_bytes
         << ", \"latent_bytes\": " << r.latent_bytes << ", \"indexer_bytes\": " << r.indexer_bytes
         << ", \"peak_gib\": " << r.peak_gib << ", \"points\": [";
      bool first = true;
      for (const auto& [L, p] : r.at) {
        js << (first ? "" : ", ") << "{\"context\": " << L << ", \"prefill_ms\": " << p.prefill_ms
           << ", \"decode1_ms\": " << p.decode1_ms << ", \"decodeB_ms\": " << p.decodeB_ms
           << ", \"decode1_idle_ms\": " << p.decode1_busy.idle_ms << ", \"decode1_window_ms\": "
           << p.decode1_busy.window_ms << ", \"decodeB_idle_ms\": " << p.decodeB_busy.idle_ms
           << ", \"decodeB_window_ms\": " << p.decodeB_busy.window_ms << ", \"regions\": {";
        for (int g = 0; g < cuda::kRegions; ++g)
          js << (g ? ", " : "") << "\"" << backend::region_name(static_cast<backend::Region>(g)) << "\": ["
             << p.prefill_regions[static_cast<size_t>(g)] << ", " << p.decode1_regions[static_cast<size_t>(g)] << ", "
             << p.decodeB_regions[static_cast<size_t>(g)] << "]";
        js << "}}";
        first = false;
      }
      js << "]}";
    }
    js << "], \"comparison\": [";
    if (shared && full) {
      const model::GlmDsaConfig cs = io::glm_dsa_config_from_hf(model_config(a, false));
      const cost::Arch arch = cost::arch_from_config(model_config(a, false), "glm5.2-reduced");
      const int n = cs.num_layers, n_shared = cs.schedule.num_shared();
      std::printf("\n| context | phase | all-F ms | GLM-5.2 ms | measured speedup | Amdahl (own profile) | measured / "
                  "Amdahl | cost model (FLOPs) | cost model (bytes) |\n|---|---|---|---|---|---|---|---|---|\n");
      bool first = true;
      for (const auto& [L, pf] : full->at) {
        const auto it = shared->at.find(L);
        if (it == shared->at.end()) continue;
        const Point& ps = it->second;
        const cost::Comparison cmp = cost::compare(arch, cs.schedule, cost::Phase::kDecode, L, {});
        struct Row {
          const char* phase;
          double full_ms, shared_ms;
          const std::array<double, cuda::kRegions>* regions;
        };
        for (const Row& row : {Row{"prefill chunk", pf.prefill_ms, ps.prefill_ms, &pf.prefill_regions},
                               Row{"decode B1", pf.decode1_ms, ps.decode1_ms, &pf.decode1_regions},
                               Row{"decode B", pf.decodeB_ms, ps.decodeB_ms, &pf.decodeB_regions}}) {
          // Amdahl: the all-F step with the indexer time of the n_shared layers removed, the
          // profile scaled to the step's wall time.
          const double prof_total = sum(*row.regions);
          const double idx = (*row.regions)[static_cast<size_t>(backend::Region::kIndexer)];
          const double frac = prof_total > 0 ? idx / prof_total * n_shared / n : 0.0;
          const double amdahl = 1.0 / (1.0 - frac);
          const double measured = row.full_ms / row.shared_ms;
          std::printf("| %lld | %s | %.2f | %.2f | %.3f | %.3f | %.1f%% | %.3f | %.3f |\n", static_cast<long long>(L),
                      row.phase, row.full_ms, row.shared_ms, measured, amdahl, 100.0 * measured / amdahl, cmp.ratio,
                      cmp.bytes_ratio);
          js << (first ? "" : ", ") << "{\"context\": " << L << ", \"phase\": \"" << row.phase
             << "\", \"all_f_ms\": " << row.full_ms << ", \"shared_ms\": " << row.shared_ms
             << ", \"measured\": " << measured << ", \"amdahl\": " << amdahl << ", \"cost_flops\": " << cmp.ratio
             << ", \"cost_bytes\": " << cmp.bytes_ratio << "}";
          first = false;
        }
      }
      std::printf("\nindexer cache: all-F %.2f GiB, GLM-5.2 %.2f GiB (saves %.2f GiB); peak device memory all-F %.2f "
                  "GiB, GLM-5.2 %.2f GiB\n",
                  gib(full->indexer_bytes), gib(shared->indexer_bytes), gib(full->indexer_bytes - shared->indexer_bytes),
                  full->peak_gib, shared->peak_gib);
    }
    js << "]}";
    if (!a.json.empty()) std::ofstream(a.json) << js.str() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "long_context_bench: error: %s\n", e.what());
    return 1;
  }
}

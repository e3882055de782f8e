// One table of op cases for every backend (in the spirit of llama.cpp's test-backend-ops): each
// case draws fresh random inputs, runs one op of backend/backend.h on the backend under test and
// compares it with a float64 reference written here from the equations (never with the code
// under test). tests/backend_ops_test.cpp runs the table on the CPU backend;
// tests/cuda/backend_ops_cuda_test.cpp runs it on the CUDA backend.
//
// Tolerances are normwise, ||got - ref|| / ||ref||, chosen from the arithmetic: f32 paths land
// near 1e-7 (bound 2e-5); bf16 or fp8 operands (the reference uses the same rounded weights, the
// backend also rounds activations to bf16 for the tensor cores) near 3e-3 (bound 2e-2).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/counter_hash.h"
#include "core/dtype.h"
#include "core/error.h"
#include "share/dsa_stack.h"

namespace indexshare::backend_cases {

using backend::Backend;
using backend::CacheFormat;
using backend::WeightFormat;

struct OpCase {
  std::string name;
  std::function<void(Backend&, uint64_t seed)> run;
};
inline void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

// ---- helpers ---------------------------------------------------------------------------------

inline std::vector<float> uniform(std::mt19937_64& rng, size_t n, float a = 1.0f) {
  std::uniform_real_distribution<float> d(-a, a);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline Tensor put(Backend& be, const std::vector<float>& v, std::vector<int64_t> shape) {
  Tensor t = be.alloc(DType::kF32, std::move(shape));
  be.upload(t, v.data());
  return t;
}
inline Tensor put_i32(Backend& be, const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  Tensor t = be.alloc(DType::kI32, std::move(shape));
  be.upload(t, v.data());
  return t;
}
template <class T>
std::vector<T> get(Backend& be, const Tensor& t) {
  std::vector<T> v(static_cast<size_t>(t.numel()));
  be.download(v.data(), t);
  return v;
}

// Normwise relative error of got against a float64 reference; NaN never passes.
inline double rel_err(const std::vector<float>& got, const std::vector<double>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

inline double tol_for(const Backend& be, WeightFormat f) {
  (void)be;
  return f == WeightFormat::kF32 ? 2e-5 : 2e-2;
}

#define IS_EXPECT_CLOSE(got, ref, tol, what)                                             \
  do {                                                                                   \
    const double is_err_ = ::indexshare::backend_cases::rel_err(got, ref);               \
    EXPECT_LE(is_err_, tol) << what << ": normwise relative error " << is_err_;          \
    std::printf("  %-44s rel err %.3g (bound %.3g)\n", std::string(what).c_str(), is_err_, \
                static_cast<double>(tol));                                               \
  } while (0)

inline std::vector<WeightFormat> formats(const Backend& be) {
  std::vector<WeightFormat> f;
  for (WeightFormat w : {WeightFormat::kF32, WeightFormat::kBf16, WeightFormat::kFp8Block})
    if (be.supports(w)) f.push_back(w);
  return f;
}

inline std::string fmt_name(WeightFormat f) { return std::string(backend::weight_format_name(f)); }

// A step of B sequences x T rows over scattered pages: sequence b's page j is perm[b][j].
struct PagedStep {
  backend::Step step;
  Tensor buffer;
};
inline PagedStep make_step(Backend& be, const std::vector<int64_t>& q_start, int64_t T,
                           const std::vector<std::vector<int32_t>>& pages) {
  PagedStep p;
  p.step.B = static_cast<int>(q_start.size());
  p.step.T = T;
  p.step.q_start = q_start;
  size_t mp = 0;
  for (const auto& v : pages) mp = std::max(mp, v.size());
  p.step.max_pages = static_cast<int>(mp);
  p.step.table_host.assign(q_start.size() * mp, -1);
  for (size_t b = 0; b < pages.size(); ++b)
    std::copy(pages[b].begin(), pages[b].end(), p.step.table_host.begin() + static_cast<int64_t>(b * mp));
  backend::upload_step(be, p.step, p.buffer);
  return p;
}
// Pages for B sequences of up to `len` tokens, interleaved and reversed so no sequence's pages are
// consecutive: sequence b's page j is (pages_per_seq - 1 - j) * B + b.
inline std::vector<std::vector<int32_t>> scattered_pages(int B, int64_t len) {
  const int64_t n = (len + backend::kPageTokens - 1) / backend::kPageTokens;
  std::vector<std::vector<int32_t>> p(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b)
    for (int64_t j = 0; j < n; ++j) p[static_cast<size_t>(b)].push_back(static_cast<int32_t>((n - 1 - j) * B + b));
  return p;
}
inline int32_t slot_of(const std::vector<std::vector<int32_t>>& pages, int b, int64_t pos) {
  return pages[static_cast<size_t>(b)][static_cast<size_t>(pos / backend::kPageTokens)] * backend::kPageTokens +
         static_cast<int32_t>(pos % backend::kPageTokens);
}

// ---- cases -----------------------------------------------------------------------------------

inline void case_norms(Backend& be, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t R = 5, n = 48, ld = 64;
  const auto x = uniform(rng, R * ld, 3.0f), w = uniform(rng, n), b = uniform(rng, n);
  Tensor tx = put(be, x, {R, ld}), tw = put(be, w, {n}), tb = put(be, b, {n});
  Tensor ty = be.alloc(DType::kF32, {R, n});
  backend::NormArgs a;
  a.x = tx;
  a.y = tx;  // in place on a strided view: columns [n, ld) must stay
  a.weight = tw;
  a.rows = R;
  a.n = n;
  a.ld_x = ld;
  a.ld_y = ld;
  a.eps = 1e-5f;
  be.rms_norm(a);
  a.y = ty;
  a.ld_y = n;
  a.bias = tb;
  a.x = put(be, x, {R, ld});
  be.layer_norm(a);
  const auto rms = get<float>(be, tx), ln = get<float>(be, ty);
  std::vector<double> want_rms(static_cast<size_t>(R * ld)), want_ln(static_cast<size_t>(R * n));
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0, mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[r * ld + i]) * x[r * ld + i], mean += x[r * ld + i];
    mean /= n;
    for (int64_t i = 0; i < n; ++i) var += (x[r * ld + i] - mean) * (x[r * ld + i] - mean);
    var /= n;
    for (int64_t i = 0; i < ld; ++i)
      want_rms[r * ld + i] = i < n ? x[r * ld + i] / std::sqrt(ss / n + 1e-5) * w[i] : x[r * ld + i];
    for (int64_t i = 0; i < n; ++i) want_ln[r * n + i] = (x[r * ld + i] - mean) / std::sqrt(var + 1e-5) * w[i] + b[i];
  }
  IS_EXPECT_CLOSE(rms, want_rms, 2e-6, "rms_norm (strided, in place)");
  IS_EXPECT_CLOSE(ln, want_ln, 2e-6, "layer_norm (bias)");
}

inline void case_linear(Backend& be, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (WeightFormat f : formats(be))
    for (auto [M, N, K] : {std::array<int64_t, 3>{1, 77, 200}, {3, 130, 37}, {8, 64, 256}, {37, 96, 136},
                           {300, 160, 64}}) {
      const auto wv = uniform(rng, static_cast<size_t>(N * K), 0.1f), x = uniform(rng, static_cast<size_t>(M * K));
      const auto bias = f == WeightFormat::kF32 ? uniform(rng, static_cast<size_t>(N)) : std::vector<float>{};
      const backend::HostWeight hw = backend::make_host_weight(wv, 1, N, K, f, bias);
      const auto deq = backend::host_weight_values(hw);
      const backend::Weight w = be.upload_weight(hw);
      Tensor tx = put(be, x, {M, K}), ty = be.alloc(DType::kF32, {M, N});
      be.linear(tx, w, ty);
      std::vector<double> want(static_cast<size_t>(M * N));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double acc = bias.empty() ? 0.0 : bias[n];
          for (int64_t k = 0; k < K; ++k) acc += double(x[m * K + k]) * deq[n * K + k];
          want[m * N + n] = acc;
        }
      IS_EXPECT_CLOSE(get<float>(be, ty), want, tol_for(be, f),
                      "linear " + fmt_name(f) + " M" + std::to_string(M) + " N" + std::to_string(N) + " K" +
                          std::to_string(K));
    }
}

inline void case_rope(Backend& be, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int R = 6, heads = 3, hd = 24, off = 8, rot = 16;
  std::vector<float> inv(rot / 2);
  for (int j = 0; j < rot / 2; ++j) inv[j] = static_cast<float>(std::pow(8e6, -2.0 * j / rot));
  std::vector<int32_t> pos = {0, 1, 4095, 65537, 1000003, 1048575};
  for (bool inter : {true, false})
    for (float factor : {1.0f, 1.3f}) {
      const auto x = uniform(rng, static_cast<size_t>(R * heads * hd));
      Tensor tx = put(be, x, {R, heads * hd});
      backend::RopeSpec s;
      s.heads = heads;
      s.head_dim = hd;
      s.offset = off;
      s.rot_dim = rot;
      s.interleaved = inter;
      s.attention_factor = factor;
      s.inv_freq = put(be, inv, {rot / 2});
      be.rope(tx, put_i32(be, pos, {R}), s);
      std::vector<double> want(x.begin(), x.end());
      for (int r = 0; r < R; ++r)
        for (int h = 0; h < heads; ++h)
          for (int j = 0; j < rot / 2; ++j) {
            const int a = inter ? 2 * j : j, b = inter ? 2 * j + 1 : j + rot / 2;
            const double ang = double(pos[r]) * double(inv[j]);
            const size_t base = static_cast<size_t>((r * heads + h) * hd + off);
            const double xa = x[base + a], xb = x[base + b];
            want[base + a] = (xa * std::cos(ang) - xb * std::sin(ang)) * factor;
            want[base + b] = (xb * std::cos(ang) + xa * std::sin(ang)) * factor;
          }
      IS_EXPECT_CLOSE(get<float>(be, tx), want, 2e-6,
                      std::string("rope ") + (inter ? "interleaved" : "half-split") + " factor " + std::to_string(factor));
    }
}

inline void case_embed_add(Backend& be, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t V = 50, d = 24;
  const std::vector<int32_t> ids = {3, 0, 49, 17, 3};
  const int64_t R = static_cast<int64_t>(ids.size());
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kBf16}) {
    if (!be.supports(f)) continue;
    const backend::HostWeight hw = backend::make_host_weight(uniform(rng, V * d), 1, V, d, f);
    const auto deq = backend::host_weight_values(hw);
    const backend::Weight table = be.upload_weight(hw);
    Tensor out = be.alloc(DType::kF32, {R, d});
    be.embed(table, put_i32(be, ids, {R}), out);
    const auto extra = uniform(rng, R * d);
    be.add(out, put(be, extra, {R, d}));
    std::vector<double> want(static_cast<size_t>(R * d));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < d; ++i) want[r * d + i] = double(deq[ids[r] * d + i]) + extra[r * d + i];
    IS_EXPECT_CLOSE(get<float>(be, out), want, 1e-6, "embed + add " + fmt_name(f));
  }
}

inline double silu(double g) { return g / (1.0 + std::exp(-g)); }

// y = down(silu(gate x) * up x) of group g of [G, 2I, d] / [G, d, I] values.
inline std::vector<double> ref_mlp(const std::vector<float>& x, int64_t M, int64_t d, int64_t I,
                                   const std::vector<float>& gu, const std::vector<float>& dn, int64_t g) {
  std::vector<double> y(static_cast<size_t>(M * d));
  std::vector<double> h(static_cast<size_t>(I));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t i = 0; i < I; ++i) {
      double a = 0, b = 0;
      for (int64_t k = 0; k < d; ++k) {
        a += double(x[m * d + k]) * gu[(g * 2 * I + i) * d + k];
        b += double(x[m * d + k]) * gu[(g * 2 * I + I + i) * d + k];
      }
      h[i] = silu(a) * b;
    }
    for (int64_t o = 0; o < d; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < I; ++i) acc += h[i] * dn[(g * d + o) * I + i];
      y[m * d + o] = acc;
    }
  }
  return y;
}

inline void case_mlp(Backend& be, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (WeightFormat f : formats(be))
    for (int64_t M : {1, 5, 40}) {
      const int64_t d = 64, I = 48;
      const auto gu = backend::make_host_weight(uniform(rng, 2 * I * d, 0.2f), 1, 2 * I, d, f);
      const auto dn = backend::make_host_weight(uniform(rng, d * I, 0.2f), 1, d, I, f);
      const auto x = uniform(rng, M * d);
      Tensor y = be.alloc(DType::kF32, {M, d});
      be.mlp(put(be, x, {M, d}), be.upload_weight(gu), be.upload_weight(dn), y);
      const auto want = ref_mlp(x, M, d, I, backend::host_weight_values(gu), backend::host_weight_values(dn), 0);
      IS_EXPECT_CLOSE(get<float>(be, y), want, tol_for(be, f), "mlp " + fmt_name(f) + " M" + std::to_string(M));
    }
}

// The router of ops/moe_route.h in float64: returns (experts ascending, weights).
inline void ref_route(const std::vector<float>& logits, const std::vector<float>& bias, const backend::MoeSpec& s,
                      std::vector<int>& experts, std::vector<double>& weights) {
  const int E = s.experts, per = E / s.n_group;
  std::vector<double> sg(E), c(E);
  for (int e = 0; e < E; ++e) sg[e] = 1.0 / (1.0 + std::exp(-double(logits[e]))), c[e] = sg[e] + bias[e];
  std::vector<bool> keep(s.n_group, true);
  if (s.n_group > 1) {
    std::vector<std::pair<double, int>> gs;
    for (int g = 0; g < s.n_group; ++g) {
      std::vector<double> m(c.begin() + g * per, c.begin() + (g + 1) * per);
      std::sort(m.rbegin(), m.rend());
      gs.push_back({-(m[0] + (per > 1 ? m[1] : 0.0)), g});
    }
    std::sort(gs.begin(), gs.end());
    keep.assign(s.n_group, false);
    for (int i = 0; i < s.topk_group; ++i) keep[gs[i].second] = true;
  }
  std::vector<std::pair<double, int>> cand;
  for (int e = 0; e < E; ++e)
    if (keep[e / per]) cand.push_back({-c[e], e});
  std::sort(cand.begin(), cand.end());
  experts.clear();
  double sum = 0;
  for (int i = 0; i < s.top_k; ++i) experts.push_back(cand[i].second), sum += sg[cand[i].second];
  std::sort(experts.begin(), experts.end());
  weights.clear();
  for (int e : experts) weights.push_back((s.norm_topk_prob ? sg[e] / (sum + 1e-20) : sg[e]) * s.routed_scaling);
}

inline void case_moe(Backend& be, uint64_t seed) {
  std::mt19937_64 rng(seed);
  backend::MoeSpec s;
  s.experts = 8;
  s.top_k = 2;
  s.n_group = 4;
  s.topk_group = 2;
  s.norm_topk_prob = true;
  s.routed_scaling = 2.5f;
  const int64_t d = 64, I = 16, Is = 32;
  for (WeightFormat f : formats(be))
    for (int64_t M : {1, 7, 80}) {
      backend::MoeWeights m;
      const auto router = uniform(rng, s.experts * d, 0.3f), rbias = uniform(rng, s.experts, 0.2f);
      m.router = be.upload_weight(backend::make_host_weight(router, 1, s.experts, d, WeightFormat::kF32));
      m.router_bias = put(be, rbias, {s.experts});
      const auto gu = backend::make_host_weight(uniform(rng, s.experts * 2 * I * d, 0.2f), s.experts, 2 * I, d, f);
      const auto dn = backend::make_host_weight(uniform(rng, s.experts * d * I, 0.2f), s.experts, d, I, f);
      const auto sgu = backend::make_host_weight(uniform(rng, 2 * Is * d, 0.2f), 1, 2 * Is, d, f);
      const auto sdn = backend::make_host_weight(uniform(rng, d * Is, 0.2f), 1, d, Is, f);
      m.gate_up = be.upload_weight(gu);
      m.down = be.upload_weight(dn);
      m.has_shared = true;
      m.shared_gate_up = be.upload_weight(sgu);
      m.shared_down = be.upload_weight(sdn);
      const auto x = uniform(rng, M * d);
      const Tensor tx = put(be, x, {M, d});
      Tensor y = be.alloc(DType::kF32, {M, d}), ex = be.alloc(DType::kI32, {M, s.top_k}),
             wt = be.alloc(DType::kF32, {M, s.top_k});
      be.moe(tx, m, s, y);
      be.moe_route(tx, m, s, ex, wt);
      const auto gotx = get<int32_t>(be, ex);
      const auto gotw = get<float>(be, wt);
      const auto guv = backend::host_weight_values(gu), dnv = backend::host_weight_values(dn);
      std::vector<double> want = ref_mlp(x, M, d, Is, backend::host_weight_values(sgu), backend::host_weight_values(sdn), 0);
      std::vector<double> want_w;
      std::vector<float> want_wf;
      for (int64_t t = 0; t < M; ++t) {
        std::vector<float> lg(s.experts);
        for (int e = 0; e < s.experts; ++e) {
          double acc = 0;
          for (int64_t k = 0; k < d; ++k) acc += double(x[t * d + k]) * router[e * d + k];
          lg[e] = static_cast<float>(acc);
        }
        std::vector<int> exps;
        std::vector<double> ws;
        ref_route(lg, rbias, s, exps, ws);
        for (int j = 0; j < s.top_k; ++j) {
          EXPECT_EQ(gotx[t * s.top_k + j], exps[j]) << "row " << t << " slot " << j;
          want_wf.push_back(gotw[t * s.top_k + j]);
          want_w.push_back(ws[j]);
          const std::vector<float> xt(x.begin() + t * d, x.begin() + (t + 1) * d);
          const auto yt = ref_mlp(xt, 1, d, I, guv, dnv, exps[j]);
          for (int64_t i = 0; i < d; ++i) want[t * d + i] += ws[j] * yt[i];
        }
      }
      IS_EXPECT_CLOSE(want_wf, want_w, 1e-5, "moe_route weights " + fmt_name(f) + " M" + std::to_string(M));
      IS_EXPECT_CLOSE(get<float>(be, y), want, tol_for(be, f), "moe " + fmt_name(f) + " M" + std::to_string(M));
    }
}

// Absorbed sparse MLA over a paged latent cache. Reference in the expanded form:
//   logit_s = scale (q_nope . W_UK c_kv[s] + q_pe . k_pe[s]),  o = W_UV sum_s p_s c_kv[s].
inline void run_mla(Backend& be, uint64_t seed, int H, int nope, int rope, int v, int kvr, int K, CacheFormat cf,
                    const std::string& label) {
  std::mt19937_64 rng(seed);
  const int ld = kvr + rope, qk = nope + rope, B = 2;
  const int64_t T = 3;
  const std::vector<int64_t> q0 = {130, 70};
  const auto pages = scattered_pages(B, 140);
  const auto kv_b = uniform(rng, static_cast<size_t>(H) * (nope + v) * kvr, 0.2f);
  const WeightFormat wf = cf == CacheFormat::kF32 ? WeightFormat::kF32 : WeightFormat::kBf16;
  const backend::MlaWeights w = be.upload_mla(kv_b, H, nope, v, kvr, wf);
  auto cache = be.new_latent_cache(static_cast<int64_t>(B * pages[0].size()), kvr, rope, cf);
  // Write every sequence's latents: positions [0, q0 + T), one step per sequence.
  std::vector<std::vector<float>> lat(B);
  for (int b = 0; b < B; ++b) {
    const int64_t n = q0[b] + T;
    lat[b] = uniform(rng, static_cast<size_t>(n * ld));
    PagedStep ps = make_step(be, {0}, n, {pages[b]});
    be.latent_write(*cache, ps.step, put(be, lat[b], {n, ld}));
  }
  PagedStep ps = make_step(be, q0, T, pages);
  // Index sets: random visible positions, some -1 slots; row 1 of sequence 0 attends to nothing.
  std::vector<int32_t> logical(static_cast<size_t>(B * T * K), -1);
  for (int b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      if (b == 0 && t == 1) continue;
      std::vector<int32_t> all(static_cast<size_t>(q0[b] + t + 1));
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      size_t next = 0;
      for (int j = 0; j < K && next < all.size(); ++j)
        if (j % 5 != 4) logical[static_cast<size_t>((b * T + t) * K + j)] = all[next++];  // every 5th slot empty
    }
  std::vector<int32_t> physical(logical.size());
  for (size_t i = 0; i < logical.size(); ++i) {
    const int b = static_cast<int>(i / (T * K));
    physical[i] = logical[i] < 0 ? -1 : slot_of(pages, b, logical[i]);
  }
  const auto q = uniform(rng, static_cast<size_t>(B * T * H * qk));
  Tensor out = be.alloc(DType::kF32, {B * T, int64_t{H} * v});
  backend::MlaArgs a;
  a.q = put(be, q, {B * T, int64_t{H} * qk});
  a.w = &w;
  a.cache = cache.get();
  a.indices = put_i32(be, physical, {B * T, K});
  a.scale = 1.0f / std::sqrt(static_cast<float>(qk));
  a.out = out;
  be.mla_attention(a);
  // The backend's own translation agrees with ours.
  Tensor phys2 = be.alloc(DType::kI32, {B * T, K});
  be.to_physical(ps.step, put_i32(be, logical, {B * T, K}), phys2);
  EXPECT_EQ(get<int32_t>(be, phys2), physical) << "to_physical";

  std::vector<double> want(static_cast<size_t>(B * T * H * v), 0.0);
  for (int b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        const int64_t r = b * T + t;
        const float* qr = q.data() + (r * H + h) * qk;
        std::vector<int32_t> sel;
        for (int j = 0; j < K; ++j)
          if (logical[static_cast<size_t>(r * K + j)] >= 0) sel.push_back(logical[static_cast<size_t>(r * K + j)]);
        if (sel.empty()) continue;
        std::vector<double> qlat(kvr, 0.0);
        for (int i = 0; i < kvr; ++i)
          for (int dd = 0; dd < nope; ++dd) qlat[i] += double(qr[dd]) * kv_b[(static_cast<size_t>(h) * (nope + v) + dd) * kvr + i];
        std::vector<double> logit(sel.size());
        double mx = -1e300;
        for (size_t j = 0; j < sel.size(); ++j) {
          const float* l = lat[b].data() + static_cast<size_t>(sel[j]) * ld;
          double acc = 0;
          for (int i = 0; i < kvr; ++i) acc += qlat[i] * l[i];
          for (int i = 0; i < rope; ++i) acc += double(qr[nope + i]) * l[kvr + i];
          logit[j] = acc * a.scale;
          mx = std::max(mx, logit[j]);
        }
        double z = 0;
        for (double lg : logit) z += std::exp(lg - mx);
        std::vector<double> ctx(kvr, 0.0);
        for (size_t j = 0; j < sel.size(); ++j) {
          const double p = std::exp(logit[j] - mx) / z;
          const float* l = lat[b].data() + static_cast<size_t>(sel[j]) * ld;
          for (int i = 0; i < kvr; ++i) ctx[i] += p * l[i];
        }
        for (int o = 0; o < v; ++o) {
          double acc = 0;
          for (int i = 0; i < kvr; ++i) acc += ctx[i] * kv_b[(static_cast<size_t>(h) * (nope + v) + nope + o) * kvr + i];
          want[static_cast<size_t>((r * H + h) * v + o)] = acc;
        }
      }
  const auto got = get<float>(be, out);
  // The empty row is exactly zero.
  for (int i = 0; i < H * v; ++i) EXPECT_EQ(got[static_cast<size_t>(1 * H * v + i)], 0.0f) << "empty row";
  IS_EXPECT_CLOSE(got, want, cf == CacheFormat::kF32 ? 2e-5 : 2e-2, "mla " + label);
}

inline void case_mla(Backend& be, uint64_t seed) {
  for (CacheFormat cf : be.latent_formats(32, 16, 4))
    run_mla(be, seed, 4, 16, 16, 24, 32, 24, cf, "H4 kvr32 K24 " + std::string(backend::cache_format_name(cf)));
  // The production latent (512 + 64), where a backend may offer a faster format; K = 256 slots
  // (partly -1) also takes a backend's split-KV path for small batches.
  for (CacheFormat cf : be.latent_formats(512, 64, 16))
    for (int K : {24, 256})
      run_mla(be, seed + 1, 16, 32, 64, 32, 512, K, cf,
              "H16 kvr512 K" + std::to_string(K) + " " + std::string(backend::cache_format_name(cf)));
}

// Indexer: keys appended in two steps (a prefix, then the query rows), top-k of B sequences over
// scattered pages against float64 scores.
inline void run_indexer(Backend& be, uint64_t seed, int H, int D, int topk, int64_t T, CacheFormat cf,
                        const std::string& label) {
  std::mt19937_64 rng(seed);
  const int B = 2;
  const std::vector<int64_t> q0 = {300, 37};
  const auto pages = scattered_pages(B, 300 + T);
  backend::IndexerSpec spec;
  spec.heads = H;
  spec.dim = D;
  spec.topk = topk;
  spec.scale = static_cast<float>(1.0 / std::sqrt(double(H) * D));
  spec.format = cf;
  auto cache = be.new_indexer_cache(static_cast<int64_t>(B * pages[0].size()), spec);
  std::vector<std::vector<float>> keys(B);
  for (int b = 0; b < B; ++b) {
    keys[b] = uniform(rng, static_cast<size_t>((q0[b] + T) * D));
    PagedStep ps = make_step(be, {0}, q0[b], {pages[b]});
    std::vector<float> prefix(keys[b].begin(), keys[b].begin() + q0[b] * D);
    be.indexer_append(*cache, ps.step, put(be, prefix, {q0[b], D}));
  }
  PagedStep ps = make_step(be, q0, T, pages);
  std::vector<float> knew;
  for (int b = 0; b < B; ++b) knew.insert(knew.end(), keys[b].begin() + q0[b] * D, keys[b].end());
  be.indexer_append(*cache, ps.step, put(be, knew, {B * T, D}));
  const auto q = uniform(rng, static_cast<size_t>(B * T * H * D)), w = uniform(rng, static_cast<size_t>(B * T * H));
  Tensor lg = be.alloc(DType::kI32, {B * T, topk}), ph = be.alloc(DType::kI32, {B * T, topk});
  const Tensor tq = put(be, q, {B * T, int64_t{H} * D}), tw = put(be, w, {B * T, H});
  be.indexer_select(*cache, ps.step, tq, tw, lg, ph);
  Tensor sc = be.alloc(DType::kF32, {B * T, ps.step.max_len});
  be.indexer_scores(*cache, ps.step, tq, tw, sc);
  const auto got = get<int32_t>(be, lg), gotp = get<int32_t>(be, ph);
  const auto gots = get<float>(be, sc);
  // The reference works on the values the cache holds: fp8 caches quantise each key row to
  // e4m3 with a per-row scale, and q per (row, head); both are modelled here.
  auto fp8_row = [](const float* x, int n, std::vector<double>& out) {
    float amax = 0;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float s = std::max(amax, 1e-4f) / 448.0f;
    out.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) out[i] = double(fp8e4m3_to_f32(f32_to_fp8e4m3(x[i] / s))) * s;
  };
  std::vector<double> want_scores;
  int checked_rows = 0;
  double score_mag = 0;
  for (int b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = b * T + t, vis = q0[b] + t + 1;
      std::vector<double> s(static_cast<size_t>(ps.step.max_len), -std::numeric_limits<double>::infinity());
      for (int64_t p = 0; p < vis; ++p) {
        std::vector<double> kk(keys[b].begin() + p * D, keys[b].begin() + (p + 1) * D);
        if (cf == CacheFormat::kFp8) fp8_row(keys[b].data() + p * D, D, kk);
        double acc = 0;
        for (int h = 0; h < H; ++h) {
          std::vector<double> qq(q.begin() + (r * H + h) * D, q.begin() + (r * H + h + 1) * D);
          if (cf == CacheFormat::kFp8) fp8_row(q.data() + (r * H + h) * D, D, qq);
          double dot = 0;
          for (int i = 0; i < D; ++i) dot += qq[i] * kk[i];
          acc += double(w[r * H + h]) * std::max(dot, 0.0);
        }
        s[static_cast<size_t>(p)] = acc * spec.scale;
        score_mag = std::max(score_mag, std::fabs(s[static_cast<size_t>(p)]));
      }
      // Selected: count, no duplicates, no future key, and every selected score >= every other.
      std::set<int32_t> sel;
      for (int j = 0; j < topk; ++j) {
        const int32_t x = got[static_cast<size_t>(r * topk + j)];
        if (x < 0) continue;
        EXPECT_LT(x, vis) << label << ": future key, row " << r;
        EXPECT_TRUE(sel.insert(x).second) << label << ": duplicate, row " << r;
        EXPECT_EQ(gotp[static_cast<size_t>(r * topk + j)], slot_of(pages, b, x)) << label << ": physical slot";
      }
      EXPECT_EQ(static_cast<int64_t>(sel.size()), std::min<int64_t>(topk, vis)) << label << " row " << r;
      double min_sel = 1e300, max_rest = -1e300;
      for (int64_t p = 0; p < vis; ++p)
        (sel.count(static_cast<int32_t>(p)) ? min_sel : max_rest) =
            sel.count(static_cast<int32_t>(p)) ? std::min(min_sel, s[static_cast<size_t>(p)])
                                                 : std::max(max_rest, s[static_cast<size_t>(p)]);
      const double slack = (cf == CacheFormat::kFp8 ? 1e-3 : 1e-6) * score_mag;
      EXPECT_GE(min_sel, max_rest - slack) << label << ": row " << r << " selected a key below an unselected one";
      ++checked_rows;
      for (double x : s) want_scores.push_back(x);
    }
  EXPECT_EQ(checked_rows, B * T);
  // Scores (finite entries), and -inf exactly where masked.
  std::vector<float> fin;
  std::vector<double> fin_want;
  for (size_t i = 0; i < want_scores.size(); ++i) {
    if (std::isinf(want_scores[i])) {
      EXPECT_TRUE(std::isinf(gots[i]) && gots[i] < 0) << label << ": masked score " << i << " = " << gots[i];
    } else {
      fin.push_back(gots[i]);
      fin_want.push_back(want_scores[i]);
    }
  }
  IS_EXPECT_CLOSE(fin, fin_want, cf == CacheFormat::kFp8 ? 2e-3 : 2e-5, "indexer scores " + label);
}

inline void case_indexer(Backend& be, uint64_t seed) {
  // T = 4 rows per sequence (decode-like) and 40 (prefill-like: a backend may switch methods).
  for (int64_t T : {4, 40}) {
    const std::string t = " T" + std::to_string(T) + " ";
    for (CacheFormat cf : be.indexer_formats(4, 32))
      run_indexer(be, seed, 4, 32, 16, T, cf, "H4 D32 k16" + t + std::string(backend::cache_format_name(cf)));
    for (CacheFormat cf : be.indexer_formats(32, 128))
      run_indexer(be, seed + 1, 32, 128, 64, T, cf, "H32 D128 k64" + t + std::string(backend::cache_format_name(cf)));
  }
}

// The sharing logic on this backend: F layers select, S layers get their F layer's set, the
// indexer caches exist for F layers only (bytes measured on the backend), counters.
inline void case_dsa_stack(Backend& be, uint64_t seed) {
  std::mt19937_64 rng(seed);
  share::ScheduleInput in;
  in.num_layers = 8;
  in.index_topk_freq = 4;
  in.index_skip_topk_offset = 3;
  const share::Schedule sched = share::Schedule::resolve(in);
  ASSERT_EQ(sched.pattern(), "FFFSSSFS");
  const int H = 2, D = 8, K = 5;
  share::DsaStackOptions o;
  o.index_heads = H;
  o.index_dim = D;
  o.topk = K;
  o.pages = 2;
  o.format = be.indexer_formats(H, D).front();
  const size_t before = be.bytes_in_use();
  share::DsaStack st(sched, o, be);
  const size_t allocated = be.bytes_in_use() - before;
  size_t f_bytes = 0;
  for (int l = 0; l < 8; ++l) {
    EXPECT_EQ(st.indexer_cache_bytes(l) > 0, sched.is_full(l)) << "layer " << l;
    f_bytes += st.indexer_cache_bytes(l);
  }
  EXPECT_EQ(f_bytes, 4 * st.indexer_cache_bytes(0));
  EXPECT_GE(allocated, f_bytes);
  EXPECT_LE(allocated, f_bytes + 4 * 4096) << "the stack allocated more than the F layers' caches";
  const std::vector<std::vector<int32_t>> pages = {{1, 0}};
  for (int64_t T : {20, 1}) {
    const int64_t q0 = T == 20 ? 0 : 20;
    PagedStep ps = make_step(be, {q0}, T, pages);
    st.begin_step(ps.step);
    EXPECT_THROW(st.topk(0), Error) << "no F layer ran yet";
    std::vector<std::vector<int32_t>> seen(8);
    for (int l = 0; l < 8; ++l) {
      if (sched.is_full(l)) {
        st.index(l, put(be, uniform(rng, T * H * D), {T, H * D}), put(be, uniform(rng, T * H), {T, H}),
                 put(be, uniform(rng, T * D), {T, D}));
      }
      seen[l] = get<int32_t>(be, st.topk_logical(l));
      (void)st.topk(l);
      if (!sched.is_full(l)) {
        EXPECT_EQ(seen[l], seen[sched.source(l)]) << "S layer " << l;
      }
    }
    EXPECT_NE(seen[0], seen[1]) << "F layers select independently";
  }
  const auto& c = st.counters();
  EXPECT_EQ(c.steps, 2);
  EXPECT_EQ(c.indexer_calls, 2 * 4);
  EXPECT_EQ(c.shared_reuses, 2 * 4);
  EXPECT_THROW(st.index(3, Tensor(), Tensor(), Tensor()), Error) << "S layer has no indexer";
}

// Reindex (R) layers on this backend: every F layer keeps its top-C candidates and its own set
// is their first K; an R layer's set is the top-K of exactly those candidates under its own
// (smaller) indexer, checked against float64 scores; S layers after an R layer reuse the R
// layer's set; caches exist for F and R layers only; counters; bad calls are refused.
inline void case_dsa_stack_reindex(Backend& be, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const share::Schedule sched = share::Schedule::from_pattern("FRSFRS");
  const int H = 2, D = 8, HR = 1, DR = 4, K = 5, C = 12;
  share::DsaStackOptions o;
  o.index_heads = H;
  o.index_dim = D;
  o.topk = K;
  o.pages = 2;
  o.format = be.indexer_formats(H, D).front();
  o.reindex_heads = HR;
  o.reindex_dim = DR;
  EXPECT_THROW(share::DsaStack(sched, o, be), Error) << "R layers without candidates";
  o.candidates = K - 1;
  EXPECT_THROW(share::DsaStack(sched, o, be), Error) << "fewer candidates than k";
  o.candidates = C;
  share::DsaStack st(sched, o, be);
  for (int l = 0; l < 6; ++l) EXPECT_EQ(st.indexer_cache_bytes(l) > 0, sched.has_indexer(l)) << "layer " << l;
  EXPECT_LT(st.indexer_cache_bytes(1), st.indexer_cache_bytes(0)) << "the R layer's indexer is the smaller one";
  const double scale = 1.0 / std::sqrt(double(HR) * DR);
  std::vector<std::vector<float>> rkeys(6);  // R layers' keys by position, [pos, DR]
  const std::vector<std::vector<int32_t>> pages = {{1, 0}};
  for (int64_t T : {20, 1}) {
    const int64_t q0 = T == 20 ? 0 : 20;
    PagedStep ps = make_step(be, {q0}, T, pages);
    st.begin_step(ps.step);
    EXPECT_THROW(st.reindex(1, Tensor(), Tensor(), Tensor()), Error) << "no F layer ran yet";
    std::vector<std::vector<int32_t>> seen(6), cand(6);
    for (int l = 0; l < 6; ++l) {
      if (sched.is_full(l)) {
        st.index(l, put(be, uniform(rng, T * H * D), {T, H * D}), put(be, uniform(rng, T * H), {T, H}),
                 put(be, uniform(rng, T * D), {T, D}));
        cand[l] = get<int32_t>(be, st.candidates_logical());
        ASSERT_EQ(static_cast<int64_t>(cand[l].size()), T * C);
      }
      if (sched.is_reindex(l)) {
        const auto q = uniform(rng, T * HR * DR), w = uniform(rng, T * HR), k = uniform(rng, T * DR);
        rkeys[l].insert(rkeys[l].end(), k.begin(), k.end());
        const Tensor tq = put(be, q, {T, HR * DR}), tw = put(be, w, {T, HR}), tk = put(be, k, {T, DR});
        if (be.device() != Device::kCpu) {
          EXPECT_THROW(st.reindex(l, tq, tw, tk), Error) << "reindex is CPU-only so far";
          return;
        }
        st.reindex(l, tq, tw, tk);
        const auto& cs = cand[sched.full_source(l)];
        const auto set = get<int32_t>(be, st.topk_logical(l));
        for (int64_t r = 0; r < T; ++r) {
          // float64 scores of the row's valid candidates, and the reference order.
          std::vector<std::pair<double, int32_t>> ref;
          for (int j = 0; j < C; ++j) {
            const int32_t pos = cs[r * C + j];
            if (pos < 0) continue;
            double acc = 0;
            for (int h = 0; h < HR; ++h) {
              double dot = 0;
              for (int d = 0; d < DR; ++d) dot += double(q[(r * HR + h) * DR + d]) * rkeys[l][pos * DR + d];
              acc += double(w[r * HR + h]) * scale * std::max(dot, 0.0);
            }
            ref.push_back({acc, pos});
          }
          std::sort(ref.begin(), ref.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
          const size_t want = std::min<size_t>(ref.size(), K);
          for (int j = 0; j < K; ++j) {
            const int32_t got = set[r * K + j];
            if (static_cast<size_t>(j) >= want) {
              EXPECT_EQ(got, -1) << "row " << r << " slot " << j;
              continue;
            }
            // The j-th pick has (to float rounding) the j-th best float64 score.
            const auto it = std::find_if(ref.begin(), ref.end(), [&](auto& e) { return e.second == got; });
            ASSERT_NE(it, ref.end()) << "row " << r << ": position " << got << " is not among the candidates";
            EXPECT_NEAR(it->first, ref[j].first, 1e-5) << "row " << r << " slot " << j;
          }
        }
      }
      if (sched.is_full(l)) {
        const auto set = get<int32_t>(be, st.topk_logical(l));
        for (int64_t r = 0; r < T; ++r) {
          for (int j = 0; j < K; ++j) EXPECT_EQ(set[r * K + j], cand[l][r * C + j]) << "F layer " << l;
        }
      }
      seen[l] = get<int32_t>(be, st.topk_logical(l));
      (void)st.topk(l);
      if (sched.is_shared(l)) {
        EXPECT_EQ(seen[l], seen[sched.source(l)]) << "S layer " << l;
      }
    }
    EXPECT_EQ(sched.source(2), 1);
    EXPECT_NE(seen[1], seen[0]) << "the R layer re-selects";
    if (T == 1) {  // refusals, while the step (which the stack points to) is alive
      EXPECT_THROW(st.reindex(0, Tensor(), Tensor(), Tensor()), Error) << "an F layer is not R";
      EXPECT_THROW(st.index(1, Tensor(), Tensor(), Tensor()), Error) << "an R layer is not F";
      EXPECT_THROW(st.set_topk(0, std::vector<int32_t>(K, 0)), Error) << "set_topk takes C candidates per row";
    }
  }
  const auto& c = st.counters();
  EXPECT_EQ(c.indexer_calls, 2 * 2);
  EXPECT_EQ(c.reindex_calls, 2 * 2);
  EXPECT_EQ(c.shared_reuses, 2 * 2);
}

inline std::vector<OpCase> all_cases() {
  return {{"norms", case_norms},     {"linear", case_linear},   {"rope", case_rope},
          {"embed_add", case_embed_add}, {"mlp", case_mlp},     {"moe", case_moe},
          {"mla", case_mla},         {"indexer", case_indexer}, {"dsa_stack", case_dsa_stack},
          {"dsa_stack_reindex", case_dsa_stack_reindex}};
}

}  // namespace indexshare::backend_cases

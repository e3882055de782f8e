#include "backend/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "core/counter_hash.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/indexer.h"
#include "ops/indexer_rescore.h"
#include "ops/indexer_topk.h"
#include "ops/moe_route.h"
#include "ops/norm.h"
#include "ops/quant_matmul.h"
#include "ops/rope.h"
#include "ops/sparse_attention.h"

namespace indexshare::backend {
namespace {

// Caches take their memory from the backend's allocator, so bytes_in_use() counts them.
class CpuLatent final : public LatentCache {
 public:
  CpuLatent(Tensor t, int ld) : rows(t.dim(0)), ld(ld), t(std::move(t)) {}
  size_t bytes() const override { return t.bytes(); }
  CacheFormat format() const override { return CacheFormat::kF32; }
  float* data() const { return t.as<float>(); }
  int64_t rows;
  int ld;
  Tensor t;  // [rows, ld]
};

class CpuIndexer final : public IndexerCache {
 public:
  CpuIndexer(Tensor t, const IndexerSpec& s) : rows(t.dim(0)), s(s), t(std::move(t)) {}
  size_t bytes() const override { return t.bytes(); }
  const IndexerSpec& spec() const override { return s; }
  float* k() const { return t.as<float>(); }
  int64_t rows;
  IndexerSpec s;
  Tensor t;  // [rows, dim]
};

void on_cpu(const Tensor& t, const char* what) {
  IS_CHECK(t.defined(), "cpu backend: ", what, " is missing");
  IS_CHECK(t.device() == Device::kCpu, "cpu backend: ", what, " is ", t.describe());
}

void check_2d(const Tensor& t, const char* what, DType dt, int64_t rows, int64_t cols) {
  on_cpu(t, what);
  IS_CHECK(t.dtype() == dt && t.numel() == rows * cols, "cpu backend: ", what, " is ", t.describe(), ", expected ",
           dtype_name(dt), " with ", rows, " x ", cols, " elements");
}

GgmlType ggml_of(WeightFormat f) {
  IS_CHECK(f != WeightFormat::kFp8Block, "cpu backend: fp8 weights are not supported (load them as f32 or bf16)");
  return f == WeightFormat::kF32 ? GgmlType::kF32 : GgmlType::kBF16;
}

// y[M, N] = x[M, K] W_g^T (+ bias) for group g of w.
void matmul(const float* x, int64_t M, const Weight& w, int64_t g, float* y) {
  if (M == 0) return;
  ops::QMatmulParams p;
  p.type = ggml_of(w.format);
  p.w = static_cast<const uint8_t*>(w.data.data()) + static_cast<size_t>(g * w.N * w.K) * dtype_size(w.data.dtype());
  p.N = w.N;
  p.K = w.K;
  p.x = x;
  p.M = M;
  p.y = y;
  ops::quant_matmul(p);
  if (w.bias.defined()) {
    const float* b = w.bias.as<float>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < w.N; ++n) y[m * w.N + n] += b[n];
  }
}

// out[M, I] = silu(gu[:, :I]) * gu[:, I:] for gu [M, 2I].
void swiglu_rows(const float* gu, int64_t M, int64_t I, float* out) {
  for (int64_t m = 0; m < M; ++m) ops::swiglu(gu + m * 2 * I, gu + m * 2 * I + I, out + m * I, I);
}

// SwiGLU MLP of group g: y[M, d] = down_g(silu(gate_g x) * up_g x).
void mlp_rows(const float* x, int64_t M, const Weight& gate_up, const Weight& down, int64_t g, float* y) {
  const int64_t I = gate_up.N / 2;
  std::vector<float> gu(static_cast<size_t>(M * 2 * I)), h(static_cast<size_t>(M * I));
  matmul(x, M, gate_up, g, gu.data());
  swiglu_rows(gu.data(), M, I, h.data());
  matmul(h.data(), M, down, g, y);
}

void route(const float* x, int64_t M, const MoeWeights& m, const MoeSpec& s, int32_t* experts, float* weights) {
  ops::validate(s);
  std::vector<float> logits(static_cast<size_t>(M * s.experts));
  matmul(x, M, m.router, 0, logits.data());
  for (int64_t t = 0; t < M; ++t)
    ops::route_token(s, logits.data() + t * s.experts, m.router_bias.as<float>(), experts + t * s.top_k,
                     weights + t * s.top_k);
}

int64_t seq_len(const Step& s, int b) { return s.q_start[static_cast<size_t>(b)] + s.T; }

}  // namespace

CpuBackend::CpuBackend() : stats_(std::make_shared<Stats>()) {}

std::string CpuBackend::name() const { return cat("cpu (", num_threads(), " threads)"); }

Tensor CpuBackend::alloc(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    IS_CHECK(d >= 0, "cpu backend: negative extent in alloc");
    n *= d;
  }
  const size_t bytes = ((static_cast<size_t>(n) * dtype_size(dtype) + 63) / 64) * 64 + 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) fail("cpu backend: out of host memory allocating ", bytes, " bytes");
  const size_t now = stats_->in_use.fetch_add(bytes) + bytes;
  size_t peak = stats_->peak.load();
  while (now > peak && !stats_->peak.compare_exchange_weak(peak, now)) {
  }
  std::shared_ptr<Stats> st = stats_;
  std::shared_ptr<void> holder(p, [st, bytes](void* q) {
    std::free(q);
    st->in_use.fetch_sub(bytes);
  });
  return Tensor(std::move(holder), p, dtype, Device::kCpu, std::move(shape));
}

void CpuBackend::upload(const Tensor& dst, const void* src) {
  on_cpu(dst, "upload destination");
  if (dst.bytes()) std::memcpy(dst.data(), src, dst.bytes());
}

void CpuBackend::download(void* dst, const Tensor& src) {
  on_cpu(src, "download source");
  if (src.bytes()) std::memcpy(dst, src.data(), src.bytes());
}

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  on_cpu(dst, "copy destination");
  on_cpu(src, "copy source");
  IS_CHECK(dst.bytes() == src.bytes(), "cpu backend: copy of ", src.describe(), " into ", dst.describe());
  if (src.bytes()) std::memmove(dst.data(), src.data(), src.bytes());
}

void CpuBackend::fill_zero(const Tensor& t) {
  on_cpu(t, "fill_zero tensor");
  if (t.bytes()) std::memset(t.data(), 0, t.bytes());
}

void CpuBackend::fill_uniform(const Tensor& t, uint64_t seed, float amplitude) {
  on_cpu(t, "fill_uniform tensor");
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kF32: {
      float* p = t.as<float>();
      parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) p[i] = counter_uniform(seed, static_cast<uint64_t>(i), amplitude);
      });
      break;
    }
    case DType::kBF16: {
      uint16_t* p = t.as<uint16_t>();
      parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) p[i] = f32_to_bf16(counter_uniform(seed, static_cast<uint64_t>(i), amplitude));
      });
      break;
    }
    case DType::kF8E4M3: {
      uint8_t* p = t.as<uint8_t>();
      parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          p[i] = f32_to_fp8e4m3(counter_uniform(seed, static_cast<uint64_t>(i), amplitude));
      });
      break;
    }
    default:
      fail("cpu backend: fill_uniform of ", t.describe());
  }
}

size_t CpuBackend::bytes_in_use() const { return stats_->in_use.load(); }
size_t CpuBackend::peak_bytes() const { return stats_->peak.load(); }

MlaWeights CpuBackend::upload_mla(const std::vector<float>& kv_b, int heads, int nope, int v_dim, int kv_lora,
                                  WeightFormat format) {
  IS_CHECK(static_cast<int64_t>(kv_b.size()) == int64_t{heads} * (nope + v_dim) * kv_lora, "mla: kv_b has ",
           kv_b.size(), " values, expected ", heads, " x (", nope, " + ", v_dim, ") x ", kv_lora);
  MlaWeights w{heads, nope, v_dim, kv_lora, alloc(DType::kF32, {heads, nope, kv_lora}),
               alloc(DType::kF32, {heads, v_dim, kv_lora})};
  float* uk = w.w_uk.as<float>();
  float* uv = w.w_uv.as<float>();
  const bool round = format != WeightFormat::kF32;  // bf16 / fp8 models hold W_UK, W_UV in bf16
  auto val = [&](float x) { return round ? bf16_to_f32(f32_to_bf16(x)) : x; };
  for (int h = 0; h < heads; ++h) {
    const float* blk = kv_b.data() + static_cast<size_t>(h) * (nope + v_dim) * kv_lora;
    std::transform(blk, blk + static_cast<size_t>(nope) * kv_lora, uk + static_cast<size_t>(h) * nope * kv_lora, val);
    std::transform(blk + static_cast<size_t>(nope) * kv_lora, blk + static_cast<size_t>(nope + v_dim) * kv_lora,
                   uv + static_cast<size_t>(h) * v_dim * kv_lora, val);
  }
  return w;
}

Weight CpuBackend::random_weight(WeightFormat f, int64_t groups, int64_t N, int64_t K, uint64_t seed, float amplitude) {
  if (f != WeightFormat::kFp8Block) return Backend::random_weight(f, groups, N, K, seed, amplitude);
  Weight w;
  w.format = WeightFormat::kF32;
  w.groups = groups;
  w.N = N;
  w.K = K;
  w.data = alloc(DType::kF32, {groups, N, K});
  float* p = w.data.as<float>();
  const float scale = amplitude / kFp8E4M3Max;
  parallel_for(w.data.numel(), 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      p[i] = fp8e4m3_to_f32(f32_to_fp8e4m3(counter_uniform(seed, static_cast<uint64_t>(i), kFp8E4M3Max))) * scale;
  });
  return w;
}

void CpuBackend::embed(const Weight& table, const Tensor& ids, const Tensor& out) {
  on_cpu(ids, "embed ids");
  IS_CHECK(ids.dtype() == DType::kI32, "embed: ids must be i32, got ", ids.describe());
  const int64_t R = ids.numel(), d = table.K, V = table.N;
  IS_CHECK(table.groups == 1 && table.format != WeightFormat::kFp8Block, "embed: table must be one f32 or bf16 matrix");
  check_2d(out, "embed output", DType::kF32, R, d);
  const int32_t* id = ids.as<int32_t>();
  float* y = out.as<float>();
  for (int64_t r = 0; r < R; ++r) {
    IS_CHECK(id[r] >= 0 && id[r] < V, "embed: token id ", id[r], " at row ", r, " is outside the vocabulary [0, ", V,
             ")");
    if (table.format == WeightFormat::kF32) {
      std::copy_n(table.data.as<float>() + id[r] * d, d, y + r * d);
    } else {
      const uint16_t* src = table.data.as<uint16_t>() + id[r] * d;
      for (int64_t i = 0; i < d; ++i) y[r * d + i] = bf16_to_f32(src[i]);
    }
  }
}

namespace {

// One ops:: norm per row of a strided NormArgs.
void norm_rows(const NormArgs& a, const char* what, void (*op)(const ops::NormParams&)) {
  on_cpu(a.x, what);
  on_cpu(a.y, what);
  on_cpu(a.weight, what);
  IS_CHECK(a.ld_x >= a.n && a.ld_y >= a.n && a.weight.numel() == a.n, what, ": bad strides or weight size");
  parallel_for(a.rows, 16, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      ops::NormParams np;
      np.x = a.x.as<float>() + r * a.ld_x;
      np.y = a.y.as<float>() + r * a.ld_y;
      np.weight = a.weight.as<float>();
      np.bias = a.bias.defined() ? a.bias.as<float>() : nullptr;
      np.T = 1;
      np.n = a.n;
      np.eps = a.eps;
      op(np);
    }
  });
}

}  // namespace

void CpuBackend::rms_norm(const NormArgs& a) { norm_rows(a, "rms_norm", ops::rms_norm); }

void CpuBackend::layer_norm(const NormArgs& a) { norm_rows(a, "layer_norm", ops::layer_norm); }

void CpuBackend::linear(const Tensor& x, const Weight& w, const Tensor& y) {
  IS_CHECK(w.groups == 1, "linear: weight has ", w.groups, " groups");
  const int64_t M = x.defined() ? x.numel() / std::max<int64_t>(w.K, 1) : 0;
  check_2d(x, "linear input", DType::kF32, M, w.K);
  check_2d(y, "linear output", DType::kF32, M, w.N);
  matmul(x.as<float>(), M, w, 0, y.as<float>());
}

void CpuBackend::rope(const Tensor& x, const Tensor& positions, const RopeSpec& s) {
  on_cpu(x, "rope x");
  on_cpu(positions, "rope positions");
  const int64_t R = positions.numel();
  IS_CHECK(x.dtype() == DType::kF32 && x.numel() == R * s.heads * s.head_dim, "rope: x is ", x.describe(),
           ", expected ", R, " x ", s.heads, " x ", s.head_dim, " f32");
  IS_CHECK(s.inv_freq.numel() == s.rot_dim / 2, "rope: inv_freq has ", s.inv_freq.numel(), " values for rot_dim ",
           s.rot_dim);
  if (R == 0) return;
  std::vector<int64_t> pos(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) pos[static_cast<size_t>(r)] = positions.as<int32_t>()[r];
  ops::RopeParams rp;
  rp.x = x.as<float>();
  rp.positions = pos.data();
  rp.T = R;
  rp.H = s.heads;
  rp.head_dim = s.head_dim;
  rp.rot_offset = s.offset;
  rp.rot_dim = s.rot_dim;
  rp.inv_freq = s.inv_freq.as<float>();
  rp.pairing = s.interleaved ? ops::RopePairing::kInterleaved : ops::RopePairing::kHalfSplit;
  ops::rope(rp);
  if (s.attention_factor != 1.0f) {
    float* p = x.as<float>();
    for (int64_t r = 0; r < R * s.heads; ++r)
      for (int i = 0; i < s.rot_dim; ++i) p[r * s.head_dim + s.offset + i] *= s.attention_factor;
  }
}

void CpuBackend::add(const Tensor& h, const Tensor& y) {
  on_cpu(h, "add h");
  on_cpu(y, "add y");
  IS_CHECK(h.numel() == y.numel() && h.dtype() == DType::kF32 && y.dtype() == DType::kF32, "add: ", h.describe(),
           " += ", y.describe());
  float* a = h.as<float>();
  const float* b = y.as<float>();
  for (int64_t i = 0; i < h.numel(); ++i) a[i] += b[i];
}

void CpuBackend::mlp(const Tensor& x, const Weight& gate_up, const Weight& down, const Tensor& y) {
  const int64_t d = gate_up.K, M = x.numel() / std::max<int64_t>(d, 1);
  check_2d(x, "mlp input", DType::kF32, M, d);
  check_2d(y, "mlp output", DType::kF32, M, down.N);
  IS_CHECK(gate_up.groups == 1 && down.groups == 1 && gate_up.N == 2 * down.K && down.N == d,
           "mlp: gate_up [", gate_up.N, ", ", gate_up.K, "] and down [", down.N, ", ", down.K, "] do not fit");
  mlp_rows(x.as<float>(), M, gate_up, down, 0, y.as<float>());
}

void CpuBackend::moe_route(const Tensor& x, const MoeWeights& m, const MoeSpec& s, const Tensor& experts,
                           const Tensor& weights) {
  const int64_t d = m.router.K, M = x.numel() / std::max<int64_t>(d, 1);
  check_2d(x, "moe input", DType::kF32, M, d);
  check_2d(experts, "moe experts", DType::kI32, M, s.top_k);
  check_2d(weights, "moe weights", DType::kF32, M, s.top_k);
  route(x.as<float>(), M, m, s, experts.as<int32_t>(), weights.as<float>());
}

void CpuBackend::moe(const Tensor& x, const MoeWeights& m, const MoeSpec& s, const Tensor& y) {
  const int64_t d = m.router.K, M = x.numel() / std::max<int64_t>(d, 1);
  const int k = s.top_k;
  check_2d(x, "moe input", DType::kF32, M, d);
  check_2d(y, "moe output", DType::kF32, M, d);
  std::vector<int32_t> experts(static_cast<size_t>(M * k));
  std::vector<float> weights(static_cast<size_t>(M * k));
  route(x.as<float>(), M, m, s, experts.data(), weights.data());
  const float* xp = x.as<float>();
  // Per expert: gather its tokens, run it once over them, keep each (token, slot) result.
  std::vector<float> slot_out(static_cast<size_t>(M * k * d));
  std::vector<float> xs, ys;
  std::vector<int64_t> slots;
  for (int ex = 0; ex < s.experts; ++ex) {
    slots.clear();
    for (int64_t i = 0; i < M * k; ++i)
      if (experts[static_cast<size_t>(i)] == ex) slots.push_back(i);
    if (slots.empty()) continue;
    const auto n = static_cast<int64_t>(slots.size());
    xs.resize(static_cast<size_t>(n * d));
    ys.resize(static_cast<size_t>(n * d));
    for (int64_t j = 0; j < n; ++j) std::copy_n(xp + (slots[static_cast<size_t>(j)] / k) * d, d, xs.begin() + j * d);
    mlp_rows(xs.data(), n, m.gate_up, m.down, ex, ys.data());
    for (int64_t j = 0; j < n; ++j) {
      const int64_t sl = slots[static_cast<size_t>(j)];
      const float wgt = weights[static_cast<size_t>(sl)];
      for (int64_t i = 0; i < d; ++i) slot_out[static_cast<size_t>(sl * d + i)] = ys[static_cast<size_t>(j * d + i)] * wgt;
    }
  }
  // Accumulate in ascending expert id (slots are sorted that way), then add the shared expert.
  float* yp = y.as<float>();
  std::fill(yp, yp + M * d, 0.0f);
  for (int64_t t = 0; t < M; ++t)
    for (int j = 0; j < k; ++j) {
      const float* src = slot_out.data() + (t * k + j) * d;
      for (int64_t i = 0; i < d; ++i) yp[t * d + i] += src[i];
    }
  if (m.has_shared) {
    std::vector<float> sh(static_cast<size_t>(M * d));
    mlp_rows(xp, M, m.shared_gate_up, m.shared_down, 0, sh.data());
    for (int64_t i = 0; i < M * d; ++i) yp[i] += sh[static_cast<size_t>(i)];
  }
}

std::vector<CacheFormat> CpuBackend::latent_formats(int, int, int) const { return {CacheFormat::kF32}; }

std::unique_ptr<LatentCache> CpuBackend::new_latent_cache(int64_t pages, int kv_lora, int rope, CacheFormat f) {
  IS_CHECK(f == CacheFormat::kF32, "cpu backend: the latent cache is f32 only, not ", cache_format_name(f));
  IS_CHECK(pages >= 1 && kv_lora >= 1 && rope >= 0, "latent cache: bad size");
  Tensor t = alloc(DType::kF32, {pages * kPageTokens, kv_lora + rope});
  fill_zero(t);
  return std::make_unique<CpuLatent>(std::move(t), kv_lora + rope);
}

void CpuBackend::latent_write(LatentCache& c, const Step& s, const Tensor& latent) {
  auto& lc = dynamic_cast<CpuLatent&>(c);
  check_2d(latent, "latent rows", DType::kF32, s.rows(), lc.ld);
  const int32_t* slots = s.slots.as<int32_t>();
  for (int64_t r = 0; r < s.rows(); ++r) {
    IS_CHECK(slots[r] >= 0 && slots[r] < lc.rows, "latent_write: slot ", slots[r], " outside the cache");
    std::copy_n(latent.as<float>() + r * lc.ld, lc.ld, lc.data() + static_cast<int64_t>(slots[r]) * lc.ld);
  }
}

void CpuBackend::mla_attention(const MlaArgs& a) {
  const MlaWeights& w = *a.w;
  const auto& lc = dynamic_cast<const CpuLatent&>(*a.cache);
  const int H = w.heads, nope = w.nope, vd = w.v_dim, kvr = w.kv_lora, ld = lc.ld, rope = ld - kvr;
  const int qkd = nope + rope;
  const int64_t R = a.q.numel() / (int64_t{H} * qkd);
  check_2d(a.q, "mla q", DType::kF32, R, int64_t{H} * qkd);
  const int K = static_cast<int>(a.indices.numel() / std::max<int64_t>(R, 1));
  check_2d(a.indices, "mla indices", DType::kI32, R, K);
  check_2d(a.out, "mla output", DType::kF32, R, int64_t{H} * vd);
  if (R == 0) return;
  const float* q = a.q.as<float>();
  const float* uk = w.w_uk.as<float>();
  const float* uv = w.w_uv.as<float>();

  // absorbed queries: q_lat[r, h] = [W_UK[h]^T q_nope[r, h] ; q_pe[r, h]]
  std::vector<float> q_lat(static_cast<size_t>(R * H * ld));
  parallel_for(R * H, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t h = i % H;
      const float* qn = q + i * qkd;
      float* dst = q_lat.data() + i * ld;
      for (int j = 0; j < kvr; ++j) dst[j] = 0.0f;
      for (int d = 0; d < nope; ++d) {
        const float* wrow = uk + (h * nope + d) * kvr;
        const float qd = qn[d];
        for (int j = 0; j < kvr; ++j) dst[j] += qd * wrow[j];
      }
      for (int j = 0; j < rope; ++j) dst[kvr + j] = qn[nope + j];
    }
  });

  std::vector<float> o_lat(static_cast<size_t>(R * H * kvr));
  ops::SparseMlaParams sp;
  sp.q = q_lat.data();
  sp.kv = lc.data();
  sp.indices = a.indices.as<int32_t>();
  sp.T = R;
  sp.L = lc.rows;
  sp.H = H;
  sp.Dqk = ld;
  sp.Dv = kvr;
  sp.K = K;
  sp.scale = a.scale;
  sp.out = o_lat.data();
  ops::sparse_mla(sp);

  // o[r, h, :] = W_UV[h] o_lat[r, h]
  float* o = a.out.as<float>();
  parallel_for(R * H, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t h = i % H;
      const float* ol = o_lat.data() + i * kvr;
      for (int v = 0; v < vd; ++v) {
        const float* wrow = uv + (h * vd + v) * kvr;
        float acc = 0.0f;
        for (int j = 0; j < kvr; ++j) acc += wrow[j] * ol[j];
        o[i * vd + v] = acc;
      }
    }
  });
}

std::vector<CacheFormat> CpuBackend::indexer_formats(int, int) const { return {CacheFormat::kF32}; }

std::unique_ptr<IndexerCache> CpuBackend::new_indexer_cache(int64_t pages, const IndexerSpec& spec) {
  IS_CHECK(spec.format == CacheFormat::kF32, "cpu backend: the indexer cache is f32 only, not ",
           cache_format_name(spec.format));
  IS_CHECK(pages >= 1 && spec.heads >= 1 && spec.dim >= 1 && spec.topk >= 1, "indexer cache: bad spec");
  Tensor t = alloc(DType::kF32, {pages * kPageTokens, spec.dim});
  fill_zero(t);
  return std::make_unique<CpuIndexer>(std::move(t), spec);
}

void CpuBackend::indexer_append(IndexerCache& c, const Step& s, const Tensor& k) {
  auto& ic = dynamic_cast<CpuIndexer&>(c);
  const int D = ic.s.dim;
  check_2d(k, "indexer keys", DType::kF32, s.rows(), D);
  const int32_t* slots = s.slots.as<int32_t>();
  for (int64_t r = 0; r < s.rows(); ++r) {
    IS_CHECK(slots[r] >= 0 && slots[r] < ic.rows, "indexer_append: slot ", slots[r], " outside the cache");
    std::copy_n(k.as<float>() + r * D, D, ic.k() + static_cast<int64_t>(slots[r]) * D);
  }
}

const float* CpuBackend::indexer_keys(const IndexerCache& c, const Step& s, int b, int64_t len,
                                      std::vector<float>& scratch) const {
  const auto& ic = dynamic_cast<const CpuIndexer&>(c);
  const int D = ic.s.dim;
  const int32_t* table = s.table_host.data() + static_cast<size_t>(b) * s.max_pages;
  const int64_t pages = (len + kPageTokens - 1) / kPageTokens;
  bool consecutive = true;
  for (int64_t j = 1; j < pages && consecutive; ++j) consecutive = table[j] == table[0] + j;
  if (pages == 0) return ic.k();
  if (consecutive) return ic.k() + static_cast<int64_t>(table[0]) * kPageTokens * D;
  scratch.resize(static_cast<size_t>(len * D));
  for (int64_t j = 0; j < pages; ++j) {
    const int64_t n = std::min<int64_t>(kPageTokens, len - j * kPageTokens);
    std::copy_n(ic.k() + static_cast<int64_t>(table[j]) * kPageTokens * D, n * D,
                scratch.data() + j * kPageTokens * D);
  }
  return scratch.data();
}

namespace {

ops::IndexerParams indexer_params(const IndexerSpec& sp, const Step& s, int b, const Tensor& q, const Tensor& w,
                                  const float* keys) {
  ops::IndexerParams p;
  p.q = q.as<float>() + b * s.T * sp.heads * sp.dim;
  p.k = keys;
  p.weights = w.as<float>() + b * s.T * sp.heads;
  p.scale = sp.scale;
  p.T = s.T;
  p.L = seq_len(s, b);
  p.H = sp.heads;
  p.D = sp.dim;
  p.q_start = s.q_start[static_cast<size_t>(b)];
  return p;
}

}  // namespace

void CpuBackend::indexer_select(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w,
                                const Tensor& logical, const Tensor& physical) {
  const IndexerSpec& sp = c.spec();
  const int64_t R = s.rows();
  check_2d(q, "indexer q", DType::kF32, R, int64_t{sp.heads} * sp.dim);
  check_2d(w, "indexer weights", DType::kF32, R, sp.heads);
  check_2d(logical, "indexer top-k", DType::kI32, R, sp.topk);
  check_2d(physical, "indexer top-k slots", DType::kI32, R, sp.topk);
  std::vector<float> scratch;
  for (int b = 0; b < s.B; ++b) {
    const float* keys = indexer_keys(c, s, b, seq_len(s, b), scratch);
    ops::IndexerTopkOptions o;
    o.k = sp.topk;
    ops::indexer_topk(indexer_params(sp, s, b, q, w, keys), o, logical.as<int32_t>() + b * s.T * sp.topk, nullptr);
  }
  to_physical(s, logical, physical);
}

void CpuBackend::indexer_scores(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w,
                                const Tensor& scores) {
  const IndexerSpec& sp = c.spec();
  const int64_t R = s.rows(), Lm = s.max_len;
  check_2d(scores, "indexer scores", DType::kF32, R, Lm);
  std::vector<float> scratch, tmp;
  for (int b = 0; b < s.B; ++b) {
    const int64_t L = seq_len(s, b);
    const float* keys = indexer_keys(c, s, b, L, scratch);
    tmp.assign(static_cast<size_t>(s.T * L), 0.0f);
    ops::indexer_scores(indexer_params(sp, s, b, q, w, keys), tmp.data());
    for (int64_t t = 0; t < s.T; ++t) {
      float* row = scores.as<float>() + (b * s.T + t) * Lm;
      std::copy_n(tmp.data() + t * L, L, row);
      std::fill(row + L, row + Lm, -std::numeric_limits<float>::infinity());
    }
  }
}

void CpuBackend::indexer_rescore(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w,
                                 const Tensor& cand_logical, const Tensor& cand_physical, const Tensor& logical,
                                 const Tensor& physical) {
  const auto& ic = dynamic_cast<const CpuIndexer&>(c);
  const IndexerSpec& sp = ic.s;
  const int64_t R = s.rows();
  check_2d(q, "reindex q", DType::kF32, R, int64_t{sp.heads} * sp.dim);
  check_2d(w, "reindex weights", DType::kF32, R, sp.heads);
  IS_CHECK(cand_logical.ndim() == 2 && cand_logical.dim(0) == R, "reindex candidates: ", cand_logical.describe(),
           " for ", R, " rows");
  const int64_t C = cand_logical.dim(1);
  check_2d(cand_logical, "reindex candidates", DType::kI32, R, C);
  check_2d(cand_physical, "reindex candidate slots", DType::kI32, R, C);
  check_2d(logical, "reindex top-k", DType::kI32, R, sp.topk);
  check_2d(physical, "reindex top-k slots", DType::kI32, R, sp.topk);
  ops::IndexerRescoreParams p;
  p.q = q.as<float>();
  p.weights = w.as<float>();
  p.keys = ic.k();
  p.slots = ic.rows;
  p.positions = cand_logical.as<int32_t>();
  p.cand_slots = cand_physical.as<int32_t>();
  p.scale = sp.scale;
  p.T = R;
  p.C = static_cast<int>(C);
  p.H = sp.heads;
  p.D = sp.dim;
  p.k = sp.topk;
  p.out_positions = logical.as<int32_t>();
  p.out_slots = physical.as<int32_t>();
  ops::indexer_rescore(p);
}

void CpuBackend::copy_columns(const Tensor& dst, const Tensor& src) {
  on_cpu(dst, "copy_columns dst");
  on_cpu(src, "copy_columns src");
  IS_CHECK(dst.dtype() == DType::kI32 && src.dtype() == DType::kI32 && dst.ndim() == 2 && src.ndim() == 2 &&
               dst.dim(0) == src.dim(0) && dst.dim(1) <= src.dim(1),
           "copy_columns: ", dst.describe(), " from ", src.describe());
  const int64_t K = dst.dim(1), C = src.dim(1);
  for (int64_t r = 0; r < dst.dim(0); ++r) std::copy_n(src.as<int32_t>() + r * C, K, dst.as<int32_t>() + r * K);
}

void CpuBackend::to_physical(const Step& s, const Tensor& logical, const Tensor& physical) {
  const int64_t R = s.rows(), K = logical.numel() / std::max<int64_t>(R, 1);
  check_2d(logical, "logical top-k", DType::kI32, R, K);
  check_2d(physical, "physical top-k", DType::kI32, R, K);
  const int32_t* l = logical.as<int32_t>();
  int32_t* p = physical.as<int32_t>();
  for (int64_t r = 0; r < R; ++r) {
    const int b = static_cast<int>(r / s.T);
    const int32_t* table = s.table_host.data() + static_cast<size_t>(b) * s.max_pages;
    for (int64_t j = 0; j < K; ++j) {
      const int32_t pos = l[r * K + j];
      if (pos < 0) {
        p[r * K + j] = -1;
        continue;
      }
      IS_CHECK(pos < seq_len(s, b), "to_physical: position ", pos, " in row ", r, " is past its sequence (length ",
               seq_len(s, b), ")");
      p[r * K + j] = table[pos / kPageTokens] * kPageTokens + pos % kPageTokens;
    }
  }
}

}  // namespace indexshare::backend

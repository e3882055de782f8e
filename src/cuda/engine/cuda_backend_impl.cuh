// Internal to the CUDA engine: the CUDA backend's class (cuda_backend.cu holds memory, weights
// and the elementwise / product / MoE ops; cuda_backend_attention.cu the MLA and indexer ops).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <vector>

#include "core/error.h"
#include "cuda/cuda_check.cuh"
#include "cuda/engine/launchers.cuh"
#include "cuda/indexer.h"
#include "cuda/launch_util.cuh"
#include "cuda/indexer_topk.h"
#include "cuda/runtime.h"
#include "cuda/sparse_mla.h"
#include "cuda/topk.h"

#include "cuda/engine/cuda_backend.h"

namespace indexshare::cuda::impl {

using backend::CacheFormat;
using backend::kPageTokens;
using backend::Weight;
using backend::WeightFormat;
using engine::WKind;

constexpr int64_t kGemvMaxRows = 8;         // rows up to which products read weights in gemv.cu
constexpr size_t kCublasWorkspace = 32u << 20;
constexpr size_t kScoreBlockBytes = 256u << 20;  // scores of a row block (generic and decode paths)
constexpr int64_t kDecodeRows = 64;               // fp8 indexer: up to this many rows score + top-k separately

#define IS_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                         \
    const cublasStatus_t st_ = (expr);                                                         \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                          \
      ::indexshare::fail("cuBLAS error ", cublasGetStatusString(st_), " in ", #expr, " at ", __FILE__, ":", __LINE__); \
  } while (0)

inline double gib(size_t b) { return static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0); }

// A caching device allocator: freed blocks are kept by size and reused, so per-step buffers do
// not call cudaMalloc / cudaFree (which synchronises) once warm.
class Allocator {
 public:
  void* get(size_t bytes, size_t& rounded) {
    rounded = bytes <= (1u << 20) ? ((bytes + 511) / 512) * 512 : ((bytes + (2u << 20) - 1) / (2u << 20)) * (2u << 20);
    rounded = std::max<size_t>(rounded, 512);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cached_.lower_bound(rounded);
    void* p = nullptr;
    if (it != cached_.end() && it->first <= 2 * rounded) {
      rounded = it->first;
      p = it->second;
      cached_.erase(it);
      cached_bytes_ -= rounded;
    } else {
      cudaError_t e = cudaMalloc(&p, rounded);
      if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        release_cached();
        e = cudaMalloc(&p, rounded);
      }
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        (void)cudaMemGetInfo(&fr, &tot);
        fail("out of GPU memory: allocating ", gib(rounded), " GiB with ", gib(in_use_), " GiB in use by IndexShare, ",
             gib(fr), " GiB free of ", gib(tot), " GiB (", cudaGetErrorString(e), ")");
      }
    }
    in_use_ += rounded;
    peak_ = std::max(peak_, in_use_);
    return p;
  }
  void put(void* p, size_t rounded) {
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= rounded;
    cached_.emplace(rounded, p);
    cached_bytes_ += rounded;
  }
  size_t in_use() const { return in_use_; }
  size_t peak() const { return peak_; }
  ~Allocator() { release_cached(); }

 private:
  void release_cached() {
    for (auto& [n, p] : cached_) (void)cudaFree(p);
    cached_.clear();
    cached_bytes_ = 0;
  }
  std::mutex mu_;
  std::multimap<size_t, void*> cached_;
  size_t in_use_ = 0, peak_ = 0, cached_bytes_ = 0;
};

class CudaLatent final : public backend::LatentCache {
 public:
  CudaLatent(Tensor t, int kvr, int rope, CacheFormat f) : t(std::move(t)), kvr(kvr), rope(rope), fmt(f) {}
  size_t bytes() const override { return t.bytes(); }
  CacheFormat format() const override { return fmt; }
  int64_t slots() const { return t.dim(0); }
  Tensor t;  // [slots, kvr + rope] f32 or bf16
  int kvr, rope;
  CacheFormat fmt;
};

class CudaIndexer final : public backend::IndexerCache {
 public:
  CudaIndexer(Tensor t, int64_t pages, const backend::IndexerSpec& s) : t(std::move(t)), pages(pages), s(s) {}
  size_t bytes() const override { return t.bytes(); }
  const backend::IndexerSpec& spec() const override { return s; }
  Tensor t;  // f32: [slots, D]; fp8: [pages, 8448] bytes
  int64_t pages;
  backend::IndexerSpec s;
};

inline WKind kind_of(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32: return WKind::kF32;
    case WeightFormat::kBf16: return WKind::kBf16;
    case WeightFormat::kFp8Block: return WKind::kFp8;
  }
  return WKind::kF32;
}

// Scratch slots: each op uses its own, so nested ops never alias.
enum Slot : int {
  kCastX, kDequantW, kMlpGu, kMlpH, kMoeLogits, kMoeExperts, kMoeWeights, kMoeCounts, kMoeOffsets, kMoeCursor,
  kMoeSlotPos, kMoePermTok, kMoeXs, kMoeGu, kMoeH, kMoeYs, kMoeShared, kMlaQb, kMlaQlat, kMlaOlat, kMlaOb,
  kMlaSplitIdx, kMlaSplitQ, kMlaPart, kMlaLse, kIdxQCodes, kIdxQScales, kIdxWork, kIdxScores, kTopkWork, kSlotCount
};

class CudaBackend final : public backend::Backend {
 public:
  CudaBackend() : alloc_(std::make_shared<Allocator>()) {
    IS_CHECK(device_count() > 0, "--device cuda: no CUDA device is present (cudaGetDeviceCount found none)");
    IS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    IS_CUBLAS_CHECK(cublasCreate(&blas_));
    IS_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    IS_CUDA_CHECK(cudaMalloc(&blas_ws_, kCublasWorkspace));
    IS_CUBLAS_CHECK(cublasSetWorkspace(blas_, blas_ws_, kCublasWorkspace));
    scratch_.resize(kSlotCount);
  }
  ~CudaBackend() override {
    (void)cudaStreamSynchronize(stream_);
    for (cudaGraphExec_t g : graphs_) (void)cudaGraphExecDestroy(g);
    scratch_.clear();
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
    (void)cublasDestroy(blas_);
    (void)cudaFree(blas_ws_);
    (void)cudaStreamDestroy(stream_);
  }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return "cuda (" + device_name() + ")"; }

  // ---- memory ----
  Tensor alloc(DType dtype, std::vector<int64_t> shape) override {
    int64_t n = 1;
    for (int64_t d : shape) {
      IS_CHECK(d >= 0, "cuda backend: negative extent in alloc");
      n *= d;
    }
    const size_t bytes = std::max<size_t>(static_cast<size_t>(n) * dtype_size(dtype), 1);
    size_t rounded = 0;
    void* p = alloc_->get(bytes, rounded);
    std::shared_ptr<Allocator> a = alloc_;
    std::shared_ptr<void> holder(p, [a, rounded](void* q) { a->put(q, rounded); });
    return Tensor(std::move(holder), p, dtype, Device::kCuda, std::move(shape));
  }
  void upload(const Tensor& dst, const void* src) override {
    on_gpu(dst, "upload destination");
    if (!dst.bytes()) return;
    IS_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
    IS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void download(void* dst, const Tensor& src) override {
    on_gpu(src, "download source");
    if (!src.bytes()) return;
    IS_CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.bytes(), cudaMemcpyDeviceToHost, stream_));
    IS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(const Tensor& dst, const Tensor& src) override {
    on_gpu(dst, "copy destination");
    on_gpu(src, "copy source");
    IS_CHECK(dst.bytes() == src.bytes(), "cuda backend: copy of ", src.describe(), " into ", dst.describe());
    if (src.bytes())
      IS_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.bytes(), cudaMemcpyDeviceToDevice, stream_));
  }
  void fill_zero(const Tensor& t) override {
    on_gpu(t, "fill_zero tensor");
    if (t.bytes()) IS_CUDA_CHECK(cudaMemsetAsync(t.data(), 0, t.bytes(), stream_));
  }
  void fill_uniform(const Tensor& t, uint64_t seed, float amplitude) override {
    on_gpu(t, "fill_uniform tensor");
    const int dt = t.dtype() == DType::kF32 ? 0 : t.dtype() == DType::kBF16 ? 1 : t.dtype() == DType::kF8E4M3 ? 2 : -1;
    IS_CHECK(dt >= 0, "cuda backend: fill_uniform of ", t.describe());
    engine::fill_uniform(t.data(), dt, t.numel(), seed, amplitude, stream_);
  }
  void synchronize() override { IS_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  size_t bytes_in_use() const override { return alloc_->in_use(); }
  size_t peak_bytes() const override { return alloc_->peak(); }

  bool supports(WeightFormat) const override { return true; }

  backend::MlaWeights upload_mla(const std::vector<float>& kv_b, int heads, int nope, int v_dim, int kv_lora,
                                 WeightFormat format) override {
    IS_CHECK(static_cast<int64_t>(kv_b.size()) == int64_t{heads} * (nope + v_dim) * kv_lora, "mla: kv_b has ",
             kv_b.size(), " values, expected ", heads, " x (", nope, " + ", v_dim, ") x ", kv_lora);
    const bool bf16 = format != WeightFormat::kF32;
    std::vector<float> uk(static_cast<size_t>(heads) * nope * kv_lora), uv(static_cast<size_t>(heads) * v_dim * kv_lora);
    for (int h = 0; h < heads; ++h) {
      const float* blk = kv_b.data() + static_cast<size_t>(h) * (nope + v_dim) * kv_lora;
      std::copy_n(blk, static_cast<size_t>(nope) * kv_lora, uk.begin() + static_cast<int64_t>(h) * nope * kv_lora);
      std::copy_n(blk + static_cast<size_t>(nope) * kv_lora, static_cast<size_t>(v_dim) * kv_lora,
                  uv.begin() + static_cast<int64_t>(h) * v_dim * kv_lora);
    }
    backend::MlaWeights w{heads, nope, v_dim, kv_lora, {}, {}};
    auto put = [&](const std::vector<float>& v, std::vector<int64_t> shape) {
      if (!bf16) {
        Tensor t = alloc(DType::kF32, std::move(shape));
        upload(t, v.data());
        return t;
      }
      std::vector<uint16_t> b(v.size());
      for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
      Tensor t = alloc(DType::kBF16, std::move(shape));
      upload(t, b.data());
      return t;
    };
    w.w_uk = put(uk, {heads, nope, kv_lora});
    w.w_uv = put(uv, {heads, v_dim, kv_lora});
    return w;
  }

  // ---- ops ----
  void embed(const Weight& table, const Tensor& ids, const Tensor& out) override {
    on_gpu(ids, "embed ids");
    IS_CHECK(ids.dtype() == DType::kI32, "embed: ids must be i32");
    IS_CHECK(table.groups == 1 && table.format != WeightFormat::kFp8Block, "embed: table must be one f32 or bf16 matrix");
    const int64_t R = ids.numel();
    check2(out, "embed output", DType::kF32, R, table.K);
    engine::embed(table.data.data(), table.format == WeightFormat::kBf16, table.N, table.K, ids.as<int32_t>(), R,
                  out.as<float>(), stream_);
  }

  void rms_norm(const backend::NormArgs& a) override {
    norm_checks(a, "rms_norm");
    engine::rms_norm(a.x.as<float>(), a.ld_x, a.y.as<float>(), a.ld_y, a.weight.as<float>(), a.rows, a.n, a.eps,
                     stream_);
  }
  void layer_norm(const backend::NormArgs& a) override {
    norm_checks(a, "layer_norm");
    engine::layer_norm(a.x.as<float>(), a.ld_x, a.y.as<float>(), a.ld_y, a.weight.as<float>(),
                       a.bias.defined() ? a.bias.as<float>() : nullptr, a.rows, a.n, a.eps, stream_);
  }

  void linear(const Tensor& x, const Weight& w, const Tensor& y) override {
    IS_CHECK(w.groups == 1, "linear: weight has ", w.groups, " groups");
    const int64_t M = x.numel() / std::max<int64_t>(w.K, 1);
    check2(x, "linear input", DType::kF32, M, w.K);
    check2(y, "linear output", DType::kF32, M, w.N);
    matmul(x.as<float>(), M, w, 0, y.as<float>(), nullptr, 1, M);
  }

  void rope(const Tensor& x, const Tensor& positions, const backend::RopeSpec& s) override {
    on_gpu(x, "rope x");
    on_gpu(positions, "rope positions");
    on_gpu(s.inv_freq, "rope inv_freq");
    const int64_t R = positions.numel();
    IS_CHECK(x.dtype() == DType::kF32 && x.numel() == R * s.heads * s.head_dim, "rope: x is ", x.describe());
    IS_CHECK(s.rot_dim > 0 && s.rot_dim % 2 == 0 && s.offset >= 0 && s.offset + s.rot_dim <= s.head_dim,
             "rope: bad slice offset ", s.offset, " rot_dim ", s.rot_dim, " head_dim ", s.head_dim);
    IS_CHECK(s.inv_freq.numel() == s.rot_dim / 2, "rope: inv_freq has ", s.inv_freq.numel(), " values");
    engine::rope(x.as<float>(), positions.as<int32_t>(), R, s.heads, s.head_dim, s.offset, s.rot_dim, s.interleaved,
                 s.attention_factor, s.inv_freq.as<float>(), stream_);
  }

  void add(const Tensor& h, const Tensor& y) override {
    on_gpu(h, "add h");
    on_gpu(y, "add y");
    IS_CHECK(h.numel() == y.numel() && h.dtype() == DType::kF32 && y.dtype() == DType::kF32, "add: ", h.describe(),
             " += ", y.describe());
    engine::add(h.as<float>(), y.as<float>(), h.numel(), stream_);
  }

  void add_rms_norm(const Tensor& y, const backend::NormArgs& a) override {
    norm_checks(a, "add_rms_norm");
    on_gpu(y, "add_rms_norm y");
    IS_CHECK(a.ld_x == a.n && a.ld_y == a.n && y.numel() == a.rows * a.n, "add_rms_norm: rows must be contiguous");
    engine::add_rms_norm(a.x.as<float>(), y.as<float>(), a.y.as<float>(), a.weight.as<float>(), a.rows, a.n, a.eps,
                         stream_);
  }

  void mlp(const Tensor& x, const Weight& gate_up, const Weight& down, const Tensor& y) override {
    const int64_t d = gate_up.K, M = x.numel() / std::max<int64_t>(d, 1), I = down.K;
    check2(x, "mlp input", DType::kF32, M, d);
    check2(y, "mlp output", DType::kF32, M, down.N);
    IS_CHECK(gate_up.groups == 1 && down.groups == 1 && gate_up.N == 2 * I && down.N == d, "mlp: gate_up [",
             gate_up.N, ", ", gate_up.K, "] and down [", down.N, ", ", down.K, "] do not fit");
    float* gu = scratch(kMlpGu, DType::kF32, M * 2 * I).as<float>();
    float* h = scratch(kMlpH, DType::kF32, M * I).as<float>();
    matmul(x.as<float>(), M, gate_up, 0, gu, nullptr, 1, M);
    engine::swiglu(gu, M, I, h, stream_);
    matmul(h, M, down, 0, y.as<float>(), nullptr, 1, M);
  }

  void moe_route(const Tensor& x, const backend::MoeWeights& m, const backend::MoeSpec& s, const Tensor& experts,
                 const Tensor& weights) override {
    const int64_t d = m.router.K, M = x.numel() / std::max<int64_t>(d, 1);
    check2(x, "moe input", DType::kF32, M, d);
    check2(experts, "moe experts", DType::kI32, M, s.top_k);
    check2(weights, "moe weights", DType::kF32, M, s.top_k);
    route(x.as<float>(), M, m, s, experts.as<int32_t>(), weights.as<float>());
  }

  void moe(const Tensor& x, const backend::MoeWeights& m, const backend::MoeSpec& s, const Tensor& y) override {
    const int64_t d = m.router.K, M = x.numel() / std::max<int64_t>(d, 1), I = m.down.K;
    const int k = s.top_k, E = s.experts;
    check2(x, "moe input", DType::kF32, M, d);
    check2(y, "moe output", DType::kF32, M, d);
    IS_CHECK(m.gate_up.groups == E && m.down.groups == E && m.gate_up.N == 2 * I && m.down.N == d,
             "moe: expert weights do not fit ", E, " experts of width ", I);
    if (M == 0) return;
    const int64_t n = M * k;
    int32_t* experts = scratch(kMoeExperts, DType::kI32, n).as<int32_t>();
    float* wts = scratch(kMoeWeights, DType::kF32, n).as<float>();
    route(x.as<float>(), M, m, s, experts, wts);
    int32_t* offsets = scratch(kMoeOffsets, DType::kI32, E + 1).as<int32_t>();
    int32_t* slot_pos = scratch(kMoeSlotPos, DType::kI32, n).as<int32_t>();
    float* xs = scratch(kMoeXs, DType::kF32, n * d).as<float>();
    float* gu = scratch(kMoeGu, DType::kF32, n * 2 * I).as<float>();
    float* h = scratch(kMoeH, DType::kF32, n * I).as<float>();
    float* ys = scratch(kMoeYs, DType::kF32, n * d).as<float>();
    if (n <= engine::kMoeSmallPairs && 2 * E + n <= 12 * 1024) {
      engine::moe_dispatch_small(experts, M, k, E, x.as<float>(), d, offsets, slot_pos, xs, stream_);
    } else {
      int32_t* counts = scratch(kMoeCounts, DType::kI32, E).as<int32_t>();
      int32_t* cursor = scratch(kMoeCursor, DType::kI32, E).as<int32_t>();
      int32_t* perm_tok = scratch(kMoePermTok, DType::kI32, n).as<int32_t>();
      engine::moe_dispatch(experts, M, k, E, counts, offsets, cursor, slot_pos, perm_tok, stream_);
      engine::gather_rows(x.as<float>(), d, perm_tok, n, xs, stream_);
    }
    if (M <= kGemvMaxRows) {
      // Decode: every expert's rows straight from the device offsets (no host round trip).
      matmul(xs, n, m.gate_up, 0, gu, offsets, E, M);
      engine::swiglu(gu, n, I, h, stream_);
      matmul(h, n, m.down, 0, ys, offsets, E, M);
    } else {
      std::vector<int32_t> off(static_cast<size_t>(E + 1));
      IS_CUDA_CHECK(cudaMemcpyAsync(off.data(), offsets, off.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
      IS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      for (int e = 0; e < E; ++e) {
        const int64_t r0 = off[static_cast<size_t>(e)], rows = off[static_cast<size_t>(e) + 1] - r0;
        if (rows > 0) matmul(xs + r0 * d, rows, m.gate_up, e, gu + r0 * 2 * I, nullptr, 1, rows);
      }
      engine::swiglu(gu, n, I, h, stream_);
      for (int e = 0; e < E; ++e) {
        const int64_t r0 = off[static_cast<size_t>(e)], rows = off[static_cast<size_t>(e) + 1] - r0;
        if (rows > 0) matmul(h + r0 * I, rows, m.down, e, ys + r0 * d, nullptr, 1, rows);
      }
    }
    float* shared = nullptr;
    if (m.has_shared) {
      Tensor sh = scratch(kMoeShared, DType::kF32, M * d).reshape({M, d});
      mlp(x, m.shared_gate_up, m.shared_down, sh);
      shared = sh.as<float>();
    }
    engine::moe_combine(ys, slot_pos, wts, shared, M, k, d, y.as<float>(), stream_);
  }

  // ---- MLA ----
  std::vector<CacheFormat> latent_formats(int kv_lora, int rope, int heads) const override {
    std::vector<CacheFormat> f;
    if (kv_lora == kMlaDv && kv_lora + rope == kMlaDqk && heads % 16 == 0) f.push_back(CacheFormat::kBf16);
    if (kv_lora + rope <= 1024) f.push_back(CacheFormat::kF32);
    return f;
  }
  std::unique_ptr<backend::LatentCache> new_latent_cache(int64_t pages, int kv_lora, int rope, CacheFormat f) override {
    IS_CHECK(pages >= 1 && kv_lora >= 1 && rope >= 0, "latent cache: bad size");
    IS_CHECK(f == CacheFormat::kF32 || (f == CacheFormat::kBf16 && kv_lora == kMlaDv && kv_lora + rope == kMlaDqk),
             "cuda backend: no ", backend::cache_format_name(f), " latent cache for kv_lora_rank ", kv_lora, " + rope ",
             rope, " (bf16 needs 512 + 64; f32 takes any)");
    Tensor t = alloc(f == CacheFormat::kBf16 ? DType::kBF16 : DType::kF32, {pages * kPageTokens, kv_lora + rope});
    fill_zero(t);
    return std::make_unique<CudaLatent>(std::move(t), kv_lora, rope, f);
  }
  void latent_write(backend::LatentCache& c, const backend::Step& s, const Tensor& latent) override {
    auto& lc = dynamic_cast<CudaLatent&>(c);
    check2(latent, "latent rows", DType::kF32, s.rows(), lc.kvr + lc.rope);
    on_gpu(s.slots, "step slots");
    engine::cache_write(latent.as<float>(), s.rows(), lc.kvr + lc.rope, s.slots.as<int32_t>(), lc.t.data(),
                        lc.fmt == CacheFormat::kBf16, stream_);
  }
  void mla_attention(const backend::MlaArgs& a) override;

  // ---- indexer ----
  std::vector<CacheFormat> indexer_formats(int heads, int dim) const override {
    std::vector<CacheFormat> f;
    if (dim == kIndexerDim && (heads == 32 || heads == 64)) f.push_back(CacheFormat::kFp8);
    if (heads <= 64 && static_cast<size_t>(heads) * (dim + 1) * sizeof(float) <= 48 * 1024) f.push_back(CacheFormat::kF32);
    return f;
  }
  std::unique_ptr<backend::IndexerCache> new_indexer_cache(int64_t pages, const backend::IndexerSpec& spec) override {
    const auto offered = indexer_formats(spec.heads, spec.dim);
    IS_CHECK(std::find(offered.begin(), offered.end(), spec.format) != offered.end(), "cuda backend: no ",
             backend::cache_format_name(spec.format), " indexer cache for ", spec.heads, " heads x ", spec.dim,
             " (fp8 needs 128-dim keys and 32 or 64 heads; f32 takes up to 64 heads)");
    IS_CHECK(pages >= 1 && spec.topk >= 1, "indexer cache: bad size");
    IS_CHECK(spec.topk <= (spec.format == CacheFormat::kFp8 ? kIndexerTopkMaxK : kTopkMaxK), "cuda backend: top-k ",
             spec.topk, " exceeds what the top-k kernels take");
    Tensor t = spec.format == CacheFormat::kFp8
                   ? alloc(DType::kU8, {pages, static_cast<int64_t>(kIndexerFp8PageBytes)})
                   : alloc(DType::kF32, {pages * kPageTokens, spec.dim});
    fill_zero(t);
    return std::make_unique<CudaIndexer>(std::move(t), pages, spec);
  }
  void indexer_append(backend::IndexerCache& c, const backend::Step& s, const Tensor& k) override {
    auto& ic = dynamic_cast<CudaIndexer&>(c);
    check2(k, "indexer keys", DType::kF32, s.rows(), ic.s.dim);
    on_gpu(s.slots, "step slots");
    if (ic.s.format == CacheFormat::kFp8) {
      engine::indexer_append_fp8(k.as<float>(), s.rows(), s.slots.as<int32_t>(), ic.t.as<uint8_t>(), stream_);
    } else {
      engine::cache_write(k.as<float>(), s.rows(), ic.s.dim, s.slots.as<int32_t>(), ic.t.data(), false, stream_);
    }
  }
  void indexer_select(const backend::IndexerCache& c, const backend::Step& s, const Tensor& q, const Tensor& w,
                      const Tensor& logical, const Tensor& physical) override;
  void indexer_scores(const backend::IndexerCache& c, const backend::Step& s, const Tensor& q, const Tensor& w,
                      const Tensor& scores) override;
  // The step's indexer queries quantised to e4m3 (per row and head) and the kernels' parameters.
  IndexerCudaParams fp8_query(const CudaIndexer& ic, const backend::Step& s, const Tensor& q, const Tensor& w);
  void to_physical(const backend::Step& s, const Tensor& logical, const Tensor& physical) override {
    const int64_t R = s.rows(), K = logical.numel() / std::max<int64_t>(R, 1);
    check2(logical, "logical top-k", DType::kI32, R, K);
    check2(physical, "physical top-k", DType::kI32, R, K);
    on_gpu(s.block_table, "block table");
    engine::to_physical(logical.as<int32_t>(), R, static_cast<int>(K), s.T, s.block_table.as<int32_t>(), s.max_pages,
                        physical.as<int32_t>(), stream_);
  }

  void indexer_rescore(const backend::IndexerCache&, const backend::Step&, const Tensor&, const Tensor&,
                       const Tensor&, const Tensor&, const Tensor&, const Tensor&) override {
    fail("cuda backend: reindex (R) layers are not implemented on the GPU yet (indexer_rescore); "
         "the cpu backend runs them, or use a schedule of F and S layers only");
  }
  void copy_columns(const Tensor& dst, const Tensor& src) override {
    IS_CHECK(dst.dtype() == DType::kI32 && src.dtype() == DType::kI32 && dst.ndim() == 2 && src.ndim() == 2 &&
                 dst.dim(0) == src.dim(0) && dst.dim(1) <= src.dim(1),
             "copy_columns: ", dst.describe(), " from ", src.describe());
    on_gpu(dst, "copy_columns dst");
    on_gpu(src, "copy_columns src");
    if (dst.numel() == 0) return;
    IS_CUDA_CHECK(cudaMemcpy2DAsync(dst.data(), static_cast<size_t>(dst.dim(1)) * 4, src.data(),
                                    static_cast<size_t>(src.dim(1)) * 4, static_cast<size_t>(dst.dim(1)) * 4,
                                    static_cast<size_t>(dst.dim(0)), cudaMemcpyDeviceToDevice, stream_));
  }

  // ---- CUDA graphs ----
  bool can_capture() const override { return true; }
  void begin_capture() override {
    IS_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
  }
  int end_capture() override {
    cudaGraph_t g = nullptr;
    IS_CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
    cudaGraphExec_t e = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&e, g, 0);
    (void)cudaGraphDestroy(g);
    IS_CUDA_CHECK(err);
    graphs_.push_back(e);
    return static_cast<int>(graphs_.size()) - 1;
  }
  uint64_t scratch_epoch() const override { return scratch_epoch_; }
  void replay(int graph) override {
    IS_CHECK(graph >= 0 && graph < static_cast<int>(graphs_.size()), "cuda backend: no graph ", graph);
    IS_CUDA_CHECK(cudaGraphLaunch(graphs_[static_cast<size_t>(graph)], stream_));
  }

  // ---- profiling ----
  bool profiling() const override { return profiling_; }
  void mark(backend::Region r) override {
    if (!profiling_) return;
    if (next_event_ == events_.size()) {
      cudaEvent_t e;
      IS_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    IS_CUDA_CHECK(cudaEventRecord(events_[next_event_], stream_));
    marks_.push_back({next_event_++, r});
  }
  void set_profiling(bool on) {
    synchronize();
    profiling_ = on;
    marks_.clear();
    next_event_ = 0;
    region_ms_.fill(0.0);
  }
  std::array<double, kRegions> take_region_ms() {
    if (profiling_ && !marks_.empty()) {
      mark(backend::Region::kCount);  // closes the last region
      synchronize();
      for (size_t i = 0; i + 1 < marks_.size(); ++i) {
        float ms = 0;
        IS_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[marks_[i].first], events_[marks_[i + 1].first]));
        if (marks_[i].second != backend::Region::kCount) region_ms_[static_cast<size_t>(marks_[i].second)] += ms;
      }
    }
    marks_.clear();
    next_event_ = 0;
    std::array<double, kRegions> out = region_ms_;
    region_ms_.fill(0.0);
    return out;
  }


 private:
  void on_gpu(const Tensor& t, const char* what) const {
    IS_CHECK(t.defined(), "cuda backend: ", what, " is missing");
    IS_CHECK(t.device() == Device::kCuda, "cuda backend: ", what, " is ", t.describe());
  }
  void check2(const Tensor& t, const char* what, DType dt, int64_t rows, int64_t cols) const {
    on_gpu(t, what);
    IS_CHECK(t.dtype() == dt && t.numel() == rows * cols, "cuda backend: ", what, " is ", t.describe(), ", expected ",
             dtype_name(dt), " with ", rows, " x ", cols, " elements");
  }
  void norm_checks(const backend::NormArgs& a, const char* what) const {
    on_gpu(a.x, what);
    on_gpu(a.y, what);
    on_gpu(a.weight, what);
    IS_CHECK(a.ld_x >= a.n && a.ld_y >= a.n && a.weight.numel() == a.n, what, ": bad strides or weight size");
  }

  // A scratch buffer of at least n elements (grown, never shrunk; the same slot is reused).
  Tensor scratch(Slot slot, DType dt, int64_t n) {
    Tensor& t = scratch_[static_cast<size_t>(slot)];
    const size_t need = static_cast<size_t>(std::max<int64_t>(n, 1)) * dtype_size(dt);
    if (!t.defined() || t.bytes() < need) {
      t = Tensor();
      t = alloc(DType::kU8, {static_cast<int64_t>(need)});
      ++scratch_epoch_;
    }
    return Tensor(nullptr, t.data(), dt, Device::kCuda, {n});
  }

  // y[rows, N] = x[rows, K] W_g^T (+ bias). row_off: device offsets of `groups` groups (then
  // g must be 0 and the group index selects the weight), else one group of `rows` rows.
  void matmul(const float* x, int64_t rows, const Weight& w, int64_t g, float* y, const int32_t* row_off, int groups,
              int64_t max_rows) {
    if (rows == 0) return;
    const float* bias = w.bias.defined() ? w.bias.as<float>() : nullptr;
    const size_t esz = static_cast<size_t>(dtype_size(w.data.dtype()));
    const int64_t kb = (w.K + 127) / 128, nb = (w.N + 127) / 128;
    const void* wg = static_cast<const uint8_t*>(w.data.data()) + static_cast<size_t>(g * w.N * w.K) * esz;
    const float* sg = w.scale.defined() ? w.scale.as<float>() + g * nb * kb : nullptr;
    if (row_off || max_rows <= kGemvMaxRows) {
      engine::GemvArgs a;
      a.x = x;
      a.R = rows;
      a.row_off = row_off;
      a.groups = groups;
      a.max_rows = max_rows;
      a.kind = kind_of(w.format);
      a.w = wg;
      a.scale = sg;
      a.bias = bias;
      a.N = w.N;
      a.K = w.K;
      a.y = y;
      engine::gemv(a, stream_);
      return;
    }
    const float one = 1.0f, zero = 0.0f;
    const int m = static_cast<int>(w.N), n = static_cast<int>(rows), k = static_cast<int>(w.K);
    if (w.format == WeightFormat::kF32) {
      IS_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, wg, CUDA_R_32F, k, x, CUDA_R_32F, k,
                                   &zero, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    } else {
      uint16_t* xb = scratch(kCastX, DType::kBF16, rows * w.K).as<uint16_t>();
      engine::f32_to_bf16(x, xb, rows * w.K, stream_);
      const void* wb = wg;
      if (w.format == WeightFormat::kFp8Block) {
        uint16_t* deq = scratch(kDequantW, DType::kBF16, w.N * w.K).as<uint16_t>();
        engine::dequant_fp8_block(static_cast<const uint8_t*>(wg), sg, w.N, w.K, deq, stream_);
        wb = deq;
      }
      IS_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, wb, CUDA_R_16BF, k, xb, CUDA_R_16BF,
                                   k, &zero, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (bias) engine::add_bias(y, bias, rows, w.N, stream_);
  }

  void route(const float* x, int64_t M, const backend::MoeWeights& m, const backend::MoeSpec& s, int32_t* experts,
             float* weights) {
    ops::validate(s);  // the CPU op's checks of the router parameters
    IS_CHECK(m.router.N == s.experts, "moe router: ", m.router.N, " router rows for ", s.experts, " experts");
    float* logits = scratch(kMoeLogits, DType::kF32, M * s.experts).as<float>();
    matmul(x, M, m.router, 0, logits, nullptr, 1, M);
    engine::moe_route(logits, m.router_bias.as<float>(), M, s.experts, s.top_k, s.n_group, s.topk_group,
                      s.norm_topk_prob, s.routed_scaling, experts, weights, stream_);
  }

  std::shared_ptr<Allocator> alloc_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* blas_ws_ = nullptr;
  std::vector<Tensor> scratch_;
  bool profiling_ = false;
  std::vector<cudaEvent_t> events_;
  size_t next_event_ = 0;
  std::vector<std::pair<size_t, backend::Region>> marks_;
  std::vector<cudaGraphExec_t> graphs_;
  uint64_t scratch_epoch_ = 0;
  std::array<double, kRegions> region_ms_{};
};

}  // namespace indexshare::cuda::impl

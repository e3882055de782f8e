#include "backend/backend.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu_backend.h"
#include "core/counter_hash.h"
#include "core/error.h"

namespace indexshare::backend {

std::string_view weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32: return "f32";
    case WeightFormat::kBf16: return "bf16";
    case WeightFormat::kFp8Block: return "fp8";
  }
  return "?";
}

std::string_view cache_format_name(CacheFormat f) {
  switch (f) {
    case CacheFormat::kF32: return "f32";
    case CacheFormat::kBf16: return "bf16";
    case CacheFormat::kFp8: return "fp8";
  }
  return "?";
}

std::string_view region_name(Region r) {
  switch (r) {
    case Region::kEmbed: return "embed";
    case Region::kAttnProj: return "attention projections";
    case Region::kIndexer: return "indexer";
    case Region::kAttention: return "sparse attention";
    case Region::kMlp: return "dense MLP";
    case Region::kMoe: return "MoE";
    case Region::kNorm: return "norms + residual";
    case Region::kLmHead: return "LM head";
    case Region::kCount: break;
  }
  return "?";
}

void Backend::add_rms_norm(const Tensor& y, const NormArgs& a) {
  IS_CHECK(a.ld_x == a.n, "add_rms_norm: the residual rows must be contiguous");
  add(a.x, y);
  rms_norm(a);
}

void Backend::begin_capture() { fail(name(), ": this backend cannot capture steps"); }
int Backend::end_capture() { fail(name(), ": this backend cannot capture steps"); }
void Backend::replay(int) { fail(name(), ": this backend cannot capture steps"); }

size_t Weight::bytes() const { return data.bytes() + scale.bytes() + bias.bytes(); }

namespace {

int64_t blocks(int64_t n) { return (n + kFp8BlockSize - 1) / kFp8BlockSize; }

}  // namespace

HostWeight make_host_weight(std::vector<float> values, int64_t groups, int64_t N, int64_t K, WeightFormat format,
                            std::vector<float> bias) {
  IS_CHECK(groups >= 1 && N >= 1 && K >= 1, "weight: bad shape [", groups, ", ", N, ", ", K, "]");
  IS_CHECK(static_cast<int64_t>(values.size()) == groups * N * K, "weight: ", values.size(), " values for shape [",
           groups, ", ", N, ", ", K, "]");
  IS_CHECK(bias.empty() || (groups == 1 && static_cast<int64_t>(bias.size()) == N), "weight: bias of ", bias.size(),
           " values for ", N, " rows");
  HostWeight w;
  w.format = format;
  w.groups = groups;
  w.N = N;
  w.K = K;
  w.bias = std::move(bias);
  switch (format) {
    case WeightFormat::kF32:
      w.f32 = std::move(values);
      break;
    case WeightFormat::kBf16:
      w.bf16.resize(values.size());
      for (size_t i = 0; i < values.size(); ++i) w.bf16[i] = f32_to_bf16(values[i]);
      break;
    case WeightFormat::kFp8Block: {
      const int64_t nb = blocks(N), kb = blocks(K);
      w.fp8.resize(values.size());
      w.scale.assign(static_cast<size_t>(groups * nb * kb), 1.0f);
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t bn = 0; bn < nb; ++bn)
          for (int64_t bk = 0; bk < kb; ++bk) {
            const int64_t n1 = std::min(N, (bn + 1) * kFp8BlockSize), k1 = std::min(K, (bk + 1) * kFp8BlockSize);
            float amax = 0.0f;
            for (int64_t n = bn * kFp8BlockSize; n < n1; ++n)
              for (int64_t k = bk * kFp8BlockSize; k < k1; ++k) {
                const float v = values[static_cast<size_t>((g * N + n) * K + k)];
                IS_CHECK(std::isfinite(v), "weight: non-finite value at [", g, ", ", n, ", ", k, "]");
                amax = std::max(amax, std::fabs(v));
              }
            const float s = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
            w.scale[static_cast<size_t>((g * nb + bn) * kb + bk)] = s;
            for (int64_t n = bn * kFp8BlockSize; n < n1; ++n)
              for (int64_t k = bk * kFp8BlockSize; k < k1; ++k) {
                const size_t i = static_cast<size_t>((g * N + n) * K + k);
                w.fp8[i] = f32_to_fp8e4m3(values[i] / s);
              }
          }
      break;
    }
  }
  return w;
}

std::vector<float> host_weight_values(const HostWeight& w) {
  const size_t n = static_cast<size_t>(w.groups * w.N * w.K);
  std::vector<float> v(n);
  switch (w.format) {
    case WeightFormat::kF32:
      v = w.f32;
      break;
    case WeightFormat::kBf16:
      for (size_t i = 0; i < n; ++i) v[i] = bf16_to_f32(w.bf16[i]);
      break;
    case WeightFormat::kFp8Block: {
      const int64_t nb = blocks(w.N), kb = blocks(w.K);
      for (int64_t g = 0; g < w.groups; ++g)
        for (int64_t r = 0; r < w.N; ++r)
          for (int64_t k = 0; k < w.K; ++k) {
            const size_t i = static_cast<size_t>((g * w.N + r) * w.K + k);
            v[i] = fp8e4m3_to_f32(w.fp8[i]) *
                   w.scale[static_cast<size_t>((g * nb + r / kFp8BlockSize) * kb + k / kFp8BlockSize)];
          }
      break;
    }
  }
  return v;
}

Weight Backend::upload_weight(const HostWeight& h) {
  IS_CHECK(supports(h.format), name(), ": ", weight_format_name(h.format),
           " weights are not supported (the CPU runs f32 or bf16 weights; fp8 runs on --device cuda)");
  Weight w;
  w.format = h.format;
  w.groups = h.groups;
  w.N = h.N;
  w.K = h.K;
  const size_t n = static_cast<size_t>(h.groups * h.N * h.K);
  switch (h.format) {
    case WeightFormat::kF32:
      IS_CHECK(h.f32.size() == n, "weight: ", h.f32.size(), " f32 values for ", n);
      w.data = alloc(DType::kF32, {h.groups, h.N, h.K});
      upload(w.data, h.f32.data());
      break;
    case WeightFormat::kBf16:
      IS_CHECK(h.bf16.size() == n, "weight: ", h.bf16.size(), " bf16 values for ", n);
      w.data = alloc(DType::kBF16, {h.groups, h.N, h.K});
      upload(w.data, h.bf16.data());
      break;
    case WeightFormat::kFp8Block:
      IS_CHECK(h.fp8.size() == n, "weight: ", h.fp8.size(), " fp8 codes for ", n);
      IS_CHECK(static_cast<int64_t>(h.scale.size()) == h.groups * blocks(h.N) * blocks(h.K), "weight: ",
               h.scale.size(), " block scales for [", h.groups, ", ", h.N, ", ", h.K, "]");
      w.data = alloc(DType::kF8E4M3, {h.groups, h.N, h.K});
      upload(w.data, h.fp8.data());
      w.scale = alloc(DType::kF32, {h.groups, blocks(h.N), blocks(h.K)});
      upload(w.scale, h.scale.data());
      break;
  }
  if (!h.bias.empty()) {
    w.bias = alloc(DType::kF32, {h.N});
    upload(w.bias, h.bias.data());
  }
  return w;
}

Weight Backend::random_weight(WeightFormat f, int64_t groups, int64_t N, int64_t K, uint64_t seed, float amplitude) {
  IS_CHECK(supports(f), name(), ": ", weight_format_name(f), " weights are not supported");
  Weight w;
  w.format = f;
  w.groups = groups;
  w.N = N;
  w.K = K;
  switch (f) {
    case WeightFormat::kF32:
      w.data = alloc(DType::kF32, {groups, N, K});
      fill_uniform(w.data, seed, amplitude);
      break;
    case WeightFormat::kBf16:
      w.data = alloc(DType::kBF16, {groups, N, K});
      fill_uniform(w.data, seed, amplitude);
      break;
    case WeightFormat::kFp8Block: {
      w.data = alloc(DType::kF8E4M3, {groups, N, K});
      fill_uniform(w.data, seed, kFp8E4M3Max);
      w.scale = alloc(DType::kF32, {groups, blocks(N), blocks(K)});
      std::vector<float> s(static_cast<size_t>(w.scale.numel()), amplitude / kFp8E4M3Max);
      upload(w.scale, s.data());
      break;
    }
  }
  return w;
}

MlaWeights Backend::random_mla(int heads, int nope, int v_dim, int kv_lora, WeightFormat format, uint64_t seed,
                               float amplitude) {
  std::vector<float> kv_b(static_cast<size_t>(heads) * (nope + v_dim) * kv_lora);
  for (size_t i = 0; i < kv_b.size(); ++i) kv_b[i] = counter_uniform(seed, i, amplitude);
  return upload_mla(kv_b, heads, nope, v_dim, kv_lora, format);
}

void upload_step(Backend& be, Step& s, Tensor& buffer) {
  IS_CHECK(s.B >= 1 && s.T >= 1, "step: B = ", s.B, ", T = ", s.T, " must both be >= 1");
  IS_CHECK(static_cast<int>(s.q_start.size()) == s.B, "step: ", s.q_start.size(), " q_start values for B = ", s.B);
  IS_CHECK(static_cast<int64_t>(s.table_host.size()) == static_cast<int64_t>(s.B) * s.max_pages,
           "step: block table has ", s.table_host.size(), " entries for ", s.B, " x ", s.max_pages);
  const int64_t R = s.rows();
  const int64_t n = R + s.B + s.B + static_cast<int64_t>(s.B) * s.max_pages + R;
  std::vector<int32_t> h(static_cast<size_t>(n));
  int32_t* pos = h.data();
  int32_t* qs = pos + R;
  int32_t* lens = qs + s.B;
  int32_t* table = lens + s.B;
  int32_t* slots = table + static_cast<int64_t>(s.B) * s.max_pages;
  s.max_len = 0;
  for (int b = 0; b < s.B; ++b) {
    const int64_t q0 = s.q_start[static_cast<size_t>(b)];
    IS_CHECK(q0 >= 0 && q0 + s.T <= static_cast<int64_t>(s.max_pages) * kPageTokens, "step: sequence ", b,
             " rows [", q0, ", ", q0 + s.T, ") exceed its ", s.max_pages, " pages");
    qs[b] = static_cast<int32_t>(q0);
    lens[b] = static_cast<int32_t>(q0 + s.T);
    s.max_len = std::max(s.max_len, q0 + s.T);
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t p = q0 + t;
      pos[b * s.T + t] = static_cast<int32_t>(p);
      const int32_t page = s.table_host[static_cast<size_t>(b * s.max_pages + p / kPageTokens)];
      IS_CHECK(page >= 0, "step: sequence ", b, " has no page for position ", p);
      slots[b * s.T + t] = page * kPageTokens + static_cast<int32_t>(p % kPageTokens);
    }
  }
  std::copy(s.table_host.begin(), s.table_host.end(), table);
  if (!buffer.defined() || buffer.numel() < n) buffer = be.alloc(DType::kI32, {std::max<int64_t>(n, 1024)});
  be.upload(buffer.rows(0, n), h.data());
  s.positions = buffer.rows(0, R);
  s.q_starts = buffer.rows(R, R + s.B);
  s.seq_lens = buffer.rows(R + s.B, R + 2 * s.B);
  s.block_table = buffer.rows(R + 2 * s.B, R + 2 * s.B + static_cast<int64_t>(s.B) * s.max_pages)
                      .reshape({s.B, s.max_pages});
  s.slots = buffer.rows(n - R, n);
}

namespace {
BackendFactory& cuda_factory() {
  static BackendFactory f = nullptr;
  return f;
}
}  // namespace

void register_cuda_backend(BackendFactory f) { cuda_factory() = f; }

std::unique_ptr<Backend> make_backend(Device d) {
  if (d == Device::kCpu) return std::make_unique<CpuBackend>();
  IS_CHECK(cuda_factory() != nullptr,
           "--device cuda: this build of IndexShare has no CUDA backend (nvcc was not found when it was built)");
  return cuda_factory()();
}

}  // namespace indexshare::backend

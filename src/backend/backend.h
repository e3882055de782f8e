// The compute backend seam: every heavy op a DSA model runs, implemented once for the CPU
// (backend/cpu_backend.h, over src/ops) and once for CUDA (src/cuda/engine, over src/cuda).
// Models (src/model) and the DSA stack (src/share/dsa_stack.h) are written once against this
// interface; weights, caches and activations live on the backend's device and never travel
// to the host inside a forward step.
//
// Conventions shared by both backends (tests/backend_cases.h checks each op on both):
//   - activations are f32 row-major tensors; a row is one token;
//   - index sets are int32 with -1 for an empty slot; a row with no valid slot attends to
//     nothing (zeros); top-k ties go to the lower position; NaN scores are an error on the CPU
//     and masked on CUDA (a kernel cannot raise), so NaN must not reach an indexer;
//   - caches are paged: page p holds tokens [64 j, 64 j + 64) of the sequence whose block table
//     lists p at column j; the physical slot of a token is p * 64 + (position % 64).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "ops/moe_route.h"

namespace indexshare::backend {

inline constexpr int kPageTokens = 64;
inline constexpr int kFp8BlockSize = 128;  // weight_scale_inv blocks are 128 x 128

// ---------------------------------------------------------------------------------------------
// Weights

enum class WeightFormat : uint8_t { kF32, kBf16, kFp8Block };
std::string_view weight_format_name(WeightFormat f);  // "f32" / "bf16" / "fp8"

// y = x W^T (+ bias) with W [N, K]; `groups` stacked matrices [groups, N, K] hold MoE experts.
// kFp8Block: e4m3 codes with one f32 scale per 128 x 128 block (the DeepSeek / GLM checkpoint
// layout, "weight_scale_inv"): W[n, k] = code[n, k] * scale[n / 128, k / 128].
struct Weight {
  WeightFormat format = WeightFormat::kF32;
  int64_t groups = 1, N = 0, K = 0;
  Tensor data;   // [groups, N, K]: f32, bf16 bits or e4m3 bytes
  Tensor scale;  // kFp8Block: [groups, ceil(N/128), ceil(K/128)] f32; else undefined
  Tensor bias;   // [N] f32, undefined = none (groups == 1 only)
  size_t bytes() const;
  bool defined() const { return data.defined(); }
};

// A weight in host memory, ready to upload.
struct HostWeight {
  WeightFormat format = WeightFormat::kF32;
  int64_t groups = 1, N = 0, K = 0;
  std::vector<float> f32;      // kF32
  std::vector<uint16_t> bf16;  // kBf16
  std::vector<uint8_t> fp8;    // kFp8Block codes
  std::vector<float> scale;    // kFp8Block block scales
  std::vector<float> bias;     // [N] or empty
};
// f32 values [groups, N, K] in `format`: bf16 rounds to nearest even; fp8 takes per block
// scale = max|w| / 448 (1 for an all-zero block) and rounds the codes to nearest even.
HostWeight make_host_weight(std::vector<float> values, int64_t groups, int64_t N, int64_t K, WeightFormat format,
                            std::vector<float> bias = {});
// W as f32 [groups, N, K] (dequantised): the reference every format is checked against.
std::vector<float> host_weight_values(const HostWeight& w);

// ---------------------------------------------------------------------------------------------
// One forward step: B sequences with T new rows each (prefill B = 1; decode T = 1). Row
// r = b * T + t sits at position q_start[b] + t. Built by the model from its paged caches; the
// device tensors live on the backend (the model keeps them at fixed addresses so a captured
// decode step can be replayed).
struct Step {
  int B = 0;
  int64_t T = 0;
  std::vector<int64_t> q_start;     // [B] host
  int64_t max_len = 0;              // max over b of q_start[b] + T
  int max_pages = 0;                // columns of the block table
  std::vector<int32_t> table_host;  // [B, max_pages] physical pages (host copy)
  Tensor positions;                 // [B*T] i32
  Tensor q_starts;                  // [B] i32
  Tensor seq_lens;                  // [B] i32: q_start[b] + T
  Tensor block_table;               // [B, max_pages] i32
  Tensor slots;                     // [B*T] i32: physical slot of each new row
  int64_t rows() const { return static_cast<int64_t>(B) * T; }
};

// ---------------------------------------------------------------------------------------------
// Op arguments

struct NormArgs {
  Tensor x;          // rows of ld_x floats; the first n of each row are normalised
  Tensor y;          // rows of ld_y floats (may be x)
  Tensor weight;     // [n] f32
  Tensor bias;       // [n] f32 (layer_norm only; undefined = 0)
  int64_t rows = 0, n = 0, ld_x = 0, ld_y = 0;
  float eps = 1e-6f;
};

// RoPE on dims [offset, offset + rot_dim) of every head of x [rows, heads * head_dim], angle
// position * inv_freq[j] in double, cos / sin rounded to f32 once, then the slice is multiplied
// by attention_factor when it is not 1 (YaRN magnitude). Pairs: interleaved (2j, 2j + 1) or
// half-split (j, j + rot_dim / 2).
struct RopeSpec {
  int heads = 0, head_dim = 0, offset = 0, rot_dim = 0;
  bool interleaved = false;
  float attention_factor = 1.0f;
  Tensor inv_freq;  // [rot_dim / 2] f32 on the backend
};

// The sigmoid router of DeepSeek-V3 / GLM ("noaux_tc"): its parameters are those of the CPU op.
using MoeSpec = ops::MoeRouteParams;
struct MoeWeights {
  Weight router;       // [E, d] (f32)
  Tensor router_bias;  // [E] f32 (e_score_correction_bias)
  Weight gate_up;      // [E, 2I, d]: rows [0, I) gate, [I, 2I) up
  Weight down;         // [E, d, I]
  bool has_shared = false;
  Weight shared_gate_up, shared_down;  // [2Is, d], [d, Is]
};

// Absorbed MLA: per head, W_UK [nope, kv_lora] turns q_nope into the latent space and W_UV
// [v, kv_lora] turns the attended latent back (the row blocks of kv_b_proj).
struct MlaWeights {
  int heads = 0, nope = 0, v_dim = 0, kv_lora = 0;
  Tensor w_uk;  // [H, nope, kv_lora] (f32 or bf16, the backend's choice)
  Tensor w_uv;  // [H, v, kv_lora]
};

enum class CacheFormat : uint8_t { kF32, kBf16, kFp8 };
std::string_view cache_format_name(CacheFormat f);

class LatentCache {  // per layer: [pages * 64, kv_lora + rope]
 public:
  virtual ~LatentCache() = default;
  virtual size_t bytes() const = 0;
  virtual CacheFormat format() const = 0;
};

struct IndexerSpec {
  int heads = 0, dim = 0, topk = 0;
  float scale = 0.0f;  // multiplies every term (DSA: heads^-0.5 * dim^-0.5)
  CacheFormat format = CacheFormat::kF32;
};
class IndexerCache {  // per F layer: the indexer keys of every cached token
 public:
  virtual ~IndexerCache() = default;
  virtual size_t bytes() const = 0;
  virtual const IndexerSpec& spec() const = 0;
};

struct MlaArgs {
  Tensor q;             // [rows, H, nope + rope] f32 after RoPE
  const MlaWeights* w = nullptr;
  const LatentCache* cache = nullptr;
  Tensor indices;       // [rows, K] i32 physical slots, -1 = empty
  float scale = 1.0f;   // softmax scale
  Tensor out;           // [rows, H * v] f32
};

// Where a backend is spending its time: the model marks the start of each region.
enum class Region : uint8_t { kEmbed, kAttnProj, kIndexer, kAttention, kMlp, kMoe, kNorm, kLmHead, kCount };
std::string_view region_name(Region r);

// ---------------------------------------------------------------------------------------------

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu (2 threads)", "cuda (NVIDIA H200)"

  // ---- memory ----
  virtual Tensor alloc(DType dtype, std::vector<int64_t> shape) = 0;  // uninitialised
  virtual void upload(const Tensor& dst, const void* src) = 0;         // dst.bytes() bytes
  virtual void download(void* dst, const Tensor& src) = 0;
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;         // same bytes, same device
  virtual void fill_zero(const Tensor& t) = 0;
  // Uniform values in [-amplitude, amplitude] from a counter hash of (seed, element index),
  // bit-identical on every backend: f32 and bf16 tensors (bf16 rounds the f32 value).
  virtual void fill_uniform(const Tensor& t, uint64_t seed, float amplitude) = 0;
  virtual void synchronize() = 0;
  // Bytes of device memory this backend has allocated and not freed, and the peak of that.
  virtual size_t bytes_in_use() const = 0;
  virtual size_t peak_bytes() const = 0;

  // ---- weights ----
  // Which weight formats linear / mlp / moe take on this backend.
  virtual bool supports(WeightFormat f) const = 0;
  Weight upload_weight(const HostWeight& w);
  // A weight of random values (fill_uniform; fp8: random codes in [-448, 448] with block scale
  // amplitude / 448), for benchmarks: W[n, k] is the same on every backend for one seed (a
  // backend without fp8 weights returns the dequantised values in f32).
  virtual Weight random_weight(WeightFormat f, int64_t groups, int64_t N, int64_t K, uint64_t seed, float amplitude);
  // kv_b [H * (nope + v), kv_lora] split into W_UK / W_UV, held in f32 (format kF32) or in bf16
  // (bf16 and fp8 models; the CPU keeps f32 storage of the bf16-rounded values).
  virtual MlaWeights upload_mla(const std::vector<float>& kv_b, int heads, int nope, int v_dim, int kv_lora,
                                WeightFormat format) = 0;
  // The same for kv_b filled with fill_uniform(seed, amplitude).
  MlaWeights random_mla(int heads, int nope, int v_dim, int kv_lora, WeightFormat format, uint64_t seed,
                        float amplitude);

  // ---- ops (x, y: f32 activations) ----
  virtual void embed(const Weight& table, const Tensor& ids, const Tensor& out) = 0;  // [V, d] f32|bf16
  virtual void rms_norm(const NormArgs& a) = 0;
  virtual void layer_norm(const NormArgs& a) = 0;
  virtual void linear(const Tensor& x, const Weight& w, const Tensor& y) = 0;  // [M, K] -> [M, N]
  virtual void rope(const Tensor& x, const Tensor& positions, const RopeSpec& s) = 0;
  virtual void add(const Tensor& h, const Tensor& y) = 0;  // h += y
  // a.x += y, then a.y = rms_norm(a.x) (the residual add fused with the next norm).
  virtual void add_rms_norm(const Tensor& y, const NormArgs& a);
  // y = down(silu(gate x) * up x)
  virtual void mlp(const Tensor& x, const Weight& gate_up, const Weight& down, const Tensor& y) = 0;
  // y = sum over the routed experts (ascending expert id) of w_e expert_e(x) + shared(x)
  virtual void moe(const Tensor& x, const MoeWeights& m, const MoeSpec& s, const Tensor& y) = 0;
  // Experts and weights the router picks (for tests): experts [rows, top_k] ascending, weights
  // [rows, top_k] (after normalisation and scaling).
  virtual void moe_route(const Tensor& x, const MoeWeights& m, const MoeSpec& s, const Tensor& experts,
                         const Tensor& weights) = 0;

  // ---- MLA latent cache and sparse attention ----
  // Formats this backend offers for these dims (first = fastest).
  virtual std::vector<CacheFormat> latent_formats(int kv_lora, int rope, int heads) const = 0;
  virtual std::unique_ptr<LatentCache> new_latent_cache(int64_t pages, int kv_lora, int rope, CacheFormat f) = 0;
  virtual void latent_write(LatentCache& c, const Step& s, const Tensor& latent) = 0;  // [rows, kv_lora + rope]
  virtual void mla_attention(const MlaArgs& a) = 0;

  // ---- DSA indexer ----
  virtual std::vector<CacheFormat> indexer_formats(int heads, int dim) const = 0;
  virtual std::unique_ptr<IndexerCache> new_indexer_cache(int64_t pages, const IndexerSpec& spec) = 0;
  virtual void indexer_append(IndexerCache& c, const Step& s, const Tensor& k) = 0;  // [rows, dim]
  // Every row's top-k over its sequence's visible keys (position <= its own): logical positions
  // and the physical slots of the same keys, [rows, topk] i32, -1 padded.
  virtual void indexer_select(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w,
                              const Tensor& logical, const Tensor& physical) = 0;
  // The scores themselves, [rows, s.max_len] f32, -inf where masked (tests and traces only).
  virtual void indexer_scores(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w,
                              const Tensor& scores) = 0;
  // Reindex (R layer): every row's top-k (spec.topk) of its candidates only, scored with this
  // cache's indexer: cand_logical / cand_physical [rows, C] (positions and slots, -1 = empty, as
  // an F layer's indexer_select left them) -> logical / physical [rows, topk]. Same order and
  // padding conventions as indexer_select (ops/indexer_rescore.h).
  virtual void indexer_rescore(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w,
                               const Tensor& cand_logical, const Tensor& cand_physical, const Tensor& logical,
                               const Tensor& physical) = 0;
  // physical[r, j] = slot of logical[r, j] in row r's sequence (-1 stays -1).
  virtual void to_physical(const Step& s, const Tensor& logical, const Tensor& physical) = 0;
  // dst [rows, K] = the first K columns of src [rows, C] (C >= K), i32, same device.
  virtual void copy_columns(const Tensor& dst, const Tensor& src) = 0;

  // ---- captured steps (CUDA graphs) ----
  // Whether the ops enqueued between begin_capture() and end_capture() can be replayed as one
  // unit. A captured step must not synchronise, allocate or copy to the host; its kernels see the
  // device memory (positions, page tables, ids) as it is when replayed.
  virtual bool can_capture() const { return false; }
  virtual void begin_capture();
  // Ends the capture; returns the id of a replayable graph (owned by the backend).
  virtual int end_capture();
  virtual void replay(int graph);
  // Changes whenever the backend moves its internal scratch (a captured step must be re-captured).
  virtual uint64_t scratch_epoch() const { return 0; }

  // ---- profiling ----
  virtual void mark(Region) {}
  virtual bool profiling() const { return false; }
};

// Host-side preparation of a Step's device tensors: packs positions, q_starts, seq_lens, block
// table and slots into one i32 buffer and uploads it with a single copy. `buffer` is reused
// (grown when too small; the tensors of the Step view it).
void upload_step(Backend& be, Step& s, Tensor& buffer);

// The backend of a device: the CPU one always; the CUDA one when this build has CUDA and a GPU
// is present (else Error saying which is missing).
std::unique_ptr<Backend> make_backend(Device d);
// Set by the CUDA library (cuda/engine/register.h) before make_backend(Device::kCuda) works.
using BackendFactory = std::unique_ptr<Backend> (*)();
void register_cuda_backend(BackendFactory f);

}  // namespace indexshare::backend

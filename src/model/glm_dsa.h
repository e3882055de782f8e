// GLM-MoE-DSA / DeepSeek-V3.2 causal LM (model_type glm_moe_dsa and deepseek_v32), written once
// over the compute backend seam (backend/backend.h): the same code runs on the CPU (f32, matching
// transformers' fp32 numerics) and on a Hopper GPU (f32, bf16 or block-scaled FP8 weights).
//
// Per layer (x = RMSNorm(h)):
//   c_q = RMSNorm(q_a(x)); q = q_b(c_q) -> [H, nope + rope], RoPE on the rope slice (MLA pairing)
//   [c_kv ; k_pe] = kv_a(x); c_kv = RMSNorm(c_kv); RoPE(k_pe); the latent [c_kv ; k_pe] goes to
//   the layer's paged latent cache
//   F layer: the lightning indexer (q_I = wq_b(c_q), k_I = LayerNorm(wk(x)), RoPE on their first
//   rope dims with the indexer pairing, w = weights_proj(x)) runs in the DSA stack
//   (share/dsa_stack.h), which fills the shared top-k buffer; S layers reuse it
//   o = absorbed sparse MLA over the buffer's keys; h += o_proj(o)
//   h += MLP or MoE(RMSNorm(h))
// then RMSNorm and the LM head. The equations of each op are in backend/backend.h.
//
// Caches are paged (backend::kPageTokens tokens a page, one page table per sequence shared by
// every layer): a latent cache per layer, an indexer cache per F layer only (in the stack). A
// GlmDsaCache is one sequence; it takes pages from the model's pool as it grows and gives them
// back when destroyed. The pool holds ModelOptions::max_tokens tokens.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/glm_dsa_config.h"
#include "model/glm_dsa_weights.h"
#include "share/dsa_stack.h"

namespace indexshare::model {

class PagePool;

// One sequence's place in the paged caches.
class GlmDsaCache {
 public:
  GlmDsaCache() = default;
  ~GlmDsaCache();
  GlmDsaCache(GlmDsaCache&& o) noexcept;
  GlmDsaCache& operator=(GlmDsaCache&& o) noexcept;
  GlmDsaCache(const GlmDsaCache&) = delete;
  GlmDsaCache& operator=(const GlmDsaCache&) = delete;

  int64_t length = 0;          // tokens cached
  std::vector<int32_t> pages;  // physical pages, in order

 private:
  friend class GlmDsaModel;
  std::shared_ptr<PagePool> pool_;
  void release();
};

struct ModelOptions {
  backend::WeightFormat weights = backend::WeightFormat::kF32;
  // Cache formats; unset = the backend's fastest for the model's dims.
  std::optional<backend::CacheFormat> latent_cache, indexer_cache;
  int64_t max_tokens = 4096;  // tokens of cache over all live sequences
  int64_t max_step_rows = 4096;  // forward() runs longer inputs in chunks of this many tokens
  // decode(): replay each step as a captured graph when the backend can (CUDA). The step's key
  // lengths are rounded up to graph_bucket tokens (the kernels mask past each sequence's length),
  // so one capture serves graph_bucket steps of a batch.
  bool graphs = true;
  int64_t graph_bucket = 4096;
  // Load and run the checkpoint's first nextn (MTP) layer as a draft head (mtp_forward).
  bool mtp = false;
};

// Which rows of a forward() call get logits: all, the last `last_rows`, or none.
enum class LogitRows { kAll, kLast, kNone };

struct ForwardOptions {
  bool capture_topk = false;    // fill ForwardTrace::topk for every layer
  int capture_topk_layer = -1;  // with capture_topk: only this layer's (the others stay empty)
  bool capture_scores = false;  // fill ForwardTrace::scores for F layers
  // Per layer [T * index_topk] (-1 padded), nullable: F layers use these sets instead of their
  // own top-k (their keys still enter the indexer cache). Compares attention numerics against a
  // reference independently of top-k tie-breaking.
  const std::vector<std::vector<int32_t>>* forced_topk = nullptr;
  LogitRows logits = LogitRows::kAll;
  int64_t last_rows = 1;  // kLast: how many of the last rows
  // Nullable: every row's final hidden state after the final norm, [T, hidden] host (what the
  // LM head reads, and what an MTP head reads as h_i).
  std::vector<float>* hidden = nullptr;
};

// One call of the MTP (nextn) layer over rows at positions pos0 .. pos0 + T - 1 of a sequence.
// Row i reads h_i (the target's final hidden state after its final norm, or the layer's own
// output g of the row before when drafting further ahead) and x_{i+1}, the token after i:
//   u_i = eh_proj . [enorm(embed(x_{i+1})) ; hnorm(h_i)]
//   v   = the nextn decoder block over u at positions pos0 .., with its own latent cache and its
//         own indexer (cache) over the positions the layer has seen
//   g_i = shared_head.norm(v_i);  logits_i = lm_head(g_i)   (a draft for x_{i+2})
// The layer's caches are addressed by position through the sequence's page table (the target's
// GlmDsaCache), so rows past the target's length (drafts) are rewritten by later calls.
struct MtpCall {
  int64_t pos0 = 0;
  int64_t T = 0;
  const float* hidden = nullptr;  // [T, hidden] host
  const int32_t* next = nullptr;  // [T] ids
  // Nullable: attend over these sets instead of the layer's own top-k: [T, set_width] logical
  // positions (each <= the row's position; -1 = empty), host. The layer's indexer does not run.
  const int32_t* sets = nullptr;
  int set_width = 0;
  int64_t logit_rows = 1;  // logits of the last logit_rows rows
};
struct MtpOutput {
  std::vector<float> g;       // [T, hidden]
  std::vector<float> logits;  // [logit_rows, vocab]
  std::vector<int32_t> topk;  // [T, index_topk] logical positions the rows attended (own indexer)
  bool indexer_ran = false;
};

struct ForwardTrace {
  std::vector<std::vector<int32_t>> topk;  // [layer][T * index_topk]: positions each layer attended
  std::vector<std::vector<float>> scores;  // [layer][T * length]: F layers' index scores
  int indexer_calls = 0;                   // F layers run in this call
  int shared_layers = 0;                   // S layers (reused a top-k) in this call
};

class GlmDsaModel {
 public:
  // Uploads `weights` (host f32, freed as they go) in options.weights format.
  GlmDsaModel(GlmDsaConfig config, GlmDsaWeights weights, std::shared_ptr<backend::Backend> be = nullptr,
              const ModelOptions& options = {});
  // A model of random weights made on the backend (benchmarks): uniform values of amplitude
  // 0.02 * sqrt(3) (std 0.02), norms 1, the same numbers on every backend for one seed.
  static std::unique_ptr<GlmDsaModel> random(GlmDsaConfig config, std::shared_ptr<backend::Backend> be,
                                             const ModelOptions& options, uint64_t seed);
  ~GlmDsaModel();
  GlmDsaModel(GlmDsaModel&&) noexcept;

  const GlmDsaConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  backend::Backend& backend() const { return *be_; }
  share::DsaStack& stack() { return *stack_; }
  const share::DsaStack& stack() const { return *stack_; }
  bool has_indexer(int layer) const { return config_.schedule.is_full(layer); }
  backend::CacheFormat latent_format() const { return latent_format_; }
  backend::CacheFormat indexer_format() const { return stack_->options().format; }

  GlmDsaCache new_cache();
  int64_t free_tokens() const;  // pages not held by any sequence, in tokens

  // Runs `tokens` (ids in [0, vocab)) at positions cache.length, cache.length + 1, ...; appends
  // them to the cache and returns the logits [rows, vocab] (rows per opt.logits; the LM head runs
  // only on those rows, in blocks of 256, so no [T, vocab] buffer lives on the device). Throws Error
  // naming a bad token id (position and value), or a cache too small, before touching the cache.
  std::vector<float> forward(GlmDsaCache& cache, std::span<const int32_t> tokens, const ForwardOptions& opt = {},
                             ForwardTrace* trace = nullptr);
  // The MTP layer (ModelOptions::mtp; Error otherwise): see MtpCall. Takes pages of `cache` up
  // to pos0 + T without changing cache.length. Throws Error naming a bad id, shape or position.
  MtpOutput mtp_forward(GlmDsaCache& cache, const MtpCall& call);
  bool has_mtp() const { return mtp_ != nullptr; }
  bool mtp_has_indexer() const;

  // Batched decode: one new token per sequence in one step; logits [B, vocab].
  std::vector<float> decode(std::span<GlmDsaCache* const> caches, std::span<const int32_t> tokens);

  // Fills `cache` with `tokens` positions of random latents and indexer keys without running
  // the model (benchmarks at a given depth); the values are uniform like random weights.
  void fill_random(GlmDsaCache& cache, int64_t tokens, uint64_t seed);
  // A new sequence that shares `src`'s cached tokens (prefix sharing: the pages are shared, not
  // copied; each sequence writes its new tokens into pages of its own). src.length must be a
  // multiple of the page size (backend::kPageTokens), else Error.
  GlmDsaCache fork(const GlmDsaCache& src);
  // Forgets the tokens at positions >= length (pages past it go back to the pool).
  void truncate(GlmDsaCache& cache, int64_t length);

  size_t weight_bytes() const;
  size_t latent_cache_bytes() const;
  size_t indexer_cache_bytes() const { return stack_->indexer_cache_bytes(); }

 private:
  struct Layer;
  struct Work;
  struct Mtp;
  GlmDsaModel(GlmDsaConfig config, std::shared_ptr<backend::Backend> be, const ModelOptions& options);
  void init_caches();
  void upload(GlmDsaWeights&& w);
  void ensure_pages(GlmDsaCache& c, int64_t length);
  // One step over prepared step_ (rows = step_.rows()); returns the logits of rows [first_row, rows).
  std::vector<float> run_step(const Tensor& ids, const ForwardOptions& opt, ForwardTrace* trace, int64_t first_row);
  // Embedding and every layer over step_; then the final norm and LM head of rows [r0, r1).
  void run_layers(const Tensor& ids, const ForwardOptions& opt, ForwardTrace* trace);
  void lm_head(int64_t r0, int64_t r1, const Tensor& out);
  void layer_forward(int i, const ForwardOptions& opt, ForwardTrace* trace);
  // One decoder layer over step_ (h in, h out): `first` normalises h itself (else x already
  // holds the previous layer's fused norm); `next_norm` (nullable) fuses the next layer's input
  // norm into the residual add. The F-layer indexer runs through `st` as layer `st_layer`
  // unless `indices` ([rows, K] physical slots) are given.
  void run_layer(Layer& l, backend::LatentCache& latent, share::DsaStack& st, int st_layer, bool first,
                 const Tensor* next_norm, const Tensor* indices, const ForwardOptions& opt, ForwardTrace* trace,
                 int trace_layer);
  Layer upload_layer(LayerWeights& L);
  // The device buffers a captured decode step reads and writes; a graph is replayed only while
  // they are the same.
  std::vector<const void*> graph_signature() const;

  GlmDsaConfig config_;
  ModelOptions options_;
  std::shared_ptr<backend::Backend> be_;
  std::shared_ptr<PagePool> pool_;
  std::vector<Layer> layers_;
  std::unique_ptr<Mtp> mtp_;
  backend::Weight embed_, lm_head_;
  Tensor final_norm_;
  Tensor inv_freq_;
  backend::CacheFormat latent_format_ = backend::CacheFormat::kF32;
  std::vector<std::unique_ptr<backend::LatentCache>> latent_;
  std::unique_ptr<share::DsaStack> stack_;
  std::unique_ptr<Work> work_;
  backend::Step step_;
  Tensor step_buffer_;
  struct Graph {
    std::vector<const void*> signature;
    int id = -1;       // -1: the step ran eagerly once (warm-up), capture on the next one
  };
  std::map<std::pair<int, int64_t>, Graph> graphs_;  // (batch, bucketed length)
};

// The MoE router parameters of a config.
backend::MoeSpec moe_spec(const GlmDsaConfig& c);

}  // namespace indexshare::model

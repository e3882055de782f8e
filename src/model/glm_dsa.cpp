#include "model/glm_dsa.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <utility>

#include "core/counter_hash.h"
#include "core/error.h"

namespace indexshare::model {

using backend::CacheFormat;
using backend::kPageTokens;
using backend::Region;
using backend::Weight;
using backend::WeightFormat;

// ---- pages ----------------------------------------------------------------------------------

class PagePool {
 public:
  explicit PagePool(int64_t pages) : total_(pages), refs_(static_cast<size_t>(pages), 0) {
    free_.reserve(static_cast<size_t>(pages));
    for (int64_t p = pages - 1; p >= 0; --p) free_.push_back(static_cast<int32_t>(p));  // hands out 0, 1, 2, ...
  }
  int32_t take() {
    std::lock_guard<std::mutex> lock(mu_);
    IS_CHECK(!free_.empty(), "cache full: all ", total_, " pages (", total_ * kPageTokens,
             " tokens, ModelOptions::max_tokens / --ctx) are held by live sequences");
    const int32_t p = free_.back();
    free_.pop_back();
    refs_[static_cast<size_t>(p)] = 1;
    return p;
  }
  void share(int32_t p) {
    std::lock_guard<std::mutex> lock(mu_);
    ++refs_[static_cast<size_t>(p)];
  }
  void give(int32_t p) {
    std::lock_guard<std::mutex> lock(mu_);
    if (--refs_[static_cast<size_t>(p)] == 0) free_.push_back(p);
  }
  int64_t free_pages() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(free_.size());
  }
  int64_t total() const { return total_; }

 private:
  int64_t total_;
  mutable std::mutex mu_;
  std::vector<int32_t> free_;
  std::vector<int32_t> refs_;  // sequences holding each page
};

GlmDsaCache::~GlmDsaCache() { release(); }
GlmDsaCache::GlmDsaCache(GlmDsaCache&& o) noexcept
    : length(std::exchange(o.length, 0)), pages(std::move(o.pages)), pool_(std::move(o.pool_)) {
  o.pages.clear();
}
GlmDsaCache& GlmDsaCache::operator=(GlmDsaCache&& o) noexcept {
  if (this != &o) {
    release();
    length = std::exchange(o.length, 0);
    pages = std::move(o.pages);
    o.pages.clear();
    pool_ = std::move(o.pool_);
  }
  return *this;
}
void GlmDsaCache::release() {
  if (pool_)
    for (int32_t p : pages) pool_->give(p);
  pages.clear();
  length = 0;
}

// ---- weights and work buffers ---------------------------------------------------------------

struct GlmDsaModel::Layer {
  Tensor input_norm, post_norm, q_a_norm, kv_a_norm;
  Weight q_a, q_b, kv_a, o;
  backend::MlaWeights mla;
  bool full = false;
  Weight wq_b, wk, weights_proj;
  Tensor k_norm_w, k_norm_b;
  bool moe = false;
  Weight mlp_gate_up, mlp_down;
  backend::MoeWeights experts;
};

struct GlmDsaModel::Mtp {
  Tensor enorm, hnorm, shared_norm;
  Weight eh_e, eh_h;  // eh_proj's columns [0, d) (read the embedding) and [d, 2d) (the hidden state)
  std::unique_ptr<Layer> block;
  std::unique_ptr<backend::LatentCache> latent;
  std::unique_ptr<share::DsaStack> stack;  // one layer: F with the block's indexer, else sets only
};

struct GlmDsaModel::Work {
  int64_t cap = 0;
  Tensor ids, h, x, y, cq, q, lat, o, iq, ik, iw, sets_logical, sets_physical;
  Tensor logits;  // [rows, vocab] of decode steps
  void ensure(backend::Backend& be, const GlmDsaConfig& c, int64_t rows) {
    if (rows <= cap) return;
    cap = std::max<int64_t>(rows, 16);
    const int64_t d = c.hidden_size, H = c.num_heads;
    ids = be.alloc(DType::kI32, {cap});
    h = be.alloc(DType::kF32, {cap, d});
    x = be.alloc(DType::kF32, {cap, d});
    y = be.alloc(DType::kF32, {cap, d});
    cq = be.alloc(DType::kF32, {cap, c.q_lora_rank});
    q = be.alloc(DType::kF32, {cap, H * c.qk_head_dim()});
    lat = be.alloc(DType::kF32, {cap, c.latent_dim()});
    o = be.alloc(DType::kF32, {cap, H * c.v_head_dim});
    iq = be.alloc(DType::kF32, {cap, int64_t{c.index_n_heads} * c.index_head_dim});
    ik = be.alloc(DType::kF32, {cap, c.index_head_dim});
    iw = be.alloc(DType::kF32, {cap, c.index_n_heads});
  }
};

backend::MoeSpec moe_spec(const GlmDsaConfig& c) {
  backend::MoeSpec s;
  s.experts = c.n_routed_experts;
  s.top_k = c.num_experts_per_tok;
  s.n_group = c.n_group;
  s.topk_group = c.topk_group;
  s.norm_topk_prob = c.norm_topk_prob;
  s.routed_scaling = c.routed_scaling_factor;
  return s;
}

namespace {

constexpr float kRandomAmplitude = 0.034641016f;  // uniform with std 0.02

template <class T>
void free_vec(std::vector<T>& v) {
  std::vector<T>().swap(v);
}

Tensor upload_vec(backend::Backend& be, const std::vector<float>& v) {
  Tensor t = be.alloc(DType::kF32, {static_cast<int64_t>(v.size())});
  be.upload(t, v.data());
  return t;
}

Weight upload_linear(backend::Backend& be, Linear& l, WeightFormat f) {
  Weight w = be.upload_weight(backend::make_host_weight(std::move(l.w), 1, l.out, l.in, f, std::move(l.b)));
  free_vec(l.w);
  free_vec(l.b);
  return w;
}

// gate and up stacked as one [2I, d] matrix (rows [0, I) gate).
Weight upload_gate_up(backend::Backend& be, MlpWeights& m, WeightFormat f) {
  std::vector<float> v = std::move(m.gate.w);
  v.insert(v.end(), m.up.w.begin(), m.up.w.end());
  const int64_t I = m.gate.out, d = m.gate.in;
  free_vec(m.gate.w);
  free_vec(m.up.w);
  return be.upload_weight(backend::make_host_weight(std::move(v), 1, 2 * I, d, f));
}

// Experts stacked [E, 2I, d] and [E, d, I].
void upload_experts(backend::Backend& be, std::vector<MlpWeights>& ex, WeightFormat f, Weight& gate_up, Weight& down) {
  const auto E = static_cast<int64_t>(ex.size());
  const int64_t I = ex[0].gate.out, d = ex[0].gate.in;
  std::vector<float> gu, dn;
  gu.reserve(static_cast<size_t>(E * 2 * I * d));
  dn.reserve(static_cast<size_t>(E * d * I));
  for (auto& m : ex) {
    gu.insert(gu.end(), m.gate.w.begin(), m.gate.w.end());
    gu.insert(gu.end(), m.up.w.begin(), m.up.w.end());
    dn.insert(dn.end(), m.down.w.begin(), m.down.w.end());
    free_vec(m.gate.w);
    free_vec(m.up.w);
    free_vec(m.down.w);
  }
  gate_up = be.upload_weight(backend::make_host_weight(std::move(gu), E, 2 * I, d, f));
  down = be.upload_weight(backend::make_host_weight(std::move(dn), E, d, I, f));
}

CacheFormat pick(const std::optional<CacheFormat>& want, const std::vector<CacheFormat>& offered, const char* what,
                 const std::string& be_name, const std::string& dims) {
  IS_CHECK(!offered.empty(), be_name, " offers no ", what, " cache for ", dims);
  if (!want) return offered.front();
  IS_CHECK(std::find(offered.begin(), offered.end(), *want) != offered.end(), be_name, ": no ",
           backend::cache_format_name(*want), " ", what, " cache for ", dims, " (offered: ",
           backend::cache_format_name(offered.front()), offered.size() > 1 ? ", ..." : "", ")");
  return *want;
}

}  // namespace

GlmDsaModel::GlmDsaModel(GlmDsaConfig config, std::shared_ptr<backend::Backend> be, const ModelOptions& options)
    : config_(std::move(config)), options_(options), be_(be ? std::move(be) : backend::make_backend(Device::kCpu)) {
  config_.validate();
  IS_CHECK(options_.max_tokens >= 1 && options_.max_tokens <= (int64_t{1} << 31) - kPageTokens,
           "GlmDsaModel: max_tokens = ", options_.max_tokens, " must be in [1, 2^31 - 64] (cache slots are int32)");
  IS_CHECK(options_.max_step_rows >= 1, "GlmDsaModel: max_step_rows must be >= 1");
  work_ = std::make_unique<Work>();
}

GlmDsaModel::~GlmDsaModel() = default;
GlmDsaModel::GlmDsaModel(GlmDsaModel&&) noexcept = default;

void GlmDsaModel::init_caches() {
  const GlmDsaConfig& c = config_;
  IS_CHECK(!c.schedule.has_reindex(), "GLM-MoE-DSA / DeepSeek-V3.2: the schedule ", c.schedule.pattern(),
           " has reindex (R) layers, which only the learned-indexer (Llama) engine runs so far; use F and S layers");
  const int64_t pages = (options_.max_tokens + kPageTokens - 1) / kPageTokens;
  pool_ = std::make_shared<PagePool>(pages);
  latent_format_ = pick(options_.latent_cache, be_->latent_formats(c.kv_lora_rank, c.qk_rope_head_dim, c.num_heads),
                        "latent", be_->name(),
                        cat("kv_lora_rank ", c.kv_lora_rank, " + rope ", c.qk_rope_head_dim, ", ", c.num_heads, " heads"));
  for (int i = 0; i < c.num_layers; ++i)
    latent_.push_back(be_->new_latent_cache(pages, c.kv_lora_rank, c.qk_rope_head_dim, latent_format_));
  share::DsaStackOptions so;
  so.index_heads = c.index_n_heads;
  so.index_dim = c.index_head_dim;
  so.topk = c.index_topk;
  so.pages = pages;
  so.format = pick(options_.indexer_cache, be_->indexer_formats(c.index_n_heads, c.index_head_dim), "indexer",
                   be_->name(), cat(c.index_n_heads, " indexer heads x ", c.index_head_dim));
  stack_ = std::make_unique<share::DsaStack>(c.schedule, so, *be_);
  if (mtp_) {
    mtp_->latent = be_->new_latent_cache(pages, c.kv_lora_rank, c.qk_rope_head_dim, latent_format_);
    share::DsaStackOptions mo = so;
    if (!mtp_->block->full) mo.index_heads = mo.index_dim = 0;  // sets come from the caller only
    mtp_->stack = std::make_unique<share::DsaStack>(share::Schedule::all_full(1), mo, *be_);
  }
  inv_freq_ = upload_vec(*be_, c.rope_inv_freq);
}

GlmDsaModel::GlmDsaModel(GlmDsaConfig config, GlmDsaWeights weights, std::shared_ptr<backend::Backend> be,
                         const ModelOptions& options)
    : GlmDsaModel(std::move(config), std::move(be), options) {
  IS_CHECK(static_cast<int>(weights.layers.size()) == config_.num_layers, "GlmDsaModel: weights have ",
           weights.layers.size(), " layers, config ", config_.num_layers);
  for (int i = 0; i < config_.num_layers; ++i)
    IS_CHECK(weights.layers[static_cast<size_t>(i)].has_indexer == config_.schedule.is_full(i), "GlmDsaModel: layer ",
             i, " is ", config_.schedule.is_full(i) ? "F" : "S", " but its weights ",
             weights.layers[static_cast<size_t>(i)].has_indexer ? "have" : "lack", " an indexer");
  IS_CHECK(weights.mtp.has_value() == options_.mtp, "GlmDsaModel: ModelOptions::mtp is ", options_.mtp,
           " but the weights ", weights.mtp ? "hold" : "lack", " an MTP layer (load them with load_mtp)");
  upload(std::move(weights));
  init_caches();
}

GlmDsaModel::Layer GlmDsaModel::upload_layer(LayerWeights& L) {
  backend::Backend& be = *be_;
  const GlmDsaConfig& c = config_;
  const WeightFormat f = options_.weights, f32 = WeightFormat::kF32;
  Layer l;
  l.input_norm = upload_vec(be, L.input_norm);
  l.post_norm = upload_vec(be, L.post_norm);
  l.q_a_norm = upload_vec(be, L.q_a_norm);
  l.kv_a_norm = upload_vec(be, L.kv_a_norm);
  l.q_a = upload_linear(be, L.q_a, f);
  l.q_b = upload_linear(be, L.q_b, f);
  l.kv_a = upload_linear(be, L.kv_a, f);
  l.o = upload_linear(be, L.o, f);
  l.mla = be.upload_mla(L.kv_b.w, c.num_heads, c.qk_nope_head_dim, c.v_head_dim, c.kv_lora_rank, f);
  free_vec(L.kv_b.w);
  l.full = L.has_indexer;
  if (l.full) {
    l.wq_b = upload_linear(be, L.indexer.wq_b, f);
    l.wk = upload_linear(be, L.indexer.wk, f);
    l.weights_proj = upload_linear(be, L.indexer.weights_proj, f32);
    l.k_norm_w = upload_vec(be, L.indexer.k_norm_w);
    l.k_norm_b = upload_vec(be, L.indexer.k_norm_b);
  }
  l.moe = L.moe;
  if (!l.moe) {
    l.mlp_gate_up = upload_gate_up(be, L.mlp, f);
    l.mlp_down = upload_linear(be, L.mlp.down, f);
  } else {
    l.experts.router = upload_linear(be, L.router, f32);
    l.experts.router_bias = upload_vec(be, L.router_bias);
    upload_experts(be, L.experts, f, l.experts.gate_up, l.experts.down);
    l.experts.has_shared = L.has_shared;
    if (L.has_shared) {
      l.experts.shared_gate_up = upload_gate_up(be, L.shared, f);
      l.experts.shared_down = upload_linear(be, L.shared.down, f);
    }
  }
  return l;
}

void GlmDsaModel::upload(GlmDsaWeights&& w) {
  backend::Backend& be = *be_;
  const GlmDsaConfig& c = config_;
  const WeightFormat f = options_.weights;
  // Small or precision-critical matrices stay f32: the MoE router (fp32 in every reference) and
  // the indexer head weights (applied in fp32). The embedding table is f32 or bf16.
  const WeightFormat f32 = WeightFormat::kF32;
  const WeightFormat emb = f == f32 ? f32 : WeightFormat::kBf16;
  embed_ = be.upload_weight(backend::make_host_weight(std::move(w.embed), 1, c.vocab_size, c.hidden_size, emb));
  free_vec(w.embed);
  for (int i = 0; i < c.num_layers; ++i) {
    layers_.push_back(upload_layer(w.layers[static_cast<size_t>(i)]));
    w.layers[static_cast<size_t>(i)] = LayerWeights{};
  }
  if (w.mtp) {
    MtpLayerWeights& m = *w.mtp;
    mtp_ = std::make_unique<Mtp>();
    mtp_->enorm = upload_vec(be, m.enorm);
    mtp_->hnorm = upload_vec(be, m.hnorm);
    mtp_->shared_norm = upload_vec(be, m.shared_head_norm);
    const int64_t d = c.hidden_size;
    for (int half = 0; half < 2; ++half) {
      Linear l{d, d, std::vector<float>(static_cast<size_t>(d * d)), {}};
      for (int64_t r = 0; r < d; ++r)
        std::copy_n(m.eh_proj.w.begin() + r * 2 * d + half * d, d, l.w.begin() + r * d);
      (half == 0 ? mtp_->eh_e : mtp_->eh_h) = upload_linear(be, l, f);
    }
    mtp_->block = std::make_unique<Layer>(upload_layer(m.block));
    w.mtp.reset();
  }
  final_norm_ = upload_vec(be, w.final_norm);
  lm_head_ = upload_linear(be, w.lm_head, f);
}

std::unique_ptr<GlmDsaModel> GlmDsaModel::random(GlmDsaConfig config, std::shared_ptr<backend::Backend> be,
                                                 const ModelOptions& options, uint64_t seed) {
  std::unique_ptr<GlmDsaModel> m(new GlmDsaModel(std::move(config), std::move(be), options));
  backend::Backend& b = *m->be_;
  const GlmDsaConfig& c = m->config_;
  const WeightFormat f = options.weights, f32 = WeightFormat::kF32;
  const WeightFormat emb = f == f32 ? f32 : WeightFormat::kBf16;
  const float a = kRandomAmplitude;
  uint64_t n = 0;
  auto next = [&] { return mix_seed(seed, ++n); };
  auto rw = [&](WeightFormat fmt, int64_t g, int64_t N, int64_t K) { return b.random_weight(fmt, g, N, K, next(), a); };
  const int64_t d = c.hidden_size, H = c.num_heads;
  auto ones = [&](int64_t len) { return upload_vec(b, std::vector<float>(static_cast<size_t>(len), 1.0f)); };
  m->embed_ = b.random_weight(emb, 1, c.vocab_size, d, next(), 1.0f);
  for (int i = 0; i < c.num_layers; ++i) {
    Layer l;
    l.input_norm = ones(d);
    l.post_norm = ones(d);
    l.q_a_norm = ones(c.q_lora_rank);
    l.kv_a_norm = ones(c.kv_lora_rank);
    l.q_a = rw(f, 1, c.q_lora_rank, d);
    l.q_b = rw(f, 1, H * c.qk_head_dim(), c.q_lora_rank);
    l.kv_a = rw(f, 1, c.latent_dim(), d);
    l.o = rw(f, 1, d, H * c.v_head_dim);
    l.mla = b.random_mla(c.num_heads, c.qk_nope_head_dim, c.v_head_dim, c.kv_lora_rank, f, next(), a);
    l.full = c.schedule.is_full(i);
    if (l.full) {
      l.wq_b = rw(f, 1, int64_t{c.index_n_heads} * c.index_head_dim, c.q_lora_rank);
      l.wk = rw(f, 1, c.index_head_dim, d);
      l.weights_proj = rw(f32, 1, c.index_n_heads, d);
      l.k_norm_w = ones(c.index_head_dim);
      l.k_norm_b = upload_vec(b, std::vector<float>(static_cast<size_t>(c.index_head_dim), 0.0f));
    }
    l.moe = c.moe_layer[static_cast<size_t>(i)];
    if (!l.moe) {
      l.mlp_gate_up = rw(f, 1, 2 * c.intermediate_size, d);
      l.mlp_down = rw(f, 1, d, c.intermediate_size);
    } else {
      const int64_t E = c.n_routed_experts, I = c.moe_intermediate_size;
      l.experts.router = rw(f32, 1, E, d);
      l.experts.router_bias = upload_vec(b, std::vector<float>(static_cast<size_t>(E), 0.0f));
      l.experts.gate_up = rw(f, E, 2 * I, d);
      l.experts.down = rw(f, E, d, I);
      l.experts.has_shared = c.n_shared_experts > 0;
      if (l.experts.has_shared) {
        const int64_t Is = I * c.n_shared_experts;
        l.experts.shared_gate_up = rw(f, 1, 2 * Is, d);
        l.experts.shared_down = rw(f, 1, d, Is);
      }
    }
    m->layers_.push_back(std::move(l));
  }
  m->final_norm_ = ones(d);
  m->lm_head_ = rw(f, 1, c.vocab_size, d);
  m->init_caches();
  return m;
}

GlmDsaCache GlmDsaModel::new_cache() {
  GlmDsaCache c;
  c.pool_ = pool_;
  return c;
}

int64_t GlmDsaModel::free_tokens() const { return pool_->free_pages() * kPageTokens; }

void GlmDsaModel::ensure_pages(GlmDsaCache& c, int64_t length) {
  IS_CHECK(c.pool_ == pool_, "GlmDsaModel: the cache belongs to another model (use this model's new_cache())");
  const auto need = static_cast<size_t>((length + kPageTokens - 1) / kPageTokens);
  if (need <= c.pages.size()) return;
  const int64_t more = static_cast<int64_t>(need - c.pages.size());
  IS_CHECK(more <= pool_->free_pages(), "context over the cache capacity: the sequence needs ", length,
           " tokens but only ", c.pages.size() * kPageTokens + pool_->free_pages() * kPageTokens,
           " are available to it (max_tokens ", options_.max_tokens, ", --ctx)");
  while (c.pages.size() < need) c.pages.push_back(pool_->take());
}

size_t GlmDsaModel::weight_bytes() const {
  auto layer_bytes = [](const Layer& l) {
    size_t n = l.input_norm.bytes() + l.post_norm.bytes() + l.q_a_norm.bytes() + l.kv_a_norm.bytes();
    n += l.q_a.bytes() + l.q_b.bytes() + l.kv_a.bytes() + l.o.bytes() + l.mla.w_uk.bytes() + l.mla.w_uv.bytes();
    n += l.wq_b.bytes() + l.wk.bytes() + l.weights_proj.bytes() + l.k_norm_w.bytes() + l.k_norm_b.bytes();
    n += l.mlp_gate_up.bytes() + l.mlp_down.bytes();
    n += l.experts.router.bytes() + l.experts.router_bias.bytes() + l.experts.gate_up.bytes() + l.experts.down.bytes();
    n += l.experts.shared_gate_up.bytes() + l.experts.shared_down.bytes();
    return n;
  };
  size_t n = embed_.bytes() + lm_head_.bytes() + final_norm_.bytes();
  for (const Layer& l : layers_) n += layer_bytes(l);
  if (mtp_) {
    n += layer_bytes(*mtp_->block) + mtp_->enorm.bytes() + mtp_->hnorm.bytes() + mtp_->shared_norm.bytes();
    n += mtp_->eh_e.bytes() + mtp_->eh_h.bytes();
  }
  return n;
}

size_t GlmDsaModel::latent_cache_bytes() const {
  size_t n = mtp_ && mtp_->latent ? mtp_->latent->bytes() : 0;
  for (const auto& l : latent_) n += l->bytes();
  return n;
}

GlmDsaCache GlmDsaModel::fork(const GlmDsaCache& src) {
  IS_CHECK(src.pool_ == pool_, "GlmDsaModel::fork: the cache belongs to another model");
  IS_CHECK(src.length % kPageTokens == 0, "GlmDsaModel::fork: the source holds ", src.length,
           " tokens, not a multiple of the page size ", kPageTokens, " (its last page would have to be copied)");
  GlmDsaCache c = new_cache();
  const auto used = static_cast<size_t>(src.length / kPageTokens);
  for (size_t j = 0; j < used; ++j) {
    pool_->share(src.pages[j]);
    c.pages.push_back(src.pages[j]);
  }
  c.length = src.length;
  return c;
}

void GlmDsaModel::truncate(GlmDsaCache& cache, int64_t length) {
  IS_CHECK(length >= 0 && length <= cache.length, "GlmDsaModel::truncate: length ", length, " outside [0, ",
           cache.length, "]");
  const auto keep = static_cast<size_t>((length + kPageTokens - 1) / kPageTokens);
  while (cache.pages.size() > keep) {
    pool_->give(cache.pages.back());
    cache.pages.pop_back();
  }
  cache.length = length;
}

// ---- forward --------------------------------------------------------------------------------

void GlmDsaModel::layer_forward(int i, const ForwardOptions& opt, ForwardTrace* trace) {
  const Tensor* next = i + 1 < config_.num_layers ? &layers_[static_cast<size_t>(i) + 1].input_norm : nullptr;
  run_layer(layers_[static_cast<size_t>(i)], *latent_[static_cast<size_t>(i)], *stack_, i, i == 0, next, nullptr, opt,
            trace, i);
}

void GlmDsaModel::run_layer(Layer& l, backend::LatentCache& latent, share::DsaStack& st, int st_layer, bool first,
                            const Tensor* next_norm, const Tensor* indices, const ForwardOptions& opt,
                            ForwardTrace* trace, int trace_layer) {
  const GlmDsaConfig& c = config_;
  backend::Backend& be = *be_;
  Work& w = *work_;
  const int i = trace_layer;
  const int64_t R = step_.rows(), d = c.hidden_size;
  const int H = c.num_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, kvr = c.kv_lora_rank;
  const int ld = c.latent_dim(), hi = c.index_n_heads, di = c.index_head_dim;
  const Tensor h = w.h.rows(0, R), x = w.x.rows(0, R), y = w.y.rows(0, R), cq = w.cq.rows(0, R);
  const Tensor q = w.q.rows(0, R), lat = w.lat.rows(0, R), o = w.o.rows(0, R);
  auto rope_spec = [&](int heads, int head_dim, int offset, bool interleaved) {
    backend::RopeSpec s;
    s.heads = heads;
    s.head_dim = head_dim;
    s.offset = offset;
    s.rot_dim = rope;
    s.interleaved = interleaved;
    s.attention_factor = c.rope_attention_factor;
    s.inv_freq = inv_freq_;
    return s;
  };
  auto norm = [&](const Tensor& in, const Tensor& out, const Tensor& wt, int64_t n, int64_t ld_in, int64_t ld_out,
                  float eps, const Tensor& bias = {}) {
    backend::NormArgs a;
    a.x = in;
    a.y = out;
    a.weight = wt;
    a.bias = bias;
    a.rows = R;
    a.n = n;
    a.ld_x = ld_in;
    a.ld_y = ld_out;
    a.eps = eps;
    if (bias.defined()) {
      be.layer_norm(a);
    } else {
      be.rms_norm(a);
    }
  };

  if (first) {  // later layers get x from the previous layer's fused residual add + norm
    be.mark(Region::kNorm);
    norm(h, x, l.input_norm, d, d, d, c.rms_norm_eps);
  }
  be.mark(Region::kAttnProj);
  be.linear(x, l.q_a, cq);
  norm(cq, cq, l.q_a_norm, c.q_lora_rank, c.q_lora_rank, c.q_lora_rank, c.lora_norm_eps);
  be.linear(cq, l.q_b, q);
  be.rope(q, step_.positions, rope_spec(H, c.qk_head_dim(), nope, c.mla_rope_interleave));
  be.linear(x, l.kv_a, lat);
  norm(lat, lat, l.kv_a_norm, kvr, ld, ld, c.lora_norm_eps);
  be.rope(lat, step_.positions, rope_spec(1, ld, kvr, c.mla_rope_interleave));
  be.latent_write(latent, step_, lat);

  if (l.full && indices == nullptr) {
    be.mark(Region::kIndexer);
    const Tensor iq = w.iq.rows(0, R), ik = w.ik.rows(0, R), iw = w.iw.rows(0, R);
    be.linear(cq, l.wq_b, iq);
    be.rope(iq, step_.positions, rope_spec(hi, di, 0, c.indexer_rope_interleave));
    be.linear(x, l.wk, ik);
    norm(ik, ik, l.k_norm_w, di, di, di, c.index_k_norm_eps, l.k_norm_b);
    be.rope(ik, step_.positions, rope_spec(1, di, 0, c.indexer_rope_interleave));
    be.linear(x, l.weights_proj, iw);
    if (opt.forced_topk) {
      const auto& f = (*opt.forced_topk)[static_cast<size_t>(i)];
      IS_CHECK(static_cast<int64_t>(f.size()) == R * c.index_topk, "GlmDsaModel::forward: forced_topk[", i, "] has ",
               f.size(), " entries, expected ", R * c.index_topk);
      st.append_keys(st_layer, ik);
      st.set_topk(st_layer, f);
    } else {
      st.index(st_layer, iq, iw, ik);
    }
    if (trace && opt.capture_scores) {
      Tensor s = be.alloc(DType::kF32, {R, step_.max_len});
      st.scores(st_layer, iq, iw, s);
      auto& dst = trace->scores[static_cast<size_t>(i)];
      dst.resize(static_cast<size_t>(s.numel()));
      be.download(dst.data(), s);
    }
  }
  be.mark(Region::kAttention);
  backend::MlaArgs ma;
  ma.q = q;
  ma.w = &l.mla;
  ma.cache = &latent;
  ma.indices = indices ? *indices : st.topk(st_layer);
  ma.scale = c.attn_scale;
  ma.out = o;
  be.mla_attention(ma);
  if (trace) {
    (l.full ? trace->indexer_calls : trace->shared_layers) += 1;
    if (opt.capture_topk && (opt.capture_topk_layer < 0 || opt.capture_topk_layer == i)) {
      const Tensor& lg = st.topk_logical(st_layer);
      auto& dst = trace->topk[static_cast<size_t>(i)];
      const size_t old = dst.size();
      dst.resize(old + static_cast<size_t>(lg.numel()));
      be.download(dst.data() + old, lg);
    }
  }
  be.mark(Region::kAttnProj);
  be.linear(o, l.o, y);
  be.mark(Region::kNorm);
  backend::NormArgs post;
  post.x = h;
  post.y = x;
  post.weight = l.post_norm;
  post.rows = R;
  post.n = post.ld_x = post.ld_y = d;
  post.eps = c.rms_norm_eps;
  be.add_rms_norm(y, post);
  if (l.moe) {
    be.mark(Region::kMoe);
    be.moe(x, l.experts, moe_spec(c), y);
  } else {
    be.mark(Region::kMlp);
    be.mlp(x, l.mlp_gate_up, l.mlp_down, y);
  }
  be.mark(Region::kNorm);
  if (next_norm) {
    backend::NormArgs next = post;
    next.weight = *next_norm;
    be.add_rms_norm(y, next);
  } else {
    be.add(h, y);
  }
}

void GlmDsaModel::run_layers(const Tensor& ids, const ForwardOptions& opt, ForwardTrace* trace) {
  be_->mark(Region::kEmbed);
  be_->embed(embed_, ids, work_->h.rows(0, step_.rows()));
  stack_->begin_step(step_);
  for (int i = 0; i < config_.num_layers; ++i) layer_forward(i, opt, trace);
}

void GlmDsaModel::lm_head(int64_t r0, int64_t r1, const Tensor& out) {
  const GlmDsaConfig& c = config_;
  Work& w = *work_;
  be_->mark(Region::kLmHead);
  backend::NormArgs a;
  a.x = w.h.rows(r0, r1);
  a.y = w.x.rows(r0, r1);
  a.weight = final_norm_;
  a.rows = r1 - r0;
  a.n = c.hidden_size;
  a.ld_x = c.hidden_size;
  a.ld_y = c.hidden_size;
  a.eps = c.rms_norm_eps;
  be_->rms_norm(a);
  be_->linear(w.x.rows(r0, r1), lm_head_, out);
}

std::vector<float> GlmDsaModel::run_step(const Tensor& ids, const ForwardOptions& opt, ForwardTrace* trace,
                                         int64_t first_row) {
  const int64_t R = step_.rows(), V = config_.vocab_size, d = config_.hidden_size;
  run_layers(ids, opt, trace);
  if (opt.hidden) {  // the final norm of every row (the LM head below recomputes its rows' own)
    backend::NormArgs a;
    a.x = work_->h.rows(0, R);
    a.y = work_->x.rows(0, R);
    a.weight = final_norm_;
    a.rows = R;
    a.n = a.ld_x = a.ld_y = d;
    a.eps = config_.rms_norm_eps;
    be_->rms_norm(a);
    const size_t old = opt.hidden->size();
    opt.hidden->resize(old + static_cast<size_t>(R * d));
    be_->download(opt.hidden->data() + old, work_->x.rows(0, R));
  }
  if (first_row >= R) return {};
  constexpr int64_t kBlock = 256;
  const int64_t n = R - first_row;
  std::vector<float> out(static_cast<size_t>(n * V));
  Tensor logits = be_->alloc(DType::kF32, {std::min(n, kBlock), V});
  for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
    const int64_t r1 = std::min(n, r0 + kBlock);
    const Tensor l = logits.rows(0, r1 - r0);
    lm_head(first_row + r0, first_row + r1, l);
    be_->download(out.data() + r0 * V, l);
  }
  return out;
}

std::vector<const void*> GlmDsaModel::graph_signature() const {
  const Work& w = *work_;
  return {w.h.data(), w.logits.data(), step_buffer_.data(), stack_->buffer_id(),
          reinterpret_cast<const void*>(static_cast<uintptr_t>(be_->scratch_epoch()))};
}

std::vector<float> GlmDsaModel::forward(GlmDsaCache& cache, std::span<const int32_t> tokens, const ForwardOptions& opt,
                                        ForwardTrace* trace) {
  const GlmDsaConfig& c = config_;
  const auto T = static_cast<int64_t>(tokens.size());
  for (int64_t t = 0; t < T; ++t)
    IS_CHECK(tokens[static_cast<size_t>(t)] >= 0 && tokens[static_cast<size_t>(t)] < c.vocab_size,
             "GlmDsaModel::forward: token id ", tokens[static_cast<size_t>(t)], " at position ", t,
             " is outside the vocabulary [0, ", c.vocab_size, ")");
  if (opt.forced_topk)
    IS_CHECK(static_cast<int>(opt.forced_topk->size()) == c.num_layers, "GlmDsaModel::forward: forced_topk has ",
             opt.forced_topk->size(), " layers, model ", c.num_layers);
  IS_CHECK(!(opt.capture_scores || opt.forced_topk) || T <= options_.max_step_rows,
           "GlmDsaModel::forward: score capture and forced sets need the tokens in one step (", T, " > max_step_rows ",
           options_.max_step_rows, ")");
  if (opt.hidden) opt.hidden->clear();
  if (trace) {
    *trace = ForwardTrace{};
    if (opt.capture_topk) trace->topk.resize(static_cast<size_t>(c.num_layers));
    if (opt.capture_scores) trace->scores.resize(static_cast<size_t>(c.num_layers));
  }
  if (T == 0) return {};
  ensure_pages(cache, cache.length + T);

  std::vector<float> logits;
  for (int64_t t0 = 0; t0 < T; t0 += options_.max_step_rows) {
    const int64_t n = std::min(options_.max_step_rows, T - t0);
    step_.B = 1;
    step_.T = n;
    step_.q_start = {cache.length};
    step_.max_pages = static_cast<int>(cache.pages.size());
    step_.table_host = cache.pages;
    backend::upload_step(*be_, step_, step_buffer_);
    work_->ensure(*be_, c, n);
    const Tensor ids = work_->ids.rows(0, n);
    be_->upload(ids, tokens.data() + t0);
    // Rows of the call that get logits: [T - wanted, T); of this chunk, [first, n).
    const int64_t wanted = opt.logits == LogitRows::kAll    ? T
                           : opt.logits == LogitRows::kLast ? std::clamp<int64_t>(opt.last_rows, 0, T)
                                                            : 0;
    const int64_t first = std::clamp<int64_t>(T - wanted - t0, 0, n);
    std::vector<float> part = run_step(ids, opt, trace, first);
    cache.length += n;
    logits.insert(logits.end(), part.begin(), part.end());
  }
  return logits;
}

bool GlmDsaModel::mtp_has_indexer() const { return mtp_ && mtp_->block->full; }

MtpOutput GlmDsaModel::mtp_forward(GlmDsaCache& cache, const MtpCall& call) {
  const GlmDsaConfig& c = config_;
  IS_CHECK(mtp_ != nullptr, "GlmDsaModel::mtp_forward: no MTP layer loaded (ModelOptions::mtp / --mtp)");
  const int64_t T = call.T, d = c.hidden_size, V = c.vocab_size;
  IS_CHECK(T >= 1 && call.hidden && call.next, "GlmDsaModel::mtp_forward: needs T >= 1 rows of hidden states and ids");
  IS_CHECK(call.pos0 >= 0 && call.pos0 + T <= options_.max_tokens, "GlmDsaModel::mtp_forward: rows ", call.pos0, " .. ",
           call.pos0 + T - 1, " outside the cache capacity ", options_.max_tokens);
  IS_CHECK(T <= options_.max_step_rows, "GlmDsaModel::mtp_forward: ", T, " rows > max_step_rows ",
           options_.max_step_rows);
  IS_CHECK(call.logit_rows >= 0 && call.logit_rows <= T, "GlmDsaModel::mtp_forward: logit_rows ", call.logit_rows,
           " outside [0, ", T, "]");
  for (int64_t t = 0; t < T; ++t)
    IS_CHECK(call.next[t] >= 0 && call.next[t] < V, "GlmDsaModel::mtp_forward: token id ", call.next[t], " at row ", t,
             " is outside the vocabulary [0, ", V, ")");
  const bool own = call.sets == nullptr;
  IS_CHECK(own ? mtp_->block->full : call.set_width >= 1, "GlmDsaModel::mtp_forward: ",
           own ? "the MTP layer has no indexer of its own: give it sets to attend over" : "set_width must be >= 1");
  if (!own)
    for (int64_t t = 0; t < T; ++t)
      for (int j = 0; j < call.set_width; ++j) {
        const int32_t p = call.sets[t * call.set_width + j];
        IS_CHECK(p >= -1 && p <= call.pos0 + t, "GlmDsaModel::mtp_forward: set entry ", p, " of row ", t,
                 " (position ", call.pos0 + t, ") is not an earlier position");
      }
  ensure_pages(cache, call.pos0 + T);

  backend::Backend& be = *be_;
  Work& w = *work_;
  step_.B = 1;
  step_.T = T;
  step_.q_start = {call.pos0};
  step_.max_pages = static_cast<int>(cache.pages.size());
  step_.table_host = cache.pages;
  backend::upload_step(be, step_, step_buffer_);
  w.ensure(be, c, T);
  const Tensor ids = w.ids.rows(0, T), h = w.h.rows(0, T), x = w.x.rows(0, T), y = w.y.rows(0, T);
  auto norm = [&](const Tensor& in, const Tensor& out, const Tensor& wt) {
    backend::NormArgs a;
    a.x = in;
    a.y = out;
    a.weight = wt;
    a.rows = T;
    a.n = a.ld_x = a.ld_y = d;
    a.eps = c.rms_norm_eps;
    be.rms_norm(a);
  };
  // u = eh_proj . [enorm(embed(next)) ; hnorm(hidden)], as two products over the column halves.
  be.mark(Region::kEmbed);
  be.upload(ids, call.next);
  be.embed(embed_, ids, x);
  norm(x, x, mtp_->enorm);
  be.upload(y, call.hidden);
  norm(y, y, mtp_->hnorm);
  be.mark(Region::kAttnProj);
  be.linear(x, mtp_->eh_e, h);
  be.linear(y, mtp_->eh_h, x);
  be.add(h, x);

  share::DsaStack& st = *mtp_->stack;
  st.begin_step(step_);
  Tensor physical;
  if (!own) {
    const int K = call.set_width;
    if (!w.sets_logical.defined() || w.sets_logical.numel() < T * K) {
      w.sets_logical = be.alloc(DType::kI32, {T * K});
      w.sets_physical = be.alloc(DType::kI32, {T * K});
    }
    const Tensor lg = w.sets_logical.rows(0, T * K).reshape({T, K});
    physical = w.sets_physical.rows(0, T * K).reshape({T, K});
    be.upload(lg, call.sets);
    be.to_physical(step_, lg, physical);
  }
  const ForwardOptions plain;
  run_layer(*mtp_->block, *mtp_->latent, st, 0, true, nullptr, own ? nullptr : &physical, plain, nullptr, 0);

  MtpOutput out;
  norm(h, x, mtp_->shared_norm);
  out.g.resize(static_cast<size_t>(T * d));
  be.download(out.g.data(), x);
  if (call.logit_rows > 0) {
    be.mark(Region::kLmHead);
    const int64_t n = call.logit_rows;
    Tensor logits = be.alloc(DType::kF32, {n, V});
    be.linear(w.x.rows(T - n, T), lm_head_, logits);
    out.logits.resize(static_cast<size_t>(n * V));
    be.download(out.logits.data(), logits);
  }
  if (own) {
    const Tensor& lg = st.topk_logical(0);
    out.topk.resize(static_cast<size_t>(lg.numel()));
    be.download(out.topk.data(), lg);
    out.indexer_ran = true;
  }
  return out;
}

std::vector<float> GlmDsaModel::decode(std::span<GlmDsaCache* const> caches, std::span<const int32_t> tokens) {
  const GlmDsaConfig& c = config_;
  const auto B = static_cast<int>(caches.size());
  IS_CHECK(B >= 1 && tokens.size() == caches.size(), "GlmDsaModel::decode: ", tokens.size(), " tokens for ", B,
           " sequences");
  for (int b = 0; b < B; ++b) {
    IS_CHECK(caches[static_cast<size_t>(b)] != nullptr, "GlmDsaModel::decode: sequence ", b, " is null");
    IS_CHECK(tokens[static_cast<size_t>(b)] >= 0 && tokens[static_cast<size_t>(b)] < c.vocab_size,
             "GlmDsaModel::decode: token id ", tokens[static_cast<size_t>(b)], " of sequence ", b,
             " is outside the vocabulary [0, ", c.vocab_size, ")");
    for (int j = 0; j < b; ++j)
      IS_CHECK(caches[static_cast<size_t>(j)] != caches[static_cast<size_t>(b)], "GlmDsaModel::decode: sequence ", b,
               " appears twice in the batch");
  }
  int max_pages = 0;
  int64_t max_len = 0;
  for (GlmDsaCache* cc : caches) {
    ensure_pages(*cc, cc->length + 1);
    max_pages = std::max(max_pages, static_cast<int>(cc->pages.size()));
    max_len = std::max(max_len, cc->length + 1);
  }
  const bool graphs = options_.graphs && be_->can_capture() && !be_->profiling();
  int64_t bucket = 0;
  if (graphs) {
    // Fixed shapes for replay: the whole pool's page-table width and the length rounded up.
    max_pages = static_cast<int>(pool_->total());
    bucket = std::min(pool_->total() * kPageTokens,
                      (max_len + options_.graph_bucket - 1) / options_.graph_bucket * options_.graph_bucket);
  }
  step_.B = B;
  step_.T = 1;
  step_.q_start.assign(static_cast<size_t>(B), 0);
  step_.max_pages = max_pages;
  step_.table_host.assign(static_cast<size_t>(B) * max_pages, -1);
  for (int b = 0; b < B; ++b) {
    const GlmDsaCache& cc = *caches[static_cast<size_t>(b)];
    step_.q_start[static_cast<size_t>(b)] = cc.length;
    std::copy(cc.pages.begin(), cc.pages.end(), step_.table_host.begin() + static_cast<int64_t>(b) * max_pages);
  }
  backend::upload_step(*be_, step_, step_buffer_);
  if (graphs) step_.max_len = bucket;  // kernels mask every key past a sequence's own length
  Work& w = *work_;
  w.ensure(*be_, c, B);
  if (!w.logits.defined() || w.logits.dim(0) < B) w.logits = be_->alloc(DType::kF32, {std::max(B, 8), c.vocab_size});
  const Tensor ids = w.ids.rows(0, B);
  be_->upload(ids, tokens.data());
  const Tensor logits = w.logits.rows(0, B);
  auto enqueue = [&] {
    run_layers(ids, {}, nullptr);
    lm_head(0, B, logits);
  };
  if (!graphs) {
    enqueue();
  } else {
    Graph& g = graphs_[{B, bucket}];
    const auto sig = graph_signature();
    if (g.id >= 0 && g.signature == sig) {
      be_->replay(g.id);
      stack_->count_replayed_step();
    } else if (g.signature == sig) {
      // Warmed up with these buffers: capture the step (nothing runs while capturing), replay it.
      be_->begin_capture();
      try {
        enqueue();
      } catch (...) {
        try {
          (void)be_->end_capture();
        } catch (...) {
        }
        throw;
      }
      g.id = be_->end_capture();
      be_->replay(g.id);
    } else {
      // First step with this shape (or the buffers moved): run eagerly, so every buffer exists.
      enqueue();
      g.id = -1;
      g.signature = graph_signature();
    }
  }
  std::vector<float> out(static_cast<size_t>(B * c.vocab_size));
  be_->download(out.data(), logits);
  for (GlmDsaCache* cc : caches) cc->length += 1;
  return out;
}

void GlmDsaModel::fill_random(GlmDsaCache& cache, int64_t tokens, uint64_t seed) {
  const GlmDsaConfig& c = config_;
  IS_CHECK(tokens >= 0, "fill_random: tokens = ", tokens);
  ensure_pages(cache, cache.length + tokens);
  const float amp = 1.7320508f;  // uniform with std 1, like normalised latents and keys
  backend::Step s;
  Tensor buf;
  const int64_t chunk = 8192;
  Tensor lat = be_->alloc(DType::kF32, {chunk, c.latent_dim()});
  Tensor key = be_->alloc(DType::kF32, {chunk, c.index_head_dim});
  uint64_t n = 0;
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t rows = std::min(chunk, tokens - t0);
    s.B = 1;
    s.T = rows;
    s.q_start = {cache.length + t0};
    s.max_pages = static_cast<int>(cache.pages.size());
    s.table_host = cache.pages;
    backend::upload_step(*be_, s, buf);
    for (int i = 0; i < c.num_layers; ++i) {
      const Tensor l = lat.rows(0, rows);
      be_->fill_uniform(l, mix_seed(seed, ++n), amp);
      be_->latent_write(*latent_[static_cast<size_t>(i)], s, l);
      if (c.schedule.is_full(i)) {
        const Tensor k = key.rows(0, rows);
        be_->fill_uniform(k, mix_seed(seed, ++n), amp);
        stack_->append_keys(i, s, k);
      }
    }
  }
  be_->synchronize();
  cache.length += tokens;
}

}  // namespace indexshare::model

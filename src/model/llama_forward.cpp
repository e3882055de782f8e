// LlamaModel::forward: the ops of every layer as phases of one thread team (llama_model.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_team.h"
#include "model/llama_model.h"
#include "ops/attention_kernels.h"
#include "ops/norm.h"
#include "ops/quant.h"
#include "ops/quant_matmul.h"

namespace indexshare::model {
namespace {

constexpr int64_t kRowBlock = 64;       // rows per product unit (their activations stay in L2)
constexpr int64_t kColBlock = 64;       // output columns per product unit (wo, gate/up, down)
constexpr int64_t kHeadColBlock = 512;  // LM-head columns per unit
constexpr int64_t kNormRows = 16;       // rows per norm / quantisation unit
constexpr int64_t kAttnRows = 16;       // query rows per prefill attention tile
constexpr int64_t kSplitUnits = 16;     // attention: split the keys until about this many units
constexpr int64_t kMinChunk = 256;      // fewest keys per chunk when splitting

// The activations of one input (attn_norm output, attention output, ...) in the format of each
// weight type that multiplies it, so the Q, K and V products (gate and up) share one
// quantisation. Slots are prepared once per forward for every type any layer uses there.
struct SharedActs {
  static constexpr int kSlots = 5;  // f32, f16, bf16, q4_1, q8_0
  ops::QuantizedActivations a[kSlots];
  GgmlType type[kSlots] = {};
  int n = 0;
  void prepare(const std::vector<const QMatrix*>& ms, int64_t M, int64_t K) {
    n = 0;
    for (const QMatrix* m : ms) {
      if (find(m->type) >= 0) continue;
      IS_CHECK(n < kSlots, "llama forward: too many weight types for one input");
      type[n] = m->type;
      ops::prepare_activations(m->type, M, K, a[n++]);
    }
  }
  int find(GgmlType t) const {
    for (int i = 0; i < n; ++i) {
      if (type[i] == t) return i;
    }
    return -1;
  }
  // Quantises rows [m0, m1) of x for the types of the given matrices.
  void quantize(std::initializer_list<const QMatrix*> ms, const float* x, int64_t ld, int64_t m0, int64_t m1) {
    bool done[kSlots] = {};
    for (const QMatrix* m : ms) {
      const int i = find(m->type);
      if (done[i]) continue;
      done[i] = true;
      ops::quantize_activations(x, ld, m0, m1, a[i]);
    }
  }
  const ops::QuantizedActivations& of(const QMatrix& m) const { return a[find(m.type)]; }
};

// Scratch of one forward, kept per calling thread and reused (sizes only grow).
struct Workspace {
  std::vector<float> x;         // [T, d] residual stream
  std::vector<float> xn;        // [T, d] normalised input of the current op
  std::vector<float> q;         // [T, H * Dh] after RoPE
  std::vector<float> kn, vn;    // [T, H_kv * Dh] new K / V rows before the f16 cache
  std::vector<float> att;       // [T, H * Dh] attention output
  std::vector<float> act;       // [T, F] SwiGLU output
  std::vector<float> rc, rs;    // [T, Dh / 2] RoPE cos / sin per position
  std::vector<float> part_o;    // [chunks, T, H * Dh] per-chunk attention outputs
  std::vector<float> part_lse;  // [chunks, T, H] their log-sum-exps
  SharedActs qkv, gate_up, wo, down, head;
};

// Per-thread scratch of the units.
struct UnitScratch {
  std::vector<float> up;  // [T, kColBlock]
  std::vector<ops::detail::AttnQuery> queries;
};

// y = x / sqrt(mean(x^2) + eps) * w for one row, in llama.cpp's arithmetic: the squares
// summed in double, the scale 1 / sqrtf(mean + eps) in f32, then (x * scale) * w.
void rms_norm_row(const float* x, const float* w, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

// Adjacent-pair rotation of one head by a cos / sin table, with llama.cpp's rounding:
// y0 = fma(x0, c, -(x1 s)), y1 = fma(x1, c, x0 s).
__attribute__((target("avx2,fma"))) void rotate_pairs_fma(float* x, const float* c, const float* s, int64_t half) {
  for (int64_t j = 0; j < half; ++j) {
    const float a = x[2 * j], b = x[2 * j + 1];
    x[2 * j] = std::fma(a, c[j], -(b * s[j]));
    x[2 * j + 1] = std::fma(b, c[j], a * s[j]);
  }
}
void rotate_pairs_libm(float* x, const float* c, const float* s, int64_t half) {
  for (int64_t j = 0; j < half; ++j) {
    const float a = x[2 * j], b = x[2 * j + 1];
    x[2 * j] = std::fma(a, c[j], -(b * s[j]));
    x[2 * j + 1] = std::fma(b, c[j], a * s[j]);
  }
}
void rotate_pairs(float* x, const float* c, const float* s, int64_t half) {
  if (use_avx2()) {
    rotate_pairs_fma(x, c, s, half);
  } else {
    rotate_pairs_libm(x, c, s, half);
  }
}

template <class T>
void grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One forward call: shapes, buffers and the phases.
class Forward {
 public:
  // cache may be null for a head-only call (output_logits); tokens may be null when the caller
  // fills x() itself (forward_layers).
  Forward(const LlamaConfig& c, const LlamaWeights& w, KvCache* cache, Workspace& ws, const int32_t* tokens,
          int64_t T, int64_t pos0, float* logits, bool all_logits)
      : c_(c), w_(w), cache_(cache), ws_(ws), tokens_(tokens), T_(T), logits_(logits) {
    d_ = c.d_model;
    H_ = c.n_heads;
    Hkv_ = c.n_kv_heads;
    Dh_ = c.head_dim;
    qd_ = H_ * Dh_;
    kd_ = Hkv_ * Dh_;
    F_ = c.ffn_dim;
    pos0_ = pos0;
    L_ = pos0_ + T;
    f16_ = cache != nullptr && cache->type == KvType::kF16;
    n_mb_ = ceil_div(T, kRowBlock);
    first_ = all_logits ? 0 : T - 1;
    set_attention_split();
    allocate();
  }

  float* x() { return ws_.x.data(); }

  // The token embeddings into x (when tokens were given) and the RoPE tables of the rows.
  void embed(ThreadTeam& team) {
    const int64_t half = Dh_ / 2;
    team.for_each(ceil_div(T_, kNormRows), [&](int64_t u) {
      const int64_t row_bytes = ggml_row_bytes(w_.token_embd.type, d_);
      const auto* base = static_cast<const uint8_t*>(w_.token_embd.data);
      for (int64_t t = u * kNormRows; t < std::min(T_, (u + 1) * kNormRows); ++t) {
        if (tokens_) ops::dequantize_row(w_.token_embd.type, base + tokens_[t] * row_bytes, ws_.x.data() + t * d_, d_);
        // RoPE angles as llama.cpp computes them: theta_j = pos * scale^j by a running f32
        // product, cos / sin in f32.
        float theta = static_cast<float>(pos0_ + t);
        for (int64_t j = 0; j < half; ++j) {
          ws_.rc[static_cast<size_t>(t * half + j)] = std::cos(theta);
          ws_.rs[static_cast<size_t>(t * half + j)] = std::sin(theta);
          theta *= theta_scale_;
        }
      }
    });
  }

  // attn_norm, then Q, K, V with RoPE; K and V land in the cache.
  void pre_attention(ThreadTeam& team, int l) {
    const LlamaLayerWeights& W = w_.layers[static_cast<size_t>(l)];
    norm_rows(team, W.attn_norm, ws_.qkv, {&W.wq, &W.wk, &W.wv});
    const int64_t heads = H_ + 2 * Hkv_;
    team.for_each(n_mb_ * heads, [&](int64_t u) {
      const int64_t m0 = (u / heads) * kRowBlock, m1 = std::min(T_, m0 + kRowBlock);
      const int64_t j = u % heads;
      if (j < H_) {
        product(W.wq, ws_.qkv.of(W.wq), ws_.q.data(), qd_, m0, m1, j * Dh_, (j + 1) * Dh_, false);
        rope_rows(ws_.q.data() + j * Dh_, qd_, m0, m1);
        return;
      }
      const bool is_k = j < H_ + Hkv_;
      const int64_t g = is_k ? j - H_ : j - H_ - Hkv_;
      float* y = f16_ ? (is_k ? ws_.kn : ws_.vn).data() : cache_f32(l, is_k) + pos0_ * kd_;
      const QMatrix& Wm = is_k ? W.wk : W.wv;
      product(Wm, ws_.qkv.of(Wm), y, kd_, m0, m1, g * Dh_, (g + 1) * Dh_, false);
      if (is_k) rope_rows(y + g * Dh_, kd_, m0, m1);
      if (f16_) {
        uint16_t* dst = cache_f16(l, is_k) + pos0_ * kd_ + g * Dh_;
        for (int64_t m = m0; m < m1; ++m) {
          f32_to_f16(std::span<const float>(y + m * kd_ + g * Dh_, static_cast<size_t>(Dh_)),
                     std::span<uint16_t>(dst + m * kd_, static_cast<size_t>(Dh_)));
        }
      }
    });
  }

  AttentionCall call(int l) const {
    AttentionCall a;
    a.layer = l;
    a.T = T_;
    a.pos0 = pos0_;
    a.L = L_;
    a.x_norm = ws_.xn.data();
    a.q = ws_.q.data();
    a.kv_type = cache_->type;
    if (f16_) {
      a.k16 = cache_->k16[static_cast<size_t>(l)].data();
      a.v16 = cache_->v16[static_cast<size_t>(l)].data();
    } else {
      a.k = cache_->k[static_cast<size_t>(l)].data();
      a.v = cache_->v[static_cast<size_t>(l)].data();
    }
    a.out = ws_.att.data();
    a.scale = scale();
    return a;
  }

  // Dense causal attention: units are (row tile, set of gspan_ KV groups, key chunk).
  void attention(ThreadTeam& team, int l) {
    const int64_t group = H_ / Hkv_;
    const int64_t gsets = Hkv_ / gspan_;
    const AttentionCall a = call(l);
    team.for_each(tiles_ * gsets * chunks_, [&](int64_t u) {
      const int64_t c = u % chunks_;
      const int64_t gs = (u / chunks_) % gsets;
      // Last row tiles first: they see the most keys, and claiming the longest units first
      // keeps the threads' finishing times close.
      const int64_t tile = tiles_ - 1 - u / chunks_ / gsets;
      const int64_t t0 = tile * tile_rows_, t1 = std::min(T_, t0 + tile_rows_);
      const int64_t k0 = c * chunk_;  // first key of the chunk
      const int64_t k_end = std::min({L_, pos0_ + t1, k0 + chunk_});
      thread_local UnitScratch us;
      us.queries.clear();
      // Group-major: the queries of one KV group are consecutive.
      for (int64_t g = gs * gspan_; g < (gs + 1) * gspan_; ++g) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t seen = std::clamp<int64_t>(std::min(L_, pos0_ + t + 1) - k0, 0, chunk_);
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          ops::detail::AttnQuery q;
          q.q = ws_.q.data() + (t * H_ + h) * Dh_;
          if (chunks_ == 1) {
            q.out = ws_.att.data() + (t * H_ + h) * Dh_;
          } else {
            q.out = ws_.part_o.data() + ((c * T_ + t) * H_ + h) * Dh_;
            q.lse = ws_.part_lse.data() + (c * T_ + t) * H_ + h;
          }
          q.n_keys = seen;
          q.group = static_cast<int>(g);
          us.queries.push_back(q);
        }
      }
      }
      ops::detail::AttnKeys keys;
      const int64_t n = std::max<int64_t>(0, k_end - k0);
      if (n > 0) {
        if (f16_) {
          keys.k16 = a.k16 + k0 * kd_;
          keys.v16 = a.v16 + k0 * kd_;
        } else {
          keys.k = a.k + k0 * kd_;
          keys.v = a.v + k0 * kd_;
        }
      }
      keys.k_stride = kd_;
      keys.v_stride = kd_;
      keys.k_group = Dh_;
      keys.v_group = Dh_;
      keys.n = n;
      ops::detail::attend_tile(us.queries.data(), static_cast<int>(us.queries.size()), keys,
                               static_cast<int>(Dh_), static_cast<int>(Dh_), a.scale);
    });
  }

  // Attention output (merging key chunks) -> wo (+ residual) -> ffn_norm -> gate/up with
  // SwiGLU -> down (+ residual).
  void post_attention(ThreadTeam& team, int l, bool merge) {
    const LlamaLayerWeights& W = w_.layers[static_cast<size_t>(l)];
    team.for_each(ceil_div(T_, kNormRows), [&](int64_t u) {
      const int64_t m0 = u * kNormRows, m1 = std::min(T_, m0 + kNormRows);
      if (merge) merge_chunks(m0, m1);
      ws_.wo.quantize({&W.wo}, ws_.att.data(), qd_, m0, m1);
    });
    const int64_t dcols = ceil_div(d_, kColBlock);
    team.for_each(n_mb_ * dcols, [&](int64_t u) {
      const int64_t m0 = (u / dcols) * kRowBlock, m1 = std::min(T_, m0 + kRowBlock);
      const int64_t n0 = (u % dcols) * kColBlock;
      product(W.wo, ws_.wo.of(W.wo), ws_.x.data(), d_, m0, m1, n0, std::min(d_, n0 + kColBlock), true);
    });
    norm_rows(team, W.ffn_norm, ws_.gate_up, {&W.w_gate, &W.w_up});
    const int64_t fcols = ceil_div(F_, kColBlock);
    team.for_each(n_mb_ * fcols, [&](int64_t u) {
      const int64_t m0 = (u / fcols) * kRowBlock, m1 = std::min(T_, m0 + kRowBlock);
      const int64_t n0 = (u % fcols) * kColBlock, n1 = std::min(F_, n0 + kColBlock);
      thread_local UnitScratch us;
      grow(us.up, T_ * kColBlock);
      product(W.w_gate, ws_.gate_up.of(W.w_gate), ws_.act.data(), F_, m0, m1, n0, n1, false);
      // up into a [T, kColBlock] scratch: the weight rows from n0, written from column 0.
      QMatrix up = W.w_up;
      up.data = static_cast<const uint8_t*>(up.data) + n0 * ggml_row_bytes(up.type, up.K);
      up.N = n1 - n0;
      product(up, ws_.gate_up.of(W.w_up), us.up.data(), kColBlock, m0, m1, 0, n1 - n0, false);
      for (int64_t m = m0; m < m1; ++m) {
        float* g = ws_.act.data() + m * F_ + n0;
        ops::swiglu(g, us.up.data() + m * kColBlock, g, n1 - n0);
      }
    });
    team.for_each(ceil_div(T_, kNormRows), [&](int64_t u) {
      const int64_t m0 = u * kNormRows;
      ws_.down.quantize({&W.w_down}, ws_.act.data(), F_, m0, std::min(T_, m0 + kNormRows));
    });
    team.for_each(n_mb_ * dcols, [&](int64_t u) {
      const int64_t m0 = (u / dcols) * kRowBlock, m1 = std::min(T_, m0 + kRowBlock);
      const int64_t n0 = (u % dcols) * kColBlock;
      product(W.w_down, ws_.down.of(W.w_down), ws_.x.data(), d_, m0, m1, n0, std::min(d_, n0 + kColBlock), true);
    });
  }

  // output_norm and the LM head for rows [first, T).
  void head(ThreadTeam& team) {
    if (!logits_) return;
    const int64_t rows = T_ - first_;
    const float* x = ws_.x.data() + first_ * d_;
    team.for_each(ceil_div(rows, kNormRows), [&](int64_t u) {
      const int64_t m0 = u * kNormRows, m1 = std::min(rows, m0 + kNormRows);
      for (int64_t m = m0; m < m1; ++m) {
        rms_norm_row(x + m * d_, w_.output_norm, ws_.xn.data() + m * d_, d_, c_.rms_eps);
      }
      ws_.head.quantize({&w_.output}, ws_.xn.data(), d_, m0, m1);
    });
    const int64_t cols = ceil_div(c_.vocab, kHeadColBlock);
    team.for_each(ceil_div(rows, kRowBlock) * cols, [&](int64_t u) {
      const int64_t m0 = (u / cols) * kRowBlock, m1 = std::min(rows, m0 + kRowBlock);
      const int64_t n0 = (u % cols) * kHeadColBlock, n1 = std::min<int64_t>(c_.vocab, n0 + kHeadColBlock);
      ops::QMatmulParams p;
      p.w = w_.output.data;
      p.type = w_.output.type;
      p.N = w_.output.N;
      p.K = w_.output.K;
      p.y = logits_;
      p.ldy = c_.vocab;
      ops::quant_matmul_block(p, ws_.head.of(w_.output), m0, m1, n0, n1, false);
    });
  }

  float scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh_))); }
  int64_t chunks() const { return chunks_; }

 private:
  // Attention work split: row tiles of tile_rows_, and the keys in chunks_ chunks of chunk_
  // (a multiple of the kernel's key block) when there are few tiles (decode). A function of
  // T and L only, so the result does not depend on the thread count.
  void set_attention_split() {
    tile_rows_ = T_ == 1 ? 1 : kAttnRows;
    tiles_ = ceil_div(T_, tile_rows_);
    chunks_ = 1;
    gspan_ = 1;
    if (tiles_ * Hkv_ < kSplitUnits) {
      // Few rows (decode): a unit takes every KV group of its key chunk, so it streams whole
      // cache rows, and the keys are split instead.
      gspan_ = Hkv_;
      chunks_ = std::clamp<int64_t>(ceil_div(kSplitUnits, tiles_ * (Hkv_ / gspan_)), 1, ceil_div(L_, kMinChunk));
    }
    const int64_t kb = ops::detail::kKeyBlock;
    chunk_ = chunks_ == 1 ? L_ : ceil_div(ceil_div(L_, chunks_), kb) * kb;
    chunks_ = ceil_div(L_, chunk_);
  }

  void allocate() {
    const int64_t T = T_;
    grow(ws_.x, T * d_);
    grow(ws_.xn, T * d_);
    grow(ws_.q, T * qd_);
    if (f16_) {
      grow(ws_.kn, T * kd_);
      grow(ws_.vn, T * kd_);
    }
    grow(ws_.att, T * qd_);
    grow(ws_.act, T * F_);
    grow(ws_.rc, T * (Dh_ / 2));
    grow(ws_.rs, T * (Dh_ / 2));
    if (chunks_ > 1) {
      grow(ws_.part_o, chunks_ * T * qd_);
      grow(ws_.part_lse, chunks_ * T * H_);
    }
    std::vector<const QMatrix*> qkv, gate_up, wo, down;
    for (const LlamaLayerWeights& W : w_.layers) {
      qkv.insert(qkv.end(), {&W.wq, &W.wk, &W.wv});
      gate_up.insert(gate_up.end(), {&W.w_gate, &W.w_up});
      wo.push_back(&W.wo);
      down.push_back(&W.w_down);
    }
    ws_.qkv.prepare(qkv, T, d_);
    ws_.gate_up.prepare(gate_up, T, d_);
    ws_.wo.prepare(wo, T, qd_);
    ws_.down.prepare(down, T, F_);
    if (logits_) ws_.head.prepare({&w_.output}, T - first_, d_);
    theta_scale_ = std::pow(c_.rope_theta, -2.0f / static_cast<float>(Dh_));
  }

  float* cache_f32(int l, bool k) { return (k ? cache_->k : cache_->v)[static_cast<size_t>(l)].data(); }
  uint16_t* cache_f16(int l, bool k) { return (k ? cache_->k16 : cache_->v16)[static_cast<size_t>(l)].data(); }

  // xn = rms_norm(x) * weight, quantised into `acts`, by row blocks.
  void norm_rows(ThreadTeam& team, const float* weight, SharedActs& acts, std::initializer_list<const QMatrix*> ms) {
    team.for_each(ceil_div(T_, kNormRows), [&](int64_t u) {
      const int64_t m0 = u * kNormRows, m1 = std::min(T_, m0 + kNormRows);
      for (int64_t m = m0; m < m1; ++m) rms_norm_row(ws_.x.data() + m * d_, weight, ws_.xn.data() + m * d_, d_, c_.rms_eps);
      acts.quantize(ms, ws_.xn.data(), d_, m0, m1);
    });
  }

  // y[m, n] (+)= (activations times W) for m in [m0, m1), n in [n0, n1).
  static void product(const QMatrix& W, const ops::QuantizedActivations& a, float* y, int64_t ldy, int64_t m0,
                      int64_t m1, int64_t n0, int64_t n1, bool accumulate) {
    ops::QMatmulParams p;
    p.w = W.data;
    p.type = W.type;
    p.N = W.N;
    p.K = W.K;
    p.y = y;
    p.ldy = ldy;
    ops::quant_matmul_block(p, a, m0, m1, n0, n1, accumulate);
  }

  // Rotates the adjacent pairs of one head (Dh floats at x + m * ld) for rows [m0, m1).
  void rope_rows(float* x, int64_t ld, int64_t m0, int64_t m1) const {
    const int64_t half = Dh_ / 2;
    for (int64_t m = m0; m < m1; ++m) {
      rotate_pairs(x + m * ld, ws_.rc.data() + m * half, ws_.rs.data() + m * half, half);
    }
  }

  // att rows [m0, m1) = the key chunks' outputs weighted by exp(lse_c - max lse).
  void merge_chunks(int64_t m0, int64_t m1) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    for (int64_t t = m0; t < m1; ++t) {
      for (int64_t h = 0; h < H_; ++h) {
        float mx = kNegInf;
        bool nan = false;
        for (int64_t c = 0; c < chunks_; ++c) {
          const float v = ws_.part_lse[static_cast<size_t>((c * T_ + t) * H_ + h)];
          nan = nan || std::isnan(v);
          mx = std::max(mx, v);
        }
        float* out = ws_.att.data() + (t * H_ + h) * Dh_;
        if (nan || mx == kNegInf) {
          std::fill(out, out + Dh_, nan ? std::numeric_limits<float>::quiet_NaN() : 0.0f);
          continue;
        }
        std::fill(out, out + Dh_, 0.0f);
        float sum = 0.0f;
        for (int64_t c = 0; c < chunks_; ++c) {
          const float lse = ws_.part_lse[static_cast<size_t>((c * T_ + t) * H_ + h)];
          if (lse == kNegInf) continue;
          const float wgt = std::exp(lse - mx);
          sum += wgt;
          const float* o = ws_.part_o.data() + ((c * T_ + t) * H_ + h) * Dh_;
          for (int64_t i = 0; i < Dh_; ++i) out[i] += wgt * o[i];
        }
        const float inv = 1.0f / sum;
        for (int64_t i = 0; i < Dh_; ++i) out[i] *= inv;
      }
    }
  }

  const LlamaConfig& c_;
  const LlamaWeights& w_;
  KvCache* cache_;
  Workspace& ws_;
  const int32_t* tokens_;
  int64_t T_;
  float* logits_;
  int64_t d_, H_, Hkv_, Dh_, qd_, kd_, F_, pos0_, L_, n_mb_, first_;
  int64_t tile_rows_ = 1, tiles_ = 1, chunks_ = 1, chunk_ = 1, gspan_ = 1;
  bool f16_ = false;
  float theta_scale_ = 1.0f;
};


// Runs layers [first, end) of f, preceded by its embedding / RoPE tables and followed by its
// head when asked.
void run(Forward& f, int first, int end, AttentionBackend* backend, bool embed, bool head) {
  // for_each calls: embed 1, per layer 9 (norm, qkv, attention, output, wo, norm, gate/up,
  // down input, down), head 2.
  const int64_t phases = 3 + int64_t{9} * (end - first);
  if (!backend) {
    run_team(phases, [&](ThreadTeam& team) {
      if (embed) f.embed(team);
      for (int l = first; l < end; ++l) {
        f.pre_attention(team, l);
        f.attention(team, l);
        f.post_attention(team, l, f.chunks() > 1);
      }
      if (head) f.head(team);
    });
    return;
  }
  if (embed) run_team(phases, [&](ThreadTeam& team) { f.embed(team); });
  for (int l = first; l < end; ++l) {
    run_team(phases, [&](ThreadTeam& team) { f.pre_attention(team, l); });
    bool merge = false;
    if (!backend->attend(f.call(l))) {
      run_team(phases, [&](ThreadTeam& team) { f.attention(team, l); });
      merge = f.chunks() > 1;
    }
    run_team(phases, [&](ThreadTeam& team) { f.post_attention(team, l, merge); });
  }
  if (head) run_team(phases, [&](ThreadTeam& team) { f.head(team); });
}

void check_tokens(const int32_t* tokens, int64_t T, int vocab) {
  for (int64_t t = 0; t < T; ++t) {
    IS_CHECK(tokens[t] >= 0 && tokens[t] < vocab, "llama: token id ", tokens[t], " at position ", t,
             " outside the vocabulary [0, ", vocab, ")");
  }
}

}  // namespace

void LlamaModel::forward(const int32_t* tokens, int64_t T, KvCache& cache, float* logits, bool all_logits,
                         AttentionBackend* backend) const {
  IS_CHECK(T > 0, "llama forward: empty input (no tokens)");
  IS_CHECK(tokens != nullptr, "llama forward: tokens is null");
  IS_CHECK(cache.capacity > 0 && cache.layers() == cfg_.n_layers,
           "llama forward: the KV cache was not reset for this model");
  IS_CHECK(cache.length + T <= cache.capacity, "llama forward: ", cache.length, " cached + ", T,
           " new tokens exceed the cache capacity of ", cache.capacity, " (the model's limit is ",
           cfg_.context_length, ")");
  check_tokens(tokens, T, cfg_.vocab);
  thread_local Workspace ws;
  Forward f(cfg_, w_, &cache, ws, tokens, T, cache.length, logits, all_logits);
  run(f, 0, cfg_.n_layers, backend, true, true);
  cache.length += T;
}

void LlamaModel::embed_tokens(const int32_t* tokens, int64_t T, float* x) const {
  IS_CHECK(T >= 0, "llama embed_tokens: negative row count ", T);
  if (T == 0) return;
  IS_CHECK(tokens != nullptr && x != nullptr, "llama embed_tokens: tokens or x is null");
  check_tokens(tokens, T, cfg_.vocab);
  const int64_t d = cfg_.d_model, row_bytes = ggml_row_bytes(w_.token_embd.type, d);
  for (int64_t t = 0; t < T; ++t) {
    ops::dequantize_row(w_.token_embd.type, static_cast<const uint8_t*>(w_.token_embd.data) + tokens[t] * row_bytes,
                        x + t * d, d);
  }
}

void LlamaModel::forward_layers(int first, int end, float* x_io, int64_t T, int64_t pos0, KvCache& cache,
                                AttentionBackend* backend) const {
  IS_CHECK(0 <= first && first <= end && end <= cfg_.n_layers, "llama forward_layers: layer range [", first, ", ", end,
           ") outside [0, ", cfg_.n_layers, "]");
  IS_CHECK(T > 0, "llama forward_layers: empty input (no rows)");
  IS_CHECK(x_io != nullptr, "llama forward_layers: x is null");
  IS_CHECK(pos0 >= 0, "llama forward_layers: negative pos0 ", pos0);
  IS_CHECK(cache.capacity > 0 && cache.layers() == cfg_.n_layers,
           "llama forward_layers: the KV cache was not reset for this model");
  IS_CHECK(pos0 + T <= cache.capacity, "llama forward_layers: positions ", pos0, " + ", T,
           " rows exceed the cache capacity of ", cache.capacity);
  if (first == end) return;
  thread_local Workspace ws;
  Forward f(cfg_, w_, &cache, ws, nullptr, T, pos0, nullptr, false);
  const size_t n = static_cast<size_t>(T * cfg_.d_model);
  std::copy(x_io, x_io + n, f.x());
  run(f, first, end, backend, true, false);
  std::copy(f.x(), f.x() + n, x_io);
}

void LlamaModel::output_logits(const float* x, int64_t rows, float* logits) const {
  IS_CHECK(rows >= 0, "llama output_logits: negative row count ", rows);
  if (rows == 0) return;
  IS_CHECK(x != nullptr && logits != nullptr, "llama output_logits: x or logits is null");
  thread_local Workspace ws;
  Forward f(cfg_, w_, nullptr, ws, nullptr, rows, 0, logits, true);
  std::copy(x, x + rows * cfg_.d_model, f.x());
  run(f, 0, 0, nullptr, false, true);
}

}  // namespace indexshare::model

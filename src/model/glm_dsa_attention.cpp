#include "model/glm_dsa_attention.h"

#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/indexer.h"
#include "ops/indexer_topk.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "ops/sparse_attention.h"

namespace indexshare::model {
namespace {

// RoPE on dims [offset, offset + c.qk_rope_head_dim) of every head of x [T, H, head_dim] at
// positions p0 + t, then the YaRN magnitude factor on that slice (when not 1).
void rotate(const GlmDsaConfig& c, float* x, int64_t T, int H, int head_dim, int offset, int64_t p0,
            bool interleaved) {
  if (T == 0) return;
  ops::RopeParams rp;
  rp.x = x;
  rp.pos0 = p0;
  rp.T = T;
  rp.H = H;
  rp.head_dim = head_dim;
  rp.rot_offset = offset;
  rp.rot_dim = c.qk_rope_head_dim;
  rp.inv_freq = c.rope_inv_freq.data();
  rp.pairing = interleaved ? ops::RopePairing::kInterleaved : ops::RopePairing::kHalfSplit;
  ops::rope(rp);
  if (c.rope_attention_factor != 1.0f)
    for (int64_t r = 0; r < T * H; ++r)
      for (int i = 0; i < c.qk_rope_head_dim; ++i) x[r * head_dim + offset + i] *= c.rope_attention_factor;
}

void rms_rows(float* x, int64_t rows, int64_t n, int64_t stride, const std::vector<float>& w, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    ops::NormParams np;
    np.x = x + r * stride;
    np.y = x + r * stride;
    np.weight = w.data();
    np.T = 1;
    np.n = n;
    np.eps = eps;
    ops::rms_norm(np);
  }
}

// The lightning indexer of an F layer: appends k_I to the cache and fills io.topk (and scores).
void run_indexer(const GlmDsaConfig& c, const IndexerWeights& W, const std::vector<float>& c_q,
                 LayerCache& cache, const AttentionIo& io) {
  const int64_t T = io.T, L = io.p0 + T;
  const int hi = c.index_n_heads, di = c.index_head_dim, K = c.index_topk;
  std::vector<float> q(static_cast<size_t>(T * hi * di));
  linear(W.wq_b, c_q.data(), T, q.data());
  rotate(c, q.data(), T, hi, di, 0, io.p0, c.indexer_rope_interleave);

  std::vector<float> k(static_cast<size_t>(T * di));
  linear(W.wk, io.x, T, k.data());
  ops::NormParams np;
  np.x = k.data();
  np.y = k.data();
  np.weight = W.k_norm_w.data();
  np.bias = W.k_norm_b.data();
  np.T = T;
  np.n = di;
  np.eps = c.index_k_norm_eps;
  ops::layer_norm(np);
  rotate(c, k.data(), T, 1, di, 0, io.p0, c.indexer_rope_interleave);
  cache.index_k.insert(cache.index_k.end(), k.begin(), k.end());

  std::vector<float> w(static_cast<size_t>(T * hi));
  linear(W.weights_proj, io.x, T, w.data());

  ops::IndexerParams ip;
  ip.q = q.data();
  ip.k = cache.index_k.data();
  ip.weights = w.data();
  ip.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hi)) / std::sqrt(static_cast<double>(di)));
  ip.T = T;
  ip.L = L;
  ip.H = hi;
  ip.D = di;
  ip.q_start = io.p0;
  io.topk->assign(static_cast<size_t>(T * K), -1);
  if (io.scores) {
    io.scores->assign(static_cast<size_t>(T * L), 0.0f);
    ops::indexer_scores(ip, io.scores->data());
  }
  if (io.forced_topk) {
    std::copy_n(io.forced_topk, T * K, io.topk->begin());
  } else {
    ops::IndexerTopkOptions opt;
    opt.k = K;
    ops::indexer_topk(ip, opt, io.topk->data(), nullptr);
  }
}

}  // namespace

void attention_forward(const GlmDsaConfig& c, const LayerWeights& L, bool full, LayerCache& cache,
                       const AttentionIo& io) {
  const int64_t T = io.T, p0 = io.p0, Lk = p0 + T;
  const int H = c.num_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, qkd = c.qk_head_dim();
  const int kvr = c.kv_lora_rank, vd = c.v_head_dim, ld = c.latent_dim(), K = c.index_topk;
  IS_CHECK(static_cast<int64_t>(cache.latent.size()) == p0 * ld, "attention_forward: latent cache holds ",
           cache.latent.size() / static_cast<size_t>(ld), " tokens, expected p0 = ", p0);
  IS_CHECK(full == L.has_indexer, "attention_forward: layer is ", full ? "F" : "S", " but ",
           L.has_indexer ? "has" : "has no", " indexer weights");
  if (T == 0) return;

  // q path
  std::vector<float> c_q(static_cast<size_t>(T * c.q_lora_rank));
  linear(L.q_a, io.x, T, c_q.data());
  rms_rows(c_q.data(), T, c.q_lora_rank, c.q_lora_rank, L.q_a_norm, c.lora_norm_eps);
  std::vector<float> q(static_cast<size_t>(T * H * qkd));
  linear(L.q_b, c_q.data(), T, q.data());
  rotate(c, q.data(), T, H, qkd, nope, p0, c.mla_rope_interleave);

  // kv path: the new latents, appended to the cache
  std::vector<float> lat(static_cast<size_t>(T * ld));
  linear(L.kv_a, io.x, T, lat.data());
  rms_rows(lat.data(), T, kvr, ld, L.kv_a_norm, c.lora_norm_eps);
  rotate(c, lat.data(), T, 1, ld, kvr, p0, c.mla_rope_interleave);
  cache.latent.insert(cache.latent.end(), lat.begin(), lat.end());

  // index set
  if (full) {
    run_indexer(c, L.indexer, c_q, cache, io);
  } else {
    IS_CHECK(static_cast<int64_t>(io.topk->size()) == T * K,
             "attention_forward: shared (S) layer has no top-k from a previous full layer");
  }

  // absorbed queries: q_lat[t, h] = [W_UK[h]^T q_nope[t, h] ; q_pe[t, h]]
  const float* kvb = L.kv_b.w.data();  // [H * (nope + v), kvr]
  std::vector<float> q_lat(static_cast<size_t>(T * H * ld));
  parallel_for(T * H, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t h = r % H;
      const float* qn = q.data() + r * qkd;
      float* dst = q_lat.data() + r * ld;
      for (int i = 0; i < kvr; ++i) dst[i] = 0.0f;
      for (int d = 0; d < nope; ++d) {
        const float* wrow = kvb + (h * (nope + vd) + d) * kvr;
        const float qd = qn[d];
        for (int i = 0; i < kvr; ++i) dst[i] += qd * wrow[i];
      }
      for (int i = 0; i < rope; ++i) dst[kvr + i] = qn[nope + i];
    }
  });

  std::vector<float> o_lat(static_cast<size_t>(T * H * kvr));
  ops::SparseMlaParams sp;
  sp.q = q_lat.data();
  sp.kv = cache.latent.data();
  sp.indices = io.topk->data();
  sp.T = T;
  sp.L = Lk;
  sp.H = H;
  sp.Dqk = ld;
  sp.Dv = kvr;
  sp.K = K;
  sp.scale = c.attn_scale;
  sp.out = o_lat.data();
  ops::sparse_mla(sp);

  // o[t, h, :] = W_UV[h] o_lat[t, h]
  std::vector<float> o(static_cast<size_t>(T * H * vd));
  parallel_for(T * H, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t h = r % H;
      const float* ol = o_lat.data() + r * kvr;
      for (int v = 0; v < vd; ++v) {
        const float* wrow = kvb + (h * (nope + vd) + nope + v) * kvr;
        float acc = 0.0f;
        for (int i = 0; i < kvr; ++i) acc += wrow[i] * ol[i];
        o[static_cast<size_t>(r * vd + v)] = acc;
      }
    }
  });
  linear(L.o, o.data(), T, io.out);
}

}  // namespace indexshare::model

#include "share/layer_stack.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "ops/indexer.h"
#include "ops/indexer_topk.h"
#include "ops/sparse_attention.h"

namespace indexshare::share {

LayerStack::LayerStack(Schedule schedule, const LayerStackOptions& opt, std::vector<DsaLayer*> layers)
    : schedule_(std::move(schedule)), opt_(opt), layers_(std::move(layers)) {
  IS_CHECK(static_cast<int>(layers_.size()) == schedule_.num_layers(), "layers: ", layers_.size(),
           " given but the schedule has ", schedule_.num_layers());
  for (size_t i = 0; i < layers_.size(); ++i) IS_CHECK(layers_[i] != nullptr, "layers[", i, "] is null");
  IS_CHECK(opt_.index_heads >= 1, "index_heads = ", opt_.index_heads, " must be >= 1");
  IS_CHECK(opt_.index_dim >= 1, "index_dim = ", opt_.index_dim, " must be >= 1");
  IS_CHECK(opt_.topk >= 1, "topk = ", opt_.topk, " must be >= 1");
  IS_CHECK(opt_.max_context >= 1, "max_context = ", opt_.max_context, " must be >= 1");
  IS_CHECK(opt_.index_scale >= 0 && std::isfinite(opt_.index_scale), "index_scale = ", opt_.index_scale,
           " must be finite and >= 0");
  if (opt_.index_scale == 0)
    opt_.index_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(opt_.index_heads) * opt_.index_dim));
  index_k_.resize(layers_.size());
  for (int i = 0; i < schedule_.num_layers(); ++i)
    if (schedule_.is_full(i))
      index_k_[static_cast<size_t>(i)].assign(static_cast<size_t>(opt_.max_context) * static_cast<size_t>(opt_.index_dim),
                                              0.0f);
}

size_t LayerStack::indexer_state_bytes(int layer) const {
  IS_CHECK(layer >= 0 && layer < schedule_.num_layers(), "layer ", layer, " out of range [0, ",
           schedule_.num_layers(), ")");
  return index_k_[static_cast<size_t>(layer)].capacity() * sizeof(float);
}

size_t LayerStack::indexer_state_bytes_total() const {
  size_t total = 0;
  for (int i = 0; i < schedule_.num_layers(); ++i) total += indexer_state_bytes(i);
  return total;
}

void LayerStack::reset() {
  tokens_ = 0;
  topk_rows_ = 0;
}

void LayerStack::forward(float* hidden, int64_t T) {
  IS_CHECK(T >= 0, "forward: T = ", T, " must be >= 0");
  if (T == 0) return;
  IS_CHECK(tokens_ + T <= opt_.max_context, "forward: ", tokens_, " cached + ", T, " new tokens exceed max_context = ",
           opt_.max_context);
  const StepInfo s{T, tokens_, tokens_ + T};
  const int H = opt_.index_heads, D = opt_.index_dim, K = opt_.topk;
  const auto tu = static_cast<size_t>(T);
  q_scratch_.assign(tu * static_cast<size_t>(H) * static_cast<size_t>(D), 0.0f);
  w_scratch_.assign(tu * static_cast<size_t>(H), 0.0f);
  topk_.assign(tu * static_cast<size_t>(K), -1);
  counts_.assign(tu, 0);
  topk_rows_ = T;

  for (int i = 0; i < schedule_.num_layers(); ++i) {
    DsaLayer& layer = *layers_[static_cast<size_t>(i)];
    if (schedule_.is_full(i)) {
      float* cache = index_k_[static_cast<size_t>(i)].data();
      layer.indexer_inputs(i, s, hidden, q_scratch_.data(), w_scratch_.data(),
                           cache + static_cast<size_t>(s.q_start) * static_cast<size_t>(D));
      ops::IndexerParams ip;
      ip.q = q_scratch_.data();
      ip.k = cache;
      ip.weights = w_scratch_.data();
      ip.scale = opt_.index_scale;
      ip.T = T;
      ip.L = s.L;
      ip.H = H;
      ip.D = D;
      ip.q_start = s.q_start;
      ops::IndexerTopkOptions to;
      to.k = K;
      to.key_tile = opt_.key_tile;
      to.row_block = opt_.row_block;
      ops::indexer_topk(ip, to, topk_.data(), counts_.data());
      ++counters_.indexer_calls;
    } else {
      ++counters_.shared_reuses;  // the buffer holds the top-k of schedule_.source(i)
    }

    const AttentionView v = layer.attention_inputs(i, s, hidden);
    if (v.form == AttentionView::Form::kGqa) {
      ops::SparseAttentionParams ap;
      ap.q = v.q;
      ap.k = v.k;
      ap.v = v.v;
      ap.indices = topk_.data();
      ap.T = T;
      ap.L = s.L;
      ap.H = v.H;
      ap.H_kv = v.H_kv;
      ap.Dk = v.Dk;
      ap.Dv = v.Dv;
      ap.K = K;
      ap.scale = v.scale;
      ap.out = v.out;
      ap.lse = v.lse;
      ops::sparse_attention(ap);
    } else {
      ops::SparseMlaParams mp;
      mp.q = v.q;
      mp.kv = v.k;
      mp.indices = topk_.data();
      mp.T = T;
      mp.L = s.L;
      mp.H = v.H;
      mp.Dqk = v.Dk;
      mp.Dv = v.Dv;
      mp.K = K;
      mp.scale = v.scale;
      mp.out = v.out;
      mp.lse = v.lse;
      ops::sparse_mla(mp);
    }
    ++counters_.attention_calls;
    layer.finish(i, s, hidden);
  }
  tokens_ += T;
  ++counters_.steps;
}

}  // namespace indexshare::share

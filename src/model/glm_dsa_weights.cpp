#include "model/glm_dsa_weights.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "core/error.h"

namespace indexshare::model {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

class Loader {
 public:
  Loader(const GlmDsaConfig& c, const WeightSource& src) : c_(c), src_(src) {}

  std::vector<float> tensor(const std::string& name, const std::vector<int64_t>& shape) {
    IS_CHECK(src_.has(name), src_.label(), ": missing tensor '", name, "'");
    const std::vector<int64_t> got = src_.shape(name);
    IS_CHECK(got == shape, src_.label(), ": tensor '", name, "' has shape ", shape_str(got), ", expected ",
             shape_str(shape));
    used_.insert(name);
    return src_.read_f32(name);
  }
  Linear linear(const std::string& prefix, int64_t out, int64_t in, bool bias) {
    Linear l;
    l.out = out;
    l.in = in;
    l.w = tensor(prefix + ".weight", {out, in});
    if (bias) l.b = tensor(prefix + ".bias", {out});
    return l;
  }
  MlpWeights mlp(const std::string& prefix, int64_t width) {
    const int64_t d = c_.hidden_size;
    return {linear(prefix + ".gate_proj", width, d, false), linear(prefix + ".up_proj", width, d, false),
            linear(prefix + ".down_proj", d, width, false)};
  }
  // Routed experts: per-expert tensors, or the fused 3-D pair.
  std::vector<MlpWeights> experts(const std::string& prefix) {
    const int64_t e = c_.n_routed_experts, d = c_.hidden_size, w = c_.moe_intermediate_size;
    std::vector<MlpWeights> out;
    const std::string fused_gu = prefix + ".gate_up_proj", fused_d = prefix + ".down_proj";
    if (!src_.has(prefix + ".0.gate_proj.weight") && src_.has(fused_gu)) {
      const std::vector<float> gu = tensor(fused_gu, {e, 2 * w, d});
      const std::vector<float> dn = tensor(fused_d, {e, d, w});
      for (int64_t i = 0; i < e; ++i) {
        MlpWeights m;
        m.gate = {w, d, std::vector<float>(gu.begin() + i * 2 * w * d, gu.begin() + (i * 2 + 1) * w * d), {}};
        m.up = {w, d, std::vector<float>(gu.begin() + (i * 2 + 1) * w * d, gu.begin() + (i + 1) * 2 * w * d), {}};
        m.down = {d, w, std::vector<float>(dn.begin() + i * d * w, dn.begin() + (i + 1) * d * w), {}};
        out.push_back(std::move(m));
      }
      return out;
    }
    for (int64_t i = 0; i < e; ++i) out.push_back(mlp(prefix + "." + std::to_string(i), w));
    return out;
  }

  LayerWeights layer(int i) { return layer(i, c_.schedule.is_full(i), c_.moe_layer[static_cast<size_t>(i)]); }
  LayerWeights layer(int i, bool full, bool moe) {
    const std::string p = "model.layers." + std::to_string(i);
    const std::string a = p + ".self_attn";
    const int64_t d = c_.hidden_size, h = c_.num_heads;
    LayerWeights L;
    L.input_norm = tensor(p + ".input_layernorm.weight", {d});
    L.post_norm = tensor(p + ".post_attention_layernorm.weight", {d});
    L.q_a = linear(a + ".q_a_proj", c_.q_lora_rank, d, c_.attention_bias);
    L.q_a_norm = tensor(a + ".q_a_layernorm.weight", {c_.q_lora_rank});
    L.q_b = linear(a + ".q_b_proj", h * c_.qk_head_dim(), c_.q_lora_rank, false);
    L.kv_a = linear(a + ".kv_a_proj_with_mqa", c_.latent_dim(), d, c_.attention_bias);
    L.kv_a_norm = tensor(a + ".kv_a_layernorm.weight", {c_.kv_lora_rank});
    L.kv_b = linear(a + ".kv_b_proj", h * (c_.qk_nope_head_dim + c_.v_head_dim), c_.kv_lora_rank, false);
    L.o = linear(a + ".o_proj", d, h * c_.v_head_dim, c_.attention_bias);
    if (full) {
      const std::string x = a + ".indexer";
      const int64_t hi = c_.index_n_heads, di = c_.index_head_dim;
      L.has_indexer = true;
      for (const char* t : {".wq_b.weight", ".wk.weight", ".k_norm.weight", ".k_norm.bias", ".weights_proj.weight"})
        IS_CHECK(src_.has(x + t), src_.label(), ": missing tensor '", x, t, "': layer ", i,
                 " is a full (F) layer and runs its indexer (schedule ", c_.schedule.pattern(), ")");
      L.indexer.wq_b = linear(x + ".wq_b", hi * di, c_.q_lora_rank, false);
      L.indexer.wk = linear(x + ".wk", di, d, false);
      L.indexer.k_norm_w = tensor(x + ".k_norm.weight", {di});
      L.indexer.k_norm_b = tensor(x + ".k_norm.bias", {di});
      L.indexer.weights_proj = linear(x + ".weights_proj", hi, d, false);
    }
    L.moe = moe;
    if (!L.moe) {
      L.mlp = mlp(p + ".mlp", c_.intermediate_size);
    } else {
      L.router = linear(p + ".mlp.gate", c_.n_routed_experts, d, false);
      L.router_bias = tensor(p + ".mlp.gate.e_score_correction_bias", {c_.n_routed_experts});
      L.experts = experts(p + ".mlp.experts");
      if (c_.n_shared_experts > 0) {
        L.has_shared = true;
        L.shared = mlp(p + ".mlp.shared_experts", c_.n_shared_experts * c_.moe_intermediate_size);
      }
    }
    return L;
  }

  // The first nextn layer (model.layers.<num_layers>); `embed` and `lm_head` are the model's.
  MtpLayerWeights mtp(const std::vector<float>& embed, const std::vector<float>& lm_head) {
    const int L = c_.num_layers;
    const std::string p = "model.layers." + std::to_string(L);
    const int64_t d = c_.hidden_size;
    MtpLayerWeights m;
    m.enorm = tensor(p + ".enorm.weight", {d});
    m.hnorm = tensor(p + ".hnorm.weight", {d});
    m.eh_proj = linear(p + ".eh_proj", d, 2 * d, false);
    m.shared_head_norm = tensor(p + ".shared_head.norm.weight", {d});
    // The block: an indexer and a router when the checkpoint has them.
    const bool full = src_.has(p + ".self_attn.indexer.wk.weight");
    const bool moe = src_.has(p + ".mlp.gate.weight");
    m.block = layer(L, full, moe);
    for (const auto& [name, want, what] :
         {std::tuple<std::string, const std::vector<float>*, const char*>{p + ".shared_head.head.weight", &lm_head, "lm_head.weight"},
          {p + ".embed_tokens.weight", &embed, "model.embed_tokens.weight"}}) {
      if (!src_.has(name)) continue;
      IS_CHECK(tensor(name, {c_.vocab_size, d}) == *want, src_.label(), ": the MTP layer's '", name, "' differs from ",
               what, "; the engine runs the MTP layer with the model's own (a separate MTP head or embedding is not "
               "supported)");
    }
    return m;
  }

  // Everything the source holds that was not loaded, summarised as warnings.
  void report_unused(std::vector<std::string>* warnings) const {
    if (!warnings) return;
    std::map<int, int> s_layer_indexer;  // S layer -> tensor count
    int mtp = 0;
    std::vector<std::string> other;
    for (const std::string& n : src_.names()) {
      if (used_.count(n)) continue;
      int layer = -1;
      if (n.rfind("model.layers.", 0) == 0) {
        const size_t b = 13, e = n.find('.', b);
        if (e != std::string::npos && e > b && e - b < 9 &&
            std::all_of(n.begin() + static_cast<long>(b), n.begin() + static_cast<long>(e),
                        [](char ch) { return ch >= '0' && ch <= '9'; }))
          layer = std::stoi(n.substr(b, e - b));
      }
      if (layer >= c_.num_layers) {
        ++mtp;
      } else if (layer >= 0 && !c_.schedule.is_full(layer) && n.find(".self_attn.indexer.") != std::string::npos) {
        ++s_layer_indexer[layer];
      } else {
        other.push_back(n);
      }
    }
    for (const auto& [layer, count] : s_layer_indexer)
      warnings->push_back(cat(src_.label(), ": layer ", layer, " is shared (S) and runs no indexer; its ", count,
                              " indexer tensor(s) were not loaded"));
    if (mtp > 0)
      warnings->push_back(cat(src_.label(), ": ", mtp, " tensor(s) of layers >= ", c_.num_layers,
                              " (MTP / nextn) were not loaded"));
    for (size_t i = 0; i < other.size() && i < 8; ++i)
      warnings->push_back(cat(src_.label(), ": unused tensor '", other[i], "'"));
    if (other.size() > 8) warnings->push_back(cat(src_.label(), ": ", other.size() - 8, " more unused tensor(s)"));
  }

 private:
  const GlmDsaConfig& c_;
  const WeightSource& src_;
  std::set<std::string> used_;
};

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> glm_dsa_tensor_shapes(const GlmDsaConfig& c,
                                                                                bool s_layer_indexers) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  const int64_t d = c.hidden_size, h = c.num_heads;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  auto layer = [&](int l, bool full, bool moe) {
    const std::string p = "model.layers." + std::to_string(l), a = p + ".self_attn";
    out.push_back({p + ".input_layernorm.weight", {d}});
    out.push_back({p + ".post_attention_layernorm.weight", {d}});
    out.push_back({a + ".q_a_proj.weight", {c.q_lora_rank, d}});
    if (c.attention_bias) out.push_back({a + ".q_a_proj.bias", {c.q_lora_rank}});
    out.push_back({a + ".q_a_layernorm.weight", {c.q_lora_rank}});
    out.push_back({a + ".q_b_proj.weight", {h * c.qk_head_dim(), c.q_lora_rank}});
    out.push_back({a + ".kv_a_proj_with_mqa.weight", {c.latent_dim(), d}});
    if (c.attention_bias) out.push_back({a + ".kv_a_proj_with_mqa.bias", {c.latent_dim()}});
    out.push_back({a + ".kv_a_layernorm.weight", {c.kv_lora_rank}});
    out.push_back({a + ".kv_b_proj.weight", {h * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}});
    out.push_back({a + ".o_proj.weight", {d, h * c.v_head_dim}});
    if (c.attention_bias) out.push_back({a + ".o_proj.bias", {d}});
    if (full) {
      const int64_t hi = c.index_n_heads, di = c.index_head_dim;
      out.push_back({a + ".indexer.wq_b.weight", {hi * di, c.q_lora_rank}});
      out.push_back({a + ".indexer.wk.weight", {di, d}});
      out.push_back({a + ".indexer.k_norm.weight", {di}});
      out.push_back({a + ".indexer.k_norm.bias", {di}});
      out.push_back({a + ".indexer.weights_proj.weight", {hi, d}});
    }
    auto mlp = [&](const std::string& q, int64_t w) {
      out.push_back({q + ".gate_proj.weight", {w, d}});
      out.push_back({q + ".up_proj.weight", {w, d}});
      out.push_back({q + ".down_proj.weight", {d, w}});
    };
    if (!moe) {
      mlp(p + ".mlp", c.intermediate_size);
    } else {
      out.push_back({p + ".mlp.gate.weight", {c.n_routed_experts, d}});
      out.push_back({p + ".mlp.gate.e_score_correction_bias", {c.n_routed_experts}});
      for (int e = 0; e < c.n_routed_experts; ++e) mlp(p + ".mlp.experts." + std::to_string(e), c.moe_intermediate_size);
      if (c.n_shared_experts > 0) mlp(p + ".mlp.shared_experts", c.moe_intermediate_size * c.n_shared_experts);
    }
  };
  for (int l = 0; l < c.num_layers; ++l)
    layer(l, c.schedule.is_full(l) || s_layer_indexers, c.moe_layer[static_cast<size_t>(l)]);
  for (int k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int l = c.num_layers + k;
    const std::string p = "model.layers." + std::to_string(l);
    out.push_back({p + ".enorm.weight", {d}});
    out.push_back({p + ".hnorm.weight", {d}});
    out.push_back({p + ".eh_proj.weight", {d, 2 * d}});
    out.push_back({p + ".shared_head.norm.weight", {d}});
    out.push_back({p + ".shared_head.head.weight", {c.vocab_size, d}});
    out.push_back({p + ".embed_tokens.weight", {c.vocab_size, d}});
    layer(l, true, c.moe_layer.back());
  }
  out.push_back({"model.norm.weight", {d}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, d}});
  return out;
}

GlmDsaWeights load_glm_dsa_weights(const GlmDsaConfig& c, const WeightSource& src,
                                   std::vector<std::string>* warnings, bool load_mtp) {
  c.validate();
  Loader ld(c, src);
  GlmDsaWeights w;
  w.embed = ld.tensor("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  for (int i = 0; i < c.num_layers; ++i) w.layers.push_back(ld.layer(i));
  w.final_norm = ld.tensor("model.norm.weight", {c.hidden_size});
  if (c.tie_word_embeddings && !src.has("lm_head.weight")) {
    w.lm_head = {c.vocab_size, c.hidden_size, w.embed, {}};
  } else {
    w.lm_head = ld.linear("lm_head", c.vocab_size, c.hidden_size, false);
  }
  if (load_mtp) {
    IS_CHECK(c.num_nextn_predict_layers >= 1, src.label(), ": an MTP layer was asked for, but the config has "
             "num_nextn_predict_layers = ", c.num_nextn_predict_layers);
    w.mtp = ld.mtp(w.embed, w.lm_head.w);
  }
  ld.report_unused(warnings);
  return w;
}

}  // namespace indexshare::model

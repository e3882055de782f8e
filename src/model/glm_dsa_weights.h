// Weights of a GLM-MoE-DSA / DeepSeek-V3.2 model as a checkpoint holds them, in host fp32 (FP8
// checkpoints are dequantised exactly on reading), and their loading from a WeightSource (the
// Hugging Face tensor names; src/io adapts safetensors to it). GlmDsaModel uploads them to its
// backend in the weight format it runs (model/glm_dsa.h).
//
// Loading rules:
//  - every tensor the config needs must exist with the expected shape, else Error naming the
//    tensor (and both shapes);
//  - F layers need their indexer (wq_b, wk, k_norm weight + bias, weights_proj); S layers have
//    none: indexer tensors present for an S layer are not loaded, with a warning;
//  - routed experts are read per expert (mlp.experts.<e>.{gate,up,down}_proj.weight), or from
//    the fused 3-D tensors mlp.experts.gate_up_proj [E, 2I, D] / down_proj [E, D, I];
//  - the first MTP (nextn) layer, model.layers.<num_hidden_layers>, is loaded when asked
//    (load_mtp): enorm, hnorm, eh_proj, shared_head.norm and the decoder block (its indexer when
//    the checkpoint has one, MoE when it has a router); its shared_head.head and embed_tokens,
//    when present, must equal lm_head and the embedding (DeepSeek-V3 / GLM checkpoints store
//    copies), else Error: the engine runs the model's own;
//  - tensors of other nextn layers (or of the first when not asked for) and any other tensor
//    not used are reported as warnings, never loaded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/glm_dsa_config.h"

namespace indexshare::model {

// Read access to named tensors (implemented in src/io for safetensors; tests may use others).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual std::string label() const = 0;  // names the source in messages (a path)
  virtual bool has(const std::string& name) const = 0;
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;  // Error if absent
  virtual std::vector<float> read_f32(const std::string& name) const = 0;  // Error if absent
  virtual std::vector<std::string> names() const = 0;
};

// y = x W^T + b with W [out, in] row-major (the Hugging Face nn.Linear layout).
struct Linear {
  int64_t out = 0, in = 0;
  std::vector<float> w;  // [out, in]
  std::vector<float> b;  // [out], empty = no bias
};

// down(silu(gate x) * up x)
struct MlpWeights {
  Linear gate, up, down;
};

struct IndexerWeights {
  Linear wq_b;                    // [H_I * D_I, q_lora]
  Linear wk;                      // [D_I, hidden]
  std::vector<float> k_norm_w;    // [D_I]
  std::vector<float> k_norm_b;    // [D_I]
  Linear weights_proj;            // [H_I, hidden], applied in fp32
};

struct LayerWeights {
  std::vector<float> input_norm, post_norm;  // [hidden]
  Linear q_a;                                // [q_lora, hidden]
  std::vector<float> q_a_norm;               // [q_lora]
  Linear q_b;                                // [H * (nope + rope), q_lora]
  Linear kv_a;                               // [kv_lora + rope, hidden]
  std::vector<float> kv_a_norm;              // [kv_lora]
  Linear kv_b;                               // [H * (nope + v), kv_lora]
  Linear o;                                  // [hidden, H * v]
  bool has_indexer = false;                  // F layers only
  IndexerWeights indexer;
  bool moe = false;
  MlpWeights mlp;                            // dense layers
  Linear router;                             // [E, hidden]
  std::vector<float> router_bias;            // [E] e_score_correction_bias (selection only)
  std::vector<MlpWeights> experts;           // [E]
  bool has_shared = false;
  MlpWeights shared;                         // width n_shared * moe_intermediate_size
};

// The MTP module (DeepSeek-V3): u = eh_proj . [enorm(embed(x_{i+1})) ; hnorm(h_i)], then the
// decoder block, then shared_head_norm and the model's LM head (model/glm_dsa.h, mtp_forward).
struct MtpLayerWeights {
  std::vector<float> enorm, hnorm, shared_head_norm;  // [hidden]
  Linear eh_proj;                                     // [hidden, 2 * hidden]
  LayerWeights block;
};

struct GlmDsaWeights {
  std::vector<float> embed;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::optional<MtpLayerWeights> mtp;  // the first nextn layer, when loaded
  std::vector<float> final_norm;  // [hidden]
  Linear lm_head;                 // [vocab, hidden] (a copy of embed when tied)
};

// Every tensor name and shape a checkpoint of `c` holds in the per-expert layout, the indexer
// tensors of S layers included when `s_layer_indexers` (as DeepSeek / GLM-5 checkpoints run with
// a sharing override have them), and the nextn layers' (with an indexer; MoE like the last
// layer; shared_head.head and embed_tokens copies included); for synthetic models, tests and
// benchmarks.
std::vector<std::pair<std::string, std::vector<int64_t>>> glm_dsa_tensor_shapes(const GlmDsaConfig& c,
                                                                                bool s_layer_indexers);

// Loads everything `c` needs (and the first nextn layer when load_mtp; Error if `c` has none);
// appends one message per warning to `warnings` (nullable).
GlmDsaWeights load_glm_dsa_weights(const GlmDsaConfig& c, const WeightSource& src,
                                   std::vector<std::string>* warnings, bool load_mtp = false);

}  // namespace indexshare::model

// Loading glue for the GLM-MoE-DSA / DeepSeek-V3.2 model: config.json (io/hf_config.h) ->
// model::GlmDsaConfig, safetensors (io/safetensors.h) -> model::WeightSource, and a one-call
// loader. Kept in src/io so that src/model stays free of JSON.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/glm_dsa.h"

namespace indexshare::io {

// Model config from a parsed config.json. Errors (naming the source and key): a model_type
// that is not a DSA architecture, q_lora_rank null, an unsupported rope_type (default and yarn
// are supported), a scoring_func other than sigmoid, a topk_method other than noaux_tc.
model::GlmDsaConfig glm_dsa_config_from_hf(const HfConfig& hf);

// model::WeightSource over a safetensors model (one file or index-sharded).
class SafetensorsWeightSource : public model::WeightSource {
 public:
  explicit SafetensorsWeightSource(SafetensorsModel m) : m_(std::move(m)) {}
  std::string label() const override { return m_.path(); }
  bool has(const std::string& name) const override { return m_.has(name); }
  std::vector<int64_t> shape(const std::string& name) const override { return m_.info(name).shape; }
  std::vector<float> read_f32(const std::string& name) const override { return m_.read_f32(name); }
  std::vector<std::string> names() const override { return m_.names(); }

 private:
  SafetensorsModel m_;
};

// Loads config.json at `config_path` and the weights at `weights_path` (a directory with
// model.safetensors or model.safetensors.index.json, or one .safetensors file) onto `be` (null:
// the CPU). Warnings from the config reader and the weight loader are appended to `warnings`
// (nullable).
model::GlmDsaModel load_glm_dsa(const std::string& config_path, const std::string& weights_path,
                                std::vector<std::string>* warnings = nullptr,
                                std::shared_ptr<backend::Backend> be = nullptr,
                                const model::ModelOptions& options = {});
// The same for a model directory holding config.json and the weights.
model::GlmDsaModel load_glm_dsa_dir(const std::string& model_dir, std::vector<std::string>* warnings = nullptr,
                                    std::shared_ptr<backend::Backend> be = nullptr,
                                    const model::ModelOptions& options = {});

}  // namespace indexshare::io

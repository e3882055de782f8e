// Running a DSA-native model (glm_moe_dsa / deepseek_v32: a directory with config.json and
// safetensors) on token ids. Used by `dsa-run`, and by `generate` and `perplexity` when --model
// names such a directory.
#pragma once

#include <string>

namespace indexshare::cli {

struct DsaRunArgs {
  std::string model_dir, config, weights, tokens, tokens_file;
  int generate = 0;
  bool perplexity = false;
  bool json = false;
};

int run_dsa_model(const DsaRunArgs& a);

}  // namespace indexshare::cli

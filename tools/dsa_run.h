// Running a DSA-native model (glm_moe_dsa / deepseek_v32: a directory with config.json and
// safetensors) on token ids. Used by `dsa-run`, and by `generate` and `perplexity` when --model
// names such a directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace indexshare::cli {

struct DsaRunArgs {
  std::string model_dir, config, weights, tokens;
  std::vector<std::string> tokens_files;  // one sequence each; several: timings and logits of each
  int generate = 0;
  bool perplexity = false;
  bool json = false;
  std::string device = "cpu";          // cpu | cuda
  std::string weight_format;           // f32 | bf16 | fp8; empty: f32 on the CPU, bf16 on CUDA
  std::string latent_cache, indexer_cache;  // f32 | bf16 | fp8; empty: the backend's fastest
  int64_t max_tokens = 0;              // cache capacity; 0: the tokens this run needs
  int64_t chunk = 4096;                // prefill chunk (tokens per step)
  std::string logits_out;              // write the logits of the last logits_rows ids (f32, row-major)
  int64_t logits_rows = 1;
  bool warmup = false;                 // run the prefill once before the timed one
  // Speculative decoding for --generate with the checkpoint's own MTP (nextn) layer as drafter.
  bool mtp = false;
  int draft = 3;
  std::string draft_attention = "share-step0";  // dense | indexer | share-step0 | share-target
};

// Parses "cpu" / "cuda" (Error naming the option otherwise).
Device parse_device(const std::string& s);

int run_dsa_model(const DsaRunArgs& a);

}  // namespace indexshare::cli

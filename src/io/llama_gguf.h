// Builds a LlamaModel from a GGUF file (general.architecture == "llama"), viewing the weights in
// the file's mapping. Errors name the key or tensor that is missing or misshapen.
#pragma once

#include <memory>
#include <string>

#include "io/gguf.h"
#include "model/llama_model.h"

namespace indexshare::io {

struct LoadedLlama {
  std::shared_ptr<GgufFile> file;  // keeps the mapping alive
  std::unique_ptr<model::LlamaModel> model;
  std::string sha256;              // not computed here; filled by callers that need it
};

// Reads the hyperparameters of a llama GGUF.
model::LlamaConfig llama_config_from_gguf(const GgufFile& f);

// Loads config and weights. The GgufFile must outlive the model (LoadedLlama keeps it).
LoadedLlama load_llama(const std::string& path);
LoadedLlama load_llama(std::shared_ptr<GgufFile> file);

// The default model path: $INDEXSHARE_MODEL, else SmolLM2-135M-Instruct.Q4_1.gguf in $INDEXSHARE_CACHE,
// else in ~/.cache/indexshare (where scripts/fetch_model.sh puts it).
std::string default_model_path();

}  // namespace indexshare::io

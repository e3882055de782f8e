// Learned-indexer files: safetensors with one group of tensors per layer that has an indexer
//   layers.{l}.wq [H*D, d_model], layers.{l}.wk [D, d_model], layers.{l}.ww [H, d_model]  (f32)
// and metadata: format "indexshare-indexers/1", the shape (d_model, heads, head_dim, rope_dim,
// rope_theta, layers), model_fingerprint (of the GGUF it was made for), pattern (the layers
// that have an indexer, F/S), and free-form provenance (corpus, seed, command, losses).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "model/llama_dsa.h"

namespace indexshare::io {

struct IndexerFile {
  model::IndexerSet set;
  std::map<std::string, std::string> metadata;
};

void save_indexers(const std::string& path, const model::IndexerSet& set, std::map<std::string, std::string> metadata);

// Loads and validates. When expected_fingerprint is non-empty, a file made for another model is
// an Error that says so; a wrong layer count is an Error too.
IndexerFile load_indexers(const std::string& path, const std::string& expected_fingerprint = "", int expected_layers = -1);

// A fingerprint of a model file: 64-bit FNV-1a of its bytes plus its size, as hex.
std::string model_fingerprint(const std::string& model_path);

}  // namespace indexshare::io

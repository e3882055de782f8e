// Writes a small random indexer file for CLI tests (every layer, or the F layers of `only`;
// `heads` x 8 dims), tagged with a model fingerprint.
#pragma once

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "io/indexer_file.h"

namespace indexshare::testing_util {

inline std::string write_indexers(const std::string& name, int layers, int d_model, const std::string& fingerprint,
                                  const std::string& only = "", int heads = 2) {
  model::IndexerSet set;
  set.cfg = {d_model, heads, 8, 4, 10000.0f};
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (int l = 0; l < layers; ++l) {
    if (!only.empty() && only[static_cast<size_t>(l)] == 'S') {
      set.layers.emplace_back();
      continue;
    }
    auto w = model::LearnedIndexerWeights::zeros(set.cfg);
    for (auto* v : {&w.wq, &w.wk, &w.ww})
      for (auto& e : *v) e = nd(rng);
    set.layers.emplace_back(std::move(w));
  }
  const std::string path = ::testing::TempDir() + name;
  io::save_indexers(path, set, {{"model_fingerprint", fingerprint}});
  return path;
}

}  // namespace indexshare::testing_util

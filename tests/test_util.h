// Helpers shared by the model tests (CPU and CUDA): a temporary directory, float comparisons,
// and the GLM-MoE-DSA fixture model joined with its MTP layer as a two-shard checkpoint.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace indexshare::testing_util {

// A fresh directory under the system's temporary folder, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "is_test_") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / (prefix + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& n) const { return (path / n).string(); }
};

inline float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

// max |a - b| (infinity when either side is not finite); the sizes must match.
inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0.0f;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return std::numeric_limits<float>::infinity();
    m = std::max(m, std::fabs(a[i] - b[i]));
  }
  return m;
}

// tests/data/dsa_fixtures/glm_moe_dsa: the model and its MTP layer (mtp/).
inline std::string glm_fixtures() { return std::string(INDEXSHARE_SOURCE_DIR) + "/tests/data/dsa_fixtures/glm_moe_dsa"; }

// Writes into `dir` the fixture model and its MTP layer as a two-shard checkpoint, as real
// checkpoints ship them (config.json, model.safetensors.index.json, two shards). `edit_mtp` may
// drop (return false) or change the MTP layer's tensors.
inline void write_mtp_checkpoint(const TempDir& dir,
                                 const std::function<bool(std::string&, std::vector<float>&)>& edit_mtp = {}) {
  const std::string fx = glm_fixtures();
  std::filesystem::copy_file(fx + "/model.safetensors", dir.file("model-00001-of-00002.safetensors"));
  std::filesystem::copy_file(fx + "/mtp/config.json", dir.file("config.json"));
  const auto mtp = io::SafetensorsFile::open(fx + "/mtp/mtp.safetensors");
  std::vector<std::vector<float>> data;
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& t : mtp.tensors()) {
    std::string n = t.name;
    std::vector<float> v = mtp.read_f32(t.name);
    if (edit_mtp && !edit_mtp(n, v)) continue;
    names.push_back(n);
    shapes.push_back(t.shape);
    data.push_back(std::move(v));
  }
  std::vector<io::StWriteTensor> ws;
  for (size_t i = 0; i < data.size(); ++i) ws.push_back(io::st_f32(names[i], shapes[i], data[i]));
  io::write_safetensors(dir.file("model-00002-of-00002.safetensors"), ws);
  std::string map = "{\"weight_map\": {";
  bool first = true;
  const auto base = io::SafetensorsFile::open(fx + "/model.safetensors");
  for (const auto& t : base.tensors()) {
    map += (first ? "" : ", ") + ("\"" + t.name + "\": \"model-00001-of-00002.safetensors\"");
    first = false;
  }
  for (const auto& n : names) map += ", \"" + n + "\": \"model-00002-of-00002.safetensors\"";
  std::ofstream(dir.file("model.safetensors.index.json")) << map << "}}";
}

}  // namespace indexshare::testing_util

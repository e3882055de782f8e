#include "io/indexer_file.h"

#include <fmt/core.h>

#include <string>

#include "core/error.h"
#include "eval/corpus.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace indexshare::io {

namespace {
constexpr const char* kFormat = "indexshare-indexers/1";

int64_t meta_int(const std::map<std::string, std::string>& m, const std::string& path, const std::string& key) {
  const auto it = m.find(key);
  IS_CHECK(it != m.end(), path, ": indexer file metadata lacks '", key, "'");
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    IS_CHECK(used == it->second.size(), "trailing text");
    return v;
  } catch (const std::exception&) {
    fail(path, ": indexer file metadata '", key, "' is not an integer: '", it->second, "'");
  }
}
}  // namespace

std::string model_fingerprint(const std::string& model_path) {
  const MappedFile f(model_path);
  const auto b = f.bytes();
  return fmt::format("fnv1a64:{:016x}:{}", eval::fnv1a64(b.data(), b.size()), b.size());
}

void save_indexers(const std::string& path, const model::IndexerSet& set, std::map<std::string, std::string> metadata) {
  const auto& c = set.cfg;
  c.validate();
  std::vector<StWriteTensor> ts;
  std::string pattern;
  for (size_t l = 0; l < set.layers.size(); ++l) {
    pattern += set.layers[l] ? 'F' : 'S';
    if (!set.layers[l]) continue;
    const auto& w = *set.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    ts.push_back(st_f32(p + "wq", {int64_t{c.heads} * c.head_dim, c.d_model}, w.wq));
    ts.push_back(st_f32(p + "wk", {c.head_dim, c.d_model}, w.wk));
    ts.push_back(st_f32(p + "ww", {c.heads, c.d_model}, w.ww));
  }
  metadata["format"] = kFormat;
  metadata["d_model"] = std::to_string(c.d_model);
  metadata["heads"] = std::to_string(c.heads);
  metadata["head_dim"] = std::to_string(c.head_dim);
  metadata["rope_dim"] = std::to_string(c.rope_dim);
  metadata["rope_theta"] = fmt::format("{}", c.rope_theta);
  metadata["layers"] = std::to_string(set.layers.size());
  metadata["pattern"] = pattern;
  write_safetensors(path, ts, metadata);
}

IndexerFile load_indexers(const std::string& path, const std::string& expected_fingerprint, int expected_layers) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  IndexerFile out;
  out.metadata = f.metadata();
  const auto& m = out.metadata;
  const auto fmt_it = m.find("format");
  IS_CHECK(fmt_it != m.end() && fmt_it->second == kFormat, path, ": not an IndexShare indexer file (metadata format is '",
           fmt_it == m.end() ? std::string("missing") : fmt_it->second, "', expected '", kFormat, "')");
  if (!expected_fingerprint.empty()) {
    const auto it = m.find("model_fingerprint");
    IS_CHECK(it != m.end() && it->second == expected_fingerprint, path, ": indexer file was made for another model (",
             it == m.end() ? std::string("no fingerprint") : it->second, "; this model is ", expected_fingerprint, ")");
  }
  auto& c = out.set.cfg;
  c.d_model = static_cast<int>(meta_int(m, path, "d_model"));
  c.heads = static_cast<int>(meta_int(m, path, "heads"));
  c.head_dim = static_cast<int>(meta_int(m, path, "head_dim"));
  c.rope_dim = static_cast<int>(meta_int(m, path, "rope_dim"));
  const auto th = m.find("rope_theta");
  IS_CHECK(th != m.end(), path, ": indexer file metadata lacks 'rope_theta'");
  c.rope_theta = std::stof(th->second);
  c.validate();
  const int64_t layers = meta_int(m, path, "layers");
  IS_CHECK(layers > 0 && layers < 100000, path, ": bad layer count ", layers);
  IS_CHECK(expected_layers < 0 || layers == expected_layers, path, ": indexer file has ", layers,
           " layers but the model has ", expected_layers);
  const std::string pattern = m.count("pattern") ? m.at("pattern") : "";
  IS_CHECK(static_cast<int64_t>(pattern.size()) == layers, path, ": metadata pattern '", pattern, "' does not have ",
           layers, " characters");
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const bool has = f.find(p + "wq") != nullptr;
    IS_CHECK(has == (pattern[static_cast<size_t>(l)] == 'F'), path, ": layer ", l, " tensors disagree with pattern ",
             pattern);
    if (!has) {
      out.set.layers.emplace_back();
      continue;
    }
    auto w = model::LearnedIndexerWeights::zeros(c);
    auto read = [&](const std::string& name, std::vector<float>& dst, int64_t rows) {
      const auto& t = f.tensor(name);
      IS_CHECK(t.shape == std::vector<int64_t>({rows, c.d_model}), path, ": tensor ", name, " has the wrong shape");
      f.read_f32(t, dst);
    };
    read(p + "wq", w.wq, int64_t{c.heads} * c.head_dim);
    read(p + "wk", w.wk, c.head_dim);
    read(p + "ww", w.ww, c.heads);
    out.set.layers.emplace_back(std::move(w));
  }
  return out;
}

}  // namespace indexshare::io

#include "io/mtp_file.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace indexshare::io {
namespace {

constexpr const char* kFormat = "indexshare-mtp/1";

std::string meta(const std::map<std::string, std::string>& m, const std::string& path, const std::string& key) {
  const auto it = m.find(key);
  IS_CHECK(it != m.end(), path, ": MTP file metadata lacks '", key, "'");
  return it->second;
}

int64_t meta_int(const std::map<std::string, std::string>& m, const std::string& path, const std::string& key) {
  const std::string s = meta(m, path, key);
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used);
    IS_CHECK(used == s.size(), "trailing text");
    return v;
  } catch (const std::exception&) {
    fail(path, ": MTP file metadata '", key, "' is not an integer: '", s, "'");
  }
}

double meta_float(const std::map<std::string, std::string>& m, const std::string& path, const std::string& key) {
  const std::string s = meta(m, path, key);
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    IS_CHECK(used == s.size(), "trailing text");
    return v;
  } catch (const std::exception&) {
    fail(path, ": MTP file metadata '", key, "' is not a number: '", s, "'");
  }
}

}  // namespace

MtpFile load_mtp(const std::string& path, const model::LlamaModel& base, const std::string& expected_fingerprint) {
  auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(path));
  const SafetensorsFile& f = *file;
  MtpFile out;
  out.metadata = f.metadata();
  const auto& m = out.metadata;
  const auto fmt_it = m.find("format");
  IS_CHECK(fmt_it != m.end() && fmt_it->second == kFormat, path, ": not an IndexShare MTP file (metadata format is '",
           fmt_it == m.end() ? std::string("missing") : fmt_it->second, "', expected '", kFormat, "')");
  if (!expected_fingerprint.empty()) {
    const auto it = m.find("model_fingerprint");
    IS_CHECK(it != m.end() && it->second == expected_fingerprint, path, ": MTP file was made for another model (",
             it == m.end() ? std::string("no fingerprint") : it->second, "; this model is ", expected_fingerprint, ")");
  }
  const model::LlamaConfig& c = base.config();
  auto expect = [&](const char* key, double want) {
    const double got = meta_float(m, path, key);
    IS_CHECK(std::abs(got - want) <= 1e-6 * std::max(1.0, std::abs(want)), path, ": MTP file metadata ", key, " = ", got,
             " but the model has ", want);
  };
  expect("d_model", c.d_model);
  expect("n_heads", c.n_heads);
  expect("n_kv_heads", c.n_kv_heads);
  expect("head_dim", c.head_dim);
  expect("ffn_dim", c.ffn_dim);
  expect("rope_theta", c.rope_theta);
  expect("rms_eps", c.rms_eps);

  std::set<std::string> used;
  auto tensor = [&](const std::string& name, const std::vector<int64_t>& shape) -> const StTensorInfo& {
    const StTensorInfo* t = f.find(name);
    IS_CHECK(t != nullptr, path, ": MTP file lacks tensor '", name, "'");
    IS_CHECK(t->shape == shape, path, ": tensor ", name, " has the wrong shape");
    used.insert(name);
    return *t;
  };
  auto vec = [&](const std::string& name, int64_t n) {
    const StTensorInfo& t = tensor(name, {n});
    std::vector<float> v(static_cast<size_t>(n));
    f.read_f32(t, v);
    return v;
  };
  auto mat = [&](const std::string& name, int64_t N, int64_t K) {
    const StTensorInfo& t = tensor(name, {N, K});
    GgmlType type = GgmlType::kF32;
    switch (t.dtype) {
      case StDType::kF32: type = GgmlType::kF32; break;
      case StDType::kF16: type = GgmlType::kF16; break;
      case StDType::kBF16: type = GgmlType::kBF16; break;
      default: fail(path, ": tensor ", name, " is ", st_dtype_name(t.dtype), "; MTP matrices must be F32, F16 or BF16");
    }
    return model::QMatrix{t.data.data(), type, N, K};
  };
  const int64_t d = c.d_model, q = int64_t{c.n_heads} * c.head_dim, kv = int64_t{c.n_kv_heads} * c.head_dim;
  auto norms = std::make_shared<std::vector<std::vector<float>>>();
  model::MtpWeights& w = out.weights;
  w.enorm = vec("enorm", d);
  w.hnorm = vec("hnorm", d);
  w.shared_head_norm = vec("shared_head_norm", d);
  w.eh_proj = mat("eh_proj", d, 2 * d);
  norms->push_back(vec("block.attn_norm", d));
  norms->push_back(vec("block.ffn_norm", d));
  w.block.attn_norm = (*norms)[0].data();
  w.block.ffn_norm = (*norms)[1].data();
  w.block.wq = mat("block.wq", q, d);
  w.block.wk = mat("block.wk", kv, d);
  w.block.wv = mat("block.wv", kv, d);
  w.block.wo = mat("block.wo", d, q);
  w.block.w_gate = mat("block.w_gate", c.ffn_dim, d);
  w.block.w_up = mat("block.w_up", c.ffn_dim, d);
  w.block.w_down = mat("block.w_down", d, c.ffn_dim);
  if (f.find("indexer.wq") != nullptr || m.count("indexer_heads")) {
    model::LearnedIndexerConfig ic;
    ic.d_model = c.d_model;
    ic.heads = static_cast<int>(meta_int(m, path, "indexer_heads"));
    ic.head_dim = static_cast<int>(meta_int(m, path, "indexer_head_dim"));
    ic.rope_dim = static_cast<int>(meta_int(m, path, "indexer_rope_dim"));
    ic.rope_theta = c.rope_theta;
    ic.validate();
    auto iw = model::LearnedIndexerWeights::zeros(ic);
    f.read_f32(tensor("indexer.wq", {int64_t{ic.heads} * ic.head_dim, d}), iw.wq);
    f.read_f32(tensor("indexer.wk", {ic.head_dim, d}), iw.wk);
    f.read_f32(tensor("indexer.ww", {ic.heads, d}), iw.ww);
    w.indexer = std::move(iw);
  }
  if (f.find("vocab_by_frequency") != nullptr) {
    const StTensorInfo& t = tensor("vocab_by_frequency", {c.vocab});
    IS_CHECK(t.dtype == StDType::kI32, path, ": vocab_by_frequency must be I32, is ", st_dtype_name(t.dtype));
    const std::vector<int64_t> ids = f.read_i64("vocab_by_frequency");
    w.vocab_by_frequency.assign(ids.begin(), ids.end());  // MtpHead checks it is a permutation
  }
  for (const StTensorInfo& t : f.tensors())
    IS_CHECK(used.count(t.name), path, ": unknown tensor '", t.name, "' in the MTP file");
  struct Storage {
    std::shared_ptr<SafetensorsFile> file;
    std::shared_ptr<std::vector<std::vector<float>>> norms;
  };
  w.storage = std::make_shared<Storage>(Storage{file, norms});
  return out;
}

}  // namespace indexshare::io

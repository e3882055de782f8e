// GGUF reader and dequantiser on the real model (SmolLM2-135M-Instruct Q4_1), cross-checked
// against tests/data/smollm2_gguf_golden.json, written by an independent reader (the PyPI
// package gguf: tests/golden/make_gguf_golden.py). Skips when the model is absent; get it with
// scripts/fetch_model.sh. Also: truncated copies of the real file must raise Error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "io/gguf.h"
#include "ops/quant.h"

namespace indexshare::io {
namespace {

using json = nlohmann::ordered_json;  // keeps the golden's key order (the file's)

// gguf's value type names ("uint32") in ours ("u32").
std::string our_type_name(const std::string& g) {
  if (g == "float32") return "f32";
  if (g == "float64") return "f64";
  if (g.rfind("uint", 0) == 0) return std::string("u").append(g, 4);
  if (g.rfind("int", 0) == 0) return std::string("i").append(g, 3);
  return g;  // bool, string, array
}

std::string model_path() {
  if (const char* p = std::getenv("INDEXSHARE_MODEL"); p != nullptr && p[0] != '\0') return p;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/indexshare/SmolLM2-135M-Instruct.Q4_1.gguf";
}

#define SKIP_WITHOUT_MODEL()                                                                 \
  if (!std::filesystem::exists(model_path())) {                                              \
    GTEST_SKIP() << "model " << model_path()                                                 \
                 << " not found: run scripts/fetch_model.sh (or set INDEXSHARE_MODEL)";      \
  }

const json& golden() {
  static const json j = [] {
    const std::string path = std::string(INDEXSHARE_SOURCE_DIR) + "/tests/data/smollm2_gguf_golden.json";
    std::ifstream in(path);
    if (!in) throw Error(path + ": cannot open");
    return json::parse(in);
  }();
  return j;
}

const GgufFile& model() {
  static const GgufFile f = GgufFile::open(model_path());
  return f;
}

TEST(GgufModel, HeaderAndHyperparameters) {
  SKIP_WITHOUT_MODEL();
  const GgufFile& f = model();
  EXPECT_EQ(std::filesystem::file_size(model_path()), golden()["file_size"].get<uint64_t>())
      << "not the pinned model file (sha256 " << golden()["sha256"].get<std::string>() << ")";
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 30);
  EXPECT_EQ(f.get_int("llama.embedding_length"), 576);
  EXPECT_EQ(f.get_int("llama.attention.head_count"), 9);
  EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(f.get_int("llama.feed_forward_length"), 1536);
  EXPECT_EQ(f.get_int("llama.vocab_size"), 49152);
  EXPECT_EQ(f.get_int("llama.context_length"), 8192);
  EXPECT_EQ(f.get_int("llama.rope.dimension_count"), 64);
  EXPECT_EQ(f.get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_EQ(f.get_int("general.file_type"), 3);  // mostly Q4_1
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "smollm");
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f.get_int("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), 2);
  const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 49152u);
  EXPECT_EQ(tokens[1], "<|im_start|>");
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type").size(), 49152u);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges").size(), 48900u);
}

TEST(GgufModel, TensorsAsExpected) {
  SKIP_WITHOUT_MODEL();
  const GgufFile& f = model();
  EXPECT_EQ(f.tensors().size(), 272u);  // 30 x 9 + token_embd + output_norm; tied output
  EXPECT_EQ(f.find_tensor("output.weight"), nullptr);
  const GgufTensorInfo& emb = f.tensor("token_embd.weight");
  EXPECT_EQ(emb.type, GgmlType::kQ8_0);
  EXPECT_EQ(emb.ne, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(emb.nbytes, 49152u * 18 * 34);
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight").type, GgmlType::kQ4_1);
  EXPECT_EQ(f.tensor("blk.0.attn_q.weight").ne, (std::vector<int64_t>{576, 576}));
  EXPECT_EQ(f.tensor("blk.0.attn_k.weight").ne, (std::vector<int64_t>{576, 192}));
  EXPECT_EQ(f.tensor("blk.29.ffn_down.weight").ne, (std::vector<int64_t>{1536, 576}));
  EXPECT_EQ(f.tensor("blk.29.ffn_up.weight").ne, (std::vector<int64_t>{576, 1536}));
  EXPECT_EQ(f.tensor("output_norm.weight").type, GgmlType::kF32);
  int q4_1 = 0, f32 = 0;
  for (const auto& t : f.tensors()) {
    q4_1 += t.type == GgmlType::kQ4_1;
    f32 += t.type == GgmlType::kF32;
  }
  EXPECT_EQ(q4_1, 210);
  EXPECT_EQ(f32, 61);
}

// Every tensor (name, type, shape, offsets, size) and every metadata entry as the
// independent reader saw them.
TEST(GgufModel, MatchesIndependentReader) {
  SKIP_WITHOUT_MODEL();
  const GgufFile& f = model();
  const json& g = golden();
  EXPECT_EQ(f.version(), g["version"].get<uint32_t>());
  EXPECT_EQ(f.data_offset(), g["data_offset"].get<uint64_t>());
  ASSERT_EQ(f.tensors().size(), g["tensors"].size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const GgufTensorInfo& t = f.tensors()[i];
    const json& e = g["tensors"][i];
    SCOPED_TRACE(e["name"].get<std::string>());
    EXPECT_EQ(t.name, e["name"].get<std::string>());
    EXPECT_EQ(static_cast<uint32_t>(t.type), e["type_id"].get<uint32_t>());
    EXPECT_EQ(std::string(ggml_type_name(t.type)), e["type"].get<std::string>());
    EXPECT_EQ(t.ne, e["ne"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.offset, e["offset"].get<uint64_t>());
    EXPECT_EQ(t.file_offset, e["file_offset"].get<uint64_t>());
    EXPECT_EQ(t.nbytes, e["nbytes"].get<uint64_t>());
  }
  const auto keys = f.keys();
  ASSERT_EQ(keys.size(), g["metadata"].size());
  size_t i = 0;
  for (const auto& [key, e] : g["metadata"].items()) {
    SCOPED_TRACE(key);
    EXPECT_EQ(keys[i++], key);  // file order (the golden keeps it)
    const GgufValue& v = f.value(key);
    const std::string type = e["type"].get<std::string>();
    EXPECT_EQ(std::string(gguf_value_type_name(v.type)), our_type_name(type));
    if (type == "array") {
      const GgufArray& a = f.get_array(key);
      EXPECT_EQ(a.count, e["count"].get<uint64_t>());
      const std::string et = e["elem_type"].get<std::string>();
      EXPECT_EQ(std::string(gguf_value_type_name(a.elem_type)), our_type_name(et));
      json first = json::array();
      json last;
      if (et == "string") {
        const auto s = f.get_string_array(key);
        for (size_t k = 0; k < std::min<size_t>(8, s.size()); ++k) first.push_back(s[k]);
        last = s.back();
      } else {
        const auto n = f.get_int_array(key);
        for (size_t k = 0; k < std::min<size_t>(8, n.size()); ++k) first.push_back(n[k]);
        last = n.back();
      }
      EXPECT_EQ(first, e["first"]);
      EXPECT_EQ(last, e["last"]);
    } else if (type == "string") {
      EXPECT_EQ(v.type, GgufValueType::kString);
      EXPECT_EQ(f.get_string(key), e["value"].get<std::string>());
    } else if (type == "bool") {
      EXPECT_EQ(f.get_bool(key), e["value"].get<bool>());
    } else if (type == "float32" || type == "float64") {
      EXPECT_EQ(f.get_float(key), e["value"].get<double>());
    } else {
      EXPECT_EQ(f.get_int(key), e["value"].get<int64_t>());
    }
  }
}

// Rows dequantised by our kernels (SIMD and scalar) against the independent dequantiser's
// values (exact: q * d is exact in f32 and both add m once) and checksums (sum, sum of squares,
// position-weighted sum, which catches element-order mistakes).
TEST(GgufModel, DequantisedRowsMatchIndependentDequantiser) {
  SKIP_WITHOUT_MODEL();
  const GgufFile& f = model();
  for (const json& e : golden()["rows"]) {
    const GgufTensorInfo& t = f.tensor(e["tensor"].get<std::string>());
    const int64_t row = e["row"].get<int64_t>();
    SCOPED_TRACE(t.name + " row " + std::to_string(row));
    ASSERT_LT(row, t.rows());
    for (bool simd : {true, false}) {
      set_simd_enabled(simd);
      std::vector<float> x(static_cast<size_t>(t.row_length()));
      ops::dequantize_row(t.type, t.data.data() + row * t.row_bytes(), x.data(), t.row_length());
      double sum = 0, sum_sq = 0, weighted = 0;
      for (size_t k = 0; k < x.size(); ++k) {
        sum += x[k];
        sum_sq += static_cast<double>(x[k]) * x[k];
        weighted += static_cast<double>(k + 1) * x[k];
      }
      const auto first = e["first"].get<std::vector<double>>();
      for (size_t k = 0; k < first.size(); ++k) EXPECT_EQ(static_cast<double>(x[k]), first[k]) << k;
      // Only the order of float64 summation differs from numpy's pairwise sum.
      const double scale = sum_sq * 1e-12 + 1e-12;
      EXPECT_NEAR(sum, e["sum"].get<double>(), 1e-9 * std::sqrt(x.size() * sum_sq) + scale);
      EXPECT_NEAR(sum_sq, e["sum_sq"].get<double>(), 1e-12 * sum_sq + scale);
      EXPECT_NEAR(weighted, e["weighted_sum"].get<double>(), 1e-9 * x.size() * std::sqrt(x.size() * sum_sq) + scale);
    }
    set_simd_enabled(true);
  }
}

// Every prefix of the real file that cuts a header field, a key, a value or tensor data fails
// with Error naming the file: checked on in-memory prefixes (cheap) and on truncated copies
// opened from disk.
TEST(GgufModel, TruncatedFileRaisesError) {
  SKIP_WITHOUT_MODEL();
  const GgufFile& f = model();
  const MappedFile mapped(model_path());
  const auto bytes = mapped.bytes();
  std::vector<uint64_t> cuts = {0, 3, 4, 7, 8, 16, 23, 24, 25, 40, 100, 1000, 100000, 1000000,
                                f.data_offset() - 1, f.data_offset(), f.data_offset() + 1000,
                                bytes.size() / 2, bytes.size() - 1};
  // Inside every metadata value and tensor info region, a few more.
  for (uint64_t c = 1785000; c < f.data_offset(); c += 97) cuts.push_back(c);
  for (uint64_t n : cuts) {
    ASSERT_LT(n, bytes.size());
    try {
      GgufFile::parse(bytes.first(n), "prefix.gguf");
      ADD_FAILURE() << "prefix of " << n << " bytes parsed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("prefix.gguf"), std::string::npos) << e.what();
    }
  }
  char tmpl[] = "/tmp/indexshare_gguf_truncXXXXXX";
  const int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  close(fd);
  for (uint64_t n : {uint64_t{0}, uint64_t{5}, uint64_t{30000}, f.data_offset() + 64}) {
    {
      std::ofstream out(tmpl, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(n));
    }
    try {
      GgufFile::open(tmpl);
      ADD_FAILURE() << "truncated copy of " << n << " bytes opened";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(tmpl), std::string::npos) << e.what();
    }
  }
  std::remove(tmpl);
}

}  // namespace
}  // namespace indexshare::io

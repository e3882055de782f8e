// `generate --mtp` and `speculate` on the real model (skipped when it is not on the machine), with
// an MTP head of random weights written here: greedy speculative output is the plain output, the
// report's accounting adds up, and bad input is an error naming the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/indexer_file.h"
#include "io/llama_gguf.h"
#include "io/safetensors.h"
#include "run_tool.h"

namespace {

namespace fs = std::filesystem;
using indexshare::testing_util::run_tool;
namespace io = indexshare::io;

// A random head for the model (F16 matrices, F32 norms and indexer, a frequency order).
std::string write_random_head(const std::string& name, const indexshare::model::LlamaConfig& c, const std::string& fp) {
  const std::string path = ::testing::TempDir() + name;
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<io::StWriteTensor> ts;
  auto f32 = [&](const std::string& n, std::vector<int64_t> shape, float scale, float offset) {
    int64_t count = 1;
    for (auto x : shape) count *= x;
    std::vector<float> v(static_cast<size_t>(count));
    for (auto& x : v) x = offset + scale * nd(rng);
    bufs.emplace_back(reinterpret_cast<uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data()) + v.size() * 4);
    ts.push_back({n, io::StDType::kF32, shape, bufs.back()});
  };
  auto f16 = [&](const std::string& n, int64_t N, int64_t K) {
    std::vector<uint16_t> v(static_cast<size_t>(N * K));
    for (auto& x : v) x = indexshare::f32_to_f16(nd(rng) / std::sqrt(static_cast<float>(K)));
    bufs.emplace_back(reinterpret_cast<uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data()) + v.size() * 2);
    ts.push_back({n, io::StDType::kF16, {N, K}, bufs.back()});
  };
  const int64_t d = c.d_model, q = int64_t{c.n_heads} * c.head_dim, kv = int64_t{c.n_kv_heads} * c.head_dim;
  f32("enorm", {d}, 0.1f, 1.0f);
  f32("hnorm", {d}, 0.1f, 1.0f);
  f32("shared_head_norm", {d}, 0.1f, 1.0f);
  f16("eh_proj", d, 2 * d);
  f32("block.attn_norm", {d}, 0.1f, 1.0f);
  f32("block.ffn_norm", {d}, 0.1f, 1.0f);
  f16("block.wq", q, d);
  f16("block.wk", kv, d);
  f16("block.wv", kv, d);
  f16("block.wo", d, q);
  f16("block.w_gate", c.ffn_dim, d);
  f16("block.w_up", c.ffn_dim, d);
  f16("block.w_down", d, c.ffn_dim);
  f32("indexer.wq", {4 * 32, d}, 0.05f, 0.0f);
  f32("indexer.wk", {32, d}, 0.05f, 0.0f);
  f32("indexer.ww", {4, d}, 0.05f, 0.0f);
  std::vector<int32_t> order(static_cast<size_t>(c.vocab));
  for (int i = 0; i < c.vocab; ++i) order[static_cast<size_t>(i)] = i;
  bufs.emplace_back(reinterpret_cast<uint8_t*>(order.data()), reinterpret_cast<uint8_t*>(order.data()) + order.size() * 4);
  ts.push_back({"vocab_by_frequency", io::StDType::kI32, {c.vocab}, bufs.back()});
  io::write_safetensors(path, ts,
                        {{"format", "indexshare-mtp/1"}, {"model_fingerprint", fp}, {"d_model", std::to_string(d)},
                         {"n_heads", std::to_string(c.n_heads)}, {"n_kv_heads", std::to_string(c.n_kv_heads)},
                         {"head_dim", std::to_string(c.head_dim)}, {"ffn_dim", std::to_string(c.ffn_dim)},
                         {"rope_theta", std::to_string(c.rope_theta)}, {"rms_eps", std::to_string(c.rms_eps)},
                         {"indexer_heads", "4"}, {"indexer_head_dim", "32"}, {"indexer_rope_dim", "16"}});
  return path;
}

class CmdSpeculate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = io::default_model_path();
    if (!fs::exists(model_)) return;
    const auto c = io::llama_config_from_gguf(*io::load_llama(model_).file);
    head_ = write_random_head("cmd_speculate_head.safetensors", c, io::model_fingerprint(model_));
    other_ = write_random_head("cmd_speculate_other.safetensors", c, "fnv1a64:0:1");
  }
  void SetUp() override {
    if (!fs::exists(model_)) GTEST_SKIP() << "model not on this machine: " << model_;
  }
  static std::string model_, head_, other_;
};
std::string CmdSpeculate::model_, CmdSpeculate::head_, CmdSpeculate::other_;

TEST_F(CmdSpeculate, GenerateWithAHeadPrintsThePlainGreedyText) {
  const std::string prompt = "-p \"def add(a, b):\\n    return a + b\\n\\ndef sub(a, b):\" -n 24";
  const auto plain = run_tool("-t 2 generate " + prompt, "2>/dev/null");
  ASSERT_EQ(plain.exit_code, 0);
  for (const std::string extra : {"--draft 1", "--draft 3 --draft-vocab 1000", "--draft 2 --draft-weights stored",
                                  "--draft 2 --draft-attention indexer --draft-topk 8",
                                  "--draft 2 --dsa --oracle --dsa-topk 8 --draft-attention share-target"}) {
    const auto spec = run_tool("-t 2 generate " + prompt + " --mtp \"" + head_ + "\" " + extra, "2>/dev/null");
    EXPECT_EQ(spec.exit_code, 0) << extra;
    if (extra.find("--dsa") == std::string::npos) EXPECT_EQ(spec.out, plain.out) << extra;
  }
  // With DSA on the target, speculative == plain DSA decoding.
  const auto dsa_plain = run_tool("-t 2 generate " + prompt + " --dsa --oracle --dsa-topk 8", "2>/dev/null");
  const auto dsa_spec = run_tool("-t 2 generate " + prompt + " --dsa --oracle --dsa-topk 8 --mtp \"" + head_ +
                                     "\" --draft 2 --draft-attention share-target",
                                 "2>/dev/null");
  EXPECT_EQ(dsa_spec.out, dsa_plain.out);
  const auto report = run_tool("-t 2 generate " + prompt + " --mtp \"" + head_ + "\" --draft 2", "2>&1 >/dev/null");
  EXPECT_NE(report.out.find("tokens per target forward"), std::string::npos) << report.out;
}

TEST_F(CmdSpeculate, SpeculateReportsEveryConfigurationAndChecksOutputs) {
  const std::string json = ::testing::TempDir() + "cmd_speculate.json";
  const auto r = run_tool("-t 2 speculate --mtp \"" + head_ + "\" --domains python --windows 1 --ctx 192 --new 12 "
                          "--drafts 1,2 --dsa-topk 32 --draft-vocab 2000 --indexers \"" +
                              std::string(INDEXSHARE_SOURCE_DIR) +
                              "/data/indexers/SmolLM2-135M-Instruct.Q4_1.per-layer.safetensors\" --json \"" + json + "\"",
                          "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(std::ifstream(json));
  ASSERT_EQ(j["summary"].size(), 8u);  // 4 draft attentions x 2 lengths
  for (const auto& row : j["summary"]) {
    EXPECT_EQ(row["equal_outputs"], row["runs"]) << row.dump();
    const double len = row["acceptance_length"];
    const int64_t rounds = row["rounds"], accepted = row["accepted"];
    EXPECT_NEAR(len, 1.0 + static_cast<double>(accepted) / rounds, 1e-9);
    EXPECT_LE(accepted, static_cast<int64_t>(row["drafted"]));
    EXPECT_GE(len, 1.0);
    EXPECT_LE(len, 1.0 + static_cast<int>(row["draft"]));
  }
  EXPECT_EQ(j["domains"][0]["domain"], "python");
}

// The committed head (data/mtp/) drafts what the model says far more often than chance: a
// wrong Q/K row layout, RoPE pairing or hidden-state convention between the training script and
// the engine would bring acceptance down to a random head's (about 0 here).
TEST_F(CmdSpeculate, CommittedHeadDraftsWhatTheModelSays) {
  const std::string head = std::string(INDEXSHARE_SOURCE_DIR) + "/data/mtp/SmolLM2-135M-Instruct.Q4_1.mtp.safetensors";
  if (!fs::exists(head)) GTEST_SKIP() << "no committed head at " << head;
  const std::string json = ::testing::TempDir() + "cmd_speculate_committed.json";
  for (const std::string& h : {head, head_}) {
    const auto r = run_tool("-t 2 speculate --mtp \"" + h + "\" --domains python --windows 1 --ctx 256 --new 48 "
                            "--drafts 1 --draft-attention dense --dense-target --json \"" + json + "\"",
                            "2>/dev/null");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(std::ifstream(json));
    const double accepted = j["summary"][0]["accepted"], drafted = j["summary"][0]["drafted"];
    if (h == head) {
      EXPECT_GT(accepted / drafted, 0.15) << "the committed head";
    } else {
      EXPECT_LT(accepted / drafted, 0.05) << "a random head";
    }
  }
}

TEST_F(CmdSpeculate, BadInputIsAnErrorNamingIt) {
  auto expect = [](const std::string& args, const std::string& needle) {
    const auto r = run_tool("-t 2 " + args, "2>&1");
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  };
  const std::string g = "generate -p \"x = 1\" -n 4 ";
  expect(g + "--draft 2", "need --mtp FILE");
  expect(g + "--mtp \"" + other_ + "\"", "made for another model");
  expect(g + "--mtp \"" + head_ + "\" --draft-attention sideways", "--draft-attention must be dense, indexer");
  expect(g + "--mtp \"" + head_ + "\" --temp 0.7 --top-p 0.9", "samples by --temp alone");
  expect(g + "--mtp \"" + head_ + "\" --draft-attention share-target", "target runs dense attention");
  expect(g + "--mtp \"" + head_ + "\" --draft-weights int3", "--draft-weights must be q8_0 or stored");
  expect(g + "--mtp \"" + head_ + "\" --draft-vocab 100000", "draft vocabulary 100000 outside");
  expect("speculate --mtp \"" + head_ + "\" --drafts 0", "a draft length must be in [1, 16]");
  expect("speculate --mtp \"" + head_ + "\" --domains klingon", "klingon");
  expect("speculate --mtp \"" + head_ + "\" --dense-target --draft-attention share-target", "drop it with --dense-target");
  expect("speculate --mtp /nonexistent.safetensors", "/nonexistent.safetensors");
}

}  // namespace

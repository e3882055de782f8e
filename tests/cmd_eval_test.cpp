// Runs the built `indexshare eval` on the real model (skipped when it is not on the machine) at a
// small context with small random indexers: every mode is in the JSON with consistent counts,
// the pictures are PNG files, and bad inputs are errors naming the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/indexer_file.h"
#include "io/llama_gguf.h"
#include "run_tool.h"
#include "write_indexers.h"

namespace {

namespace fs = std::filesystem;
using indexshare::testing_util::run_tool;
using indexshare::testing_util::write_indexers;

// Uniform 1/n from layer 0 (what eval calls "uniform 1/n").
std::string uniform(int layers, int n) {
  std::string p;
  for (int l = 0; l < layers; ++l) p += l % n == 0 ? 'F' : 'S';
  return p;
}

std::string with_r(std::string p) {
  for (char& c : p)
    if (c == 'S') c = 'R';
  return p;
}

class CmdEval : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = indexshare::io::default_model_path();
    if (!fs::exists(model_)) return;
    const auto c = indexshare::io::llama_config_from_gguf(*indexshare::io::load_llama(model_).file);
    layers_ = c.n_layers;
    const std::string fp = indexshare::io::model_fingerprint(model_);
    per_layer_ = write_indexers("cmd_eval_per_layer.safetensors", layers_, c.d_model, fp);
    aware_ = write_indexers("cmd_eval_aware.safetensors", layers_, c.d_model, fp, uniform(layers_, 4));
    wrong_aware_ = write_indexers("cmd_eval_aware2.safetensors", layers_, c.d_model, fp, uniform(layers_, 2));
    reindex_ = write_indexers("cmd_eval_reindex.safetensors", layers_, c.d_model, fp, "", 1);
  }
  void SetUp() override {
    if (!fs::exists(model_)) GTEST_SKIP() << "model not on this machine: " << model_;
  }
  static std::string model_, per_layer_, aware_, wrong_aware_, reindex_;
  static int layers_;
};
std::string CmdEval::model_, CmdEval::per_layer_, CmdEval::aware_, CmdEval::wrong_aware_, CmdEval::reindex_;
int CmdEval::layers_ = 0;

TEST_F(CmdEval, EveryModeInJsonAndBothPictures) {
  const std::string out = ::testing::TempDir() + "cmd_eval_out";
  fs::remove_all(out);
  std::string searched = uniform(layers_, 4);
  searched[1] = 'F';
  searched[4] = 'S';
  const auto r = run_tool("-t 2 eval --ctx 128 --dsa-topk 16 --measure-stride 8 --probes --json -o \"" + out + "\" --indexers \"" +
                              per_layer_ + "\" --aware-indexers \"" + aware_ + "\" --searched-pattern " + searched +
                              " --reindexers \"" + reindex_ + "\" --candidates 32",
                          "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["modes"].size(), 10u);
  const std::vector<std::string> names = {"dense",       "oracle top-k", "DSA every layer", "uniform 1/2",
                                          "uniform 1/4", "uniform 1/8",  "searched 1/4",    "training-aware 1/4",
                                          "reindex 1/4", "searched 1/4 + R"};
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(j["modes"][i]["mode"], names[i]);
  const auto& m = j["modes"];
  EXPECT_EQ(double(m[0]["delta_vs_dense"]), 0.0);
  EXPECT_EQ(double(m[2]["delta_vs_dsa"]), 0.0);
  EXPECT_EQ(m[0]["indexer_calls"], 0);
  EXPECT_EQ(m[2]["indexer_calls"], layers_);
  EXPECT_EQ(m[4]["indexer_calls"], (layers_ + 3) / 4);
  EXPECT_EQ(m[6]["pattern"], searched);
  EXPECT_EQ(m[7]["pattern"], uniform(layers_, 4));
  // Reindex modes: the same F layers, every other layer R, re-scoring 32 candidates.
  EXPECT_EQ(m[8]["pattern"], with_r(uniform(layers_, 4)));
  EXPECT_EQ(m[9]["pattern"], with_r(searched));
  EXPECT_EQ(m[8]["indexer_calls"], (layers_ + 3) / 4);
  EXPECT_EQ(m[8]["reindex_calls"], layers_ - (layers_ + 3) / 4);
  EXPECT_EQ(m[8]["candidates"], 32);
  EXPECT_TRUE(m[4]["candidates"].is_null());
  EXPECT_EQ(j["reindex"]["candidates"], 32);
  // An R layer's indexer (1 head over 32 candidates) costs more than nothing, less than an F one.
  EXPECT_GT(double(m[8]["indexer_flops_per_token"]), double(m[4]["indexer_flops_per_token"]));
  EXPECT_LT(double(m[8]["indexer_flops_per_token"]), double(m[2]["indexer_flops_per_token"]));
  // The oracle's sets are the true attention's top-k: no learned set can hold more of its mass.
  EXPECT_GT(double(m[1]["recall"]), double(m[2]["recall"]));
  EXPECT_LE(double(m[1]["recall"]), 1.0 + 1e-6);
  // Fewer F layers, fewer indexer FLOPs.
  EXPECT_GT(double(m[2]["indexer_flops_per_token"]), double(m[3]["indexer_flops_per_token"]));
  EXPECT_GT(double(m[3]["indexer_flops_per_token"]), double(m[4]["indexer_flops_per_token"]));
  EXPECT_TRUE(m[2]["s_overlap"].is_null());
  EXPECT_GE(double(m[4]["s_overlap"]), 0.0);
  // Loss split: the classes partition the scored predictions (ctx - 1 - ctx/2 per window); dense against itself has no extra loss; each mode's shares add up to 1.
  for (const auto& mm : m) {
    const auto& ls = mm["loss_split_vs_dense"];
    ASSERT_EQ(ls.size(), 4u) << mm["mode"];
    int64_t n = 0;
    double share = 0.0;
    for (const auto& [name, c] : ls.items()) {
      n += int64_t(c["predictions"]);
      share += double(c["share_of_extra_nll"]);
      if (mm["mode"] == "dense") EXPECT_EQ(double(c["delta_nll"]), 0.0) << name;
    }
    EXPECT_EQ(n, int64_t(j["tokens_scored_per_window"])) << mm["mode"];
    if (mm["mode"] != "dense" && mm["delta_vs_dense"] != 0.0) EXPECT_NEAR(share, 1.0, 1e-9) << mm["mode"];
  }
  // Distance profile of the recorded modes (oracle, DSA every layer): shares in [0, 1], the last
  // bin ending at ctx.
  for (int i : {1, 2}) {
    const auto& bd = m[i]["selection_by_distance"];
    ASSERT_FALSE(bd.is_null()) << m[i]["mode"];
    EXPECT_EQ(bd["edges"].back(), 128);
    ASSERT_EQ(bd["rate"].size(), bd["edges"].size() - 1);
    for (const auto& v : bd["rate"])
      if (!v.is_null()) {
        EXPECT_GE(double(v), 0.0);
        EXPECT_LE(double(v), 1.0);
      }
  }
  EXPECT_FALSE(m[0].contains("selection_by_distance"));
  ASSERT_EQ(j["jaccard"].size(), static_cast<size_t>(layers_ * layers_));
  EXPECT_NEAR(double(j["jaccard"][0]), 1.0, 1e-12) << "a layer's sets equal themselves";
  // Probes: every mode has the five regions; copying makes the repeats easier than the first
  // copy for dense attention (a property of any language model that can copy).
  ASSERT_EQ(j["probes"].size(), 10u);
  for (const auto& pm : j["probes"]) ASSERT_EQ(pm["regions"].size(), 5u) << pm["mode"];
  const auto& dr = j["probes"][0]["regions"];
  EXPECT_EQ(dr[0]["region"], "first copy");
  EXPECT_EQ(dr[1]["region"], "repeats");
  EXPECT_LT(double(dr[1]["ppl"]), 0.5 * double(dr[0]["ppl"]));
  EXPECT_EQ(dr[2]["probe"], "passkey @ 10%");
  EXPECT_EQ(dr[4]["probe"], "passkey @ 90%");
  // The needle's share of each layer's sets at the answer rows: DSA modes only, one per layer.
  // The copy source's share in the repeats' rows likewise, under "copy_recall".
  EXPECT_FALSE(j["probes"][0].contains("needle_recall"));
  EXPECT_FALSE(j["probes"][0].contains("copy_recall"));
  for (size_t i = 1; i < 10; ++i) {
    for (const char* key : {"needle_recall", "copy_recall"}) {
      const auto& nr = j["probes"][i][key];
      ASSERT_EQ(nr.size(), std::string(key) == "needle_recall" ? 3u : 1u) << j["probes"][i]["mode"] << " " << key;
      for (const auto& [name, layers] : nr.items()) {
        ASSERT_EQ(layers.size(), static_cast<size_t>(layers_)) << name;
        for (const auto& v : layers) EXPECT_TRUE(double(v) >= 0.0 && double(v) <= 1.0) << name;
      }
    }
  }
  // With every key selected (k >= context) the copy source is always there: the oracle at k =
  // 128 of 128 is dense. Here k = 16 < the copy distance, so only check the range above.
  // Per-head recall: [layers x heads] for DSA modes, each in [0, 1], the heads' mean = the layer's recall.
  EXPECT_TRUE(m[0]["head_recall"].empty());
  for (int i : {1, 2, 4}) {
    const auto& hr = m[i]["head_recall"];
    const auto& lr = m[i]["layer_recall"];
    ASSERT_EQ(lr.size(), static_cast<size_t>(layers_));
    ASSERT_EQ(hr.size() % lr.size(), 0u);
    const size_t H = hr.size() / lr.size();
    ASSERT_GT(H, 1u);
    for (size_t l = 0; l < lr.size(); ++l) {
      double mean = 0.0;
      for (size_t h = 0; h < H; ++h) {
        const double v = hr[l * H + h];
        EXPECT_TRUE(v >= 0.0 && v <= 1.0 + 1e-6) << m[i]["mode"] << " layer " << l << " head " << h;
        mean += v / static_cast<double>(H);
      }
      EXPECT_NEAR(mean, double(lr[l]), 1e-9) << m[i]["mode"] << " layer " << l;
    }
  }
  ASSERT_EQ(j["pictures"].size(), 5u);
  for (const auto& pic : j["pictures"]) {
    std::ifstream f(pic.get<std::string>(), std::ios::binary);
    char sig[8] = {};
    f.read(sig, 8);
    EXPECT_EQ(std::string(sig + 1, 3), "PNG") << pic;
  }
}

TEST_F(CmdEval, BadInputsAreErrors) {
  auto expect_error = [](const std::string& args, const std::string& needle) {
    const auto r = run_tool(args, "2>&1 >/dev/null");
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  };
  const std::string ix = "eval --ctx 64 --indexers \"" + per_layer_ + "\" ";
  expect_error(ix + "--aware-indexers \"" + wrong_aware_ + "\"", "not " + uniform(layers_, 4));
  expect_error(ix + "--aware-indexers \"" + aware_ + "\" --dsa-topk 65", "larger than the context");
  expect_error(ix + "--aware-indexers \"" + aware_ + "\" --searched-pattern FSF", "3");
  expect_error(ix + "--aware-indexers \"" + aware_ + "\" --searched-pattern S" + std::string(layers_ - 1, 'F'),
               "first layer");
  const std::string empty = ::testing::TempDir() + "cmd_eval_empty_corpus";
  fs::create_directories(empty);
  expect_error(ix + "--aware-indexers \"" + aware_ + "\" --corpus \"" + empty + "\"", "no readable text");
  expect_error(ix + "--aware-indexers \"" + aware_ + "\" --modes \"uniform 1/3\"", "unknown mode 'uniform 1/3'");
  expect_error(ix + "--aware-indexers \"" + aware_ + "\" --reindexers \"" + reindex_ + "\" --candidates 8 --dsa-topk 16",
               "less than top-k");
  expect_error(ix + "--probes --passkey-depths 0.5,1.5", "depth 1.5 is outside [0, 1]");
}

TEST_F(CmdEval, ModesRunsOnlyTheNamedOnesAndTheBaselines) {
  const auto r = run_tool("-t 2 eval --ctx 96 --dsa-topk 16 --measure-stride 0 --json -o \"" + ::testing::TempDir() +
                              "cmd_eval_modes\" --indexers \"" + per_layer_ + "\" --aware-indexers \"" + aware_ +
                              "\" --reindexers \"" + reindex_ + "\" --modes \"reindex 1/4\"",
                          "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["modes"].size(), 3u);
  EXPECT_EQ(j["modes"][0]["mode"], "dense");
  EXPECT_EQ(j["modes"][1]["mode"], "DSA every layer");
  EXPECT_EQ(j["modes"][2]["mode"], "reindex 1/4");
  EXPECT_EQ(j["modes"][2]["candidates"], 32) << "default: 2 x top-k";
}

}  // namespace

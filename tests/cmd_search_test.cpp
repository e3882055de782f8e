// Runs the built `indexshare search` on the real model (skipped when it is not on the machine):
// a one-step search in JSON, and the errors for bad arguments, an indexer file made for another
// model or a training-aware one, and a corpus with no text.
#include <gtest/gtest.h>

#include "run_tool.h"
#include "write_indexers.h"
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "io/indexer_file.h"
#include "io/llama_gguf.h"
#include "share/schedule.h"

namespace {

using indexshare::testing_util::run_tool;
using indexshare::testing_util::write_indexers;

namespace fs = std::filesystem;

class CmdSearch : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = indexshare::io::default_model_path();
    if (!fs::exists(model_)) return;
    const auto f = indexshare::io::llama_config_from_gguf(*indexshare::io::load_llama(model_).file);
    layers_ = f.n_layers;
    d_model_ = f.d_model;
    fingerprint_ = indexshare::io::model_fingerprint(model_);
    good_ = write_indexers("cmd_search_good.safetensors", layers_, d_model_, fingerprint_);
  }
  void SetUp() override {
    if (!fs::exists(model_)) GTEST_SKIP() << "model not on this machine: " << model_;
  }
  static std::string model_, fingerprint_, good_;
  static int layers_, d_model_;
};
std::string CmdSearch::model_, CmdSearch::fingerprint_, CmdSearch::good_;
int CmdSearch::layers_ = 0, CmdSearch::d_model_ = 0;

TEST_F(CmdSearch, OneStepInJson) {
  const auto r = run_tool("search --indexers \"" + good_ + "\" --keep " + std::to_string(layers_ - 1) +
                              " --ctx 32 --dsa-topk 4 --windows 1 --json",
                          "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("keep").get<int>(), layers_ - 1);
  EXPECT_EQ(j.at("topk").get<int>(), 4);
  EXPECT_EQ(j.at("scored").get<int>(), 15);  // positions 16 .. 30
  ASSERT_EQ(j.at("steps").size(), 1u);
  const auto& st = j.at("steps")[0];
  EXPECT_EQ(st.at("candidates").size(), static_cast<size_t>(layers_ - 1));
  const int layer = st.at("layer").get<int>();
  EXPECT_GE(layer, 1);
  double best = 1e300;
  int best_layer = -1;
  for (const auto& c : st.at("candidates"))
    if (c.at("loss").get<double>() < best) best = c.at("loss").get<double>(), best_layer = c.at("layer").get<int>();
  EXPECT_EQ(layer, best_layer);
  const std::string pattern = j.at("pattern").get<std::string>();
  EXPECT_EQ(indexshare::share::Schedule::from_pattern(pattern).num_full(), layers_ - 1);
  EXPECT_EQ(pattern[static_cast<size_t>(layer)], 'S');
  EXPECT_DOUBLE_EQ(j.at("delta").get<double>(), j.at("loss").get<double>() - j.at("all_full_loss").get<double>());
}

TEST_F(CmdSearch, BadArgumentsAreErrors) {
  const std::string ix = "--indexers \"" + good_ + "\"";
  auto expect_error = [](const std::string& args, const std::string& needle) {
    const auto r = run_tool(args, "2>&1 >/dev/null");
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  };
  expect_error("search " + ix + " --keep 0", "--keep 0 outside");
  expect_error("search " + ix + " --keep " + std::to_string(layers_ + 1), "outside [1, " + std::to_string(layers_));
  expect_error("search " + ix + " --ctx 64 --dsa-topk 65", "--dsa-topk 65 exceeds --ctx 64");
  expect_error("search " + ix + " --ratio 1.5", "--ratio 1.5 outside");
  expect_error("search " + ix + " --keep 3 --ratio 0.5", "not both");
  const std::string other = write_indexers("cmd_search_other.safetensors", layers_, d_model_, "0123456789abcdef-1");
  expect_error("search --indexers \"" + other + "\" --ctx 32", "another model");
  std::string only(static_cast<size_t>(layers_), 'S');
  only[0] = 'F';
  const std::string aware = write_indexers("cmd_search_aware.safetensors", layers_, d_model_, fingerprint_, only);
  expect_error("search --indexers \"" + aware + "\" --keep 1 --ctx 32 --dsa-topk 4 --windows 1", "no indexer for layer 1");
  const std::string empty = ::testing::TempDir() + "cmd_search_empty_corpus";
  fs::create_directories(empty);
  expect_error("search " + ix + " --ctx 32 --corpus \"" + empty + "\"", "no readable text");
}

}  // namespace

// Runs the built `indexshare cost` command and checks what it prints.
#include <gtest/gtest.h>

#include "run_tool.h"
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

using indexshare::testing_util::run_tool;

TEST(CmdCost, JsonRatioAt1MIsInTheBand) {
  const auto r = run_tool("cost --preset glm5.2 --context 1048576 --json", "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  const double ratio = j.at("ratio").get<double>();
  EXPECT_GT(ratio, 2.5);
  EXPECT_LT(ratio, 3.0);
  EXPECT_EQ(j.at("schedule").at("num_full").get<int>(), 21);
  EXPECT_EQ(j.at("schedule").at("pattern").get<std::string>().substr(0, 7), "FFFSSSF");
  ASSERT_EQ(j.at("results").size(), 1u);
  const auto& res = j.at("results")[0];
  EXPECT_EQ(res.at("phase"), "decode");
  EXPECT_EQ(res.at("context").get<int64_t>(), 1048576);
  // The top-level ratio is the ratio of the totals printed beside it.
  const double sh = res.at("shared").at("flops").at("total").get<double>();
  const double full = res.at("all_full").at("flops").at("total").get<double>();
  EXPECT_DOUBLE_EQ(ratio, full / sh);
  EXPECT_DOUBLE_EQ(j.at("cache_bytes_per_token").at("shared").get<double>(), 78 * 656.0 + 21 * 132.0);
}

// A schedule with reindex layers from --pattern: the R terms are the closed form (C candidates,
// the R indexer's shape), and R layers without --candidates are refused.
TEST(CmdCost, ReindexPatternCostsItsCandidatesOnly) {
  std::string p = "F";
  for (int i = 0; i < 19; ++i) p += "RRRF";
  p += "R";  // 78 layers: 20 F, 58 R
  const auto r = run_tool("cost --preset glm5.2 --context 1M --pattern " + p +
                              " --candidates 8192 --reindex-heads 16 --reindex-dim 64 --json",
                          "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("schedule").at("num_reindex").get<int>(), 58);
  EXPECT_EQ(j.at("schedule").at("num_full").get<int>(), 20);
  const auto& res = j.at("results")[0];
  EXPECT_DOUBLE_EQ(res.at("keys_rescored").get<double>(), 8192.0);
  // GLM-5.2: hidden 6144, q_lora_rank 2048. R projections per layer: 2048 * 16 * 64 + 6144 * 64
  // + 6144 * 16 MACs; scores: 8192 candidates * 16 heads * (64 + 1) MACs.
  const double proj = 2.0 * 58 * (2048.0 * 16 * 64 + 6144.0 * 64 + 6144.0 * 16);
  const double score = 2.0 * 58 * 8192.0 * 16 * 65;
  EXPECT_DOUBLE_EQ(res.at("shared").at("flops").at("reindex_proj").get<double>(), proj);
  EXPECT_DOUBLE_EQ(res.at("shared").at("flops").at("reindex_score").get<double>(), score);
  const auto bad = run_tool("cost --preset glm5.2 --pattern " + p, "2>&1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("give --candidates"), std::string::npos) << bad.out;
}

TEST(CmdCost, SeveralContextsBothPhasesAndAConfigFile) {
  const std::string path = ::testing::TempDir() + "cmd_cost_test_config.json";
  {
    std::ofstream f(path);
    f << R"({"model_type": "deepseek_v32", "hidden_size": 16, "num_hidden_layers": 4,
      "num_attention_heads": 2, "q_lora_rank": 8, "kv_lora_rank": 8, "qk_nope_head_dim": 4,
      "qk_rope_head_dim": 2, "v_head_dim": 4, "intermediate_size": 32, "moe_intermediate_size": 8,
      "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
      "first_k_dense_replace": 1, "vocab_size": 50, "index_n_heads": 2, "index_head_dim": 4,
      "index_topk": 3, "index_topk_pattern": "FSFS", "brand_new_key": 1})";
  }
  const auto r = run_tool("cost --config '" + path + "' --context 10,2K --context 1M --phase both --json", "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.at("results").size(), 6u);
  EXPECT_EQ(j["results"][0]["context"].get<int64_t>(), 10);
  EXPECT_EQ(j["results"][0]["phase"], "decode");
  EXPECT_EQ(j["results"][1]["phase"], "prefill");
  EXPECT_TRUE(j["results"][1]["bytes_ratio"].is_null());
  EXPECT_EQ(j["results"][2]["context"].get<int64_t>(), 2048);
  EXPECT_EQ(j["results"][4]["context"].get<int64_t>(), 1048576);
  // Decode at L = 10 of this config is worked out by hand in cost_model_test (18992 FLOPs).
  EXPECT_DOUBLE_EQ(j["results"][0]["shared"]["flops"]["total"].get<double>(), 18992.0);
  EXPECT_EQ(j.at("schedule").at("summary"), "2 F / 2 S: FSFS");
  ASSERT_EQ(j.at("warnings").size(), 1u);
  EXPECT_NE(j["warnings"][0].get<std::string>().find("brand_new_key"), std::string::npos);
  std::remove(path.c_str());
}

TEST(CmdCost, TableNamesTheScheduleAndRatio) {
  const auto r = run_tool("cost --preset glm5.2 --context 128K", "2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("21 F / 57 S: FFFSSSF"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("decode at context 131072"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("indexer.score"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FLOP ratio (all-F / shared): 1.50"), std::string::npos) << r.out;
}

TEST(CmdCost, BadPresetFailsWithTheValidNames) {
  const auto r = run_tool("cost --preset glm9 --json", "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("unknown preset 'glm9'; valid presets: glm5, glm5.2, deepseek-v3.2"), std::string::npos)
      << r.out;
  const auto c = run_tool("cost --context 12Q", "2>&1");
  EXPECT_NE(c.exit_code, 0);
  EXPECT_NE(c.out.find("--context '12Q'"), std::string::npos) << c.out;
  const auto m = run_tool("cost --config /nonexistent/config.json", "2>&1");
  EXPECT_NE(m.exit_code, 0);
  EXPECT_NE(m.out.find("/nonexistent/config.json: cannot open"), std::string::npos) << m.out;
}

}  // namespace

// Runs the built `indexshare dsa-run` on a golden fixture and checks its perplexity and greedy
// token against values computed here from transformers' reference logits.
#include <gtest/gtest.h>

#include "run_tool.h"
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/safetensors.h"

namespace {

using indexshare::testing_util::run_tool;

const std::string kFx = std::string(INDEXSHARE_SOURCE_DIR) + "/tests/data/dsa_fixtures/glm_moe_dsa";

TEST(CmdDsaRun, PerplexityAndGreedyTokenMatchTheReference) {
  const auto ref = indexshare::io::SafetensorsFile::open(kFx + "/types_glm52/ref.safetensors");
  const auto ids = ref.read_i64("input_ids");
  const auto logits = ref.read_f32("logits");
  const int64_t T = static_cast<int64_t>(ids.size()), V = static_cast<int64_t>(logits.size()) / T;
  double nll = 0;
  for (int64_t t = 0; t + 1 < T; ++t) {
    double mx = -1e300, z = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(logits[t * V + v]));
    for (int64_t v = 0; v < V; ++v) z += std::exp(logits[t * V + v] - mx);
    nll += mx + std::log(z) - logits[t * V + ids[t + 1]];
  }
  nll /= static_cast<double>(T - 1);
  int64_t best = 0;
  for (int64_t v = 1; v < V; ++v)
    if (logits[(T - 1) * V + v] > logits[(T - 1) * V + best]) best = v;

  const std::string tok_path = ::testing::TempDir() + "cmd_dsa_run_ids.txt";
  {
    std::ofstream f(tok_path);
    for (int64_t v : ids) f << v << "\n";
  }
  const auto r = run_tool("dsa-run --config " + kFx + "/types_glm52/config.json --weights " + kFx +
                              "/model.safetensors --tokens-file " + tok_path + " --perplexity --generate 3 --json",
                          "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_NEAR(j.at("nll").get<double>(), nll, 1e-4);
  EXPECT_EQ(j.at("predictions").get<int64_t>(), T - 1);
  EXPECT_EQ(j.at("schedule").at("pattern").get<std::string>(), "FFFSSSF");
  EXPECT_EQ(j.at("indexer_calls").get<int>(), 4);
  ASSERT_EQ(j.at("generated").size(), 3u);
  EXPECT_EQ(j.at("generated")[0].get<int64_t>(), best);
}

TEST(CmdDsaRun, BadArgumentsFail) {
  auto r = run_tool("dsa-run --model " + kFx + "/all_full --tokens 1,2,x --perplexity", "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("'x' is not a token id"), std::string::npos) << r.out;
  r = run_tool("dsa-run --config " + kFx + "/all_full/config.json --weights " + kFx +
                   "/model.safetensors --tokens 1,2,999 --perplexity",
               "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("token id 999"), std::string::npos) << r.out;
  r = run_tool("dsa-run --model /nonexistent --tokens 1,2 --perplexity", "2>&1");
  EXPECT_NE(r.exit_code, 0);
  // Engine options: a cache too small for the run, an unknown device, fp8 weights on the CPU.
  const std::string m = "dsa-run --config " + kFx + "/all_full/config.json --weights " + kFx + "/model.safetensors";
  r = run_tool(m + " --tokens 1,2,3 --generate 2 --ctx 4", "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--ctx 4 is below the 5 tokens"), std::string::npos) << r.out;
  r = run_tool(m + " --tokens 1,2,3 --generate 2 --device tpu", "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--device: 'tpu'"), std::string::npos) << r.out;
  r = run_tool(m + " --tokens 1,2,3 --generate 2 --weights-format fp8", "2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("fp8 weights are not supported"), std::string::npos) << r.out;
}

// Several --tokens-file runs share one loaded model; --logits-out writes each one's last rows.
TEST(CmdDsaRun, SeveralTokenFilesAndLogitsOut) {
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "ids_a.txt") << "1 2 3 4 5";
  std::ofstream(dir + "ids_b.txt") << "7 8";
  const auto r = run_tool("dsa-run --config " + kFx + "/all_full/config.json --weights " + kFx +
                              "/model.safetensors --tokens-file " + dir + "ids_a.txt --tokens-file " + dir +
                              "ids_b.txt --logits-out " + dir + "lg.bin --logits-rows 2 --json",
                          "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.at("runs").size(), 2u);
  EXPECT_EQ(j.at("runs")[0].at("tokens").get<int64_t>(), 5);
  EXPECT_EQ(j.at("runs")[1].at("tokens").get<int64_t>(), 2);
  for (const char* f : {"lg.bin.0", "lg.bin.1"}) {
    std::ifstream in(dir + f, std::ios::binary | std::ios::ate);
    EXPECT_EQ(static_cast<int64_t>(in.tellg()), 2 * 256 * 4) << f;  // 2 rows x vocab 256 x f32
  }
}

}  // namespace

namespace {


// `generate` and `perplexity` accept a DSA model directory (config.json + safetensors) and take
// token ids, since such a directory has no tokenizer.
TEST(CmdDsaRun, GenerateAndPerplexityAcceptAModelDirectory) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "indexshare_dsa_dir_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(kFx + "/types_glm52/config.json", dir / "config.json");
  fs::copy_file(kFx + "/model.safetensors", dir / "model.safetensors");
  const auto ids = indexshare::io::SafetensorsFile::open(kFx + "/types_glm52/ref.safetensors").read_i64("input_ids");
  std::string list;
  for (int64_t v : ids) list += std::to_string(v) + " ";
  {
    std::ofstream(dir / "ids.txt") << list;
  }
  const auto direct = run_tool("dsa-run --model '" + dir.string() + "' --tokens-file '" + (dir / "ids.txt").string() +
                                   "' --perplexity --json", "2>/dev/null");
  const auto via = run_tool("perplexity -m '" + dir.string() + "' -f '" + (dir / "ids.txt").string() + "' --json",
                            "2>/dev/null");
  ASSERT_EQ(direct.exit_code, 0) << direct.out;
  ASSERT_EQ(via.exit_code, 0) << via.out;
  const auto jd = nlohmann::json::parse(direct.out), jv = nlohmann::json::parse(via.out);
  EXPECT_EQ(jv["perplexity"], jd["perplexity"]);
  EXPECT_EQ(jv["predictions"], jd["predictions"]);
  EXPECT_EQ(jv["indexer_calls"], jd["indexer_calls"]);
  const auto gen = run_tool("generate -m '" + dir.string() + "' --tokens '1 2 3' -n 2", "2>&1");
  EXPECT_EQ(gen.exit_code, 0) << gen.out;
  const auto bad = run_tool("generate -m '" + dir.string() + "' -p hello", "2>&1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("without a tokenizer"), std::string::npos) << bad.out;
  fs::remove_all(dir);
}

}  // namespace

// Runs the built `indexshare distill` on the real model (skipped when it is not on the machine) for
// one short sequence: the file it writes records the target it learnt, and bad target options are
// errors naming the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "io/indexer_file.h"
#include "io/llama_gguf.h"
#include "run_tool.h"

namespace {

namespace fs = std::filesystem;
using indexshare::testing_util::run_tool;

class CmdDistill : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = indexshare::io::default_model_path();
    if (!fs::exists(model_)) GTEST_SKIP() << "model not on this machine: " << model_;
  }
  std::string model_;
};

const std::string kSmall = "distill --seq-len 64 --sequences 1 --steps 1 --rows 8 ";

TEST_F(CmdDistill, TheFileRecordsTheTarget) {
  const std::string out = ::testing::TempDir() + "cmd_distill_blend.safetensors";
  fs::remove(out);
  const auto r = run_tool(kSmall + "--target blend --blend 0.25 -o \"" + out + "\"", "2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto f = indexshare::io::load_indexers(out, indexshare::io::model_fingerprint(model_));
  EXPECT_EQ(f.metadata.at("target"), "blend 0.25");
  EXPECT_NE(f.metadata.at("command").find("--blend 0.25"), std::string::npos) << f.metadata.at("command");
  EXPECT_EQ(f.metadata.at("mode"), "per-layer");
}

TEST_F(CmdDistill, BadTargetOptionsAreErrors) {
  const std::string out = ::testing::TempDir() + "cmd_distill_bad.safetensors";
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    fs::remove(out);
    const auto r = run_tool(kSmall + args + " -o \"" + out + "\"", "2>&1 >/dev/null");
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
    EXPECT_FALSE(fs::exists(out)) << args << ": nothing may be written";
  };
  expect_error("--target max --blend 0.5", "--blend is the max's weight of --target blend");
  expect_error("--target blend --blend 1.5", "--blend");
  expect_error("--target median", "--target");
}

}  // namespace

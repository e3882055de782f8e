// The tokenizer on the real SmolLM2-135M-Instruct vocabulary against llama.cpp's token ids
// (tests/data/tokenizer_golden.json, made by tests/golden/make_llamacpp_golden.sh). Skips when
// the model is not cached (run scripts/fetch_model.sh).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/tokenizer.h"

namespace indexshare::io {
namespace {

// INDEXSHARE_MODEL, else the file scripts/fetch_model.sh caches.
std::string model_path() {
  if (const char* m = std::getenv("INDEXSHARE_MODEL")) return m;
  std::string cache;
  if (const char* c = std::getenv("INDEXSHARE_CACHE")) {
    cache = c;
  } else if (const char* h = std::getenv("HOME")) {
    cache = std::string(h) + "/.cache/indexshare";
  }
  return cache + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

const Tokenizer* real_tokenizer() {
  static const std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    if (!std::filesystem::exists(model_path())) return nullptr;
    return std::make_unique<Tokenizer>(Tokenizer::from_gguf(GgufFile::open(model_path())));
  }();
  return tok.get();
}

#define REQUIRE_MODEL()                                                                   \
  const Tokenizer* tok = real_tokenizer();                                                \
  if (!tok) GTEST_SKIP() << "model not found at " << model_path()                         \
                         << "; run scripts/fetch_model.sh (or set INDEXSHARE_MODEL)"

nlohmann::json read_json(const std::string& name) {
  std::ifstream in(std::string(INDEXSHARE_SOURCE_DIR) + "/tests/data/" + name);
  EXPECT_TRUE(in.good()) << "tests/data/" << name << " is missing";
  return in.good() ? nlohmann::json::parse(in) : nlohmann::json::object();
}
nlohmann::json golden() { return read_json("tokenizer_golden.json"); }

TEST(TokenizerGolden, ModelMetadata) {
  REQUIRE_MODEL();
  EXPECT_EQ(tok->n_vocab(), 49152);
  EXPECT_EQ(tok->pre_tokenizer(), PreTokenizer::kDigits);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_EQ(tok->pad_id(), 2);
  EXPECT_FALSE(tok->add_bos());
  EXPECT_EQ(tok->token_text(1), "<|im_start|>");
  EXPECT_EQ(tok->token_type(1), TokenType::kControl);
  EXPECT_EQ(tok->token_type(17), TokenType::kNormal);
  EXPECT_EQ(tok->default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

TEST(TokenizerGolden, MatchesLlamaCppIds) {
  REQUIRE_MODEL();
  const nlohmann::json doc = golden();
  ASSERT_TRUE(doc.contains("cases"));
  ASSERT_GE(doc["cases"].size(), 30u);
  for (const auto& c : doc["cases"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::vector<int32_t> want = c["ids"];
    const std::vector<int32_t> got = tok->encode(text, false, c["parse_special"].get<bool>());
    EXPECT_EQ(got, want);
    EXPECT_EQ(tok->decode(got), text);
  }
}

TEST(TokenizerGolden, ChatTemplateGivesGoldenIds) {
  REQUIRE_MODEL();
  const nlohmann::json doc = golden();
  ASSERT_TRUE(doc.contains("cases"));
  for (const auto& c : doc["cases"]) {
    if (c["name"] != "chat_template") continue;
    const std::vector<ChatMessage> msgs = {{"user", "What is 2+2?"}};
    const std::string prompt = tok->format_chat(msgs, true);
    EXPECT_EQ(prompt, c["text"].get<std::string>());
    EXPECT_EQ(tok->encode(prompt, false, true), c["ids"].get<std::vector<int32_t>>());
    return;
  }
  ADD_FAILURE() << "no chat_template case in tokenizer_golden.json";
}

// The perplexity golden file records how many tokens llama.cpp made of the licence text.
TEST(TokenizerGolden, LicenceTextTokenCount) {
  REQUIRE_MODEL();
  const nlohmann::json doc = read_json("perplexity_golden.json");
  ASSERT_TRUE(doc.contains("text_tokens"));
  const std::string path = doc["text_file"];
  std::ifstream in(path, std::ios::binary);
  if (!in) GTEST_SKIP() << path << " is missing";
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!text.empty() && text.back() == '\n') text.pop_back();  // as llama-perplexity reads it
  const std::vector<int32_t> ids = tok->encode(text);
  EXPECT_EQ(static_cast<int64_t>(ids.size()), doc["text_tokens"].get<int64_t>());
  EXPECT_EQ(tok->decode(ids), text);
}

}  // namespace
}  // namespace indexshare::io

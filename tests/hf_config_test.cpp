#include "io/hf_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace indexshare::io {
namespace {

using nlohmann::json;

// GLM-5.2-style config (values from the reference notes, §f), without indexer_types.
const char* kGlm52 = R"({
  "architectures": ["GlmMoeDsaForCausalLM"],
  "model_type": "glm_moe_dsa",
  "hidden_size": 6144,
  "num_hidden_layers": 78,
  "num_attention_heads": 64,
  "num_key_value_heads": 64,
  "head_dim": 192,
  "q_lora_rank": 2048,
  "kv_lora_rank": 512,
  "qk_nope_head_dim": 192,
  "qk_rope_head_dim": 64,
  "v_head_dim": 256,
  "intermediate_size": 12288,
  "moe_intermediate_size": 2048,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "num_experts_per_tok": 8,
  "n_group": 1,
  "topk_group": 1,
  "routed_scaling_factor": 2.5,
  "norm_topk_prob": true,
  "first_k_dense_replace": 3,
  "vocab_size": 154880,
  "rms_norm_eps": 1e-05,
  "max_position_embeddings": 1048576,
  "rope_parameters": {"rope_type": "default", "rope_theta": 8000000},
  "rope_interleave": true,
  "indexer_rope_interleave": true,
  "index_n_heads": 32,
  "index_head_dim": 128,
  "index_topk": 2048,
  "index_topk_freq": 4,
  "index_skip_topk_offset": 3,
  "index_topk_pattern": null,
  "index_share_for_mtp_iteration": true,
  "num_nextn_predict_layers": 1,
  "tie_word_embeddings": false,
  "attention_bias": false,
  "torch_dtype": "bfloat16",
  "moe_router_dtype": "float32"
})";

// DeepSeek-V3.2 (values from the reference notes, §f).
const char* kDsv32 = R"({
  "architectures": ["DeepseekV32ForCausalLM"],
  "model_type": "deepseek_v32",
  "hidden_size": 7168,
  "num_hidden_layers": 61,
  "num_attention_heads": 128,
  "num_key_value_heads": 128,
  "q_lora_rank": 1536,
  "kv_lora_rank": 512,
  "qk_nope_head_dim": 128,
  "qk_rope_head_dim": 64,
  "v_head_dim": 128,
  "intermediate_size": 18432,
  "moe_intermediate_size": 2048,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "num_experts_per_tok": 8,
  "n_group": 8,
  "topk_group": 4,
  "topk_method": "noaux_tc",
  "scoring_func": "sigmoid",
  "norm_topk_prob": true,
  "routed_scaling_factor": 2.5,
  "first_k_dense_replace": 3,
  "moe_layer_freq": 1,
  "vocab_size": 129280,
  "rms_norm_eps": 1e-06,
  "max_position_embeddings": 163840,
  "rope_theta": 10000,
  "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                   "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
  "index_n_heads": 64,
  "index_head_dim": 128,
  "index_topk": 2048,
  "num_nextn_predict_layers": 1,
  "tie_word_embeddings": false,
  "ep_size": 1
})";

const char* kLlama = R"({
  "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
  "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152, "rope_theta": 100000,
  "tie_word_embeddings": true, "max_position_embeddings": 8192, "is_llama_config": true
})";

void expect_error(const std::string& text, const std::string& needle) {
  try {
    parse_hf_config(text, "dir/config.json");
    ADD_FAILURE() << "no error; expected one containing: " << needle;
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(needle), std::string::npos) << "message: " << m;
    EXPECT_EQ(m.rfind("dir/config.json: ", 0), 0u) << "message does not start with the file: " << m;
  }
}

std::string with(const char* base, const std::string& key, const json& value) {
  json j = json::parse(base);
  j[key] = value;
  return j.dump();
}
std::string without(const char* base, const std::string& key) {
  json j = json::parse(base);
  j.erase(key);
  return j.dump();
}

TEST(HfConfig, Glm52StyleConfig) {
  const auto c = parse_hf_config(kGlm52);
  EXPECT_EQ(c.family, ModelFamily::kGlmMoeDsa);
  EXPECT_TRUE(c.is_dsa());
  EXPECT_EQ(c.hidden_size, 6144);
  EXPECT_EQ(c.num_hidden_layers, 78);
  EXPECT_EQ(c.q_lora_rank, 2048);
  EXPECT_EQ(c.qk_nope_head_dim, 192);
  EXPECT_EQ(c.v_head_dim, 256);
  EXPECT_EQ(c.index_n_heads, 32);
  EXPECT_EQ(c.index_topk, 2048);
  EXPECT_EQ(c.index_topk_freq, 4);
  EXPECT_EQ(c.index_skip_topk_offset, 3);
  EXPECT_FALSE(c.index_topk_pattern.has_value());  // null = absent
  EXPECT_TRUE(c.indexer_rope_interleave);
  EXPECT_TRUE(c.rope_interleave);
  EXPECT_EQ(c.rope.theta, 8e6);
  EXPECT_EQ(c.rope.rope_type, "default");
  EXPECT_EQ(c.index_share_for_mtp_iteration, true);
  EXPECT_DOUBLE_EQ(*c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.schedule().num_full(), 21);
  EXPECT_EQ(c.schedule().pattern().substr(0, 7), "FFFSSSF");
  EXPECT_TRUE(c.schedule().is_full(74));
  EXPECT_FALSE(c.schedule().is_full(75));
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_TRUE(c.is_moe_layer(77));
  EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
}

TEST(HfConfig, DeepseekV32Config) {
  const auto c = parse_hf_config(kDsv32);
  EXPECT_EQ(c.family, ModelFamily::kDeepseekV32);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.num_attention_heads, 128);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_EQ(c.topk_method, "noaux_tc");
  EXPECT_FALSE(c.indexer_rope_interleave);  // absent -> NeoX pairing
  EXPECT_EQ(c.rope.rope_type, "yarn");      // older "type" spelling
  EXPECT_EQ(c.rope.theta, 10000.0);
  EXPECT_EQ(c.rope.factor, 40.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 4096);
  EXPECT_EQ(c.rope.beta_fast, 32.0);
  EXPECT_EQ(c.rope.beta_slow, 1.0);
  EXPECT_EQ(c.rope.mscale_all_dim, 1.0);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.schedule().num_full(), 61);  // no sharing keys: every layer F
  EXPECT_EQ(c.schedule().origin(), share::ScheduleOrigin::kFreqOffset);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_TRUE(c.warnings.empty());
}

TEST(HfConfig, ScheduleKeysFollowTheirPrecedence) {
  // Default offset with freq 4 on 61 layers: 16 F.
  EXPECT_EQ(parse_hf_config(with(kDsv32, "index_topk_freq", 4)).schedule().num_full(), 16);
  std::string pat(78, 'S');
  pat[0] = pat[10] = 'F';
  EXPECT_EQ(parse_hf_config(with(kGlm52, "index_topk_pattern", pat)).schedule().pattern(), pat);
  json types = json::array();
  for (int i = 0; i < 78; ++i) types.push_back(i % 2 ? "shared" : "full");
  json j = json::parse(kGlm52);
  j["indexer_types"] = types;
  j["index_topk_pattern"] = pat;
  const auto c = parse_hf_config(j.dump());
  EXPECT_EQ(c.schedule().num_full(), 39);
  EXPECT_EQ(c.schedule().origin(), share::ScheduleOrigin::kIndexerTypes);
}

// Reindex layers (ours): 'R' in the pattern needs index_reindex_candidates >= index_topk.
TEST(HfConfig, ReindexKeys) {
  std::string pat(78, 'R');
  pat[0] = pat[40] = 'F';
  json j = json::parse(kGlm52);
  j["index_topk_pattern"] = pat;
  expect_error(j.dump(), "has reindex (R) layers but 'index_reindex_candidates' is missing");
  j["index_reindex_candidates"] = 1024;
  expect_error(j.dump(), "index_reindex_candidates");
  j["index_reindex_candidates"] = 8192;
  j["index_reindex_n_heads"] = 8;
  j["index_reindex_head_dim"] = 64;
  const auto c = parse_hf_config(j.dump());
  EXPECT_EQ(c.schedule().num_reindex(), 76);
  EXPECT_EQ(c.index_reindex_candidates, 8192);
  EXPECT_EQ(c.index_reindex_n_heads, 8);
  EXPECT_EQ(c.index_reindex_head_dim, 64);
  EXPECT_TRUE(c.warnings.empty());
  expect_error(with(kGlm52, "index_reindex_candidate", 8192), "looks like an indexer key");
}

TEST(HfConfig, MlpLayerTypesAndNullQLora) {
  json j = json::parse(kGlm52);
  j["num_hidden_layers"] = 4;
  j["index_topk_freq"] = 1;
  j["mlp_layer_types"] = {"dense", "sparse", "dense", "sparse"};
  j["q_lora_rank"] = nullptr;
  const auto c = parse_hf_config(j.dump());
  EXPECT_FALSE(c.q_lora_rank.has_value());
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_THROW(c.is_moe_layer(4), Error);
}

TEST(HfConfig, LlamaConfig) {
  const auto c = parse_hf_config(kLlama);
  EXPECT_EQ(c.family, ModelFamily::kLlama);
  EXPECT_FALSE(c.is_dsa());
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.theta, 1e5);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("is_llama_config"), std::string::npos);
  EXPECT_THROW(c.schedule(), Error);
  EXPECT_FALSE(c.is_moe_layer(5));
}

TEST(HfConfig, UnknownKeysWarnOrFail) {
  const auto c = parse_hf_config(with(kGlm52, "some_new_flag", 3));
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("'some_new_flag'"), std::string::npos);
  expect_error(with(kGlm52, "index_topk_frequency", 4), "unknown key 'index_topk_frequency' looks like an indexer key");
  expect_error(with(kGlm52, "indexer_type", json::array({"full"})), "unknown key 'indexer_type'");
  expect_error(with(kDsv32, "index_skip_topk_ofset", 3), "'index_skip_topk_ofset'");
}

TEST(HfConfig, ErrorsNameFileAndKey) {
  expect_error("{not json", "invalid JSON");
  // A number past a double's range (found by fuzz/hf_config_fuzz): an Error, not json's exception.
  expect_error("{\"model_type\": \"llama\", \"hidden_size\": 641e308}", "invalid JSON");
  expect_error("[1, 2]", "expected a JSON object");
  expect_error(without(kGlm52, "model_type"), "missing required key 'model_type'");
  expect_error(with(kGlm52, "model_type", "qwen3"), "unknown model_type 'qwen3'; supported: glm_moe_dsa");
  expect_error(with(kGlm52, "model_type", 7), "key 'model_type': expected a string, got number");
  expect_error(without(kGlm52, "hidden_size"), "missing required key 'hidden_size' (model_type glm_moe_dsa)");
  expect_error(without(kDsv32, "index_topk"), "missing required key 'index_topk'");
  expect_error(without(kDsv32, "q_lora_rank"), "missing required key 'q_lora_rank'");
  expect_error(without(kDsv32, "first_k_dense_replace"), "'first_k_dense_replace' (or 'mlp_layer_types')");
  expect_error(with(kGlm52, "hidden_size", "6144"), "key 'hidden_size': expected an integer, got string");
  expect_error(with(kGlm52, "hidden_size", 6144.5), "key 'hidden_size': expected an integer, got number");
  expect_error(with(kGlm52, "num_hidden_layers", 0), "key 'num_hidden_layers': 0 must be >= 1");
  expect_error(with(kGlm52, "kv_lora_rank", nullptr), "key 'kv_lora_rank': is null");
  expect_error(with(kGlm52, "index_topk_freq", "4"), "key 'index_topk_freq': expected an integer");
  expect_error(with(kGlm52, "indexer_rope_interleave", 1), "key 'indexer_rope_interleave': expected true or false");
  expect_error(with(kGlm52, "rms_norm_eps", "1e-5"), "key 'rms_norm_eps': expected a number");
  expect_error(with(kGlm52, "indexer_types", "full"), "key 'indexer_types': expected an array of strings");
  expect_error(with(kGlm52, "indexer_types", json::array({"full", 1})), "key 'indexer_types': entry 1");
  expect_error(with(kGlm52, "index_topk_pattern", json::array({"F"})), "key 'index_topk_pattern': expected a string");
  expect_error(with(kGlm52, "rope_parameters", 5), "key 'rope_parameters': expected an object");
  expect_error(with(kGlm52, "rope_parameters", json{{"rope_theta", "big"}}), "key 'rope_parameters.rope_theta'");
  expect_error(with(kGlm52, "num_experts_per_tok", 300), "num_experts_per_tok': 300 exceeds n_routed_experts");
  expect_error(with(kGlm52, "qk_rope_head_dim", 256), "qk_rope_head_dim': 256 exceeds index_head_dim = 128");
  expect_error(with(kGlm52, "mlp_layer_types", json::array({"dense"})), "key 'mlp_layer_types': has 1 entries");
  // Schedule errors carry the file name too.
  expect_error(with(kGlm52, "index_topk_freq", 0), "index_topk_freq = 0 must be >= 1");
  expect_error(with(kGlm52, "index_skip_topk_offset", 0), "index_skip_topk_offset = 0 with index_topk_freq = 4");
  expect_error(with(kGlm52, "index_topk_pattern", "FFS"), "index_topk_pattern has length 3 but num_hidden_layers = 78");
  expect_error(with(kLlama, "num_key_value_heads", 4), "key 'num_key_value_heads': 4 does not divide");
}

TEST(HfConfig, ReadsAFile) {
  const std::string path = ::testing::TempDir() + "hf_config_test_config.json";
  {
    std::ofstream f(path);
    f << kGlm52;
  }
  const auto c = read_hf_config(path);
  EXPECT_EQ(c.source, path);
  EXPECT_EQ(c.schedule().num_full(), 21);
  std::remove(path.c_str());
  try {
    read_hf_config(path);
    ADD_FAILURE() << "no error for a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace indexshare::io

#include "cost/cost_model.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "cost/presets.h"
#include "io/hf_config.h"

namespace indexshare::cost {
namespace {

// A tiny DSA config whose cost is worked out by hand below.
// D 16, 4 layers, H 2, r_q 8, r_kv 8, nope 4, rope 2, v 4, dense I 32 (layer 0), MoE I 8 with
// 4 routed experts, top-2, 1 shared; vocab 50; indexer 2 heads x 4, top-k 3;
// freq 2, offset 1 -> F layers {0, 2}.
const char* kTiny = R"({
  "model_type": "glm_moe_dsa", "hidden_size": 16, "num_hidden_layers": 4,
  "num_attention_heads": 2, "q_lora_rank": 8, "kv_lora_rank": 8, "qk_nope_head_dim": 4,
  "qk_rope_head_dim": 2, "v_head_dim": 4, "intermediate_size": 32, "moe_intermediate_size": 8,
  "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
  "first_k_dense_replace": 1, "vocab_size": 50, "index_n_heads": 2, "index_head_dim": 4,
  "index_topk": 3, "index_topk_freq": 2, "index_skip_topk_offset": 1
})";

struct Tiny {
  io::HfConfig cfg = io::parse_hf_config(kTiny, "tiny");
  Arch arch = arch_from_config(cfg, "tiny");
};

TEST(CostModel, TinyConfigDecodeByHand) {
  Tiny t;
  ASSERT_EQ(t.cfg.schedule().pattern(), "FSFS");
  // Per-token MACs, by hand:
  //  indexer proj per F layer: wq_b 8*(2*4)=64, wk 16*4=64, weights_proj 16*2=32   -> 160
  //  indexer score per key per F layer: 2 heads * (4 dot + 1 weight) = 10; L = 10 keys -> 100
  //  attention proj per layer: q_a 16*8=128, q_b 8*2*6=96, kv_a 16*10=160,
  //                            kv_b absorbed 2*8*(4+4)=128, o 2*4*16=128          -> 640
  //  attention core per key: 2 heads * ((8+2) score + 8 value) = 36; min(3, 10) = 3 -> 108
  //  dense MLP (layer 0): 3*16*32 = 1536; MoE (layers 1..3): 16*4 + (2+1)*3*16*8 = 1216
  //  LM head: 16*50 = 800
  const auto c = token_cost(t.arch, t.cfg.schedule(), Phase::kDecode, 10);
  EXPECT_DOUBLE_EQ(c.flops.indexer_proj, 2 * 2 * 160.0);
  EXPECT_DOUBLE_EQ(c.flops.indexer_score, 2 * 2 * 100.0);
  EXPECT_DOUBLE_EQ(c.flops.attn_proj, 2 * 4 * 640.0);
  EXPECT_DOUBLE_EQ(c.flops.attn_core, 2 * 4 * 108.0);
  EXPECT_DOUBLE_EQ(c.flops.mlp_dense, 2 * 1536.0);
  EXPECT_DOUBLE_EQ(c.flops.mlp_moe, 2 * 3 * 1216.0);
  EXPECT_DOUBLE_EQ(c.flops.lm_head, 2 * 800.0);
  EXPECT_DOUBLE_EQ(c.flops.total(), 18992.0);
  EXPECT_EQ(c.keys_scored, 10.0);
  EXPECT_EQ(c.keys_attended, 3.0);
  // Bytes at 1 B per weight: weights 2*160 + 4*640 + 1536 + 3*1216 + 800 = 8864;
  // MLA entry 8 + 4 + 2*2 = 16 B, 4 layers * 3 keys; indexer entry 4 + 4 = 8 B, 2 F layers * 10.
  ASSERT_TRUE(c.bytes_modelled);
  EXPECT_DOUBLE_EQ(c.bytes.weights, 8864.0);
  EXPECT_DOUBLE_EQ(c.bytes.mla_cache, 4 * 3 * 16.0);
  EXPECT_DOUBLE_EQ(c.bytes.indexer_cache, 2 * 10 * 8.0);

  const auto cmp = compare(t.arch, t.cfg.schedule(), Phase::kDecode, 10);
  // All F: the indexer terms double (4 F layers), nothing else moves.
  EXPECT_DOUBLE_EQ(cmp.all_full.flops.total(), 18992.0 + 640 + 400);
  EXPECT_DOUBLE_EQ(cmp.ratio, 20032.0 / 18992.0);
  EXPECT_DOUBLE_EQ(cmp.all_full.bytes.total(), 8864.0 + 320 + 192 + 320);
  EXPECT_DOUBLE_EQ(cmp.bytes_ratio, (8864.0 + 320 + 192 + 320) / (8864.0 + 192 + 160));
  // Cache storage per token: 4 * 16 + 2 * 8.
  EXPECT_DOUBLE_EQ(cache_bytes_per_token(t.arch, t.cfg.schedule()), 80.0);
  // bf16 weights double the weight bytes only.
  CostOptions bf16;
  bf16.weight_bytes = 2;
  EXPECT_DOUBLE_EQ(token_cost(t.arch, t.cfg.schedule(), Phase::kDecode, 10, bf16).bytes.weights, 2 * 8864.0);
}

TEST(CostModel, TinyConfigPrefillByHand) {
  Tiny t;
  // L = 5, K = 3: token t scores t+1 keys (mean 3) and attends min(3, t+1): 1,2,3,3,3 (mean 2.4).
  const auto c = token_cost(t.arch, t.cfg.schedule(), Phase::kPrefill, 5);
  EXPECT_DOUBLE_EQ(c.keys_scored, 3.0);
  EXPECT_DOUBLE_EQ(c.keys_attended, 2.4);
  EXPECT_DOUBLE_EQ(c.flops.indexer_proj, 640.0);
  EXPECT_DOUBLE_EQ(c.flops.indexer_score, 2 * 2 * 3 * 10.0);
  EXPECT_DOUBLE_EQ(c.flops.attn_core, 2 * 4 * 2.4 * 36);
  EXPECT_DOUBLE_EQ(c.flops.lm_head, 1600.0 / 5);  // logits for the last position only
  EXPECT_DOUBLE_EQ(c.flops.total(), 640 + 120 + 5120 + 691.2 + 3072 + 7296 + 320);
  EXPECT_FALSE(c.bytes_modelled);
  EXPECT_EQ(c.bytes.total(), 0.0);
  // L <= K: everything is attended.
  const auto s = token_cost(t.arch, t.cfg.schedule(), Phase::kPrefill, 2);
  EXPECT_DOUBLE_EQ(s.keys_scored, 1.5);
  EXPECT_DOUBLE_EQ(s.keys_attended, 1.5);
  EXPECT_EQ(compare(t.arch, t.cfg.schedule(), Phase::kPrefill, 5).bytes_ratio, 1.0);
}

TEST(CostModel, ReindexLayersByHand) {
  Tiny t;
  const auto s = share::Schedule::from_pattern("FRSR");  // 1 F, 2 R, 1 S
  CostOptions o;
  EXPECT_THROW(token_cost(t.arch, s, Phase::kDecode, 10, o), Error) << "R layers need C >= k";
  o.candidates = 4;
  o.reindex_heads = 1;
  o.reindex_head_dim = 2;
  // R indexer 1 head x 2 dims: proj wq_b 8*2=16, wk 16*2=32, weights_proj 16*1=16 -> 64 MACs;
  // score per candidate 1 * (2 + 1) = 3 MACs; decode at L = 10 scores min(4, 10) = 4 candidates.
  const auto c = token_cost(t.arch, s, Phase::kDecode, 10, o);
  EXPECT_DOUBLE_EQ(c.flops.indexer_proj, 2 * 160.0);
  EXPECT_DOUBLE_EQ(c.flops.indexer_score, 2 * 100.0);
  EXPECT_DOUBLE_EQ(c.flops.reindex_proj, 2 * 2 * 64.0);
  EXPECT_DOUBLE_EQ(c.flops.reindex_score, 2 * 2 * 4 * 3.0);
  EXPECT_DOUBLE_EQ(c.flops.indexer(), 320 + 200 + 256 + 48);
  EXPECT_DOUBLE_EQ(c.keys_rescored, 4.0);
  // Bytes: R weights 2 * 64; R entries (2 + 4 B) read for 4 candidates on 2 layers.
  EXPECT_DOUBLE_EQ(c.bytes.weights, 8864.0 - 160 + 128);
  EXPECT_DOUBLE_EQ(c.bytes.indexer_cache, 10 * 8.0 + 2 * 4 * 6.0);
  EXPECT_DOUBLE_EQ(cache_bytes_per_token(t.arch, s, o), 4 * 16.0 + 8 + 2 * 6);
  // Prefill, L = 6, C = 4: candidates min(4, t + 1) = 1, 2, 3, 4, 4, 4 (mean 3).
  EXPECT_DOUBLE_EQ(token_cost(t.arch, s, Phase::kPrefill, 6, o).keys_rescored, 3.0);
  EXPECT_DOUBLE_EQ(token_cost(t.arch, s, Phase::kPrefill, 3, o).keys_rescored, 2.0);
  // An R layer with the F layer's shape and every key a candidate costs what an F layer costs.
  CostOptions wide;
  wide.candidates = 1000;
  for (Phase ph : {Phase::kDecode, Phase::kPrefill}) {
    const auto r = token_cost(t.arch, share::Schedule::from_pattern("FRRR"), ph, 10, wide);
    const auto f = token_cost(t.arch, share::Schedule::all_full(4), ph, 10, wide);
    EXPECT_DOUBLE_EQ(r.flops.total(), f.flops.total());
    EXPECT_DOUBLE_EQ(r.bytes.total(), f.bytes.total());
  }
}

TEST(CostModel, LlamaByHand) {
  const auto cfg = io::parse_hf_config(R"({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 2,
      "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16, "vocab_size": 10})");
  const auto a = arch_from_config(cfg, "llama-tiny");
  const auto s = share::Schedule::all_full(2);
  // Per layer: q 8*2*4=64, k and v 2*8*1*4=64, o 2*4*8=64 -> 192; core per key 2*2*4 = 16, 5 keys;
  // MLP 3*8*16 = 384. LM head 8*10 = 80.
  const auto c = token_cost(a, s, Phase::kDecode, 5);
  EXPECT_DOUBLE_EQ(c.flops.total(), 2 * (2 * (192 + 80 + 384) + 80.0));
  EXPECT_EQ(c.flops.indexer(), 0.0);
  EXPECT_DOUBLE_EQ(c.bytes.weights, 2 * (192 + 384) + 80.0);
  EXPECT_DOUBLE_EQ(c.bytes.mla_cache, 2 * 5 * (2 * 1 * 4) * 2.0);  // K and V, bf16
  EXPECT_EQ(compare(a, s, Phase::kDecode, 5).ratio, 1.0);
  EXPECT_THROW(token_cost(a, share::Schedule::from_pattern("FS"), Phase::kDecode, 5), Error);
}

TEST(CostModel, Glm52At1MIsBetween2p5And3xCheaperThanAllFull) {
  const auto cfg = preset_config("glm5.2");
  const auto a = arch_from_config(cfg, "glm5.2");
  ASSERT_EQ(cfg.schedule().num_full(), 21);
  const auto cmp = compare(a, cfg.schedule(), Phase::kDecode, 1048576);
  SCOPED_TRACE(testing::Message() << "ratio " << cmp.ratio);
  EXPECT_GT(cmp.ratio, 2.5);
  EXPECT_LT(cmp.ratio, 3.0);
  // The indexer is what shrinks: 21 of 78 layers keep it.
  EXPECT_DOUBLE_EQ(cmp.all_full.flops.indexer() / cmp.shared.flops.indexer(), 78.0 / 21.0);
  EXPECT_DOUBLE_EQ(cmp.all_full.flops.attn_core, cmp.shared.flops.attn_core);
  EXPECT_DOUBLE_EQ(cmp.all_full.flops.mlp_moe, cmp.shared.flops.mlp_moe);
  // The all-F baseline is GLM-5 (same shapes, every layer F).
  const auto g5 = preset_config("glm5");
  EXPECT_DOUBLE_EQ(token_cost(arch_from_config(g5, "glm5"), g5.schedule(), Phase::kDecode, 1048576).flops.total(),
                   cmp.all_full.flops.total());
  // Storage per token: 78 * 656 + 21 * 132 (spec §b: 53.9 KB).
  EXPECT_DOUBLE_EQ(cache_bytes_per_token(a, cfg.schedule()), 78 * 656.0 + 21 * 132.0);
}

TEST(CostModel, RatioGrowsWithContextAndVanishesWithoutSharing) {
  const auto cfg = preset_config("glm5.2");
  const auto a = arch_from_config(cfg, "glm5.2");
  double prev = 1.0;
  for (int64_t L : {1, 2048, 16384, 131072, 1048576}) {
    const double r = compare(a, cfg.schedule(), Phase::kDecode, L).ratio;
    EXPECT_GE(r, prev) << "L=" << L;
    prev = r;
  }
  EXPECT_LT(compare(a, cfg.schedule(), Phase::kDecode, 2048).ratio, 1.2);
  EXPECT_GT(compare(a, cfg.schedule(), Phase::kPrefill, 1048576).ratio, 2.0);
  const auto ds = preset_config("deepseek-v3.2");
  EXPECT_EQ(ds.schedule().num_full(), 61);
  EXPECT_EQ(compare(arch_from_config(ds, "ds"), ds.schedule(), Phase::kDecode, 1048576).ratio, 1.0);
  EXPECT_DOUBLE_EQ(cache_bytes_per_token(arch_from_config(ds, "ds"), ds.schedule()), 61 * 788.0);
}

TEST(CostModel, BadInput) {
  Tiny t;
  try {
    token_cost(t.arch, t.cfg.schedule(), Phase::kDecode, 0);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context = 0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(token_cost(t.arch, share::Schedule::all_full(5), Phase::kDecode, 4), Error);
  try {
    preset_config("glm6");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown preset 'glm6'; valid presets: glm5, glm5.2, deepseek-v3.2"),
              std::string::npos)
        << e.what();
  }
  for (const auto& n : preset_names()) EXPECT_TRUE(preset_config(n).warnings.empty()) << n;
}

}  // namespace
}  // namespace indexshare::cost

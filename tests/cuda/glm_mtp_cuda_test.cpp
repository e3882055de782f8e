// The GLM-MoE-DSA nextn (MTP) layer on the GPU: its logits against the transformers composition
// (tests/data/dsa_fixtures/glm_moe_dsa/mtp, see tests/glm_mtp_test.cpp) and the CPU, and greedy
// speculative decoding on the GPU equal to plain greedy decoding. f32 weights and caches: the
// CPU test's tolerance, 1e-4 x max(1, max|logit|) (summation order only).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/engine/cuda_backend.h"
#include "cuda_test_util.h"
#include "test_util.h"
#include "io/glm_dsa_loader.h"
#include "io/safetensors.h"
#include "model/glm_dsa.h"
#include "model/sampler.h"
#include "model/speculative.h"

namespace indexshare {
namespace {

using model::GlmDsaModel;

const std::string kFx = testing_util::glm_fixtures();

using testing_util::max_abs;
using testing_util::max_abs_diff;

// The fixture model and its MTP layer as a two-shard checkpoint directory.
struct MtpDir : testing_util::TempDir {
  MtpDir() : TempDir("is_mtp_cuda_") { testing_util::write_mtp_checkpoint(*this); }
};

TEST(GlmMtpCuda, MtpLayerMatchesTransformersAndTheCpu) {
  IS_REQUIRE_GPU();
  MtpDir dir;
  model::ModelOptions o;
  o.mtp = true;
  GlmDsaModel cpu = io::load_glm_dsa_dir(dir.path.string(), nullptr, nullptr, o);
  GlmDsaModel g = io::load_glm_dsa_dir(dir.path.string(), nullptr, cuda::make_cuda_backend(), o);
  const auto ref = io::SafetensorsFile::open(kFx + "/mtp/ref.safetensors");
  std::vector<int32_t> ids;
  for (int64_t v : ref.read_i64("input_ids")) ids.push_back(static_cast<int32_t>(v));
  const auto T = static_cast<int64_t>(ids.size());
  const auto want = ref.read_f32("mtp_logits");
  std::vector<float> hc, hg;
  model::ForwardOptions fo;
  auto cc = cpu.new_cache(), gc = g.new_cache();
  fo.hidden = &hc;
  cpu.forward(cc, ids, fo);
  fo.hidden = &hg;
  g.forward(gc, ids, fo);
  EXPECT_LE(max_abs_diff(hg, hc), 1e-4f * std::max(1.0f, max_abs(hc)));
  model::MtpCall c;
  c.T = T - 1;
  c.hidden = hc.data();
  c.next = ids.data() + 1;
  c.logit_rows = T - 1;
  const auto oc = cpu.mtp_forward(cc, c);
  const auto og = g.mtp_forward(gc, c);
  const float scale = std::max(1.0f, max_abs(want));
  const float d_ref = max_abs_diff(og.logits, want), d_cpu = max_abs_diff(og.logits, oc.logits);
  std::printf("MTP layer on the GPU: vs transformers %.3g, vs cpu %.3g (scale %.3g); top-k equal rows %s\n", d_ref,
              d_cpu, scale, og.topk == oc.topk ? "all" : "not all");
  EXPECT_EQ(og.topk, oc.topk);
  EXPECT_LE(d_ref, 1e-4f * scale);
  EXPECT_LE(d_cpu, 1e-4f * scale);
  // Forced sets of other widths (every earlier position: 1 .. 63 keys a row).
  std::vector<int32_t> dense(static_cast<size_t>((T - 1) * (T - 1)), -1);
  for (int64_t t = 0; t < T - 1; ++t)
    for (int64_t s = 0; s <= t; ++s) dense[static_cast<size_t>(t * (T - 1) + s)] = static_cast<int32_t>(s);
  c.sets = dense.data();
  c.set_width = static_cast<int>(T - 1);
  EXPECT_LE(max_abs_diff(g.mtp_forward(gc, c).logits, cpu.mtp_forward(cc, c).logits), 1e-4f * scale);
}

TEST(GlmMtpCuda, GreedySpeculativeDecodingEqualsPlainDecoding) {
  IS_REQUIRE_GPU();
  MtpDir dir;
  model::ModelOptions o;
  o.mtp = true;
  o.max_tokens = 512;
  GlmDsaModel g = io::load_glm_dsa_dir(dir.path.string(), nullptr, cuda::make_cuda_backend(), o);
  std::vector<int32_t> prompt;
  std::mt19937 rng(9);
  for (int i = 0; i < 40; ++i) prompt.push_back(static_cast<int32_t>(rng() % 256));
  const int kNew = 24;
  std::vector<int32_t> ref;
  {
    auto cache = g.new_cache();
    auto logits = g.forward(cache, prompt, {.logits = model::LogitRows::kLast});
    while (static_cast<int>(ref.size()) < kNew) {
      ref.push_back(model::greedy_token(logits));
      const int32_t one[1] = {ref.back()};
      logits = g.forward(cache, one);
    }
  }
  model::SpeculativeOptions so;
  model::SpeculativeDecoder dec(model::make_glm_pair(g), so);
  for (auto da : {model::DraftAttention::kShareStep0, model::DraftAttention::kIndexer, model::DraftAttention::kDense,
                  model::DraftAttention::kShareTarget})
    for (int N : {1, 3}) {
      SCOPED_TRACE(std::string(model::draft_attention_name(da)) + " N=" + std::to_string(N));
      dec.set_draft(N, da);
      EXPECT_EQ(dec.generate(prompt, kNew), ref);
    }
}

}  // namespace
}  // namespace indexshare

#include "io/llama_gguf.h"

#include <cstdlib>
#include <string>

#include "core/error.h"

namespace indexshare::io {

model::LlamaConfig llama_config_from_gguf(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  IS_CHECK(arch == "llama", f.name(), ": general.architecture is '", arch,
           "'; only the llama family is supported by this loader");
  model::LlamaConfig c;
  c.n_layers = static_cast<int>(f.get_int("llama.block_count"));
  c.d_model = static_cast<int>(f.get_int("llama.embedding_length"));
  c.n_heads = static_cast<int>(f.get_int("llama.attention.head_count"));
  c.n_kv_heads = static_cast<int>(f.get_int("llama.attention.head_count_kv", c.n_heads));
  c.ffn_dim = static_cast<int>(f.get_int("llama.feed_forward_length"));
  c.context_length = static_cast<int>(f.get_int("llama.context_length"));
  c.rope_theta = static_cast<float>(f.get_float("llama.rope.freq_base", 10000.0));
  c.rms_eps = static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon"));
  IS_CHECK(c.n_heads > 0, f.name(), ": llama.attention.head_count must be > 0");
  c.head_dim = c.d_model / c.n_heads;
  const int64_t rot = f.get_int("llama.rope.dimension_count", c.head_dim);
  IS_CHECK(rot == c.head_dim, f.name(), ": llama.rope.dimension_count = ", rot, " but head_dim = ", c.head_dim,
           " (partial rotary is not supported for llama)");
  IS_CHECK(!f.has("llama.rope.scaling.type") || f.get_string("llama.rope.scaling.type") == "none",
           f.name(), ": llama.rope.scaling.type '", f.get_string("llama.rope.scaling.type"), "' is not supported");
  const GgufTensorInfo& emb = f.tensor("token_embd.weight");
  IS_CHECK(emb.ne.size() == 2, f.name(), ": token_embd.weight must be 2-D");
  c.vocab = static_cast<int>(f.has("llama.vocab_size") ? f.get_int("llama.vocab_size") : emb.ne[1]);
  c.validate();
  return c;
}

namespace {

model::QMatrix matrix(const GgufFile& f, const std::string& name, int64_t N, int64_t K) {
  const GgufTensorInfo& t = f.tensor(name);
  IS_CHECK(t.ne.size() == 2 && t.ne[0] == K && t.ne[1] == N, f.name(), ": tensor ", name, " has shape [",
           t.ne.size() > 0 ? t.ne[0] : -1, ", ", t.ne.size() > 1 ? t.ne[1] : -1, "], expected [", K, ", ", N,
           "] (ggml order)");
  switch (t.type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
      break;
    default:
      fail(f.name(), ": tensor ", name, " has type ", ggml_type_name(t.type),
           ", which this engine does not compute on (supported: f32, f16, bf16, q4_1, q8_0)");
  }
  return {t.data.data(), t.type, N, K};
}

const float* vector_f32(const GgufFile& f, const std::string& name, int64_t n) {
  const GgufTensorInfo& t = f.tensor(name);
  IS_CHECK(t.type == GgmlType::kF32, f.name(), ": tensor ", name, " must be f32, is ", ggml_type_name(t.type));
  IS_CHECK(t.elements() == n, f.name(), ": tensor ", name, " has ", t.elements(), " elements, expected ", n);
  return reinterpret_cast<const float*>(t.data.data());
}

}  // namespace

LoadedLlama load_llama(std::shared_ptr<GgufFile> file) {
  const GgufFile& f = *file;
  const model::LlamaConfig c = llama_config_from_gguf(f);
  const int64_t d = c.d_model, qd = int64_t{c.n_heads} * c.head_dim, kd = int64_t{c.n_kv_heads} * c.head_dim;
  model::LlamaWeights w;
  w.token_embd = matrix(f, "token_embd.weight", c.vocab, d);
  w.output_norm = vector_f32(f, "output_norm.weight", d);
  w.output = f.find_tensor("output.weight") ? matrix(f, "output.weight", c.vocab, d) : w.token_embd;
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    model::LlamaLayerWeights L;
    L.attn_norm = vector_f32(f, p + "attn_norm.weight", d);
    L.wq = matrix(f, p + "attn_q.weight", qd, d);
    L.wk = matrix(f, p + "attn_k.weight", kd, d);
    L.wv = matrix(f, p + "attn_v.weight", kd, d);
    L.wo = matrix(f, p + "attn_output.weight", d, qd);
    L.ffn_norm = vector_f32(f, p + "ffn_norm.weight", d);
    L.w_gate = matrix(f, p + "ffn_gate.weight", c.ffn_dim, d);
    L.w_up = matrix(f, p + "ffn_up.weight", c.ffn_dim, d);
    L.w_down = matrix(f, p + "ffn_down.weight", d, c.ffn_dim);
    w.layers.push_back(L);
  }
  LoadedLlama out;
  out.file = std::move(file);
  out.model = std::make_unique<model::LlamaModel>(c, std::move(w));
  return out;
}

LoadedLlama load_llama(const std::string& path) {
  return load_llama(std::make_shared<GgufFile>(GgufFile::open(path)));
}

std::string default_model_path() {
  if (const char* m = std::getenv("INDEXSHARE_MODEL"); m && *m) return m;
  // The cache folder of scripts/fetch_model.sh: INDEXSHARE_CACHE, else ~/.cache/indexshare.
  if (const char* c = std::getenv("INDEXSHARE_CACHE"); c && *c) return std::string(c) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/indexshare/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace indexshare::io

#include "model/mtp.h"

#include <cstring>
#include <vector>

#include "core/error.h"
#include "ops/norm.h"
#include "ops/quant.h"

namespace indexshare::model {
namespace {

void check_matrix(const QMatrix& m, int64_t N, int64_t K, const char* name) {
  IS_CHECK(m.data != nullptr, "MTP head: ", name, " is missing");
  IS_CHECK(m.N == N && m.K == K, "MTP head: ", name, " has shape [", m.N, ", ", m.K, "], expected [", N, ", ", K,
           "] for this model");
}

void check_vector(const std::vector<float>& v, int64_t n, const char* name) {
  IS_CHECK(static_cast<int64_t>(v.size()) == n, "MTP head: ", name, " has ", v.size(), " values, expected ", n);
}

}  // namespace

void final_norm(const LlamaModel& m, const float* x, int64_t rows, float* y) {
  ops::NormParams p;
  p.x = x;
  p.weight = m.weights().output_norm;
  p.y = y;
  p.T = rows;
  p.n = m.config().d_model;
  p.eps = m.config().rms_eps;
  ops::rms_norm(p);
}

MtpHead::MtpHead(const LlamaModel& base, MtpWeights w, int draft_vocab, bool q8_0) : base_(base), w_(std::move(w)) {
  const LlamaConfig& b = base_.config();
  const int64_t d = b.d_model, q = int64_t{b.n_heads} * b.head_dim, kv = int64_t{b.n_kv_heads} * b.head_dim;
  check_vector(w_.enorm, d, "enorm");
  check_vector(w_.hnorm, d, "hnorm");
  check_vector(w_.shared_head_norm, d, "shared_head_norm");
  check_matrix(w_.eh_proj, d, 2 * d, "eh_proj");
  const LlamaLayerWeights& L = w_.block;
  IS_CHECK(L.attn_norm != nullptr && L.ffn_norm != nullptr, "MTP head: the block's norm weights are missing");
  check_matrix(L.wq, q, d, "block wq");
  check_matrix(L.wk, kv, d, "block wk");
  check_matrix(L.wv, kv, d, "block wv");
  check_matrix(L.wo, d, q, "block wo");
  check_matrix(L.w_gate, b.ffn_dim, d, "block w_gate");
  check_matrix(L.w_up, b.ffn_dim, d, "block w_up");
  check_matrix(L.w_down, d, b.ffn_dim, "block w_down");
  if (w_.indexer) {
    w_.indexer->cfg.validate();
    IS_CHECK(w_.indexer->cfg.d_model == b.d_model, "MTP head: its indexer reads d_model ", w_.indexer->cfg.d_model,
             " but the model's hidden size is ", b.d_model);
  }
  IS_CHECK(w_.vocab_by_frequency.empty() || static_cast<int64_t>(w_.vocab_by_frequency.size()) == b.vocab,
           "MTP head: vocab_by_frequency has ", w_.vocab_by_frequency.size(), " ids, the model's vocabulary ", b.vocab);
  if (!w_.vocab_by_frequency.empty()) {
    std::vector<uint8_t> seen(static_cast<size_t>(b.vocab), 0);
    for (int32_t id : w_.vocab_by_frequency) {
      IS_CHECK(id >= 0 && id < b.vocab && !seen[static_cast<size_t>(id)],
               "MTP head: vocab_by_frequency is not a permutation of the vocabulary (id ", id, ")");
      seen[static_cast<size_t>(id)] = 1;
    }
  }
  IS_CHECK(draft_vocab >= 0 && draft_vocab <= b.vocab, "MTP head: draft vocabulary ", draft_vocab, " outside [1, ",
           b.vocab, "]");
  if (q8_0) {
    auto requantise = [&](QMatrix& m, const char* name) {
      IS_CHECK(m.K % ops::kQK == 0, "MTP head: ", name, " has rows of ", m.K, " values, not a multiple of ", ops::kQK,
               " (Q8_0)");
      std::vector<float> row(static_cast<size_t>(m.K));
      std::vector<ops::BlockQ8_0> q(static_cast<size_t>(m.N * (m.K / ops::kQK)));
      const int64_t rb = ggml_row_bytes(m.type, m.K);
      for (int64_t n = 0; n < m.N; ++n) {
        ops::dequantize_row(m.type, static_cast<const uint8_t*>(m.data) + n * rb, row.data(), m.K);
        ops::quantize_row_q8_0(row.data(), q.data() + n * (m.K / ops::kQK), m.K);
      }
      q8_.push_back(std::move(q));
      m = QMatrix{q8_.back().data(), GgmlType::kQ8_0, m.N, m.K};
    };
    requantise(w_.eh_proj, "eh_proj");
    requantise(w_.block.wq, "block wq");
    requantise(w_.block.wk, "block wk");
    requantise(w_.block.wv, "block wv");
    requantise(w_.block.wo, "block wo");
    requantise(w_.block.w_gate, "block w_gate");
    requantise(w_.block.w_up, "block w_up");
    requantise(w_.block.w_down, "block w_down");
  }
  LlamaConfig c = b;
  c.n_layers = 1;
  LlamaWeights lw;
  lw.token_embd = base_.weights().token_embd;
  lw.output = base_.weights().output;
  if (draft_vocab > 0 && draft_vocab < b.vocab) {
    IS_CHECK(!w_.vocab_by_frequency.empty(), "MTP head: a reduced draft vocabulary needs the head file's ",
             "vocab_by_frequency (retrain or use the whole vocabulary)");
    ids_.assign(w_.vocab_by_frequency.begin(), w_.vocab_by_frequency.begin() + draft_vocab);
    const QMatrix& out = base_.weights().output;
    const int64_t rb = ggml_row_bytes(out.type, out.K);
    head_rows_.resize(static_cast<size_t>(rb * draft_vocab));
    for (int i = 0; i < draft_vocab; ++i)
      std::memcpy(head_rows_.data() + i * rb, static_cast<const uint8_t*>(out.data) + ids_[static_cast<size_t>(i)] * rb,
                  static_cast<size_t>(rb));
    lw.output = QMatrix{head_rows_.data(), out.type, draft_vocab, out.K};
    lw.token_embd = lw.output;  // not read: the head embeds through the base model
    c.vocab = draft_vocab;
  }
  lw.output_norm = w_.shared_head_norm.data();
  lw.layers = {w_.block};
  block_ = std::make_unique<LlamaModel>(c, std::move(lw));
}

void MtpHead::forward(const float* h, const int32_t* next, int64_t T, KvCache& cache, float* g, float* logits,
                      int64_t logit_rows, AttentionBackend* backend) const {
  IS_CHECK(T > 0, "MTP head: no rows");
  IS_CHECK(h != nullptr && next != nullptr, "MTP head: h or next is null");
  IS_CHECK(logit_rows >= 0 && logit_rows <= T, "MTP head: logit rows ", logit_rows, " outside [0, ", T, "]");
  IS_CHECK(logit_rows == 0 || logits != nullptr, "MTP head: logits is null");
  IS_CHECK(cache.layers() == 1, "MTP head: the KV cache was not reset for the MTP block (block_model())");
  const int64_t d = base_.config().d_model;
  thread_local std::vector<float> cat, u;
  cat.resize(static_cast<size_t>(T * 2 * d));
  u.resize(static_cast<size_t>(T * d));
  // [enorm(embed(next)) ; hnorm(h)] row by row.
  base_.embed_tokens(next, T, u.data());
  for (int64_t t = 0; t < T; ++t) {
    ops::NormParams p;
    p.T = 1;
    p.n = d;
    p.eps = base_.config().rms_eps;
    p.x = u.data() + t * d;
    p.weight = w_.enorm.data();
    p.y = cat.data() + t * 2 * d;
    ops::rms_norm(p);
    p.x = h + t * d;
    p.weight = w_.hnorm.data();
    p.y = cat.data() + t * 2 * d + d;
    ops::rms_norm(p);
  }
  matmul(w_.eh_proj, cat.data(), T, u.data());
  const int64_t pos0 = cache.length;
  block_->forward_layers(0, 1, u.data(), T, pos0, cache, backend);
  cache.length += T;
  if (g != nullptr) {
    ops::NormParams p;
    p.x = u.data();
    p.weight = w_.shared_head_norm.data();
    p.y = g;
    p.T = T;
    p.n = d;
    p.eps = base_.config().rms_eps;
    ops::rms_norm(p);
  }
  if (logit_rows > 0) block_->output_logits(u.data() + (T - logit_rows) * d, logit_rows, logits);
}

}  // namespace indexshare::model

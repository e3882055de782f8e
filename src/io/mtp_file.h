// MTP-head files (scripts/train_mtp.py writes them): safetensors with
//   enorm, hnorm, shared_head_norm [d] (F32), eh_proj [d, 2d],
//   block.attn_norm, block.ffn_norm [d] (F32),
//   block.wq [H*Dh, d], block.wk, block.wv [Hkv*Dh, d], block.wo [d, H*Dh],
//   block.w_gate, block.w_up [F, d], block.w_down [d, F]      (F16, BF16 or F32; Q/K rows in the
//                                                             GGUF adjacent-pair RoPE layout)
//   optionally indexer.wq [HI*DI, d], indexer.wk [DI, d], indexer.ww [HI, d] (F32)
//   optionally vocab_by_frequency [V] (I32): every token id, most frequent first in the training
//   text (for a reduced draft vocabulary, model/mtp.h)
// and metadata: format "indexshare-mtp/1", model_fingerprint (of the GGUF it was trained for),
// the block's shape (d_model, n_heads, n_kv_heads, head_dim, ffn_dim, rope_theta, rms_eps), the
// indexer's (indexer_heads, indexer_head_dim, indexer_rope_dim) when it has one, and provenance.
#pragma once

#include <map>
#include <string>

#include "model/mtp.h"

namespace indexshare::io {

struct MtpFile {
  model::MtpWeights weights;
  std::map<std::string, std::string> metadata;
};

// Loads and validates against the base model: format, fingerprint (when expected_fingerprint is
// non-empty), shapes and metadata that must match the model, dtypes; a missing or unknown tensor
// is an Error naming it. The matrices are viewed in place in the mapped file.
MtpFile load_mtp(const std::string& path, const model::LlamaModel& base, const std::string& expected_fingerprint = "");

}  // namespace indexshare::io

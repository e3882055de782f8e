// Sparse attention over per-row index sets (the attention half of DSA), CPU.
//
//   o[t, h] = sum_{s in S_t} softmax_s(scale * q[t, h] . k_s) * v_s,   S_t = valid indices[t, :]
//   lse[t, h] = ln sum_{s in S_t} exp(scale * q[t, h] . k_s)            (natural log)
//
// Index slots equal to -1 are empty; any other value must lie in [0, L). The softmax runs over
// the valid slots only, whatever their order. A row with no valid slot yields o = 0 and
// lse = -inf. Causality is the caller's business (the indices encode it).
#pragma once

#include <cstdint>

namespace indexshare::ops {

// GQA / MHA form: K and V per KV head; query head h reads KV head h / (H / H_kv).
struct SparseAttentionParams {
  const float* q = nullptr;          // [T, H, Dk]
  const float* k = nullptr;          // [L, H_kv, Dk]
  const float* v = nullptr;          // [L, H_kv, Dv]
  const int32_t* indices = nullptr;  // [T, K], -1 = empty slot; shared by all heads of a row
  int64_t T = 0, L = 0;
  int H = 0, H_kv = 0, Dk = 0, Dv = 0, K = 0;
  float scale = 1.0f;
  float* out = nullptr;              // [T, H, Dv]
  float* lse = nullptr;              // [T, H] nullable
};

// MLA absorbed form: one latent per token shared by every head. The key is the whole latent
// (Dqk = 576 = 512 "nope" + 64 rope in DeepSeek/GLM); the value is its first Dv (= 512).
struct SparseMlaParams {
  const float* q = nullptr;          // [T, H, Dqk]
  const float* kv = nullptr;         // [L, Dqk] latent per cached token
  const int32_t* indices = nullptr;  // [T, K], -1 = empty slot
  int64_t T = 0, L = 0;
  int H = 0, Dqk = 0, Dv = 0, K = 0;
  float scale = 1.0f;
  float* out = nullptr;              // [T, H, Dv]
  float* lse = nullptr;              // [T, H] nullable
};

void validate(const SparseAttentionParams& p);
void validate(const SparseMlaParams& p);
void sparse_attention(const SparseAttentionParams& p);
void sparse_mla(const SparseMlaParams& p);

}  // namespace indexshare::ops

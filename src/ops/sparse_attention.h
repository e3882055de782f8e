// Sparse attention over per-row index sets (the attention half of DSA), CPU.
//
//   o[t, h] = sum_{s in S_t} softmax_s(scale * q[t, h] . k_s) * v_s,   S_t = valid indices[t, :]
//   lse[t, h] = ln sum_{s in S_t} exp(scale * q[t, h] . k_s)            (natural log)
//
// Index slots equal to -1 are empty (anywhere in the row); any other value must lie in [0, L),
// else validate() throws naming the row, slot and value. The softmax runs over the valid slots
// only; their order does not matter beyond fp32 rounding. A row with no valid slot yields
// o = 0 and lse = -inf. Causality is the caller's business (the indices encode it).
//
// Duplicates: every valid slot is one term, so an index that appears twice in a row weighs
// twice (what a kernel that attends slot by slot does; top-k never emits duplicates).
// Only the cache rows named by valid slots are read.
//
// Numerics: fp32 with a max-subtracted online softmax (no overflow at any logit scale). A NaN
// in q, or in a key or value that a row reads, makes that row's affected heads NaN (out and
// lse); a +inf logit gives NaN; a -inf logit weighs 0. Results are bitwise identical for any
// thread count; the AVX2 and scalar paths agree to fp32 rounding.
//
// Pointers: q and out must be non-null when T > 0, indices when T * K > 0, the cache (k and v,
// or k16 and v16, or kv) when T * K > 0 and L > 0. out must not overlap the inputs.
#pragma once

#include <cstdint>

namespace indexshare::ops {

// GQA / MHA form: K and V per KV head; query head h reads KV head h / (H / H_kv).
struct SparseAttentionParams {
  const float* q = nullptr;          // [T, H, Dk]
  const float* k = nullptr;          // [L, H_kv, Dk]
  const float* v = nullptr;          // [L, H_kv, Dv]
  // An f16 cache (IEEE half, e.g. a Llama model's default KV cache) instead of k and v: set
  // both and leave k, v null. Values are widened exactly; the arithmetic is the f32 path's.
  const uint16_t* k16 = nullptr;     // [L, H_kv, Dk] nullable
  const uint16_t* v16 = nullptr;     // [L, H_kv, Dv] nullable
  const int32_t* indices = nullptr;  // [T, K], -1 = empty slot; shared by all heads of a row
  int64_t T = 0, L = 0;
  int H = 0, H_kv = 0, Dk = 0, Dv = 0, K = 0;
  float scale = 1.0f;
  float* out = nullptr;              // [T, H, Dv]
  float* lse = nullptr;              // [T, H] nullable
};

// MLA absorbed form: one latent per token shared by every head. The key is the whole latent
// (Dqk = 576 = 512 "nope" + 64 rope in DeepSeek/GLM); the value is its first Dv (= 512),
// Dv <= Dqk. Each gathered latent row is loaded once per row and used by all heads.
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

// Check sizes (> 0 for H, H_kv, D*, >= 0 for T, L, K), H % H_kv, Dv <= Dqk (MLA), a finite
// scale, the pointers above and every index; throw Error naming the culprit.
void validate(const SparseAttentionParams& p);
void validate(const SparseMlaParams& p);
// Validate, then compute out (and lse when non-null).
void sparse_attention(const SparseAttentionParams& p);
void sparse_mla(const SparseMlaParams& p);

}  // namespace indexshare::ops

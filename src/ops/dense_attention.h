// Dense causal attention with an online softmax (reference and fallback), CPU.
//
// Row t (absolute position q_start + t) attends to keys s in [0, min(L, q_start + t + 1)):
// keys past that bound, and past L, are never read. Output and lse (natural log) as in
// sparse_attention.h, with the same numerics (NaN, inf, thread-count independence); a row with
// no visible key (L = 0) gives o = 0, lse = -inf.
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct DenseAttentionParams {
  const float* q = nullptr;     // [T, H, Dk]
  const float* k = nullptr;     // [L, H_kv, Dk]
  const float* v = nullptr;     // [L, H_kv, Dv]
  const uint16_t* k16 = nullptr;  // [L, H_kv, Dk] IEEE half keys instead of k (nullable)
  const uint16_t* v16 = nullptr;  // [L, H_kv, Dv] IEEE half values instead of v (nullable)
  int64_t T = 0, L = 0;
  int H = 0, H_kv = 0, Dk = 0, Dv = 0;
  int64_t q_start = 0;  // absolute position of query row 0
  float scale = 1.0f;
  float* out = nullptr;         // [T, H, Dv]
  float* lse = nullptr;         // [T, H] nullable
};

// Sizes as in sparse_attention.h, q_start >= 0; q and out non-null when T > 0, and when also
// L > 0 either k and v (f32) or k16 and v16 (half: the cache of a model that stores K/V in
// f16; values are widened exactly, the arithmetic is the f32 path's). Throws Error naming the
// culprit.
void validate(const DenseAttentionParams& p);
void dense_attention(const DenseAttentionParams& p);

}  // namespace indexshare::ops

// Head-averaged causal attention probabilities, CPU: the distillation target of DSA's dense
// warm-up and the reference for oracle top-k and attention-mass recall.
//
//   P[t, s] = (1/H) sum_h softmax_s(scale * q[t, h] . k[s, h / (H / H_kv)]),  s <= q_start + t
//
// and P[t, s] = 0 for s > q_start + t (or s >= L). Each row sums to 1 (when it sees a key).
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct AttentionProbsParams {
  const float* q = nullptr;  // [T, H, D]
  const float* k = nullptr;  // [L, H_kv, D]
  int64_t T = 0, L = 0;
  int H = 0, H_kv = 0, D = 0;
  int64_t q_start = 0;
  float scale = 1.0f;
  float* P = nullptr;        // [T, ldp] out; columns [0, L) written
  int64_t ldp = 0;           // row stride; 0 means L
};

void attention_probs(const AttentionProbsParams& p);

}  // namespace indexshare::ops

// Head-averaged causal attention probabilities, CPU: the distillation target of DSA's dense
// warm-up and the reference for oracle top-k and attention-mass recall.
//
//   P[t, s] = (1/H) sum_h softmax_s(scale * q[t, h] . k[s, h / (H / H_kv)]),  s <= pos(t)
//
// or, with max_weight = w > 0, a blend with the heads' maximum renormalised to a distribution:
//
//   P[t, s] = (1 - w) mean_h A_h[t, s] + w max_h A_h[t, s] / sum_s' max_h A_h[t, s'],
//   A_h = softmax_s(scale * q[t, h] . k[s, .])
//
// (w = 1: a key that one head needs weighs as much as one that every head needs: the target for
// an indexer whose top-k must serve every head; 0 < w < 1 keeps some of the mean's weight on keys
// many heads read a little).
//
// and P[t, s] = 0 for s > pos(t) (or s >= L), where pos(t) = q_start + t, or pos[t] when a
// position list is given (rows picked out of a longer sequence). Each row sums to 1 (when it
// sees a key). Threads split the rows; a row's arithmetic depends only on its own q, its
// position and k, so results are bitwise identical for any thread count and any batching of
// rows (one call for many rows equals one call per row).
#pragma once

#include <cstdint>

namespace indexshare::ops {

struct AttentionProbsParams {
  const float* q = nullptr;  // [T, ldq]: row t holds [H, D]
  const float* k = nullptr;  // [L, H_kv, D]
  int64_t T = 0, L = 0;
  int H = 0, H_kv = 0, D = 0;
  int64_t q_start = 0;
  float scale = 1.0f;
  float* P = nullptr;        // [T, ldp] out; columns [0, L) written
  int64_t ldp = 0;           // row stride; 0 means L
  int64_t ldq = 0;           // row stride of q in floats; 0 means H * D
  const int64_t* pos = nullptr;  // [T] nullable: row t's position (else q_start + t)
  float max_weight = 0.0f;   // w in [0, 1]: 0 the heads' mean, 1 their renormalised maximum
};

void attention_probs(const AttentionProbsParams& p);

}  // namespace indexshare::ops

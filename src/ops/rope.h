// Rotary position embedding on a slice of each head, in place, CPU.
//
// The rotated slice is dims [rot_offset, rot_offset + rot_dim) of every head; the rest pass
// through. Pair j (j < rot_dim / 2) turns by angle pos * inv_freq[j], with
// inv_freq[j] = theta^(-2j / rot_dim) unless a table is given (YaRN and friends):
//   kHalfSplit  (NeoX, DeepSeek-V3.2 indexer): dims (j, j + rot_dim/2)
//   kInterleaved (GPT-J, GLM indexer, MLA):    dims (2j, 2j + 1)
//   y_a = x_a cos - x_b sin,  y_b = x_b cos + x_a sin.
//
// Precision: inv_freq (from theta, or the given table widened) and the angle pos * inv_freq
// are double, and cos / sin are rounded to float once, so the error does not grow with the
// position: the output stays within a few float ulps of |x| of the exact rotation at any
// position up to 2^53 (tests check 1M with theta 8e6). With theta, inv_freq is not rounded to
// float; pass a float table to reproduce a framework that rounds it (e.g. HF in fp32).
// The dims outside the slice are not touched.
#pragma once

#include <cstdint>

namespace indexshare::ops {

enum class RopePairing { kHalfSplit, kInterleaved };

struct RopeParams {
  float* x = nullptr;                   // [T, H, head_dim], rotated in place
  const int64_t* positions = nullptr;   // [T] nullable: absolute positions; else pos0 + t
  int64_t pos0 = 0;
  int64_t T = 0;
  int H = 0, head_dim = 0;
  int rot_offset = 0, rot_dim = 0;  // rot_dim even, slice inside the head
  float theta = 10000.0f;
  const float* inv_freq = nullptr;      // [rot_dim / 2] nullable: overrides theta
  RopePairing pairing = RopePairing::kHalfSplit;
};

// rot_dim > 0 and even, the slice inside head_dim, theta finite > 0 (or a finite table),
// positions (or pos0 + t) in [0, 2^53], x non-null when T > 0; throws Error naming the culprit.
void validate(const RopeParams& p);
void rope(const RopeParams& p);

}  // namespace indexshare::ops

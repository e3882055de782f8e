// Rotary position embedding on a slice of each head, in place, CPU.
//
// The rotated slice is dims [rot_offset, rot_offset + rot_dim) of every head; the rest pass
// through. Pair j (j < rot_dim / 2) turns by angle pos * inv_freq[j], with
// inv_freq[j] = theta^(-2j / rot_dim) unless a table is given (YaRN and friends):
//   kHalfSplit  (NeoX, DeepSeek-V3.2 indexer): dims (j, j + rot_dim/2)
//   kInterleaved (GPT-J, GLM indexer, MLA):    dims (2j, 2j + 1)
//   y_a = x_a cos - x_b sin,  y_b = x_b cos + x_a sin.
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

void validate(const RopeParams& p);
void rope(const RopeParams& p);

}  // namespace indexshare::ops

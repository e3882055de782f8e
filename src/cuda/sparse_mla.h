// Sparse MLA attention, absorbed (MQA) form, on the GPU (the CUDA twin of ops::sparse_mla).
//
//   o[t, h]   = sum_{s in S_t} softmax_s(scale * q[t, h] . kv[s]) * kv[s, :Dv]
//   lse[t, h] = ln sum_{s in S_t} exp(scale * q[t, h] . kv[s])          (natural log)
//
// S_t = the valid entries of indices[t, :] (-1 = empty slot; any value outside [0, L) is
// treated as empty too, since a kernel cannot raise). A row with no valid slot gives o = 0 and
// lse = -inf. bf16 q and latent, fp32 accumulation and output. Decode and prefill are the same
// kernel: every query row has its own index set. Dqk = 576 and Dv = 512 (DeepSeek-V3.2 / GLM-5);
// H a multiple of 16. One block per (row, group of 64 heads); tensor cores (mma.sync bf16).
#pragma once

#include <cstdint>

namespace indexshare::cuda {

inline constexpr int kMlaDqk = 576;
inline constexpr int kMlaDv = 512;

struct SparseMlaCudaParams {
  const uint16_t* q = nullptr;        // [T, H, Dqk] bf16 bits
  const uint16_t* kv = nullptr;       // [L, Dqk] bf16 latent per cached token (value = first Dv)
  const int32_t* indices = nullptr;   // [T, K], -1 = empty slot
  int64_t T = 0, L = 0;
  int H = 0, K = 0;
  int Dqk = kMlaDqk, Dv = kMlaDv;
  float scale = 1.0f;
  float* out = nullptr;               // [T, H, Dv] fp32
  float* lse = nullptr;               // [T, H] nullable, natural log
  void* stream = nullptr;             // cudaStream_t, nullptr = default stream
};

void validate(const SparseMlaCudaParams& p);
void sparse_mla_cuda(const SparseMlaCudaParams& p);

}  // namespace indexshare::cuda

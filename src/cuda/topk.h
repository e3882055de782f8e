// Exact top-k over fp32 score rows on the GPU (the CUDA twin of ops/topk.h).
//
// Same conventions as the CPU op: -inf is masked, rows with fewer than k valid candidates are
// padded with -1 and count[t] says how many slots are valid, ties go to the lower position,
// output order is descending score then ascending position. One difference: NaN is treated as
// masked here (the CPU op throws), since a kernel cannot raise.
//
// Method: radix select on the scores' order-preserving bits, with the position as tiebreak
// (see docs/cuda.md). Rows of any length (1M and more) are split over several blocks:
//   1. histogram of the top 12 key bits per row (all blocks of a row add into it);
//   2. per row, the bin holding the k-th largest;
//   3. every block re-reads its chunk: candidates above that bin go straight to the row's
//      result, candidates inside it to a small per-row buffer;
//   4. one block per row resolves the bin exactly (the buffer, or the row itself when the bin
//      overflows the buffer), sorts the k winners and writes indices and count.
// All device pointers; the call is asynchronous on `stream`.
#pragma once

#include <cstddef>
#include <cstdint>

namespace indexshare::cuda {

inline constexpr int kTopkMaxK = 4096;

// Both methods give the same exact result; they differ in memory traffic.
enum class TopkMethod : int {
  kAuto = 0,       // sampled for >= 32M scores in rows of 32K..512K, else two-pass
  kTwoPass = 1,    // steps 1-4 below: two reads of every row
  kSampled = 2,    // one read: a 1/8 sample of each row picks a safe cut, one pass keeps the
                   // candidates above it, an exact select finishes; rows where the cut misses
                   // (too few or too many candidates, e.g. heavy ties) rerun two-pass
};

struct TopkCudaParams {
  const float* scores = nullptr;    // [T, ld] fp32, candidates are columns [0, L)
  const int32_t* row_len = nullptr; // [T] nullable: row t has candidates [0, min(row_len[t], L))
  int64_t T = 0;
  int64_t L = 0;
  int64_t ld = 0;                   // row stride in floats (>= L); 0 means L
  int k = 0;                        // 1 <= k <= kTopkMaxK (k = 0 writes nothing)
  int32_t* indices = nullptr;       // [T, k] out: positions, -1 = empty slot
  int32_t* count = nullptr;         // [T] out, nullable: valid slots per row
  void* workspace = nullptr;        // topk_workspace_bytes(T, k) bytes of device memory
  size_t workspace_bytes = 0;
  void* stream = nullptr;           // cudaStream_t, nullptr = default stream
  TopkMethod method = TopkMethod::kAuto;
};

// Bytes of device workspace topk_cuda needs for T rows and this k.
size_t topk_workspace_bytes(int64_t T, int k);

// Throws Error naming the bad argument.
void validate(const TopkCudaParams& p);
void topk_cuda(const TopkCudaParams& p);

// Top-k of pre-built composite candidates (see src/cuda/select.cuh): src [rows, n] uint64,
// 0 = empty. Used to merge the per-split results of the fused indexer + top-k.
void select_composites_cuda(const uint64_t* src, int64_t rows, int64_t n, int k,
                            int32_t* indices, int32_t* count, void* stream);

}  // namespace indexshare::cuda

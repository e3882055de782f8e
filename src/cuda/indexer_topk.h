// Fused lightning indexer + exact top-k on the GPU (the CUDA twin of ops/indexer_topk.h).
//
// Gives the same indices and counts as indexer_scores_cuda followed by topk_cuda, but never
// writes the [B, T, L] scores: each block scores its keys for a few query rows with the
// indexer main loop and keeps, per row, a shared-memory candidate buffer behind a running
// threshold (a new key enters only if it beats the current k-th best; the buffer is cut back
// to the exact top-k by a radix select when it fills). Each (row, key split) leaves its exact
// top-k of that split; one block per row merges the splits. Memory: B*T*splits*k*8 bytes of
// workspace instead of B*T*L*4.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/indexer.h"

namespace indexshare::cuda {

inline constexpr int kIndexerTopkMaxK = 2048;

// Workspace bytes indexer_topk_cuda needs for these shapes and k.
size_t indexer_topk_workspace_bytes(const IndexerCudaParams& p, int k);

// indices: [B, T, k] out (-1 padded, descending score, ties by lower position);
// count: [B, T] out, nullable. 1 <= k <= kIndexerTopkMaxK.
void indexer_topk_cuda(const IndexerCudaParams& p, int k, int32_t* indices, int32_t* count,
                       void* workspace, size_t workspace_bytes);

}  // namespace indexshare::cuda

// Streaming lightning indexer + exact top-k, CPU.
//
// Produces exactly the sets (and order) of topk(indexer_scores(p)) without ever holding the
// [T, L] score matrix: each worker scores a tile of keys for a block of query rows and merges
// it into a running top-k per row. Scratch memory is O(T * k + rows_per_block * key_tile) per
// worker; indexer_topk_scratch_bytes() states the exact figure.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/indexer.h"

namespace indexshare::ops {

struct IndexerTopkOptions {
  int k = 0;
  int64_t key_tile = 4096;  // keys scored per step
  int64_t row_block = 16;   // query rows per step
};

// Bytes of scratch the call allocates (all workers together) for these sizes.
size_t indexer_topk_scratch_bytes(const IndexerParams& p, const IndexerTopkOptions& o, int threads);

// indices: [T, k] out (-1 padded); count: [T] out, nullable.
void indexer_topk(const IndexerParams& p, const IndexerTopkOptions& o, int32_t* indices,
                  int32_t* count);

}  // namespace indexshare::ops

// Streaming lightning indexer + exact top-k, CPU.
//
// Produces exactly the sets (and order) of topk(indexer_scores(p)) without ever holding the
// [T, L] score matrix: each worker scores a tile of keys for a block of query rows and merges
// it into a running top-k per row. Scratch memory is O(T * k + rows_per_block * key_tile) per
// worker; indexer_topk_scratch_bytes() states the exact figure.
//
// Conventions are those of topk.h (-inf masked, -1 padding and count = min(k, visible keys),
// lower position wins ties, descending score then ascending position). The scores are bitwise
// those of indexer_scores (see indexer.h), so the result is identical, for any key_tile,
// row_block and thread count. A NaN score among the visible keys of a row throws Error naming
// the lowest such row. Keys at or past L do not exist (row t has min(L, q_start + t + 1)
// candidates). Positions are int32, so L must be < 2^31.
//
// Scheme: work items are (row block, key split). When there are at least as many row blocks
// as threads, splits = 1; otherwise each row block's visible keys are cut into `splits`
// contiguous ranges so that decode (T small) still uses every thread. Each (row, split) keeps
// a candidate buffer of cap = min(2k, L) entries and a running threshold (the k-th best score
// kept so far): a key enters only if its score beats the threshold; a full buffer is cut back
// to its best k with nth_element. Splits are merged per row at the end.
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

// Bytes of scratch indexer_topk allocates (in one block, all workers together) when run with
// `threads` threads (indexer_topk uses num_threads()); 0 when T, L or k is 0. With
// rb = min(row_block, T), kt = min(key_tile, L), nrb = ceil(T / rb),
// splits = nrb >= threads ? 1 : min(ceil(threads / nrb), ceil(L / kt)),
// workers = min(threads, nrb * splits), cap = min(2k, L), each term rounded up to 64 bytes:
//   T * splits * (cap * 8 + 8 + 4)                                   candidates, counts, thresholds
// + workers * (rb * kt * 4                                        score tile
//              + indexer_tile_workspace_floats(p, rb) * 4            tile workspace
//              + min(k, L) * 8)                                      sort scratch
size_t indexer_topk_scratch_bytes(const IndexerParams& p, const IndexerTopkOptions& o, int threads);

// indices: [T, k] out (-1 padded); count: [T] out, nullable. Validates p (as indexer.h) and o
// (k >= 0, key_tile >= 1, row_block >= 1), L < 2^31, indices non-null when T * k > 0.
void indexer_topk(const IndexerParams& p, const IndexerTopkOptions& o, int32_t* indices,
                  int32_t* count);

}  // namespace indexshare::ops

// Internal: the blocked online-softmax attention driver shared by sparse_attention and
// dense_attention (not part of the public API).
//
// A "tile" is a set of query vectors that read the same key list: the heads of one row that
// share a KV head (or the MLA latent), and for dense attention several rows as well. Every key
// row of a block is fetched once and reused by all queries of the tile.
//
// Reproducibility: the result of a query depends only on its own inputs and on the key list
// (never on the other queries of the tile, the tile size or the SIMD register tiling), so the
// callers may cut tiles to suit the thread count and stay bitwise reproducible.
#pragma once

#include <cstdint>

namespace indexshare::ops::detail {

// Keys are consumed in blocks of this many list entries; dense attention relies on the block
// boundaries being multiples of kKeyBlock from the start of the list.
inline constexpr int kKeyBlock = 64;

struct AttnQuery {
  const float* q = nullptr;  // [Dqk]
  float* out = nullptr;      // [Dv], fully written
  float* lse = nullptr;      // [1] nullable
  int64_t n_keys = 0;        // the query sees list entries [0, n_keys)
  int group = 0;             // KV group (see AttnKeys); equal groups must be consecutive
};

// Token s, group g: key at k + s * k_stride + g * k_group ([Dqk]), value at
// v + s * v_stride + g * v_group ([Dv]). All groups of a token row are gathered together, so
// the row is fetched once (pages and prefetch streams shared) for every group of the tile.
// Keys and values are f32 (k, v) or IEEE half (k16, v16, same strides in elements): set one
// pair. Half values are widened exactly to f32; the arithmetic is the f32 path's on them.
struct AttnKeys {
  const float* k = nullptr;
  const float* v = nullptr;
  const uint16_t* k16 = nullptr;
  const uint16_t* v16 = nullptr;
  int64_t k_stride = 0, v_stride = 0;
  int64_t k_group = 0, v_group = 0;
  const int32_t* tokens = nullptr;  // [n] nullable: list entry j is token tokens[j], else j
  int64_t n = 0;                    // list length
};

// Online softmax attention of every query of the tile over its visible prefix of the list:
//   out = sum_j softmax_j(scale * q . k_j) v_j,  lse = ln sum_j exp(scale * q . k_j).
// A query that sees no key gets out = 0, lse = -inf. Uses AVX2+FMA when use_avx2().
void attend_tile(const AttnQuery* queries, int nq, const AttnKeys& keys, int Dqk, int Dv,
                 float scale);

// Part size (in heads) to cut each of `units` work items of `heads` query heads into so that
// every thread has work: whole KV groups of `group` heads when a part holds at least one,
// else a multiple of 4 heads. Returns `heads` when the units alone keep the threads busy.
int head_part_size(int64_t units, int heads, int group);

// Checks that a cache is given as f32 (k and v) or as f16 (k16 and v16), not a mix; Error names fn.
void check_kv_pair(const char* fn, const float* k, const float* v, const uint16_t* k16, const uint16_t* v16);

}  // namespace indexshare::ops::detail

// Internal helpers shared by topk.cpp and indexer_topk.cpp (not part of the public API).
//
// A candidate is packed into one 64-bit "composite" so that plain unsigned order is the top-k
// order of topk.h: the high 32 bits are an order-preserving code of the score (with -0.0
// folded onto +0.0, so the two compare equal as floats do), the low 32 bits are ~position, so
// that of two equal scores the lower position is the larger composite. Composites of distinct
// positions are distinct, which makes the selection exact and deterministic: the k largest
// composites, sorted descending, are the answer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>

namespace indexshare::ops::detail {

inline uint32_t score_key(float x) {
  if (x == 0.0f) x = 0.0f;  // -0.0 -> +0.0
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline float key_score(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// pos must lie in [0, 2^31).
inline uint64_t make_composite(float score, int64_t pos) {
  return (static_cast<uint64_t>(score_key(score)) << 32) |
         static_cast<uint32_t>(~static_cast<uint32_t>(pos));
}

inline int32_t composite_position(uint64_t c) {
  return static_cast<int32_t>(~static_cast<uint32_t>(c));
}

inline float composite_score(uint64_t c) { return key_score(static_cast<uint32_t>(c >> 32)); }

// Keeps the k largest of c[0, n) at the front (unordered); returns the new count min(n, k).
inline int64_t keep_largest(uint64_t* c, int64_t n, int64_t k) {
  if (n <= k) return n;
  std::nth_element(c, c + (k - 1), c + n, std::greater<uint64_t>());
  return k;
}

// Sorts c[0, n) in descending order with tmp[0, n) as scratch: LSD radix sort on the 8-bit
// digits first_digit..7, skipping the digits that all elements share (the high bits of nearby
// scores, the high bits of small positions). Branch-free passes beat std::sort's
// mispredictions on the thousands of candidates a row keeps. The passes are stable, so with
// first_digit = 4 (score bits only) an input in ascending position order comes out fully
// sorted: equal scores keep their ascending positions.
inline void sort_desc(uint64_t* c, int64_t n, uint64_t* tmp, int first_digit = 0) {
  if (n <= 64) {
    std::sort(c, c + n, std::greater<uint64_t>());
    return;
  }
  uint32_t hist[8][256] = {};
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t x = ~c[i];  // ascending order of ~c is descending order of c
    for (int d = first_digit; d < 8; ++d) ++hist[d][(x >> (8 * d)) & 0xffu];
  }
  uint64_t* src = c;
  uint64_t* dst = tmp;
  for (int d = first_digit; d < 8; ++d) {
    const int shift = 8 * d;
    if (hist[d][(~src[0] >> shift) & 0xffu] == static_cast<uint32_t>(n)) continue;
    uint32_t off[256];
    uint32_t sum = 0;
    for (int b = 0; b < 256; ++b) {
      off[b] = sum;
      sum += hist[d][b];
    }
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t x = src[i];
      dst[off[(~x >> shift) & 0xffu]++] = x;
    }
    std::swap(src, dst);
  }
  if (src != c) std::memcpy(c, src, static_cast<size_t>(n) * sizeof(uint64_t));
}

// Writes the top-k positions of the candidates c[0, n) (destroys c) into idx[0, k), best first,
// -1 padded; returns the number of valid slots. When the candidates are in ascending position
// order and n <= 2k, they are sorted whole on their score bits (tmp: n slots); otherwise the k
// best are selected first and sorted on all bits (tmp: min(n, k) slots).
inline int64_t write_topk(uint64_t* c, int64_t n, int64_t k, int32_t* idx, uint64_t* tmp,
                          bool position_ordered = false) {
  if (position_ordered && n <= 2 * k) {
    sort_desc(c, n, tmp, 4);
  } else {
    n = keep_largest(c, n, k);
    sort_desc(c, n, tmp);
  }
  const int64_t m = std::min(n, k);
  for (int64_t i = 0; i < m; ++i) idx[i] = composite_position(c[i]);
  for (int64_t i = m; i < k; ++i) idx[i] = -1;
  return m;
}

}  // namespace indexshare::ops::detail

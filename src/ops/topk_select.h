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
  return (static_cast<uint64_t>(score_key(score)) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(pos));
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

// Writes the top-k positions of the candidates c[0, n) (destroys c) into idx[0, k), best first,
// -1 padded; returns the number of valid slots.
inline int64_t write_topk(uint64_t* c, int64_t n, int64_t k, int32_t* idx) {
  const int64_t m = keep_largest(c, n, k);
  std::sort(c, c + m, std::greater<uint64_t>());
  for (int64_t i = 0; i < m; ++i) idx[i] = composite_position(c[i]);
  for (int64_t i = m; i < k; ++i) idx[i] = -1;
  return m;
}

}  // namespace indexshare::ops::detail

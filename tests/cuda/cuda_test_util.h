// Helpers for the CUDA tests: GPU skip, random inputs, bf16 / fp8 encodings, page packing.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cuda/indexer.h"
#include "cuda/runtime.h"

#define IS_REQUIRE_GPU()                                                        \
  do {                                                                          \
    if (::indexshare::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

namespace indexshare::cudatest {

// A fresh seed, printed so that a failure can be reproduced.
inline uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

inline std::vector<float> normal(std::mt19937_64& rng, size_t n, float sd = 1.0f) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Rounds through bf16: returns the codes and the decoded values.
inline std::vector<uint16_t> to_bf16(const std::vector<float>& x, std::vector<double>* decoded) {
  std::vector<uint16_t> b(x.size());
  if (decoded) decoded->resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    b[i] = f32_to_bf16(x[i]);
    if (decoded) (*decoded)[i] = bf16_to_f32(b[i]);
  }
  return b;
}

// Per-row FP8 e4m3 quantisation (rows of `cols`): scale = max(amax, 1e-4) / 448.
struct Fp8Rows {
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  std::vector<double> decoded_codes;  // code values (without the scale)
};
inline Fp8Rows quantize_rows(const std::vector<float>& x, int64_t cols) {
  Fp8Rows r;
  const int64_t rows = static_cast<int64_t>(x.size()) / cols;
  r.codes.resize(x.size());
  r.scales.resize(rows);
  r.decoded_codes.resize(x.size());
  for (int64_t i = 0; i < rows; ++i) {
    float amax = 1e-4f;
    for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(x[i * cols + j]));
    const float sc = amax / kFp8E4M3Max;
    r.scales[i] = sc;
    for (int64_t j = 0; j < cols; ++j) {
      const uint8_t c = f32_to_fp8e4m3(x[i * cols + j] / sc);
      r.codes[i * cols + j] = c;
      r.decoded_codes[i * cols + j] = fp8e4m3_to_f32(c);
    }
  }
  return r;
}

// Packs per-token FP8 keys into the DSA paged layout, page p of the sequence going to physical
// page table[p] (table empty: identity). Unused bytes are filled with 0x7f codes (NaN in
// e4m3fn) so that a kernel reading past the sequence would be caught.
inline std::vector<uint8_t> pack_fp8_pages(const Fp8Rows& k, int64_t L, const std::vector<int32_t>& table,
                                           int64_t num_pages) {
  const size_t pb = cuda::kIndexerFp8PageBytes;
  std::vector<uint8_t> out(static_cast<size_t>(num_pages) * pb, 0x7f);
  for (int64_t s = 0; s < L; ++s) {
    const int64_t lp = s / cuda::kIndexerPage, r = s % cuda::kIndexerPage;
    const int64_t pp = table.empty() ? lp : table[lp];
    uint8_t* page = out.data() + pp * pb;
    std::memcpy(page + r * cuda::kIndexerDim, k.codes.data() + s * cuda::kIndexerDim, cuda::kIndexerDim);
    std::memcpy(page + cuda::kIndexerPage * cuda::kIndexerDim + r * 4, &k.scales[s], 4);
  }
  return out;
}

// bf16 pages: page p holds rows [p*64, p*64+64) of the sequence; rows past L are NaN.
inline std::vector<uint16_t> pack_bf16_pages(const std::vector<uint16_t>& k, int64_t L,
                                             const std::vector<int32_t>& table, int64_t num_pages) {
  const int64_t D = cuda::kIndexerDim;
  std::vector<uint16_t> out(static_cast<size_t>(num_pages) * cuda::kIndexerPage * D, 0x7fc0);
  for (int64_t s = 0; s < L; ++s) {
    const int64_t lp = s / cuda::kIndexerPage, r = s % cuda::kIndexerPage;
    const int64_t pp = table.empty() ? lp : table[lp];
    std::memcpy(out.data() + (pp * cuda::kIndexerPage + r) * D, k.data() + s * D, D * 2);
  }
  return out;
}

template <class T>
std::vector<T> download(const cuda::DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  cuda::copy_to_host(v.data(), b.get(), n * sizeof(T));
  return v;
}
template <class T>
cuda::DeviceBuffer upload(const std::vector<T>& v) {
  return cuda::to_device(v.data(), v.size() * sizeof(T));
}

// Checks a top-k row against float64 scores, allowing swaps only among near-ties: every chosen
// index must score >= kth - tol, every index scoring > kth + tol must be chosen, no duplicates,
// -1 padding only after min(k, valid) entries. Returns "" or a description of the failure.
inline std::string check_topk_near_ties(const std::vector<double>& scores, int64_t L, int k,
                                        const int32_t* got, int32_t got_count, double tol) {
  std::vector<int64_t> valid;
  for (int64_t s = 0; s < L; ++s)
    if (scores[s] != -INFINITY) valid.push_back(s);
  const int n = static_cast<int>(std::min<int64_t>(k, static_cast<int64_t>(valid.size())));
  if (got_count != n) return "count " + std::to_string(got_count) + " != " + std::to_string(n);
  std::vector<double> vals;
  for (int64_t s : valid) vals.push_back(scores[s]);
  std::sort(vals.begin(), vals.end(), std::greater<double>());
  const double kth = n > 0 ? vals[n - 1] : INFINITY;
  std::vector<char> chosen(L, 0);
  for (int i = 0; i < k; ++i) {
    const int32_t s = got[i];
    if (i >= n) {
      if (s != -1) return "slot " + std::to_string(i) + " should be -1";
      continue;
    }
    if (s < 0 || s >= L) return "slot " + std::to_string(i) + " out of range: " + std::to_string(s);
    if (chosen[s]) return "duplicate index " + std::to_string(s);
    chosen[s] = 1;
    if (scores[s] < kth - tol) return "index " + std::to_string(s) + " scores below the k-th";
  }
  for (int64_t s : valid)
    if (scores[s] > kth + tol && !chosen[s]) return "missed index " + std::to_string(s);
  return "";
}

}  // namespace indexshare::cudatest

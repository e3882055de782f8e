// Random indexer inputs for the CUDA tests: encoded on the device (bf16, or FP8 in the paged
// DSA layout behind a shuffled page table) and decoded on the host for the float64 reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "../ref/cuda_ref.h"
#include "cuda/indexer.h"
#include "cuda/runtime.h"
#include "cuda_test_util.h"

namespace indexshare::cudatest {

struct IndexerCase {
  cuda::IndexerFormat format;
  int B, H;
  int64_t T, L;
  std::vector<int32_t> seq_lens;  // per batch (empty = L)
  std::vector<int32_t> q_starts;  // per batch (empty = q_start)
  int64_t q_start;
  bool shuffle_pages;
};

struct IndexerInputs {
  IndexerCase c;
  cuda::DeviceBuffer q, cache, w, qs, table, seq_lens, q_starts;
  cuda::IndexerCudaParams params;
  std::vector<double> q_dec, k_dec, w_h, qs_h, ks_h;  // decoded host copies
  float scale = 0;

  bool fp8() const { return c.format == cuda::IndexerFormat::kFp8; }
  int64_t seq_len(int b) const { return c.seq_lens.empty() ? c.L : c.seq_lens[b]; }
  int64_t q_start(int b) const { return c.q_starts.empty() ? c.q_start : c.q_starts[b]; }

  // Reference scores of batch b: [T, seq_len(b)], and the absolute-value bound.
  void reference(int b, std::vector<double>& want, std::vector<double>& bound) const {
    const int D = cuda::kIndexerDim, H = c.H;
    const int64_t T = c.T, L = c.L, sl = seq_len(b);
    std::vector<double> qb(q_dec.begin() + b * T * H * D, q_dec.begin() + (b + 1) * T * H * D);
    std::vector<double> kb(k_dec.begin() + b * L * D, k_dec.begin() + (b * L + sl) * D);
    std::vector<double> wb(w_h.begin() + b * T * H, w_h.begin() + (b + 1) * T * H);
    std::vector<double> qsb(qs_h.begin() + b * T * H, qs_h.begin() + (b + 1) * T * H);
    std::vector<double> ksb;
    if (fp8()) ksb.assign(ks_h.begin() + b * L, ks_h.begin() + b * L + sl);
    ref::indexer_scores(qb, kb, wb, qsb, ksb, scale, T, sl, H, D, q_start(b), want, &bound);
  }
};

inline IndexerInputs make_indexer_inputs(const IndexerCase& c, uint64_t seed) {
  IndexerInputs in;
  in.c = c;
  std::mt19937_64 rng(seed);
  const int D = cuda::kIndexerDim, H = c.H, B = c.B;
  const int64_t T = c.T, L = c.L;
  const int64_t pages_per_seq = (L + 63) / 64;
  const int64_t num_pages = pages_per_seq * B + 3;

  auto qf = normal(rng, static_cast<size_t>(B * T * H * D));
  auto kf = normal(rng, static_cast<size_t>(B * L * D));
  auto wf = normal(rng, static_cast<size_t>(B * T * H));
  std::vector<float> qsf(static_cast<size_t>(B * T * H));
  std::uniform_real_distribution<float> pos(0.5f, 2.0f);
  for (float& x : qsf) x = pos(rng);
  in.scale = 1.0f / std::sqrt(static_cast<float>(H * D));
  in.w_h.assign(wf.begin(), wf.end());

  std::vector<int32_t> phys(num_pages);
  std::iota(phys.begin(), phys.end(), 0);
  if (c.shuffle_pages) std::shuffle(phys.begin(), phys.end(), rng);
  std::vector<int32_t> table(phys.begin(), phys.begin() + B * pages_per_seq);

  std::vector<uint8_t> q_bytes, cache_bytes;
  if (in.fp8()) {
    const auto qq = quantize_rows(qf, D);
    q_bytes = qq.codes;
    in.q_dec = qq.decoded_codes;
    qsf = qq.scales;
    const auto kq = quantize_rows(kf, D);
    in.k_dec = kq.decoded_codes;
    in.ks_h.assign(kq.scales.begin(), kq.scales.end());
    cache_bytes.assign(static_cast<size_t>(num_pages) * cuda::kIndexerFp8PageBytes, 0x7f);
    for (int b = 0; b < B; ++b) {
      Fp8Rows kb;
      kb.codes.assign(kq.codes.begin() + b * L * D, kq.codes.begin() + (b + 1) * L * D);
      kb.scales.assign(kq.scales.begin() + b * L, kq.scales.begin() + (b + 1) * L);
      std::vector<int32_t> tb(table.begin() + b * pages_per_seq, table.begin() + (b + 1) * pages_per_seq);
      const auto packed = pack_fp8_pages(kb, L, tb, num_pages);
      for (int32_t pg : tb)
        std::copy_n(packed.begin() + pg * cuda::kIndexerFp8PageBytes, cuda::kIndexerFp8PageBytes,
                    cache_bytes.begin() + pg * cuda::kIndexerFp8PageBytes);
    }
  } else {
    const auto qb = to_bf16(qf, &in.q_dec);
    q_bytes.resize(qb.size() * 2);
    std::memcpy(q_bytes.data(), qb.data(), q_bytes.size());
    const auto kb = to_bf16(kf, &in.k_dec);
    std::vector<uint16_t> cache(static_cast<size_t>(num_pages) * 64 * D, 0x7fc0);
    for (int b = 0; b < B; ++b) {
      std::vector<uint16_t> kbb(kb.begin() + b * L * D, kb.begin() + (b + 1) * L * D);
      std::vector<int32_t> tb(table.begin() + b * pages_per_seq, table.begin() + (b + 1) * pages_per_seq);
      const auto packed = pack_bf16_pages(kbb, L, tb, num_pages);
      for (int32_t pg : tb) std::copy_n(packed.begin() + pg * 64 * D, 64 * D, cache.begin() + pg * 64 * D);
    }
    cache_bytes.resize(cache.size() * 2);
    std::memcpy(cache_bytes.data(), cache.data(), cache_bytes.size());
  }
  in.qs_h.assign(qsf.begin(), qsf.end());

  in.q = upload(q_bytes);
  in.cache = upload(cache_bytes);
  in.w = upload(wf);
  in.qs = upload(qsf);
  in.table = upload(table);
  if (!c.seq_lens.empty()) in.seq_lens = upload(c.seq_lens);
  if (!c.q_starts.empty()) in.q_starts = upload(c.q_starts);

  cuda::IndexerCudaParams& p = in.params;
  p.format = c.format;
  p.q = in.q.get();
  p.q_scale = in.qs.as<float>();
  p.weights = in.w.as<float>();
  p.k_cache = in.cache.get();
  p.block_table = in.table.as<int32_t>();
  p.max_pages = static_cast<int>(pages_per_seq);
  p.seq_lens = c.seq_lens.empty() ? nullptr : in.seq_lens.as<int32_t>();
  p.q_starts = c.q_starts.empty() ? nullptr : in.q_starts.as<int32_t>();
  p.scale = in.scale;
  p.B = B;
  p.T = T;
  p.L = L;
  p.H = H;
  p.q_start = c.q_start;
  return in;
}

}  // namespace indexshare::cudatest

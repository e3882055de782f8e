// Lightning-indexer scores on the GPU (the CUDA twin of ops/indexer.h), prefill and decode.
//
//   I[b, t, s] = k_scale[s] * sum_h w[b, t, h] * scale * q_scale[b, t, h] * ReLU(q[b, t, h] . k[s])
//
// for keys s < seq_len[b] with s <= q_start[b] + t (absolute positions); other entries of the
// output row [0, L) are -inf. Prefill is B = 1 with T query rows; decode is B requests with
// T = next_n rows each and per-request page tables.
//
// Key cache layouts (pages of kIndexerPage = 64 tokens; page j of batch b is
// block_table[b * max_pages + j], or b * ceil(L / 64) + j when block_table is null):
//   kFp8  (DSA / DeepGEMM layout): page = [64 x 128 e4m3 bytes][64 x fp32 scale], 8448 bytes;
//         q is e4m3 with per-(token, head) scales q_scale.
//   kBf16: page = 64 rows of 128 bf16 (k_scale = 1); q is bf16, q_scale optional.
// Tensor cores: mma.sync e4m3 (m16n8k32) or bf16 (m16n8k16), fp32 accumulation; keys are the
// MMA rows and query heads its columns, so the ReLU-weighted head sum happens in registers.
// D must be 128 and H one of 16, 32, 64. Device pointers; asynchronous on `stream`.
#pragma once

#include <cstddef>
#include <cstdint>

namespace indexshare::cuda {

inline constexpr int kIndexerPage = 64;
inline constexpr int kIndexerDim = 128;
inline constexpr size_t kIndexerFp8PageBytes = kIndexerPage * (kIndexerDim + 4);

enum class IndexerFormat : int { kBf16 = 0, kFp8 = 1 };

// Which score kernel runs (indexer_scores_cuda only; the fused indexer + top-k has its own):
// kMmaSync, the mma.sync + cp.async kernel (every format and shape); kWgmma, the Hopper
// warp-specialised wgmma kernel (indexer_wgmma.cu: fp8 only); kAuto, the one docs/cuda.md
// measured faster for the shape.
enum class IndexerKernel : int { kAuto = 0, kMmaSync = 1, kWgmma = 2 };

struct IndexerCudaParams {
  IndexerFormat format = IndexerFormat::kFp8;
  const void* q = nullptr;              // [B, T, H, D] e4m3 bytes (kFp8) or bf16 bits (kBf16)
  const float* q_scale = nullptr;       // [B, T, H] nullable (= 1)
  const float* weights = nullptr;       // [B, T, H] fp32 head weights
  const void* k_cache = nullptr;        // paged keys, layout above
  const int32_t* block_table = nullptr; // [B, max_pages] nullable (contiguous pages per batch)
  int max_pages = 0;                    // row stride of block_table
  const int32_t* seq_lens = nullptr;    // [B] nullable (= L): keys s < seq_lens[b] exist
  const int32_t* q_starts = nullptr;    // [B] nullable (= q_start): position of query row 0
  float scale = 1.0f;                   // DSA: H^-0.5 * D^-0.5
  int B = 1;
  int64_t T = 0;                        // query rows per batch
  int64_t L = 0;                        // output row width (>= every seq_len)
  int H = 0;
  int D = kIndexerDim;
  int64_t q_start = 0;
  void* stream = nullptr;               // cudaStream_t, nullptr = default stream
  IndexerKernel kernel = IndexerKernel::kAuto;
};

// Throws Error naming the bad argument.
void validate(const IndexerCudaParams& p);

// scores: [B, T, ld] fp32 out, ld >= L.
void indexer_scores_cuda(const IndexerCudaParams& p, float* scores, int64_t ld);

}  // namespace indexshare::cuda

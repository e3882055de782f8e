// The CUDA backend's attention ops: absorbed sparse MLA (fast bf16 kernel with split-KV for small
// batches, or the generic f32 one) and the DSA indexer (fused indexer + top-k for prefill, scores +
// multi-block top-k for decode, generic f32 for other dims).
#include "cuda/engine/cuda_backend_impl.cuh"

namespace indexshare::cuda::impl {

// Absorbed sparse MLA: q_lat = [W_UK^T q_nope ; q_pe] per head (batched GEMM over heads), the
// sparse kernel over the latent cache (bf16 fast kernel or the generic f32 one), then
// o = W_UV o_lat per head.
void CudaBackend::mla_attention(const backend::MlaArgs& a) {
  const backend::MlaWeights& w = *a.w;
  const auto& lc = dynamic_cast<const CudaLatent&>(*a.cache);
  const int H = w.heads, nope = w.nope, vd = w.v_dim, kvr = w.kv_lora, rope = lc.rope, ld = kvr + rope;
  const int qk = nope + rope;
  IS_CHECK(lc.kvr == kvr, "mla: the cache holds kv_lora ", lc.kvr, ", the weights ", kvr);
  const int64_t R = a.q.numel() / (int64_t{H} * qk);
  check2(a.q, "mla q", DType::kF32, R, int64_t{H} * qk);
  const int K = static_cast<int>(a.indices.numel() / std::max<int64_t>(R, 1));
  check2(a.indices, "mla indices", DType::kI32, R, K);
  check2(a.out, "mla output", DType::kF32, R, int64_t{H} * vd);
  if (R == 0) return;
  const bool fast = lc.fmt == CacheFormat::kBf16;
  const bool wbf16 = w.w_uk.dtype() == DType::kBF16;
  const float one = 1.0f, zero = 0.0f;
  const float* q = a.q.as<float>();

  // 1. q_lat [R, H, ld] (bf16 for the fast kernel, f32 for the generic one).
  void* q_lat = scratch(kMlaQlat, fast ? DType::kBF16 : DType::kF32, R * H * ld).data();
  const cudaDataType lat_t = fast ? CUDA_R_16BF : CUDA_R_32F;
  if (wbf16) {
    uint16_t* qb = scratch(kMlaQb, DType::kBF16, R * H * qk).as<uint16_t>();
    engine::f32_to_bf16(q, qb, R * H * qk, stream_);
    IS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, kvr, static_cast<int>(R), nope, &one,
                                               w.w_uk.data(), CUDA_R_16BF, kvr, int64_t{nope} * kvr, qb, CUDA_R_16BF,
                                               H * qk, qk, &zero, q_lat, lat_t, H * ld, ld, H, CUBLAS_COMPUTE_32F,
                                               CUBLAS_GEMM_DEFAULT));
  } else {
    IS_CHECK(!fast, "mla: a bf16 latent cache needs bf16 MLA weights");
    IS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, kvr, static_cast<int>(R), nope, &one,
                                               w.w_uk.data(), CUDA_R_32F, kvr, int64_t{nope} * kvr, q, CUDA_R_32F,
                                               H * qk, qk, &zero, q_lat, CUDA_R_32F, H * ld, ld, H, CUBLAS_COMPUTE_32F,
                                               CUBLAS_GEMM_DEFAULT));
  }
  if (fast) {
    engine::copy_rope_bf16(q, R, H, qk, nope, rope, static_cast<uint16_t*>(q_lat), ld, kvr, stream_);
  } else {
    engine::copy_rope_f32(q, R, H, qk, nope, rope, static_cast<float*>(q_lat), ld, kvr, stream_);
  }

  // 2. o_lat [R, H, kvr] f32 (or already bf16 from the split-KV combine).
  float* o_lat = scratch(kMlaOlat, DType::kF32, R * H * kvr).as<float>();
  uint16_t* combined_bf16 = nullptr;
  if (fast) {
    // Small batches leave most SMs idle with one block per (row, 64 heads): split each row's
    // index list into S slices, attend per slice (with its log-sum-exp), combine.
    const int64_t blocks = R * ((H + 63) / 64);
    const int sms = detail::sm_count();
    int S = 1;
    if (blocks < sms && K >= 128) S = static_cast<int>(std::min<int64_t>((2 * sms + blocks - 1) / blocks, K / 64));
    SparseMlaCudaParams p;
    p.kv = lc.t.as<uint16_t>();
    p.L = lc.slots();
    p.H = H;
    p.scale = a.scale;
    p.stream = stream_;
    if (S <= 1) {
      p.q = static_cast<const uint16_t*>(q_lat);
      p.indices = a.indices.as<int32_t>();
      p.T = R;
      p.K = K;
      p.out = o_lat;
      sparse_mla_cuda(p);
    } else {
      const int Ks = (K + S - 1) / S;
      int32_t* sidx = scratch(kMlaSplitIdx, DType::kI32, R * S * Ks).as<int32_t>();
      uint16_t* sq = scratch(kMlaSplitQ, DType::kBF16, R * S * H * ld).as<uint16_t>();
      float* part = scratch(kMlaPart, DType::kF32, R * S * H * kvr).as<float>();
      float* lse = scratch(kMlaLse, DType::kF32, R * S * H).as<float>();
      engine::split_kv(a.indices.as<int32_t>(), R, K, S, Ks, sidx, q_lat, int64_t{H} * ld * 2, sq, stream_);
      p.q = sq;
      p.indices = sidx;
      p.T = R * S;
      p.K = Ks;
      p.out = part;
      p.lse = lse;
      sparse_mla_cuda(p);
      if (wbf16) {
        combined_bf16 = scratch(kMlaOb, DType::kBF16, R * H * kvr).as<uint16_t>();
        engine::mla_combine(part, lse, R, S, H, kvr, combined_bf16, true, stream_);
      } else {
        engine::mla_combine(part, lse, R, S, H, kvr, o_lat, false, stream_);
      }
    }
  } else {
    engine::sparse_mla_f32(static_cast<const float*>(q_lat), lc.t.as<float>(), lc.slots(), a.indices.as<int32_t>(), R,
                           H, ld, kvr, K, a.scale, o_lat, stream_);
  }

  // 3. o[r, h, :] = W_UV[h] o_lat[r, h]: C (v x R) = W_UV[h] (op T of [kvr x v]) . O_h (kvr x R).
  if (wbf16) {
    uint16_t* ob = combined_bf16;
    if (!ob) {
      ob = scratch(kMlaOb, DType::kBF16, R * H * kvr).as<uint16_t>();
      engine::f32_to_bf16(o_lat, ob, R * H * kvr, stream_);
    }
    IS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, vd, static_cast<int>(R), kvr, &one,
                                               w.w_uv.data(), CUDA_R_16BF, kvr, int64_t{vd} * kvr, ob, CUDA_R_16BF,
                                               H * kvr, kvr, &zero, a.out.data(), CUDA_R_32F, H * vd, vd, H,
                                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    IS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, vd, static_cast<int>(R), kvr, &one,
                                               w.w_uv.data(), CUDA_R_32F, kvr, int64_t{vd} * kvr, o_lat, CUDA_R_32F,
                                               H * kvr, kvr, &zero, a.out.data(), CUDA_R_32F, H * vd, vd, H,
                                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

// The exact top-k of `rows` score rows [rows, L] into indices [rows, k].
void topk_rows(const float* scores, int64_t rows, int64_t L, int k, int32_t* indices, const Tensor& work,
               cudaStream_t stream) {
  TopkCudaParams tp;
  tp.scores = scores;
  tp.T = rows;
  tp.L = L;
  tp.ld = L;
  tp.k = k;
  tp.indices = indices;
  tp.workspace = work.data();
  tp.workspace_bytes = work.bytes();
  tp.stream = stream;
  topk_cuda(tp);
}

IndexerCudaParams fp8_params(const CudaIndexer& ic, const backend::Step& s, const uint8_t* q_codes,
                             const float* q_scales, const float* w, void* stream) {
  IndexerCudaParams p;
  p.format = IndexerFormat::kFp8;
  p.q = q_codes;
  p.q_scale = q_scales;
  p.weights = w;
  p.k_cache = ic.t.data();
  p.block_table = s.block_table.as<int32_t>();
  p.max_pages = s.max_pages;
  p.seq_lens = s.seq_lens.as<int32_t>();
  p.q_starts = s.q_starts.as<int32_t>();
  p.scale = ic.s.scale;
  p.B = s.B;
  p.T = s.T;
  p.L = s.max_len;
  p.H = ic.s.heads;
  p.D = ic.s.dim;
  p.stream = stream;
  return p;
}

IndexerCudaParams CudaBackend::fp8_query(const CudaIndexer& ic, const backend::Step& s, const Tensor& q,
                                        const Tensor& w) {
  const int64_t R = s.rows();
  uint8_t* codes = scratch(kIdxQCodes, DType::kU8, R * ic.s.heads * ic.s.dim).as<uint8_t>();
  float* qs = scratch(kIdxQScales, DType::kF32, R * ic.s.heads).as<float>();
  engine::quantize_q_fp8(q.as<float>(), R * ic.s.heads, codes, qs, stream_);
  return fp8_params(ic, s, codes, qs, w.as<float>(), stream_);
}

void CudaBackend::indexer_select(const backend::IndexerCache& c, const backend::Step& s, const Tensor& q,
                                 const Tensor& w, const Tensor& logical, const Tensor& physical) {
  const auto& ic = dynamic_cast<const CudaIndexer&>(c);
  const backend::IndexerSpec& sp = ic.s;
  const int64_t R = s.rows();
  check2(q, "indexer q", DType::kF32, R, int64_t{sp.heads} * sp.dim);
  check2(w, "indexer weights", DType::kF32, R, sp.heads);
  check2(logical, "indexer top-k", DType::kI32, R, sp.topk);
  check2(physical, "indexer top-k slots", DType::kI32, R, sp.topk);
  if (sp.format == CacheFormat::kFp8) {
    const IndexerCudaParams p = fp8_query(ic, s, q, w);
    const auto* codes = static_cast<const uint8_t*>(p.q);
    const float* qs = p.q_scale;
    if (R > kDecodeRows) {
      // Prefill: the fused indexer + top-k, which never writes the [rows, L] scores.
      const size_t ws = indexer_topk_workspace_bytes(p, sp.topk);
      Tensor work = scratch(kIdxWork, DType::kU8, static_cast<int64_t>(ws));
      indexer_topk_cuda(p, sp.topk, logical.as<int32_t>(), nullptr, work.data(), ws);
    } else {
      // Decode (few rows): scores of whole sequences in blocks of at most kScoreBlockBytes, then
      // the multi-block exact top-k; at small batch the fused kernel's one-block merge of every
      // split's top-k costs more than scoring (measured: ~1 ms per layer at batch 1).
      const int64_t L = s.max_len;
      const int64_t per_block = std::max<int64_t>(1, static_cast<int64_t>(kScoreBlockBytes / (4 * L)) / s.T);
      const int64_t seqs = std::min<int64_t>(s.B, per_block), rb = seqs * s.T;
      float* scores = scratch(kIdxScores, DType::kF32, rb * L).as<float>();
      const size_t ws = topk_workspace_bytes(rb, sp.topk);
      Tensor work = scratch(kTopkWork, DType::kU8, static_cast<int64_t>(ws));
      for (int64_t b0 = 0; b0 < s.B; b0 += seqs) {
        const int64_t b1 = std::min<int64_t>(s.B, b0 + seqs), r0 = b0 * s.T, r1 = b1 * s.T;
        IndexerCudaParams pb = p;
        pb.B = static_cast<int>(b1 - b0);
        pb.q = codes + r0 * sp.heads * sp.dim;
        pb.q_scale = qs + r0 * sp.heads;
        pb.weights = w.as<float>() + r0 * sp.heads;
        pb.block_table = s.block_table.as<int32_t>() + b0 * s.max_pages;
        pb.seq_lens = s.seq_lens.as<int32_t>() + b0;
        pb.q_starts = s.q_starts.as<int32_t>() + b0;
        indexer_scores_cuda(pb, scores, L);
        topk_rows(scores, r1 - r0, L, sp.topk, logical.as<int32_t>() + r0 * sp.topk, work, stream_);
      }
    }
  } else {
    // Rows in blocks whose [rows, max_len] scores stay under kScoreBlockBytes.
    const int64_t L = s.max_len;
    const int64_t rb = std::max<int64_t>(1, std::min<int64_t>(R, static_cast<int64_t>(kScoreBlockBytes / (4 * L))));
    float* scores = scratch(kIdxScores, DType::kF32, rb * L).as<float>();
    const size_t ws = topk_workspace_bytes(rb, sp.topk);
    Tensor work = scratch(kTopkWork, DType::kU8, static_cast<int64_t>(ws));
    for (int64_t r0 = 0; r0 < R; r0 += rb) {
      const int64_t r1 = std::min(R, r0 + rb);
      engine::indexer_scores_f32(q.as<float>(), w.as<float>(), ic.t.as<float>(), r0, r1, s.T, sp.heads, sp.dim,
                                 sp.scale, s.q_starts.as<int32_t>(), s.block_table.as<int32_t>(), s.max_pages, L,
                                 scores, L, stream_);
      topk_rows(scores, r1 - r0, L, sp.topk, logical.as<int32_t>() + r0 * sp.topk, work, stream_);
    }
  }
  to_physical(s, logical, physical);
}

void CudaBackend::indexer_scores(const backend::IndexerCache& c, const backend::Step& s, const Tensor& q,
                                 const Tensor& w, const Tensor& scores) {
  const auto& ic = dynamic_cast<const CudaIndexer&>(c);
  const backend::IndexerSpec& sp = ic.s;
  const int64_t R = s.rows(), L = s.max_len;
  check2(q, "indexer q", DType::kF32, R, int64_t{sp.heads} * sp.dim);
  check2(w, "indexer weights", DType::kF32, R, sp.heads);
  check2(scores, "indexer scores", DType::kF32, R, L);
  if (sp.format == CacheFormat::kFp8) {
    indexer_scores_cuda(fp8_query(ic, s, q, w), scores.as<float>(), L);
  } else {
    engine::indexer_scores_f32(q.as<float>(), w.as<float>(), ic.t.as<float>(), 0, R, s.T, sp.heads, sp.dim, sp.scale,
                               s.q_starts.as<int32_t>(), s.block_table.as<int32_t>(), s.max_pages, L,
                               scores.as<float>(), L, stream_);
  }
}

}  // namespace indexshare::cuda::impl

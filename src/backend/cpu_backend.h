// The CPU backend: every op of backend.h over src/ops, f32 (f32 and bf16 weights through
// ops::quant_matmul, so a row's result does not depend on the batch or the thread count: decode
// equals prefill bit for bit). Caches are f32. Threads: the global pool (core/thread_pool.h).
#pragma once

#include <atomic>
#include <memory>

#include "backend/backend.h"

namespace indexshare::backend {

class CpuBackend final : public Backend {
 public:
  CpuBackend();
  Device device() const override { return Device::kCpu; }
  std::string name() const override;

  Tensor alloc(DType dtype, std::vector<int64_t> shape) override;
  void upload(const Tensor& dst, const void* src) override;
  void download(void* dst, const Tensor& src) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void fill_zero(const Tensor& t) override;
  void fill_uniform(const Tensor& t, uint64_t seed, float amplitude) override;
  void synchronize() override {}
  size_t bytes_in_use() const override;
  size_t peak_bytes() const override;

  bool supports(WeightFormat f) const override { return f != WeightFormat::kFp8Block; }
  // fp8: the dequantised values of the codes the other backends draw, held in f32.
  Weight random_weight(WeightFormat f, int64_t groups, int64_t N, int64_t K, uint64_t seed, float amplitude) override;
  MlaWeights upload_mla(const std::vector<float>& kv_b, int heads, int nope, int v_dim, int kv_lora,
                        WeightFormat format) override;

  void embed(const Weight& table, const Tensor& ids, const Tensor& out) override;
  void rms_norm(const NormArgs& a) override;
  void layer_norm(const NormArgs& a) override;
  void linear(const Tensor& x, const Weight& w, const Tensor& y) override;
  void rope(const Tensor& x, const Tensor& positions, const RopeSpec& s) override;
  void add(const Tensor& h, const Tensor& y) override;
  void mlp(const Tensor& x, const Weight& gate_up, const Weight& down, const Tensor& y) override;
  void moe(const Tensor& x, const MoeWeights& m, const MoeSpec& s, const Tensor& y) override;
  void moe_route(const Tensor& x, const MoeWeights& m, const MoeSpec& s, const Tensor& experts,
                 const Tensor& weights) override;

  std::vector<CacheFormat> latent_formats(int kv_lora, int rope, int heads) const override;
  std::unique_ptr<LatentCache> new_latent_cache(int64_t pages, int kv_lora, int rope, CacheFormat f) override;
  void latent_write(LatentCache& c, const Step& s, const Tensor& latent) override;
  void mla_attention(const MlaArgs& a) override;

  std::vector<CacheFormat> indexer_formats(int heads, int dim) const override;
  std::unique_ptr<IndexerCache> new_indexer_cache(int64_t pages, const IndexerSpec& spec) override;
  void indexer_append(IndexerCache& c, const Step& s, const Tensor& k) override;
  void indexer_select(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w, const Tensor& logical,
                      const Tensor& physical) override;
  void indexer_scores(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w,
                      const Tensor& scores) override;
  void indexer_rescore(const IndexerCache& c, const Step& s, const Tensor& q, const Tensor& w,
                       const Tensor& cand_logical, const Tensor& cand_physical, const Tensor& logical,
                       const Tensor& physical) override;
  void to_physical(const Step& s, const Tensor& logical, const Tensor& physical) override;
  void copy_columns(const Tensor& dst, const Tensor& src) override;

  // The keys of sequence b as one contiguous [len, dim] array (a view of the cache when the
  // sequence's pages are consecutive, else gathered into scratch); for the Llama DSA backend's
  // measurements, which read the keys its stack holds.
  const float* indexer_keys(const IndexerCache& c, const Step& s, int b, int64_t len, std::vector<float>& scratch) const;

  struct Stats {
    std::atomic<size_t> in_use{0}, peak{0};
  };

 private:
  std::shared_ptr<Stats> stats_;
};

}  // namespace indexshare::backend

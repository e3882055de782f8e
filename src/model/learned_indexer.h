// A lightning indexer learned for a model that has none (e.g. SmolLM2): per F layer it reads the
// layer's attention input x (after the layer's input norm) and produces, as in DSA,
//   q = RoPE(Wq x)  [H, D]   (rope on dims [0, rope_dim) of each head: rope slice first,
//   k = RoPE(Wk x)  [D]       half-split pairing)
//   w = Ww x        [H]      (fp32 head weights, may be negative)
// scored by ops::indexer with scale H^-0.5 * D^-0.5.
#pragma once

#include <cstdint>
#include <vector>

namespace indexshare::model {

struct LearnedIndexerConfig {
  int d_model = 0;
  int heads = 0;      // H_I
  int head_dim = 0;   // D_I
  int rope_dim = 0;   // rotated dims at the start of each head (even, <= head_dim)
  float rope_theta = 10000.0f;

  float score_scale() const;  // H^-0.5 * D^-0.5
  void validate() const;      // Error naming the bad field
};

struct LearnedIndexerWeights {
  LearnedIndexerConfig cfg;
  std::vector<float> wq;  // [H * D, d_model]
  std::vector<float> wk;  // [D, d_model]
  std::vector<float> ww;  // [H, d_model]

  // Zero weights of the right sizes for cfg.
  static LearnedIndexerWeights zeros(const LearnedIndexerConfig& cfg);
  int64_t parameter_count() const;
};

// inv_freq[j] = theta^(-2j / rope_dim), j < rope_dim / 2 (sign -1 gives the inverse rotation).
std::vector<float> indexer_inv_freq(const LearnedIndexerConfig& cfg, float sign = 1.0f);

// Rotates the RoPE slice (dims [0, rope_dim), half-split pairs) of v [T, heads, head_dim], rows at
// positions pos0 .. pos0 + T - 1, by inv_freq (indexer_inv_freq; sign -1 rotates back).
void learned_indexer_rope(float* v, int64_t T, int heads, int64_t pos0, const LearnedIndexerConfig& c,
                          const float* inv_freq);

// Projects x [T, d_model] (absolute positions pos0 .. pos0 + T - 1) into
// q [T, H, D], k [T, D], w [T, H]. Any output pointer may be null to skip it.
void learned_indexer_project(const LearnedIndexerWeights& wts, const float* x, int64_t T, int64_t pos0,
                             float* q, float* k, float* w);

// y[T, N] = x[T, K] * W[N, K]^T in fp32 (deterministic; threads over rows of y).
void linear_f32(const float* x, int64_t T, int64_t K, const float* W, int64_t N, float* y);

}  // namespace indexshare::model

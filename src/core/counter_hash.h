// Counter-based random values that every backend computes bit for bit alike (host and device):
// random weights of a benchmark model are the same on the CPU and the GPU for one seed.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define IS_HOST_DEVICE __host__ __device__
#else
#define IS_HOST_DEVICE
#endif

namespace indexshare {

// splitmix64's finaliser.
IS_HOST_DEVICE inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A sub-seed for the n-th tensor of a model made from `seed`.
IS_HOST_DEVICE inline uint64_t mix_seed(uint64_t seed, uint64_t n) { return mix64(seed ^ mix64(n ^ 0x5bd1e995ull)); }

// Uniform in (-1, 1) from 24 random bits: every step is exact in f32, so the value is the same
// on any IEEE machine; then one rounding when multiplied by amplitude.
IS_HOST_DEVICE inline float counter_uniform(uint64_t seed, uint64_t index, float amplitude) {
  const uint64_t h = mix64(seed ^ mix64(index));
  const float u = static_cast<float>(static_cast<uint32_t>(h >> 40));  // [0, 2^24)
  const float unit = (u - 8388607.5f) * (1.0f / 8388608.0f);
  return unit * amplitude;
}

}  // namespace indexshare

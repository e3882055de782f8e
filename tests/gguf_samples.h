// Tiny valid GGUF files for tests and for the fuzz seed corpus (fuzz/make_gguf_seeds.cpp).
// Deterministic: the same bytes on every run.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gguf_writer.h"

namespace indexshare::testing {

// ggml type ids used below (spelled out: the writer does not use the code under test).
enum : uint32_t { kTF32 = 0, kTF16 = 1, kTQ4_1 = 3, kTQ8_0 = 8, kTBF16 = 30 };

// `n` bytes of a fixed pseudo-random pattern (a valid payload for any tensor type).
inline std::vector<uint8_t> pattern_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t s = seed * 2654435761u + 1;
  for (auto& b : out) {
    s = s * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(s >> 24);
  }
  return out;
}

// Every metadata value type (scalars, string, arrays of each, nested arrays, an empty array)
// and five small tensors of the computed-on types.
inline std::vector<uint8_t> sample_all_types(uint32_t version) {
  GgufWriter w(version);
  w.string("general.architecture", "llama")
      .scalar<uint8_t>("t.u8", kGU8, 200)
      .scalar<int8_t>("t.i8", kGI8, -100)
      .scalar<uint16_t>("t.u16", kGU16, 60000)
      .scalar<int16_t>("t.i16", kGI16, -30000)
      .scalar<uint32_t>("t.u32", kGU32, 4000000000u)
      .scalar<int32_t>("t.i32", kGI32, -2000000000)
      .scalar<float>("t.f32", kGF32, 1.5f)
      .scalar<uint8_t>("t.bool", kGBool, 1)
      .string("t.string", "h\xc3\xa9llo")
      .scalar<uint64_t>("t.u64", kGU64, 18000000000000000000ull)
      .scalar<int64_t>("t.i64", kGI64, -9000000000000000000ll)
      .scalar<double>("t.f64", kGF64, -2.25)
      .array<uint8_t>("a.u8", kGU8, {1, 2, 255})
      .array<int8_t>("a.i8", kGI8, {-1, 0, 127})
      .array<uint16_t>("a.u16", kGU16, {65535})
      .array<int16_t>("a.i16", kGI16, {-2, 3})
      .array<uint32_t>("a.u32", kGU32, {7, 8, 9})
      .array<int32_t>("a.i32", kGI32, {-5, 6})
      .array<float>("a.f32", kGF32, {0.5f, -1.0f})
      .array<uint8_t>("a.bool", kGBool, {0, 1, 1})
      .string_array("a.string", {"a", "", "Ġthe"})
      .array<uint64_t>("a.u64", kGU64, {1ull << 40})
      .array<int64_t>("a.i64", kGI64, {-(1ll << 40)})
      .array<double>("a.f64", kGF64, {3.0, 1e-300})
      .array<int32_t>("a.empty", kGI32, {})
      .nested_array("a.nested", {GgufWriter::encode_array<int32_t>(kGI32, {1, 2}),
                                 GgufWriter::encode_string_array({"x", "yz"}),
                                 GgufWriter::encode_nested({GgufWriter::encode_array<uint8_t>(kGU8, {9})})});
  w.tensor("t.f32", {4, 2}, kTF32, pattern_bytes(32, 1))
      .tensor("t.f16", {8}, kTF16, pattern_bytes(16, 2))
      .tensor("t.q4_1", {32, 2}, kTQ4_1, pattern_bytes(40, 3))
      .tensor("t.q8_0", {64}, kTQ8_0, pattern_bytes(68, 4))
      .tensor("t.bf16", {2, 2, 2}, kTBF16, pattern_bytes(16, 5));
  return w.build();
}

// A llama-shaped header (a few hyperparameters, a 4-token vocabulary) with one block of
// tensors, data aligned to 64 via general.alignment.
inline std::vector<uint8_t> sample_llama(uint32_t version) {
  GgufWriter w(version);
  w.alignment_kv(64)
      .string("general.architecture", "llama")
      .scalar<uint32_t>("llama.block_count", kGU32, 1)
      .scalar<uint32_t>("llama.embedding_length", kGU32, 32)
      .scalar<uint32_t>("llama.attention.head_count", kGU32, 2)
      .scalar<float>("llama.rope.freq_base", kGF32, 100000.0f)
      .string_array("tokenizer.ggml.tokens", {"<s>", "a", "b", "ab"})
      .array<int32_t>("tokenizer.ggml.token_type", kGI32, {3, 1, 1, 1})
      .string_array("tokenizer.ggml.merges", {"a b"});
  w.tensor("token_embd.weight", {32, 4}, kTQ8_0, pattern_bytes(4 * 34, 10))
      .tensor("blk.0.attn_norm.weight", {32}, kTF32, pattern_bytes(128, 11))
      .tensor("blk.0.attn_q.weight", {32, 32}, kTQ4_1, pattern_bytes(32 * 20, 12));
  return w.build();
}

// No metadata and no tensors: the smallest valid file.
inline std::vector<uint8_t> sample_empty(uint32_t version) { return GgufWriter(version).build(); }

// All samples with a file name each.
inline std::vector<std::pair<std::string, std::vector<uint8_t>>> all_samples() {
  return {
      {"v2_all_types.gguf", sample_all_types(2)}, {"v3_all_types.gguf", sample_all_types(3)},
      {"v2_llama.gguf", sample_llama(2)},         {"v3_llama.gguf", sample_llama(3)},
      {"v3_empty.gguf", sample_empty(3)},
  };
}

}  // namespace indexshare::testing

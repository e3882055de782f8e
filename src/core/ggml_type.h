// Tensor element types in ggml numbering (as stored in GGUF files), with their block geometry.
// Only F32, F16, BF16, Q4_1, Q8_0 and Q8_1 are computed on (src/ops/quant.h); every type below
// is recognised so a file holding one can still be parsed and its sizes checked.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace indexshare {

enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15,
  kIQ2_XXS = 16, kIQ2_XS = 17, kIQ3_XXS = 18, kIQ1_S = 19, kIQ4_NL = 20, kIQ3_S = 21,
  kIQ2_S = 22, kIQ4_XS = 23, kI8 = 24, kI16 = 25, kI32 = 26, kI64 = 27, kF64 = 28,
  kIQ1_M = 29, kBF16 = 30, kTQ1_0 = 34, kTQ2_0 = 35, kMXFP4 = 39, kNVFP4 = 40, kQ1_0 = 41,
};

// Storage geometry: `block_size` elements take `type_size` bytes.
struct GgmlTypeTraits {
  std::string_view name;
  int64_t block_size = 0;
  int64_t type_size = 0;
};

// The traits of a known type id, or nullopt for an id ggml does not define (4, 5, 31..33, ...).
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t id);
// True when `id` names a known type.
bool ggml_type_known(uint32_t id);
// "q4_1", "f32", ...; "unknown" for an id that is not known.
std::string_view ggml_type_name(GgmlType t);

// Bytes of `n` elements of type `t` (a whole number of blocks). Throws Error when the type is
// unknown, n < 0, n is not a multiple of the block size, or the size overflows int64.
int64_t ggml_row_bytes(GgmlType t, int64_t n);

}  // namespace indexshare

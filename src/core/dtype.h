// Scalar dtypes and conversions: bf16, f16 (IEEE half), fp8 e4m3 (the "fn" variant: no
// infinities, one NaN code per sign, max finite 448).
//
// f32 -> narrow conversions round to nearest, ties to even. NaN stays NaN (sign kept).
// bf16 and f16 overflow to +-inf as IEEE does; fp8 e4m3 saturates to +-448 (inf too), as the
// DSA quantiser does after its clamp.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace indexshare {

enum class DType : uint8_t { kF32, kF16, kBF16, kF8E4M3, kI32, kU8 };  // kU8: raw bytes

std::string_view dtype_name(DType t);
// Bytes per element.
int dtype_size(DType t);

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};
struct fp8e4m3 {
  uint8_t bits;
};

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---- bf16 ----
inline float bf16_to_f32(uint16_t b) { return bits_to_f32(static_cast<uint32_t>(b) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

// ---- f16 ----
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// ---- fp8 e4m3fn ----
float fp8e4m3_to_f32(uint8_t v);
uint8_t f32_to_fp8e4m3(float f);
inline constexpr float kFp8E4M3Max = 448.0f;

// Bulk conversions (vectorised where the CPU allows).
void bf16_to_f32(std::span<const uint16_t> in, std::span<float> out);
void f32_to_bf16(std::span<const float> in, std::span<uint16_t> out);
void f16_to_f32(std::span<const uint16_t> in, std::span<float> out);
void f32_to_f16(std::span<const float> in, std::span<uint16_t> out);

}  // namespace indexshare

// Independent float64 decoders and a hand-rolled safetensors byte builder for the reader tests.
// Written from the format description; never calls the code under test.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace indexshare::ref {

// Value of a narrow float code with `ebits` exponent and `mbits` mantissa bits. `has_inf`: IEEE
// style (all-ones exponent = inf/NaN); otherwise e4m3fn style (only S.1111.111 is NaN).
inline double decode_narrow(uint32_t code, int ebits, int mbits, bool has_inf) {
  const uint32_t sign = code >> (ebits + mbits);
  const uint32_t exp = (code >> mbits) & ((1u << ebits) - 1);
  const uint32_t man = code & ((1u << mbits) - 1);
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t emax = (1u << ebits) - 1;
  double v;
  if (has_inf && exp == emax) {
    v = man == 0 ? INFINITY : NAN;
  } else if (!has_inf && exp == emax && man == (1u << mbits) - 1) {
    v = NAN;
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - bias - mbits);
  } else {
    v = std::ldexp(1.0 + std::ldexp(static_cast<double>(man), -mbits), static_cast<int>(exp) - bias);
  }
  return sign ? -v : v;
}
inline double f16_ref(uint16_t c) { return decode_narrow(c, 5, 10, true); }
inline double bf16_ref(uint16_t c) { return decode_narrow(c, 8, 7, true); }
inline double fp8e4m3_ref(uint8_t c) { return decode_narrow(c, 4, 3, false); }

// File bytes: 8-byte little-endian length of `header`, `header`, then `data`.
inline std::vector<uint8_t> st_bytes(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

}  // namespace indexshare::ref

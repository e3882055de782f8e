// libFuzzer target for the GGUF reader: parse the input; on success decode every array, call
// the typed getters, check every tensor's data lies inside the input and dequantise a few rows
// of the types the engine computes on. indexshare::Error is the expected outcome for bad
// input; anything else (a crash, a sanitizer report, another exception) is a finding.
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "ops/quant.h"

namespace {

using indexshare::io::GgufArray;
using indexshare::io::GgufFile;

void exercise(const GgufFile& f, std::span<const uint8_t> input) {
  for (const auto& key : f.keys()) {
    const auto& v = f.value(key);
    try {
      (void)f.get_int(key);
    } catch (const indexshare::Error&) {
    }
    try {
      (void)f.get_float(key);
    } catch (const indexshare::Error&) {
    }
    if (const auto* a = std::get_if<GgufArray>(&v.v)) {
      (void)a->elements();
      for (auto get : {0, 1, 2}) {
        try {
          if (get == 0) (void)f.get_string_array(key);
          if (get == 1) (void)f.get_int_array(key);
          if (get == 2) (void)f.get_float_array(key);
        } catch (const indexshare::Error&) {
        }
      }
    }
  }
  std::vector<float> row;
  for (const auto& t : f.tensors()) {
    const uint8_t* lo = input.data();
    const uint8_t* hi = input.data() + input.size();
    if (t.data.size() != t.nbytes || (t.nbytes > 0 && (t.data.data() < lo || t.data.data() + t.nbytes > hi))) {
      std::abort();  // the reader let a tensor escape the buffer
    }
    if (!indexshare::ops::can_dequantize(t.type) || t.nbytes == 0) continue;
    const int64_t n = t.row_length();
    if (n > 4096) continue;
    row.resize(static_cast<size_t>(n));
    const int64_t rows = std::min<int64_t>(t.rows(), 4);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* src = t.data.data() + r * t.row_bytes();
      // The kernels need element alignment, which the mapping gives real files; skip others.
      if (reinterpret_cast<uintptr_t>(src) % 4 != 0) break;
      indexshare::ops::dequantize_row(t.type, src, row.data(), n);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // libFuzzer's buffer has no particular alignment; copy into an aligned one like a mapping.
  std::vector<uint64_t> aligned((size + 7) / 8);
  if (size > 0) std::memcpy(aligned.data(), data, size);
  const std::span<const uint8_t> input(reinterpret_cast<const uint8_t*>(aligned.data()), size);
  try {
    const GgufFile f = GgufFile::parse(input, "fuzz-input");
    exercise(f, input);
  } catch (const indexshare::Error&) {
  }
  return 0;
}

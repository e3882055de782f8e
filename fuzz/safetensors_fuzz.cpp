// libFuzzer target for the safetensors reader: any input must either parse (and then every
// tensor must convert without touching memory outside the buffer) or raise indexshare::Error.
// Any other exception, crash or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = indexshare::io::SafetensorsFile::parse(std::span<const uint8_t>(data, size), "fuzz");
    for (const auto& t : f.tensors()) {
      std::vector<float> out(static_cast<size_t>(t.elements()));
      f.read_f32(t, out);
      if (!indexshare::io::st_dtype_is_float(t.dtype)) (void)f.read_i64(t.name);
    }
    (void)f.metadata().size();
  } catch (const indexshare::Error&) {
  }
  return 0;
}

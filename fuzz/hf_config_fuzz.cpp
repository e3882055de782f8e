// libFuzzer target for the config.json reader: any input must either parse or raise
// indexshare::Error. When it parses as a DSA model, the F/S schedule it resolved must hold its
// invariants (layer 0 full, every layer's source an F layer at or before it, one entry per layer).
// Any other exception, crash, sanitizer report or broken invariant is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
#include "io/hf_config.h"
#include "share/schedule.h"

namespace {
void check_schedule(const indexshare::share::Schedule& s, int64_t num_layers) {
  if (s.num_layers() != num_layers || !s.is_full(0) || s.num_full() + s.num_shared() != s.num_layers()) std::abort();
  for (int i = 0; i < s.num_layers(); ++i) {
    const int src = s.source(i);
    if (src > i || src < 0 || !s.is_full(src) || (s.is_full(i) && src != i)) std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto c = indexshare::io::parse_hf_config(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    if (c.resolved_schedule) check_schedule(*c.resolved_schedule, c.num_hidden_layers);
    (void)indexshare::io::family_name(c.family);
  } catch (const indexshare::Error&) {
  }
  return 0;
}

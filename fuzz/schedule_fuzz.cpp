// libFuzzer target for the F/S/R schedule parser (index_topk_pattern, indexer_types, freq/offset):
// any input must either resolve or raise indexshare::Error, and a resolved schedule must match
// an independent restatement of the rules of share/schedule.h:
//   - layer 0 is F; one entry per layer; source(i) = the largest F or R layer j <= i,
//     full_source(i) = the largest F layer j <= i;
//   - a pattern is read character for character ('F' full, 'S' shared, 'R' reindex),
//     indexer_types entry for entry ("full" / "shared" / "reindex"), else
//     full(i) = max(i - o + 1, 0) % f == 0 (F or S only);
//   - pattern() written back and read again gives the same schedule.
// Any other exception, crash, sanitizer report or mismatch is a bug.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "share/schedule.h"

using indexshare::share::Schedule;
using indexshare::share::ScheduleInput;

namespace {
void require(bool ok) {
  if (!ok) std::abort();
}

// The kinds ('F', 'S', 'R') the rules give, or an empty string where the rules reject the input.
std::string expected(const ScheduleInput& in) {
  if (in.num_layers < 1 || in.index_topk_freq < 1 || in.index_skip_topk_offset < 0) return {};
  const auto n = static_cast<size_t>(in.num_layers);
  std::string kind(n, 'S');
  if (in.indexer_types) {
    if (in.indexer_types->size() != n) return {};
    for (size_t i = 0; i < n; ++i) {
      const std::string& t = (*in.indexer_types)[i];
      if (t == "full") kind[i] = 'F';
      else if (t == "shared") kind[i] = 'S';
      else if (t == "reindex") kind[i] = 'R';
      else return {};
    }
  } else if (in.index_topk_pattern) {
    if (in.index_topk_pattern->size() != n) return {};
    for (size_t i = 0; i < n; ++i) {
      const char ch = (*in.index_topk_pattern)[i];
      if (ch != 'F' && ch != 'S' && ch != 'R') return {};
      kind[i] = ch;
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const int64_t shifted = static_cast<int64_t>(i) - in.index_skip_topk_offset + 1;
      kind[i] = (shifted > 0 ? shifted : 0) % in.index_topk_freq == 0 ? 'F' : 'S';
    }
  }
  if (kind[0] != 'F') return {};
  return kind;
}

void check(const Schedule& s, const std::string& want) {
  require(s.num_layers() == static_cast<int>(want.size()));
  int last_full = -1, last_set = -1, n_full = 0, n_re = 0;
  for (int i = 0; i < s.num_layers(); ++i) {
    const char k = want[static_cast<size_t>(i)];
    require(s.is_full(i) == (k == 'F') && s.is_reindex(i) == (k == 'R') && s.is_shared(i) == (k == 'S'));
    if (k == 'F') last_full = i, ++n_full;
    if (k == 'R') ++n_re;
    if (k != 'S') last_set = i;
    require(s.source(i) == last_set && s.full_source(i) == last_full);
  }
  require(s.num_full() == n_full && s.num_reindex() == n_re && s.num_shared() == s.num_layers() - n_full - n_re);
  const std::string p = s.pattern();
  require(p == want);
  require(Schedule::from_pattern(p).pattern() == p);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  ScheduleInput in;
  in.num_layers = fdp.ConsumeIntegralInRange<int>(-2, 300);
  in.index_topk_freq = fdp.ConsumeIntegralInRange<int64_t>(-2, 70);
  in.index_skip_topk_offset = fdp.ConsumeIntegralInRange<int64_t>(-2, 70);
  const int mode = fdp.ConsumeIntegralInRange<int>(0, 3);
  if (mode == 1) in.index_topk_pattern = fdp.ConsumeRandomLengthString(400);
  if (mode == 2 || mode == 3) {
    std::vector<std::string> types;
    const size_t n = fdp.ConsumeIntegralInRange<size_t>(0, 300);
    for (size_t i = 0; i < n && fdp.remaining_bytes() > 0; ++i)
      types.push_back(fdp.ConsumeBool() ? (fdp.ConsumeBool() ? "full" : (fdp.ConsumeBool() ? "shared" : "reindex"))
                                        : fdp.ConsumeRandomLengthString(8));
    in.indexer_types = std::move(types);
    if (mode == 3) in.index_topk_pattern = fdp.ConsumeRandomLengthString(400);  // indexer_types wins
  }
  const std::string want = expected(in);
  try {
    const Schedule s = Schedule::resolve(in);
    require(!want.empty());
    check(s, want);
  } catch (const indexshare::Error&) {
    require(want.empty());
  }
  // The pattern shorthand on the raw bytes.
  const std::string raw = fdp.ConsumeRemainingBytesAsString();
  ScheduleInput pin;
  pin.num_layers = static_cast<int>(raw.size());
  pin.index_topk_pattern = raw;
  const std::string pwant = expected(pin);
  try {
    check(Schedule::from_pattern(raw), pwant);
    require(!pwant.empty());
  } catch (const indexshare::Error&) {
    require(pwant.empty());
  }
  return 0;
}

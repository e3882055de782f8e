// GPU activity of a time window through CUPTI: every kernel, memcpy and memset the device ran,
// with device timestamps, so a benchmark can tell how much of a step the GPU was busy and how
// much it waited between kernels (launch gaps, host synchronisation).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace indexshare::bench {

struct GpuSpan {
  uint64_t start = 0, end = 0;  // ns, device clock
  bool kernel = true;
};

class GpuTrace {
 public:
  // Starts recording (enables CUPTI activity collection). One trace at a time.
  void start();
  // Stops and returns the spans recorded since start(), sorted by start.
  std::vector<GpuSpan> stop();
};

struct BusyStats {
  double window_ms = 0;  // first start to last end
  double busy_ms = 0;    // union of the spans
  double idle_ms = 0;    // window - busy
  int64_t kernels = 0;
};
BusyStats busy_stats(const std::vector<GpuSpan>& spans);

}  // namespace indexshare::bench

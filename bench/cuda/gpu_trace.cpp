#include "gpu_trace.h"

#include <cupti.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "core/error.h"

namespace indexshare::bench {
namespace {

std::mutex g_mu;
std::vector<GpuSpan> g_spans;

#define IS_CUPTI_CHECK(expr)                                                            \
  do {                                                                                  \
    const CUptiResult r_ = (expr);                                                      \
    if (r_ != CUPTI_SUCCESS) {                                                          \
      const char* s_ = nullptr;                                                         \
      cuptiGetResultString(r_, &s_);                                                    \
      ::indexshare::fail("CUPTI error ", s_ ? s_ : "?", " in ", #expr);                 \
    }                                                                                   \
  } while (0)

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  constexpr size_t kBytes = 8u << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBytes));
  *size = kBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::lock_guard<std::mutex> lock(g_mu);
  while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    switch (rec->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
      case CUPTI_ACTIVITY_KIND_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
        g_spans.push_back({k->start, k->end, true});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
        g_spans.push_back({m->start, m->end, false});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(rec);
        g_spans.push_back({m->start, m->end, false});
        break;
      }
      default:
        break;
    }
  }
  std::free(buffer);
}

}  // namespace

void GpuTrace::start() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_spans.clear();
  }
  IS_CUPTI_CHECK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
  IS_CUPTI_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  IS_CUPTI_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY));
  IS_CUPTI_CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET));
}

std::vector<GpuSpan> GpuTrace::stop() {
  IS_CUPTI_CHECK(cuptiActivityFlushAll(1));
  IS_CUPTI_CHECK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  IS_CUPTI_CHECK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_MEMCPY));
  IS_CUPTI_CHECK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_MEMSET));
  std::vector<GpuSpan> out;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    out.swap(g_spans);
  }
  std::sort(out.begin(), out.end(), [](const GpuSpan& a, const GpuSpan& b) { return a.start < b.start; });
  return out;
}

BusyStats busy_stats(const std::vector<GpuSpan>& spans) {
  BusyStats s;
  if (spans.empty()) return s;
  uint64_t first = spans.front().start, last = 0, busy = 0, cur_s = spans.front().start, cur_e = spans.front().end;
  for (const GpuSpan& sp : spans) {
    s.kernels += sp.kernel ? 1 : 0;
    last = std::max(last, sp.end);
    if (sp.start > cur_e) {
      busy += cur_e - cur_s;
      cur_s = sp.start;
      cur_e = sp.end;
    } else {
      cur_e = std::max(cur_e, sp.end);
    }
  }
  busy += cur_e - cur_s;
  s.window_ms = static_cast<double>(last - first) * 1e-6;
  s.busy_ms = static_cast<double>(busy) * 1e-6;
  s.idle_ms = s.window_ms - s.busy_ms;
  return s;
}

}  // namespace indexshare::bench

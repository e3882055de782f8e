#include "dsa_options.h"

namespace indexshare::cli {

void add_schedule_options(CLI::App& app, ScheduleArgs& a) {
  app.add_option("--pattern", a.pattern, "sharing pattern, one F/S per layer (index_topk_pattern)");
  app.add_option("--freq", a.freq, "one indexer per FREQ layers (index_topk_freq)");
  app.add_option("--offset", a.offset, "phase of --freq (index_skip_topk_offset)")->capture_default_str();
}

std::optional<share::Schedule> schedule_from_args(const ScheduleArgs& a, int layers) {
  if (a.pattern.empty() && a.freq == 0) return std::nullopt;
  share::ScheduleInput in;
  in.num_layers = layers;
  if (!a.pattern.empty()) in.index_topk_pattern = a.pattern;
  in.index_topk_freq = a.freq > 0 ? a.freq : 1;
  in.index_skip_topk_offset = a.offset;
  return share::Schedule::resolve(in);
}

}  // namespace indexshare::cli

// Options shared by the commands that run DSA on a Llama model: the sharing schedule
// (--pattern, or --freq/--offset with transformers' rule), top-k, and the indexer file.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

#include "share/schedule.h"

namespace indexshare::cli {

struct ScheduleArgs {
  std::string pattern;   // F/S string
  int64_t freq = 0;      // 0 = not given
  int64_t offset = 2;
};

// Adds --pattern, --freq, --offset.
void add_schedule_options(CLI::App& app, ScheduleArgs& a);
// The schedule the options describe for `layers` layers, or nullopt when none was given.
std::optional<share::Schedule> schedule_from_args(const ScheduleArgs& a, int layers);

}  // namespace indexshare::cli

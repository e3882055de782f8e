#include "share/schedule.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace indexshare::share {

Schedule::Schedule(std::vector<LayerKind> kinds, ScheduleOrigin origin) : kinds_(std::move(kinds)), origin_(origin) {
  source_.resize(kinds_.size());
  full_source_.resize(kinds_.size());
  int last_full = -1, last_set = -1;
  for (size_t i = 0; i < kinds_.size(); ++i) {
    if (kinds_[i] == LayerKind::kFull) {
      last_full = static_cast<int>(i);
      ++num_full_;
    }
    if (kinds_[i] == LayerKind::kReindex) ++num_reindex_;
    if (kinds_[i] != LayerKind::kShared) last_set = static_cast<int>(i);
    source_[i] = last_set;
    full_source_[i] = last_full;
  }
}

Schedule Schedule::resolve(const ScheduleInput& in) {
  IS_CHECK(in.num_layers >= 1, "num_hidden_layers = ", in.num_layers, " must be >= 1");
  IS_CHECK(in.index_topk_freq >= 1, "index_topk_freq = ", in.index_topk_freq, " must be >= 1");
  IS_CHECK(in.index_skip_topk_offset >= 0, "index_skip_topk_offset = ", in.index_skip_topk_offset,
           " must be >= 0");
  const auto n = static_cast<size_t>(in.num_layers);
  std::vector<LayerKind> kinds(n);
  ScheduleOrigin origin;
  const char* first_key;

  if (in.indexer_types) {
    origin = ScheduleOrigin::kIndexerTypes;
    first_key = "indexer_types";
    const auto& t = *in.indexer_types;
    IS_CHECK(t.size() == n, "indexer_types has ", t.size(), " entries but num_hidden_layers = ", n);
    for (size_t i = 0; i < n; ++i) {
      if (t[i] == "full") {
        kinds[i] = LayerKind::kFull;
      } else if (t[i] == "shared") {
        kinds[i] = LayerKind::kShared;
      } else if (t[i] == "reindex") {
        kinds[i] = LayerKind::kReindex;
      } else {
        fail("indexer_types[", i, "] = \"", t[i], "\": expected \"full\", \"shared\" or \"reindex\"");
      }
    }
  } else if (in.index_topk_pattern) {
    origin = ScheduleOrigin::kPattern;
    first_key = "index_topk_pattern";
    const auto& p = *in.index_topk_pattern;
    IS_CHECK(p.size() == n, "index_topk_pattern has length ", p.size(), " but num_hidden_layers = ", n);
    for (size_t i = 0; i < n; ++i) {
      if (p[i] == 'F') {
        kinds[i] = LayerKind::kFull;
      } else if (p[i] == 'S') {
        kinds[i] = LayerKind::kShared;
      } else if (p[i] == 'R') {
        kinds[i] = LayerKind::kReindex;
      } else {
        fail("index_topk_pattern: character '", p[i], "' at position ", i, ": expected 'F', 'S' or 'R'");
      }
    }
  } else {
    origin = ScheduleOrigin::kFreqOffset;
    first_key = "index_skip_topk_offset";
    const int64_t f = in.index_topk_freq, o = in.index_skip_topk_offset;
    for (size_t i = 0; i < n; ++i)
      kinds[i] = std::max<int64_t>(static_cast<int64_t>(i) - o + 1, 0) % f == 0 ? LayerKind::kFull : LayerKind::kShared;
    IS_CHECK(kinds[0] == LayerKind::kFull, "index_skip_topk_offset = ", o, " with index_topk_freq = ", f,
             " makes layer 0 shared; the first layer must be full (use offset >= 1)");
  }
  IS_CHECK(kinds[0] != LayerKind::kShared, first_key, ": layer 0 is shared; the first layer must be full");
  IS_CHECK(kinds[0] == LayerKind::kFull, first_key,
           ": layer 0 is reindex (R), which re-scores an earlier F layer's candidates; the first layer must be full");
  return Schedule(std::move(kinds), origin);
}

Schedule Schedule::all_full(int num_layers) {
  IS_CHECK(num_layers >= 1, "num_hidden_layers = ", num_layers, " must be >= 1");
  return Schedule(std::vector<LayerKind>(static_cast<size_t>(num_layers), LayerKind::kFull), ScheduleOrigin::kAllFull);
}

Schedule Schedule::from_pattern(std::string_view pattern) {
  ScheduleInput in;
  in.num_layers = static_cast<int>(pattern.size());
  in.index_topk_pattern = std::string(pattern);
  return resolve(in);
}

void Schedule::check_layer(int layer) const {
  IS_CHECK(layer >= 0 && layer < num_layers(), "layer ", layer, " out of range [0, ", num_layers(), ")");
}

LayerKind Schedule::kind(int layer) const {
  check_layer(layer);
  return kinds_[static_cast<size_t>(layer)];
}

int Schedule::source(int layer) const {
  check_layer(layer);
  return source_[static_cast<size_t>(layer)];
}

int Schedule::full_source(int layer) const {
  check_layer(layer);
  return full_source_[static_cast<size_t>(layer)];
}

std::vector<int> Schedule::full_layers() const {
  std::vector<int> r;
  r.reserve(static_cast<size_t>(num_full_));
  for (int i = 0; i < num_layers(); ++i)
    if (kinds_[static_cast<size_t>(i)] == LayerKind::kFull) r.push_back(i);
  return r;
}

std::string Schedule::pattern() const {
  std::string s(kinds_.size(), 'S');
  for (size_t i = 0; i < kinds_.size(); ++i) s[i] = kind_char(kinds_[i]);
  return s;
}

std::string Schedule::summary() const {
  if (num_reindex_ == 0) return cat(num_full(), " F / ", num_shared(), " S: ", pattern());
  return cat(num_full(), " F / ", num_reindex(), " R / ", num_shared(), " S: ", pattern());
}

char kind_char(LayerKind k) {
  switch (k) {
    case LayerKind::kFull: return 'F';
    case LayerKind::kShared: return 'S';
    case LayerKind::kReindex: return 'R';
  }
  return '?';
}

std::string_view origin_name(ScheduleOrigin o) {
  switch (o) {
    case ScheduleOrigin::kIndexerTypes: return "indexer_types";
    case ScheduleOrigin::kPattern: return "index_topk_pattern";
    case ScheduleOrigin::kFreqOffset: return "index_topk_freq/index_skip_topk_offset";
    case ScheduleOrigin::kAllFull: return "all full";
  }
  return "?";
}

}  // namespace indexshare::share

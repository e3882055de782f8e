#include "share/schedule.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "core/error.h"

namespace indexshare::share {
namespace {

// The closed form of the freq/offset rule, written independently of the code under test:
// layers 0..offset-1 are F, then layer offset-1 and every freq-th layer after it.
std::set<int> closed_form_full(int n, int freq, int offset) {
  std::set<int> f;
  for (int i = 0; i < offset && i < n; ++i) f.insert(i);
  for (int i = offset - 1; i < n; i += freq) f.insert(i);
  return f;
}

std::set<int> full_set(const Schedule& s) {
  auto v = s.full_layers();
  return {v.begin(), v.end()};
}

ScheduleInput freq_offset(int n, int freq, int offset) {
  ScheduleInput in;
  in.num_layers = n;
  in.index_topk_freq = freq;
  in.index_skip_topk_offset = offset;
  return in;
}

// Checks the whole public view of a schedule against an expected F set.
void expect_schedule(const Schedule& s, int n, const std::set<int>& full) {
  ASSERT_EQ(s.num_layers(), n);
  EXPECT_EQ(full_set(s), full);
  EXPECT_EQ(s.num_full(), static_cast<int>(full.size()));
  EXPECT_EQ(s.num_shared(), n - static_cast<int>(full.size()));
  std::string pat;
  int last = -1;
  for (int i = 0; i < n; ++i) {
    const bool f = full.count(i) > 0;
    pat += f ? 'F' : 'S';
    if (f) last = i;
    EXPECT_EQ(s.is_full(i), f) << "layer " << i;
    EXPECT_EQ(s.source(i), last) << "layer " << i;
  }
  EXPECT_EQ(s.pattern(), pat);
  EXPECT_EQ(s.summary(), std::to_string(full.size()) + " F / " + std::to_string(n - full.size()) + " S: " + pat);
}

void expect_error(const ScheduleInput& in, const std::string& needle) {
  try {
    Schedule::resolve(in);
    ADD_FAILURE() << "no error; expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

TEST(Schedule, Glm52Freq4Offset3Has21FullLayers) {
  const auto s = Schedule::resolve(freq_offset(78, 4, 3));
  // The list as published: 0, 1, 2, then every 4th layer from 2: 6, 10, ..., 74.
  std::set<int> expected = {0, 1, 2, 6, 10, 14, 18, 22, 26, 30, 34, 38, 42, 46, 50, 54, 58, 62, 66, 70, 74};
  expect_schedule(s, 78, expected);
  EXPECT_EQ(s.num_full(), 21);
  EXPECT_EQ(s.pattern().substr(0, 11), "FFFSSSFSSSF");
  EXPECT_EQ(s.pattern().substr(70), "FSSSFSSS");
  EXPECT_EQ(s.source(5), 2);
  EXPECT_EQ(s.source(77), 74);
  EXPECT_EQ(s.origin(), ScheduleOrigin::kFreqOffset);
  EXPECT_EQ(expected, closed_form_full(78, 4, 3));
}

TEST(Schedule, DefaultOffsetIsTwo) {
  ScheduleInput in;
  in.num_layers = 78;
  in.index_topk_freq = 4;  // offset left at its default
  const auto s78 = Schedule::resolve(in);
  expect_schedule(s78, 78, closed_form_full(78, 4, 2));
  EXPECT_EQ(s78.num_full(), 21);
  EXPECT_EQ(s78.pattern().substr(0, 10), "FFSSSFSSSF");  // {0, 1, 5, 9, ...}
  in.num_layers = 61;
  const auto s61 = Schedule::resolve(in);
  expect_schedule(s61, 61, closed_form_full(61, 4, 2));
  EXPECT_EQ(s61.num_full(), 16);
}

TEST(Schedule, ClosedFormOverAGrid) {
  for (int n : {1, 2, 3, 7, 61, 78})
    for (int freq : {1, 2, 3, 4, 8})
      for (int offset : {1, 2, 3, 5}) {
        SCOPED_TRACE(testing::Message() << "n=" << n << " freq=" << freq << " offset=" << offset);
        const auto s = Schedule::resolve(freq_offset(n, freq, offset));
        expect_schedule(s, n, closed_form_full(n, freq, offset));
        // Spec count (offset >= 1): (offset - 1) + ceil((n - offset + 1) / freq), when n >= offset.
        if (n >= offset) {
          EXPECT_EQ(s.num_full(), (offset - 1) + (n - offset + 1 + freq - 1) / freq);
        }
      }
}

TEST(Schedule, Freq1IsAllFull) {
  for (int offset : {0, 1, 2, 3, 10}) {
    const auto s = Schedule::resolve(freq_offset(40, 1, offset));
    EXPECT_EQ(s.num_full(), 40) << "offset " << offset;
    EXPECT_EQ(s.pattern(), std::string(40, 'F'));
  }
  ScheduleInput def;
  def.num_layers = 5;  // nothing set at all: plain DSA
  EXPECT_EQ(Schedule::resolve(def).pattern(), "FFFFF");
  const auto a = Schedule::all_full(6);
  EXPECT_EQ(a.pattern(), "FFFFFF");
  EXPECT_EQ(a.origin(), ScheduleOrigin::kAllFull);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a.source(i), i);
}

TEST(Schedule, ExplicitPattern) {
  ScheduleInput in;
  in.num_layers = 7;
  in.index_topk_pattern = "FSSFFSS";
  in.index_topk_freq = 4;  // ignored: the pattern overrides freq/offset
  in.index_skip_topk_offset = 3;
  const auto s = Schedule::resolve(in);
  expect_schedule(s, 7, {0, 3, 4});
  EXPECT_EQ(s.source(2), 0);
  EXPECT_EQ(s.source(6), 4);
  EXPECT_EQ(s.origin(), ScheduleOrigin::kPattern);
  EXPECT_EQ(Schedule::from_pattern("FS").summary(), "1 F / 1 S: FS");
}

TEST(Schedule, IndexerTypesAreAuthoritative) {
  ScheduleInput in;
  in.num_layers = 6;
  in.indexer_types = std::vector<std::string>{"full", "shared", "full", "shared", "shared", "full"};
  in.index_topk_pattern = "FFFFFF";
  in.index_topk_freq = 2;
  in.index_skip_topk_offset = 1;
  const auto s = Schedule::resolve(in);
  expect_schedule(s, 6, {0, 2, 5});
  EXPECT_EQ(s.origin(), ScheduleOrigin::kIndexerTypes);
}

TEST(Schedule, Glm5SearchedPattern) {
  const std::string p = "FFSFSSSFSSFFFSSSFFFSFSSSSSSFFSFFSFFSSFFFFFFSFFFFFSFFSSSSSSFSFFFSFSSSFSFFSFFSSS";
  ASSERT_EQ(p.size(), 78u);
  const std::set<int> expected = {0,  1,  3,  7,  10, 11, 12, 16, 17, 18, 20, 27, 28, 30, 31, 33, 34, 37, 38, 39,
                                  40, 41, 42, 44, 45, 46, 47, 48, 50, 51, 58, 60, 61, 62, 64, 68, 70, 71, 73, 74};
  ASSERT_EQ(expected.size(), 40u);
  const auto s = Schedule::from_pattern(p);
  expect_schedule(s, 78, expected);
  EXPECT_EQ(s.num_full(), 40);
}

// Reindex (R) layers: an R layer has its own indexer, re-scores the candidates of the nearest F
// layer before it, and is the source of the S layers after it (until the next F or R layer).
TEST(Schedule, ReindexLayers) {
  const auto s = Schedule::from_pattern("FRSSFSRRS");
  // Written out by hand: the source (set) and the full source (candidates) of each layer.
  const std::vector<int> source = {0, 1, 1, 1, 4, 4, 6, 7, 7};
  const std::vector<int> full_source = {0, 0, 0, 0, 4, 4, 4, 4, 4};
  const std::string kinds = "FRSSFSRRS";
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(s.source(i), source[static_cast<size_t>(i)]) << "layer " << i;
    EXPECT_EQ(s.full_source(i), full_source[static_cast<size_t>(i)]) << "layer " << i;
    EXPECT_EQ(s.is_full(i), kinds[static_cast<size_t>(i)] == 'F');
    EXPECT_EQ(s.is_reindex(i), kinds[static_cast<size_t>(i)] == 'R');
    EXPECT_EQ(s.is_shared(i), kinds[static_cast<size_t>(i)] == 'S');
    EXPECT_EQ(s.has_indexer(i), kinds[static_cast<size_t>(i)] != 'S');
  }
  EXPECT_EQ(s.num_full(), 2);
  EXPECT_EQ(s.num_reindex(), 3);
  EXPECT_EQ(s.num_shared(), 4);
  EXPECT_TRUE(s.has_reindex());
  EXPECT_EQ(s.pattern(), kinds);
  EXPECT_EQ(s.summary(), "2 F / 3 R / 4 S: FRSSFSRRS");
  EXPECT_EQ(s.full_layers(), (std::vector<int>{0, 4}));
  ScheduleInput t;
  t.num_layers = 3;
  t.indexer_types = std::vector<std::string>{"full", "reindex", "shared"};
  EXPECT_EQ(Schedule::resolve(t).pattern(), "FRS");
  EXPECT_FALSE(Schedule::from_pattern("FSFS").has_reindex());
}

TEST(Schedule, InvalidInputsNameTheKey) {
  expect_error(freq_offset(0, 1, 2), "num_hidden_layers = 0");
  expect_error(freq_offset(-3, 1, 2), "num_hidden_layers = -3");
  expect_error(freq_offset(10, 0, 2), "index_topk_freq = 0 must be >= 1");
  expect_error(freq_offset(10, -4, 2), "index_topk_freq = -4");
  expect_error(freq_offset(10, 4, -1), "index_skip_topk_offset = -1 must be >= 0");
  // Offset 0 with freq > 1 puts layer 0 in the shared set.
  expect_error(freq_offset(10, 4, 0), "index_skip_topk_offset = 0 with index_topk_freq = 4 makes layer 0 shared");

  ScheduleInput p;
  p.num_layers = 5;
  p.index_topk_pattern = "FSSF";
  expect_error(p, "index_topk_pattern has length 4 but num_hidden_layers = 5");
  p.index_topk_pattern = "FSSFXS";
  expect_error(p, "index_topk_pattern has length 6");
  p.index_topk_pattern = "FSxFS";
  expect_error(p, "index_topk_pattern: character 'x' at position 2");
  p.index_topk_pattern = "FSSFf";
  expect_error(p, "character 'f' at position 4");
  p.index_topk_pattern = "SFFFF";
  expect_error(p, "index_topk_pattern: layer 0 is shared");
  p.index_topk_pattern = "";
  expect_error(p, "index_topk_pattern has length 0");

  ScheduleInput t;
  t.num_layers = 3;
  t.indexer_types = std::vector<std::string>{"full", "shared"};
  expect_error(t, "indexer_types has 2 entries but num_hidden_layers = 3");
  t.indexer_types = std::vector<std::string>{"full", "shared", "Full"};
  expect_error(t, "indexer_types[2] = \"Full\"");
  t.indexer_types = std::vector<std::string>{"full", "F", "shared"};
  expect_error(t, "indexer_types[1] = \"F\": expected \"full\", \"shared\" or \"reindex\"");
  t.indexer_types = std::vector<std::string>{"shared", "full", "full"};
  expect_error(t, "indexer_types: layer 0 is shared");

  t.indexer_types = std::vector<std::string>{"reindex", "full", "full"};
  expect_error(t, "indexer_types: layer 0 is reindex (R)");
  p.index_topk_pattern = "RFFSS";
  expect_error(p, "index_topk_pattern: layer 0 is reindex (R)");
  p.index_topk_pattern = "FSrFS";
  expect_error(p, "character 'r' at position 2: expected 'F', 'S' or 'R'");

  EXPECT_THROW(Schedule::all_full(0), Error);
  const auto s = Schedule::from_pattern("FSF");
  EXPECT_THROW(s.is_full(3), Error);
  EXPECT_THROW(s.source(-1), Error);
}

}  // namespace
}  // namespace indexshare::share

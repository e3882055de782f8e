// Copy and retrieval probes: the windows are what eval/probes.h says (checked position by
// position with a character tokenizer), the region scores are the closed forms of the given
// per-prediction values, and bad inputs are errors naming the problem.
#include "eval/probes.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"

namespace indexshare::eval {
namespace {

// One token per byte, offset so text tokens (1000+) never collide with held-out ids (< 1000).
std::vector<int32_t> chars(std::string_view s) {
  std::vector<int32_t> r;
  for (unsigned char c : s) r.push_back(1000 + c);
  return r;
}

std::vector<int32_t> heldout(int64_t n) {
  std::vector<int32_t> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) r[static_cast<size_t>(i)] = static_cast<int32_t>(i % 997);
  return r;
}

bool contains_at(const std::vector<int32_t>& hay, size_t at, const std::vector<int32_t>& needle) {
  return at + needle.size() <= hay.size() && std::equal(needle.begin(), needle.end(), hay.begin() + at);
}

TEST(Probes, RepeatWindowIsThePassageThreeTimes) {
  const int64_t ctx = 300, n = ctx / 3;
  const auto text = heldout(2 * ctx);
  const double depths[] = {0.5};
  const auto probes = make_probes(text, chars, ctx, depths);
  ASSERT_EQ(probes.size(), 2u);
  const Probe& p = probes[0];
  EXPECT_EQ(p.name, "repeat x3");
  ASSERT_EQ(static_cast<int64_t>(p.tokens.size()), ctx);
  for (int64_t i = 0; i < ctx; ++i) EXPECT_EQ(p.tokens[static_cast<size_t>(i)], text[static_cast<size_t>(i % n)]) << i;
  EXPECT_EQ(p.first, 0);
  ASSERT_EQ(p.regions.size(), 2u);
  // "first copy" predicts tokens 1 .. n-1; "repeats" predicts tokens n .. ctx-1, each of which
  // occurred n positions earlier.
  EXPECT_EQ(p.regions[0].begin, 0);
  EXPECT_EQ(p.regions[0].end, n - 1);
  EXPECT_EQ(p.regions[1].begin, n - 1);
  EXPECT_EQ(p.regions[1].end, ctx - 1);
  for (int64_t j = p.regions[1].begin; j < p.regions[1].end; ++j)
    EXPECT_EQ(p.tokens[static_cast<size_t>(j + 1)], p.tokens[static_cast<size_t>(j + 1 - n)]);
  EXPECT_EQ(p.copy_period, n);
  EXPECT_EQ(probes[1].copy_period, 0);
}

TEST(Probes, CopyRecallIsTheShareOfRowsHoldingTheCopySource) {
  Probe p;
  p.name = "repeat x3";
  p.tokens.resize(12);
  p.copy_period = 4;  // repeats region: rows 3 .. 10, copy source of row j at j - 3
  // Recorded from position 1 with stride 2: rows at positions 2, 4, 6, 8, 10.
  // Layer 0: position 2 is outside the region; 4 holds 1 (yes), 6 lacks 3, 8 holds 5, 10 holds 7.
  const std::vector<std::vector<std::vector<int32_t>>> rec = {
      {{0, 1}, {1, 2}, {0, 2}, {5}, {6, 7}}, {}, {{2}, {0}}};
  const auto r = copy_recall(p, rec, 1, 2);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_DOUBLE_EQ(r[0], 3.0 / 4.0);
  EXPECT_TRUE(std::isnan(r[1]));
  EXPECT_DOUBLE_EQ(r[2], 0.0);  // only position 4 is in the region, and 1 is not in {0}
  EXPECT_THROW(copy_recall(p, rec, 0, 0), Error);
  Probe none;
  none.name = "passkey";
  EXPECT_THROW(copy_recall(none, rec, 0, 1), Error);
}

TEST(Probes, PasskeyNeedleAtItsDepthAndTheAnswerLast) {
  const int64_t ctx = 400;
  const auto text = heldout(2 * ctx);
  const double depths[] = {0.0, 0.1, 0.9, 1.0};
  const auto probes = make_probes(text, chars, ctx, depths);
  ASSERT_EQ(probes.size(), 5u);
  for (size_t d = 0; d < 4; ++d) {
    const Probe& p = probes[d + 1];
    SCOPED_TRACE(p.name);
    ASSERT_EQ(static_cast<int64_t>(p.tokens.size()), ctx);
    // The answer: " NNNNN" (6 character tokens), scored alone at the end.
    ASSERT_EQ(p.regions.size(), 1u);
    EXPECT_EQ(p.regions[0].end, ctx - 1);
    EXPECT_EQ(p.regions[0].end - p.regions[0].begin, 6);
    EXPECT_EQ(p.first, ctx - 7);
    std::string answer;
    for (int64_t i = ctx - 6; i < ctx; ++i) answer += static_cast<char>(p.tokens[static_cast<size_t>(i)] - 1000);
    ASSERT_EQ(answer.size(), 6u);
    EXPECT_EQ(answer[0], ' ');
    const std::string key = answer.substr(1);
    for (char c : key) EXPECT_TRUE(c >= '0' && c <= '9') << key;
    const auto needle = chars("\nThe pass key is " + key + ". Remember it. " + key + " is the pass key.\n");
    const auto question = chars("\nWhat is the pass key? The pass key is");
    EXPECT_TRUE(contains_at(p.tokens, static_cast<size_t>(ctx - 6) - question.size(), question));
    // Filler: the held-out text from position ctx on, in order, with the needle at the depth's
    // fraction of the filler (at least one filler token before it).
    const int64_t filler = ctx - static_cast<int64_t>(needle.size() + question.size() + 6);
    const int64_t at = std::clamp<int64_t>(static_cast<int64_t>(std::floor(depths[d] * filler)), 1, filler);
    EXPECT_TRUE(contains_at(p.tokens, static_cast<size_t>(at), needle)) << "needle at " << at;
    EXPECT_EQ(p.evidence_begin, at);
    EXPECT_EQ(p.evidence_end, at + static_cast<int64_t>(needle.size()));
    for (int64_t i = 0; i < filler; ++i) {
      const size_t pos = static_cast<size_t>(i < at ? i : i + static_cast<int64_t>(needle.size()));
      ASSERT_EQ(p.tokens[pos], text[static_cast<size_t>(ctx + i)]) << "filler token " << i;
    }
  }
  // Different depths ask for different keys.
  EXPECT_NE(std::vector<int32_t>(probes[1].tokens.end() - 5, probes[1].tokens.end()),
            std::vector<int32_t>(probes[2].tokens.end() - 5, probes[2].tokens.end()));
}

TEST(Probes, RegionScoresAreTheirClosedForms) {
  Probe p;
  p.name = "t";
  p.tokens.assign(10, 0);
  p.first = 3;  // scored positions 3..8: six predictions
  p.regions = {{"a", 3, 5}, {"b", 5, 9}};
  const std::vector<float> nll = {0.5f, 1.5f, 0.25f, 0.25f, 0.75f, 0.75f};
  const std::vector<uint8_t> top1 = {1, 1, 1, 0, 1, 1};
  const auto s = score_probe(p, nll, top1);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].tokens, 2);
  EXPECT_DOUBLE_EQ(s[0].mean_nll, 1.0);
  EXPECT_DOUBLE_EQ(s[0].ppl, std::exp(1.0));
  EXPECT_DOUBLE_EQ(s[0].top1, 1.0);
  EXPECT_TRUE(s[0].exact);
  EXPECT_EQ(s[1].tokens, 4);
  EXPECT_DOUBLE_EQ(s[1].mean_nll, 0.5);
  EXPECT_DOUBLE_EQ(s[1].top1, 0.75);
  EXPECT_FALSE(s[1].exact);
}

TEST(Probes, EvidenceRecallIsTheShareOfTheNeedleSelected) {
  Probe p;
  p.name = "t";
  p.evidence_begin = 10;
  p.evidence_end = 14;  // positions 10..13
  // Layer 0: rows holding 2 and 4 of the 4 positions; layer 1: none recorded; layer 2: 0 of 4.
  const std::vector<std::vector<std::vector<int32_t>>> rec = {
      {{1, 9, 10, 13, 20}, {10, 11, 12, 13}}, {}, {{0, 9, 14, 15}}};
  const auto r = evidence_recall(p, rec);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_DOUBLE_EQ(r[0], (0.5 + 1.0) / 2);
  EXPECT_TRUE(std::isnan(r[1]));
  EXPECT_DOUBLE_EQ(r[2], 0.0);
  Probe none;
  none.name = "repeat";
  EXPECT_THROW(evidence_recall(none, rec), Error);
}

TEST(Probes, BadInputsAreErrors) {
  const auto text = heldout(1000);
  const double ok[] = {0.5};
  auto expect_error = [](auto f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one containing: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { make_probes(text, chars, 600, ok); }, "need 1200");
  expect_error([&] { make_probes(text, chars, 32, ok); }, "at least 64");
  const double bad[] = {1.5};
  expect_error([&] { make_probes(text, chars, 300, bad); }, "depth 1.5");
  // A context too small for the needle and the question.
  expect_error([&] { make_probes(heldout(200), chars, 100, ok); }, "no room");
  Probe p;
  p.name = "t";
  p.tokens.assign(10, 0);
  p.first = 3;
  p.regions = {{"a", 2, 5}};
  const std::vector<float> nll(6, 1.0f);
  const std::vector<uint8_t> top1(6, 1);
  expect_error([&] { score_probe(p, nll, top1); }, "outside the scored positions");
  p.regions = {{"a", 3, 5}};
  expect_error([&] { score_probe(p, std::vector<float>(5, 1.0f), top1); }, "expected 6");
}

}  // namespace
}  // namespace indexshare::eval

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/error.h"
#include "eval/loss_split.h"

namespace indexshare::eval {
namespace {

// The definition read literally: the latest i < j with (t[i-1], t[i], t[i+1]) == (t[j-1], t[j], t[j+1])
// and i + 1 <= j, by a quadratic scan.
CopyClass brute(const std::vector<int32_t>& t, int64_t j) {
  for (int64_t i = j - 1; i >= 1; --i)
    if (t[i - 1] == t[j - 1] && t[i] == t[j] && t[i + 1] == t[j + 1]) {
      const int64_t d = j - (i + 1);
      return d < 64 ? CopyClass::kNear : d < 512 ? CopyClass::kMid : CopyClass::kFar;
    }
  return CopyClass::kNone;
}

TEST(LossSplit, ClassesOfAPassageWrittenTwice) {
  // 0..99 then 0..99 again: row j of the second copy (j >= 102) predicts t[j+1], found 100 back:
  // the source key i + 1 = j + 1 - 100 sits j - (i + 1) = 99 rows back -> "copy 64-511".
  std::vector<int32_t> t;
  for (int r = 0; r < 2; ++r)
    for (int i = 0; i < 100; ++i) t.push_back(1000 + i);
  const auto c = copy_classes(t, 1);
  ASSERT_EQ(c.size(), t.size() - 2);
  for (int64_t j = 1; j < static_cast<int64_t>(t.size()) - 1; ++j) {
    const CopyClass want = j >= 101 ? CopyClass::kMid : CopyClass::kNone;
    EXPECT_EQ(c[static_cast<size_t>(j - 1)], want) << j;
  }
  // Row 100 (token 1000 of the second copy after 1099): context (1099, 1000) never occurred: other.
  EXPECT_EQ(c[99], CopyClass::kNone);
}

TEST(LossSplit, MatchesTheQuadraticDefinitionOnRandomText) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  int seen[kCopyClasses] = {};
  for (int vocab : {3, 8, 40}) {  // 27, 512 and 64000 trigrams: near copies, far ones, and others
    std::vector<int32_t> t(1500);
    for (auto& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
    const int64_t first = 700;
    const auto c = copy_classes(t, first);
    ASSERT_EQ(static_cast<int64_t>(c.size()), static_cast<int64_t>(t.size()) - 1 - first);
    for (int64_t j = first; j < static_cast<int64_t>(t.size()) - 1; ++j) {
      ASSERT_EQ(c[static_cast<size_t>(j - first)], brute(t, j)) << "vocab " << vocab << " row " << j;
      ++seen[static_cast<int>(brute(t, j))];
    }
  }
  for (int c = 0; c < kCopyClasses; ++c) EXPECT_GT(seen[c], 10) << copy_class_name(static_cast<CopyClass>(c));
}

TEST(LossSplit, SumsPerClassAndShares) {
  // Two windows of 8 tokens, rows 3..6 scored (first 3): window 0 = a b c a b c a b (copies
  // at distance 2 for rows 4..6: row 4 has context (a, b)... see the brute force), window 1 all distinct.
  const std::vector<int32_t> toks = {1, 2, 3, 1, 2, 3, 1, 2, 10, 11, 12, 13, 14, 15, 16, 17};
  const int64_t ctx = 8, first = 3;
  std::vector<float> base(8, 1.0f), mode(8);
  for (int i = 0; i < 8; ++i) mode[static_cast<size_t>(i)] = 1.0f + 0.5f * static_cast<float>(i);
  const LossSplit s = split_loss(toks, ctx, first, 2, -1, base, mode);
  // Window 0 rows 3..6: row 3 (ctx (3, 1) -> 2): (3,1,2) earlier? positions 2,3,4 = 3,1,2 end at 4 > 3: no.
  // Row 4 ((1, 2) -> 3): (1,2,3) ended at 2, source key 2 is 2 rows back: near. Rows 5, 6 likewise.
  const std::vector<int32_t> w0(toks.begin(), toks.begin() + 8);
  int near = 0, none = 0;
  for (int64_t j = first; j < ctx - 1; ++j) (brute(w0, j) == CopyClass::kNear ? near : none)++;
  EXPECT_EQ(near, 3);
  EXPECT_EQ(s.count[0], 3);
  EXPECT_EQ(s.count[3], 5);  // row 3 of window 0 and every row of window 1
  EXPECT_DOUBLE_EQ(s.base_nll[0], 3.0);
  EXPECT_DOUBLE_EQ(s.mode_nll[0], (1.5 + 2.0 + 2.5));           // rows 4, 5, 6 -> values 1..3
  EXPECT_DOUBLE_EQ(s.mode_nll[3], 1.0 + (3.0 + 3.5 + 4.0 + 4.5));  // row 3; window 1
  EXPECT_DOUBLE_EQ(s.delta(0), 3.0 / 3);
  EXPECT_DOUBLE_EQ(s.share(0) + s.share(3), 1.0);
  EXPECT_DOUBLE_EQ(s.share(0), 3.0 / (3.0 + 11.0));
  // BOS replacement changes window 0's first token: (bos, 2, 3) no longer matches (1, 2, 3)... but
  // (2, 3, 1) still does: row 4 then copies from key 2? No: its trigram (1, 2, 3) ended at 2 with
  // t[0] = 1; with BOS t[0] = 99 it does not exist, the next occurrence ends at 5 > 4: other.
  const LossSplit b = split_loss(toks, ctx, first, 2, 99, base, mode);
  EXPECT_EQ(b.count[0], 2);
  EXPECT_THROW(split_loss(toks, ctx, first, 2, -1, std::vector<float>(7), mode), Error);
  EXPECT_THROW(copy_classes(w0, 7), Error);
}

}  // namespace
}  // namespace indexshare::eval

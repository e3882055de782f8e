#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "eval/dsa_eval.h"

namespace indexshare::eval {
namespace {

using Rec = std::vector<std::vector<std::vector<int32_t>>>;

TEST(SelectionByDistance, CountsByHand) {
  // ctx 8, rows recorded at 0, 2, 4, 6; rows >= 4 count. Row 4 holds {0, 4} (distances 4, 0),
  // row 6 holds {1, 5, 6} (5, 1, 0). Bins [0,1) [1,4) [4,8): keys available 1+1, 3+3, 1+3.
  const Rec rec = {{{0}, {0, 2}, {0, 4}, {1, 5, 6}}};
  const auto r = selection_by_distance(rec, 8, 0, 2, 4, {0, 1, 4, 8});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_DOUBLE_EQ(r[0], 2.0 / 2.0);
  EXPECT_DOUBLE_EQ(r[1], 1.0 / 6.0);
  EXPECT_DOUBLE_EQ(r[2], 2.0 / 4.0);
  // A second window's rows (i = 4 .. 7) sit at positions 0, 2, 4, 6 again; a second layer pools.
  Rec two = {{{0}, {0, 2}, {0, 4}, {1, 5, 6}, {0}, {2}, {4}, {6}}, {{0}, {2}, {3, 4}, {6}}};
  const auto r2 = selection_by_distance(two, 8, 0, 2, 4, {0, 1, 4, 8});
  // Rows >= 4: layer 0 windows 1 and 2 (4 rows), layer 1 (2 rows): available 4 x {1, 3, ...}.
  // bin 0: every row holds its own position: 4 + 2 = 6 hits of 6 keys. bin 1: row 6 of layer 0
  // window 1 (d 1) and row 4 of layer 1 (d 1): 2 of 18. bin 2: rows at 4 have 1 key there, at 6
  // three: 2 x 1 + 2 x 3 + (1 + 3) = 12 keys; hits 2 (window 1).
  EXPECT_DOUBLE_EQ(r2[0], 1.0);
  EXPECT_DOUBLE_EQ(r2[1], 2.0 / 18.0);
  EXPECT_DOUBLE_EQ(r2[2], 2.0 / 12.0);
  // A bin no row can reach is NaN; bad arguments are errors.
  EXPECT_TRUE(std::isnan(selection_by_distance(rec, 8, 0, 2, 4, {0, 8, 16})[1]));
  EXPECT_THROW(selection_by_distance(rec, 8, 0, 0, 4, {0, 8}), Error);
  EXPECT_THROW(selection_by_distance(rec, 8, 0, 2, 4, {0}), Error);
  EXPECT_THROW(selection_by_distance(rec, 8, 0, 2, 4, {0, 4, 4}), Error);
}

}  // namespace
}  // namespace indexshare::eval

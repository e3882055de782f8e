// Plot writer: the PNG round-trips through libpng's reader with the pixels we drew.
#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "eval/plot.h"

namespace indexshare::eval {
namespace {

std::vector<uint8_t> read_png(const std::string& path, int& w, int& h) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  EXPECT_TRUE(png_image_begin_read_from_file(&img, path.c_str())) << path;
  img.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> px(PNG_IMAGE_SIZE(img));
  EXPECT_TRUE(png_image_finish_read(&img, nullptr, px.data(), 0, nullptr));
  w = static_cast<int>(img.width);
  h = static_cast<int>(img.height);
  return px;
}

TEST(Plot, CanvasRoundTripsThroughLibpng) {
  const auto path = (std::filesystem::temp_directory_path() / "indexshare_canvas_test.png").string();
  Canvas c(40, 30);
  c.fill_rect(5, 6, 15, 10, {200, 10, 20});
  c.text(20, 20, "A", {0, 0, 255});
  c.write_png(path);
  int w = 0, h = 0;
  auto px = read_png(path, w, h);
  ASSERT_EQ(w, 40);
  ASSERT_EQ(h, 30);
  auto at = [&](int x, int y) { return &px[(static_cast<size_t>(y) * w + x) * 3]; };
  EXPECT_EQ(at(5, 6)[0], 200);
  EXPECT_EQ(at(14, 9)[2], 20);
  EXPECT_EQ(at(15, 9)[0], 255);  // outside the rectangle: background
  EXPECT_EQ(at(20, 21)[2], 255);  // 'A' row 1 col 0 is ink
  EXPECT_EQ(at(22, 20)[2], 255);  // 'A' row 0 col 2 is ink
  EXPECT_EQ(at(20, 20)[0], 255);  // 'A' row 0 col 0 is blank
  std::filesystem::remove(path);
}

TEST(Plot, HeatmapAndChartWriteAndRejectBadInput) {
  const auto dir = std::filesystem::temp_directory_path();
  std::vector<double> m = {0.0, 0.5, 1.0, NAN};
  write_heatmap_png((dir / "hm.png").string(), m, 2, 2, {.title = "overlap"});
  int w = 0, h = 0;
  auto px = read_png((dir / "hm.png").string(), w, h);
  EXPECT_GT(w, 2);
  EXPECT_THROW(write_heatmap_png((dir / "hm2.png").string(), m, 3, 2, {}), Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "hm2.png"));
  Series s{.name = "dsa", .x = {1, 2, 3}, .y = {3, 1, 2}};
  write_chart_png((dir / "chart.png").string(), {s}, {.title = "t"});
  EXPECT_TRUE(std::filesystem::exists(dir / "chart.png"));
  Series bad{.name = "bad", .x = {1, 2}, .y = {1}};
  EXPECT_THROW(write_chart_png((dir / "c2.png").string(), {bad}, {}), Error);
  EXPECT_EQ(ramp(0.0).r, 68);
  EXPECT_EQ(ramp(1.0).g, 231);
}

}  // namespace
}  // namespace indexshare::eval

// Small PNG pictures for reports: a heatmap of a matrix and an x/y chart of labelled points or
// curves. Drawn on an RGB canvas with a built-in 5x7 bitmap font, written with libpng to a temp
// file that is renamed into place (never half-written).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace indexshare::eval {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

class Canvas {
 public:
  Canvas(int width, int height, Rgb background = {255, 255, 255});
  int width() const { return w_; }
  int height() const { return h_; }
  void set(int x, int y, Rgb c);
  void fill_rect(int x0, int y0, int x1, int y1, Rgb c);  // inclusive-exclusive
  void line(int x0, int y0, int x1, int y1, Rgb c);
  void disc(int cx, int cy, int r, Rgb c);
  // Text in the 5x7 font scaled by `scale`; lower case is drawn as upper case; characters
  // without a glyph are drawn as '?'. Returns the width drawn.
  int text(int x, int y, const std::string& s, Rgb c, int scale = 1);
  static int text_width(const std::string& s, int scale = 1);
  void write_png(const std::string& path) const;

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

// Perceptually ordered colour ramp for t in [0, 1] (dark blue -> teal -> yellow).
Rgb ramp(double t);

struct HeatmapOptions {
  std::string title;
  std::string x_label, y_label;
  double vmin = 0.0, vmax = 1.0;
  int cell = 0;  // pixels per cell; 0 = choose
};
// values: [rows, cols] row-major. NaN cells are drawn grey.
void write_heatmap_png(const std::string& path, const std::vector<double>& values, int rows, int cols,
                       const HeatmapOptions& opt);

struct Series {
  std::string name;
  std::vector<double> x, y;
  std::vector<std::string> point_labels;  // optional, one per point
  Rgb color{31, 119, 180};
  bool lines = true;
};
struct ChartOptions {
  std::string title, x_label, y_label;
  int width = 900, height = 600;
};
void write_chart_png(const std::string& path, const std::vector<Series>& series, const ChartOptions& opt);

}  // namespace indexshare::eval

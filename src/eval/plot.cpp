#include "eval/plot.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>

#include <fmt/core.h>

#include "core/error.h"
#include "eval/font5x7.h"

namespace indexshare::eval {

Canvas::Canvas(int width, int height, Rgb bg) : w_(width), h_(height) {
  IS_CHECK(width > 0 && height > 0 && width <= 16384 && height <= 16384, "Canvas: bad size ", width, "x", height);
  px_.resize(static_cast<size_t>(w_) * h_ * 3);
  for (size_t i = 0; i < px_.size(); i += 3) {
    px_[i] = bg.r;
    px_[i + 1] = bg.g;
    px_[i + 2] = bg.b;
  }
}

void Canvas::set(int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
  uint8_t* p = &px_[(static_cast<size_t>(y) * w_ + x) * 3];
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
}

void Canvas::fill_rect(int x0, int y0, int x1, int y1, Rgb c) {
  for (int y = std::max(0, y0); y < std::min(h_, y1); ++y)
    for (int x = std::max(0, x0); x < std::min(w_, x1); ++x) set(x, y, c);
}

void Canvas::line(int x0, int y0, int x1, int y1, Rgb c) {
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
  const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (int guard = 0; guard < 100000; ++guard) {
    set(x0, y0, c);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

void Canvas::disc(int cx, int cy, int r, Rgb c) {
  for (int y = -r; y <= r; ++y)
    for (int x = -r; x <= r; ++x)
      if (x * x + y * y <= r * r) set(cx + x, cy + y, c);
}

int Canvas::text_width(const std::string& s, int scale) { return static_cast<int>(s.size()) * 6 * scale; }

int Canvas::text(int x, int y, const std::string& s, Rgb c, int scale) {
  int cx = x;
  for (char ch : s) {
    const Glyph* g = find_glyph(ch);
    if (!g) g = find_glyph('?');
    for (int r = 0; r < 7; ++r)
      for (int col = 0; col < 5; ++col)
        if (g->rows[r][col] == '#') fill_rect(cx + col * scale, y + r * scale, cx + (col + 1) * scale, y + (r + 1) * scale, c);
    cx += 6 * scale;
  }
  return cx - x;
}

void Canvas::write_png(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  IS_CHECK(f != nullptr, path, ": cannot open for writing");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    std::remove(tmp.c_str());
    fail(path, ": libpng failed to write the image");
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w_), static_cast<png_uint_32>(h_), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < h_; ++y) png_write_row(png, const_cast<png_bytep>(&px_[static_cast<size_t>(y) * w_ * 3]));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  const bool ok = std::fclose(f) == 0;
  if (!ok) {
    std::remove(tmp.c_str());
    fail(path, ": write error");
  }
  std::filesystem::rename(tmp, path);
}

Rgb ramp(double t) {
  if (!std::isfinite(t)) return {160, 160, 160};
  t = std::clamp(t, 0.0, 1.0);
  // Anchors of a dark-blue -> teal -> green -> yellow ramp.
  static const double a[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  const double pos = t * 4.0;
  const int i = std::min(3, static_cast<int>(pos));
  const double f = pos - i;
  auto mix = [&](int k) { return static_cast<uint8_t>(std::lround(a[i][k] + f * (a[i + 1][k] - a[i][k]))); };
  return {mix(0), mix(1), mix(2)};
}

namespace {
const Rgb kInk{30, 30, 30};
const Rgb kGrid{225, 225, 225};
}  // namespace

void write_heatmap_png(const std::string& path, const std::vector<double>& values, int rows, int cols,
                       const HeatmapOptions& opt) {
  IS_CHECK(rows > 0 && cols > 0, "heatmap: empty matrix (", rows, "x", cols, ")");
  IS_CHECK(values.size() == static_cast<size_t>(rows) * cols, "heatmap: ", values.size(), " values for a ", rows, "x",
           cols, " matrix");
  const int cell = opt.cell > 0 ? opt.cell : std::clamp(600 / std::max(rows, cols), 4, 40);
  const int left = 60, top = 40, right = 110, bottom = 50;
  Canvas c(left + cols * cell + right, top + rows * cell + bottom);
  c.text(left, 12, opt.title, kInk, 2);
  const double span = opt.vmax > opt.vmin ? opt.vmax - opt.vmin : 1.0;
  for (int r = 0; r < rows; ++r)
    for (int q = 0; q < cols; ++q) {
      const double v = values[static_cast<size_t>(r) * cols + q];
      c.fill_rect(left + q * cell, top + r * cell, left + (q + 1) * cell, top + (r + 1) * cell,
                  ramp(std::isfinite(v) ? (v - opt.vmin) / span : NAN));
    }
  const int step = std::max(1, (rows + 9) / 10);
  for (int r = 0; r < rows; r += step) {
    const std::string s = std::to_string(r);
    c.text(left - 4 - Canvas::text_width(s), top + r * cell + cell / 2 - 3, s, kInk);
  }
  const int cstep = std::max(1, (cols + 9) / 10);
  for (int q = 0; q < cols; q += cstep) c.text(left + q * cell + cell / 2 - 3, top + rows * cell + 4, std::to_string(q), kInk);
  c.text(left, top + rows * cell + 22, opt.x_label, kInk);
  c.text(4, top - 12, opt.y_label, kInk);
  // Colour bar.
  const int bx = left + cols * cell + 20, bh = rows * cell;
  for (int y = 0; y < bh; ++y) c.fill_rect(bx, top + y, bx + 16, top + y + 1, ramp(1.0 - static_cast<double>(y) / std::max(1, bh - 1)));
  c.text(bx + 20, top, fmt::format("{:.2f}", opt.vmax), kInk);
  c.text(bx + 20, top + bh - 7, fmt::format("{:.2f}", opt.vmin), kInk);
  c.write_png(path);
}

namespace {

// Tick positions at 1, 2 or 5 times a power of ten covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target) {
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  // Integer multiples of the step (no drift from repeated addition; tick 0 is +0, never "-0").
  std::vector<double> t;
  for (int64_t k = static_cast<int64_t>(std::ceil(lo / step)); k * step <= hi + 1e-9 * step; ++k)
    t.push_back(k == 0 ? 0.0 : static_cast<double>(k) * step);
  return t;
}

std::string tick_label(double v) {
  if (v != 0 && (std::fabs(v) >= 1e5 || std::fabs(v) < 1e-3)) return fmt::format("{:.1e}", v);
  std::string s = fmt::format("{:.4f}", v);
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

void write_chart_png(const std::string& path, const std::vector<Series>& series, const ChartOptions& opt) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series) {
    IS_CHECK(s.x.size() == s.y.size(), "chart: series '", s.name, "' has ", s.x.size(), " x and ", s.y.size(), " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  }
  IS_CHECK(std::isfinite(x0), "chart '", opt.title, "': no finite points");
  auto pad = [](double& lo, double& hi) {
    const double d = hi > lo ? hi - lo : std::max(1e-6, std::fabs(hi) * 0.1 + 1e-6);
    lo -= 0.08 * d;
    hi += 0.08 * d;
  };
  pad(x0, x1);
  pad(y0, y1);
  const int left = 90, right = 30, top = 50, bottom = 60;
  Canvas c(opt.width, opt.height);
  const int pw = opt.width - left - right, ph = opt.height - top - bottom;
  auto X = [&](double v) { return left + static_cast<int>(std::lround((v - x0) / (x1 - x0) * pw)); };
  auto Y = [&](double v) { return top + ph - static_cast<int>(std::lround((v - y0) / (y1 - y0) * ph)); };
  for (double t : nice_ticks(x0, x1, 8)) {
    c.line(X(t), top, X(t), top + ph, kGrid);
    const std::string s = tick_label(t);
    c.text(X(t) - Canvas::text_width(s) / 2, top + ph + 6, s, kInk);
  }
  for (double t : nice_ticks(y0, y1, 8)) {
    c.line(left, Y(t), left + pw, Y(t), kGrid);
    const std::string s = tick_label(t);
    c.text(left - 6 - Canvas::text_width(s), Y(t) - 3, s, kInk);
  }
  c.line(left, top, left, top + ph, kInk);
  c.line(left, top + ph, left + pw, top + ph, kInk);
  c.text(left, 14, opt.title, kInk, 2);
  c.text(left + pw / 2 - Canvas::text_width(opt.x_label) / 2, top + ph + 26, opt.x_label, kInk);
  c.text(6, top - 16, opt.y_label, kInk);
  int ly = top + 6;
  for (const auto& s : series) {
    for (size_t i = 0; i + 1 < s.x.size() && s.lines; ++i) c.line(X(s.x[i]), Y(s.y[i]), X(s.x[i + 1]), Y(s.y[i + 1]), s.color);
    for (size_t i = 0; i < s.x.size(); ++i) {
      c.disc(X(s.x[i]), Y(s.y[i]), 4, s.color);
      if (i < s.point_labels.size()) c.text(X(s.x[i]) + 7, Y(s.y[i]) - 10, s.point_labels[i], kInk);
    }
    if (!s.name.empty()) {
      c.fill_rect(left + pw - 180, ly, left + pw - 170, ly + 8, s.color);
      c.text(left + pw - 164, ly, s.name, kInk);
      ly += 14;
    }
  }
  c.write_png(path);
}

}  // namespace indexshare::eval

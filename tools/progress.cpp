#include "progress.h"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace indexshare::cli {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) return fmt::format("{:.1f}s", s);
  const int64_t t = static_cast<int64_t>(s);
  if (t < 3600) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(std::max<int64_t>(total, 0)),
      tty_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (!finished_ && done_ > 0) finish();
}

void ProgressBar::update(int64_t done, std::string_view status) {
  done_ = std::clamp<int64_t>(done, 0, total_);
  if (!status.empty()) status_ = std::string(status);
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.1 : 5.0) && (tty_ || done_ < total_)) {  // finish() draws the last state
    last_draw_ = now;
    draw(false);
  }
}

void ProgressBar::finish(std::string_view status) {
  if (finished_) return;
  if (!status.empty()) status_ = std::string(status);
  done_ = total_;
  draw(true);
  finished_ = true;
}

void ProgressBar::draw(bool final) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : NAN;
  const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  constexpr int kWidth = 28;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::string line = fmt::format("{} [{}] {:3.0f}% {}/{} {} {:.2f} {}/s {} {}", label_, bar, 100 * frac, done_,
                                 total_, unit_, rate, unit_, final ? format_duration(elapsed) : "eta " + format_duration(eta),
                                 status_);
  if (tty_) {
    fmt::print(stderr, "\r{}\x1b[K{}", line, final ? "\n" : "");
  } else {
    fmt::print(stderr, "{}\n", line);
  }
  std::fflush(stderr);
}

}  // namespace indexshare::cli

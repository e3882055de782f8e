// A terminal progress bar with rate and ETA for long commands. Writes to stderr: redrawn in
// place on a terminal, one line every few seconds otherwise (logs, CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace indexshare::cli {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "it");
  ~ProgressBar();
  // Sets the amount done and an optional status text (e.g. "loss 1.234").
  void update(int64_t done, std::string_view status = {});
  // Draws the final state and ends the line.
  void finish(std::string_view status = {});

 private:
  void draw(bool final);

  std::string label_, unit_, status_;
  int64_t total_ = 0, done_ = 0;
  bool tty_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1h02m", "3m07s", "12.5s".
std::string format_duration(double seconds);

}  // namespace indexshare::cli

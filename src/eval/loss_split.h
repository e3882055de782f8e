// Where an attention mode loses likelihood: each scored prediction of a perplexity window gets a
// class from the window's own tokens, and a mode's extra NLL over a baseline (dense attention) is
// summed per class.
//
// A prediction at row j (predicting token j + 1) is a *copy* when the two tokens before the
// target, (t[j-1], t[j]), occurred earlier at (t[i-1], t[i]) with the target after them
// (t[i+1] == t[j+1]): an induction head at row j can read the answer at key i + 1. Its distance is
// j - (i + 1) for the latest such i. Classes: copy with distance < 64, 64..511, >= 512, and other
// (no earlier occurrence with the same continuation).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace indexshare::eval {

enum class CopyClass : uint8_t { kNear = 0, kMid = 1, kFar = 2, kNone = 3 };
inline constexpr int kCopyClasses = 4;
const char* copy_class_name(CopyClass c);  // "copy <64", "copy 64-511", "copy >=512", "other"

// Classes of the rows [first, window.size() - 1) of one window (the model's input tokens, BOS
// replacement included; the targets are window[j + 1]).
std::vector<CopyClass> copy_classes(std::span<const int32_t> window, int64_t first);

struct LossSplit {
  std::array<int64_t, kCopyClasses> count{};
  std::array<double, kCopyClasses> base_nll{};  // summed NLL of the baseline per class
  std::array<double, kCopyClasses> mode_nll{};  // summed NLL of the mode per class
  // Mean extra NLL per prediction of a class (nats), and that class's share of the total extra.
  double delta(int c) const;
  double share(int c) const;
};

// Splits two runs of the same windows (PerplexityResult::token_nll of each: window-major, rows
// first .. ctx-2) by class. `tokens`: the text the windows were cut from (window w = tokens
// [w * ctx, (w + 1) * ctx)), bos >= 0 replacing each window's first token. Error when the NLL
// vectors do not hold windows * (ctx - 1 - first) values each.
LossSplit split_loss(std::span<const int32_t> tokens, int64_t ctx, int64_t first, int64_t windows, int32_t bos,
                     std::span<const float> base_nll, std::span<const float> mode_nll);

}  // namespace indexshare::eval

#include "eval/loss_split.h"

#include <map>
#include <tuple>

#include "core/error.h"

namespace indexshare::eval {

const char* copy_class_name(CopyClass c) {
  switch (c) {
    case CopyClass::kNear: return "copy <64";
    case CopyClass::kMid: return "copy 64-511";
    case CopyClass::kFar: return "copy >=512";
    case CopyClass::kNone: return "other";
  }
  return "?";
}

std::vector<CopyClass> copy_classes(std::span<const int32_t> window, int64_t first) {
  const int64_t n = static_cast<int64_t>(window.size());
  IS_CHECK(first >= 0 && first < n - 1, "copy_classes: first row ", first, " outside a window of ", n);
  using Trigram = std::tuple<int32_t, int32_t, int32_t>;
  auto trigram = [&](int64_t e) { return Trigram{window[e - 2], window[e - 1], window[e]}; };  // ends at e
  std::map<Trigram, int64_t> latest_end;  // each trigram seen so far -> its latest end position
  std::vector<CopyClass> out;
  out.reserve(static_cast<size_t>(n - 1 - first));
  for (int64_t j = 1; j < n - 1; ++j) {
    // Trigrams ending at or before j are the earlier occurrences row j can copy from (key i + 1 <= j).
    if (j >= 2) latest_end[trigram(j)] = j;
    if (j < first) continue;
    CopyClass c = CopyClass::kNone;
    if (const auto it = latest_end.find(trigram(j + 1)); it != latest_end.end()) {
      const int64_t d = j - it->second;  // it->second = i + 1, the key holding the answer
      c = d < 64 ? CopyClass::kNear : d < 512 ? CopyClass::kMid : CopyClass::kFar;
    }
    out.push_back(c);
  }
  return out;
}

double LossSplit::delta(int c) const {
  return count[c] > 0 ? (mode_nll[c] - base_nll[c]) / static_cast<double>(count[c]) : 0.0;
}

double LossSplit::share(int c) const {
  double tot = 0.0;
  for (int i = 0; i < kCopyClasses; ++i) tot += mode_nll[i] - base_nll[i];
  return tot != 0.0 ? (mode_nll[c] - base_nll[c]) / tot : 0.0;
}

LossSplit split_loss(std::span<const int32_t> tokens, int64_t ctx, int64_t first, int64_t windows, int32_t bos,
                     std::span<const float> base_nll, std::span<const float> mode_nll) {
  IS_CHECK(ctx >= 3 && first >= 0 && first < ctx - 1 && windows >= 0, "split_loss: bad ctx ", ctx, " / first ", first);
  IS_CHECK(static_cast<int64_t>(tokens.size()) >= windows * ctx, "split_loss: ", tokens.size(), " tokens hold fewer than ",
           windows, " windows of ", ctx);
  const int64_t per = ctx - 1 - first;
  IS_CHECK(static_cast<int64_t>(base_nll.size()) == windows * per && static_cast<int64_t>(mode_nll.size()) == windows * per,
           "split_loss: expected ", windows * per, " NLL values per run, got ", base_nll.size(), " and ", mode_nll.size());
  LossSplit s;
  std::vector<int32_t> win(static_cast<size_t>(ctx));
  for (int64_t w = 0; w < windows; ++w) {
    std::copy(tokens.begin() + w * ctx, tokens.begin() + (w + 1) * ctx, win.begin());
    if (bos >= 0) win[0] = bos;
    const std::vector<CopyClass> cls = copy_classes(win, first);
    for (int64_t r = 0; r < per; ++r) {
      const int c = static_cast<int>(cls[static_cast<size_t>(r)]);
      ++s.count[c];
      s.base_nll[c] += base_nll[static_cast<size_t>(w * per + r)];
      s.mode_nll[c] += mode_nll[static_cast<size_t>(w * per + r)];
    }
  }
  return s;
}

}  // namespace indexshare::eval

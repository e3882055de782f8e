// Naive references for the BPE tokenizer tests, written independently of src/io/tokenizer.cpp:
//  - ref_pre_tokenize_ascii: the GPT-2 split pattern as a std::regex (ECMAScript has the
//    (?!\S) lookahead), with ASCII classes standing in for \p{L} / \p{N}; valid for ASCII text.
//  - ref_bpe: string-level BPE, O(n^2) per word: scan all adjacent pairs, merge the one with
//    the lowest rank (leftmost on ties), repeat.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace indexshare::test {

// digits_first: isolate every digit first (the "smollm" rule), then split each piece.
inline std::vector<std::string> ref_pre_tokenize_ascii(const std::string& text,
                                                       bool digits_first) {
  static const std::regex kPattern(
      "'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\\sA-Za-z0-9]+|\\s+(?!\\S)|\\s+");
  std::vector<std::string> pieces;
  if (digits_first) {
    std::string cur;
    for (char ch : text) {
      if (ch >= '0' && ch <= '9') {
        if (!cur.empty()) pieces.push_back(cur);
        cur.clear();
        pieces.emplace_back(1, ch);
      } else {
        cur += ch;
      }
    }
    if (!cur.empty()) pieces.push_back(cur);
  } else if (!text.empty()) {
    pieces.push_back(text);
  }
  std::vector<std::string> words;
  for (const std::string& p : pieces) {
    size_t done = 0;
    for (auto it = std::sregex_iterator(p.begin(), p.end(), kPattern); it != std::sregex_iterator();
         ++it) {
      const auto pos = static_cast<size_t>(it->position());
      if (pos > done) words.push_back(p.substr(done, pos - done));  // unmatched text (none expected)
      words.push_back(it->str());
      done = pos + it->length();
    }
    if (done < p.size()) words.push_back(p.substr(done));
  }
  return words;
}

// BPE over symbols (strings); ranks maps "left right" to its rank.
inline std::vector<std::string> ref_bpe(std::vector<std::string> syms,
                                        const std::map<std::pair<std::string, std::string>, int>& ranks) {
  while (syms.size() > 1) {
    int best = std::numeric_limits<int>::max();
    size_t at = 0;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      const auto it = ranks.find({syms[i], syms[i + 1]});
      if (it != ranks.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == std::numeric_limits<int>::max()) break;
    syms[at] += syms[at + 1];
    syms.erase(syms.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  return syms;
}

}  // namespace indexshare::test

#include "io/unicode_class.h"

#include <algorithm>
#include <array>
#include <iterator>
#include <string>

namespace indexshare::io {
namespace {

#include "io/unicode_class_table.inc"

constexpr uint32_t kMaxCodePoint = 0x10FFFF;

}  // namespace

namespace detail {

// ASCII is by far the commonest input: answer it from a small table.
const CharClass kAsciiClass[128] = {
#define O CharClass::kOther
#define L CharClass::kLetter
#define N CharClass::kNumber
#define S CharClass::kSpace
    O, O, O, O, O, O, O, O, O, S, S, S, S, S, O, O,  // 0x00: \t \n \v \f \r
    O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O,  // 0x10
    S, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O,  // 0x20: space, punctuation
    N, N, N, N, N, N, N, N, N, N, O, O, O, O, O, O,  // 0x30: digits
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,  // 0x40: @ A-O
    L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O,  // 0x50: P-Z
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,  // 0x60: ` a-o
    L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O,  // 0x70: p-z, DEL
#undef O
#undef L
#undef N
#undef S
};

CharClass char_class_table(uint32_t cp) {
  if (cp > kMaxCodePoint) return CharClass::kOther;
  // The last entry whose first code point is <= cp.
  const uint32_t key = (cp << 2) | 3u;
  const uint32_t* it = std::upper_bound(std::begin(kClassRanges), std::end(kClassRanges), key);
  return static_cast<CharClass>(*(it - 1) & 3u);
}

}  // namespace detail

std::string_view unicode_version() { return kUnicodeVersion; }

Utf8Char next_utf8(std::string_view s, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return {b0, 1, true};
  const Utf8Char bad{b0, 1, false};
  int len = 0;
  uint32_t cp = 0;
  uint32_t min_cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2, cp = b0 & 0x1Fu, min_cp = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3, cp = b0 & 0x0Fu, min_cp = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4, cp = b0 & 0x07u, min_cp = 0x10000;
  } else {
    return bad;  // continuation byte, C0/C1 (always overlong), F5..FF
  }
  if (pos + len > s.size()) return bad;
  for (int i = 1; i < len; ++i) {
    const uint8_t b = byte(pos + i);
    if ((b & 0xC0) != 0x80) return bad;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min_cp || cp > kMaxCodePoint || (cp >= 0xD800 && cp <= 0xDFFF)) return bad;
  return {cp, static_cast<uint8_t>(len), true};
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_valid_utf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    const Utf8Char c = next_utf8(s, pos);
    if (!c.valid) return false;
    pos += c.len;
  }
  return true;
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const Utf8Char c = next_utf8(s, pos);
    if (c.valid) {
      out.append(s.substr(pos, c.len));
    } else {
      out += "\xEF\xBF\xBD";
    }
    pos += c.len;
  }
  return out;
}

}  // namespace indexshare::io

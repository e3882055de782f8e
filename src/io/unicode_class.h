// Just enough Unicode for a byte-level BPE pre-tokenizer: UTF-8 scanning that never fails,
// and a code point classifier (letter / number / white space / other).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace indexshare::io {

enum class CharClass : uint8_t {
  kOther = 0,   // everything else, including unassigned code points and invalid bytes
  kLetter = 1,  // general category L* (\p{L})
  kNumber = 2,  // general category N* (\p{N})
  kSpace = 3,   // the White_Space property (\s)
};

namespace detail {
extern const CharClass kAsciiClass[128];
CharClass char_class_table(uint32_t cp);  // binary search in the generated table
}  // namespace detail

// The class of a code point (Unicode version: unicode_version()). Values above U+10FFFF are
// kOther.
inline CharClass char_class(uint32_t cp) {
  return cp < 128 ? detail::kAsciiClass[cp] : detail::char_class_table(cp);
}

// The Unicode version the class table was generated from.
std::string_view unicode_version();

// One step of a UTF-8 scan. A well-formed sequence (shortest form, no surrogates, at most
// U+10FFFF) yields its code point and length; anything else yields one byte with
// valid = false, so a scan always advances and every input byte is covered exactly once.
struct Utf8Char {
  uint32_t cp = 0;   // the code point, or the lone byte's value when !valid
  uint8_t len = 1;   // bytes consumed, 1..4
  bool valid = true;
};
Utf8Char next_utf8(std::string_view s, size_t pos);

// Appends the UTF-8 encoding of cp (<= U+10FFFF, not a surrogate) to out.
void append_utf8(uint32_t cp, std::string& out);

// True when s is well-formed UTF-8 in the sense of next_utf8.
bool is_valid_utf8(std::string_view s);

// Replaces every ill-formed byte of s by U+FFFD (one replacement per byte).
std::string sanitize_utf8(std::string_view s);

}  // namespace indexshare::io

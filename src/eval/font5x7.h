// The 5x7 bitmap font used by plot.cpp: each glyph is 7 rows of 5 pixels, '#' = ink.
#pragma once

namespace indexshare::eval {

struct Glyph {
  char c;
  const char* rows[7];
};

// Returns the glyph for c (upper-cased), or nullptr when the font has none.
const Glyph* find_glyph(char c);

}  // namespace indexshare::eval

// Byte-level BPE tokenizer on hand-made vocabularies: byte alphabet, pre-tokenizer (against a
// std::regex reference on ASCII), merge order (against a naive BPE), special tokens, chat
// format, round trips on random bytes, and bad input. The real-model golden test is in
// tokenizer_golden_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/tokenizer.h"
#include "io/unicode_class.h"
#include "ref/tokenizer_ref.h"

namespace indexshare::io {
namespace {

// The GPT-2 byte alphabet, written out here from its definition (not from the code under
// test): printable Latin-1 bytes stand for themselves, the rest take U+0100.. in byte order.
std::string alpha(uint8_t b) {
  static const std::vector<uint32_t> cps = [] {
    std::vector<uint32_t> v(256);
    uint32_t next = 0x100;
    for (uint32_t x = 0; x < 256; ++x) {
      const bool keep = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
      v[x] = keep ? x : next++;
    }
    return v;
  }();
  const uint32_t cp = cps[b];
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}
std::string alpha(std::string_view bytes) {
  std::string s;
  for (char c : bytes) s += alpha(static_cast<uint8_t>(c));
  return s;
}

constexpr int32_t kEot = 256, kImStart = 257, kImEnd = 258, kTool = 259;

// Ids 0..255: one token per byte (byte order); then 4 special tokens; then one token per
// merge result. `merges` are raw-byte pairs, in rank order.
TokenizerConfig make_config(const std::vector<std::pair<std::string, std::string>>& merges,
                            PreTokenizer pre = PreTokenizer::kDigits) {
  TokenizerConfig c;
  for (int b = 0; b < 256; ++b) c.tokens.push_back(alpha(static_cast<uint8_t>(b)));
  c.types.assign(256, TokenType::kNormal);
  c.tokens.insert(c.tokens.end(), {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"});
  c.types.insert(c.types.end(), {TokenType::kControl, TokenType::kControl, TokenType::kControl,
                                 TokenType::kUserDefined});
  std::set<std::string> have(c.tokens.begin(), c.tokens.end());
  for (const auto& [l, r] : merges) {
    c.merges.push_back(alpha(l) + " " + alpha(r));
    if (have.insert(alpha(l + r)).second) {
      c.tokens.push_back(alpha(l + r));
      c.types.push_back(TokenType::kNormal);
    }
  }
  c.pre = pre;
  c.bos_id = kImStart;
  c.eos_id = kImEnd;
  c.unk_id = kEot;
  return c;
}

// Token ids -> the raw bytes of each token, for readable expectations.
std::vector<std::string> pieces(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(t.token_bytes(id));
  return out;
}

using Strings = std::vector<std::string>;

TEST(TokenizerAlphabet, KnownCodePoints) {
  EXPECT_EQ(byte_to_code_point(' '), 0x120u);   // "Ġ"
  EXPECT_EQ(byte_to_code_point('\n'), 0x10Au);  // "Ċ"
  EXPECT_EQ(byte_to_code_point('\t'), 0x109u);
  EXPECT_EQ(byte_to_code_point(0x00), 0x100u);
  EXPECT_EQ(byte_to_code_point(0x7F), 0x121u);
  EXPECT_EQ(byte_to_code_point(0xAD), 0x143u);
  EXPECT_EQ(byte_to_code_point('A'), static_cast<uint32_t>('A'));
  EXPECT_EQ(byte_to_code_point(0xE9), 0xE9u);
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(byte_from_code_point(byte_to_code_point(static_cast<uint8_t>(b))), b);
  }
  EXPECT_EQ(byte_from_code_point(' '), -1);
  EXPECT_EQ(byte_from_code_point(0x144), -1);
}

TEST(TokenizerUnicode, Classes) {
  EXPECT_EQ(char_class('a'), CharClass::kLetter);
  EXPECT_EQ(char_class(0xE9), CharClass::kLetter);     // é
  EXPECT_EQ(char_class(0x4E2D), CharClass::kLetter);   // 中
  EXPECT_EQ(char_class(0x31350), CharClass::kLetter);  // CJK ext. H (Unicode 15.0)
  EXPECT_EQ(char_class('7'), CharClass::kNumber);
  EXPECT_EQ(char_class(0xBD), CharClass::kNumber);     // ½ (No)
  EXPECT_EQ(char_class(0x216B), CharClass::kNumber);   // Ⅻ (Nl)
  EXPECT_EQ(char_class(0x0663), CharClass::kNumber);   // Arabic-Indic three (Nd)
  EXPECT_EQ(char_class('\t'), CharClass::kSpace);
  EXPECT_EQ(char_class(0x85), CharClass::kSpace);
  EXPECT_EQ(char_class(0xA0), CharClass::kSpace);
  EXPECT_EQ(char_class(0x3000), CharClass::kSpace);
  EXPECT_EQ(char_class(0x200B), CharClass::kOther);    // zero-width space is not White_Space
  EXPECT_EQ(char_class(0x1F600), CharClass::kOther);   // emoji (So)
  EXPECT_EQ(char_class(0x0301), CharClass::kOther);    // combining acute (Mn)
  EXPECT_EQ(char_class(0x0378), CharClass::kOther);    // unassigned
  EXPECT_EQ(char_class(0x10FFFF), CharClass::kOther);
  EXPECT_EQ(char_class(0x110000), CharClass::kOther);
  EXPECT_EQ(unicode_version(), "15.0.0");
  // The hand-written ASCII fast path agrees with the generated table.
  for (uint32_t c = 0; c < 128; ++c) EXPECT_EQ(char_class(c), detail::char_class_table(c)) << c;
}

TEST(TokenizerUnicode, Utf8Scanning) {
  const std::string euro = "\xE2\x82\xAC";
  const Utf8Char e = next_utf8(euro, 0);
  EXPECT_TRUE(e.valid);
  EXPECT_EQ(e.cp, 0x20ACu);
  EXPECT_EQ(e.len, 3);
  for (const std::string bad : {"\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE2\x82",
                                "\x80", "\xFF", "\xE2\x28\xA1"}) {
    SCOPED_TRACE(testing::PrintToString(bad));
    const Utf8Char c = next_utf8(bad, 0);
    EXPECT_FALSE(c.valid);
    EXPECT_EQ(c.len, 1);
    EXPECT_EQ(c.cp, static_cast<uint8_t>(bad[0]));
    EXPECT_FALSE(is_valid_utf8(bad));
  }
  EXPECT_TRUE(is_valid_utf8("h\xC3\xA9llo \xF0\x9F\x99\x82"));
  EXPECT_EQ(sanitize_utf8("a\xFF" "b\xE2\x82"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD");
  std::string s;
  append_utf8(0x1F642, s);
  EXPECT_EQ(s, "\xF0\x9F\x99\x82");
}

TEST(TokenizerPre, HandPicked) {
  const Tokenizer digits(make_config({}));
  const Tokenizer gpt2(make_config({}, PreTokenizer::kGpt2));
  EXPECT_EQ(digits.pre_tokenize("Hello world"), (Strings{"Hello", " world"}));
  EXPECT_EQ(digits.pre_tokenize("year 2024!"), (Strings{"year", " ", "2", "0", "2", "4", "!"}));
  EXPECT_EQ(gpt2.pre_tokenize("year 2024!"), (Strings{"year", " 2024", "!"}));
  EXPECT_EQ(digits.pre_tokenize("it's they're I'M"),
            (Strings{"it", "'s", " they", "'re", " I", "'", "M"}));
  EXPECT_EQ(digits.pre_tokenize("a   b  "), (Strings{"a", "  ", " b", "  "}));
  EXPECT_EQ(digits.pre_tokenize("x\n\n  y"), (Strings{"x", "\n\n ", " y"}));
  EXPECT_EQ(digits.pre_tokenize("\tdef f():\n\treturn"),
            (Strings{"\t", "def", " f", "():", "\n", "\t", "return"}));
  EXPECT_EQ(digits.pre_tokenize("h\xC3\xA9llo w\xC3\xB6rld"),
            (Strings{"h\xC3\xA9llo", " w\xC3\xB6rld"}));
  EXPECT_EQ(digits.pre_tokenize("x\xC2\xB2+\xE2\x85\xAB"),  // x² + Ⅻ
            (Strings{"x", "\xC2\xB2", "+", "\xE2\x85\xAB"}));
  EXPECT_EQ(digits.pre_tokenize("a\xC2\xA0" "b"), (Strings{"a", "\xC2\xA0", "b"}));  // NBSP
  EXPECT_EQ(digits.pre_tokenize("ok \xF0\x9F\x99\x82\xF0\x9F\x99\x82!"),
            (Strings{"ok", " \xF0\x9F\x99\x82\xF0\x9F\x99\x82!"}));
  EXPECT_EQ(digits.pre_tokenize("a\xFF\xFE" "b"), (Strings{"a", "\xFF\xFE", "b"}));
  EXPECT_EQ(digits.pre_tokenize(""), Strings{});
  EXPECT_EQ(digits.pre_tokenize(" "), Strings{" "});
}

TEST(TokenizerPre, MatchesRegexOnRandomAscii) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937 rng(seed);
  const std::string alphabet = "abzQR09 5'''srtevmld.,!?-_ \t\n\r  ";
  const Tokenizer digits(make_config({}));
  const Tokenizer gpt2(make_config({}, PreTokenizer::kGpt2));
  for (int iter = 0; iter < 2000; ++iter) {
    std::string s(rng() % 24, ' ');
    for (char& ch : s) ch = alphabet[rng() % alphabet.size()];
    SCOPED_TRACE(testing::PrintToString(s));
    ASSERT_EQ(digits.pre_tokenize(s), test::ref_pre_tokenize_ascii(s, true));
    ASSERT_EQ(gpt2.pre_tokenize(s), test::ref_pre_tokenize_ascii(s, false));
  }
}

TEST(TokenizerBpe, MergeOrderDecides) {
  const Tokenizer bc_first(make_config({{"b", "c"}, {"a", "b"}}));
  const Tokenizer ab_first(make_config({{"a", "b"}, {"b", "c"}}));
  EXPECT_EQ(pieces(bc_first, bc_first.encode("abc")), (Strings{"a", "bc"}));
  EXPECT_EQ(pieces(ab_first, ab_first.encode("abc")), (Strings{"ab", "c"}));
  // Leftmost wins among equal ranks.
  const Tokenizer aa(make_config({{"a", "a"}}));
  EXPECT_EQ(pieces(aa, aa.encode("aaa")), (Strings{"aa", "a"}));
  EXPECT_EQ(pieces(aa, aa.encode("aaaa")), (Strings{"aa", "aa"}));
  // Chains, and candidates made stale by an earlier merge.
  const Tokenizer chain(make_config({{"b", "c"}, {"a", "b"}, {"c", "d"}, {"a", "bc"}}));
  EXPECT_EQ(pieces(chain, chain.encode("abcd")), (Strings{"abc", "d"}));
  // A leading space is part of the word and merges like any byte.
  const Tokenizer sp(make_config({{" ", "t"}, {"h", "e"}}));
  EXPECT_EQ(pieces(sp, sp.encode(" the")), (Strings{" t", "he"}));
  EXPECT_EQ(pieces(sp, sp.encode("the")), (Strings{"t", "he"}));
  const Tokenizer sp2(make_config({{"h", "e"}, {" ", "t"}, {" t", "he"}}));
  EXPECT_EQ(pieces(sp2, sp2.encode(" the the")), (Strings{" the", " the"}));
  EXPECT_TRUE(sp2.encode("").empty());
}

TEST(TokenizerBpe, MatchesNaiveBpeOnRandomMerges) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937 rng(seed);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::string> have = {"a", "b", "c", "d", " "};
    std::vector<std::pair<std::string, std::string>> merges;
    std::map<std::pair<std::string, std::string>, int> ranks;
    std::set<std::string> made(have.begin(), have.end());
    while (merges.size() < 40) {
      const std::string l = have[rng() % have.size()], r = have[rng() % have.size()];
      if (l.size() + r.size() > 6 || ranks.count({alpha(l), alpha(r)})) continue;
      ranks[{alpha(l), alpha(r)}] = static_cast<int>(merges.size());
      merges.emplace_back(l, r);
      if (made.insert(l + r).second) have.push_back(l + r);
    }
    const Tokenizer tok(make_config(merges));
    for (int w = 0; w < 50; ++w) {
      std::string word = rng() % 2 ? " " : "";
      const size_t len = 1 + rng() % 12;
      for (size_t i = 0; i < len; ++i) word += static_cast<char>('a' + rng() % 4);
      SCOPED_TRACE(word);
      std::vector<std::string> syms;
      for (char ch : word) syms.push_back(alpha(static_cast<uint8_t>(ch)));
      const std::vector<std::string> want = test::ref_bpe(syms, ranks);
      std::vector<std::string> got;
      for (int32_t id : tok.encode(word)) got.push_back(tok.token_text(id));
      ASSERT_EQ(got, want);
    }
  }
}

TEST(TokenizerEncode, SpecialTokens) {
  const Tokenizer tok(make_config({{"h", "i"}}));
  const std::string text = "<|im_start|>user\nhi<|im_end|>";
  const std::vector<int32_t> with = tok.encode(text, false, true);
  EXPECT_EQ(pieces(tok, with),
            (Strings{"<|im_start|>", "u", "s", "e", "r", "\n", "hi", "<|im_end|>"}));
  EXPECT_EQ(with.front(), kImStart);
  EXPECT_EQ(with.back(), kImEnd);
  // Without parse_special the markers are plain text.
  const std::vector<int32_t> without = tok.encode(text);
  for (int32_t id : without) EXPECT_TRUE(id != kImStart && id != kImEnd) << id;
  EXPECT_EQ(tok.decode(without), text);
  // User-defined tokens are always split out; longest match first.
  const std::vector<int32_t> user = tok.encode("a<tool>b");
  EXPECT_EQ(user, (std::vector<int32_t>{'a', kTool, 'b'}));
  // add_special follows add_bos / add_eos.
  TokenizerConfig c = make_config({});
  c.add_bos = true;
  c.add_eos = true;
  const Tokenizer be(std::move(c));
  EXPECT_EQ(be.encode("a", true), (std::vector<int32_t>{kImStart, 'a', kImEnd}));
  EXPECT_EQ(be.encode("a", false), (std::vector<int32_t>{'a'}));
  EXPECT_EQ(tok.encode("a", true), (std::vector<int32_t>{'a'}));
}

TEST(TokenizerDecode, SpecialAndBytes) {
  const Tokenizer tok(make_config({{"h", "i"}}));
  const std::vector<int32_t> ids = {kImStart, 'h', 0xC3, 0xA9, kImEnd, kTool};
  EXPECT_EQ(tok.decode(ids), "<|im_start|>h\xC3\xA9<|im_end|><tool>");
  EXPECT_EQ(tok.decode(ids, {.special = false}), "h\xC3\xA9<tool>");
  // Half a character decodes to the raw byte (ill-formed UTF-8 is passed through).
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0xC3}), "\xC3");
}

TEST(TokenizerRoundTrip, RandomBytesAndUtf8) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937 rng(seed);
  const Tokenizer tok(make_config({{" ", "a"}, {"\xC3", "\xA9"}, {"1", "2"}, {"\n", "\n"}}));
  const uint32_t ranges[][2] = {{0x20, 0x7E}, {0xA0, 0x24F}, {0x4E00, 0x4FFF}, {0x1F600, 0x1F64F},
                                {0x0660, 0x0669}, {0x2000, 0x200B}, {0x09, 0x0D}};
  for (int iter = 0; iter < 500; ++iter) {
    std::string s;
    const size_t n = rng() % 40;
    if (iter % 2 == 0) {
      for (size_t i = 0; i < n; ++i) s += static_cast<char>(rng() & 0xFF);
    } else {
      for (size_t i = 0; i < n; ++i) {
        const auto& r = ranges[rng() % std::size(ranges)];
        append_utf8(r[0] + rng() % (r[1] - r[0] + 1), s);
      }
      ASSERT_TRUE(is_valid_utf8(s));
    }
    SCOPED_TRACE(testing::PrintToString(s));
    ASSERT_EQ(tok.decode(tok.encode(s)), s);
    std::string joined;
    for (const std::string& w : tok.pre_tokenize(s)) joined += w;
    ASSERT_EQ(joined, s);
  }
}

TEST(TokenizerEncode, SameResultFromTwoThreads) {
  const Tokenizer tok(make_config({{"a", "b"}, {"ab", "c"}, {" ", "ab"}}));
  std::string text;
  for (int i = 0; i < 300; ++i) text += (i % 3 ? " abc" : " ab ca") + std::to_string(i);
  const std::vector<int32_t> want = tok.encode(text);
  std::vector<int32_t> got1, got2;
  std::thread t1([&] { got1 = tok.encode(text); });
  std::thread t2([&] { got2 = tok.encode(text); });
  t1.join();
  t2.join();
  EXPECT_EQ(got1, want);
  EXPECT_EQ(got2, want);
  EXPECT_EQ(tok.decode(want), text);
}

TEST(TokenizerChat, ChatMlWithDefaultSystemPrompt) {
  TokenizerConfig c = make_config({});
  c.chat_template =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
      "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
      "{{ '<|im_start|>assistant\n' }}{% endif %}";
  const Tokenizer tok(std::move(c));
  EXPECT_EQ(tok.default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const std::vector<ChatMessage> user = {{"user", "Hi!"}};
  EXPECT_EQ(tok.format_chat(user, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<ChatMessage> sys = {{"system", "Be brief."}, {"user", "Hi"},
                                        {"assistant", "Hello."}};
  EXPECT_EQ(tok.format_chat(sys, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n");
  EXPECT_EQ(tok.format_chat({}, true), "<|im_start|>assistant\n");
  const std::vector<int32_t> ids = tok.encode(tok.format_chat(user, true), false, true);
  EXPECT_EQ(ids.front(), kImStart);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kImStart), 3);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kImEnd), 2);
}

TEST(TokenizerChat, EscapedNewlineAndNoTemplate) {
  TokenizerConfig c = make_config({});
  c.chat_template = "{{ \"<|im_start|>system\\nBe \\\"nice\\\".<|im_end|>\\n\" }}{{'<|im_start|>'}}";
  const Tokenizer tok(std::move(c));
  EXPECT_EQ(tok.default_system_prompt(), "Be \"nice\".");
  const Tokenizer plain(make_config({}));
  EXPECT_EQ(plain.default_system_prompt(), "");
  const std::vector<ChatMessage> user = {{"user", "x"}};
  EXPECT_EQ(plain.format_chat(user, false), "<|im_start|>user\nx<|im_end|>\n");
}

template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no Error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, BadConfig) {
  expect_error([] { Tokenizer t(TokenizerConfig{}); }, "tokenizer.ggml.tokens");
  expect_error([] {
    TokenizerConfig c = make_config({});
    c.merges.push_back("ab");
    Tokenizer t(std::move(c));
  }, "tokenizer.ggml.merges[0]");
  expect_error([] {
    TokenizerConfig c = make_config({{"a", "b"}});
    c.merges.push_back("a \xC4\xB0\xC4\xB0");  // right side not a token
    Tokenizer t(std::move(c));
  }, "tokenizer.ggml.merges[1]: right token");
  expect_error([] {
    TokenizerConfig c = make_config({});
    c.merges.push_back("x y");  // "xy" was never added
    Tokenizer t(std::move(c));
  }, "merged token 'xy'");
  expect_error([] {
    TokenizerConfig c = make_config({});
    c.types.pop_back();
    Tokenizer t(std::move(c));
  }, "tokenizer.ggml.token_type");
  expect_error([] {
    TokenizerConfig c = make_config({});
    c.types[3] = static_cast<TokenType>(9);
    Tokenizer t(std::move(c));
  }, "tokenizer.ggml.token_type[3]");
  expect_error([] {
    TokenizerConfig c = make_config({});
    c.bos_id = 100000;
    Tokenizer t(std::move(c));
  }, "tokenizer.ggml.bos_token_id");
  expect_error([] {
    TokenizerConfig c = make_config({});
    c.eos_id = -1;
    c.add_eos = true;
    Tokenizer t(std::move(c));
  }, "tokenizer.ggml.add_eos_token");
  expect_error([] { pre_tokenizer_from_name("llama3"); }, "tokenizer.ggml.pre");
}

TEST(TokenizerErrors, BadUse) {
  TokenizerConfig c = make_config({});
  c.chat_template = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }}{% endfor %}";
  const Tokenizer tok(std::move(c));
  expect_error([&] { tok.decode(std::vector<int32_t>{5, -1}); }, "ids[1]");
  expect_error([&] { tok.decode(std::vector<int32_t>{tok.n_vocab()}); }, "ids[0]");
  expect_error([&] { tok.token_bytes(-3); }, "id -3");
  const std::vector<ChatMessage> user = {{"user", "x"}};
  expect_error([&] { tok.format_chat(user, true); }, "tokenizer.chat_template");
  const Tokenizer plain(make_config({}));
  const std::vector<ChatMessage> no_role = {{"", "x"}};
  expect_error([&] { plain.format_chat(no_role, true); }, "messages[0].role");
  // A byte without a token and no unknown token: an error, not a silent drop.
  TokenizerConfig holes = make_config({});
  holes.tokens[0x41] = "not-a-byte";
  holes.unk_id = -1;
  const Tokenizer h(std::move(holes));
  expect_error([&] { h.encode("zA"); }, "byte 0x41");
}

}  // namespace
}  // namespace indexshare::io

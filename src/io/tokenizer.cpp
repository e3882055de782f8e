#include "io/tokenizer.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "io/unicode_class.h"

namespace indexshare::io {
namespace {

// ---- GPT-2 byte alphabet ------------------------------------------------------------------
// Printable Latin-1 bytes stand for themselves; the other 68 bytes take the code points
// 256, 257, ... in byte order, so every byte has a visible, non-space stand-in.
constexpr uint32_t kAlphabetEnd = 256 + 68;  // every stand-in code point is below this
struct ByteAlphabet {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, kAlphabetEnd> from_cp{};  // -1: stands for no byte
};
constexpr ByteAlphabet make_alphabet() {
  ByteAlphabet a;
  a.from_cp.fill(-1);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    a.to_cp[b] = printable ? b : next++;
    a.from_cp[a.to_cp[b]] = static_cast<int16_t>(b);
  }
  return a;
}
constexpr ByteAlphabet kAlphabet = make_alphabet();

// Token bytes for a byte-level token text; false when a code point is not in the alphabet
// or the text is not UTF-8.
bool byte_level_decode(std::string_view text, std::string& out) {
  out.clear();
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char c = next_utf8(text, pos);
    if (!c.valid) return false;
    const int b = byte_from_code_point(c.cp);
    if (b < 0) return false;
    out += static_cast<char>(b);
    pos += c.len;
  }
  return true;
}

bool is_special_type(TokenType t) {
  return t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined;
}

// "<0x0A>"-style byte token text -> the byte, or -1.
int hex_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text.back() != '>') return -1;
  int v = 0;
  for (char ch : text.substr(3, 2)) {
    const int d = (ch >= '0' && ch <= '9')   ? ch - '0'
                  : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10
                  : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                                             : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
         static_cast<uint32_t>(right);
}

// ---- pre-tokenizer ------------------------------------------------------------------------
// Works on bytes, decoding UTF-8 on the fly; a byte that is not valid UTF-8 counts as one
// character of class kOther. `emit(begin, end)` receives each word as a byte range.
struct ScanChar {
  uint32_t cp;
  uint32_t len;
  int cls;  // a CharClass value; -1 past the end of the segment
};

inline ScanChar scan_at(std::string_view s, size_t pos, size_t end) {
  if (pos >= end) return {0, 0, -1};
  const uint8_t b = static_cast<uint8_t>(s[pos]);
  if (b < 0x80) return {b, 1, static_cast<int>(char_class(b))};
  const Utf8Char u = next_utf8(s, pos);
  const CharClass cls = u.valid ? char_class(u.cp) : CharClass::kOther;
  return {u.cp, u.len, static_cast<int>(cls)};
}

// The GPT-2 pattern over bytes [lo, hi) of one segment. The end of the segment acts as the end
// of the text: a lookahead cannot see past it.
template <class Emit>
void scan_gpt2(std::string_view s, size_t lo, size_t hi, Emit&& emit) {
  constexpr int kLetter = static_cast<int>(CharClass::kLetter);
  constexpr int kNumber = static_cast<int>(CharClass::kNumber);
  constexpr int kOther = static_cast<int>(CharClass::kOther);
  constexpr int kSpace = static_cast<int>(CharClass::kSpace);
  size_t i = lo;
  while (i < hi) {
    const ScanChar c = scan_at(s, i, hi);
    // 's 't 're 've 'm 'll 'd (lower case only, as in GPT-2); ASCII bytes are whole characters
    if (c.cp == '\'' && i + 1 < hi) {
      const char a = s[i + 1];
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < hi) {
        const char b = s[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional leading space, then a run
    const size_t j0 = i + (c.cp == ' ' ? 1 : 0);
    const ScanChar first = j0 == i ? c : scan_at(s, j0, hi);
    const int run = first.cls;
    if (run == kLetter || run == kNumber || run == kOther) {
      size_t j = j0 + first.len;
      for (ScanChar d = scan_at(s, j, hi); d.cls == run; d = scan_at(s, j, hi)) j += d.len;
      emit(i, j);
      i = j;
      continue;
    }
    // '\s+(?!\S)' then '\s+': a run of white space followed by more text gives its last
    // character to the next word; at the end of the segment the run stays whole.
    size_t j = i, last = i, count = 0;
    for (ScanChar d = c; d.cls == kSpace; d = scan_at(s, j, hi)) {
      last = j;
      j += d.len;
      ++count;
    }
    if (count > 1 && j < hi) {
      emit(i, last);
      i = last;
    } else if (count > 0) {
      emit(i, j);
      i = j;
    } else {
      emit(i, i + c.len);  // unreachable with four classes; kept for safety
      i += c.len;
    }
  }
}

// Whole-text pre-tokenization: kDigits first isolates every \p{N} character; the runs between
// are scanned as separate segments.
template <class Emit>
void split_words(std::string_view s, PreTokenizer pre, Emit&& emit) {
  if (pre == PreTokenizer::kGpt2) {
    scan_gpt2(s, 0, s.size(), emit);
    return;
  }
  constexpr int kNumber = static_cast<int>(CharClass::kNumber);
  size_t i = 0;
  while (i < s.size()) {
    const ScanChar c = scan_at(s, i, s.size());
    if (c.cls == kNumber) {
      emit(i, i + c.len);
      i += c.len;
      continue;
    }
    size_t j = i + c.len;
    for (ScanChar d = scan_at(s, j, s.size()); d.cls >= 0 && d.cls != kNumber;
         d = scan_at(s, j, s.size())) {
      j += d.len;
    }
    scan_gpt2(s, i, j, emit);
    i = j;
  }
}

// (left id, right id) -> (rank, merged id): open addressing with linear probing, so a lookup in
// the BPE inner loop is one hash and (usually) one cache line.
class PairTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t result = 0;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots_.assign(cap, Entry{});
    mask_ = cap - 1;
  }
  // Keeps the first entry for a key; reserve() must have been called with enough room.
  void insert(uint64_t key, int32_t rank, int32_t result) {
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return;
      if (slots_[i].key == kEmpty) {
        slots_[i] = {key, rank, result};
        return;
      }
    }
  }
  const Entry* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i];
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // never a key: ids are below 2^31
  size_t slot(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull >> 20) & mask_; }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// ---- chat template ------------------------------------------------------------------------
// The template is not run as Jinja: the ChatML shape is fixed, and the only thing read from it
// is the default system prompt, a string literal '<|im_start|>system\n...<|im_end|>...'.
void parse_chat_template(const std::string& tpl, bool& supported, std::string& default_system) {
  default_system.clear();
  supported = tpl.empty() || (tpl.find("<|im_start|>") != std::string::npos &&
                              tpl.find("<|im_end|>") != std::string::npos);
  if (!supported) return;
  const std::string head = "<|im_start|>system";
  const std::string prefix = "<|im_start|>system\n";
  for (size_t p = tpl.find(head); p != std::string::npos; p = tpl.find(head, p + 1)) {
    if (p == 0 || (tpl[p - 1] != '\'' && tpl[p - 1] != '"')) continue;
    const char quote = tpl[p - 1];
    std::string lit;  // the literal, Jinja escapes resolved
    bool closed = false;
    for (size_t i = p; i < tpl.size(); ++i) {
      const char ch = tpl[i];
      if (ch == '\\' && i + 1 < tpl.size()) {
        const char e = tpl[++i];
        lit += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
      } else if (ch == quote) {
        closed = true;
        break;
      } else {
        lit += ch;
      }
    }
    if (!closed || lit.compare(0, prefix.size(), prefix) != 0) continue;
    const size_t end = lit.find("<|im_end|>", prefix.size());
    if (end == std::string::npos) continue;
    default_system = lit.substr(prefix.size(), end - prefix.size());
    return;
  }
}

constexpr size_t kWordCacheLimit = 1 << 17;

}  // namespace

uint32_t byte_to_code_point(uint8_t b) { return kAlphabet.to_cp[b]; }

int byte_from_code_point(uint32_t cp) { return cp < kAlphabetEnd ? kAlphabet.from_cp[cp] : -1; }

PreTokenizer pre_tokenizer_from_name(std::string_view name) {
  if (name == "smollm" || name == "starcoder") return PreTokenizer::kDigits;
  if (name == "gpt2" || name == "gpt-2") return PreTokenizer::kGpt2;
  fail("tokenizer.ggml.pre: pre-tokenizer '", name,
       "' is not supported (supported: smollm, starcoder, gpt-2)");
}

// ---- Impl -----------------------------------------------------------------------------------
struct Tokenizer::Impl {
  std::vector<std::string> tokens;
  std::vector<TokenType> types;
  std::vector<std::string> bytes;  // decoded bytes per token
  std::unordered_map<std::string, int32_t> text_to_id;
  std::array<int32_t, 256> byte_token{};  // id of the one-byte token per byte, -1 if none
  PairTable merges;
  std::vector<int32_t> specials;  // split-out tokens, longest text first
  PreTokenizer pre = PreTokenizer::kDigits;
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false, add_eos = false;
  std::string chat_template;
  bool chat_supported = true;
  std::string default_system;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringViewHash, std::equal_to<>>
      word_cache;

  void bpe_word(std::string_view word, std::vector<int32_t>& out) const;
  void encode_raw(std::string_view text, std::vector<int32_t>& out) const;
};

// BPE over one word: start from one symbol per byte, repeatedly merge the adjacent pair with
// the lowest rank (leftmost on ties) until no pair has a merge.
void Tokenizer::Impl::bpe_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Sym {
    int32_t id;    // -1: merged away
    int32_t prev;  // -1: none
    int32_t next;  // -1: none
  };
  struct Cand {
    int32_t rank, left, right, left_id, right_id, result;
    bool operator>(const Cand& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  const int32_t n = static_cast<int32_t>(word.size());
  thread_local std::vector<Sym> sym;  // scratch, reused across words
  thread_local std::vector<Cand> heap;
  sym.resize(n);
  heap.clear();
  const std::greater<Cand> later;  // heap order: lowest rank, then leftmost, on top
  for (int32_t i = 0; i < n; ++i) {
    const uint8_t b = static_cast<uint8_t>(word[i]);
    int32_t id = byte_token[b];
    if (id < 0) {
      IS_CHECK(unk >= 0, "tokenizer: byte 0x", std::hex, static_cast<int>(b),
               " has no token in tokenizer.ggml.tokens and there is no unknown token");
      id = unk;  // never merges (unk is not a byte token)
    }
    sym[i] = {id, i - 1, i + 1 < n ? i + 1 : -1};
  }
  const auto push = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const PairTable::Entry* e = merges.find(pair_key(sym[left].id, sym[right].id));
    if (e == nullptr) return;
    heap.push_back({e->rank, left, right, sym[left].id, sym[right].id, e->result});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i, i + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Cand c = heap.back();
    heap.pop_back();
    Sym& l = sym[c.left];
    Sym& r = sym[c.right];
    if (l.next != c.right || l.id != c.left_id || r.id != c.right_id) continue;  // stale
    l.id = c.result;
    r.id = -1;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    push(l.prev, c.left);
    push(c.left, l.next);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) out.push_back(sym[i].id);
}

void Tokenizer::Impl::encode_raw(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<int32_t> ids;
  split_words(text, pre, [&](size_t begin, size_t end) {
    const std::string_view word = text.substr(begin, end - begin);
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      const auto it = word_cache.find(word);
      if (it != word_cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    ids.clear();
    bpe_word(word, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (word_cache.size() >= kWordCacheLimit) word_cache.clear();
    word_cache.emplace(std::string(word), ids);
  });
}

// ---- construction ---------------------------------------------------------------------------
Tokenizer::Tokenizer(TokenizerConfig config) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const size_t n = config.tokens.size();
  IS_CHECK(n > 0, "tokenizer.ggml.tokens: empty vocabulary");
  IS_CHECK(n < (size_t{1} << 31), "tokenizer.ggml.tokens: ", n, " tokens is too many");
  IS_CHECK(config.types.empty() || config.types.size() == n, "tokenizer.ggml.token_type: ",
           config.types.size(), " entries for ", n, " tokens");
  m.tokens = std::move(config.tokens);
  m.types = config.types.empty() ? std::vector<TokenType>(n, TokenType::kNormal)
                                 : std::move(config.types);
  m.pre = config.pre;
  m.add_bos = config.add_bos;
  m.add_eos = config.add_eos;

  m.byte_token.fill(-1);
  m.bytes.resize(n);
  m.text_to_id.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = static_cast<int32_t>(i);
    const TokenType t = m.types[i];
    const int ti = static_cast<int>(t);
    IS_CHECK(ti >= 1 && ti <= 6, "tokenizer.ggml.token_type[", i, "]: unknown type ", ti);
    const std::string& text = m.tokens[i];
    m.text_to_id[text] = id;  // a repeated text maps to its last id (as llama.cpp does)
    const int hex = t == TokenType::kByte ? hex_byte_token(text) : -1;
    if (is_special_type(t)) {
      m.bytes[i] = text;
    } else if (hex >= 0) {
      m.bytes[i] = std::string(1, static_cast<char>(hex));
    } else if (!byte_level_decode(text, m.bytes[i])) {
      m.bytes[i] = text;  // not in the byte alphabet: rendered as stored
    }
  }
  for (uint32_t b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(byte_to_code_point(static_cast<uint8_t>(b)), s);
    const auto it = m.text_to_id.find(s);
    if (it != m.text_to_id.end() && !is_special_type(m.types[it->second])) {
      m.byte_token[b] = it->second;
    }
  }

  m.merges.reserve(config.merges.size());
  for (size_t r = 0; r < config.merges.size(); ++r) {
    const std::string& line = config.merges[r];
    const size_t sp = line.size() > 1 ? line.find(' ', 1) : std::string::npos;
    IS_CHECK(sp != std::string::npos && sp + 1 < line.size(), "tokenizer.ggml.merges[", r,
             "]: '", line, "' is not two tokens separated by a space");
    IS_CHECK(line.find(' ', sp + 1) == std::string::npos, "tokenizer.ggml.merges[", r, "]: '",
             line, "' has more than one space");
    const std::string left = line.substr(0, sp);
    const std::string right = line.substr(sp + 1);
    const auto find = [&](const std::string& s, const char* what) {
      const auto it = m.text_to_id.find(s);
      IS_CHECK(it != m.text_to_id.end(), "tokenizer.ggml.merges[", r, "]: ", what, " token '",
               s, "' is not in tokenizer.ggml.tokens");
      return it->second;
    };
    const int32_t lid = find(left, "left");
    const int32_t rid = find(right, "right");
    const int32_t res = find(left + right, "merged");
    m.merges.insert(pair_key(lid, rid), static_cast<int32_t>(r), res);  // the first one wins
  }

  const auto check_id = [&](int32_t id, const char* key) {
    IS_CHECK(id >= -1 && id < static_cast<int64_t>(n), key, " = ", id,
             " is out of range for ", n, " tokens");
    return id;
  };
  m.bos = check_id(config.bos_id, "tokenizer.ggml.bos_token_id");
  m.eos = check_id(config.eos_id, "tokenizer.ggml.eos_token_id");
  m.unk = check_id(config.unk_id, "tokenizer.ggml.unknown_token_id");
  m.pad = check_id(config.pad_id, "tokenizer.ggml.padding_token_id");
  IS_CHECK(!m.add_bos || m.bos >= 0, "tokenizer.ggml.add_bos_token is true but there is no bos");
  IS_CHECK(!m.add_eos || m.eos >= 0, "tokenizer.ggml.add_eos_token is true but there is no eos");

  for (size_t i = 0; i < n; ++i) {
    if (is_special_type(m.types[i]) && !m.tokens[i].empty()) {
      m.specials.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(m.specials.begin(), m.specials.end(), [&](int32_t a, int32_t b) {
    return m.tokens[a].size() > m.tokens[b].size();
  });

  m.chat_template = std::move(config.chat_template);
  parse_chat_template(m.chat_template, m.chat_supported, m.default_system);
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

// ---- encode / decode ----------------------------------------------------------------------
std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const Impl& m = *impl_;
  struct Frag {
    int32_t token;  // -1: raw text [begin, end)
    size_t begin, end;
  };
  std::vector<Frag> frags;
  if (!text.empty()) frags.push_back({-1, 0, text.size()});
  // Cut special tokens out, longest first; each pass splits the raw fragments left so far.
  std::vector<Frag> next;
  for (int32_t sid : m.specials) {
    const TokenType t = m.types[sid];
    if (!parse_special && t != TokenType::kUserDefined) continue;
    const std::string& s = m.tokens[sid];
    next.clear();
    for (const Frag& fr : frags) {
      if (fr.token >= 0) {
        next.push_back(fr);
        continue;
      }
      size_t pos = fr.begin;
      while (pos < fr.end) {
        const size_t hit = text.substr(0, fr.end).find(s, pos);
        if (hit == std::string_view::npos) break;
        if (hit > pos) next.push_back({-1, pos, hit});
        next.push_back({sid, hit, hit + s.size()});
        pos = hit + s.size();
      }
      if (pos < fr.end) next.push_back({-1, pos, fr.end});
    }
    frags.swap(next);
  }

  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && m.add_bos) out.push_back(m.bos);
  for (const Frag& fr : frags) {
    if (fr.token >= 0) {
      out.push_back(fr.token);
    } else {
      m.encode_raw(text.substr(fr.begin, fr.end - fr.begin), out);
    }
  }
  if (add_special && m.add_eos) out.push_back(m.eos);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, DecodeOptions options) const {
  const Impl& m = *impl_;
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    IS_CHECK(id >= 0 && id < n_vocab(), "decode: ids[", i, "] = ", id,
             " is out of range for ", n_vocab(), " tokens");
    const TokenType t = m.types[id];
    if (!options.special && (t == TokenType::kControl || t == TokenType::kUnknown)) continue;
    out += m.bytes[id];
  }
  return out;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  IS_CHECK(id >= 0 && id < n_vocab(), "token_bytes: id ", id, " is out of range for ",
           n_vocab(), " tokens");
  return impl_->bytes[id];
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string> words;
  split_words(text, impl_->pre,
              [&](size_t b, size_t e) { words.emplace_back(text.substr(b, e - b)); });
  return words;
}

std::string Tokenizer::format_chat(std::span<const ChatMessage> messages,
                                   bool add_generation_prompt) const {
  const Impl& m = *impl_;
  IS_CHECK(m.chat_supported,
           "tokenizer.chat_template: not a ChatML template (no <|im_start|> / <|im_end|>); "
           "only ChatML is supported");
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& msg = messages[i];
    IS_CHECK(!msg.role.empty(), "format_chat: messages[", i, "].role is empty");
    if (i == 0 && msg.role != "system" && !m.default_system.empty()) {
      out += "<|im_start|>system\n" + m.default_system + "<|im_end|>\n";
    }
    out += "<|im_start|>" + msg.role + "\n" + msg.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

const std::string& Tokenizer::default_system_prompt() const { return impl_->default_system; }

// ---- accessors ------------------------------------------------------------------------------
int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(impl_->tokens.size()); }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
int32_t Tokenizer::unk_id() const { return impl_->unk; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
bool Tokenizer::add_eos() const { return impl_->add_eos; }
PreTokenizer Tokenizer::pre_tokenizer() const { return impl_->pre; }

TokenType Tokenizer::token_type(int32_t id) const {
  IS_CHECK(id >= 0 && id < n_vocab(), "token_type: id ", id, " is out of range");
  return impl_->types[id];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  IS_CHECK(id >= 0 && id < n_vocab(), "token_text: id ", id, " is out of range");
  return impl_->tokens[id];
}

int32_t Tokenizer::find_token(std::string_view text) const {
  const auto it = impl_->text_to_id.find(std::string(text));
  return it == impl_->text_to_id.end() ? -1 : it->second;
}

}  // namespace indexshare::io

// GPT-2 style byte-level BPE tokenizer, as used by SmolLM2 (GGUF tokenizer.ggml.model "gpt2").
//
// encode(text):
//   1. special tokens (control / user-defined / unknown types) are cut out of the text first:
//      user-defined ones always, control and unknown ones only with parse_special;
//   2. each remaining piece is pre-tokenized into words by a hand-written scanner that behaves
//      like the GPT-2 pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      where the "smollm" pre-tokenizer (and its kin) first isolates every \p{N} code point,
//      so numbers become single digits and a space before a digit stays on its own;
//   3. each word's bytes are mapped to the GPT-2 byte alphabet and merged by BPE: the adjacent
//      pair with the lowest merge rank first, the leftmost on ties.
// Invalid UTF-8 in the input is kept byte for byte (each bad byte is treated as a
// punctuation-like character), so decode(encode(s)) == s for every byte string s. (llama.cpp
// instead replaces each bad byte by U+FFFD before tokenizing.)
//
// decode(ids) concatenates the tokens' bytes: byte-level tokens are mapped back through the
// GPT-2 byte alphabet, special tokens give their text (or nothing, see DecodeOptions). The
// result may be ill-formed UTF-8 (e.g. a token sequence cut inside a multi-byte character);
// pass it through sanitize_utf8() (io/unicode_class.h) before showing it, or stream it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace indexshare::io {

class GgufFile;

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

// Pre-tokenizer families (tokenizer.ggml.pre): kDigits for "smollm" and "starcoder" (llama.cpp
// gives both the same rules), kGpt2 for "gpt-2" / "gpt2".
enum class PreTokenizer { kGpt2, kDigits };
// Maps a tokenizer.ggml.pre value; Error naming the value when unsupported.
PreTokenizer pre_tokenizer_from_name(std::string_view name);

// Everything a tokenizer is built from, as plain vectors (tests build tiny ones by hand).
struct TokenizerConfig {
  std::vector<std::string> tokens;    // token texts, in the GPT-2 byte alphabet ("Ġthe")
  std::vector<TokenType> types;       // empty: every token kNormal; else one per token
  std::vector<std::string> merges;    // "left right", rank order (rank = index)
  PreTokenizer pre = PreTokenizer::kDigits;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;  // -1: none
  bool add_bos = false;               // encode(add_special) prepends bos
  bool add_eos = false;               // encode(add_special) appends eos
  std::string chat_template;          // Jinja text from the model; empty: plain ChatML
};

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", ...
  std::string content;
};

struct DecodeOptions {
  bool special = true;  // render control/unknown tokens as their text; false drops them
};

class Tokenizer {
 public:
  // Validates and indexes the config: Error naming the field (tokens, types, merges[i], ids).
  explicit Tokenizer(TokenizerConfig config);
  // Reads tokenizer.ggml.* and tokenizer.chat_template; Error naming the key at fault
  // (model other than "gpt2", missing tokens/merges, a merge naming an unknown token, ...).
  static Tokenizer from_gguf(const GgufFile& file);

  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Token ids of text. add_special: bos/eos as the model asks (add_bos/add_eos).
  // parse_special: "<|im_start|>" etc. in the text become their control tokens; otherwise
  // they are tokenized as plain text. Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool add_special = false,
                              bool parse_special = false) const;
  // Bytes of the tokens (see the file comment). Error naming the id when out of range.
  std::string decode(std::span<const int32_t> ids, DecodeOptions options = {}) const;
  // Bytes of one token (special tokens give their text).
  const std::string& token_bytes(int32_t id) const;

  // The prompt for a chat, in the ChatML form of the model's template:
  //   [<|im_start|>system\nDEFAULT<|im_end|>\n]  when the first message is not "system" and the
  //                                               template has a default system prompt
  //   <|im_start|>ROLE\nCONTENT<|im_end|>\n      per message
  //   <|im_start|>assistant\n                    when add_generation_prompt
  // Encode the result with parse_special = true.
  std::string format_chat(std::span<const ChatMessage> messages,
                          bool add_generation_prompt) const;
  // The template's default system prompt ("" when it has none).
  const std::string& default_system_prompt() const;

  int32_t n_vocab() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  int32_t pad_id() const;
  bool add_bos() const;
  bool add_eos() const;
  PreTokenizer pre_tokenizer() const;
  TokenType token_type(int32_t id) const;          // Error when out of range
  const std::string& token_text(int32_t id) const;  // as stored ("Ġthe"); Error when out of range
  int32_t find_token(std::string_view text) const;  // id of a stored text, -1 if none

  // Pre-tokenization alone (step 2 above), for tests and diagnostics: the words, as raw bytes.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// GPT-2 byte alphabet: the code point that stands for byte b in token texts ("Ġ" for ' '),
// and back (-1 for a code point that stands for no byte).
uint32_t byte_to_code_point(uint8_t b);
int byte_from_code_point(uint32_t cp);

}  // namespace indexshare::io

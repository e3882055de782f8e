// Tokenizer::from_gguf: the tokenizer.ggml.* keys of a GGUF file (ecosystem notes §1.3).
#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"

namespace indexshare::io {

Tokenizer Tokenizer::from_gguf(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  IS_CHECK(model == "gpt2", f.name(), ": tokenizer.ggml.model is '", model,
           "'; only 'gpt2' (byte-level BPE) is supported");
  IS_CHECK(f.has("tokenizer.ggml.pre"), f.name(),
           ": tokenizer.ggml.pre is missing (the pre-tokenizer cannot be guessed)");
  IS_CHECK(f.has("tokenizer.ggml.tokens"), f.name(), ": tokenizer.ggml.tokens is missing");
  IS_CHECK(f.has("tokenizer.ggml.merges"), f.name(), ": tokenizer.ggml.merges is missing");
  TokenizerConfig c;
  try {
    c.pre = pre_tokenizer_from_name(f.get_string("tokenizer.ggml.pre"));
  } catch (const Error& e) {
    fail(f.name(), ": ", e.what());
  }
  c.tokens = f.get_string_array("tokenizer.ggml.tokens");
  c.merges = f.get_string_array("tokenizer.ggml.merges");
  if (f.has("tokenizer.ggml.token_type")) {
    for (int64_t t : f.get_int_array("tokenizer.ggml.token_type")) {
      IS_CHECK(t >= 1 && t <= 6, f.name(), ": tokenizer.ggml.token_type has unknown type ", t);
      c.types.push_back(static_cast<TokenType>(t));
    }
  }
  const auto id = [&](const char* key) {
    const int64_t v = f.get_int(key, -1);
    IS_CHECK(v >= -1 && v < static_cast<int64_t>(c.tokens.size()), f.name(), ": ", key, " = ",
             v, " is out of range for ", c.tokens.size(), " tokens");
    return static_cast<int32_t>(v);
  };
  c.bos_id = id("tokenizer.ggml.bos_token_id");
  c.eos_id = id("tokenizer.ggml.eos_token_id");
  c.unk_id = id("tokenizer.ggml.unknown_token_id");
  c.pad_id = id("tokenizer.ggml.padding_token_id");
  if (f.has("tokenizer.ggml.add_bos_token")) c.add_bos = f.get_bool("tokenizer.ggml.add_bos_token");
  if (f.has("tokenizer.ggml.add_eos_token")) c.add_eos = f.get_bool("tokenizer.ggml.add_eos_token");
  if (f.has("tokenizer.chat_template")) c.chat_template = f.get_string("tokenizer.chat_template");
  try {
    return Tokenizer(std::move(c));
  } catch (const Error& e) {
    fail(f.name(), ": ", e.what());
  }
}

}  // namespace indexshare::io

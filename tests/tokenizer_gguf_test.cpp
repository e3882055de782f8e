// Tokenizer::from_gguf on small GGUF files written here byte by byte (metadata only): the
// keys it reads, and an Error naming the key for each kind of bad tokenizer metadata.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"

namespace indexshare::io {
namespace {

// A GGUF v3 writer for metadata: the test's own encoding of the format (ecosystem notes §1.1).
class GgufBuilder {
 public:
  void str(const std::string& key, const std::string& v) {
    kv(key, 8);
    put_str(v);
  }
  void u32(const std::string& key, uint32_t v) {
    kv(key, 4);
    put(v);
  }
  void boolean(const std::string& key, bool v) {
    kv(key, 7);
    body_.push_back(v ? 1 : 0);
  }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    kv(key, 9);
    put(uint32_t{8});
    put(static_cast<uint64_t>(v.size()));
    for (const auto& s : v) put_str(s);
  }
  void i32s(const std::string& key, const std::vector<int32_t>& v) {
    kv(key, 9);
    put(uint32_t{5});
    put(static_cast<uint64_t>(v.size()));
    for (int32_t x : v) put(x);
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
    const auto app = [&](const auto& x) {
      const auto* p = reinterpret_cast<const uint8_t*>(&x);
      out.insert(out.end(), p, p + sizeof x);
    };
    app(uint32_t{3});
    app(uint64_t{0});  // tensors
    app(n_kv_);
    out.insert(out.end(), body_.begin(), body_.end());
    return out;
  }

 private:
  template <class T>
  void put(T x) {
    const auto* p = reinterpret_cast<const uint8_t*>(&x);
    body_.insert(body_.end(), p, p + sizeof x);
  }
  void put_str(const std::string& s) {
    put(static_cast<uint64_t>(s.size()));
    body_.insert(body_.end(), s.begin(), s.end());
  }
  void kv(const std::string& key, uint32_t type) {
    put_str(key);
    put(type);
    ++n_kv_;
  }
  std::vector<uint8_t> body_;
  uint64_t n_kv_ = 0;
};

// "Ġ" is the byte-level text of a space.
const std::string kSp = "\xC4\xA0";

// A valid tokenizer: bytes ' ', a, b as tokens 0..2, then "ab", " ab", and two specials.
// `skip` leaves one key out; `edit` may change the builder's inputs.
struct Meta {
  std::string model = "gpt2";
  std::string pre = "smollm";
  std::vector<std::string> tokens = {kSp, "a", "b", "ab", kSp + "ab", "<|im_start|>", "<|im_end|>"};
  std::vector<int32_t> types = {1, 1, 1, 1, 1, 3, 3};
  std::vector<std::string> merges = {"a b", kSp + " ab"};
  uint32_t bos = 5, eos = 6;
};

std::vector<uint8_t> write(const Meta& m, const std::string& skip = "") {
  GgufBuilder b;
  b.str("general.architecture", "llama");
  if (skip != "model") b.str("tokenizer.ggml.model", m.model);
  if (skip != "pre") b.str("tokenizer.ggml.pre", m.pre);
  if (skip != "tokens") b.strings("tokenizer.ggml.tokens", m.tokens);
  if (skip != "types") b.i32s("tokenizer.ggml.token_type", m.types);
  if (skip != "merges") b.strings("tokenizer.ggml.merges", m.merges);
  b.u32("tokenizer.ggml.bos_token_id", m.bos);
  b.u32("tokenizer.ggml.eos_token_id", m.eos);
  b.boolean("tokenizer.ggml.add_bos_token", true);
  b.str("tokenizer.chat_template", "{{ '<|im_start|>system\\nHi there<|im_end|>\\n' }}<|im_end|>");
  return b.bytes();
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    const GgufFile f = GgufFile::parse(bytes, "tiny.gguf");
    Tokenizer t = Tokenizer::from_gguf(f);
    ADD_FAILURE() << "no Error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find("tiny.gguf"), std::string::npos) << msg;
  }
}

TEST(TokenizerGguf, ReadsTheKeys) {
  const std::vector<uint8_t> bytes = write(Meta{});
  const GgufFile f = GgufFile::parse(bytes, "tiny.gguf");
  const Tokenizer t = Tokenizer::from_gguf(f);
  EXPECT_EQ(t.n_vocab(), 7);
  EXPECT_EQ(t.bos_id(), 5);
  EXPECT_EQ(t.eos_id(), 6);
  EXPECT_EQ(t.unk_id(), -1);
  EXPECT_TRUE(t.add_bos());
  EXPECT_FALSE(t.add_eos());
  EXPECT_EQ(t.token_type(5), TokenType::kControl);
  EXPECT_EQ(t.default_system_prompt(), "Hi there");
  EXPECT_EQ(t.encode(" ab", true), (std::vector<int32_t>{5, 4}));
  EXPECT_EQ(t.encode("ab ba<|im_end|>", false, true), (std::vector<int32_t>{3, 0, 2, 1, 6}));
}

TEST(TokenizerGguf, ErrorsNameTheKey) {
  Meta spm;
  spm.model = "llama";
  expect_error(write(spm), "tokenizer.ggml.model");
  expect_error(write(Meta{}, "model"), "tokenizer.ggml.model");
  expect_error(write(Meta{}, "pre"), "tokenizer.ggml.pre");
  expect_error(write(Meta{}, "tokens"), "tokenizer.ggml.tokens");
  expect_error(write(Meta{}, "merges"), "tokenizer.ggml.merges");
  Meta qwen;
  qwen.pre = "qwen2";
  expect_error(write(qwen), "tokenizer.ggml.pre");
  Meta bad_merge;
  bad_merge.merges.push_back("a zz");
  expect_error(write(bad_merge), "tokenizer.ggml.merges[2]");
  Meta bad_types;
  bad_types.types.pop_back();
  expect_error(write(bad_types), "tokenizer.ggml.token_type");
  Meta bad_type;
  bad_type.types[0] = 7;
  expect_error(write(bad_type), "tokenizer.ggml.token_type");
  Meta bad_bos;
  bad_bos.bos = 7;
  expect_error(write(bad_bos), "tokenizer.ggml.bos_token_id");
}

}  // namespace
}  // namespace indexshare::io

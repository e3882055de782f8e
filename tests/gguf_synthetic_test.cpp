// GGUF reader on tiny synthetic files: every value type, tensors, alignment, each malformed
// header field (Error naming the field), and byte flips / truncations (Error or success, never
// a crash; run under ASan + UBSan to check memory safety).
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "gguf_samples.h"
#include "io/gguf.h"

namespace indexshare::io {
namespace {

using indexshare::testing::GgufWriter;
using indexshare::testing::pattern_bytes;
namespace t = indexshare::testing;

// The GgufFile owns a copy, so temporaries are fine.
GgufFile parse(const std::vector<uint8_t>& b, const std::string& name = "test.gguf") {
  return GgufFile::from_bytes(b, name);
}

// Expects parse to throw Error whose message contains every needle.
void expect_parse_error(const std::vector<uint8_t>& b, std::initializer_list<std::string> needles) {
  try {
    parse(b, "bad.gguf");
    ADD_FAILURE() << "no error; expected one naming '" << *needles.begin() << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("bad.gguf"), std::string::npos) << what;
    for (const auto& n : needles) EXPECT_NE(what.find(n), std::string::npos) << "'" << n << "' not in: " << what;
  }
}

template <class T>
void poke(std::vector<uint8_t>& b, size_t at, T v) {
  std::memcpy(&b[at], &v, sizeof(T));
}

class AllTypes : public ::testing::TestWithParam<uint32_t> {};

TEST_P(AllTypes, EveryValueTypeAndTensor) {
  const uint32_t version = GetParam();
  const auto bytes = t::sample_all_types(version);
  const GgufFile f = GgufFile::parse(bytes, "test.gguf");  // views into `bytes`
  EXPECT_EQ(f.version(), version);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("t.u8"), 200);
  EXPECT_EQ(f.get_int("t.i8"), -100);
  EXPECT_EQ(f.get_int("t.u16"), 60000);
  EXPECT_EQ(f.get_int("t.i16"), -30000);
  EXPECT_EQ(f.get_int("t.u32"), 4000000000);
  EXPECT_EQ(f.get_int("t.i32"), -2000000000);
  EXPECT_EQ(f.get_float("t.f32"), 1.5);
  EXPECT_TRUE(f.get_bool("t.bool"));
  EXPECT_EQ(f.get_string("t.string"), "h\xc3\xa9llo");
  EXPECT_EQ(std::get<uint64_t>(f.value("t.u64").v), 18000000000000000000ull);
  EXPECT_EQ(f.get_int("t.i64"), -9000000000000000000ll);
  EXPECT_EQ(f.get_float("t.f64"), -2.25);
  EXPECT_EQ(f.get_float("t.u16"), 60000.0);  // integers are numbers too
  EXPECT_EQ(f.value("t.i16").type, GgufValueType::kInt16);
  EXPECT_EQ(f.value("t.f64").type, GgufValueType::kFloat64);

  EXPECT_EQ(f.get_int_array("a.u8"), (std::vector<int64_t>{1, 2, 255}));
  EXPECT_EQ(f.get_int_array("a.i8"), (std::vector<int64_t>{-1, 0, 127}));
  EXPECT_EQ(f.get_int_array("a.u16"), (std::vector<int64_t>{65535}));
  EXPECT_EQ(f.get_int_array("a.i16"), (std::vector<int64_t>{-2, 3}));
  EXPECT_EQ(f.get_int_array("a.u32"), (std::vector<int64_t>{7, 8, 9}));
  EXPECT_EQ(f.get_int_array("a.i32"), (std::vector<int64_t>{-5, 6}));
  EXPECT_EQ(f.get_int_array("a.u64"), (std::vector<int64_t>{1ll << 40}));
  EXPECT_EQ(f.get_int_array("a.i64"), (std::vector<int64_t>{-(1ll << 40)}));
  EXPECT_EQ(f.get_float_array("a.f32"), (std::vector<double>{0.5, -1.0}));
  EXPECT_EQ(f.get_float_array("a.f64"), (std::vector<double>{3.0, 1e-300}));
  EXPECT_EQ(f.get_float_array("a.i32"), (std::vector<double>{-5.0, 6.0}));
  EXPECT_EQ(f.get_string_array("a.string"), (std::vector<std::string>{"a", "", "Ġthe"}));
  EXPECT_TRUE(f.get_int_array("a.empty").empty());
  const auto bools = f.get_array("a.bool").elements();
  ASSERT_EQ(bools.size(), 3u);
  EXPECT_FALSE(std::get<bool>(bools[0].v));
  EXPECT_TRUE(std::get<bool>(bools[2].v));

  const GgufArray& nested = f.get_array("a.nested");
  EXPECT_EQ(nested.elem_type, GgufValueType::kArray);
  EXPECT_EQ(f.value("a.nested").elem_type, GgufValueType::kArray);
  const auto outer = nested.elements();
  ASSERT_EQ(outer.size(), 3u);
  const auto& a0 = std::get<GgufArray>(outer[0].v);
  EXPECT_EQ(a0.elem_type, GgufValueType::kInt32);
  ASSERT_EQ(a0.elements().size(), 2u);
  EXPECT_EQ(std::get<int64_t>(a0.elements()[1].v), 2);
  const auto a1 = std::get<GgufArray>(outer[1].v).elements();
  ASSERT_EQ(a1.size(), 2u);
  EXPECT_EQ(std::get<std::string>(a1[1].v), "yz");
  const auto inner = std::get<GgufArray>(std::get<GgufArray>(outer[2].v).elements()[0].v).elements();
  ASSERT_EQ(inner.size(), 1u);
  EXPECT_EQ(std::get<uint64_t>(inner[0].v), 9u);

  const auto keys = f.keys();
  ASSERT_EQ(keys.size(), 27u);
  EXPECT_EQ(keys.front(), "general.architecture");
  EXPECT_EQ(keys.back(), "a.nested");

  // Tensors: types, shapes, offsets (each padded to 32), sizes, data.
  ASSERT_EQ(f.tensors().size(), 5u);
  struct Want {
    const char* name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t offset, nbytes;
    uint32_t seed;
  };
  const Want want[] = {{"t.f32", GgmlType::kF32, {4, 2}, 0, 32, 1},
                       {"t.f16", GgmlType::kF16, {8}, 32, 16, 2},
                       {"t.q4_1", GgmlType::kQ4_1, {32, 2}, 64, 40, 3},
                       {"t.q8_0", GgmlType::kQ8_0, {64}, 128, 68, 4},
                       {"t.bf16", GgmlType::kBF16, {2, 2, 2}, 224, 16, 5}};
  EXPECT_EQ(f.data_offset() % 32, 0u);
  for (const Want& w : want) {
    SCOPED_TRACE(w.name);
    const GgufTensorInfo& ti = f.tensor(w.name);
    EXPECT_EQ(ti.type, w.type);
    EXPECT_EQ(ti.ne, w.ne);
    EXPECT_EQ(ti.offset, w.offset);
    EXPECT_EQ(ti.file_offset, f.data_offset() + w.offset);
    EXPECT_EQ(ti.nbytes, w.nbytes);
    const auto expect = pattern_bytes(w.nbytes, w.seed);
    ASSERT_EQ(ti.data.size(), w.nbytes);
    EXPECT_EQ(std::memcmp(ti.data.data(), expect.data(), w.nbytes), 0);
    EXPECT_EQ(ti.data.data(), bytes.data() + ti.file_offset);
  }
  EXPECT_EQ(f.tensor("t.q4_1").rows(), 2);
  EXPECT_EQ(f.tensor("t.q4_1").row_bytes(), 20u);
  EXPECT_EQ(f.tensor("t.bf16").elements(), 8);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Gguf, AllTypes, ::testing::Values(2u, 3u));

TEST(GgufSynthetic, GetterErrorsNameTheKey) {
  const GgufFile f = parse(t::sample_all_types(3));
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { f.get_int("missing.key"); }, "'missing.key' is missing");
  expect_error([&] { f.get_int("t.u64"); }, "'t.u64'");  // 1.8e19 does not fit in int64
  expect_error([&] { f.get_string("t.u8"); }, "expected a string");
  expect_error([&] { f.get_bool("t.string"); }, "'t.string': expected a bool");
  expect_error([&] { f.get_float("t.string"); }, "expected a number");
  expect_error([&] { f.get_int_array("a.string"); }, "'a.string': expected an array of integers");
  expect_error([&] { f.get_int_array("a.f32"); }, "array of integers");
  expect_error([&] { f.get_string_array("a.i32"); }, "array of strings");
  expect_error([&] { f.get_float_array("a.nested"); }, "array of numbers");
  expect_error([&] { f.get_array("t.u8"); }, "expected an array");
  expect_error([&] { f.tensor("blk.9.x"); }, "tensor 'blk.9.x' is missing");
  EXPECT_EQ(f.get_int("missing", 7), 7);
  EXPECT_EQ(f.get_float("missing", 0.5), 0.5);
  EXPECT_EQ(f.get_int("t.u8", 7), 200);
}

TEST(GgufSynthetic, AlignmentAndLlamaSample) {
  for (uint32_t version : {2u, 3u}) {
    const GgufFile f = parse(t::sample_llama(version));
    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(f.data_offset() % 64, 0u);
    for (const auto& ti : f.tensors()) EXPECT_EQ(ti.offset % 64, 0u) << ti.name;
    EXPECT_EQ(f.tensor("blk.0.attn_q.weight").offset, 320u);  // 136 and 128 bytes, padded to 64
    EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 4u);
  }
  const GgufFile e = parse(t::sample_empty(3));
  EXPECT_TRUE(e.keys().empty());
  EXPECT_TRUE(e.tensors().empty());
}

// The committed seed corpus is what fuzz/make_gguf_seeds writes.
TEST(GgufSynthetic, SeedCorpusMatchesGenerator) {
  for (const auto& [name, bytes] : t::all_samples()) {
    const std::string path = std::string(INDEXSHARE_SOURCE_DIR) + "/fuzz/seeds/gguf/" + name;
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in.good()) << path << " missing: run make_gguf_seeds (scripts/fuzz.sh)";
    const std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(file, bytes) << path << " differs from tests/gguf_samples.h: regenerate it";
    EXPECT_NO_THROW(parse(file, path));
  }
}

TEST(GgufSynthetic, HeaderErrors) {
  const auto good = t::sample_empty(3);
  auto b = good;
  b[0] = 'X';
  expect_parse_error(b, {"magic", "not a GGUF file"});
  b = good;
  poke<uint32_t>(b, 4, 1);
  expect_parse_error(b, {"version", "version 1"});
  poke<uint32_t>(b, 4, 4);
  expect_parse_error(b, {"version", "unsupported version 4"});
  poke<uint32_t>(b, 4, 0x03000000);
  expect_parse_error(b, {"version", "byte-swapped"});
  b = good;
  poke<uint64_t>(b, 16, uint64_t{1} << 60);
  expect_parse_error(b, {"metadata_kv_count", "count"});
  b = good;
  poke<uint64_t>(b, 8, ~uint64_t{0});
  expect_parse_error(b, {"tensor_count"});
  expect_parse_error(std::vector<uint8_t>(good.begin(), good.begin() + 10), {"truncated"});
  expect_parse_error({}, {"magic", "truncated"});
}

// Builds a file with one hand-made metadata entry, followed by 64 more bytes (so the count
// checks pass and the entry's own fields are what fails) or by nothing at all.
std::vector<uint8_t> with_kv(const std::vector<uint8_t>& entry, bool trailing = true) {
  GgufWriter w;
  w.raw_kv(entry);
  auto b = w.build();
  b.resize(24 + entry.size());
  if (trailing) b.resize(b.size() + 64, 0);
  return b;
}

TEST(GgufSynthetic, MetadataErrors) {
  using t::Bytes;
  expect_parse_error(with_kv(Bytes().put<uint64_t>(1000).buf), {"metadata entry #0", "key", "string length 1000"});
  expect_parse_error(with_kv(Bytes().str("k").put<uint32_t>(13).buf), {"'k'", "unknown value type 13"});
  expect_parse_error(with_kv(Bytes().str("k").put<uint32_t>(t::kGBool).put<uint8_t>(2).buf), {"'k'", "bool", "not 0 or 1"});
  expect_parse_error(with_kv(Bytes().str("k").put<uint32_t>(t::kGArray).put<uint32_t>(t::kGBool).put<uint64_t>(2).put<uint8_t>(1).put<uint8_t>(9).buf),
                     {"'k'", "bool #1"});
  expect_parse_error(with_kv(Bytes().str("k").put<uint32_t>(t::kGArray).put<uint32_t>(t::kGU32).put<uint64_t>(uint64_t{1} << 61).buf),
                     {"'k'", "array count"});
  expect_parse_error(with_kv(Bytes().str("k").put<uint32_t>(t::kGArray).put<uint32_t>(t::kGString).put<uint64_t>(~uint64_t{0} / 2).buf),
                     {"'k'", "array count"});
  expect_parse_error(with_kv(Bytes().str("k").put<uint32_t>(t::kGArray).put<uint32_t>(99).buf), {"array element type", "99"});
  expect_parse_error(with_kv(Bytes().str("k").put<uint32_t>(t::kGString).put<uint64_t>(~uint64_t{0}).buf), {"'k'", "string length"});
  expect_parse_error(with_kv(Bytes().str("k").put<uint32_t>(t::kGU64).put<uint32_t>(7).buf, false),
                     {"'k'", "u64 value", "truncated"});
  // Nesting: depth kGgufMaxArrayDepth parses, one more does not.
  auto nest = [](int depth) {
    std::vector<uint8_t> a = GgufWriter::encode_array<int32_t>(t::kGI32, {1});
    for (int i = 1; i < depth; ++i) a = GgufWriter::encode_nested({a});
    return with_kv(Bytes().str("k").put<uint32_t>(t::kGArray).raw(a).buf);
  };
  EXPECT_NO_THROW(parse(nest(kGgufMaxArrayDepth)));
  expect_parse_error(nest(kGgufMaxArrayDepth + 1), {"nested deeper"});
  // Duplicate keys.
  GgufWriter w;
  w.scalar<uint32_t>("dup", t::kGU32, 1).scalar<uint8_t>("dup", t::kGU8, 2);
  expect_parse_error(w.build(), {"'dup'", "duplicate key"});
}

TEST(GgufSynthetic, AlignmentErrors) {
  auto file_with_alignment = [](auto write) {
    GgufWriter w;
    write(w);
    w.tensor("x", {8}, t::kTF32, pattern_bytes(32, 1));
    return w.build();
  };
  expect_parse_error(file_with_alignment([](GgufWriter& w) { w.scalar<uint32_t>("general.alignment", t::kGU32, 48); }),
                     {"general.alignment", "power of two"});
  expect_parse_error(file_with_alignment([](GgufWriter& w) { w.scalar<uint32_t>("general.alignment", t::kGU32, 0); }),
                     {"general.alignment", "power of two"});
  expect_parse_error(file_with_alignment([](GgufWriter& w) { w.scalar<int32_t>("general.alignment", t::kGI32, -32); }),
                     {"general.alignment", "not positive"});
  expect_parse_error(file_with_alignment([](GgufWriter& w) { w.string("general.alignment", "32"); }),
                     {"general.alignment", "expected an integer"});
  // Any integer width is accepted.
  GgufWriter w(3, 16);
  w.scalar<uint64_t>("general.alignment", t::kGU64, 16).tensor("x", {8}, t::kTF32, pattern_bytes(32, 1));
  EXPECT_EQ(parse(w.build()).alignment(), 16u);
}

std::vector<uint8_t> one_tensor(const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset, size_t data,
                                const std::string& name = "blk.0.w") {
  GgufWriter w;
  w.tensor_info(name, ne, type, offset).data_bytes(data);
  return w.build();
}

TEST(GgufSynthetic, TensorInfoErrors) {
  EXPECT_NO_THROW(parse(one_tensor({32, 2}, t::kTQ4_1, 0, 40)));
  expect_parse_error(one_tensor({32, 2}, 4, 0, 40), {"'blk.0.w'", "unknown ggml tensor type id 4"});
  expect_parse_error(one_tensor({32, 2}, 1000, 0, 40), {"'blk.0.w'", "type id 1000"});
  expect_parse_error(one_tensor({48, 2}, t::kTQ4_1, 0, 64), {"'blk.0.w'", "ne[0] = 48", "q4_1 block size 32"});
  expect_parse_error(one_tensor({1, 1, 1, 1, 1}, t::kTF32, 0, 32), {"'blk.0.w'", "n_dims", "5 dimensions"});
  expect_parse_error(one_tensor({uint64_t{1} << 63}, t::kTF32, 0, 32), {"'blk.0.w'", "ne[0]", "negative"});
  expect_parse_error(one_tensor({uint64_t{1} << 32, uint64_t{1} << 32}, t::kTF32, 0, 32), {"'blk.0.w'", "overflows"});
  expect_parse_error(one_tensor({uint64_t{1} << 61}, t::kTF32, 0, 32), {"'blk.0.w'", "overflows"});  // bytes
  expect_parse_error(one_tensor({8}, t::kTF32, 16, 64), {"'blk.0.w'", "offset 16", "alignment 32"});
  expect_parse_error(one_tensor({32, 2}, t::kTQ4_1, 0, 39), {"'blk.0.w'", "lies outside the file"});
  expect_parse_error(one_tensor({8}, t::kTF32, ~uint64_t{0} / 32 * 32, 32), {"'blk.0.w'", "lies outside the file"});
  expect_parse_error(one_tensor({8}, t::kTF32, 0, 32, std::string(64, 'n')), {"name", "longer than 63"});
  EXPECT_NO_THROW(parse(one_tensor({8}, t::kTF32, 0, 32, std::string(63, 'n'))));
  // Zero-sized and zero-dimensional tensors are valid.
  EXPECT_EQ(parse(one_tensor({0, 5}, t::kTQ8_0, 0, 0)).tensors()[0].nbytes, 0u);
  EXPECT_EQ(parse(one_tensor({}, t::kTF32, 0, 4)).tensors()[0].elements(), 1);

  GgufWriter dup;
  dup.tensor("a", {8}, t::kTF32, pattern_bytes(32, 1)).tensor("a", {8}, t::kTF32, pattern_bytes(32, 1));
  expect_parse_error(dup.build(), {"'a'", "duplicate tensor name"});
  GgufWriter overlap;
  overlap.tensor_info("a", {16}, t::kTF32, 0).tensor_info("b", {8}, t::kTF32, 32).data_bytes(96);
  expect_parse_error(overlap.build(), {"overlaps"});
  const auto llama = t::sample_llama(3);
  expect_parse_error(std::vector<uint8_t>(llama.begin(), llama.begin() + 300), {"truncated"});
}

// Byte flips at every position of every sample, and every truncation: the reader returns or
// throws Error; nothing else (ASan + UBSan builds check memory safety too).
TEST(GgufSynthetic, ByteFlipsAndTruncationsNeverCrash) {
  size_t errors = 0, parsed = 0;
  auto attempt = [&](const std::vector<uint8_t>& b) {
    try {
      const GgufFile f = parse(b);
      for (const auto& k : f.keys()) {
        const GgufValue& v = f.value(k);
        if (const auto* a = std::get_if<GgufArray>(&v.v)) (void)a->elements();
      }
      ++parsed;
    } catch (const Error&) {
      ++errors;
    }
  };
  for (const auto& [name, good] : t::all_samples()) {
    SCOPED_TRACE(name);
    for (size_t i = 0; i < good.size(); ++i) {
      for (uint8_t v : {uint8_t(good[i] ^ 0x80), uint8_t(good[i] ^ 0x01), uint8_t(0x00), uint8_t(0xff)}) {
        if (v == good[i]) continue;
        auto b = good;
        b[i] = v;
        attempt(b);
      }
    }
    // Every prefix that cuts into a header field or tensor data must fail.
    const GgufFile f = parse(good);
    uint64_t end = f.data_offset();
    for (const auto& ti : f.tensors()) end = std::max(end, ti.file_offset + ti.nbytes);
    for (size_t n = 0; n < good.size(); ++n) {
      const std::vector<uint8_t> b(good.begin(), good.begin() + n);
      if (n < end && !f.tensors().empty()) {
        EXPECT_THROW(parse(b), Error) << "prefix " << n;
      } else {
        attempt(b);
      }
    }
  }
  EXPECT_GT(errors, 1000u);  // the flips do reach the checks
  EXPECT_GT(parsed, 100u);   // and flips in payload bytes leave valid files
}

}  // namespace
}  // namespace indexshare::io

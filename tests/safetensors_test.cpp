// safetensors reader/writer: round trips for every dtype, files written by the Python
// `safetensors` package, multi-file models, FP8 block dequantisation, and every kind of
// truncation / corruption raising Error that names the file and tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "ref/safetensors_ref.h"

namespace indexshare::io {
namespace {

namespace fs = std::filesystem;
using ref::st_bytes;

// A fresh empty directory, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("is_st_test_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

template <class T>
std::vector<uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_all(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Expects parse() to throw Error whose text contains every needle.
void expect_parse_error(const std::vector<uint8_t>& bytes, std::vector<std::string> needles) {
  try {
    SafetensorsFile::parse(bytes, "bad.safetensors");
    ADD_FAILURE() << "no Error; expected one mentioning " << needles[0];
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("bad.safetensors"), std::string::npos) << w;
    for (const auto& n : needles) EXPECT_NE(w.find(n), std::string::npos) << "'" << n << "' not in: " << w;
  }
}

TEST(Safetensors, RoundTripEveryDtype) {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  // Hand-encoded codes with known values (1.0, -2.0, 1.5, smallest subnormal / max finite).
  const std::vector<double> f64 = {1.0, -2.5, 1e300, -0.0};
  const std::vector<float> f32 = {1.0f, -2.5f, 3.25e-3f, 65504.0f, -1e-30f, 7.0f};
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x3E00, 0x0001, 0x7BFF, 0xFC00};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC000, 0x3FC0, 0x0001, 0x7F7F, 0x7F80};
  const std::vector<uint8_t> f8 = {0x38, 0xC0, 0x3C, 0x01, 0x7E, 0xFE};
  const std::vector<int64_t> i64 = {-(int64_t{1} << 40), 0, 7, INT64_MAX};
  const std::vector<int32_t> i32 = {-5, 0, 2147483647, 3};
  const std::vector<int16_t> i16 = {-32768, 1, 2, 3};
  const std::vector<int8_t> i8 = {-128, 127, 0, 1};
  const std::vector<uint8_t> u8 = {0, 255, 17, 1};
  const std::vector<uint8_t> bo = {0, 1, 1, 0};
  const auto b64 = as_bytes(f64), b32 = as_bytes(f32), b16 = as_bytes(f16), bb16 = as_bytes(bf16),
             bi64 = as_bytes(i64), bi32 = as_bytes(i32), bi16 = as_bytes(i16), bi8 = as_bytes(i8);
  std::vector<StWriteTensor> ts = {
      {"f64", StDType::kF64, {2, 2}, b64},   {"f32", StDType::kF32, {2, 3}, b32},
      {"f16", StDType::kF16, {6}, b16},      {"bf16", StDType::kBF16, {3, 2}, bb16},
      {"f8", StDType::kF8E4M3, {6}, f8},     {"i64", StDType::kI64, {4}, bi64},
      {"i32", StDType::kI32, {2, 2}, bi32},  {"i16", StDType::kI16, {4}, bi16},
      {"i8", StDType::kI8, {4}, bi8},        {"u8", StDType::kU8, {4}, u8},
      {"bool", StDType::kBool, {4}, bo},     {"empty", StDType::kF32, {0, 5}, {}},
      {"scalar", StDType::kF32, {}, std::span<const uint8_t>(b32).first(4)},
  };
  write_safetensors(path, ts, {{"format", "pt"}, {"note", "é ünïcode"}});

  // Layout: 8-byte LE length, header padded to 8, data right after.
  const auto raw = read_all(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | raw[i];
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw[8], '{');

  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "é ünïcode");
  ASSERT_EQ(f.tensors().size(), ts.size());
  for (const auto& w : ts) {
    SCOPED_TRACE(w.name);
    const StTensorInfo& t = f.tensor(w.name);
    EXPECT_EQ(t.dtype, w.dtype);
    EXPECT_EQ(t.shape, w.shape);
    ASSERT_EQ(t.data.size(), w.bytes.size());
    EXPECT_TRUE(std::equal(t.data.begin(), t.data.end(), w.bytes.begin()));
  }
  auto near = [](const std::vector<float>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::isnan(want[i])) {
        EXPECT_TRUE(std::isnan(got[i]));
      } else {
        EXPECT_EQ(got[i], static_cast<float>(want[i])) << i;
      }
    }
  };
  std::vector<double> w;
  for (auto c : f16) w.push_back(ref::f16_ref(c));
  near(f.read_f32("f16"), w);
  w.clear();
  for (auto c : bf16) w.push_back(ref::bf16_ref(c));
  near(f.read_f32("bf16"), w);
  w.clear();
  for (auto c : f8) w.push_back(ref::fp8e4m3_ref(c));
  near(f.read_f32("f8"), w);
  EXPECT_EQ(f.read_f32("f8")[0], 1.0f);
  EXPECT_EQ(f.read_f32("f8")[1], -2.0f);
  EXPECT_EQ(f.read_f32("f8")[4], 448.0f);
  near(f.read_f32("f64"), {1.0, -2.5, INFINITY, -0.0});
  EXPECT_EQ(f.read_f32("f32"), f32);
  EXPECT_EQ(f.read_i64("i64"), i64);
  EXPECT_EQ(f.read_i64("i32"), (std::vector<int64_t>{-5, 0, 2147483647, 3}));
  EXPECT_EQ(f.read_i64("i16"), (std::vector<int64_t>{-32768, 1, 2, 3}));
  EXPECT_EQ(f.read_i64("i8"), (std::vector<int64_t>{-128, 127, 0, 1}));
  EXPECT_EQ(f.read_i64("u8"), (std::vector<int64_t>{0, 255, 17, 1}));
  EXPECT_EQ(f.read_i64("bool"), (std::vector<int64_t>{0, 1, 1, 0}));
  EXPECT_TRUE(f.read_f32("empty").empty());
  EXPECT_EQ(f.read_f32("scalar"), std::vector<float>{1.0f});
  EXPECT_THROW(f.read_i64("f32"), Error);
  EXPECT_EQ(f.find("nope"), nullptr);
  try {
    f.tensor("nope");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"nope\""), std::string::npos);
  }
}

TEST(Safetensors, ReadsFilesWrittenByPythonSafetensors) {
  // Written on the H200 machine by safetensors.torch.save_file (an independent writer).
  const std::string p = std::string(INDEXSHARE_SOURCE_DIR) +
                        "/tests/data/dsa_fixtures/glm_moe_dsa/all_full/ref.safetensors";
  const auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f.metadata().at("schedule"), "FFFFFFF");
  const auto& ids = f.tensor("input_ids");
  EXPECT_EQ(ids.dtype, StDType::kI64);
  EXPECT_EQ(ids.shape, (std::vector<int64_t>{1, 64}));
  for (int64_t v : f.read_i64("input_ids")) EXPECT_TRUE(v >= 0 && v < 256);
  EXPECT_EQ(f.tensor("topk.0").dtype, StDType::kI32);
  const auto logits = f.read_f32("logits");
  EXPECT_EQ(logits.size(), 64u * 256u);
  for (float x : logits) EXPECT_TRUE(std::isfinite(x));
}

TEST(Safetensors, WriterReplacesAtomicallyAndRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  std::vector<float> a = {1, 2, 3, 4};
  write_safetensors(path, {st_f32("a", {4}, a)});
  std::vector<float> b = {5, 6};
  write_safetensors(path, {st_f32("b", {2}, b)});
  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.find("a"), nullptr);
  EXPECT_EQ(f.read_f32("b"), b);

  auto expect_write_error = [&](const std::vector<StWriteTensor>& ts, const std::string& needle) {
    try {
      write_safetensors(path, ts);
      ADD_FAILURE() << "no Error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_write_error({st_f32("x", {3}, a)}, "\"x\"");                       // size mismatch
  expect_write_error({st_f32("x", {4}, a), st_f32("x", {4}, a)}, "twice");  // duplicate
  expect_write_error({st_f32("__metadata__", {4}, a)}, "invalid tensor name");
  // The old file is untouched and no temporary file was left behind.
  EXPECT_EQ(SafetensorsFile::open(path).read_f32("b"), b);
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
  EXPECT_EQ(files, 1u);
  EXPECT_THROW(write_safetensors(dir.file("no/such/dir/x.safetensors"), {st_f32("a", {4}, a)}),
               Error);
}

TEST(Safetensors, EveryTruncationIsAnError) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  std::vector<float> a = {1, 2, 3}, b = {4, 5};
  write_safetensors(path, {st_f32("a", {3}, a), st_f32("b", {2}, b)}, {{"k", "v"}});
  const auto full = read_all(path);
  EXPECT_NO_THROW(SafetensorsFile::parse(full, "ok"));
  for (size_t len = 0; len < full.size(); ++len) {
    SCOPED_TRACE(len);
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<long>(len));
    EXPECT_THROW(SafetensorsFile::parse(cut, "cut"), Error);
  }
  // Also through the file path (mmap), including an empty file.
  write_all(dir.file("empty.safetensors"), {});
  EXPECT_THROW(SafetensorsFile::open(dir.file("empty.safetensors")), Error);
  EXPECT_THROW(SafetensorsFile::open(dir.file("missing.safetensors")), Error);
}

TEST(Safetensors, CorruptHeadersNameTheProblem) {
  const std::vector<uint8_t> d16(16, 0);
  auto one = [](const std::string& body) { return "{\"w\":" + body + "}"; };
  // Header length past the end of the file.
  {
    auto b = st_bytes("{}", {});
    b[0] = 200;
    expect_parse_error(b, {"header length", "truncated"});
  }
  {
    auto b = st_bytes("{}", {});
    for (int i = 0; i < 8; ++i) b[i] = 0xff;
    expect_parse_error(b, {"header length"});
  }
  expect_parse_error(st_bytes("{\"w\": ", {}), {"not valid JSON"});
  expect_parse_error(st_bytes("[1,2]", {}), {"JSON object"});
  expect_parse_error(st_bytes(one("3"), d16), {"\"w\"", "object"});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F32\",\"shape\":[4]}"), d16), {"\"w\"", "data_offsets"});
  expect_parse_error(st_bytes(one("{\"dtype\":5,\"shape\":[4],\"data_offsets\":[0,16]}"), d16),
                     {"\"w\"", "dtype must be a string"});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,16]}"), d16),
                     {"\"w\"", "unknown dtype \"F4\""});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}"), d16),
                     {"\"w\"", "shape must be an array"});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}"), d16),
                     {"\"w\"", "non-negative"});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,16]}"), d16),
                     {"\"w\"", "non-negative integer"});
  expect_parse_error(
      st_bytes(one("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}"),
               d16),
      {"\"w\"", "overflows"});
  expect_parse_error(
      st_bytes(one("{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,16]}"),
               d16),
      {"\"w\""});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}"), d16),
                     {"\"w\"", "two integers"});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}"), d16),
                     {"\"w\"", "end before begin"});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}"), d16),
                     {"\"w\"", "outside the data section"});
  expect_parse_error(st_bytes(one("{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}"), d16),
                     {"\"w\"", "needs 3 x 4"});
  expect_parse_error(
      st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
               d16),
      {"\"a\"", "\"b\"", "overlap"});
  expect_parse_error(st_bytes("{\"__metadata__\":{\"k\":1}}", {}), {"__metadata__", "\"k\""});
  expect_parse_error(st_bytes("{\"__metadata__\":[]}", {}), {"__metadata__"});
  expect_parse_error(
      st_bytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               d16),
      {"\"w\"", "twice"});
  expect_parse_error(st_bytes(one(std::string(50, '[') + std::string(50, ']')), d16), {"deeper"});
  // A valid minimal file for contrast (trailing bytes after the last tensor are tolerated).
  EXPECT_NO_THROW(SafetensorsFile::parse(
      st_bytes(one("{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}"), d16), "ok"));
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  TempDir dir;
  const std::string path = dir.file("r.safetensors");
  std::vector<float> a(12, 1.5f), b(3, -2.0f);
  write_safetensors(path, {st_f32("layer.a", {3, 4}, a), st_f32("layer.b", {3}, b)}, {{"m", "x"}});
  const auto good = read_all(path);
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  int errors = 0;
  for (int it = 0; it < 3000; ++it) {
    auto b2 = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) b2[rng() % b2.size()] = static_cast<uint8_t>(rng());
    try {
      const auto f = SafetensorsFile::parse(b2, "mut");
      for (const auto& t : f.tensors()) {
        std::vector<float> out(static_cast<size_t>(t.elements()));
        f.read_f32(t, out);
      }
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

TEST(Safetensors, ShardedModelAndIndexErrors) {
  TempDir dir;
  std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_safetensors(dir.file("s1.safetensors"), {st_f32("a", {2}, a)});
  write_safetensors(dir.file("s2.safetensors"), {st_f32("b", {3}, b)});
  auto index = [&](const std::string& body) {
    std::ofstream(dir.file("model.safetensors.index.json")) << body;
  };
  index(R"({"metadata": {"total_size": 20}, "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  const auto m = SafetensorsModel::open(dir.path.string());
  EXPECT_EQ(m.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.read_f32("b"), b);
  EXPECT_EQ(m.read_f32("a", {2}), a);
  try {
    m.read_f32("b", {1, 3});
    ADD_FAILURE();
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("\"b\""), std::string::npos) << w;
    EXPECT_NE(w.find("[3]"), std::string::npos) << w;
    EXPECT_NE(w.find("[1, 3]"), std::string::npos) << w;
  }
  try {
    m.read_f32("c");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"c\""), std::string::npos);
  }
  index(R"({"weight_map": {"a": "s2.safetensors"}})");
  EXPECT_THROW(SafetensorsModel::open(dir.path.string()), Error);
  index(R"({"weight_map": {"a": "../s1.safetensors"}})");
  EXPECT_THROW(SafetensorsModel::open(dir.path.string()), Error);
  index(R"({"weight_map": {"a": 3}})");
  EXPECT_THROW(SafetensorsModel::open(dir.path.string()), Error);
  index(R"({"weight_map": {"a": "missing.safetensors"}})");
  EXPECT_THROW(SafetensorsModel::open(dir.path.string()), Error);
  index("{not json");
  EXPECT_THROW(SafetensorsModel::open(dir.path.string()), Error);
  // A directory without either file.
  TempDir empty;
  EXPECT_THROW(SafetensorsModel::open(empty.path.string()), Error);
  // A single file path works too.
  EXPECT_EQ(SafetensorsModel::open(dir.file("s1.safetensors")).read_f32("a"), a);
}

TEST(Safetensors, Fp8BlockScaledWeightsDequantiseOnLoad) {
  TempDir dir;
  const int64_t rows = 130, cols = 260;  // partial blocks on both axes
  std::random_device rd;
  const unsigned seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::vector<uint8_t> q(rows * cols);
  for (auto& c : q) {
    c = static_cast<uint8_t>(rng());
    if ((c & 0x7f) == 0x7f) c = 0x00;  // avoid NaN codes
  }
  const int64_t br = 2, bc = 3;
  std::vector<float> scale(br * bc);
  for (auto& s : scale) s = std::ldexp(1.0f + static_cast<float>(rng() % 100) / 100.0f, -3);
  const auto sb = as_bytes(scale);
  write_safetensors(dir.file("model.safetensors"),
                    {{"l.weight", StDType::kF8E4M3, {rows, cols}, q},
                     {"l.weight_scale_inv", StDType::kF32, {br, bc}, sb},
                     {"plain", StDType::kF8E4M3, {4}, std::span<const uint8_t>(q).first(4)}});
  const auto m = SafetensorsModel::open(dir.path.string());
  const auto w = m.read_f32("l.weight", {rows, cols});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double want = ref::fp8e4m3_ref(q[r * cols + c]) * scale[(r / 128) * bc + c / 128];
      ASSERT_EQ(w[r * cols + c], static_cast<float>(want)) << r << "," << c;
    }
  // Without a scale companion an FP8 tensor converts by value.
  const auto p = m.read_f32("plain");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(p[i], static_cast<float>(ref::fp8e4m3_ref(q[i])));
  // A scale of the wrong shape is an Error naming it.
  TempDir dir2;
  write_safetensors(dir2.file("model.safetensors"),
                    {{"l.weight", StDType::kF8E4M3, {rows, cols}, q},
                     {"l.weight_scale_inv", StDType::kF32, {bc, br}, sb}});
  try {
    SafetensorsModel::open(dir2.path.string()).read_f32("l.weight");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight_scale_inv"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace indexshare::io

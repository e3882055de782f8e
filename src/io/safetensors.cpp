#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/dtype.h"
#include "core/error.h"

namespace indexshare::io {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the format's own limit
constexpr int kMaxJsonDepth = 8;                   // header nesting is at most 3 deep

struct DTypeRow {
  StDType t;
  const char* name;
  int size;
  bool is_float;
};
constexpr DTypeRow kDTypes[] = {
    {StDType::kF64, "F64", 8, true},      {StDType::kF32, "F32", 4, true},
    {StDType::kF16, "F16", 2, true},      {StDType::kBF16, "BF16", 2, true},
    {StDType::kF8E4M3, "F8_E4M3", 1, true}, {StDType::kI64, "I64", 8, false},
    {StDType::kI32, "I32", 4, false},     {StDType::kI16, "I16", 2, false},
    {StDType::kI8, "I8", 1, false},       {StDType::kU8, "U8", 1, false},
    {StDType::kBool, "BOOL", 1, false},
};

const DTypeRow& row(StDType t) {
  for (const auto& r : kDTypes)
    if (r.t == t) return r;
  fail("safetensors: unknown dtype code ", static_cast<int>(t));
}

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Non-negative JSON integer, else Error naming `what`.
uint64_t as_u64(const json& v, const std::string& file, const std::string& what) {
  IS_CHECK(v.is_number_unsigned(), file, ": ", what, " must be a non-negative integer, got ",
           v.type_name());
  return v.get<uint64_t>();
}

double element_to_f64(StDType t, const uint8_t* p) {
  switch (t) {
    case StDType::kF64: return load<double>(p);
    case StDType::kF32: return load<float>(p);
    case StDType::kF16: return f16_to_f32(load<uint16_t>(p));
    case StDType::kBF16: return bf16_to_f32(load<uint16_t>(p));
    case StDType::kF8E4M3: return fp8e4m3_to_f32(*p);
    case StDType::kI64: return static_cast<double>(load<int64_t>(p));
    case StDType::kI32: return load<int32_t>(p);
    case StDType::kI16: return load<int16_t>(p);
    case StDType::kI8: return static_cast<int8_t>(*p);
    case StDType::kU8: return *p;
    case StDType::kBool: return *p != 0;
  }
  return 0;
}

}  // namespace

std::string_view st_dtype_name(StDType t) { return row(t).name; }
int st_dtype_size(StDType t) { return row(t).size; }
bool st_dtype_is_float(StDType t) { return row(t).is_float; }

std::optional<StDType> parse_st_dtype(std::string_view name) {
  for (const auto& r : kDTypes)
    if (name == r.name) return r.t;
  return std::nullopt;
}

int64_t StTensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path);
  SafetensorsFile f = parse(file->bytes(), path);
  f.file_ = std::move(file);
  return f;
}

SafetensorsFile SafetensorsFile::parse(std::span<const uint8_t> bytes, const std::string& name) {
  SafetensorsFile f;
  f.name_ = name;
  IS_CHECK(bytes.size() >= 8, name, ": ", bytes.size(),
           " bytes is too short for a safetensors header length (8 bytes): truncated");
  const uint64_t n = read_u64_le(bytes.data());
  IS_CHECK(n <= kMaxHeaderBytes, name, ": header length ", n, " exceeds the ", kMaxHeaderBytes,
           "-byte limit: corrupt");
  IS_CHECK(n <= bytes.size() - 8, name, ": header length ", n, " runs past the end of the file (",
           bytes.size(), " bytes): truncated or corrupt");
  const uint8_t* hb = bytes.data() + 8;
  const std::span<const uint8_t> data = bytes.subspan(8 + n);

  std::set<std::string> top_keys;
  json header;
  try {
    json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
      if (depth > kMaxJsonDepth) fail(name, ": header JSON nested deeper than ", kMaxJsonDepth);
      if (ev == json::parse_event_t::key && depth == 1) {
        const std::string key = parsed.get<std::string>();
        if (!top_keys.insert(key).second) fail(name, ": header lists \"", key, "\" twice");
      }
      return true;
    };
    header = json::parse(hb, hb + n, cb);
  } catch (const json::exception& e) {
    fail(name, ": header is not valid JSON: ", e.what());
  }
  IS_CHECK(header.is_object(), name, ": header must be a JSON object, got ", header.type_name());

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      IS_CHECK(v.is_object(), name, ": __metadata__ must be an object of strings, got ",
               v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        IS_CHECK(m.value().is_string(), name, ": __metadata__ entry \"", m.key(),
                 "\" must be a string, got ", m.value().type_name());
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = cat("tensor \"", key, "\"");
    IS_CHECK(v.is_object(), name, ": ", where, ": entry must be an object, got ", v.type_name());
    IS_CHECK(v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"), name, ": ",
             where, ": entry needs dtype, shape and data_offsets");
    const json& jd = v["dtype"];
    IS_CHECK(jd.is_string(), name, ": ", where, ": dtype must be a string, got ", jd.type_name());
    const std::string ds = jd.get<std::string>();
    const auto dt = parse_st_dtype(ds);
    IS_CHECK(dt.has_value(), name, ": ", where, ": unknown dtype \"", ds, "\"");
    StTensorInfo t;
    t.name = key;
    t.dtype = *dt;
    const json& js = v["shape"];
    IS_CHECK(js.is_array(), name, ": ", where, ": shape must be an array, got ", js.type_name());
    uint64_t count = 1;
    for (const json& d : js) {
      const uint64_t dim = as_u64(d, name, where + " shape entry");
      IS_CHECK(dim <= static_cast<uint64_t>(INT64_MAX) && !__builtin_mul_overflow(count, dim, &count),
               name, ": ", where, ": shape overflows 64 bits");
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& jo = v["data_offsets"];
    IS_CHECK(jo.is_array() && jo.size() == 2, name, ": ", where,
             ": data_offsets must be an array of two integers");
    t.begin = as_u64(jo[0], name, where + " data_offsets[0]");
    t.end = as_u64(jo[1], name, where + " data_offsets[1]");
    IS_CHECK(t.begin <= t.end, name, ": ", where, ": data_offsets [", t.begin, ", ", t.end,
             "] end before begin");
    IS_CHECK(t.end <= data.size(), name, ": ", where, ": data_offsets [", t.begin, ", ", t.end,
             ") lie outside the data section (", data.size(), " bytes): truncated or corrupt");
    uint64_t nbytes = 0;
    IS_CHECK(!__builtin_mul_overflow(count, static_cast<uint64_t>(st_dtype_size(t.dtype)), &nbytes) &&
                 nbytes == t.end - t.begin,
             name, ": ", where, ": data_offsets span ", t.end - t.begin, " bytes but shape x ", ds,
             " needs ", count, " x ", st_dtype_size(t.dtype));
    IS_CHECK(count <= static_cast<uint64_t>(INT64_MAX), name, ": ", where, ": too many elements");
    t.data = data.subspan(t.begin, t.end - t.begin);
    f.tensors_.push_back(std::move(t));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < f.tensors_.size(); ++i) {
    const auto& a = f.tensors_[i - 1];
    const auto& b = f.tensors_[i];
    IS_CHECK(a.end <= b.begin, name, ": tensors \"", a.name, "\" [", a.begin, ", ", a.end,
             ") and \"", b.name, "\" [", b.begin, ", ", b.end, ") overlap");
  }
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  return f;
}

const StTensorInfo* SafetensorsFile::find(std::string_view tensor) const {
  auto it = index_.find(std::string(tensor));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const StTensorInfo& SafetensorsFile::tensor(std::string_view tensor) const {
  const StTensorInfo* t = find(tensor);
  IS_CHECK(t != nullptr, name_, ": no tensor \"", tensor, "\"");
  return *t;
}

void SafetensorsFile::read_f32(const StTensorInfo& t, std::span<float> out) const {
  const int64_t n = t.elements();
  IS_CHECK(static_cast<int64_t>(out.size()) == n, name_, ": tensor \"", t.name, "\": output holds ",
           out.size(), " floats, tensor has ", n);
  const uint8_t* p = t.data.data();
  if (t.dtype == StDType::kF32) {
    if (n > 0) std::memcpy(out.data(), p, static_cast<size_t>(n) * 4);
    return;
  }
  const int es = st_dtype_size(t.dtype);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(element_to_f64(t.dtype, p + i * es));
}

std::vector<float> SafetensorsFile::read_f32(std::string_view tensor) const {
  const StTensorInfo& t = this->tensor(tensor);
  std::vector<float> out(static_cast<size_t>(t.elements()));
  read_f32(t, out);
  return out;
}

std::vector<int64_t> SafetensorsFile::read_i64(std::string_view tensor) const {
  const StTensorInfo& t = this->tensor(tensor);
  IS_CHECK(!st_dtype_is_float(t.dtype), name_, ": tensor \"", t.name, "\" is ",
           st_dtype_name(t.dtype), ", not an integer type");
  const int64_t n = t.elements();
  const int es = st_dtype_size(t.dtype);
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = t.data.data() + i * es;
    out[i] = t.dtype == StDType::kI64 ? load<int64_t>(p)
                                      : static_cast<int64_t>(element_to_f64(t.dtype, p));
  }
  return out;
}

// ---- writer ----

StWriteTensor st_f32(std::string name, std::vector<int64_t> shape, std::span<const float> data) {
  return {std::move(name), StDType::kF32, std::move(shape),
          {reinterpret_cast<const uint8_t*>(data.data()), data.size() * sizeof(float)}};
}

void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    IS_CHECK(!t.name.empty() && t.name != "__metadata__", path, ": invalid tensor name \"",
             t.name, "\"");
    IS_CHECK(seen.insert(t.name).second, path, ": tensor \"", t.name, "\" given twice");
    uint64_t count = 1;
    for (int64_t d : t.shape) {
      IS_CHECK(d >= 0, path, ": tensor \"", t.name, "\": negative dimension ", d);
      count *= static_cast<uint64_t>(d);
    }
    const uint64_t nbytes = count * static_cast<uint64_t>(st_dtype_size(t.dtype));
    IS_CHECK(nbytes == t.bytes.size(), path, ": tensor \"", t.name, "\": shape x ",
             st_dtype_name(t.dtype), " needs ", nbytes, " bytes, got ", t.bytes.size());
    header[t.name] = {{"dtype", std::string(st_dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string hs = header.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');

  std::string tmpl = path + ".tmpXXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  IS_CHECK(fd >= 0, path, ": cannot create a temporary file beside it: ", std::strerror(errno));
  auto bail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    fail(path, ": ", what, ": ", std::strerror(err));
  };
  auto put = [&](const void* p, size_t len) {
    const char* c = static_cast<const char*>(p);
    while (len > 0) {
      const ssize_t w = ::write(fd, c, len);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) bail("write failed");
      c += w;
      len -= static_cast<size_t>(w);
    }
  };
  uint8_t lenbuf[8];
  uint64_t hl = hs.size();
  for (int i = 0; i < 8; ++i) lenbuf[i] = static_cast<uint8_t>(hl >> (8 * i));
  put(lenbuf, 8);
  put(hs.data(), hs.size());
  for (const auto& t : tensors)
    if (!t.bytes.empty()) put(t.bytes.data(), t.bytes.size());
  if (::fchmod(fd, 0644) != 0) bail("chmod failed");
  if (::fsync(fd) != 0) bail("fsync failed");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    fail(path, ": close failed: ", std::strerror(err));
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    fail(path, ": cannot rename the temporary file into place: ", std::strerror(err));
  }
}

// ---- multi-file model ----

void dequant_fp8_block(std::span<const uint8_t> q, std::span<const float> scale, int64_t rows,
                       int64_t cols, int64_t block, std::span<float> out) {
  IS_CHECK(rows >= 0 && cols >= 0 && block > 0, "dequant_fp8_block: bad rows/cols/block ", rows,
           "/", cols, "/", block);
  const int64_t br = (rows + block - 1) / block, bc = (cols + block - 1) / block;
  IS_CHECK(static_cast<int64_t>(q.size()) == rows * cols, "dequant_fp8_block: q holds ", q.size(),
           " bytes, expected ", rows * cols);
  IS_CHECK(static_cast<int64_t>(scale.size()) == br * bc, "dequant_fp8_block: scale holds ",
           scale.size(), " floats, expected ", br, " x ", bc);
  IS_CHECK(static_cast<int64_t>(out.size()) == rows * cols, "dequant_fp8_block: out holds ",
           out.size(), " floats, expected ", rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = fp8e4m3_to_f32(q[r * cols + c]) * scale[(r / block) * bc + c / block];
}

SafetensorsModel SafetensorsModel::open(const std::string& path) {
  namespace fs = std::filesystem;
  SafetensorsModel m;
  m.path_ = path;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    m.files_.push_back(SafetensorsFile::open(path));
    const auto& ts = m.files_[0].tensors();
    for (size_t i = 0; i < ts.size(); ++i) m.where_[ts[i].name] = {0, i};
    return m;
  }
  const fs::path dir(path);
  const fs::path index = dir / "model.safetensors.index.json";
  if (!fs::exists(index, ec)) {
    const fs::path single = dir / "model.safetensors";
    IS_CHECK(fs::exists(single, ec), path,
             ": neither model.safetensors.index.json nor model.safetensors found");
    return open(single.string());
  }
  const std::string ip = index.string();
  json j;
  try {
    j = json::parse(read_text_file(ip));
  } catch (const json::exception& e) {
    fail(ip, ": not valid JSON: ", e.what());
  }
  IS_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), ip,
           ": needs an object \"weight_map\" {tensor: shard file}");
  std::map<std::string, size_t> shard_ids;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    IS_CHECK(it.value().is_string(), ip, ": weight_map entry \"", it.key(),
             "\" must be a file name string");
    const std::string shard = it.value().get<std::string>();
    IS_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." &&
                 shard != "..",
             ip, ": weight_map entry \"", it.key(), "\": shard \"", shard,
             "\" must be a plain file name in the model directory");
    auto [sit, added] = shard_ids.emplace(shard, m.files_.size());
    if (added) m.files_.push_back(SafetensorsFile::open((dir / shard).string()));
    const SafetensorsFile& f = m.files_[sit->second];
    const StTensorInfo* t = f.find(it.key());
    IS_CHECK(t != nullptr, ip, ": tensor \"", it.key(), "\" is mapped to ", shard,
             ", which does not hold it");
    m.where_[it.key()] = {sit->second, static_cast<size_t>(t - f.tensors().data())};
  }
  return m;
}

bool SafetensorsModel::has(std::string_view tensor) const {
  return where_.count(std::string(tensor)) != 0;
}

const StTensorInfo& SafetensorsModel::info(std::string_view tensor) const {
  auto it = where_.find(std::string(tensor));
  IS_CHECK(it != where_.end(), path_, ": missing tensor \"", tensor, "\"");
  return files_[it->second.first].tensors()[it->second.second];
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [k, v] : where_) out.push_back(k);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<float> SafetensorsModel::read_f32(std::string_view tensor) const {
  auto it = where_.find(std::string(tensor));
  IS_CHECK(it != where_.end(), path_, ": missing tensor \"", tensor, "\"");
  const SafetensorsFile& f = files_[it->second.first];
  const StTensorInfo& t = f.tensors()[it->second.second];
  const std::string name(tensor);
  constexpr std::string_view kSuffix = ".weight";
  const bool is_weight = name.size() > kSuffix.size() &&
                         name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
  const std::string scale_name = name + "_scale_inv";
  if (t.dtype == StDType::kF8E4M3 && is_weight && has(scale_name)) {
    IS_CHECK(t.shape.size() == 2, f.name(), ": tensor \"", name,
             "\": a block-scaled FP8 weight must be 2-D, has ", t.shape.size(), " dims");
    const int64_t rows = t.shape[0], cols = t.shape[1];
    const StTensorInfo& s = info(scale_name);
    const int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
    IS_CHECK(s.shape.size() == 2 && s.shape[0] == br && s.shape[1] == bc, f.name(), ": tensor \"",
             scale_name, "\": expected shape [", br, ", ", bc, "] for weight [", rows, ", ", cols,
             "]");
    const std::vector<float> scale = read_f32(scale_name);
    std::vector<float> out(static_cast<size_t>(rows * cols));
    dequant_fp8_block(t.data, scale, rows, cols, 128, out);
    return out;
  }
  std::vector<float> out(static_cast<size_t>(t.elements()));
  f.read_f32(t, out);
  return out;
}

std::vector<float> SafetensorsModel::read_f32(std::string_view tensor,
                                              const std::vector<int64_t>& shape) const {
  const StTensorInfo& t = info(tensor);
  if (t.shape != shape) {
    auto fmt = [](const std::vector<int64_t>& s) {
      std::string r = "[";
      for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
      return r + "]";
    };
    fail(path_, ": tensor \"", tensor, "\" has shape ", fmt(t.shape), ", expected ", fmt(shape));
  }
  return read_f32(tensor);
}

}  // namespace indexshare::io

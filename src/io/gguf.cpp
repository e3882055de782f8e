#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>

#include "core/error.h"

namespace indexshare::io {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

namespace {

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
// Smallest encodings, used to bound counts by the bytes that remain.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;              // empty key, type, one-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims 0, type, offset
constexpr uint64_t kMinArrayBytes = 4 + 8;               // element type and count
constexpr uint64_t kMinStringBytes = 8;                  // length of an empty string

// Encoded size of a fixed-size value type; 0 for string and array.
uint64_t fixed_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64: return 8;
    case GgufValueType::kString: case GgufValueType::kArray: return 0;
  }
  return 0;
}

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

bool is_float(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

// A bounds-checked little-endian reader over one buffer. Errors name the file, the current
// context (the key or tensor being read), the field and the byte offset.
class Cursor {
 public:
  static constexpr uint64_t kNoIndex = ~uint64_t{0};

  Cursor(std::span<const uint8_t> bytes, const std::string& file) : bytes_(bytes), file_(file) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return bytes_.size() - pos_; }
  // What is being read, for error messages (formatted only when an error is raised): e.g.
  // ("tensor info", 3, "blk.0.attn_q.weight") or ("header").
  void set_context(const char* kind, uint64_t index = kNoIndex, std::string_view name = {}) {
    ctx_kind_ = kind;
    ctx_index_ = index;
    ctx_name_ = name;
  }
  std::span<const uint8_t> slice(uint64_t begin, uint64_t end) const {
    return bytes_.subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin));
  }

  [[noreturn]] void error(std::string_view field, const std::string& problem) const {
    std::string ctx = ctx_kind_;
    if (ctx_index_ != kNoIndex) ctx += cat(" #", ctx_index_);
    if (!ctx_name_.empty()) ctx += cat(" '", ctx_name_, "'");
    fail(file_, ": ", ctx, ctx.empty() ? "" : ": ", field, ": ", problem, " (at byte ", pos_, ")");
  }

  void need(uint64_t n, std::string_view field) const {
    if (n > left()) {
      error(field, cat("needs ", n, " bytes but only ", left(), " remain (truncated or corrupt)"));
    }
  }

  template <class T>
  T read(std::string_view field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::span<const uint8_t> take(uint64_t n, std::string_view field) {
    need(n, field);
    const std::span<const uint8_t> s = slice(pos_, pos_ + n);
    pos_ += n;
    return s;
  }

  std::string_view read_string(std::string_view field) {
    const uint64_t n = read<uint64_t>(field);
    if (n > left()) {
      error(field, cat("string length ", n, " exceeds the ", left(), " bytes that remain"));
    }
    const std::span<const uint8_t> s = take(n, field);
    return {reinterpret_cast<const char*>(s.data()), s.size()};
  }

  // Bounds a count of elements of at least `min_bytes` each by the bytes that remain, so no
  // corrupt count can drive a large allocation or a long loop.
  void check_count(uint64_t count, uint64_t min_bytes, std::string_view field) const {
    if (count > left() / min_bytes) {
      error(field, cat("count ", count, " needs at least ", min_bytes, " bytes per element but only ",
                       left(), " bytes remain (truncated or corrupt)"));
    }
  }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& file_;
  const char* ctx_kind_ = "";
  uint64_t ctx_index_ = kNoIndex;
  std::string_view ctx_name_;
  uint64_t pos_ = 0;
};

GgufValueType read_value_type(Cursor& c, std::string_view field) {
  const uint32_t t = c.read<uint32_t>(field);
  if (!known_value_type(t)) c.error(field, cat("unknown value type ", t));
  return static_cast<GgufValueType>(t);
}

// Reads an array body (element type, count, elements) at nesting level `depth` (1 = a
// top-level array), validating every element; returns a view of the encoded elements.
GgufArray parse_array(Cursor& c, int depth) {
  if (depth > kGgufMaxArrayDepth) {
    c.error("array", cat("arrays nested deeper than ", kGgufMaxArrayDepth, " levels"));
  }
  GgufArray a;
  a.elem_type = read_value_type(c, "array element type");
  a.count = c.read<uint64_t>("array count");
  const uint64_t begin = c.pos();
  if (const uint64_t size = fixed_size(a.elem_type); size > 0) {
    c.check_count(a.count, size, "array count");
    const std::span<const uint8_t> raw = c.take(a.count * size, "array elements");
    if (a.elem_type == GgufValueType::kBool) {
      for (uint64_t i = 0; i < a.count; ++i) {
        if (raw[i] > 1) {
          c.error("array element", cat("bool #", i, " is ", int{raw[i]}, ", not 0 or 1"));
        }
      }
    }
  } else if (a.elem_type == GgufValueType::kString) {
    c.check_count(a.count, kMinStringBytes, "array count");
    for (uint64_t i = 0; i < a.count; ++i) c.read_string("array string element");
  } else {
    c.check_count(a.count, kMinArrayBytes, "array count");
    for (uint64_t i = 0; i < a.count; ++i) parse_array(c, depth + 1);
  }
  a.bytes = c.slice(begin, c.pos());
  return a;
}

GgufValue parse_value(Cursor& c, GgufValueType type, int depth) {
  GgufValue out;
  out.type = type;
  switch (type) {
    case GgufValueType::kUint8: out.v = uint64_t{c.read<uint8_t>("u8 value")}; break;
    case GgufValueType::kInt8: out.v = int64_t{c.read<int8_t>("i8 value")}; break;
    case GgufValueType::kUint16: out.v = uint64_t{c.read<uint16_t>("u16 value")}; break;
    case GgufValueType::kInt16: out.v = int64_t{c.read<int16_t>("i16 value")}; break;
    case GgufValueType::kUint32: out.v = uint64_t{c.read<uint32_t>("u32 value")}; break;
    case GgufValueType::kInt32: out.v = int64_t{c.read<int32_t>("i32 value")}; break;
    case GgufValueType::kUint64: out.v = c.read<uint64_t>("u64 value"); break;
    case GgufValueType::kInt64: out.v = c.read<int64_t>("i64 value"); break;
    case GgufValueType::kFloat32: out.v = double{c.read<float>("f32 value")}; break;
    case GgufValueType::kFloat64: out.v = c.read<double>("f64 value"); break;
    case GgufValueType::kBool: {
      const uint8_t b = c.read<uint8_t>("bool value");
      if (b > 1) c.error("bool value", cat("value ", int{b}, " is not 0 or 1"));
      out.v = b == 1;
      break;
    }
    case GgufValueType::kString: out.v = std::string(c.read_string("string value")); break;
    case GgufValueType::kArray: {
      GgufArray a = parse_array(c, depth + 1);
      out.elem_type = a.elem_type;
      out.v = std::move(a);
      break;
    }
  }
  return out;
}

uint64_t align_up(uint64_t v, uint64_t a, bool& overflow) {
  const uint64_t r = v % a;
  uint64_t out = v;
  if (r != 0) overflow = overflow || __builtin_add_overflow(v, a - r, &out);
  return out;
}

// Integer value of any width as int64; `what` names the key for errors.
int64_t as_int64(const GgufValue& v, std::string_view file, std::string_view what) {
  if (const auto* i = std::get_if<int64_t>(&v.v)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&v.v)) {
    IS_CHECK(*u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), file, ": ", what,
             ": value ", *u, " does not fit in int64");
    return static_cast<int64_t>(*u);
  }
  fail(file, ": ", what, ": expected an integer, found ", gguf_value_type_name(v.type));
}

double as_double(const GgufValue& v, std::string_view file, std::string_view what) {
  if (const auto* d = std::get_if<double>(&v.v)) return *d;
  if (const auto* i = std::get_if<int64_t>(&v.v)) return static_cast<double>(*i);
  if (const auto* u = std::get_if<uint64_t>(&v.v)) return static_cast<double>(*u);
  fail(file, ": ", what, ": expected a number, found ", gguf_value_type_name(v.type));
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: return "u8";
    case GgufValueType::kInt8: return "i8";
    case GgufValueType::kUint16: return "u16";
    case GgufValueType::kInt16: return "i16";
    case GgufValueType::kUint32: return "u32";
    case GgufValueType::kInt32: return "i32";
    case GgufValueType::kFloat32: return "f32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "u64";
    case GgufValueType::kInt64: return "i64";
    case GgufValueType::kFloat64: return "f64";
  }
  return "unknown";
}

std::vector<GgufValue> GgufArray::elements() const {
  static const std::string kLabel = "<gguf array>";
  Cursor c(bytes, kLabel);
  std::vector<GgufValue> out;
  // The encoding was validated at parse time, so count is bounded by the encoded bytes.
  out.reserve(static_cast<size_t>(std::min<uint64_t>(count, bytes.size())));
  for (uint64_t i = 0; i < count; ++i) out.push_back(parse_value(c, elem_type, 1));
  return out;
}

int64_t GgufTensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // overflow ruled out at parse time
  return n;
}

int64_t GgufTensorInfo::rows() const {
  int64_t n = 1;
  for (size_t i = 1; i < ne.size(); ++i) n *= ne[i];
  return n;
}

uint64_t GgufTensorInfo::row_bytes() const {
  return static_cast<uint64_t>(ggml_row_bytes(type, row_length()));
}

GgufFile GgufFile::open(const std::string& path) {
  auto mapped = std::make_shared<MappedFile>(path);
  GgufFile f = parse(mapped->bytes(), path);
  f.file_ = std::move(mapped);
  return f;
}

GgufFile GgufFile::from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
  auto owned = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  GgufFile f = parse(*owned, name);
  f.owned_ = std::move(owned);
  return f;
}

GgufFile GgufFile::parse(std::span<const uint8_t> bytes, const std::string& name) {
  GgufFile f;
  f.name_ = name;
  Cursor c(bytes, f.name_);

  // ---- header ----
  c.set_context("header");
  const std::span<const uint8_t> magic = c.take(4, "magic");
  if (std::memcmp(magic.data(), kMagic, 4) != 0) {
    c.error("magic", cat("expected \"GGUF\", found bytes ", int{magic[0]}, " ", int{magic[1]}, " ",
                         int{magic[2]}, " ", int{magic[3]}, " (not a GGUF file)"));
  }
  f.version_ = c.read<uint32_t>("version");
  if (f.version_ != 0 && (f.version_ & 0xffffu) == 0) {
    c.error("version", cat("value ", f.version_, " looks byte-swapped (a big-endian file?)"));
  }
  if (f.version_ == 1) c.error("version", "GGUF version 1 is not supported (only 2 and 3)");
  if (f.version_ != 2 && f.version_ != 3) {
    c.error("version", cat("unsupported version ", f.version_, " (only 2 and 3)"));
  }
  const uint64_t n_tensors = c.read<uint64_t>("tensor_count");
  const uint64_t n_kv = c.read<uint64_t>("metadata_kv_count");
  c.check_count(n_kv, kMinKvBytes, "metadata_kv_count");
  c.check_count(n_tensors, kMinTensorInfoBytes, "tensor_count");
  if (n_kv * kMinKvBytes + n_tensors * kMinTensorInfoBytes > c.left()) {
    c.error("tensor_count", cat(n_kv, " metadata entries and ", n_tensors,
                                " tensor infos cannot fit in the ", c.left(), " bytes that remain"));
  }

  // ---- metadata ----
  f.kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    c.set_context("metadata entry", i);
    const std::string_view key_view = c.read_string("key");
    c.set_context("metadata entry", i, key_view);
    std::string key(key_view);
    if (f.kv_index_.count(key) != 0) c.error("key", "duplicate key");
    const GgufValueType type = read_value_type(c, "value type");
    GgufValue value = parse_value(c, type, 0);
    f.kv_index_.emplace(key, f.kv_.size());
    f.kv_.emplace_back(std::move(key), std::move(value));
  }

  // ---- general.alignment ----
  c.set_context("metadata", Cursor::kNoIndex, "general.alignment");
  if (auto it = f.kv_index_.find("general.alignment"); it != f.kv_index_.end()) {
    const GgufValue& v = f.kv_[it->second].second;
    const auto* u = std::get_if<uint64_t>(&v.v);
    const auto* s = std::get_if<int64_t>(&v.v);
    if (u == nullptr && s == nullptr) {
      c.error("value", cat("expected an integer, found ", gguf_value_type_name(v.type)));
    }
    if (s != nullptr && *s <= 0) c.error("value", cat("alignment ", *s, " is not positive"));
    const uint64_t a = u != nullptr ? *u : static_cast<uint64_t>(*s);
    if (!std::has_single_bit(a) || a > (uint64_t{1} << 31)) {
      c.error("value", cat("alignment ", a, " is not a power of two in [1, 2^31]"));
    }
    f.alignment_ = a;
  }

  // ---- tensor infos ----
  f.tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    c.set_context("tensor info", i);
    GgufTensorInfo t;
    const std::string_view name_view = c.read_string("name");
    c.set_context("tensor info", i, name_view);
    t.name = std::string(name_view);
    if (t.name.size() > kGgufMaxNameBytes) {
      c.error("name", cat("name is ", t.name.size(), " bytes, longer than ", kGgufMaxNameBytes));
    }
    if (f.tensor_index_.count(t.name) != 0) c.error("name", "duplicate tensor name");
    const uint32_t n_dims = c.read<uint32_t>("n_dims");
    if (n_dims > kGgufMaxDims) c.error("n_dims", cat(n_dims, " dimensions, more than ", kGgufMaxDims));
    int64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.read<uint64_t>("dims");
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        c.error("dims", cat("ne[", d, "] = ", ne, " is negative as int64"));
      }
      t.ne.push_back(static_cast<int64_t>(ne));
      if (__builtin_mul_overflow(elements, t.ne.back(), &elements)) {
        c.error("dims", cat("element count overflows int64 at ne[", d, "]"));
      }
    }
    const uint32_t type_id = c.read<uint32_t>("type");
    const auto traits = ggml_type_traits(type_id);
    if (!traits) c.error("type", cat("unknown ggml tensor type id ", type_id));
    t.type = static_cast<GgmlType>(type_id);
    if (t.row_length() % traits->block_size != 0) {
      c.error("dims", cat("ne[0] = ", t.row_length(), " is not a multiple of the ", traits->name,
                          " block size ", traits->block_size));
    }
    int64_t nbytes = 0;
    if (__builtin_mul_overflow(elements / traits->block_size, traits->type_size, &nbytes)) {
      c.error("dims", cat("byte size of ", elements, " ", traits->name, " elements overflows"));
    }
    t.nbytes = static_cast<uint64_t>(nbytes);
    t.offset = c.read<uint64_t>("offset");
    if (t.offset % f.alignment_ != 0) {
      c.error("offset", cat("data offset ", t.offset, " is not a multiple of the alignment ", f.alignment_));
    }
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }

  // ---- data section ----
  c.set_context("data section");
  bool overflow = false;
  f.data_offset_ = align_up(c.pos(), f.alignment_, overflow);
  if (overflow) c.error("start", "aligned start overflows");
  for (GgufTensorInfo& t : f.tensors_) {
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(f.data_offset_, t.offset, &begin) ||
        __builtin_add_overflow(begin, t.nbytes, &end) || end > bytes.size()) {
      fail(f.name_, ": tensor '", t.name, "': data [", f.data_offset_, " + ", t.offset, ", +",
           t.nbytes, ") lies outside the file (", bytes.size(), " bytes): truncated or corrupt");
    }
    t.file_offset = begin;
    t.data = bytes.subspan(static_cast<size_t>(begin), static_cast<size_t>(t.nbytes));
  }
  // No two tensors may share bytes.
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(f.tensors_.size());
  for (const GgufTensorInfo& t : f.tensors_) {
    if (t.nbytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& a = *by_offset[i - 1];
    const GgufTensorInfo& b = *by_offset[i];
    if (a.offset + a.nbytes > b.offset) {
      fail(f.name_, ": tensor '", b.name, "': data at offset ", b.offset, " overlaps tensor '",
           a.name, "' [", a.offset, ", +", a.nbytes, ")");
    }
  }
  return f;
}

// ---- lookups --------------------------------------------------------------------------

bool GgufFile::has(std::string_view key) const { return kv_index_.count(std::string(key)) != 0; }

const GgufValue& GgufFile::value(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  IS_CHECK(it != kv_index_.end(), name_, ": metadata key '", key, "' is missing");
  return kv_[it->second].second;
}

int64_t GgufFile::get_int(std::string_view key) const {
  return as_int64(value(key), name_, cat("metadata key '", key, "'"));
}

int64_t GgufFile::get_int(std::string_view key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GgufFile::get_float(std::string_view key) const {
  return as_double(value(key), name_, cat("metadata key '", key, "'"));
}

double GgufFile::get_float(std::string_view key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = value(key);
  const auto* b = std::get_if<bool>(&v.v);
  IS_CHECK(b != nullptr, name_, ": metadata key '", key, "': expected a bool, found ",
           gguf_value_type_name(v.type));
  return *b;
}

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = value(key);
  const auto* s = std::get_if<std::string>(&v.v);
  IS_CHECK(s != nullptr, name_, ": metadata key '", key, "': expected a string, found ",
           gguf_value_type_name(v.type));
  return *s;
}

const GgufArray& GgufFile::get_array(std::string_view key) const {
  const GgufValue& v = value(key);
  const auto* a = std::get_if<GgufArray>(&v.v);
  IS_CHECK(a != nullptr, name_, ": metadata key '", key, "': expected an array, found ",
           gguf_value_type_name(v.type));
  return *a;
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufArray& a = get_array(key);
  IS_CHECK(a.elem_type == GgufValueType::kString, name_, ": metadata key '", key,
           "': expected an array of strings, found an array of ", gguf_value_type_name(a.elem_type));
  Cursor c(a.bytes, name_);
  c.set_context("metadata key", Cursor::kNoIndex, key);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(a.count));  // bounded: validated against the encoded bytes
  for (uint64_t i = 0; i < a.count; ++i) out.emplace_back(c.read_string("array string element"));
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufArray& a = get_array(key);
  const uint64_t size = fixed_size(a.elem_type);
  IS_CHECK(size > 0 && a.elem_type != GgufValueType::kBool && !is_float(a.elem_type), name_,
           ": metadata key '", key, "': expected an array of integers, found an array of ",
           gguf_value_type_name(a.elem_type));
  Cursor c(a.bytes, name_);
  c.set_context("metadata key", Cursor::kNoIndex, key);
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(a.count));
  const std::string what = cat("metadata key '", key, "'");
  for (uint64_t i = 0; i < a.count; ++i) out.push_back(as_int64(parse_value(c, a.elem_type, 1), name_, what));
  return out;
}

std::vector<double> GgufFile::get_float_array(std::string_view key) const {
  const GgufArray& a = get_array(key);
  const uint64_t size = fixed_size(a.elem_type);
  IS_CHECK(size > 0 && a.elem_type != GgufValueType::kBool, name_, ": metadata key '", key,
           "': expected an array of numbers, found an array of ", gguf_value_type_name(a.elem_type));
  Cursor c(a.bytes, name_);
  c.set_context("metadata key", Cursor::kNoIndex, key);
  std::vector<double> out;
  out.reserve(static_cast<size_t>(a.count));
  const std::string what = cat("metadata key '", key, "'");
  for (uint64_t i = 0; i < a.count; ++i) out.push_back(as_double(parse_value(c, a.elem_type, 1), name_, what));
  return out;
}

std::vector<std::string> GgufFile::keys() const {
  std::vector<std::string> out;
  out.reserve(kv_.size());
  for (const auto& kv : kv_) out.push_back(kv.first);
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  IS_CHECK(t != nullptr, name_, ": tensor '", name, "' is missing");
  return *t;
}

}  // namespace indexshare::io

// A tiny GGUF writer for tests and fuzz seeds (header-only, independent of the reader under
// test). It writes exactly what it is told, so tests can also build malformed files.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace indexshare::testing {

// GGUF metadata value type codes (spelled out here so the writer does not use the reader).
enum GgufCode : uint32_t {
  kGU8 = 0, kGI8 = 1, kGU16 = 2, kGI16 = 3, kGU32 = 4, kGI32 = 5, kGF32 = 6, kGBool = 7,
  kGString = 8, kGArray = 9, kGU64 = 10, kGI64 = 11, kGF64 = 12,
};

// Little-endian byte encoders.
class Bytes {
 public:
  template <class T>
  Bytes& put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    buf.insert(buf.end(), b, b + sizeof(T));
    return *this;
  }
  Bytes& str(std::string_view s) {
    put<uint64_t>(s.size());
    buf.insert(buf.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& raw(const std::vector<uint8_t>& b) {
    buf.insert(buf.end(), b.begin(), b.end());
    return *this;
  }
  std::vector<uint8_t> buf;
};

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t version = 3, uint64_t alignment = 32)
      : version_(version), alignment_(alignment) {}

  // Adds general.alignment (u32) and uses it for the data section.
  GgufWriter& alignment_kv(uint32_t a) {
    alignment_ = a;
    return scalar<uint32_t>("general.alignment", kGU32, a);
  }

  template <class T>
  GgufWriter& scalar(std::string_view key, uint32_t code, T v) {
    Bytes b;
    b.str(key).put<uint32_t>(code).put<T>(v);
    return kv(b);
  }
  GgufWriter& string(std::string_view key, std::string_view s) {
    Bytes b;
    b.str(key).put<uint32_t>(kGString).str(s);
    return kv(b);
  }
  template <class T>
  GgufWriter& array(std::string_view key, uint32_t elem_code, const std::vector<T>& v) {
    Bytes b;
    b.str(key).put<uint32_t>(kGArray).raw(encode_array(elem_code, v));
    return kv(b);
  }
  GgufWriter& string_array(std::string_view key, const std::vector<std::string>& v) {
    Bytes b;
    b.str(key).put<uint32_t>(kGArray).raw(encode_string_array(v));
    return kv(b);
  }
  // An array whose elements are the already-encoded arrays in `inner` (each as from
  // encode_array / encode_string_array / encode_nested).
  GgufWriter& nested_array(std::string_view key, const std::vector<std::vector<uint8_t>>& inner) {
    Bytes b;
    b.str(key).put<uint32_t>(kGArray).raw(encode_nested(inner));
    return kv(b);
  }
  // A raw, hand-made entry (key, type and value bytes exactly as given).
  GgufWriter& raw_kv(const std::vector<uint8_t>& entry) {
    kv_.insert(kv_.end(), entry.begin(), entry.end());
    ++n_kv_;
    return *this;
  }

  // Array body encoders: element type, count, elements.
  template <class T>
  static std::vector<uint8_t> encode_array(uint32_t elem_code, const std::vector<T>& v) {
    Bytes b;
    b.put<uint32_t>(elem_code).put<uint64_t>(v.size());
    for (const T& x : v) b.put<T>(x);
    return b.buf;
  }
  static std::vector<uint8_t> encode_string_array(const std::vector<std::string>& v) {
    Bytes b;
    b.put<uint32_t>(kGString).put<uint64_t>(v.size());
    for (const auto& s : v) b.str(s);
    return b.buf;
  }
  static std::vector<uint8_t> encode_nested(const std::vector<std::vector<uint8_t>>& inner) {
    Bytes b;
    b.put<uint32_t>(kGArray).put<uint64_t>(inner.size());
    for (const auto& a : inner) b.raw(a);
    return b.buf;
  }

  // Adds a tensor; `data` must hold its full byte size. Offsets are assigned in order, each
  // padded to the alignment (as ggml writes them).
  GgufWriter& tensor(std::string_view name, const std::vector<uint64_t>& ne, uint32_t type,
                     const std::vector<uint8_t>& data) {
    tensors_.push_back({std::string(name), ne, type, data});
    return *this;
  }

  // Adds a tensor info with an explicit offset and no data (for malformed files); its bytes,
  // if any, come from data_bytes().
  GgufWriter& tensor_info(std::string_view name, const std::vector<uint64_t>& ne, uint32_t type,
                          uint64_t offset) {
    tensors_.push_back({std::string(name), ne, type, {}, true, offset});
    return *this;
  }
  // Appends `n` pattern bytes to the end of the data section.
  GgufWriter& data_bytes(size_t n) {
    extra_ += n;
    return *this;
  }

  std::vector<uint8_t> build() const {
    Bytes b;
    b.buf = {'G', 'G', 'U', 'F'};
    b.put<uint32_t>(version_).put<uint64_t>(tensors_.size()).put<uint64_t>(n_kv_);
    b.raw(kv_);
    uint64_t offset = 0;
    for (const auto& t : tensors_) {
      b.str(t.name).put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t d : t.ne) b.put<uint64_t>(d);
      b.put<uint32_t>(t.type).put<uint64_t>(t.raw ? t.offset : offset);
      if (!t.raw) offset += pad(t.data.size());
    }
    b.buf.resize(pad(b.buf.size()), 0);
    for (const auto& t : tensors_) {
      if (t.raw) continue;
      b.raw(t.data);
      b.buf.resize(b.buf.size() + (pad(t.data.size()) - t.data.size()), 0);
    }
    for (size_t i = 0; i < extra_; ++i) b.buf.push_back(static_cast<uint8_t>(i * 7 + 1));
    return b.buf;
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::vector<uint8_t> data;
    bool raw = false;
    uint64_t offset = 0;
  };
  GgufWriter& kv(const Bytes& b) { return raw_kv(b.buf); }
  uint64_t pad(uint64_t n) const { return (n + alignment_ - 1) / alignment_ * alignment_; }

  uint32_t version_;
  uint64_t alignment_;
  uint64_t n_kv_ = 0;
  size_t extra_ = 0;
  std::vector<uint8_t> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace indexshare::testing

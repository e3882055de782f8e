// GGUF reader (versions 2 and 3), memory-mapped and fully bounds-checked: a truncated or
// corrupt file raises Error naming the file and the field, never reads out of bounds.
// Layout facts: ../shared/reference/ecosystem.md §1.
//
// What is checked at parse time: magic and version; every count and length against the bytes
// that remain (so a corrupt count cannot cause a huge allocation); metadata value and array
// element types; bools are 0 or 1; array nesting depth; duplicate keys and tensor names;
// general.alignment (an integer, a power of two); tensor names (< 64 bytes), n_dims (<= 4),
// dims (>= 0, product without overflow), type (a known ggml type), ne[0] a multiple of the
// type's block size, offset a multiple of the alignment, data inside the file, no two tensors
// overlapping.
//
// Arrays stay encoded in the mapping (validated once) and are decoded on request, so parsing
// a 50k-entry vocabulary costs one scan and no allocation per entry.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/ggml_type.h"
#include "io/mapped_file.h"

namespace indexshare::io {

using indexshare::GgmlType;
using indexshare::ggml_type_name;

// Metadata value types as stored in the file.
enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType t);

// Longest tensor name accepted (ggml keeps names in a 64-byte buffer with a terminating NUL).
inline constexpr size_t kGgufMaxNameBytes = 63;
// Most dimensions a tensor may have.
inline constexpr uint32_t kGgufMaxDims = 4;
// Deepest array nesting accepted (an array of arrays is depth 2).
inline constexpr int kGgufMaxArrayDepth = 8;
// Alignment when general.alignment is absent.
inline constexpr uint64_t kGgufDefaultAlignment = 32;

struct GgufValue;

// An array value. The elements stay encoded inside the parsed bytes (already validated) and
// are decoded on request; the buffer must outlive this view (GgufFile keeps its mapping).
struct GgufArray {
  GgufValueType elem_type = GgufValueType::kUint8;
  uint64_t count = 0;
  std::span<const uint8_t> bytes;  // the encoded elements
  // Decodes every element (nested arrays become GgufArray values again).
  std::vector<GgufValue> elements() const;
};

// One metadata value. Unsigned integers of every width are held as uint64_t, signed ones as
// int64_t, float32/float64 as double.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  GgufValueType elem_type = GgufValueType::kUint8;  // arrays only: the element type
  std::variant<int64_t, uint64_t, double, bool, std::string, GgufArray> v;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the fastest-varying (row length)
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;       // from the start of the data section
  uint64_t file_offset = 0;  // from the start of the file
  uint64_t nbytes = 0;
  std::span<const uint8_t> data;  // inside the mapping, bounds-checked at open
  int64_t elements() const;
  int64_t row_length() const { return ne.empty() ? 1 : ne[0]; }  // ne[0]
  int64_t rows() const;                                          // ne[1] * ne[2] * ne[3]
  uint64_t row_bytes() const;                                    // bytes of one row
};

class GgufFile {
 public:
  // Opens and parses a file; throws Error naming the path and the problem.
  static GgufFile open(const std::string& path);
  // Parses a buffer that the caller keeps alive as long as the GgufFile and every span or
  // GgufArray taken from it (tensor data and arrays point into it); `name` labels errors.
  static GgufFile parse(std::span<const uint8_t> bytes, const std::string& name);
  // Parses a buffer that the GgufFile then owns (tests, in-memory files).
  static GgufFile from_bytes(std::vector<uint8_t> bytes, const std::string& name);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& name() const { return name_; }
  // Start of the data section, from the start of the file.
  uint64_t data_offset() const { return data_offset_; }

  bool has(std::string_view key) const;
  const GgufValue& value(std::string_view key) const;  // Error if missing
  // Typed getters: Error naming the key when missing or of another kind. get_int accepts any
  // integer width (and range-checks into int64).
  int64_t get_int(std::string_view key) const;
  int64_t get_int(std::string_view key, int64_t fallback) const;
  double get_float(std::string_view key) const;  // float32/float64 (or integer)
  double get_float(std::string_view key, double fallback) const;
  bool get_bool(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  const GgufArray& get_array(std::string_view key) const;  // any element type
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;  // any integer width
  std::vector<double> get_float_array(std::string_view key) const;  // float32/float64 (or integer)
  std::vector<std::string> keys() const;  // in file order

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;  // nullptr if absent
  const GgufTensorInfo& tensor(std::string_view name) const;       // Error if absent

 private:
  std::shared_ptr<MappedFile> file_;                  // set by open()
  std::shared_ptr<const std::vector<uint8_t>> owned_;  // set by from_bytes()
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace indexshare::io

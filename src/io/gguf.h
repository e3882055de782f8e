// GGUF reader (versions 2 and 3), memory-mapped and fully bounds-checked: a truncated or
// corrupt file raises Error naming the file and the field, never reads out of bounds.
// Layout facts: ../shared/reference/ecosystem.md §1.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "io/mapped_file.h"

namespace indexshare::io {

// Metadata value types as stored in the file.
enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

// Tensor element types (ggml numbering). Only some are computed on; all are recognised.
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15, kBF16 = 30,
};
std::string_view ggml_type_name(GgmlType t);

// One metadata value. Integers of every width are held as int64/uint64, floats as double.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  GgufValueType elem_type = GgufValueType::kUint8;  // for arrays
  std::variant<int64_t, uint64_t, double, bool, std::string, std::vector<GgufValue>> v;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the fastest-varying (row length)
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;      // from the start of the data section
  uint64_t nbytes = 0;
  std::span<const uint8_t> data;  // inside the mapping, bounds-checked at open
  int64_t elements() const;
};

class GgufFile {
 public:
  // Opens and parses a file; throws Error naming the path and the problem.
  static GgufFile open(const std::string& path);
  // Parses a buffer that the caller keeps alive (fuzzing, tests); `name` labels errors.
  static GgufFile parse(std::span<const uint8_t> bytes, const std::string& name);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& name() const { return name_; }

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
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<double> get_float_array(std::string_view key) const;
  std::vector<std::string> keys() const;  // in file order

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;  // nullptr if absent
  const GgufTensorInfo& tensor(std::string_view name) const;       // Error if absent

 private:
  std::shared_ptr<MappedFile> file_;  // null when parsing a caller-owned buffer
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace indexshare::io

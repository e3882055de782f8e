// safetensors reader and writer.
//
// File layout: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str}, "<tensor>": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// then the data section; offsets are relative to its start. The reader maps the file and checks
// everything before any data is touched: N against the file size, JSON types, known dtypes,
// offsets inside the data section, end - begin == product(shape) * dtype size (overflow-safe),
// and no two tensors overlapping. Every Error names the file and, where one is at fault, the
// tensor.
//
// SafetensorsModel opens a model directory (model.safetensors, or the shards listed in
// model.safetensors.index.json) and reads tensors as f32, dequantising FP8 E4M3 weights that
// come with a block `weight_scale_inv` ([ceil(out/128), ceil(in/128)] fp32, one scale per
// 128 x 128 block) on the way.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/mapped_file.h"

namespace indexshare::io {

// Element types of the format (names as spelled in the header).
enum class StDType : uint8_t { kF64, kF32, kF16, kBF16, kF8E4M3, kI64, kI32, kI16, kI8, kU8, kBool };

std::string_view st_dtype_name(StDType t);  // "F32", "BF16", "F8_E4M3", ...
int st_dtype_size(StDType t);               // bytes per element
std::optional<StDType> parse_st_dtype(std::string_view name);
bool st_dtype_is_float(StDType t);

struct StTensorInfo {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;      // row-major, outermost first
  uint64_t begin = 0, end = 0;     // byte offsets inside the data section
  std::span<const uint8_t> data;   // the tensor's bytes inside the mapping (checked at open)
  int64_t elements() const;        // product of shape (1 for a scalar)
};

class SafetensorsFile {
 public:
  // Maps and validates a file; throws Error naming the path and the problem.
  static SafetensorsFile open(const std::string& path);
  // Validates a buffer the caller keeps alive (tests, fuzzing); `name` labels errors.
  static SafetensorsFile parse(std::span<const uint8_t> bytes, const std::string& name);

  const std::string& name() const { return name_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }  // in offset order
  const StTensorInfo* find(std::string_view tensor) const;  // nullptr if absent
  const StTensorInfo& tensor(std::string_view tensor) const;  // Error naming it if absent

  // Converts any numeric tensor to f32 (integers and bool by value). out.size() must equal
  // elements().
  void read_f32(const StTensorInfo& t, std::span<float> out) const;
  std::vector<float> read_f32(std::string_view tensor) const;
  // Integer tensors (I64/I32/I16/I8/U8/BOOL) by value; Error for float dtypes.
  std::vector<int64_t> read_i64(std::string_view tensor) const;

 private:
  std::shared_ptr<MappedFile> file_;  // null when parsing a caller-owned buffer
  std::string name_;
  std::map<std::string, std::string> metadata_;
  std::vector<StTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

// One tensor to write: raw little-endian bytes of `dtype`, shape row-major.
struct StWriteTensor {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;  // size must be product(shape) * dtype size
};

// Writes a safetensors file: header padded with spaces to a multiple of 8, tensors in the given
// order. The file is written under a temporary name in the same directory, flushed, then renamed
// over `path`, so a reader never sees a half-written file. Throws Error naming the path or tensor
// (duplicate or reserved names, size mismatch, I/O failure); nothing is left behind on error.
void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Convenience for f32 data.
StWriteTensor st_f32(std::string name, std::vector<int64_t> shape, std::span<const float> data);

// A model's weights: one file or the shards of model.safetensors.index.json.
class SafetensorsModel {
 public:
  // `path` is a directory (model.safetensors.index.json, else model.safetensors) or a single
  // .safetensors file. Shard names in the index must be plain file names inside the directory.
  static SafetensorsModel open(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(std::string_view tensor) const;
  const StTensorInfo& info(std::string_view tensor) const;  // Error naming it if absent
  std::vector<std::string> names() const;                   // sorted

  // The tensor as f32. F8_E4M3 tensors named "<x>.weight" with a "<x>.weight_scale_inv"
  // companion are 2-D weights [out, in] dequantised per 128 x 128 block; the scale tensor's
  // shape must be [ceil(out/128), ceil(in/128)]. Other dtypes convert by value.
  std::vector<float> read_f32(std::string_view tensor) const;
  // The same, after checking the shape; Error names the tensor and both shapes on mismatch.
  std::vector<float> read_f32(std::string_view tensor, const std::vector<int64_t>& shape) const;

 private:
  std::string path_;
  std::vector<SafetensorsFile> files_;
  std::unordered_map<std::string, std::pair<size_t, size_t>> where_;  // name -> (file, tensor)
};

// Dequantises a block-scaled FP8 E4M3 weight: w[r, c] = fp8(q[r, c]) * scale[r/128, c/128].
// q: [rows, cols] bytes; scale: [ceil(rows/128), ceil(cols/128)]; out: [rows, cols].
void dequant_fp8_block(std::span<const uint8_t> q, std::span<const float> scale, int64_t rows,
                       int64_t cols, int64_t block, std::span<float> out);

}  // namespace indexshare::io

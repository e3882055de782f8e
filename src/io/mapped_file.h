// A read-only memory-mapped file with bounds-checked access, shared by the GGUF and
// safetensors readers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace indexshare::io {

class MappedFile {
 public:
  // Maps `path` read-only; throws Error naming the path when it cannot be opened or mapped.
  // An empty file maps to an empty span.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }

  // The sub-range [offset, offset + len); throws Error naming `what` and the path if it does
  // not lie inside the file (overflow-safe).
  std::span<const uint8_t> range(uint64_t offset, uint64_t len, const char* what) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (text) file; throws Error naming the path on failure.
std::string read_text_file(const std::string& path);

}  // namespace indexshare::io

// Host-side helpers around the CUDA runtime, free of CUDA types so that plain C++ includes them.
//
// Streams are passed as `void*` (a cudaStream_t; nullptr = the default stream). Every failing
// runtime call throws indexshare::Error naming the call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace indexshare::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
// Name of the current device ("" when none).
std::string device_name();
void synchronize();

void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void fill_bytes(void* dst, int value, size_t bytes);

// Owning device allocation (cudaMalloc / cudaFree). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Uploads host data into a new buffer.
DeviceBuffer to_device(const void* src, size_t bytes);

}  // namespace indexshare::cuda

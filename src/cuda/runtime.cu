#include "cuda/runtime.h"

#include <utility>

#include "cuda/cuda_check.cuh"

namespace indexshare::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string device_name() {
  if (device_count() == 0) return "";
  int dev = 0;
  IS_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  IS_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return prop.name;
}

void synchronize() { IS_CUDA_CHECK(cudaDeviceSynchronize()); }

void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes) IS_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes) IS_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void fill_bytes(void* dst, int value, size_t bytes) {
  if (bytes) IS_CUDA_CHECK(cudaMemset(dst, value, bytes));
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes) IS_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) (void)cudaFree(ptr_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) (void)cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

DeviceBuffer to_device(const void* src, size_t bytes) {
  DeviceBuffer b(bytes);
  copy_to_device(b.get(), src, bytes);
  return b;
}

}  // namespace indexshare::cuda

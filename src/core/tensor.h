// A typed view of memory on one device, optionally keeping its storage alive.
//
// Tensors are contiguous and row-major: shape [d0, d1, ...] with the last dimension fastest.
// Ops that read part of a row (a column slice) take an explicit row stride beside the tensor.
// A Tensor made by a backend owns its storage through a shared holder, so copies are cheap
// views of the same memory; a Tensor made from a raw pointer (Tensor::wrap) owns nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace indexshare {

enum class Device : uint8_t { kCpu, kCuda };
std::string_view device_name(Device d);  // "cpu" / "cuda"

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<void> holder, void* data, DType dtype, Device device, std::vector<int64_t> shape);
  // A non-owning view of caller memory.
  static Tensor wrap(void* data, DType dtype, Device device, std::vector<int64_t> shape);

  bool defined() const { return defined_; }
  void* data() const { return data_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end; Error when out of range
  int64_t numel() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * static_cast<size_t>(dtype_size(dtype_)); }
  // Elements of one step of the first dimension (numel / dim(0); 1 for a 1-D tensor).
  int64_t row_numel() const;

  // Rows [r0, r1) of the first dimension, sharing the storage.
  Tensor rows(int64_t r0, int64_t r1) const;
  // The same memory with another shape of the same element count.
  Tensor reshape(std::vector<int64_t> shape) const;
  // "f32[4, 8] on cuda"
  std::string describe() const;

 private:
  std::shared_ptr<void> holder_;
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  std::vector<int64_t> shape_;
  bool defined_ = false;
};

// Checks that `t` is defined, lives on `device`, has `dtype` and the given shape (-1 = any
// extent); throws Error naming `what` and both shapes otherwise.
void check_tensor(const Tensor& t, std::string_view what, Device device, DType dtype,
                  std::initializer_list<int64_t> shape);

}  // namespace indexshare

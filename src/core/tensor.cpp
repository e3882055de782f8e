#include "core/tensor.h"

#include <sstream>
#include <utility>

#include "core/error.h"

namespace indexshare {

std::string_view device_name(Device d) { return d == Device::kCuda ? "cuda" : "cpu"; }

Tensor::Tensor(std::shared_ptr<void> holder, void* data, DType dtype, Device device, std::vector<int64_t> shape)
    : holder_(std::move(holder)), data_(data), dtype_(dtype), device_(device), shape_(std::move(shape)), defined_(true) {
  for (int64_t d : shape_) IS_CHECK(d >= 0, "tensor: negative extent in shape of ", describe());
}

Tensor Tensor::wrap(void* data, DType dtype, Device device, std::vector<int64_t> shape) {
  return Tensor(nullptr, data, dtype, device, std::move(shape));
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int j = i < 0 ? n + i : i;
  IS_CHECK(j >= 0 && j < n, "tensor: dimension ", i, " out of range for ", describe());
  return shape_[static_cast<size_t>(j)];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return defined_ ? n : 0;
}

int64_t Tensor::row_numel() const {
  if (shape_.size() <= 1) return 1;
  int64_t n = 1;
  for (size_t i = 1; i < shape_.size(); ++i) n *= shape_[i];
  return n;
}

Tensor Tensor::rows(int64_t r0, int64_t r1) const {
  IS_CHECK(defined_ && ndim() >= 1, "tensor: rows() of ", describe());
  IS_CHECK(0 <= r0 && r0 <= r1 && r1 <= shape_[0], "tensor: rows [", r0, ", ", r1, ") out of range for ", describe());
  std::vector<int64_t> s = shape_;
  s[0] = r1 - r0;
  auto* base = static_cast<uint8_t*>(data_) + static_cast<size_t>(r0 * row_numel()) * dtype_size(dtype_);
  return Tensor(holder_, base, dtype_, device_, std::move(s));
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  IS_CHECK(n == numel(), "tensor: cannot reshape ", describe(), " to ", n, " elements");
  return Tensor(holder_, data_, dtype_, device_, std::move(shape));
}

std::string Tensor::describe() const {
  if (!defined_) return "(undefined tensor)";
  std::ostringstream os;
  os << dtype_name(dtype_) << "[";
  for (size_t i = 0; i < shape_.size(); ++i) os << (i ? ", " : "") << shape_[i];
  os << "] on " << device_name(device_);
  return os.str();
}

void check_tensor(const Tensor& t, std::string_view what, Device device, DType dtype,
                  std::initializer_list<int64_t> shape) {
  IS_CHECK(t.defined(), what, ": tensor is missing");
  IS_CHECK(t.device() == device, what, ": expected a tensor on ", device_name(device), ", got ", t.describe());
  IS_CHECK(t.dtype() == dtype, what, ": expected ", dtype_name(dtype), ", got ", t.describe());
  bool ok = static_cast<size_t>(t.ndim()) == shape.size();
  size_t i = 0;
  for (int64_t d : shape) {
    if (ok && d >= 0 && t.shape()[i] != d) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream want;
    want << "[";
    i = 0;
    for (int64_t d : shape) want << (i++ ? ", " : "") << (d < 0 ? std::string("*") : std::to_string(d));
    want << "]";
    fail(what, ": expected shape ", want.str(), ", got ", t.describe());
  }
}

}  // namespace indexshare

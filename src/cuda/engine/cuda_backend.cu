// The CUDA backend (see cuda_backend.h): its factory and profiling entry points; the class is in
// cuda_backend_impl.cuh.
#include "cuda/engine/cuda_backend_impl.cuh"

namespace indexshare::cuda {
namespace {

using impl::CudaBackend;

CudaBackend& as_cuda(backend::Backend& be) {
  auto* c = dynamic_cast<CudaBackend*>(&be);
  IS_CHECK(c != nullptr, "profiling: ", be.name(), " is not the CUDA backend");
  return *c;
}

}  // namespace

std::unique_ptr<backend::Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

void register_cuda_backend() { backend::register_cuda_backend([] { return make_cuda_backend(); }); }

void set_profiling(backend::Backend& be, bool on) { as_cuda(be).set_profiling(on); }

std::array<double, kRegions> take_region_ms(backend::Backend& be) { return as_cuda(be).take_region_ms(); }

DeviceMemory device_memory() {
  DeviceMemory m;
  if (device_count() == 0) return m;
  IS_CUDA_CHECK(cudaMemGetInfo(&m.free, &m.total));
  return m;
}

}  // namespace indexshare::cuda

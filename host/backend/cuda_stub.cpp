// Stands in for the CUDA backend in builds without the CUDA toolkit.
#include "convergent/error.hpp"
#include "backend/cuda_backend.hpp"

namespace convergent::detail {
namespace {

[[noreturn]] void not_compiled() {
  throw Error("CUDA backend not compiled: rebuild with the CUDA toolkit and -DCONVERGENT_CUDA=ON");
}

}  // namespace

bool cuda_backend_compiled() { return false; }

BackendStatus cuda_backend_status(const BackendOptions&) {
  return {BackendKind::cuda, false, false, "not compiled (configured without the CUDA toolkit)"};
}

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions&) { not_compiled(); }

CudaCeiling measure_cuda_ceiling(std::int64_t, std::int64_t, Precision) { not_compiled(); }

void fail_cuda_allocation_after(int) {}
int cuda_device_count() { return 0; }
int cuda_current_device() { return -1; }
void set_cuda_current_device(int) { not_compiled(); }
std::shared_ptr<void> cuda_device_copy(const void*, std::size_t, int) { not_compiled(); }

}  // namespace convergent::detail

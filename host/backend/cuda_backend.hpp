// Private hook between the backend factory and the CUDA backend. kernels/ implements it when the CUDA
// toolkit is found; otherwise host/backend/cuda_stub.cpp answers "not compiled".
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "convergent/backend.hpp"

namespace convergent::detail {

bool cuda_backend_compiled();
// Whether a device is usable, and its name or the reason it is not. Never throws.
BackendStatus cuda_backend_status(const BackendOptions& options);
// Throws Error when not compiled or when no device is usable.
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);

// Test hooks (tests/test_conformance.cpp), no-ops or "no device" answers without CUDA.
// After `successes` more device or pinned allocations of the CUDA backend, the next one fails as if the
// device or host were out of memory (CudaError, out_of_memory()); -1 turns the hook off.
void fail_cuda_allocation_after(int successes);
// Devices the runtime sees (0 when none or not compiled); the calling thread's current device (-1 when
// none) and a way to choose it, so that a test can check that the backend gives it back unchanged.
int cuda_device_count();
int cuda_current_device();
void set_cuda_current_device(int device);  // throws Error when not compiled or on a bad ordinal
// A copy of `bytes` host bytes in the memory of CUDA device `device`, freed when the last pointer goes, so
// that a test can hand an accumulator device-resident blocks (ActivationBlock::device). Throws Error when
// not compiled or on a CUDA error.
std::shared_ptr<void> cuda_device_copy(const void* host, std::size_t bytes, int device);

}  // namespace convergent::detail

namespace convergent::detail {

// What bench_corr compares the CUDA backend against, measured on the device with CUDA events after a
// warm-up: a bare cuBLAS product of the batch's shape on data already on the device, and the
// host-to-device copy rate from pinned memory.
struct CudaCeiling {
  std::string device_name;
  // Counted as rows * units * (units + 1) flops, the distinct entries of the symmetric product, whatever
  // routine computes it (bench_corr uses the same count for the streaming pass).
  double product_gflops = 0.0;
  double host_to_device_gbps = 0.0;
};
CudaCeiling measure_cuda_ceiling(std::int64_t rows, std::int64_t units, Precision precision);

}  // namespace convergent::detail

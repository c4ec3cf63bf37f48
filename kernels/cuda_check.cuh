// The one checked-call family of the CUDA backend: every CUDA runtime, cuBLAS and cuSOLVER call goes
// through a macro that turns a failure into convergent::Error naming the call, the library's own error
// text, file and line. Kernel launches are followed by CONVERGENT_CUDA_CHECK_LAUNCH().
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdint>
#include <limits>
#include <string>

#include "convergent/error.hpp"

namespace convergent::cuda {

// Raised for every failed CUDA, cuBLAS or cuSOLVER call. Out-of-memory is kept apart so that callers can
// tell the user to shrink the batch instead of reporting an internal failure.
class CudaError : public Error {
 public:
  explicit CudaError(const std::string& what, bool out_of_memory = false)
      : Error(what), out_of_memory_(out_of_memory) {}
  bool out_of_memory() const { return out_of_memory_; }

 private:
  bool out_of_memory_;
};

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_cusolver_error(cusolverStatus_t status, const char* call, const char* file, int line);
const char* cusolver_status_name(cusolverStatus_t status);

// cuBLAS and cuSOLVER take int dimensions; anything larger is refused with a clear message instead of
// wrapping around.
int checked_int(std::int64_t value, const char* what);

}  // namespace convergent::cuda

#define CONVERGENT_CUDA_CHECK(call)                                                          \
  do {                                                                                       \
    const cudaError_t convergent_status_ = (call);                                           \
    if (convergent_status_ != cudaSuccess)                                                   \
      ::convergent::cuda::throw_cuda_error(convergent_status_, #call, __FILE__, __LINE__);   \
  } while (false)

// After every kernel launch: catches bad launch configurations at once (asynchronous faults surface at
// the next synchronising call, which is checked too).
#define CONVERGENT_CUDA_CHECK_LAUNCH() CONVERGENT_CUDA_CHECK(cudaGetLastError())

#define CONVERGENT_CUBLAS_CHECK(call)                                                        \
  do {                                                                                       \
    const cublasStatus_t convergent_status_ = (call);                                        \
    if (convergent_status_ != CUBLAS_STATUS_SUCCESS)                                         \
      ::convergent::cuda::throw_cublas_error(convergent_status_, #call, __FILE__, __LINE__); \
  } while (false)

#define CONVERGENT_CUSOLVER_CHECK(call)                                                        \
  do {                                                                                         \
    const cusolverStatus_t convergent_status_ = (call);                                        \
    if (convergent_status_ != CUSOLVER_STATUS_SUCCESS)                                         \
      ::convergent::cuda::throw_cusolver_error(convergent_status_, #call, __FILE__, __LINE__); \
  } while (false)

// Error text for the checked-call macros.
#include <string>

#include "cuda_check.cuh"

namespace convergent::cuda {
namespace {

std::string where(const char* call, const char* file, int line) {
  return std::string(call) + " at " + file + ":" + std::to_string(line);
}

}  // namespace

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  const bool oom = status == cudaErrorMemoryAllocation;
  throw CudaError(std::string("CUDA error ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
                      ") in " + where(call, file, line),
                  oom);
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  const bool oom = status == CUBLAS_STATUS_ALLOC_FAILED;
  throw CudaError(std::string("cuBLAS error ") + cublasGetStatusName(status) + " (" +
                      cublasGetStatusString(status) + ") in " + where(call, file, line),
                  oom);
}

const char* cusolver_status_name(cusolverStatus_t status) {
  switch (status) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED (the library was not initialised)";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED (device memory allocation failed)";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE (an argument is out of range)";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH (the device lacks a needed feature)";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED (a kernel failed to launch)";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return "cuSOLVER status not named here";
  }
}

void throw_cusolver_error(cusolverStatus_t status, const char* call, const char* file, int line) {
  const bool oom = status == CUSOLVER_STATUS_ALLOC_FAILED;
  throw CudaError(std::string("cuSOLVER error ") + std::to_string(static_cast<int>(status)) + " " +
                      cusolver_status_name(status) + " in " + where(call, file, line),
                  oom);
}

int checked_int(std::int64_t value, const char* what) {
  if (value < 0 || value > std::numeric_limits<int>::max())
    throw Error(std::string(what) + " = " + std::to_string(value) +
                " does not fit the 32-bit sizes of cuBLAS/cuSOLVER; use smaller batches or fewer units");
  return static_cast<int>(value);
}

}  // namespace convergent::cuda

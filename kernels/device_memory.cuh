// RAII owners of every CUDA resource the backend uses: device and pinned host buffers, streams, events,
// and cuBLAS/cuSOLVER handles. This is the only place that calls cudaMalloc/cudaFree and friends;
// destructors never throw (a failure while releasing is ignored, as there is nothing left to do).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "cuda_check.cuh"

namespace convergent::cuda {

// Test hook behind fail_cuda_allocation_after (host/backend/cuda_backend.hpp): while >= 0, how many device or
// pinned allocations still succeed before one fails as if out of memory; -1 (the default) is off.
inline std::atomic<int>& allocation_failure_countdown() {
  static std::atomic<int> countdown{-1};
  return countdown;
}
inline void check_injected_allocation_failure() {
  std::atomic<int>& countdown = allocation_failure_countdown();
  if (countdown.load() >= 0 && countdown.fetch_sub(1) == 0)
    throw CudaError("CUDA error cudaErrorMemoryAllocation (out of memory, injected by a test)", true);
}

// Where a buffer lives: device memory, or page-locked host memory (so that copies to the device run
// asynchronously at full rate).
struct DeviceMemory {
  static void* allocate(std::size_t bytes) {
    check_injected_allocation_failure();
    void* p = nullptr;
    CONVERGENT_CUDA_CHECK(cudaMalloc(&p, bytes));
    return p;
  }
  static void free(void* p) noexcept { cudaFree(p); }
};
struct PinnedMemory {
  static void* allocate(std::size_t bytes) {
    check_injected_allocation_failure();
    void* p = nullptr;
    CONVERGENT_CUDA_CHECK(cudaMallocHost(&p, bytes));
    return p;
  }
  static void free(void* p) noexcept { cudaFreeHost(p); }
};

// Owning allocation of `size` elements of T (uninitialised) in Memory. Move-only.
template <class T, class Memory>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  explicit CudaBuffer(std::int64_t size) : size_(size) {
    if (size > 0) data_ = static_cast<T*>(Memory::allocate(bytes()));
  }
  CudaBuffer(CudaBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  CudaBuffer& operator=(CudaBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  ~CudaBuffer() { release(); }

  T* data() const { return data_; }
  std::int64_t size() const { return size_; }
  std::size_t bytes() const { return static_cast<std::size_t>(size_) * sizeof(T); }

 private:
  void release() noexcept {
    if (data_ != nullptr) Memory::free(data_);
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  std::int64_t size_ = 0;
};

template <class T>
using DeviceBuffer = CudaBuffer<T, DeviceMemory>;
template <class T>
using PinnedBuffer = CudaBuffer<T, PinnedMemory>;

// Non-owning stream handle; what kernels and launchers take.
struct StreamRef {
  cudaStream_t handle = nullptr;
  void synchronize() const { CONVERGENT_CUDA_CHECK(cudaStreamSynchronize(handle)); }
};

// An owned stream. Always non-blocking: the legacy default stream is never used, so work of the backend
// never serialises against unrelated work in the process.
class Stream {
 public:
  Stream() { CONVERGENT_CUDA_CHECK(cudaStreamCreateWithFlags(&handle_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (handle_ != nullptr) cudaStreamDestroy(handle_);
  }
  cudaStream_t handle() const { return handle_; }
  StreamRef ref() const { return {handle_}; }
  void synchronize() const { ref().synchronize(); }

 private:
  cudaStream_t handle_ = nullptr;
};

// An owned event. Timing is off unless asked for: ordering events are cheaper without it.
class Event {
 public:
  explicit Event(bool timing = false) {
    CONVERGENT_CUDA_CHECK(cudaEventCreateWithFlags(&handle_, timing ? cudaEventDefault : cudaEventDisableTiming));
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() {
    if (handle_ != nullptr) cudaEventDestroy(handle_);
  }
  cudaEvent_t handle() const { return handle_; }
  void record(StreamRef stream) const { CONVERGENT_CUDA_CHECK(cudaEventRecord(handle_, stream.handle)); }
  // Makes later work on `stream` wait for this event, without blocking the host.
  void make_wait(StreamRef stream) const { CONVERGENT_CUDA_CHECK(cudaStreamWaitEvent(stream.handle, handle_, 0)); }
  void synchronize() const { CONVERGENT_CUDA_CHECK(cudaEventSynchronize(handle_)); }
  // Milliseconds from `start` to this event (both recorded with timing on).
  float elapsed_ms_since(const Event& start) const {
    float ms = 0.0f;
    CONVERGENT_CUDA_CHECK(cudaEventElapsedTime(&ms, start.handle_, handle_));
    return ms;
  }

 private:
  cudaEvent_t handle_ = nullptr;
};

class CublasHandle {
 public:
  // Bound to `stream`: every call through this handle is ordered on it.
  explicit CublasHandle(StreamRef stream) {
    CONVERGENT_CUBLAS_CHECK(cublasCreate(&handle_));
    const cublasStatus_t bound = cublasSetStream(handle_, stream.handle);
    if (bound != CUBLAS_STATUS_SUCCESS) {
      cublasDestroy(handle_);
      CONVERGENT_CUBLAS_CHECK(bound);
    }
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle() {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

class CusolverHandle {
 public:
  CusolverHandle() { CONVERGENT_CUSOLVER_CHECK(cusolverDnCreate(&handle_)); }
  CusolverHandle(const CusolverHandle&) = delete;
  CusolverHandle& operator=(const CusolverHandle&) = delete;
  ~CusolverHandle() {
    if (handle_ != nullptr) cusolverDnDestroy(handle_);
  }
  cusolverDnHandle_t get() const { return handle_; }

 private:
  cusolverDnHandle_t handle_ = nullptr;
};

// For an object that owns resources of one device, declared as its first member: makes `device` current
// from this member's construction until leave(), which the owner's constructor calls last, so that the
// members built in between belong to the device; and again from enter(), which the owner's destructor
// calls first, until this member's own destruction (it goes last), so that they are released there. The
// caller's current device is restored after each: a multi-GPU host keeps the device it had chosen.
class DeviceScope {
 public:
  explicit DeviceScope(int device) : device_(device) {
    CONVERGENT_CUDA_CHECK(cudaGetDevice(&previous_));
    CONVERGENT_CUDA_CHECK(cudaSetDevice(device));
    active_ = true;
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  ~DeviceScope() { leave(); }

  int device() const { return device_; }
  void leave() noexcept {
    if (active_) cudaSetDevice(previous_);
    active_ = false;
  }
  // Errors are ignored: a destructor can do nothing about them.
  void enter() noexcept {
    if (active_ || cudaGetDevice(&previous_) != cudaSuccess) return;
    active_ = cudaSetDevice(device_) == cudaSuccess;
  }

 private:
  int device_;
  int previous_ = 0;
  bool active_ = false;
};

// Makes `device` current for the calling thread for the guard's lifetime, restoring the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CONVERGENT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) CONVERGENT_CUDA_CHECK(cudaSetDevice(device));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
};

// Typed asynchronous copies; n == 0 is a no-op.
template <class T>
void copy_async(T* dst, const T* src, std::int64_t count, cudaMemcpyKind kind, StreamRef stream) {
  if (count <= 0) return;
  CONVERGENT_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(count) * sizeof(T), kind, stream.handle));
}

// Free and total bytes of the current device.
struct DeviceMemoryInfo {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};
inline DeviceMemoryInfo device_memory_info() {
  DeviceMemoryInfo info;
  CONVERGENT_CUDA_CHECK(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
  return info;
}

}  // namespace convergent::cuda

// Joint counts on the GPU. Per chunk of rows, the bin indices (uint8, rows x units, staged through pinned
// memory) become one-hot indicator matrices Y (int8, (units S) x rows_pad, each indicator's rows
// contiguous, zero padding), and C = Y_c^T Y_r is one cublasGemmEx with CUDA_R_8I inputs and CUDA_R_32I
// compute and output: every entry is a count of at most the chunk's rows, so int32 cannot overflow
// (chunks stay below 2^31 rows, Backend::joint_counter's limit), and the product is exact. C is added
// into the int64 totals by a kernel. cuBLAS's int8 path wants lda and ldb multiples of 4 and 32-bit
// aligned A and B (cuBLAS documentation, cublasGemmEx); rows and indicator counts are padded to 16, which
// also suits the tensor cores' tiles, and every buffer comes from cudaMalloc (256-byte aligned). The
// "TN" form (op(A) = T, op(B) = N, k contiguous) is the one the int8 tensor-core kernels take.
// A symmetric counter computes the full product (no int8 SYRK exists), both triangles at once.
#include <algorithm>
#include <cstring>
#include <string>

#include "backend/cuda_backend.hpp"
#include "device_memory.cuh"
#include "joint_counts.cuh"
#include "backend/joint_counts_ceiling.hpp"

namespace convergent::cuda {
namespace {

constexpr std::int64_t kPad = 16;
// One-hot bytes per chunk (both sides together): large products run near the int8 peak; more only costs memory.
constexpr std::int64_t kOneHotBytes = std::int64_t{256} << 20;
constexpr std::size_t kReserveBytes = 512u << 20;  // left for cuBLAS's workspace and the context

std::int64_t pad(std::int64_t n) { return (n + kPad - 1) / kPad * kPad; }

// y[(u * bins + b[r][u]) * ld + r] = 1 for the rows x units indices b (row-major, `units` apart); y was
// zeroed.
__global__ void one_hot_kernel(const std::uint8_t* __restrict__ b, std::int64_t rows, std::int64_t units,
                               std::int64_t bins, std::int8_t* __restrict__ y, std::int64_t ld) {
  const std::int64_t n = rows * units;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t r = i / units, u = i % units;
    y[(u * bins + b[i]) * ld + r] = 1;
  }
}

// counts[r * cols + c] += product[r * ld + c] for r < rows, c < cols.
__global__ void accumulate_kernel(const std::int32_t* __restrict__ product, std::int64_t ld, std::int64_t rows,
                                  std::int64_t cols, std::int64_t* __restrict__ counts) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    counts[i] += product[r * ld + c];
  }
}

unsigned grid_for(std::int64_t n) {
  return static_cast<unsigned>(std::clamp<std::int64_t>((n + 255) / 256, 1, 65536));
}

void launch_one_hot(const std::uint8_t* b, std::int64_t rows, std::int64_t units, std::int64_t bins, std::int8_t* y,
                    std::int64_t ld, StreamRef stream) {
  if (rows == 0 || units == 0) return;
  one_hot_kernel<<<grid_for(rows * units), 256, 0, stream.handle>>>(b, rows, units, bins, y, ld);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_accumulate(const std::int32_t* product, std::int64_t ld, std::int64_t rows, std::int64_t cols,
                       std::int64_t* counts, StreamRef stream) {
  if (rows == 0 || cols == 0) return;
  accumulate_kernel<<<grid_for(rows * cols), 256, 0, stream.handle>>>(product, ld, rows, cols, counts);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

// C (m x n, column-major, ldc = m) = A^T B for int8 A (k x m) and B (k x n), both column-major with
// leading dimension k: exact int32.
void int8_product(cublasHandle_t handle, const std::int8_t* a, const std::int8_t* b, std::int64_t m, std::int64_t n,
                  std::int64_t k, std::int32_t* c) {
  const std::int32_t one = 1, zero = 0;
  CONVERGENT_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, checked_int(m, "one-hot columns"),
                                       checked_int(n, "one-hot columns"), checked_int(k, "chunk rows"), &one, a,
                                       CUDA_R_8I, checked_int(k, "chunk rows"), b, CUDA_R_8I,
                                       checked_int(k, "chunk rows"), &zero, c, CUDA_R_32I, checked_int(m, "ldc"),
                                       CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT));
}

std::string mib(double bytes) { return std::to_string(static_cast<long long>(bytes / double(1 << 20))) + " MiB"; }

class CudaJointCounter final : public JointCounter {
 public:
  CudaJointCounter(int device, std::int64_t row_units, std::optional<std::int64_t> col_units,
                   const JointCountOptions& options)
      : JointCounter(row_units, col_units, options), scope_(device), device_(device) {
    const std::int64_t s = options.bins;
    n_r_ = row_units * s;
    n_c_ = this->col_units() * s;
    n_r_pad_ = pad(n_r_);
    n_c_pad_ = pad(n_c_);
    const std::int64_t one_hot_cols = n_r_pad_ + (symmetric() ? 0 : n_c_pad_);
    chunk_rows_ = std::max<std::int64_t>(kPad, kOneHotBytes / one_hot_cols / kPad * kPad);
    chunk_rows_ = std::min(chunk_rows_, pad(options.max_batch_rows));
    const std::int64_t staged_units = row_units + (symmetric() ? 0 : this->col_units());
    const double need = 8.0 * double(n_r_) * double(n_c_) + 4.0 * double(n_r_pad_) * double(n_c_pad_) +
                        double(one_hot_cols) * double(chunk_rows_) + double(staged_units * chunk_rows_);
    const DeviceMemoryInfo info = device_memory_info();
    if (need + double(kReserveBytes) > double(info.free_bytes))
      throw Error("CUDA backend: the joint counts of " + std::to_string(row_units) + " x " +
                  std::to_string(this->col_units()) + " units in " + std::to_string(s) + " bins need " + mib(need) +
                  " of device memory, but " + mib(double(info.free_bytes)) +
                  " are free; lower the memory budget (--mi-memory) so that the pairs are counted in blocks");
    staging_ = PinnedBuffer<std::uint8_t>(staged_units * chunk_rows_);
    bins_ = DeviceBuffer<std::uint8_t>(staged_units * chunk_rows_);
    one_hot_r_ = DeviceBuffer<std::int8_t>(n_r_pad_ * chunk_rows_);
    if (!symmetric()) one_hot_c_ = DeviceBuffer<std::int8_t>(n_c_pad_ * chunk_rows_);
    product_ = DeviceBuffer<std::int32_t>(n_r_pad_ * n_c_pad_);
    counts_ = DeviceBuffer<std::int64_t>(n_r_ * n_c_);
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(counts_.data(), 0, counts_.bytes(), stream_.handle()));
    stream_.synchronize();
    scope_.leave();
  }

  CudaJointCounter(const CudaJointCounter&) = delete;
  CudaJointCounter& operator=(const CudaJointCounter&) = delete;
  ~CudaJointCounter() override {
    scope_.enter();
    cudaStreamSynchronize(stream_.handle());  // queued work reads the buffers; errors cannot be acted on here
  }

  JointCounts counts() override {
    DeviceGuard guard(device_);
    JointCounts result;
    result.row_units = row_units();
    result.col_units = col_units();
    result.bins = options().bins;
    result.samples = samples_;
    result.values.resize(static_cast<std::size_t>(n_r_ * n_c_));
    copy_async(result.values.data(), counts_.data(), n_r_ * n_c_, cudaMemcpyDeviceToHost, stream_.ref());
    stream_.synchronize();
    return result;
  }

 protected:
  void do_add(MatrixView<const std::uint8_t> row_bins, MatrixView<const std::uint8_t> col_bins) override {
    DeviceGuard guard(device_);
    const std::int64_t ru = row_units(), cu = symmetric() ? 0 : col_units();
    for (std::int64_t first = 0; first < row_bins.rows; first += chunk_rows_) {
      const std::int64_t rows = std::min(chunk_rows_, row_bins.rows - first), k = pad(rows);
      // The pinned staging is refilled once the previous chunk's copy (and everything before it) is done.
      stream_.synchronize();
      std::uint8_t* host = staging_.data();
      for (std::int64_t r = 0; r < rows; ++r) {
        std::memcpy(host + r * ru, row_bins.row(first + r), static_cast<std::size_t>(ru));
        if (cu > 0) std::memcpy(host + rows * ru + r * cu, col_bins.row(first + r), static_cast<std::size_t>(cu));
      }
      copy_async(bins_.data(), host, rows * (ru + cu), cudaMemcpyHostToDevice, stream_.ref());
      CONVERGENT_CUDA_CHECK(cudaMemsetAsync(one_hot_r_.data(), 0, static_cast<std::size_t>(n_r_pad_ * k), stream_.handle()));
      launch_one_hot(bins_.data(), rows, ru, options().bins, one_hot_r_.data(), k, stream_.ref());
      const std::int8_t* y_c = one_hot_r_.data();
      if (cu > 0) {
        CONVERGENT_CUDA_CHECK(cudaMemsetAsync(one_hot_c_.data(), 0, static_cast<std::size_t>(n_c_pad_ * k), stream_.handle()));
        launch_one_hot(bins_.data() + rows * ru, rows, cu, options().bins, one_hot_c_.data(), k, stream_.ref());
        y_c = one_hot_c_.data();
      }
      // Row-major (n_r_pad x n_c_pad) C = Y_r^T Y_c is column-major C^T = Y_c^T Y_r.
      int8_product(cublas_.get(), y_c, one_hot_r_.data(), n_c_pad_, n_r_pad_, k, product_.data());
      launch_accumulate(product_.data(), n_c_pad_, n_r_, n_c_, counts_.data(), stream_.ref());
    }
    samples_ += row_bins.rows;
  }

 private:
  DeviceScope scope_;  // first: the members below are made and released with the device current
  int device_;
  Stream stream_;
  CublasHandle cublas_{stream_.ref()};
  std::int64_t n_r_ = 0, n_c_ = 0, n_r_pad_ = 0, n_c_pad_ = 0, chunk_rows_ = 0;
  std::int64_t samples_ = 0;
  PinnedBuffer<std::uint8_t> staging_;
  DeviceBuffer<std::uint8_t> bins_;
  DeviceBuffer<std::int8_t> one_hot_r_, one_hot_c_;
  DeviceBuffer<std::int32_t> product_;
  DeviceBuffer<std::int64_t> counts_;
};

}  // namespace

std::unique_ptr<JointCounter> make_cuda_joint_counter(int device, std::int64_t row_units,
                                                      std::optional<std::int64_t> col_units,
                                                      const JointCountOptions& options) {
  return std::make_unique<CudaJointCounter>(device, row_units, col_units, options);
}

}  // namespace convergent::cuda

namespace convergent::detail {

double measure_int8_gemm_ceiling(std::int64_t rows, std::int64_t cols) {
  using namespace convergent::cuda;
  const BackendStatus status = cuda_backend_status({});
  if (!status.usable) throw Error("CUDA backend not usable: " + status.detail);
  DeviceGuard guard(0);
  const std::int64_t n = pad(cols);
  const std::int64_t k = std::min(pad(rows), std::max<std::int64_t>(kPad, kOneHotBytes / n / kPad * kPad));
  Stream stream;
  CublasHandle cublas(stream.ref());
  DeviceBuffer<std::int8_t> y(n * k);
  DeviceBuffer<std::int32_t> c(n * n);
  CONVERGENT_CUDA_CHECK(cudaMemsetAsync(y.data(), 1, y.bytes(), stream.handle()));
  Event start(true), stop(true);
  for (int w = 0; w < 2; ++w) int8_product(cublas.get(), y.data(), y.data(), n, n, k, c.data());
  constexpr int kRepeats = 5;
  start.record(stream.ref());
  for (int r = 0; r < kRepeats; ++r) int8_product(cublas.get(), y.data(), y.data(), n, n, k, c.data());
  stop.record(stream.ref());
  stop.synchronize();
  const double seconds = stop.elapsed_ms_since(start) * 1e-3 / kRepeats;
  return 2.0 * double(n) * double(n) * double(k) / seconds;
}

}  // namespace convergent::detail

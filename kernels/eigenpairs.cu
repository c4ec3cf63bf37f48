// cusolverDnDsyevdx with an index range [1, k]: like the reference's dsyevr('I'), it back-transforms
// only the k eigenvectors asked for, where syevd would form all n (n^2 doubles of output and an n^3
// back-transformation, when spectral clustering wants a handful).
#include <vector>

#include "eigenpairs.cuh"

namespace convergent::cuda {

Eigenpairs smallest_eigenpairs_on_device(cusolverDnHandle_t handle, StreamRef stream, MatrixView<const double> a,
                                         std::int64_t k) {
  const int n = checked_int(a.rows, "eigenproblem order");
  const int kk = static_cast<int>(k);
  CONVERGENT_CUSOLVER_CHECK(cusolverDnSetStream(handle, stream.handle));

  DeviceBuffer<double> matrix(std::int64_t{n} * n);
  DeviceBuffer<double> values(n);
  DeviceBuffer<int> info(1);
  CONVERGENT_CUDA_CHECK(cudaMemcpy2DAsync(matrix.data(), sizeof(double) * n, a.data, sizeof(double) * a.stride,
                                          sizeof(double) * n, static_cast<std::size_t>(n), cudaMemcpyHostToDevice,
                                          stream.handle));
  // The row-major upper triangle is the column-major lower one.
  const auto uplo = CUBLAS_FILL_MODE_LOWER;
  const auto jobz = CUSOLVER_EIG_MODE_VECTOR;
  const auto range = CUSOLVER_EIG_RANGE_I;
  int found = 0;
  int lwork = 0;
  CONVERGENT_CUSOLVER_CHECK(cusolverDnDsyevdx_bufferSize(handle, jobz, range, uplo, n, matrix.data(), n, 0.0, 0.0, 1,
                                                         kk, &found, values.data(), &lwork));
  DeviceBuffer<double> work(lwork);
  CONVERGENT_CUSOLVER_CHECK(cusolverDnDsyevdx(handle, jobz, range, uplo, n, matrix.data(), n, 0.0, 0.0, 1, kk, &found,
                                              values.data(), work.data(), lwork, info.data()));

  // Column-major: eigenvector j is the contiguous column matrix[j * n, (j + 1) * n).
  std::vector<double> host_values(static_cast<std::size_t>(kk));
  std::vector<double> host_vectors(static_cast<std::size_t>(kk) * n);
  int host_info = 0;
  copy_async(host_values.data(), values.data(), kk, cudaMemcpyDeviceToHost, stream);
  copy_async(host_vectors.data(), matrix.data(), std::int64_t{kk} * n, cudaMemcpyDeviceToHost, stream);
  copy_async(&host_info, info.data(), 1, cudaMemcpyDeviceToHost, stream);
  stream.synchronize();
  if (host_info != 0 || found != kk)
    throw Error("cuSOLVER Dsyevdx failed: info " + std::to_string(host_info) + ", " + std::to_string(found) + " of " +
                std::to_string(kk) + " eigenpairs found");

  Eigenpairs result;
  result.values = std::move(host_values);
  result.vectors = Matrix(n, kk);
  for (int j = 0; j < kk; ++j)
    for (int i = 0; i < n; ++i) result.vectors(i, j) = host_vectors[static_cast<std::size_t>(j) * n + i];
  return result;
}

}  // namespace convergent::cuda

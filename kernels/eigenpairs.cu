// smallest_eigenpairs: cusolverDnDsyevdx with an index range [1, k]: like the reference's dsyevr('I'), it
// back-transforms only the k eigenvectors asked for, where syevd would form all n (n^2 doubles of output and
// an n^3 back-transformation, when spectral clustering wants a handful). symmetric_eigenpairs: syevd, every
// pair (the similarity indices whiten with all of them). singular_value_decomposition: gesvd.
#include <algorithm>
#include <string>
#include <vector>

#include "eigenpairs.cuh"

namespace convergent::cuda {
namespace {

// Binds cuSOLVER to `stream` and copies the symmetric n x n host matrix `a` to the device. Its row-major
// upper triangle is the column-major lower one, which the solvers are told to read (CUBLAS_FILL_MODE_LOWER).
DeviceBuffer<double> upload_symmetric(cusolverDnHandle_t handle, StreamRef stream, MatrixView<const double> a, int n) {
  CONVERGENT_CUSOLVER_CHECK(cusolverDnSetStream(handle, stream.handle));
  DeviceBuffer<double> matrix(std::int64_t{n} * n);
  CONVERGENT_CUDA_CHECK(cudaMemcpy2DAsync(matrix.data(), sizeof(double) * n, a.data, sizeof(double) * a.stride,
                                          sizeof(double) * n, static_cast<std::size_t>(n), cudaMemcpyHostToDevice,
                                          stream.handle));
  return matrix;
}

// The first k columns of a column-major n x k host buffer as an n x k Matrix.
Matrix from_columns(const std::vector<double>& column_major, int n, int k) {
  Matrix m(n, k);
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < n; ++i) m(i, j) = column_major[static_cast<std::size_t>(j) * n + i];
  return m;
}

}  // namespace

Eigenpairs smallest_eigenpairs_on_device(cusolverDnHandle_t handle, StreamRef stream, MatrixView<const double> a,
                                         std::int64_t k) {
  const int n = checked_int(a.rows, "eigenproblem order");
  const int kk = static_cast<int>(k);
  DeviceBuffer<double> matrix = upload_symmetric(handle, stream, a, n);
  DeviceBuffer<double> values(n);
  DeviceBuffer<int> info(1);
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
  result.vectors = from_columns(host_vectors, n, kk);
  return result;
}

Eigenpairs symmetric_eigenpairs_on_device(cusolverDnHandle_t handle, StreamRef stream, MatrixView<const double> a) {
  const int n = checked_int(a.rows, "eigenproblem order");
  DeviceBuffer<double> matrix = upload_symmetric(handle, stream, a, n);
  DeviceBuffer<double> values(n);
  DeviceBuffer<int> info(1);
  const auto uplo = CUBLAS_FILL_MODE_LOWER;
  const auto jobz = CUSOLVER_EIG_MODE_VECTOR;
  int lwork = 0;
  CONVERGENT_CUSOLVER_CHECK(cusolverDnDsyevd_bufferSize(handle, jobz, uplo, n, matrix.data(), n, values.data(), &lwork));
  DeviceBuffer<double> work(lwork);
  CONVERGENT_CUSOLVER_CHECK(
      cusolverDnDsyevd(handle, jobz, uplo, n, matrix.data(), n, values.data(), work.data(), lwork, info.data()));
  Eigenpairs result;
  result.values.resize(static_cast<std::size_t>(n));
  std::vector<double> column_major(static_cast<std::size_t>(n) * n);
  int host_info = 0;
  copy_async(result.values.data(), values.data(), n, cudaMemcpyDeviceToHost, stream);
  copy_async(column_major.data(), matrix.data(), std::int64_t{n} * n, cudaMemcpyDeviceToHost, stream);
  copy_async(&host_info, info.data(), 1, cudaMemcpyDeviceToHost, stream);
  stream.synchronize();
  if (host_info != 0) throw Error("symmetric_eigenpairs: cuSOLVER Dsyevd failed (info " + std::to_string(host_info) + ")");
  result.vectors = from_columns(column_major, n, n);
  return result;
}

SingularValueDecomposition singular_value_decomposition_on_device(cusolverDnHandle_t handle, StreamRef stream,
                                                                  MatrixView<const double> m, bool vectors) {
  const std::int64_t rows = m.rows, cols = m.cols, r = std::min(rows, cols);
  // The column-major problem cuSOLVER solves: wide m as its row-major buffer (m^T, cols x rows), tall m
  // transposed on the host (m itself, rows x cols). Either way p >= q.
  const bool wide = cols >= rows;
  const int p = checked_int(wide ? cols : rows, "SVD rows"), q = checked_int(wide ? rows : cols, "SVD columns");
  std::vector<double> host(static_cast<std::size_t>(p) * q);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j)
      host[static_cast<std::size_t>(wide ? i * cols + j : j * rows + i)] = m(i, j);
  CONVERGENT_CUSOLVER_CHECK(cusolverDnSetStream(handle, stream.handle));
  DeviceBuffer<double> matrix(std::int64_t{p} * q), values(q), u(vectors ? std::int64_t{p} * q : 1),
      vt(vectors ? std::int64_t{q} * q : 1);
  DeviceBuffer<int> info(1);
  copy_async(matrix.data(), host.data(), std::int64_t{p} * q, cudaMemcpyHostToDevice, stream);
  int lwork = 0;
  CONVERGENT_CUSOLVER_CHECK(cusolverDnDgesvd_bufferSize(handle, p, q, &lwork));
  DeviceBuffer<double> work(lwork), unconverged(q);
  const signed char job = vectors ? 'S' : 'N';
  CONVERGENT_CUSOLVER_CHECK(cusolverDnDgesvd(handle, job, job, p, q, matrix.data(), p, values.data(), u.data(), p,
                                             vt.data(), q, work.data(), lwork, unconverged.data(), info.data()));
  SingularValueDecomposition s;
  s.values.resize(static_cast<std::size_t>(r));
  std::vector<double> left(vectors ? static_cast<std::size_t>(p) * q : 0), right(vectors ? static_cast<std::size_t>(q) * q : 0);
  int host_info = 0;
  copy_async(s.values.data(), values.data(), q, cudaMemcpyDeviceToHost, stream);
  if (vectors) {
    copy_async(left.data(), u.data(), std::int64_t{p} * q, cudaMemcpyDeviceToHost, stream);
    copy_async(right.data(), vt.data(), std::int64_t{q} * q, cudaMemcpyDeviceToHost, stream);
  }
  copy_async(&host_info, info.data(), 1, cudaMemcpyDeviceToHost, stream);
  stream.synchronize();
  if (host_info != 0)
    throw Error("singular_value_decomposition: cuSOLVER Dgesvd failed (info " + std::to_string(host_info) + ")");
  if (!vectors) return s;
  // Column-major U (p x q) and VT (q x q) of the solved problem X = U S VT.
  s.u = Matrix(rows, r);
  s.vt = Matrix(r, cols);
  if (wide) {
    // X = m^T, so m = VT^T S U^T: m's U is VT^T (rows x r), m's Vt is U^T (r x cols); a column-major
    // matrix read row-major is its transpose, so both are the buffers as they are.
    std::copy(right.begin(), right.end(), s.u.data());
    std::copy(left.begin(), left.end(), s.vt.data());
  } else {
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t k = 0; k < r; ++k) s.u(i, k) = left[static_cast<std::size_t>(k * rows + i)];
    for (std::int64_t k = 0; k < r; ++k)
      for (std::int64_t j = 0; j < cols; ++j) s.vt(k, j) = right[static_cast<std::size_t>(j * r + k)];
  }
  return s;
}

}  // namespace convergent::cuda

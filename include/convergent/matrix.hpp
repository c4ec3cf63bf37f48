// Row-major matrix views (non-owning) and an owning row-major matrix of doubles. Views are checked once
// where they enter the library; inside, code trusts them.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

namespace convergent {

template <class T>
struct MatrixView {
  T* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t stride = 0;  // elements between the starts of consecutive rows

  T& operator()(std::int64_t r, std::int64_t c) const { return data[r * stride + c]; }
  T* row(std::int64_t r) const { return data + r * stride; }
  // A view of const elements converts implicitly from a view of mutable ones.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  MatrixView(const MatrixView<U>& other)  // NOLINT(google-explicit-constructor)
      : data(other.data), rows(other.rows), cols(other.cols), stride(other.stride) {}
  MatrixView() = default;
  MatrixView(T* data_, std::int64_t rows_, std::int64_t cols_, std::int64_t stride_)
      : data(data_), rows(rows_), cols(cols_), stride(stride_) {}
  MatrixView(T* data_, std::int64_t rows_, std::int64_t cols_)
      : data(data_), rows(rows_), cols(cols_), stride(cols_) {}
};

class Matrix {
 public:
  Matrix() = default;
  Matrix(std::int64_t rows, std::int64_t cols, double fill = 0.0)
      : rows_(rows), cols_(cols), values_(static_cast<std::size_t>(rows * cols), fill) {}

  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  double* data() { return values_.data(); }
  const double* data() const { return values_.data(); }
  double& operator()(std::int64_t r, std::int64_t c) { return values_[r * cols_ + c]; }
  double operator()(std::int64_t r, std::int64_t c) const { return values_[r * cols_ + c]; }
  MatrixView<double> view() { return {values_.data(), rows_, cols_, cols_}; }
  MatrixView<const double> view() const { return {values_.data(), rows_, cols_, cols_}; }
  // The block [r0, r0 + rows) x [c0, c0 + cols), as a view into this matrix.
  MatrixView<const double> block(std::int64_t r0, std::int64_t c0, std::int64_t rows, std::int64_t cols) const {
    return {values_.data() + r0 * cols_ + c0, rows, cols, cols_};
  }

 private:
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::vector<double> values_;
};

// Copies the upper triangle of a square matrix onto the lower one: a symmetric result that is exactly
// symmetric, whatever the rounding of the entries computed.
inline void fill_lower_triangle(Matrix& m) {
  for (std::int64_t i = 0; i < m.rows(); ++i)
    for (std::int64_t j = 0; j < i; ++j) m(i, j) = m(j, i);
}

}  // namespace convergent

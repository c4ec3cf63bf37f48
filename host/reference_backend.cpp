// CPU reference backend. Each batch: pack to float32 rows, check and summarise every column, centre on
// the batch mean, one SYRK (float32, multithreaded OpenBLAS), then the float64 Chan merge.
#include "reference_backend.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <thread>

#include "convergent/error.hpp"
#include "pack.hpp"

namespace convergent::detail {
namespace {

class ReferenceAccumulator final : public MomentAccumulator {
 public:
  ReferenceAccumulator(const std::vector<std::int64_t>& units_per_net, const AccumulateOptions& options)
      : options_(options), moments_(units_per_net) {
    if (options.precision != Precision::fp32)
      throw Error(std::string("precision ") + to_string(options.precision) +
                  " needs the CUDA backend; the CPU backend computes in fp32");
    const std::int64_t u = moments_.units();
    batch_.resize(static_cast<std::size_t>(options.max_batch_rows * u));
    product_.resize(static_cast<std::size_t>(u * u));
    batch_mean_.resize(static_cast<std::size_t>(u));
    batch_min_.resize(static_cast<std::size_t>(u));
    batch_max_.resize(static_cast<std::size_t>(u));
  }

  void add(const std::vector<ActivationBlock>& blocks) override {
    const std::int64_t u = moments_.units();
    if (blocks.size() != moments_.net_units.size()) throw Error("add: expected one block per net");
    std::int64_t rows = blocks.front().rows();
    if (rows > options_.max_batch_rows) throw Error("add: batch larger than max_batch_rows");
    MatrixView<float> x(batch_.data(), rows, u);
    for (std::size_t net = 0; net < blocks.size(); ++net) {
      if (blocks[net].rows() != rows || blocks[net].units != moments_.net_units[net])
        throw Error("add: blocks of one batch must have the same rows and the declared unit counts");
      pack_block(blocks[net], x, moments_.net_offset(static_cast<int>(net)));
    }
    rows = drop_or_reject_nonfinite(x);
    if (rows == 0) return;
    x.rows = rows;
    summarise_and_centre(x);
    // The float32 product of centred rows; float64 only for the merge (DESIGN.md, precision).
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(u), static_cast<int>(rows), 1.0f, x.data,
                static_cast<int>(u), 0.0f, product_.data(), static_cast<int>(u));
    const BatchMoments batch{rows, batch_mean_.data(), batch_min_.data(), batch_max_.data()};
    merge_batch(moments_, batch, MatrixView<const float>(product_.data(), u, u));
  }

  Moments moments() override {
    Moments result = moments_;
    fill_lower_triangle(result.comoment);
    return result;
  }

  std::int64_t skipped_rows() override { return skipped_; }

 private:
  // Returns the number of rows kept. Without skipping, the first non-finite value is an error.
  std::int64_t drop_or_reject_nonfinite(MatrixView<float> x) {
    std::int64_t kept = 0;
    for (std::int64_t r = 0; r < x.rows; ++r) {
      const float* row = x.row(r);
      bool finite = true;
      for (std::int64_t c = 0; c < x.cols; ++c) finite &= std::isfinite(row[c]);
      if (!finite) {
        if (!options_.skip_nonfinite_rows) {
          const std::int64_t c = std::find_if(row, row + x.cols, [](float v) { return !std::isfinite(v); }) - row;
          int net = 0;
          while (c >= moments_.net_offset(net + 1)) ++net;
          throw NonFiniteValueError(net, r, c - moments_.net_offset(net));
        }
        ++skipped_;
        continue;
      }
      if (kept != r) std::copy(row, row + x.cols, x.row(kept));
      ++kept;
    }
    return kept;
  }

  void summarise_and_centre(MatrixView<float> x) {
    const std::int64_t u = x.cols;
    std::fill(batch_mean_.begin(), batch_mean_.end(), 0.0);
    std::fill(batch_min_.begin(), batch_min_.end(), std::numeric_limits<double>::infinity());
    std::fill(batch_max_.begin(), batch_max_.end(), -std::numeric_limits<double>::infinity());
    for (std::int64_t r = 0; r < x.rows; ++r) {
      const float* row = x.row(r);
      for (std::int64_t c = 0; c < u; ++c) {
        batch_mean_[c] += row[c];
        batch_min_[c] = std::min(batch_min_[c], static_cast<double>(row[c]));
        batch_max_[c] = std::max(batch_max_[c], static_cast<double>(row[c]));
      }
    }
    for (auto& m : batch_mean_) m /= static_cast<double>(x.rows);
    for (std::int64_t r = 0; r < x.rows; ++r) {
      float* row = x.row(r);
      for (std::int64_t c = 0; c < u; ++c) row[c] = static_cast<float>(row[c] - batch_mean_[c]);
    }
  }

  AccumulateOptions options_;
  Moments moments_;  // comoment kept in its upper triangle until moments()
  std::vector<float> batch_;
  std::vector<float> product_;
  std::vector<double> batch_mean_, batch_min_, batch_max_;
  std::int64_t skipped_ = 0;
};

class ReferenceBackend final : public Backend {
 public:
  explicit ReferenceBackend(const BackendOptions& options)
      : threads_(options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency())) {
    openblas_set_num_threads(threads_);
  }

  BackendKind kind() const override { return BackendKind::cpu; }

  std::string description() const override {
    return "cpu (OpenBLAS, " + std::to_string(threads_) + (threads_ == 1 ? " thread)" : " threads)");
  }

  std::unique_ptr<MomentAccumulator> accumulator(const std::vector<std::int64_t>& units_per_net,
                                                 const AccumulateOptions& options) override {
    return std::make_unique<ReferenceAccumulator>(units_per_net, options);
  }

  Matrix correlation(const Moments& moments, const std::vector<bool>& dead) override {
    const std::int64_t u = moments.units();
    std::vector<double> scale(static_cast<std::size_t>(u));
    for (std::int64_t i = 0; i < u; ++i) scale[i] = dead[i] ? 0.0 : 1.0 / std::sqrt(moments.comoment(i, i));
    Matrix corr(u, u);
    for (std::int64_t i = 0; i < u; ++i) {
      for (std::int64_t j = i + 1; j < u; ++j)
        corr(i, j) = std::clamp(moments.comoment(i, j) * scale[i] * scale[j], -1.0, 1.0);
      corr(i, i) = dead[i] ? 0.0 : 1.0;
    }
    fill_lower_triangle(corr);  // exactly symmetric, whatever the rounding of the products
    return corr;
  }

  std::vector<std::int64_t> row_argmax(MatrixView<const double> m) override {
    std::vector<std::int64_t> best(static_cast<std::size_t>(m.rows), 0);
    for (std::int64_t r = 0; r < m.rows; ++r) {
      const double* row = m.row(r);
      best[r] = std::max_element(row, row + m.cols) - row;  // first maximum: ties go to the lower column
    }
    return best;
  }

  Eigenpairs smallest_eigenpairs(MatrixView<const double> a, std::int64_t k) override {
    const std::int64_t n = a.rows;
    if (a.cols != n) throw Error("smallest_eigenpairs: the matrix is not square");
    if (k < 1 || k > n) throw Error("smallest_eigenpairs: k = " + std::to_string(k) + " outside [1, " +
                                    std::to_string(n) + "]");
    std::vector<double> work(static_cast<std::size_t>(n * n));
    for (std::int64_t i = 0; i < n; ++i) std::copy(a.row(i), a.row(i) + n, work.data() + i * n);
    Eigenpairs result;
    result.values.resize(static_cast<std::size_t>(n));
    result.vectors = Matrix(n, k);
    std::vector<lapack_int> support(static_cast<std::size_t>(2 * k));
    lapack_int found = 0;
    // dsyevr with a index range computes only the k vectors asked for (MRRR).
    const lapack_int info = LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'I', 'U', static_cast<lapack_int>(n), work.data(),
                                           static_cast<lapack_int>(n), 0.0, 0.0, 1, static_cast<lapack_int>(k),
                                           0.0, &found, result.values.data(), result.vectors.data(),
                                           static_cast<lapack_int>(k), support.data());
    if (info != 0 || found != k) throw Error("LAPACK dsyevr failed (info " + std::to_string(info) + ")");
    result.values.resize(static_cast<std::size_t>(k));
    return result;
  }

 private:
  int threads_;
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend(const BackendOptions& options) {
  return std::make_unique<ReferenceBackend>(options);
}

}  // namespace convergent::detail

// The backend factory, the names of the enums, and the argument checks every backend shares (the public
// Backend functions check, then call the backend's do_ implementation).
#include "convergent/backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <thread>

#include "convergent/error.hpp"
#include "backend/cuda_backend.hpp"
#include "cpu/parallel.hpp"
#include "cpu/reference_backend.hpp"

namespace convergent {

const char* to_string(BackendKind kind) { return kind == BackendKind::cpu ? "cpu" : "cuda"; }

const char* to_string(Precision precision) {
  switch (precision) {
    case Precision::fp32: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& text) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16})
    if (text == to_string(p)) return p;
  throw Error("unknown precision '" + text + "': expected fp32, tf32 or bf16");
}

namespace {

// Index of the first NaN or infinity in v[0, n), or n. x - x is 0 for every finite x and NaN otherwise;
// eight independent sums over blocks keep the common all-finite case at memory speed.
template <class T>
std::int64_t first_non_finite(const T* v, std::int64_t n) {
  constexpr std::int64_t block = 64;
  std::int64_t start = 0;
  for (; start + block <= n; start += block) {
    T sums[8] = {};
    for (std::int64_t i = 0; i < block; i += 8)
      for (int lane = 0; lane < 8; ++lane) sums[lane] += v[start + i + lane] - v[start + i + lane];
    T all = 0;
    for (T s : sums) all += s;
    if (all != 0 || std::isnan(all)) break;  // a NaN somewhere in this block: find it below
  }
  for (; start < n; ++start)
    if (!std::isfinite(v[start])) return start;
  return n;
}

// A number as %g writes it: "1e-09", "0", "-0.001", "nan".
std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

template <class T>
std::string shape_of(MatrixView<const T> m) {
  return std::to_string(m.rows) + " x " + std::to_string(m.cols);
}

// What every view handed to a backend must satisfy; `op` names the operation in the message.
template <class T>
void check_view(const char* op, MatrixView<const T> m) {
  if (m.rows < 0 || m.cols < 0) throw Error(std::string(op) + ": negative matrix dimensions " + shape_of(m));
  if (m.rows > 1 && m.stride < m.cols)
    throw Error(std::string(op) + ": row stride " + std::to_string(m.stride) + " is below the column count " +
                std::to_string(m.cols));
  if (m.data == nullptr && m.rows > 0 && m.cols > 0) throw Error(std::string(op) + ": the matrix has no data");
}

// A view that holds no NaN or infinity (the first one in row-major order is named), square when asked.
template <class T>
void check_finite_matrix(const char* op, MatrixView<const T> a, bool square) {
  check_view(op, a);
  if (square && a.cols != a.rows) throw Error(std::string(op) + ": the matrix is " + shape_of(a) + ", not square");
  for (std::int64_t i = 0; i < a.rows; ++i) {
    const std::int64_t j = first_non_finite(a.row(i), a.cols);
    if (j < a.cols)
      throw Error(std::string(op) + ": the matrix holds " + std::string(std::isnan(a(i, j)) ? "NaN" : "an infinity") +
                  " at (" + std::to_string(i) + ", " + std::to_string(j) + ")");
  }
}

template <class T>
void check_eigen_arguments(MatrixView<const T> a, std::int64_t k, const EigenOptions& options) {
  check_view("smallest_eigenpairs", a);
  if (a.cols != a.rows) throw Error("smallest_eigenpairs: the matrix is " + shape_of(a) + ", not square");
  if (k < 1 || k > a.rows)
    throw Error("smallest_eigenpairs: k = " + std::to_string(k) + " outside [1, " + std::to_string(a.rows) + "]");
  if (!(options.relative_residual > 0.0))
    throw Error("smallest_eigenpairs: the residual tolerance must be positive, not " +
                number(options.relative_residual));
  check_finite_matrix("smallest_eigenpairs", a, true);
}

}  // namespace

void MomentAccumulator::add(const std::vector<ActivationBlock>& blocks) {
  if (blocks.size() != net_units_.size())
    throw Error("add: " + std::to_string(blocks.size()) + " blocks for " + std::to_string(net_units_.size()) +
                " nets; expected one block per net");
  const std::int64_t rows = blocks.front().rows();
  if (rows > options_.max_batch_rows)
    throw Error("add: batch of " + std::to_string(rows) + " rows is larger than max_batch_rows (" +
                std::to_string(options_.max_batch_rows) + ")");
  for (std::size_t net = 0; net < blocks.size(); ++net) {
    const ActivationBlock& b = blocks[net];
    if (b.images < 0 || b.height < 1 || b.width < 1 || b.rows() != rows || b.units != net_units_[net])
      throw Error("add: blocks of one batch must have the same rows and the declared unit counts (net " +
                  std::to_string(net) + ": " + std::to_string(b.rows()) + " rows x " + std::to_string(b.units) +
                  " units, expected " + std::to_string(rows) + " x " + std::to_string(net_units_[net]) + ")");
    if (b.data == nullptr && rows > 0) throw Error("add: net " + std::to_string(net) + " has no data");
    if (b.device >= 0 && b.device != device())
      throw Error("add: net " + std::to_string(net) + "'s block is in the memory of CUDA device " +
                  std::to_string(b.device) + ", but this accumulator computes on " +
                  (device() < 0 ? std::string("the host") : "CUDA device " + std::to_string(device())) +
                  "; hand over host memory, or use the CUDA backend on that device");
  }
  if (rows > 0) do_add(blocks);
}

namespace {

// What every bin-index view handed to JointCounter::add must satisfy; `which` names it in the message.
void check_bin_view(const char* which, MatrixView<const std::uint8_t> bins, std::int64_t units, std::int64_t bins_per_unit) {
  if (bins.rows < 0 || bins.cols != units)
    throw Error(std::string("add: ") + which + " is " + std::to_string(bins.rows) + " x " + std::to_string(bins.cols) +
                "; expected rows x " + std::to_string(units) + " (one bin index per unit)");
  if (bins.rows > 1 && bins.stride < bins.cols)
    throw Error(std::string("add: ") + which + " has row stride " + std::to_string(bins.stride) +
                ", below its column count " + std::to_string(bins.cols));
  if (bins.data == nullptr && bins.rows > 0) throw Error(std::string("add: ") + which + " has no data");
  // Indices past the last bin would count outside their unit's block: refused, the first one named. A
  // maximum per row keeps the common case at memory speed.
  for (std::int64_t r = 0; r < bins.rows; ++r) {
    const std::uint8_t* row = bins.row(r);
    std::uint8_t largest = 0;
    for (std::int64_t u = 0; u < units; ++u) largest = std::max(largest, row[u]);
    if (largest < bins_per_unit) continue;
    for (std::int64_t u = 0; u < units; ++u)
      if (row[u] >= bins_per_unit)
        throw Error(std::string("add: ") + which + " has bin index " + std::to_string(row[u]) + " at row " +
                    std::to_string(r) + ", unit " + std::to_string(u) + "; indices must be below bins = " +
                    std::to_string(bins_per_unit));
  }
}

}  // namespace

void JointCounter::add(MatrixView<const std::uint8_t> row_bins, std::optional<MatrixView<const std::uint8_t>> col_bins) {
  if (symmetric_ && col_bins)
    throw Error("add: column bins given to a symmetric counter; it counts the row units against themselves");
  if (!symmetric_ && !col_bins)
    throw Error("add: a rectangular counter needs the column units' bins as well");
  if (col_bins && col_bins->rows != row_bins.rows)
    throw Error("add: " + std::to_string(row_bins.rows) + " rows of row bins but " + std::to_string(col_bins->rows) +
                " rows of column bins; both hold the same sample rows");
  if (row_bins.rows > options_.max_batch_rows)
    throw Error("add: batch of " + std::to_string(row_bins.rows) + " rows is larger than max_batch_rows (" +
                std::to_string(options_.max_batch_rows) + ")");
  check_bin_view("row bins", row_bins, row_units_, options_.bins);
  if (col_bins) check_bin_view("column bins", *col_bins, col_units_, options_.bins);
  if (row_bins.rows > 0) do_add(row_bins, col_bins ? *col_bins : row_bins);
}

std::unique_ptr<JointCounter> Backend::joint_counter(std::int64_t row_units, std::optional<std::int64_t> col_units,
                                                     const JointCountOptions& options) {
  if (row_units < 1 || (col_units && *col_units < 1))
    throw Error("joint_counter: " + std::to_string(row_units) + " row units and " +
                std::to_string(col_units.value_or(row_units)) + " column units; each side needs at least one");
  if (options.bins < 1 || options.bins > 256)
    throw Error("joint_counter: bins = " + std::to_string(options.bins) + " outside [1, 256] (indices are uint8)");
  if (options.max_batch_rows < 1 || options.max_batch_rows > std::int64_t{2147483647})
    throw Error("joint_counter: max_batch_rows = " + std::to_string(options.max_batch_rows) +
                " outside [1, 2^31 - 1] (a batch's counts are int32 before they join the int64 totals)");
  return do_joint_counter(row_units, col_units, options);
}

std::unique_ptr<MomentAccumulator> Backend::accumulator(const std::vector<std::int64_t>& units_per_net,
                                                        const AccumulateOptions& options) {
  if (units_per_net.empty()) throw Error("accumulator: no nets; give the unit count of at least one");
  for (std::size_t net = 0; net < units_per_net.size(); ++net)
    if (units_per_net[net] < 1)
      throw Error("accumulator: net " + std::to_string(net) + " has " + std::to_string(units_per_net[net]) +
                  " units; every net needs at least one");
  if (options.max_batch_rows < 1)
    throw Error("accumulator: max_batch_rows must be at least 1, not " + std::to_string(options.max_batch_rows));
  return do_accumulator(units_per_net, options);
}

namespace {

// The arguments of Backend::correlation and take_correlation, checked alike.
void check_correlation_arguments(const Moments& moments, const std::vector<bool>& dead) {
  const std::int64_t u = moments.units();
  if (moments.comoment.rows() != u || moments.comoment.cols() != u)
    throw Error("correlation: the comoment is " + std::to_string(moments.comoment.rows()) + " x " +
                std::to_string(moments.comoment.cols()) + ", but the moments have " + std::to_string(u) + " units");
  if (static_cast<std::int64_t>(dead.size()) != u)
    throw Error("correlation: `dead` has " + std::to_string(dead.size()) + " entries for " + std::to_string(u) +
                " units");
  const MatrixView<const double> m2 = moments.comoment.view();
  for (std::int64_t i = 0; i < u; ++i) {
    const std::int64_t j = first_non_finite(m2.row(i), u);
    if (j < u)
      throw Error("correlation: the comoment holds " + std::string(std::isnan(m2(i, j)) ? "NaN" : "an infinity") +
                  " at (" + std::to_string(i) + ", " + std::to_string(j) + ")");
    if (!dead[i] && !(m2(i, i) > 0.0))
      throw Error("correlation: unit " + std::to_string(i) + " has variance " + number(m2(i, i)) +
                  " but is not flagged dead; flag it (dead_units) or its correlations would be NaN");
  }
}

}  // namespace

Matrix Backend::correlation(const Moments& moments, const std::vector<bool>& dead) {
  check_correlation_arguments(moments, dead);
  Matrix corr = moments.comoment;
  do_correlation(corr.view(), dead);
  return corr;
}

Matrix Backend::take_correlation(Moments& moments, const std::vector<bool>& dead) {
  check_correlation_arguments(moments, dead);
  Matrix corr = moments.release_comoment();
  do_correlation(corr.view(), dead);
  return corr;
}

std::vector<std::int64_t> Backend::row_argmax(MatrixView<const double> m) {
  check_view("row_argmax", m);
  if (m.rows > 0 && m.cols == 0)
    throw Error("row_argmax: a " + shape_of(m) + " matrix has no column to pick in its rows");
  if (m.rows == 0) return {};
  return do_row_argmax(m);
}

void Backend::row_argmax_nan(std::int64_t row, std::int64_t col) {
  throw Error("row_argmax: NaN at row " + std::to_string(row) + ", column " + std::to_string(col) +
              "; the matrix must hold no NaN");
}

Eigenpairs Backend::smallest_eigenpairs(MatrixView<const double> a, std::int64_t k, const EigenOptions& options) {
  check_eigen_arguments(a, k, options);
  return do_smallest_eigenpairs(a, k, options);
}

Eigenpairs Backend::smallest_eigenpairs(MatrixView<const float> a, std::int64_t k, const EigenOptions& options) {
  check_eigen_arguments(a, k, options);
  if (options.relative_residual < 1e-5)
    throw Error("smallest_eigenpairs: a float32 matrix supports residuals of 1e-5 and looser, not " +
                number(options.relative_residual));
  return do_smallest_eigenpairs(a, k, options);
}

Eigenpairs Backend::symmetric_eigenpairs(MatrixView<const double> a) {
  check_finite_matrix("symmetric_eigenpairs", a, true);
  if (a.rows == 0) return {};
  return do_symmetric_eigenpairs(a);
}

SingularValueDecomposition Backend::singular_value_decomposition(MatrixView<const double> m, bool vectors) {
  check_finite_matrix("singular_value_decomposition", m, false);
  if (m.rows == 0 || m.cols == 0) {
    SingularValueDecomposition none;
    if (vectors) none.u = Matrix(m.rows, 0), none.vt = Matrix(0, m.cols);
    return none;
  }
  return do_singular_value_decomposition(m, vectors);
}

std::unique_ptr<Backend> make_backend(BackendChoice choice, const BackendOptions& options) {
  switch (choice) {
    case BackendChoice::cpu: return detail::make_reference_backend(options);
    case BackendChoice::cuda: return detail::make_cuda_backend(options);
    case BackendChoice::automatic:
      if (detail::cuda_backend_status(options).usable) return detail::make_cuda_backend(options);
      return detail::make_reference_backend(options);
  }
  throw Error("unknown backend choice");
}

std::vector<BackendStatus> backend_status() {
  const int cores = thread_count(0);
  return {{BackendKind::cpu, true, true, "OpenBLAS, " + std::to_string(cores) + " cores"},
          detail::cuda_backend_status({})};
}

}  // namespace convergent

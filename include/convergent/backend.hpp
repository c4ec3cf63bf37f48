// The one Backend interface. The CPU reference (OpenBLAS/LAPACK) is both the CPU backend and the oracle
// for the CUDA backend; every operation exists in both, and conformance tests compare them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "convergent/activation.hpp"
#include "convergent/matrix.hpp"
#include "convergent/moments.hpp"

namespace convergent {

enum class BackendKind { cpu, cuda };
enum class BackendChoice { automatic, cpu, cuda };
// Element type of the batch product. fp32 is exact to ~1e-7 on correlations; the tensor-core modes are
// opt-in, GPU-only, and bench_corr reports their measured error.
enum class Precision { fp32, tf32, bf16 };

const char* to_string(BackendKind kind);
const char* to_string(Precision precision);
Precision parse_precision(const std::string& text);  // throws Error on an unknown name

struct AccumulateOptions {
  Precision precision = Precision::fp32;
  // Largest batch (in sample rows) that add() will be given; backends size their buffers from it.
  std::int64_t max_batch_rows = 65536;
  // Drop sample rows that hold a NaN or infinity in any net instead of failing on them.
  bool skip_nonfinite_rows = false;
};

// Streams batches into Moments. add() may return before the work is done (GPU backends queue it);
// moments() waits for it. The blocks handed to add() must stay valid until the next add() returns.
// add() checks its batch once, here, for every backend (the same words everywhere), then calls the
// backend's do_add.
class MomentAccumulator {
 public:
  virtual ~MomentAccumulator() = default;
  // One batch: the same sample rows of every net, one block per net in net order; a batch of no rows
  // adds nothing. Throws Error when the block count, a block's rows or unit count do not match the nets
  // the accumulator was made for, the batch has more than max_batch_rows rows, a block has no data, or a
  // block is in the memory of a device other than this accumulator's (see device());
  // throws NonFiniteValueError (net, row within this batch, unit) on a NaN or infinity unless rows are
  // skipped.
  void add(const std::vector<ActivationBlock>& batch);
  // Synchronises and returns the statistics of every row added so far.
  virtual Moments moments() = 0;
  // The statistics as moments() gives them, for an accumulator that is done: it may hand over its own
  // buffers instead of copying them (the reference backend moves its U x U comoment and frees its batch
  // product), after which it takes no more batches. The default copies.
  virtual Moments take_moments() { return moments(); }
  // Rows dropped because they held a non-finite value (skip_nonfinite_rows); synchronises.
  virtual std::int64_t skipped_rows() = 0;
  // The CUDA device this accumulator computes on, or -1 for the host. Blocks in device memory
  // (ActivationBlock::device >= 0) are read only by an accumulator on their device; add() refuses others.
  virtual int device() const { return -1; }

 protected:
  MomentAccumulator(std::vector<std::int64_t> units_per_net, const AccumulateOptions& options)
      : net_units_(std::move(units_per_net)), options_(options) {}
  const std::vector<std::int64_t>& net_units() const { return net_units_; }
  const AccumulateOptions& options() const { return options_; }
  // The implementation: called only with a batch that passed the checks, of at least one row.
  virtual void do_add(const std::vector<ActivationBlock>& batch) = 0;

 private:
  std::vector<std::int64_t> net_units_;
  AccumulateOptions options_;
};

// Joint bin counts of every pair of units, for mutual information (DESIGN.md: the joint counts are the
// product of one-hot bin indicators, N x (U S) transposed times itself). Exact integers on every backend.
struct JointCountOptions {
  // Bin slots per unit: every bin index handed to add() lies in [0, bins); at most 256 (indices are uint8).
  std::int64_t bins = 10;
  // Largest batch (sample rows) that add() will be given; backends size their buffers from it. At most
  // 2^31 - 1, so that a batch's counts fit the int32 of an integer GEMM before they join the int64 totals.
  std::int64_t max_batch_rows = 65536;
};

// Row-major (row_units * bins) x (col_units * bins) counts: entry (i * bins + a, j * bins + b) is the number
// of sample rows where row unit i is in bin a and column unit j in bin b. Memory: 8 (row_units bins)
// (col_units bins) bytes.
struct JointCounts {
  std::int64_t row_units = 0;
  std::int64_t col_units = 0;
  std::int64_t bins = 0;
  std::int64_t samples = 0;  // rows counted
  std::vector<std::int64_t> values;

  std::int64_t cols() const { return col_units * bins; }
  std::int64_t operator()(std::int64_t i, std::int64_t a, std::int64_t j, std::int64_t b) const {
    return values[static_cast<std::size_t>((i * bins + a) * cols() + j * bins + b)];
  }
};

// Streams batches of bin indices into JointCounts. A symmetric counter counts every pair of one set of
// units (all nets together); a rectangular one the pairs (row unit, column unit) of two sets (a block of
// that matrix, when the whole would not fit in memory). add() may return before the work is done (GPU
// backends queue it) but has copied what it needs: the views may change once it returns. add() checks
// its batch once, here, for every backend, then calls the backend's do_add.
class JointCounter {
 public:
  virtual ~JointCounter() = default;
  // One batch: row_bins (rows x row_units, row-major, one uint8 bin index per unit) and, for a rectangular
  // counter only, col_bins (the same rows x col_units). A batch of no rows adds nothing. Throws Error when
  // col_bins is given to a symmetric counter or missing for a rectangular one, the two views differ in
  // rows, a view's columns are not the counter's units, its stride is below its columns, it has no data,
  // the batch has more than max_batch_rows rows, or an index is not below `bins` (the first such one, by
  // row and unit, is named).
  void add(MatrixView<const std::uint8_t> row_bins,
           std::optional<MatrixView<const std::uint8_t>> col_bins = std::nullopt);
  // Synchronises and returns the counts of every row added so far (both triangles for a symmetric counter).
  virtual JointCounts counts() = 0;

  std::int64_t row_units() const { return row_units_; }
  std::int64_t col_units() const { return col_units_; }
  bool symmetric() const { return symmetric_; }
  const JointCountOptions& options() const { return options_; }

 protected:
  JointCounter(std::int64_t row_units, std::optional<std::int64_t> col_units, const JointCountOptions& options)
      : row_units_(row_units), col_units_(col_units.value_or(row_units)), symmetric_(!col_units), options_(options) {}
  // Called only with a checked batch of at least one row; col_bins is row_bins for a symmetric counter.
  virtual void do_add(MatrixView<const std::uint8_t> row_bins, MatrixView<const std::uint8_t> col_bins) = 0;

 private:
  std::int64_t row_units_;
  std::int64_t col_units_;
  bool symmetric_;
  JointCountOptions options_;
};

struct EigenOptions {
  // Largest accepted residual ||A x - lambda x|| relative to ||A||. From 1e-5 up, a backend may form
  // its matrix products in float32 (about twice as fast on the CPU); eigenvalues are then still good to
  // about the square of that, which is what spectral clustering needs.
  double relative_residual = 1e-9;
};

// Above this many rows the CPU backend never takes a dense eigensolver (ssyevr / dsyevr on an n x n
// copy): at n = 32768 the copy alone is 4 GiB in float32 and the tridiagonal reduction takes hours on one
// thread, so block Lanczos is the only solver there, runs to a larger budget, and an Error says so when it
// does not converge (a spectrum without gap among the smallest pairs). The memory plan counts the dense
// copy up to this size only.
inline constexpr std::int64_t max_dense_eigen_rows = 16384;

struct Eigenpairs {
  std::vector<double> values;  // ascending
  Matrix vectors;              // n x k, column j belongs to values[j]
};

// A thin singular value decomposition M = U diag(values) Vt of an m x n matrix, r = min(m, n).
struct SingularValueDecomposition {
  std::vector<double> values;  // r, descending, >= 0
  Matrix u;                    // m x r, orthonormal columns (empty when vectors were not asked for)
  Matrix vt;                   // r x n, orthonormal rows (empty when vectors were not asked for)
};

// Every public operation is a non-virtual function that checks its arguments, then calls the backend's
// protected do_ implementation: both backends refuse the same inputs with the same words (an Error whose
// text names the operation and the argument), and implementations trust what reaches them.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual BackendKind kind() const = 0;
  // One line for humans and summary.json, e.g. "cpu (OpenBLAS, 2 threads)".
  virtual std::string description() const = 0;

  // An accumulator for nets of `units_per_net` units each (in net order). Throws Error when there is no
  // net, a net has fewer than one unit, or options.max_batch_rows < 1; and when the backend cannot
  // compute in options.precision (the CPU backend: fp32 only) or lacks the memory for the buffers.
  std::unique_ptr<MomentAccumulator> accumulator(const std::vector<std::int64_t>& units_per_net,
                                                 const AccumulateOptions& options);
  // A joint counter of `row_units` units against `col_units` units, or of `row_units` against themselves
  // (symmetric) when col_units is not given. Throws Error when a unit count is below 1, options.bins is
  // outside [1, 256], options.max_batch_rows is outside [1, 2^31 - 1], or the counts would not fit the
  // backend's memory.
  std::unique_ptr<JointCounter> joint_counter(std::int64_t row_units, std::optional<std::int64_t> col_units,
                                              const JointCountOptions& options);
  // Pearson correlation of every pair of units (U x U, exactly symmetric, unit diagonal for live units).
  // Units flagged in `dead` get 0 everywhere, their diagonal included, so no NaN ever leaves this call.
  // Throws Error unless the comoment is U x U with U = moments.units(), `dead` has U entries, every
  // comoment entry is finite, and every unit not flagged dead has a positive variance (dead_units()
  // flags every unit whose variance is 0).
  Matrix correlation(const Moments& moments, const std::vector<bool>& dead);
  // The same correlation formed in the comoment's own storage: takes moments.comoment over
  // (Moments::release_comoment keeps its diagonal, so stddev() still works) and returns it turned into
  // the correlation, bit for bit what correlation() gives, so that one U x U float64 matrix is held
  // instead of two (8 U^2 bytes less: 8 GiB at U = 32768). Same errors as correlation(), thrown before
  // anything is taken.
  Matrix take_correlation(Moments& moments, const std::vector<bool>& dead);
  // Column of the largest entry of each row (rows entries); ties go to the lower column. NaN rule: a
  // NaN anywhere in `m` is an Error naming the first one in row-major order (a NaN compares false both
  // ways, so no answer for its row would mean anything); infinities are ordinary values. Also throws
  // Error for a view with rows > 0 and no columns, a stride below the column count, or no data.
  std::vector<std::int64_t> row_argmax(MatrixView<const double> m);
  // The k smallest eigenvalues (ascending) and their eigenvectors (n x k) of a symmetric n x n matrix.
  // Pass an exactly symmetric matrix: a backend may read either triangle, or both. Throws Error when
  // the matrix is not square or holds a NaN or infinity, k is outside [1, n], or
  // options.relative_residual is not positive.
  Eigenpairs smallest_eigenpairs(MatrixView<const double> symmetric, std::int64_t k, const EigenOptions& options);
  // The same for a float32 matrix, for tolerances of 1e-5 and looser (Error otherwise): half the memory
  // of a float64 one, which is what makes spectral clustering of large layers fast on the CPU.
  Eigenpairs smallest_eigenpairs(MatrixView<const float> symmetric, std::int64_t k, const EigenOptions& options);
  // Every eigenpair of a symmetric n x n matrix, to working precision (backward stable: residuals and
  // orthogonality within a small multiple of n x machine epsilon x ||A||): values ascending, vectors n x n
  // with column j for values[j]. Each vector's sign is the backend's own (either backend may return it
  // negated); for repeated eigenvalues any orthonormal basis of their space. The CPU's is LAPACK dsyevd,
  // CUDA's cuSOLVER Dn syevd (divide and conquer both). Pass an exactly symmetric matrix: a backend may
  // read either triangle. Throws Error when the matrix is not square or holds a NaN or infinity.
  Eigenpairs symmetric_eigenpairs(MatrixView<const double> symmetric);
  // The thin SVD of an m x n matrix (u and vt only when `vectors`), to working precision; singular vector
  // pairs (u_k, vt_k) are determined up to a common sign (and up to a rotation for repeated values).
  // CPU: LAPACK dgesdd; CUDA: cuSOLVER Dn gesvd. Throws Error when the matrix holds a NaN or infinity.
  SingularValueDecomposition singular_value_decomposition(MatrixView<const double> m, bool vectors);

 protected:
  // The implementations: called only with arguments that passed the checks above.
  virtual std::unique_ptr<MomentAccumulator> do_accumulator(const std::vector<std::int64_t>& units_per_net,
                                                            const AccumulateOptions& options) = 0;
  virtual std::unique_ptr<JointCounter> do_joint_counter(std::int64_t row_units, std::optional<std::int64_t> col_units,
                                                         const JointCountOptions& options) = 0;
  // Turns the U x U comoment in `m2` (exactly symmetric; scaled as Moments::comoment) into the
  // correlation, in place.
  virtual void do_correlation(MatrixView<double> m2, const std::vector<bool>& dead) = 0;
  // A NaN in `m` is reported through row_argmax_nan() (so that every backend throws the same Error).
  virtual std::vector<std::int64_t> do_row_argmax(MatrixView<const double> m) = 0;
  virtual Eigenpairs do_smallest_eigenpairs(MatrixView<const double> symmetric, std::int64_t k,
                                            const EigenOptions& options) = 0;
  virtual Eigenpairs do_smallest_eigenpairs(MatrixView<const float> symmetric, std::int64_t k,
                                            const EigenOptions& options) = 0;
  // Called with n >= 1, or m, n >= 1.
  virtual Eigenpairs do_symmetric_eigenpairs(MatrixView<const double> symmetric) = 0;
  virtual SingularValueDecomposition do_singular_value_decomposition(MatrixView<const double> m, bool vectors) = 0;

  // The one Error for a NaN met by do_row_argmax at (row, col), the first in row-major order.
  [[noreturn]] static void row_argmax_nan(std::int64_t row, std::int64_t col);
};

struct BackendOptions {
  int threads = 0;  // CPU threads; 0 = all cores
  int device = 0;   // CUDA device ordinal
};

// Throws Error naming the reason when the requested backend is not compiled or has no device.
// `automatic` picks CUDA when a device is usable, else the CPU.
std::unique_ptr<Backend> make_backend(BackendChoice choice, const BackendOptions& options = {});

struct BackendStatus {
  BackendKind kind;
  bool compiled;
  bool usable;
  std::string detail;  // device name, or why it is not usable
};
std::vector<BackendStatus> backend_status();

}  // namespace convergent

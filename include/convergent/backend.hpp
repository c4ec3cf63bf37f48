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
class MomentAccumulator {
 public:
  virtual ~MomentAccumulator() = default;
  // One batch: the same sample rows of every net, one block per net in net order. Throws
  // NonFiniteValueError (net, row within this batch, unit) on a NaN or infinity unless rows are skipped.
  virtual void add(const std::vector<ActivationBlock>& batch) = 0;
  // Synchronises and returns the statistics of every row added so far.
  virtual Moments moments() = 0;
  // Rows dropped because they held a non-finite value (skip_nonfinite_rows); synchronises.
  virtual std::int64_t skipped_rows() = 0;
};

struct EigenOptions {
  // Largest accepted residual ||A x - lambda x|| relative to ||A||. From 1e-5 up, a backend may form
  // its matrix products in float32 (about twice as fast on the CPU); eigenvalues are then still good to
  // about the square of that, which is what spectral clustering needs.
  double relative_residual = 1e-9;
};

struct Eigenpairs {
  std::vector<double> values;  // ascending
  Matrix vectors;              // n x k, column j belongs to values[j]
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual BackendKind kind() const = 0;
  // One line for humans and summary.json, e.g. "cpu (OpenBLAS, 2 threads)".
  virtual std::string description() const = 0;

  virtual std::unique_ptr<MomentAccumulator> accumulator(const std::vector<std::int64_t>& units_per_net,
                                                         const AccumulateOptions& options) = 0;
  // Pearson correlation of every pair of units (U x U). Units flagged in `dead` get 0 everywhere,
  // their diagonal included, so no NaN ever leaves this call.
  virtual Matrix correlation(const Moments& moments, const std::vector<bool>& dead) = 0;
  // Column of the largest entry of each row; ties go to the lower column.
  virtual std::vector<std::int64_t> row_argmax(MatrixView<const double> m) = 0;
  // The k smallest eigenvalues (ascending) and their eigenvectors of a symmetric n x n matrix.
  virtual Eigenpairs smallest_eigenpairs(MatrixView<const double> symmetric, std::int64_t k,
                                         const EigenOptions& options) = 0;
  // The same for a float32 matrix, for tolerances of 1e-5 and looser (Error otherwise): half the memory
  // of a float64 one, which is what makes spectral clustering of large layers fast on the CPU.
  virtual Eigenpairs smallest_eigenpairs(MatrixView<const float> symmetric, std::int64_t k,
                                         const EigenOptions& options) = 0;
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

// CPU reference backend. Each batch, in chunks of cpu_product_rows rows: values shifted and scaled by a
// power of two in float64 before they are rounded to float32 (checking for NaN and infinity and taking
// each unit's range on the way), centred on the chunk's mean, one SYRK (float32, multithreaded
// OpenBLAS), and the scaled float64 Chan merge (running_moments.hpp).
#include "cpu/reference_backend.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <optional>
#include <cmath>
#include <limits>
#include <numeric>
#include <thread>
#include <type_traits>

#include "convergent/error.hpp"
#include "cpu/batch_kernels.hpp"
#include "cpu/cpu_joint_counter.hpp"
#include "cpu/pack.hpp"
#include "cpu/parallel.hpp"
#include "backend/running_moments.hpp"

namespace convergent::detail {
namespace {

class ReferenceAccumulator final : public MomentAccumulator {
 public:
  ReferenceAccumulator(const std::vector<std::int64_t>& units_per_net, const AccumulateOptions& options, int threads)
      : MomentAccumulator(units_per_net, options), threads_(threads), running_(units_per_net) {
    if (options.precision != Precision::fp32)
      throw Error(std::string("precision ") + to_string(options.precision) +
                  " needs the CUDA backend; the CPU backend computes in fp32");
    const std::int64_t u = running_.units();
    batch_.resize(static_cast<std::size_t>(options.max_batch_rows * u));
    product_.resize(static_cast<std::size_t>(u * u));
    const std::size_t per_chunk = static_cast<std::size_t>(chunk_count(options.max_batch_rows) * u);
    for (auto* v : {&low_, &high_, &centre_, &multiplier_, &sum_}) v->resize(per_chunk);
    exponent_.resize(per_chunk);
    half_mean_.resize(static_cast<std::size_t>(u));
    const auto nets = static_cast<std::int64_t>(units_per_net.size());
    sqnorm_ = Matrix(nets, nets);
    unit_sqnorm_ = Matrix(u, nets);
    row_sqnorm_.resize(static_cast<std::size_t>(cpu_product_rows * nets));
    unit_scale_.resize(static_cast<std::size_t>(u));
    unit_offset_.resize(static_cast<std::size_t>(u));
  }

  void do_add(const std::vector<ActivationBlock>& given) override {
    const std::int64_t u = running_.units();
    std::int64_t rows = given.front().rows();
    MatrixView<float> x(batch_.data(), rows, u);
    if (!pack_batch(given, x)) {
      // A NaN or infinity: the batch again, in float64 without the rows that hold one (or an error).
      const std::vector<ActivationBlock> kept = drop_or_reject_nonfinite(given, rows);
      x.rows = rows = kept.front().rows();
      pack_batch(kept, x);
    }
    const std::vector<double>& origin = running_.origin();
    for (std::int64_t k = 0; k < chunk_count(rows); ++k) {
      const MatrixView<float> c = chunk(x, k);
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(u), static_cast<int>(c.rows), 1.0f, c.data,
                  static_cast<int>(u), 0.0f, product_.data(), static_cast<int>(u));
      // The chunk's mean is centre + mean of the scaled values / multiplier; the merge takes its half
      // offset from the running origin, halves first so that nothing overflows.
      const std::int64_t at = k * u;
      for (std::int64_t col = 0; col < u; ++col) {
        const int e = exponent_[at + col];
        half_mean_[col] = (0.5 * centre_[at + col] - 0.5 * origin[col]) +
                          (e == no_spread ? 0.0 : std::ldexp(sum_[at + col], -e - 1));
      }
      const ScaledBatch batch{c.rows, half_mean_.data(), low_.data() + at, high_.data() + at, exponent_.data() + at};
      running_.merge(batch, MatrixView<const float>(product_.data(), u, u), threads_);
      add_norm_sums(c, at);
    }
  }

  Moments moments() override { return with_norm_sums(running_.result(), running_.offset()); }
  // The comoment is handed over, not copied; the batch buffers go first.
  Moments take_moments() override {
    product_ = std::vector<float>();
    batch_ = std::vector<float>();
    const std::vector<double> offset = running_.offset();  // before the running moments are handed over
    return with_norm_sums(std::move(running_).result(), offset);
  }

  std::int64_t skipped_rows() override { return skipped_; }

 private:
  // The debiased CKA's norm sums, moved from the running origin to the mean (`offset`: mean - origin).
  Moments with_norm_sums(Moments m, const std::vector<double>& offset) const {
    m.sqnorm_comoment = sqnorm_;
    m.unit_sqnorm_comoment = unit_sqnorm_;
    shift_norm_sums(m, offset, offset, m.sqnorm_comoment, m.unit_sqnorm_comoment);
    return m;
  }

  static std::int64_t chunk_count(std::int64_t rows) { return (rows + cpu_product_rows - 1) / cpu_product_rows; }
  static MatrixView<float> chunk(MatrixView<float> x, std::int64_t k) {
    const std::int64_t first = k * cpu_product_rows;
    return {x.row(first), std::min(cpu_product_rows, x.rows - first), x.cols, x.stride};
  }

  // The norm sums of the debiased CKA (moments.hpp) about the running origin, which stays fixed for the
  // whole pass: sums about one point simply add up, and moments() moves them to the mean once. The unbiased
  // HSIC of linear kernels does not change when every sample is shifted by one constant vector, so the
  // point they are taken about is free (tests/test_similarity_indices.cpp checks this numerically); a point
  // inside each unit's range keeps them as exact as the comoment. Each value is recovered from the centred
  // float32 chunk as c 2^-e + (chunk mean - origin), both parts exact. Each unit's sum is taken by one
  // thread in row order, so the result does not depend on the thread count.
  void add_norm_sums(MatrixView<const float> c, std::int64_t at) {
    const std::int64_t u = running_.units();
    const auto nets = static_cast<std::int64_t>(net_units().size());
    for (std::int64_t col = 0; col < u; ++col) {
      const int e = exponent_[at + col];
      unit_scale_[col] = e == no_spread ? 0.0 : std::ldexp(1.0, -e);
      unit_offset_[col] = 2.0 * half_mean_[col];
    }
    constexpr std::int64_t rows_per_task = 256, units_per_task = 64;
    parallel_for((c.rows + rows_per_task - 1) / rows_per_task, threads_, [&](std::int64_t task) {
      for (std::int64_t r = task * rows_per_task; r < std::min(c.rows, (task + 1) * rows_per_task); ++r)
        for (std::int64_t k = 0, col = 0; k < nets; col += net_units()[k++])
          row_sqnorm_[r * nets + k] =
              row_sqnorm(c.row(r) + col, unit_scale_.data() + col, unit_offset_.data() + col, net_units()[k]);
    });
    parallel_for((u + units_per_task - 1) / units_per_task, threads_, [&](std::int64_t task) {
      const std::int64_t first = task * units_per_task, count = std::min(units_per_task, u - first);
      std::vector<double> work(units_per_task), sums(static_cast<std::size_t>(units_per_task * nets), 0.0);
      unit_norm_sums(c.data + first, c.rows, c.stride, count, unit_scale_.data() + first, unit_offset_.data() + first,
                     row_sqnorm_.data(), nets, sums.data(), units_per_task, work.data());
      for (std::int64_t j = 0; j < count; ++j)
        for (std::int64_t k = 0; k < nets; ++k) unit_sqnorm_(first + j, k) += sums[k * units_per_task + j];
    });
    for (std::int64_t k = 0; k < nets; ++k)
      for (std::int64_t l = k; l < nets; ++l) {
        double sum = 0.0;
        for (std::int64_t r = 0; r < c.rows; ++r) sum += row_sqnorm_[r * nets + k] * row_sqnorm_[r * nets + l];
        sqnorm_(k, l) += sum;
        sqnorm_(l, k) = sqnorm_(k, l);
      }
  }

  // float32 sums grow their rounding error with their length, so each product covers at most
  // cpu_product_rows rows and the chunks are merged in float64 (DESIGN.md, precision). Each chunk is
  // packed and centred by one thread while it is in cache; products and merges then run in chunk order.
  // The very first chunk sets the reference scaling the others try first, so it goes alone. Returns
  // false when a value is a NaN or infinity.
  bool pack_batch(const std::vector<ActivationBlock>& blocks, MatrixView<float> x) {
    const std::int64_t chunks = chunk_count(x.rows);
    std::vector<char> finite(static_cast<std::size_t>(chunks), 1);
    std::int64_t done = 0;
    if (!reference_ && chunks > 0) {
      finite[0] = pack_chunk(blocks, x, 0);
      if (!finite[0]) return false;
      const std::int64_t u = running_.units();
      reference_ = Reference{std::vector<double>(centre_.begin(), centre_.begin() + u),
                             std::vector<int>(exponent_.begin(), exponent_.begin() + u)};
      // Means are kept relative to the same mid-ranges: an offset then never enters a delta.
      running_.set_origin(reference_->centre);
      done = 1;
    }
    parallel_for(chunks - done, threads_, [&](std::int64_t k) { finite[done + k] = pack_chunk(blocks, x, done + k); });
    return std::find(finite.begin(), finite.end(), 0) == finite.end();
  }

  // Chunk k of every net into x: each unit shifted by a centre and scaled by a power of two in float64,
  // then rounded to float32 and centred on its mean (sum_ then holds that mean). The shift and scale are
  // the reference ones when they suit the chunk, else the chunk's own (mid-range, and the scale that
  // brings the half-range to [1, 2)), which costs a second pass. Either way an offset keeps the spread's
  // digits and no finite value overflows or underflows the float32 product.
  bool pack_chunk(const std::vector<ActivationBlock>& blocks, MatrixView<float> x, std::int64_t k) {
    const std::int64_t u = running_.units(), at = k * u;
    const MatrixView<float> c = chunk(x, k);
    for (std::int64_t col = 0; col < u; ++col) {
      centre_[at + col] = reference_ ? reference_->centre[col] : 0.0;
      exponent_[at + col] = reference_ ? reference_->exponent[col] : no_spread;
      multiplier_[at + col] = exponent_[at + col] == no_spread ? 0.0 : std::ldexp(1.0, exponent_[at + col]);
    }
    if (!pack_pass(blocks, c, k)) return false;
    if (!scaling_suits_range(at)) {
      for (std::int64_t col = at; col < at + u; ++col) {
        // Halves first: the sum and difference of two finite values can overflow, their halves cannot.
        centre_[col] = 0.5 * low_[col] + 0.5 * high_[col];
        exponent_[col] = spread_exponent(0.5 * high_[col] - 0.5 * low_[col]);
        multiplier_[col] = exponent_[col] == no_spread ? 0.0 : std::ldexp(1.0, exponent_[col]);
      }
      pack_pass(blocks, c, k);
    }
    double* mean = sum_.data() + at;
    for (std::int64_t col = 0; col < u; ++col) mean[col] /= static_cast<double>(c.rows);
    centre_rows(c.data, c.rows, u, c.stride, mean);
    return true;
  }

  bool pack_pass(const std::vector<ActivationBlock>& blocks, MatrixView<float> c, std::int64_t k) {
    const std::int64_t at = k * running_.units();
    bool finite = true;
    for (std::size_t net = 0, offset = 0; net < blocks.size(); offset += blocks[net].units, ++net) {
      const std::size_t i = at + offset;
      finite = pack_scaled(blocks[net], c, static_cast<std::int64_t>(offset), k * cpu_product_rows, &centre_[i],
                           &multiplier_[i], &sum_[i], &low_[i], &high_[i]) &&
               finite;
    }
    return finite;
  }

  // Whether the shift and scale used for the chunk at `at` kept every unit's rounding within 2^-22 of its
  // half-range (scaled values at most 4 half-ranges from 0) and far from float32's limits (2^+-50, so that
  // 2048 squares neither overflow nor underflow); a constant unit must have become exact zeros, or it
  // would not stay dead. NaN-safe: a comparison with NaN fails.
  bool scaling_suits_range(std::int64_t at) const {
    for (std::int64_t col = at; col < at + running_.units(); ++col) {
      if (low_[col] == high_[col]) {
        if (!(multiplier_[col] == 0.0 && low_[col] == centre_[col])) return false;
        continue;
      }
      const double y_low = (low_[col] - centre_[col]) * multiplier_[col];
      const double y_high = (high_[col] - centre_[col]) * multiplier_[col];
      const double largest = std::max(std::abs(y_low), std::abs(y_high)), half_range = 0.5 * y_high - 0.5 * y_low;
      if (!(largest <= 4.0 * half_range && largest <= 0x1p50 && half_range >= 0x1p-50)) return false;
    }
    return true;
  }

  // The batch in float64 (exact for every dtype), without the rows that hold a NaN or infinity in any net;
  // without skipping, the first one in row-major order is an error. Returns one row-major block per net
  // over that copy.
  std::vector<ActivationBlock> drop_or_reject_nonfinite(const std::vector<ActivationBlock>& blocks, std::int64_t rows) {
    const std::int64_t u = running_.units();
    compact_.resize(static_cast<std::size_t>(rows * u));
    const MatrixView<double> all(compact_.data(), rows, u);
    for (std::size_t net = 0, offset = 0; net < blocks.size(); offset += blocks[net].units, ++net)
      pack_block(blocks[net], all, static_cast<std::int64_t>(offset));
    std::int64_t kept = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const double* row = all.row(r);
      const std::int64_t bad = std::find_if(row, row + u, [](double v) { return !std::isfinite(v); }) - row;
      if (bad < u) {
        if (!options().skip_nonfinite_rows) {
          int net = 0;
          std::int64_t offset = 0;
          while (bad >= offset + net_units()[net]) offset += net_units()[net++];
          throw NonFiniteValueError(net, r, bad - offset);
        }
        ++skipped_;
        continue;
      }
      if (kept != r) std::copy(row, row + u, all.row(kept));
      ++kept;
    }
    std::vector<ActivationBlock> result;
    for (std::size_t net = 0, offset = 0; net < blocks.size(); offset += blocks[net].units, ++net) {
      ActivationBlock b = row_major_block(compact_.data() + offset, DType::float64, kept, blocks[net].units);
      b.image_stride = u;
      result.push_back(b);
    }
    return result;
  }

  // The first chunk's shift and scale per unit, tried first on every later chunk.
  struct Reference {
    std::vector<double> centre;
    std::vector<int> exponent;
  };

  int threads_;
  RunningMoments running_;
  std::optional<Reference> reference_;
  std::vector<float> batch_;
  std::vector<float> product_;
  std::vector<double> compact_;  // float64 copy of a batch that holds NaN or infinity
  // Per chunk of the current batch, u each: range, shift, scale and mean of the scaled values.
  std::vector<double> low_, high_, centre_, multiplier_, sum_;
  std::vector<int> exponent_;
  std::vector<double> half_mean_;  // u: the chunk being merged
  // Norm sums about the origin (add_norm_sums): nets x nets and u x nets; per chunk row and net the
  // squared norm; per unit the chunk's 2^-e and mean minus origin.
  Matrix sqnorm_, unit_sqnorm_;
  std::vector<double> row_sqnorm_, unit_scale_, unit_offset_;
  std::int64_t skipped_ = 0;
};

// LAPACK's MRRR (?syevr) with an index range, which computes only the k vectors asked for, on a copy of
// A in precision Real: dsyevr for tight tolerances, ssyevr for loose ones. The tridiagonal reduction
// dominates (n = 2048, k = 64: 0.36 of ssyevr's 0.40 s CPU), and in float32 it moves half the bytes of
// dsyevr's (0.87 s). A is symmetric, so its row-major upper triangle is the column-major lower one, which
// LAPACK reads in place (no transposed copy).
lapack_int syevr(lapack_int n, float* a, lapack_int k, lapack_int* found, float* values, float* vectors,
                 lapack_int* support) {
  return LAPACKE_ssyevr(LAPACK_COL_MAJOR, 'V', 'I', 'L', n, a, n, 0.0f, 0.0f, 1, k, 0.0f, found, values, vectors, n,
                        support);
}
lapack_int syevr(lapack_int n, double* a, lapack_int k, lapack_int* found, double* values, double* vectors,
                 lapack_int* support) {
  return LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'L', n, a, n, 0.0, 0.0, 1, k, 0.0, found, values, vectors, n,
                        support);
}

template <class Real, class T>
Eigenpairs dense_smallest(MatrixView<const T> a, std::int64_t k) {
  const std::int64_t n = a.rows;
  std::vector<Real> work(static_cast<std::size_t>(n * n)), values(static_cast<std::size_t>(n)),
      vectors(static_cast<std::size_t>(n * k));  // column-major, n x k
  for (std::int64_t i = 0; i < n; ++i) std::copy(a.row(i), a.row(i) + n, work.data() + i * n);
  std::vector<lapack_int> support(static_cast<std::size_t>(2 * k));
  lapack_int found = 0;
  const lapack_int info = syevr(static_cast<lapack_int>(n), work.data(), static_cast<lapack_int>(k), &found,
                                values.data(), vectors.data(), support.data());
  if (info != 0 || found != k)
    throw Error(std::string("LAPACK ") + (sizeof(Real) == 4 ? "ssyevr" : "dsyevr") + " failed (info " +
                std::to_string(info) + ")");
  Eigenpairs result;
  result.values.assign(values.begin(), values.begin() + k);
  result.vectors = Matrix(n, k);
  for (std::int64_t j = 0; j < k; ++j)
    for (std::int64_t i = 0; i < n; ++i) result.vectors(i, j) = vectors[j * n + i];
  return result;
}

// Block size of the Lanczos solver: room for clustered eigenvalues around the k wanted.
std::int64_t lanczos_block(std::int64_t k) { return k + std::max<std::int64_t>(8, k / 4); }

// Small problems, and bases that would not be much smaller than the matrix, go to a dense solver. The
// Lanczos needs about 4 to 9 blocks of p columns on a spectrum with clear gaps at k and a whole basis
// (8 p) or more on a crowded one, and a column costs it a float32 product plus float64
// orthogonalisation and Rayleigh-Ritz (1.2 ms at n = 2048, p = 80, where ssyevr takes 0.40 s: about
// 4 p columns). Measured: n = 2048, k = 64 (p = 80) needs 720 columns with planted gaps and does not
// converge in 720 on the ReLU factor model; k = 16 and 32 converge in 170-720 columns on either.
bool dense_is_better(std::int64_t n, std::int64_t k) {
  return n <= max_dense_eigen_rows && (n < 1024 || 32 * lanczos_block(k) > n);
}

// What a caller learns when block Lanczos gave up and no dense solver may take over (n above
// max_dense_eigen_rows).
[[noreturn]] void lanczos_failed(std::int64_t n, std::int64_t k) {
  throw Error("smallest_eigenpairs: block Lanczos did not reach the residual for the " + std::to_string(k) +
              " smallest eigenpairs of a " + std::to_string(n) + " x " + std::to_string(n) +
              " matrix within its budget (no gap among them), and above " + std::to_string(max_dense_eigen_rows) +
              " rows no dense solver is used (an n x n copy and hours of O(n^3) work); ask for fewer units or "
              "fewer pairs");
}

// out = A in for the n x n matrix A and n x p blocks, in fixed panels of 256 rows of A, one OpenBLAS call
// each (on one OpenBLAS thread: callers hold a OneOpenBlasThread), spread over `threads`: every panel has the same
// shape on any thread count, and so the same bits.
template <class T>
void panel_product(MatrixView<const T> a, const T* in, T* out, std::int64_t p, int threads) {
  constexpr std::int64_t panel = 256;
  parallel_for((a.rows + panel - 1) / panel, threads, [&](std::int64_t t) {
    const std::int64_t r0 = t * panel, rows = std::min(panel, a.rows - r0);
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(p),
                  static_cast<int>(a.cols), 1.0f, a.row(r0), static_cast<int>(a.stride), in, static_cast<int>(p), 0.0f,
                  out + r0 * p, static_cast<int>(p));
    else
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(p),
                  static_cast<int>(a.cols), 1.0, a.row(r0), static_cast<int>(a.stride), in, static_cast<int>(p), 0.0,
                  out + r0 * p, static_cast<int>(p));
  });
}

// W = A V for n x p blocks V, in float32 on a float32 matrix (the product is bound by memory: OpenBLAS
// repacks A every time, so half the bytes run twice as fast); inputs and outputs stay float64.
class Float32Product {
 public:
  Float32Product(MatrixView<const float> a, int threads) : a_(a), threads_(threads) {}
  void operator()(const double* in, double* out, std::int64_t p) const {
    in32_.assign(in, in + a_.rows * p);
    out32_.resize(in32_.size());
    panel_product(a_, in32_.data(), out32_.data(), p, threads_);
    std::copy(out32_.begin(), out32_.end(), out);
  }

 private:
  MatrixView<const float> a_;
  int threads_;
  mutable std::vector<float> in32_, out32_;
};


// ssyevr's vectors with their Rayleigh quotients as eigenvalues, when each pair has ||A x - lambda x|| <=
// tolerance ||A||; nothing otherwise. The float32 reduction usually meets that by far (about sqrt(n)
// 6e-8 ||A||) but does not promise it. Its eigenvalues carry that backward error too (2.6e-7 at n =
// 1200); the Rayleigh quotients, from products A X in float64 (a block of rows of A at a time), are
// within about residual^2 / gap plus the float64 rounding, like the Lanczos path's. ||A|| is taken from
// below (the largest row norm, and |lambda|), so the check is never looser than asked.
std::optional<Eigenpairs> float32_dense(MatrixView<const float> a, std::int64_t k, double tolerance) {
  const std::int64_t n = a.rows;
  Eigenpairs pairs;
  {
    // On one thread: the reduction's sums follow OpenBLAS's split of the work, and in float32 that turns
    // the vectors of close eigenvalues visibly (ReLU factor model, n = 2048, k = 64: entries moved by
    // 0.16 between one thread and two; dsyevr's by 4e-13), so labels would depend on the thread count.
    // One thread was no slower on the loaded 2-core machine (1.07-1.18 s wall against 1.34-1.54 s).
    const OneOpenBlasThread one;
    pairs = dense_smallest<float>(a, k);
  }
  constexpr std::int64_t block = 64;
  std::vector<double> w(static_cast<std::size_t>(n * k)), rows(static_cast<std::size_t>(block * n));
  double norm = 0.0;
  for (std::int64_t first = 0; first < n; first += block) {
    const std::int64_t count = std::min(block, n - first);
    for (std::int64_t i = 0; i < count; ++i) {
      const float* row = a.row(first + i);
      std::copy(row, row + n, rows.data() + i * n);
      norm = std::max(norm, std::sqrt(std::inner_product(row, row + n, row, 0.0)));
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(count), static_cast<int>(k),
                static_cast<int>(n), 1.0, rows.data(), static_cast<int>(n), pairs.vectors.data(), static_cast<int>(k),
                0.0, w.data() + first * k, static_cast<int>(k));
  }
  std::vector<double> xw(static_cast<std::size_t>(k), 0.0), xx(xw.size(), 0.0), squared(xw.size(), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < k; ++j) {
      xw[j] += pairs.vectors(i, j) * w[i * k + j];
      xx[j] += pairs.vectors(i, j) * pairs.vectors(i, j);
    }
  for (std::int64_t j = 0; j < k; ++j) pairs.values[j] = xw[j] / xx[j];
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < k; ++j) {
      const double r = w[i * k + j] - pairs.values[j] * pairs.vectors(i, j);
      squared[j] += r * r;
    }
  norm = std::max({norm, std::abs(pairs.values.front()), std::abs(pairs.values.back())});
  for (std::int64_t j = 0; j < k; ++j)
    if (!(std::sqrt(squared[j] / xx[j]) <= tolerance * norm)) return std::nullopt;
  // Quotients of pairs closer than float32 rounding may have changed places: ascending again.
  std::vector<std::int64_t> order(static_cast<std::size_t>(k));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto x, auto y) { return pairs.values[x] < pairs.values[y]; });
  Eigenpairs sorted;
  sorted.vectors = Matrix(n, k);
  for (std::int64_t j = 0; j < k; ++j) {
    sorted.values.push_back(pairs.values[order[j]]);
    for (std::int64_t i = 0; i < n; ++i) sorted.vectors(i, j) = pairs.vectors(i, order[j]);
  }
  return sorted;
}

// The k smallest eigenpairs of the symmetric n x n operator `product` (out = A in, for n x p blocks),
// by a thick-restart block Lanczos with full reorthogonalisation: a handful of n x n x p products
// instead of the O(n^3) tridiagonal reduction of dsyevr, which at n = 4096 costs seconds. Krylov
// subspaces do not depend on a shift, so no spectral bounds are needed. Ritz pairs are accepted when
// their residual ||A x - theta x|| (from the Lanczos relation) is below tolerance * ||A||. Returns
// nothing when a work budget runs out, or when the rate of convergence says it would (a crowded
// spectrum): the caller then uses a dense solver.
template <class Product>
std::optional<Eigenpairs> block_lanczos(std::int64_t n, std::int64_t k, double tolerance, const Product& product) {
  // Without a dense solver to hand over to, Lanczos is all there is: three times the budget, and no
  // early stop on a slow rate.
  const bool dense_fallback = n <= max_dense_eigen_rows;
  const std::int64_t p = lanczos_block(k);
  const std::int64_t max_cols = 8 * p;  // basis size before a thick restart
  const int ni = static_cast<int>(n), pi = static_cast<int>(p), ld = static_cast<int>(max_cols);
  std::vector<double> q(static_cast<std::size_t>(n * max_cols));  // basis, n x max_cols, row-major
  std::vector<double> t(static_cast<std::size_t>(max_cols * max_cols));  // projection Q^T A Q
  std::vector<double> w(static_cast<std::size_t>(n * p)), v(static_cast<std::size_t>(n * p));
  std::vector<double> c(static_cast<std::size_t>(max_cols * p)), r(static_cast<std::size_t>(p * p));
  std::vector<double> tau(static_cast<std::size_t>(p)), theta(static_cast<std::size_t>(max_cols));
  std::vector<double> y(static_cast<std::size_t>(max_cols * max_cols)), projection(y.size());
  std::vector<lapack_int> support(static_cast<std::size_t>(2 * max_cols));
  // Columns [0, m) of the basis against the n x p block b: b -= Q (Q^T b), twice (classical
  // Gram-Schmidt needs the second pass to keep full orthogonality); adds Q^T b into c when asked.
  auto orthogonalise = [&](std::int64_t m, double* b, bool accumulate) {
    if (accumulate) std::fill(c.begin(), c.begin() + m * p, 0.0);
    std::vector<double> pass(static_cast<std::size_t>(m * p));
    for (int round = 0; round < 2; ++round) {
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(m), pi, ni, 1.0, q.data(), ld, b, pi,
                  0.0, pass.data(), pi);
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, pi, static_cast<int>(m), -1.0, q.data(), ld,
                  pass.data(), pi, 1.0, b, pi);
      if (accumulate)
        for (std::int64_t i = 0; i < m * p; ++i) c[i] += pass[i];
    }
  };
  // Orthonormal basis of the n x p block b, written to out; R (p x p, upper) to r. Householder QR
  // stays orthonormal even when b is nearly rank deficient.
  auto qr = [&](double* b, double* out) {
    if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, ni, pi, b, pi, tau.data()) != 0) throw Error("LAPACK dgeqrf failed");
    for (std::int64_t i = 0; i < p; ++i)
      for (std::int64_t j = 0; j < p; ++j) r[i * p + j] = j >= i ? b[i * p + j] : 0.0;
    if (LAPACKE_dorgqr(LAPACK_ROW_MAJOR, ni, pi, pi, b, pi, tau.data()) != 0) throw Error("LAPACK dorgqr failed");
    if (out != b) std::copy(b, b + n * p, out);
  };

  // Deterministic start: a fixed hash of each position (splitmix64), the same on every run and thread.
  for (std::int64_t i = 0; i < n * p; ++i) {
    std::uint64_t z = 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    v[i] = static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53 - 0.5;
  }
  qr(v.data(), v.data());
  std::int64_t m = 0;  // columns of the basis in use
  double norm_estimate = 0.0;
  // Work budget: once the products A V have cost half of dsyevr's tridiagonal reduction (4/3 n^3),
  // the spectrum is too crowded for Krylov to pay off (a random matrix, say) and a dense solver takes
  // over. The largest residual at the first check, and the product columns by then, tell how fast the
  // Ritz pairs converge.
  const double budget_columns = static_cast<double>(n) / (dense_fallback ? 3.0 : 1.0);
  std::int64_t product_columns = 0, first_columns = 0;
  double first_worst = 0.0;
  while (static_cast<double>(product_columns) < budget_columns) {
    product_columns += p;
    for (std::int64_t i = 0; i < n; ++i) std::copy(&v[i * p], &v[i * p] + p, &q[i * max_cols + m]);
    product(v.data(), w.data(), p);
    const std::int64_t mm = m + p;
    orthogonalise(mm, w.data(), true);
    // New column block of the projection, mirrored into the row block.
    for (std::int64_t i = 0; i < mm; ++i)
      for (std::int64_t j = 0; j < p; ++j) {
        const double value = i >= m ? 0.5 * (c[i * p + j] + c[(m + j) * p + (i - m)]) : c[i * p + j];
        t[i * max_cols + m + j] = t[(m + j) * max_cols + i] = value;
      }
    m = mm;
    qr(w.data(), v.data());
    // A (numerically) invariant subspace leaves w ~ 0 and v without meaning: orthogonalising it again
    // turns it into fresh directions, and the tiny r keeps the Lanczos relation intact.
    double smallest_r = std::numeric_limits<double>::infinity();
    for (std::int64_t i = 0; i < p; ++i) smallest_r = std::min(smallest_r, std::abs(r[i * p + i]));
    if (smallest_r <= 1e-8 * std::max(norm_estimate, 1e-300)) {
      std::vector<double> keep_r = r;
      orthogonalise(m, v.data(), false);
      qr(v.data(), v.data());
      r = keep_r;
    }
    // Nothing converges in fewer than about four block steps; checking earlier only costs.
    if (m < std::min(4 * p, max_cols - p + 1)) continue;

    // Rayleigh-Ritz on the basis: only the k + p smallest Ritz pairs are ever used.
    const std::int64_t ritz_count = std::min(m, k + p);
    std::copy(t.begin(), t.end(), projection.begin());
    lapack_int found = 0;
    if (LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'I', 'U', static_cast<lapack_int>(m), projection.data(), ld, 0.0,
                       0.0, 1, static_cast<lapack_int>(ritz_count), 0.0, &found, theta.data(), y.data(), ld,
                       support.data()) != 0 ||
        found != ritz_count)
      throw Error("LAPACK dsyevr failed on the Lanczos projection");
    // ||A|| >= every |theta| and every row norm of the projection.
    norm_estimate = std::max({norm_estimate, std::abs(theta[0]), std::abs(theta[ritz_count - 1])});
    for (std::int64_t i = 0; i < m; ++i) {
      const double* row = t.data() + i * max_cols;
      norm_estimate = std::max(norm_estimate, std::sqrt(std::inner_product(row, row + m, row, 0.0)));
    }
    // ||A x_j - theta_j x_j|| = ||R y_j(last block)||: the largest over the k wanted, relative to ||A||.
    double worst = 0.0;
    for (std::int64_t j = 0; j < k; ++j) {
      double squared = 0.0;
      for (std::int64_t i = 0; i < p; ++i) {
        double s = 0.0;
        for (std::int64_t l = i; l < p; ++l) s += r[i * p + l] * y[(m - p + l) * max_cols + j];
        squared += s * s;
      }
      worst = std::max(worst, std::sqrt(squared) / norm_estimate);
    }
    const bool converged = worst <= tolerance;
    // A crowded spectrum shows early as residuals that fall slowly: at their mean rate since the first
    // check, reaching the tolerance would take the products past twice the budget (twice: convergence
    // speeds up as Ritz values settle, so the straight line overestimates). Then stop now, not at the
    // budget. Measured on the ReLU factor model at n = 2048 (budget 683 columns): k = 32 (p = 40) stops
    // at 240 columns (predicted 1370; it would converge at 720, costing about what ssyevr does), k = 16
    // (p = 24) converges at 576 (predictions up to 777); planted gaps at n = 4096, k = 32 converge at 280
    // (predictions up to 296). The rate between successive checks is too noisy for this.
    if (first_worst == 0.0) {
      first_worst = worst;
      first_columns = product_columns;
    } else if (!converged) {
      const double columns_needed = static_cast<double>(product_columns - first_columns) *
                                    std::log(worst / tolerance) / std::log(first_worst / worst);
      if (dense_fallback &&
          (!(worst < first_worst) || static_cast<double>(product_columns) + columns_needed > 2.0 * budget_columns))
        return std::nullopt;
    }
    const bool full = m + p > max_cols;
    if (!converged && !full) continue;
    // Ritz vectors Q Y(:, :keep): the answer, or the start of the restarted basis.
    const std::int64_t keep = converged ? k : std::min(max_cols - 2 * p, k + p);
    std::vector<double> x(static_cast<std::size_t>(n * keep));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, static_cast<int>(keep), static_cast<int>(m), 1.0,
                q.data(), ld, y.data(), ld, 0.0, x.data(), static_cast<int>(keep));
    if (converged) {
      Eigenpairs result;
      result.values.assign(theta.begin(), theta.begin() + k);
      result.vectors = Matrix(n, k);
      std::copy(x.begin(), x.end(), result.vectors.data());
      return result;
    }
    // Thick restart: the kept Ritz vectors and their values; the coupling to the next block (whose
    // residual directions v holds) is recomputed when v enters the basis.
    for (std::int64_t i = 0; i < n; ++i) std::copy(&x[i * keep], &x[i * keep] + keep, &q[i * max_cols]);
    std::fill(t.begin(), t.end(), 0.0);
    for (std::int64_t i = 0; i < keep; ++i) t[i * max_cols + i] = theta[i];
    m = keep;
  }
  return std::nullopt;
}

class ReferenceBackend final : public Backend {
 public:
  explicit ReferenceBackend(const BackendOptions& options)
      : threads_(thread_count(options.threads)) {
    openblas_set_num_threads(threads_);
  }

  BackendKind kind() const override { return BackendKind::cpu; }

  std::string description() const override {
    return "cpu (OpenBLAS, " + std::to_string(threads_) + (threads_ == 1 ? " thread)" : " threads)");
  }

 protected:
  std::unique_ptr<MomentAccumulator> do_accumulator(const std::vector<std::int64_t>& units_per_net,
                                                    const AccumulateOptions& options) override {
    return std::make_unique<ReferenceAccumulator>(units_per_net, options, threads_);
  }

  // Blocked counting in int64 (host/cpu/cpu_joint_counter.cpp): the oracle for the CUDA int8 GEMM.
  std::unique_ptr<JointCounter> do_joint_counter(std::int64_t row_units, std::optional<std::int64_t> col_units,
                                                 const JointCountOptions& options) override {
    return make_cpu_joint_counter(row_units, col_units, options, threads_);
  }

  // The upper triangle is computed and mirrored, so the result is exactly symmetric whatever the
  // rounding of the products; the CUDA backend computes the same triangle with the same operations.
  void do_correlation(MatrixView<double> m2, const std::vector<bool>& dead) override {
    // The upper triangle is read and overwritten, then mirrored: in place, no second U x U matrix.
    const std::int64_t u = m2.rows;
    std::vector<double> scale(static_cast<std::size_t>(u));
    for (std::int64_t i = 0; i < u; ++i) scale[i] = dead[i] ? 0.0 : 1.0 / std::sqrt(m2(i, i));
    for (std::int64_t i = 0; i < u; ++i) {
      double* row = m2.row(i);
      for (std::int64_t j = i + 1; j < u; ++j) row[j] = std::clamp(row[j] * scale[i] * scale[j], -1.0, 1.0);
      row[i] = dead[i] ? 0.0 : 1.0;
    }
    for (std::int64_t i = 0; i < u; ++i)
      for (std::int64_t j = 0; j < i; ++j) m2(i, j) = m2(j, i);
  }

  std::vector<std::int64_t> do_row_argmax(MatrixView<const double> m) override {
    std::vector<std::int64_t> best(static_cast<std::size_t>(m.rows), 0);
    for (std::int64_t r = 0; r < m.rows; ++r) {
      const double* row = m.row(r);
      // Strictly greater replaces: the first maximum, so ties go to the lower column.
      for (std::int64_t c = 0; c < m.cols; ++c) {
        if (std::isnan(row[c])) row_argmax_nan(r, c);
        if (row[c] > row[best[r]]) best[r] = c;
      }
    }
    return best;
  }

  // Large problems with few wanted pairs (spectral clustering: n up to 16384, k up to ~65) go through
  // block_lanczos; small ones, and those it gives up on, through a dense solver. A loose tolerance
  // (1e-5 and up) works on a float32 copy of A: Lanczos products in float32 (their error, about
  // sqrt(n) 6e-8 ||A||, is well inside it) and ssyevr with checked residuals, dsyevr only when those
  // miss the tolerance.
  // OpenBLAS runs on one thread throughout (its threads split the sums of the LAPACK kernels, and the
  // output of its products at edges that move with the thread count); the products with A, the bulk of
  // the Lanczos work, run in fixed panels on our threads. The same bits on any thread count.
  Eigenpairs do_smallest_eigenpairs(MatrixView<const double> a, std::int64_t k, const EigenOptions& options) override {
    const OneOpenBlasThread one;
    const std::int64_t n = a.rows;
    if (options.relative_residual >= 1e-5) {
      std::vector<float> a32(static_cast<std::size_t>(n * n));
      for (std::int64_t i = 0; i < n; ++i) std::copy(a.row(i), a.row(i) + n, a32.data() + i * n);
      return do_smallest_eigenpairs(MatrixView<const float>(a32.data(), n, n), k, options);
    }
    std::optional<Eigenpairs> result;
    if (!dense_is_better(n, k))
      result = block_lanczos(n, k, options.relative_residual, [&](const double* in, double* out, std::int64_t p) {
        panel_product(a, in, out, p, threads_);
      });
    if (!result && n > max_dense_eigen_rows) lanczos_failed(n, k);
    return result ? std::move(*result) : dense_smallest<double>(a, k);
  }

  Eigenpairs do_smallest_eigenpairs(MatrixView<const float> a, std::int64_t k, const EigenOptions& options) override {
    const OneOpenBlasThread one;
    std::optional<Eigenpairs> result;
    if (!dense_is_better(a.rows, k))
      result = block_lanczos(a.rows, k, options.relative_residual, Float32Product(a, threads_));
    if (!result && a.rows > max_dense_eigen_rows) lanczos_failed(a.rows, k);
    if (!result) result = float32_dense(a, k, options.relative_residual);
    return result ? std::move(*result) : dense_smallest<double>(a, k);
  }

  // LAPACK dsyevd (divide and conquer) on a row-major copy, its upper triangle read (LAPACKE transposes,
  // so the routine sees the lower triangle of the column-major matrix): values ascending, vectors as columns.
  // On one OpenBLAS thread, so the bits do not depend on the thread count.
  Eigenpairs do_symmetric_eigenpairs(MatrixView<const double> a) override {
    const OneOpenBlasThread one;
    const std::int64_t n = a.rows;
    Eigenpairs e;
    e.values.resize(static_cast<std::size_t>(n));
    e.vectors = Matrix(n, n);
    for (std::int64_t i = 0; i < n; ++i) std::copy(a.row(i), a.row(i) + n, e.vectors.data() + i * n);
    const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', static_cast<lapack_int>(n), e.vectors.data(),
                                           static_cast<lapack_int>(n), e.values.data());
    if (info != 0) throw Error("symmetric_eigenpairs: LAPACK dsyevd failed (info " + std::to_string(info) + ")");
    return e;
  }

  // LAPACK dgesdd (divide and conquer) on a row-major copy, thin vectors ('S') or none ('N'); one thread.
  SingularValueDecomposition do_singular_value_decomposition(MatrixView<const double> m, bool vectors) override {
    const OneOpenBlasThread one;
    const std::int64_t rows = m.rows, cols = m.cols, r = std::min(rows, cols);
    Matrix work(rows, cols);
    for (std::int64_t i = 0; i < rows; ++i) std::copy(m.row(i), m.row(i) + cols, work.data() + i * cols);
    SingularValueDecomposition s;
    s.values.resize(static_cast<std::size_t>(r));
    if (vectors) {
      s.u = Matrix(rows, r);
      s.vt = Matrix(r, cols);
    }
    const lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, vectors ? 'S' : 'N', static_cast<lapack_int>(rows),
                                           static_cast<lapack_int>(cols), work.data(), static_cast<lapack_int>(cols),
                                           s.values.data(), vectors ? s.u.data() : nullptr, static_cast<lapack_int>(r),
                                           vectors ? s.vt.data() : nullptr, static_cast<lapack_int>(cols));
    if (info != 0) throw Error("singular_value_decomposition: LAPACK dgesdd failed (info " + std::to_string(info) + ")");
    return s;
  }

 private:
  int threads_;
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend(const BackendOptions& options) {
  return std::make_unique<ReferenceBackend>(options);
}

}  // namespace convergent::detail

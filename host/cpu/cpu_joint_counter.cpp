// Blocked joint counting on the CPU. Per block of rows the bin indices are transposed to unit-major
// order, so that a pair of units reads two contiguous byte streams; each row unit's index is pre-multiplied
// by the bin count, and the pair's S x S joint histogram (code a S + b) is kept in L1 in four interleaved
// copies, so that consecutive increments of one cell do not wait on each other's store. The pair's
// histogram joins the int64 totals once per block. A symmetric counter does the pairs j >= i only and
// mirrors them when read. Threads take row units; each owns its rows of the totals, so no two write the
// same entry and the result does not depend on the thread count.
#include "cpu/cpu_joint_counter.hpp"

#include <algorithm>
#include <new>
#include <vector>

#include "convergent/error.hpp"
#include "cpu/parallel.hpp"

namespace convergent::detail {
namespace {

class CpuJointCounter final : public JointCounter {
 public:
  CpuJointCounter(std::int64_t row_units, std::optional<std::int64_t> col_units, const JointCountOptions& options,
                  int threads)
      : JointCounter(row_units, col_units, options), threads_(threads), bins_(options.bins) {
    const std::int64_t entries = row_units * bins_ * this->col_units() * bins_;
    try {
      counts_.assign(static_cast<std::size_t>(entries), 0);
    } catch (const std::bad_alloc&) {
      throw Error("joint_counter: the counts of " + std::to_string(row_units) + " x " +
                  std::to_string(this->col_units()) + " units in " + std::to_string(bins_) + " bins need " +
                  std::to_string(entries * 8 >> 20) + " MiB, which could not be allocated; count in blocks");
    }
    // The four interleaved histograms cost 4 S^2 to clear and fold per pair and block: blocks long
    // enough that this stays small against the rows counted.
    block_rows_ = std::clamp<std::int64_t>(8 * bins_ * bins_, 16384, 262144);
  }

  JointCounts counts() override {
    JointCounts result;
    result.row_units = row_units();
    result.col_units = col_units();
    result.bins = bins_;
    result.samples = samples_;
    result.values = counts_;
    if (symmetric()) {
      const std::int64_t cols = result.cols();
      for (std::int64_t i = 0; i < row_units(); ++i)
        for (std::int64_t j = i + 1; j < col_units(); ++j)
          for (std::int64_t a = 0; a < bins_; ++a)
            for (std::int64_t b = 0; b < bins_; ++b)
              result.values[(j * bins_ + b) * cols + i * bins_ + a] = result.values[(i * bins_ + a) * cols + j * bins_ + b];
    }
    return result;
  }

 protected:
  void do_add(MatrixView<const std::uint8_t> row_bins, MatrixView<const std::uint8_t> col_bins) override {
    for (std::int64_t first = 0; first < row_bins.rows; first += block_rows_) {
      const std::int64_t n = std::min(block_rows_, row_bins.rows - first);
      transpose(row_bins, first, n, row_codes_, true);
      transpose(col_bins, first, n, col_index_, false);
      count_block(n);
    }
    samples_ += row_bins.rows;
  }

 private:
  // Rows [first, first + n) of `bins` into unit-major order (unit u's n values at u * n); as codes
  // a * bins for the row side, as plain indices for the column side.
  template <class T>
  void transpose(MatrixView<const std::uint8_t> bins, std::int64_t first, std::int64_t n, std::vector<T>& out,
                 bool premultiply) const {
    out.resize(static_cast<std::size_t>(bins.cols * n));
    const T factor = premultiply ? static_cast<T>(bins_) : T{1};
    constexpr std::int64_t tile = 64;  // rows per tile: a cache-friendly transpose
    parallel_for((n + tile - 1) / tile, threads_, [&](std::int64_t t) {
      const std::int64_t r0 = t * tile, r1 = std::min(n, r0 + tile);
      for (std::int64_t r = r0; r < r1; ++r) {
        const std::uint8_t* row = bins.row(first + r);
        for (std::int64_t u = 0; u < bins.cols; ++u) out[static_cast<std::size_t>(u * n + r)] = static_cast<T>(row[u] * factor);
      }
    });
  }

  void count_block(std::int64_t n) {
    const std::int64_t s = bins_, cells = s * s, cols = col_units() * s;
    parallel_for(row_units(), threads_, [&](std::int64_t i) {
      std::vector<std::uint32_t> hist(static_cast<std::size_t>(4 * cells));
      std::uint32_t* h0 = hist.data();
      std::uint32_t* h1 = h0 + cells;
      std::uint32_t* h2 = h1 + cells;
      std::uint32_t* h3 = h2 + cells;
      const std::uint16_t* x = row_codes_.data() + i * n;
      for (std::int64_t j = symmetric() ? i : 0; j < col_units(); ++j) {
        const std::uint8_t* y = col_index_.data() + j * n;
        std::fill(hist.begin(), hist.end(), 0u);
        std::int64_t r = 0;
        for (; r + 4 <= n; r += 4) {
          ++h0[x[r] + y[r]];
          ++h1[x[r + 1] + y[r + 1]];
          ++h2[x[r + 2] + y[r + 2]];
          ++h3[x[r + 3] + y[r + 3]];
        }
        for (; r < n; ++r) ++h0[x[r] + y[r]];
        std::int64_t* out = counts_.data() + (i * s) * cols + j * s;
        for (std::int64_t a = 0; a < s; ++a)
          for (std::int64_t b = 0; b < s; ++b) {
            const std::int64_t c = a * s + b;
            out[a * cols + b] += std::int64_t{h0[c]} + h1[c] + h2[c] + h3[c];
          }
      }
    });
  }

  int threads_;
  std::int64_t bins_;
  std::int64_t block_rows_ = 16384;
  std::int64_t samples_ = 0;
  std::vector<std::int64_t> counts_;  // symmetric: blocks j >= i only until counts() mirrors them
  std::vector<std::uint16_t> row_codes_;
  std::vector<std::uint8_t> col_index_;
};

}  // namespace

std::unique_ptr<JointCounter> make_cpu_joint_counter(std::int64_t row_units, std::optional<std::int64_t> col_units,
                                                     const JointCountOptions& options, int threads) {
  return std::make_unique<CpuJointCounter>(row_units, col_units, options, threads);
}

}  // namespace convergent::detail

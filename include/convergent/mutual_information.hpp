// Mutual information between every pair of units (Li et al. 2016, section 2: the measure of sameness that
// sees non-linear relations too). Bins per unit from the moments pass (and, for quantile bins, exact
// order statistics from extra passes), then one counting pass: the joint counts of all unit pairs are the
// product of one-hot bin indicators (Backend::joint_counter), exact integers; MI and entropies from them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "convergent/activation.hpp"
#include "convergent/backend.hpp"
#include "convergent/matrix.hpp"
#include "convergent/moments.hpp"
#include "convergent/study.hpp"

namespace convergent {

// equal_width: B bins between the unit's min and max over all samples with numpy.histogram's semantics:
//   edges = numpy.linspace(min, max, B + 1) computed as numpy.histogram does, in the net's own dtype
//   (float32 arithmetic for float32 data), bin k holds edges[k] <= v < edges[k + 1], the last bin also
//   v == max.
//   A constant unit has one bin (all its samples in bin 0).
// quantile (the authors' scheme): exact zeros (ReLU's, and -0.0) in a bin of their own; the m non-zero
//   values of the unit in B bins at their percentiles. With y_1 <= ... <= y_m those values, the inner
//   edges are the exact order statistics e_k = y_(ceil(k m / B)), k = 1..B-1, and a non-zero v goes to bin
//   #{k : e_k < v}. The edges are exact (rank error 0), so the bins depend on the ranks alone and a
//   strictly increasing transform of a unit leaves its bins, and every MI, unchanged.
enum class MiBinning { equal_width, quantile };
// Logarithm base of every entropy and MI: bits (log2) or nats (ln).
enum class MiBase { bits, nats };

const char* to_string(MiBinning binning);  // "equal-width", "quantile"
const char* to_string(MiBase base);        // "bits", "nats"
// "equal-width" or "quantile"; throws Error otherwise.
MiBinning parse_mi_binning(const std::string& text);
// "2" or "bits" for bits, "e" or "nats" for nats; throws Error otherwise.
MiBase parse_mi_base(const std::string& text);

struct MiOptions {
  MiBinning binning = MiBinning::quantile;
  int bins = 10;  // B, as the authors; [2, 255]
  MiBase base = MiBase::bits;
  // Sample rows per batch of every pass; 0 picks about 32 MiB of float64 values. Rounded to whole images.
  std::int64_t batch_rows = 0;
  // The counts take 8 (U S)^2 bytes for U units of S bin slots (S = B, or B + 1 with the zero bin). When
  // that exceeds this budget the unit pairs are counted in blocks (groups of units against groups of
  // units), one counting pass per block, each block within the budget.
  std::int64_t memory_budget_bytes = std::int64_t{2} << 30;
  int threads = 0;  // CPU threads for binning; 0 = all cores
  // Called after each batch with (pass name, rows done, rows in all); may be empty.
  std::function<void(const std::string&, std::int64_t, std::int64_t)> progress;
};

// Per concatenated unit: how its values map to bin slots.
struct UnitBins {
  // equal_width: the B + 1 edges; quantile: the B - 1 inner edges of the non-zero values (none when the
  // unit has no non-zero value).
  std::vector<double> edges;
  std::int64_t nonzero = 0;  // quantile: values that are not exact zeros
};

struct MutualInformation {
  MiBinning binning = MiBinning::quantile;
  int bins = 10;
  MiBase base = MiBase::bits;
  // Bin slots per unit in the counts: B (equal-width) or B + 1 (quantile: slot 0 holds the exact zeros).
  std::int64_t slots = 0;
  std::int64_t samples = 0;  // rows counted (those of the moments pass)
  std::vector<UnitBins> unit_bins;
  std::vector<std::int64_t> occupied_bins;  // per unit: bins holding at least one sample
  // Per unit, in the chosen base: plug-in entropy H = -sum p log p, and with the Miller-Madow (1955)
  // correction H + (occupied bins - 1) / (2 N) (in nats; divided by ln 2 for bits).
  std::vector<double> entropy;
  std::vector<double> entropy_miller_madow;
  // U x U over the concatenated units, exactly symmetric, in the chosen base:
  //   mi: plug-in I(X;Y) = H(X) + H(Y) - H(X,Y) from the joint counts (the diagonal is H(X));
  //   mi_miller_madow: each of the three entropies Miller-Madow corrected, i.e.
  //     I + (m_X + m_Y - m_XY - 1) / (2 N) with m the occupied (joint) bins; not clamped, it can dip
  //     below 0 for independent units;
  //   normalized: I / ((H(X) + H(Y)) / 2) (scikit-learn's normalized_mutual_info_score, arithmetic mean),
  //     in [0, 1], 0 where either entropy is 0.
  // Dead units (Study::dead) have 0 everywhere, their diagonal included; no entry is ever NaN.
  Matrix mi;
  Matrix mi_miller_madow;
  Matrix normalized;
  std::vector<bool> dead;
  // How it was computed: passes over the data after the moments pass (quantile edges, then counting),
  // the counting blocks (1 when the whole (U S)^2 counts fit the budget), the bytes of one block's counts,
  // and the largest rank error of the quantile edges as a share of the unit's non-zero values (0: exact).
  std::int64_t passes = 0;
  std::int64_t quantile_passes = 0;
  std::int64_t count_blocks = 0;
  std::int64_t count_bytes = 0;
  double quantile_rank_error = 0.0;
};

// Equal-width edges of a unit with range [min, max] in dtype, bit for bit numpy.histogram(x, bins)[1] for
// an array x of that dtype: numpy.linspace in the dtype's arithmetic (step = (max - min) / bins, edge k =
// k * step + min, each operation rounded to the dtype; float16 through float32, as numpy), the last edge
// max. min == max gives one bin, edges {min, max}. Throws Error for bins < 1 or a non-finite or reversed
// range.
std::vector<double> equal_width_edges(double min, double max, int bins, DType dtype);
// The bin slot of a finite value v under `bins` (see MiBinning): for equal_width the k with
// edges[k] <= v < edges[k + 1] (the last bin closed; values outside the range go to the nearest end bin);
// for quantile 0 for v == 0, else 1 + #{k : edges[k] < v}.
int bin_slot(MiBinning binning, const UnitBins& bins, double v);

// MI, entropies and normalised MI of every unit pair from symmetric joint counts over all units (see
// MutualInformation; the bins and passes fields are left as they are). Throws Error unless the counts are
// square over dead.size() units and hold at least one sample.
void mutual_information_from_counts(const JointCounts& counts, const std::vector<bool>& dead, MiBase base,
                                    MutualInformation& out);

// Mutual information of every pair of units of a study, with further passes over its files (the same
// layout and non-finite rule as the moments pass, from `study_options`; rows skipped there are skipped
// here). Throws Error naming the file for a file that changed since the moments pass, and for bins
// outside [2, 255] or a memory budget below one unit pair's counts.
MutualInformation mutual_information(Backend& backend, const Study& study, const StudyOptions& study_options,
                                     const MiOptions& options);

// The same over in-memory activations: one block per net holding all its images (as ActivationBlock
// describes them), the moments of those blocks, the dead units, and whether rows holding a NaN or
// infinity are skipped (otherwise they are an error).
MutualInformation mutual_information(Backend& backend, const std::vector<ActivationBlock>& nets,
                                     const Moments& moments, const std::vector<bool>& dead, bool skip_nonfinite_rows,
                                     const MiOptions& options);

// Where the rows of the further passes come from: the study's files, in-memory blocks, or batches handed
// in again (the Python package's replay). Every pass reads sample rows 0 .. samples() in order, in windows
// of whole images of every net: begin_window(first_row, rows) is called (on the calling thread) before the
// window's block() calls, which may come from several threads at once; first_row 0 starts a pass.
class RowSource {
 public:
  virtual ~RowSource() = default;
  virtual std::size_t nets() const = 0;
  virtual std::int64_t pixels(std::size_t net) const = 0;  // sample rows per image of a net
  virtual std::int64_t samples() const = 0;                // sample rows of every net
  virtual void begin_window(std::int64_t /*first_row*/, std::int64_t /*rows*/) const {}
  // The samples of images [first, first + count) of a net, in host memory.
  virtual ActivationBlock block(std::size_t net, std::int64_t first, std::int64_t count) const = 0;
  // The rows [first, first + count) will not be read again in this pass.
  virtual void release(std::int64_t /*first*/, std::int64_t /*count*/) const {}
  // Throws the error for a NaN or infinity at a sample row (of all rows) of a net's unit.
  [[noreturn]] virtual void nonfinite(std::size_t net, std::int64_t row, std::int64_t unit) const = 0;
};

// The same over the rows of any source, described by `moments` (of the moments pass, with the same
// non-finite rule) and `dead`. Throws Error as the overloads above, and when the source's rows are not
// those the moments pass kept.
MutualInformation mutual_information(Backend& backend, const RowSource& source, const Moments& moments,
                                     const std::vector<bool>& dead, bool skip_nonfinite_rows,
                                     const MiOptions& options);

// Alignment of net A's units (rows) with net B's (columns) by MI, beside the correlation alignment.
struct MiPairAlignment {
  PairAlignment alignment;  // semi-matching and matching maximising MI (the *_corr fields hold MI here)
  // Share of A's units whose MI match (semi-match) is their correlation match (semi-match).
  double same_matching_as_correlation = 0.0;
  double same_semi_matching_as_correlation = 0.0;
};

// Aligns by the Miller-Madow-corrected MI block `mi_ab` (A's units as rows), compared with `by_correlation`
// (align_pair on the correlation block of the same nets).
MiPairAlignment align_pair_by_mi(Backend& backend, MatrixView<const double> mi_ab, const PairAlignment& by_correlation,
                                 int threads = 1);

}  // namespace convergent

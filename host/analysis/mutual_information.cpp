// Mutual information of every unit pair (include/convergent/mutual_information.hpp).
//
// Passes over the activations after the moments pass, each reading every net's batch into float64 rows
// and dropping the rows that pass 1 dropped (a NaN or infinity in any net, with --skip-nonfinite):
//   quantile edges (quantile binning only): an exact selection of the order statistics e_k of each unit's
//     non-zero values, by histograms over the values' order-preserving 64-bit keys. The first pass
//     histograms [key(min), key(max)] into 4096 bins; each later pass narrows every edge to the bin that
//     holds its rank, either by another 4096-bin histogram or, once the bin holds few values, by collecting
//     and sorting them. A 64-bit key range shrinks by 2^12 per pass, so it ends within 6 passes (2 or 3 in
//     practice); the edges are the exact order statistics (rank error 0).
//   counting: each row's bin slot per unit (uint8), fed to Backend::joint_counter; the counts of one block
//     of unit pairs take 8 (rows' units S) (columns' units S) bytes, so when all units together would
//     exceed the memory budget the units are split into groups and each pair of groups (p <= q) is counted
//     in a pass of its own.
// From the counts: per pair sum n log n over the occupied cells of its joint block; per unit the same
// over its own diagonal block (whose cells are its marginal counts, in the same order as the joint block
// of an exact copy, so that I(X; copy of X) = H(X) to the last bit).
#include "convergent/mutual_information.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>

#include "io/activation_file.hpp"
#include "convergent/error.hpp"
#include "convergent/lap.hpp"
#include "cpu/pack.hpp"
#include "cpu/parallel.hpp"

namespace convergent {

const char* to_string(MiBinning binning) { return binning == MiBinning::equal_width ? "equal-width" : "quantile"; }
const char* to_string(MiBase base) { return base == MiBase::bits ? "bits" : "nats"; }

MiBinning parse_mi_binning(const std::string& text) {
  if (text == "equal-width") return MiBinning::equal_width;
  if (text == "quantile") return MiBinning::quantile;
  throw Error("unknown MI binning '" + text + "': expected equal-width or quantile");
}

MiBase parse_mi_base(const std::string& text) {
  if (text == "2" || text == "bits") return MiBase::bits;
  if (text == "e" || text == "nats") return MiBase::nats;
  throw Error("unknown MI base '" + text + "': expected 2 (bits) or e (nats)");
}

namespace {

// The nearest float16 value to v (ties to even), as numpy's astype(float16) rounds; v is finite and within
// the float16 range (edges lie between a float16 unit's min and max).
double round_to_half(double v) {
  if (v == 0.0) return v;
  int exponent = std::ilogb(v);  // |v| in [2^e, 2^(e+1))
  exponent = std::max(exponent, -14);  // subnormal halves share the spacing of the smallest binade
  const double spacing = std::ldexp(1.0, exponent - 10);
  return std::nearbyint(v / spacing) * spacing;  // exact scaling by a power of two; default rounding: to even
}

}  // namespace

namespace {

// numpy.linspace(min, max, bins + 1) as numpy.histogram calls it: in the array's own dtype (min and max
// are numpy scalars of that dtype), step = (max - min) / bins, edge k = k * step + min, the last edge max,
// every operation rounded to T. float16 arithmetic is float32 arithmetic rounded to half, as numpy's
// half ufuncs do; `round` maps a T result to the dtype. No FMA contraction: ISO C++ mode turns it off.
template <class T, class Round>
std::vector<double> linspace_edges(double min, double max, int bins, const Round& round) {
  const T start = static_cast<T>(min), stop = static_cast<T>(max), div = static_cast<T>(bins);
  const T delta = round(stop - start);
  const T step = round(delta / div);
  std::vector<double> edges(static_cast<std::size_t>(bins) + 1);
  for (int k = 0; k < bins; ++k) {
    // numpy: y = arange * step (or, when step underflows to 0, arange / div * delta), then y += start.
    const T y = step == T(0) ? round(round(static_cast<T>(k) / div) * delta) : round(static_cast<T>(k) * step);
    edges[static_cast<std::size_t>(k)] = static_cast<double>(round(y + start));
  }
  edges.back() = max;
  return edges;
}

}  // namespace

std::vector<double> equal_width_edges(double min, double max, int bins, DType dtype) {
  if (bins < 1) throw Error("equal_width_edges: bins = " + std::to_string(bins) + "; at least 1");
  if (!std::isfinite(min) || !std::isfinite(max) || min > max)
    throw Error("equal_width_edges: the range [" + std::to_string(min) + ", " + std::to_string(max) +
                "] must be finite and ordered");
  if (min == max) return {min, max};
  switch (dtype) {
    case DType::float16:
      return linspace_edges<float>(min, max, bins, [](float v) { return static_cast<float>(round_to_half(v)); });
    case DType::float32: return linspace_edges<float>(min, max, bins, [](float v) { return v; });
    case DType::float64: break;
  }
  return linspace_edges<double>(min, max, bins, [](double v) { return v; });
}

int bin_slot(MiBinning binning, const UnitBins& bins, double v) {
  const std::vector<double>& e = bins.edges;
  if (binning == MiBinning::quantile) {
    if (v == 0.0) return 0;
    return 1 + static_cast<int>(std::lower_bound(e.begin(), e.end(), v) - e.begin());
  }
  const auto last = static_cast<std::ptrdiff_t>(e.size()) - 2;  // the last bin's index
  const std::ptrdiff_t k = std::upper_bound(e.begin(), e.end(), v) - e.begin() - 1;
  return static_cast<int>(std::clamp<std::ptrdiff_t>(k, 0, last));
}

namespace {

// ---------------------------------------------------------------------------------------------------
// Where the rows come from: the study's files, or in-memory blocks (RowSource, in the header).

class FileSource final : public RowSource {
 public:
  FileSource(const Study& study, const StudyOptions& options) {
    for (const NetInfo& net : study.nets) {
      files_.emplace_back(net.path, options.layout);
      const ActivationFile& file = files_.back();
      if (file.units() != net.units || file.samples() != files_.front().samples())
        throw Error(file.path() + ": " + std::to_string(file.samples()) + " samples of " + std::to_string(file.units()) +
                    " units, but the moments pass read " + std::to_string(net.units) +
                    " units; the file changed since (mutual information reads it again)");
    }
  }
  std::size_t nets() const override { return files_.size(); }
  std::int64_t pixels(std::size_t net) const override { return files_[net].pixels(); }
  std::int64_t samples() const override { return files_.front().samples(); }
  ActivationBlock block(std::size_t net, std::int64_t first, std::int64_t count) const override {
    return files_[net].block(first, count);
  }
  void release(std::int64_t first, std::int64_t count) const override {
    for (const ActivationFile& file : files_) file.release(first / file.pixels(), count / file.pixels());
  }
  [[noreturn]] void nonfinite(std::size_t net, std::int64_t row, std::int64_t unit) const override {
    const ActivationFile& file = files_[net];
    throw Error(file.path() + ": NaN or infinity at " + file.describe_row(row) + ", unit " + std::to_string(unit) +
                "; pass --skip-nonfinite to drop such rows");
  }

 private:
  std::vector<ActivationFile> files_;
};

class BlockSource final : public RowSource {
 public:
  explicit BlockSource(const std::vector<ActivationBlock>& nets) : nets_(nets) {
    for (const ActivationBlock& b : nets_)
      if (b.rows() != nets_.front().rows())
        throw Error("mutual_information: the nets hold " + std::to_string(nets_.front().rows()) + " and " +
                    std::to_string(b.rows()) + " sample rows; every net needs the same rows");
  }
  std::size_t nets() const override { return nets_.size(); }
  std::int64_t pixels(std::size_t net) const override { return nets_[net].height * nets_[net].width; }
  std::int64_t samples() const override { return nets_.front().rows(); }
  ActivationBlock block(std::size_t net, std::int64_t first, std::int64_t count) const override {
    ActivationBlock b = nets_[net];
    b.data = static_cast<const unsigned char*>(b.data) + first * b.image_stride * dtype_size(b.dtype);
    b.images = count;
    return b;
  }
  [[noreturn]] void nonfinite(std::size_t net, std::int64_t row, std::int64_t unit) const override {
    throw Error("mutual_information: NaN or infinity in net " + std::to_string(net) + " at sample row " +
                std::to_string(row) + ", unit " + std::to_string(unit));
  }

 private:
  std::vector<ActivationBlock> nets_;
};

// ---------------------------------------------------------------------------------------------------
// One pass: every batch of rows as float64, without the rows that hold a NaN or infinity in any net (the
// rule of the moments pass), handed to visit(rows x U view).

class Reader {
 public:
  Reader(const RowSource& source, const std::vector<std::int64_t>& net_units, bool skip_nonfinite,
         std::int64_t batch_rows, int threads)
      : source_(source), net_units_(net_units), skip_(skip_nonfinite), threads_(threads) {
    units_ = std::accumulate(net_units.begin(), net_units.end(), std::int64_t{0});
    std::int64_t whole_images = 1;
    for (std::size_t net = 0; net < source.nets(); ++net) whole_images = std::lcm(whole_images, source.pixels(net));
    if (batch_rows <= 0) batch_rows = std::clamp<std::int64_t>((std::int64_t{1} << 22) / units_, 256, 65536);
    batch_rows_ = std::max<std::int64_t>(1, batch_rows / whole_images) * whole_images;
    batch_rows_ = std::min(batch_rows_, std::max<std::int64_t>(whole_images, source.samples()));
    values_.resize(static_cast<std::size_t>(batch_rows_ * units_));
  }

  std::int64_t batch_rows() const { return batch_rows_; }
  std::int64_t units() const { return units_; }

  // Returns the rows kept.
  template <class Visit>
  std::int64_t pass(const std::string& name, const std::function<void(const std::string&, std::int64_t, std::int64_t)>& progress,
                    const Visit& visit) {
    const std::int64_t total = source_.samples();
    std::int64_t kept_all = 0;
    for (std::int64_t row = 0; row < total; row += batch_rows_) {
      const std::int64_t count = std::min(batch_rows_, total - row);
      const MatrixView<double> x(values_.data(), count, units_);
      source_.begin_window(row, count);
      // Threads take contiguous row ranges of every net (pack_block's first_row), which spreads the
      // dtype conversion and the gathers of non-C layouts.
      const std::int64_t pieces = std::min<std::int64_t>(threads_, (count + 255) / 256);
      parallel_for(pieces, threads_, [&](std::int64_t p) {
        const std::int64_t r0 = count * p / pieces, r1 = count * (p + 1) / pieces;
        const MatrixView<double> part(x.row(r0), r1 - r0, units_, units_);
        std::int64_t offset = 0;
        for (std::size_t net = 0; net < source_.nets(); ++net) {
          const ActivationBlock b = source_.block(net, row / source_.pixels(net), count / source_.pixels(net));
          pack_block(b, part, offset, r0);
          offset += net_units_[net];
        }
      });
      const std::int64_t kept = drop_nonfinite(x, row);
      kept_all += kept;
      visit(MatrixView<const double>(x.data, kept, units_));
      source_.release(row, count);
      if (progress) progress(name, row + count, total);
    }
    return kept_all;
  }

 private:
  // Compacts the finite rows to the front; a row with a NaN or infinity is dropped when skipping, else
  // the first one (row-major) is the source's error.
  std::int64_t drop_nonfinite(MatrixView<double> x, std::int64_t first_row) const {
    std::int64_t kept = 0;
    for (std::int64_t r = 0; r < x.rows; ++r) {
      const double* v = x.row(r);
      double probe = 0.0;
      for (std::int64_t u = 0; u < units_; ++u) probe += v[u] - v[u];  // 0 unless a value is NaN or infinite
      if (probe != 0.0 || std::isnan(probe)) {
        if (!skip_) {
          const std::int64_t unit = std::find_if(v, v + units_, [](double y) { return !std::isfinite(y); }) - v;
          std::size_t net = 0;
          std::int64_t offset = 0;
          while (unit >= offset + net_units_[net]) offset += net_units_[net++];
          source_.nonfinite(net, first_row + r, unit - offset);
        }
        continue;
      }
      if (kept != r) std::memmove(x.row(kept), v, static_cast<std::size_t>(units_) * sizeof(double));
      ++kept;
    }
    return kept;
  }

  const RowSource& source_;
  std::vector<std::int64_t> net_units_;
  bool skip_;
  int threads_;
  std::int64_t units_ = 0;
  std::int64_t batch_rows_ = 0;
  std::vector<double> values_;
};

// ---------------------------------------------------------------------------------------------------
// Exact quantile edges.

// An order-preserving map of doubles to unsigned keys: a < b exactly when key(a) < key(b) (-0.0 below
// +0.0, which never matters here: zeros have a bin of their own).
std::uint64_t order_key(double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits >> 63) != 0 ? ~bits : bits | (std::uint64_t{1} << 63);
}

double from_order_key(std::uint64_t key) {
  const std::uint64_t bits = (key >> 63) != 0 ? key & ~(std::uint64_t{1} << 63) : ~key;
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

constexpr int kHistogramBits = 12;                 // 4096 bins per window and pass
constexpr std::int64_t kCollectLimit = 1 << 14;    // a window with at most this many values is sorted instead

// Keys [lo, lo + (bins << shift)) of one unit, histogrammed or collected in a pass.
struct Window {
  std::uint64_t lo = 0;
  int shift = 0;
  std::int64_t bins = 0;  // histogram windows
  std::uint64_t last = 0;  // the last key inside
  bool collect = false;
  std::vector<std::int64_t> histogram;
  std::vector<double> values;
};

// Edge k of a unit: its rank (1-based) among the non-zero values inside window `window`.
struct Target {
  std::size_t window = 0;
  std::int64_t rank = 0;
  bool resolved = false;
  double value = 0.0;
};

struct UnitSelection {
  std::vector<Window> windows;  // disjoint, in key order
  std::vector<Target> targets;
  std::int64_t nonzero = 0;
  bool active = false;
};

Window histogram_window(std::uint64_t lo, std::uint64_t last) {
  Window w;
  w.lo = lo;
  w.last = last;
  while (((last - lo) >> w.shift) >= (std::uint64_t{1} << kHistogramBits)) ++w.shift;
  w.bins = static_cast<std::int64_t>((last - lo) >> w.shift) + 1;
  w.histogram.assign(static_cast<std::size_t>(w.bins), 0);
  return w;
}

void observe(UnitSelection& s, double v) {
  if (v == 0.0) return;
  const std::uint64_t key = order_key(v);
  std::size_t w = 0;
  if (s.windows.size() > 1) {
    const auto it = std::upper_bound(s.windows.begin(), s.windows.end(), key,
                                     [](std::uint64_t k, const Window& window) { return k < window.lo; });
    if (it == s.windows.begin()) return;
    w = static_cast<std::size_t>(it - s.windows.begin()) - 1;
  }
  Window& window = s.windows[w];
  if (key < window.lo || key > window.last) return;
  if (window.collect) {
    window.values.push_back(v);
  } else {
    ++window.histogram[static_cast<std::size_t>((key - window.lo) >> window.shift)];
  }
}

// After a pass: each unresolved edge moves to the part of its window that holds its rank; resolved when
// that part is one key (one value) or after it was collected and sorted.
void narrow(UnitSelection& s) {
  std::vector<Window> next;
  for (Target& t : s.targets) {
    if (t.resolved) continue;
    Window& w = s.windows[t.window];
    if (w.collect) {
      std::sort(w.values.begin(), w.values.end());
      t.value = w.values[static_cast<std::size_t>(t.rank - 1)];
      t.resolved = true;
      continue;
    }
    std::int64_t below = 0, b = 0;
    while (below + w.histogram[static_cast<std::size_t>(b)] < t.rank) below += w.histogram[static_cast<std::size_t>(b++)];
    const std::uint64_t lo = w.lo + (static_cast<std::uint64_t>(b) << w.shift);
    const std::uint64_t last = std::min(w.last, lo + ((std::uint64_t{1} << w.shift) - 1));
    t.rank -= below;
    if (lo == last) {
      t.value = from_order_key(lo);
      t.resolved = true;
      continue;
    }
    const auto same = std::find_if(next.begin(), next.end(), [&](const Window& n) { return n.lo == lo; });
    if (same != next.end()) {
      t.window = static_cast<std::size_t>(same - next.begin());
      continue;
    }
    Window n;
    if (w.histogram[static_cast<std::size_t>(b)] <= kCollectLimit) {
      n.lo = lo;
      n.last = last;
      n.collect = true;
      n.values.reserve(static_cast<std::size_t>(w.histogram[static_cast<std::size_t>(b)]));
    } else {
      n = histogram_window(lo, last);
    }
    t.window = next.size();
    next.push_back(std::move(n));
  }
  // Targets point into `next`, in key order already: edges are ascending and so are their windows.
  s.windows = std::move(next);
  s.active = std::any_of(s.targets.begin(), s.targets.end(), [](const Target& t) { return !t.resolved; });
}

// Runs the selection passes; returns the number of passes made.
std::int64_t select_quantile_edges(Reader& reader, const Moments& moments, const MiOptions& options, int threads,
                                   std::vector<UnitBins>& bins) {
  const std::int64_t u = moments.units();
  std::vector<UnitSelection> selection(static_cast<std::size_t>(u));
  for (std::int64_t i = 0; i < u; ++i) {
    UnitSelection& s = selection[static_cast<std::size_t>(i)];
    s.windows.push_back(histogram_window(order_key(moments.min[i]), order_key(moments.max[i])));
    s.active = true;
  }
  auto run_pass = [&](std::int64_t pass) {
    std::vector<std::int64_t> active;
    for (std::int64_t i = 0; i < u; ++i)
      if (selection[static_cast<std::size_t>(i)].active) active.push_back(i);
    const auto groups = static_cast<std::int64_t>(std::min<std::size_t>(static_cast<std::size_t>(threads), active.size()));
    reader.pass("mutual information: quantile edges, pass " + std::to_string(pass), options.progress,
                [&](MatrixView<const double> x) {
                  parallel_for(groups, threads, [&](std::int64_t g) {
                    const auto a0 = static_cast<std::size_t>(static_cast<std::int64_t>(active.size()) * g / groups);
                    const auto a1 = static_cast<std::size_t>(static_cast<std::int64_t>(active.size()) * (g + 1) / groups);
                    for (std::int64_t r = 0; r < x.rows; ++r) {
                      const double* row = x.row(r);
                      for (std::size_t k = a0; k < a1; ++k) observe(selection[static_cast<std::size_t>(active[k])], row[active[k]]);
                    }
                  });
                });
  };
  run_pass(1);
  std::int64_t passes = 1;
  for (std::int64_t i = 0; i < u; ++i) {
    UnitSelection& s = selection[static_cast<std::size_t>(i)];
    const Window& w = s.windows.front();
    s.nonzero = std::accumulate(w.histogram.begin(), w.histogram.end(), std::int64_t{0});
    // e_k = y_(ceil(k m / B)), k = 1..B-1: ranks among all non-zero values, which the first window holds.
    if (s.nonzero > 0)
      for (std::int64_t k = 1; k < options.bins; ++k)
        s.targets.push_back({0, (k * s.nonzero + options.bins - 1) / options.bins, false, 0.0});
    narrow(s);
  }
  while (std::any_of(selection.begin(), selection.end(), [](const UnitSelection& s) { return s.active; })) {
    run_pass(++passes);
    for (UnitSelection& s : selection)
      if (s.active) narrow(s);
  }
  for (std::int64_t i = 0; i < u; ++i) {
    const UnitSelection& s = selection[static_cast<std::size_t>(i)];
    UnitBins& b = bins[static_cast<std::size_t>(i)];
    b.nonzero = s.nonzero;
    for (const Target& t : s.targets) b.edges.push_back(t.value);
  }
  return passes;
}

// ---------------------------------------------------------------------------------------------------
// From counts to entropies.

// n log n for counts up to a table size, std::log beyond: the table serves nearly every joint cell.
class NLogN {
 public:
  explicit NLogN(std::int64_t samples) {
    table_.resize(static_cast<std::size_t>(std::min<std::int64_t>(samples, 1 << 16) + 1));
    for (std::size_t n = 1; n < table_.size(); ++n) table_[n] = static_cast<double>(n) * std::log(static_cast<double>(n));
  }
  double operator()(std::int64_t n) const {
    return n < static_cast<std::int64_t>(table_.size()) ? table_[static_cast<std::size_t>(n)]
                                                          : static_cast<double>(n) * std::log(static_cast<double>(n));
  }

 private:
  std::vector<double> table_;
};

// Per-pair sums from the blocks counted so far (in nats, before the entropies are put together).
struct PairTerms {
  std::int64_t units = 0;
  std::int64_t samples = 0;
  std::vector<double> joint_nlogn;      // U x U: sum of n log n over the occupied cells of the pair's block
  // U x U: occupied cells of the pair's block; 0 until the block is counted (a counted block holds every
  // sample, so at least one cell). int32: at most 256^2 cells.
  std::vector<std::int32_t> joint_occupied;
};

// Adds the pairs of a block of counts whose row units start at concatenated unit row0 and column units at
// col0 (a symmetric block: the pairs j >= i).
void add_block_terms(const JointCounts& c, std::int64_t row0, std::int64_t col0, const NLogN& nlogn, int threads,
                     PairTerms& terms) {
  const std::int64_t s = c.bins, cols = c.cols();
  const bool symmetric = row0 == col0 && c.row_units == c.col_units;
  parallel_for(c.row_units, threads, [&](std::int64_t i) {
    for (std::int64_t j = symmetric ? i : 0; j < c.col_units; ++j) {
      const std::int64_t* block = c.values.data() + (i * s) * cols + j * s;
      double sum = 0.0;
      std::int64_t occupied = 0;
      for (std::int64_t a = 0; a < s; ++a)
        for (std::int64_t b = 0; b < s; ++b) {
          const std::int64_t n = block[a * cols + b];
          if (n == 0) continue;
          sum += nlogn(n);
          ++occupied;
        }
      const std::int64_t at = (row0 + i) * terms.units + col0 + j;
      terms.joint_nlogn[static_cast<std::size_t>(at)] = sum;
      terms.joint_occupied[static_cast<std::size_t>(at)] = static_cast<std::int32_t>(occupied);
    }
  });
}

void finish_terms(const PairTerms& terms, const std::vector<bool>& dead, MiBase base, int threads,
                  MutualInformation& out) {
  const std::int64_t u = terms.units;
  const double n = static_cast<double>(terms.samples);
  const double log_n = std::log(n);
  const double to_base = base == MiBase::bits ? 1.0 / std::log(2.0) : 1.0;
  auto at = [&](std::int64_t i, std::int64_t j) { return static_cast<std::size_t>(std::min(i, j) * u + std::max(i, j)); };
  for (std::int64_t i = 0; i < u; ++i)
    for (std::int64_t j = i; j < u; ++j)
      if (terms.joint_occupied[at(i, j)] == 0)
        throw InternalError("the joint counts of units " + std::to_string(i) + " and " + std::to_string(j) +
                            " were never counted");
  // H = log N - (1/N) sum n log n, in nats; Miller-Madow adds (occupied - 1) / (2 N).
  auto entropy = [&](std::size_t k) { return log_n - terms.joint_nlogn[k] / n; };
  auto correction = [&](std::size_t k) { return static_cast<double>(terms.joint_occupied[k] - 1) / (2.0 * n); };
  out.entropy.assign(static_cast<std::size_t>(u), 0.0);
  out.entropy_miller_madow.assign(static_cast<std::size_t>(u), 0.0);
  out.occupied_bins.assign(static_cast<std::size_t>(u), 0);
  std::vector<double> h(static_cast<std::size_t>(u)), h_mm(static_cast<std::size_t>(u));
  for (std::int64_t i = 0; i < u; ++i) {
    const std::size_t k = at(i, i);
    h[static_cast<std::size_t>(i)] = entropy(k);
    h_mm[static_cast<std::size_t>(i)] = entropy(k) + correction(k);
    out.occupied_bins[static_cast<std::size_t>(i)] = terms.joint_occupied[k];
    if (!dead[static_cast<std::size_t>(i)]) {
      out.entropy[static_cast<std::size_t>(i)] = h[static_cast<std::size_t>(i)] * to_base;
      out.entropy_miller_madow[static_cast<std::size_t>(i)] = h_mm[static_cast<std::size_t>(i)] * to_base;
    }
  }
  out.mi = Matrix(u, u);
  out.mi_miller_madow = Matrix(u, u);
  out.normalized = Matrix(u, u);
  parallel_for(u, threads, [&](std::int64_t i) {
    if (dead[static_cast<std::size_t>(i)]) return;
    for (std::int64_t j = i; j < u; ++j) {
      if (dead[static_cast<std::size_t>(j)]) continue;
      const std::size_t k = at(i, j);
      const double hi = h[static_cast<std::size_t>(i)], hj = h[static_cast<std::size_t>(j)];
      // Plug-in MI is >= 0 and <= min(H_i, H_j); the clamps only remove rounding.
      const double mi = std::clamp((hi + hj) - entropy(k), 0.0, std::min(hi, hj));
      const double mi_mm = (h_mm[static_cast<std::size_t>(i)] + h_mm[static_cast<std::size_t>(j)]) -
                           (entropy(k) + correction(k));
      out.mi(i, j) = mi * to_base;
      out.mi_miller_madow(i, j) = mi_mm * to_base;
      out.normalized(i, j) = hi > 0.0 && hj > 0.0 ? std::clamp(mi / (0.5 * (hi + hj)), 0.0, 1.0) : 0.0;
    }
  });
  for (Matrix* m : {&out.mi, &out.mi_miller_madow, &out.normalized}) fill_lower_triangle(*m);
  out.dead = dead;
}

// ---------------------------------------------------------------------------------------------------

void check_options(const MiOptions& options) {
  if (options.bins < 2 || options.bins > 255)
    throw Error("mutual information: --mi-bins " + std::to_string(options.bins) +
                " outside [2, 255] (bin indices are one byte, with room for the zero bin)");
  if (options.batch_rows < 0) throw Error("mutual information: batch rows must be positive");
}

// Contiguous unit groups [start, end) whose pairwise count blocks each fit the budget.
std::vector<std::int64_t> unit_groups(std::int64_t units, std::int64_t slots, std::int64_t budget) {
  const auto bytes = [&](std::int64_t g) { return 8.0 * double(g * slots) * double(g * slots); };
  std::int64_t g = units;
  if (bytes(g) > double(budget)) {
    g = static_cast<std::int64_t>(std::sqrt(double(budget) / 8.0)) / slots;
    while (g > 1 && bytes(g) > double(budget)) --g;
    if (g < 1 || bytes(g) > double(budget))
      throw Error("mutual information: a memory budget of " + std::to_string(budget) +
                  " bytes is below the counts of one unit pair (" + std::to_string(8 * slots * slots) + " bytes)");
  }
  std::vector<std::int64_t> starts;
  // Groups of equal size (give or take one), so that no block is needlessly small.
  const std::int64_t groups = (units + g - 1) / g;
  for (std::int64_t k = 0; k <= groups; ++k) starts.push_back(units * k / groups);
  return starts;
}

MutualInformation compute(Backend& backend, const RowSource& source, const Moments& moments,
                          const std::vector<bool>& dead, bool skip_nonfinite, const MiOptions& options) {
  check_options(options);
  const std::int64_t u = moments.units();
  if (static_cast<std::int64_t>(dead.size()) != u)
    throw Error("mutual information: `dead` has " + std::to_string(dead.size()) + " entries for " +
                std::to_string(u) + " units");
  if (source.nets() != moments.net_units.size())
    throw Error("mutual information: " + std::to_string(source.nets()) + " nets, but the moments describe " +
                std::to_string(moments.net_units.size()));
  if (moments.samples < 1) throw Error("mutual information: the moments hold no sample");
  const int threads = thread_count(options.threads);
  Reader reader(source, moments.net_units, skip_nonfinite, options.batch_rows, threads);

  MutualInformation result;
  result.binning = options.binning;
  result.bins = options.bins;
  result.base = options.base;
  result.slots = options.binning == MiBinning::quantile ? options.bins + 1 : options.bins;
  result.unit_bins.resize(static_cast<std::size_t>(u));
  if (options.binning == MiBinning::equal_width) {
    std::int64_t unit = 0;
    for (std::size_t net = 0; net < source.nets(); ++net) {
      const DType dtype = source.block(net, 0, 0).dtype;
      for (std::int64_t k = 0; k < moments.net_units[net]; ++k, ++unit)
        result.unit_bins[static_cast<std::size_t>(unit)].edges =
            equal_width_edges(moments.min[unit], moments.max[unit], options.bins, dtype);
    }
  } else {
    result.quantile_passes = select_quantile_edges(reader, moments, options, threads, result.unit_bins);
  }

  // Counting: one block of all units when it fits the budget, else every pair of unit groups.
  const std::vector<std::int64_t> starts = unit_groups(u, result.slots, options.memory_budget_bytes);
  const auto groups = static_cast<std::int64_t>(starts.size()) - 1;
  PairTerms terms;
  terms.units = u;
  terms.samples = moments.samples;
  terms.joint_nlogn.assign(static_cast<std::size_t>(u * u), 0.0);
  terms.joint_occupied.assign(static_cast<std::size_t>(u * u), 0);
  const NLogN nlogn(moments.samples);
  std::vector<std::uint8_t> slots(static_cast<std::size_t>(reader.batch_rows() * u));
  JointCountOptions count_options;
  count_options.bins = result.slots;
  count_options.max_batch_rows = reader.batch_rows();
  result.count_blocks = groups * (groups + 1) / 2;
  std::int64_t block_number = 0;
  for (std::int64_t p = 0; p < groups; ++p)
    for (std::int64_t q = p; q < groups; ++q) {
      const std::int64_t r0 = starts[p], rn = starts[p + 1] - r0, c0 = starts[q], cn = starts[q + 1] - c0;
      const bool symmetric = p == q;
      result.count_bytes = std::max(result.count_bytes, 8 * rn * result.slots * cn * result.slots);
      auto counter = backend.joint_counter(rn, symmetric ? std::nullopt : std::optional<std::int64_t>(cn), count_options);
      const std::string name = "mutual information: counts" + (result.count_blocks > 1
                                   ? ", block " + std::to_string(++block_number) + " of " + std::to_string(result.count_blocks)
                                   : std::string());
      const std::int64_t kept = reader.pass(name, options.progress, [&](MatrixView<const double> x) {
        // Slots of the units of this block only: rows of the block's row units, then its column units.
        const MatrixView<std::uint8_t> s(slots.data(), x.rows, u);
        parallel_for(std::min<std::int64_t>(threads, std::max<std::int64_t>(1, x.rows / 64)), threads, [&](std::int64_t t) {
          const std::int64_t pieces = std::min<std::int64_t>(threads, std::max<std::int64_t>(1, x.rows / 64));
          for (std::int64_t r = x.rows * t / pieces; r < x.rows * (t + 1) / pieces; ++r) {
            const double* v = x.row(r);
            std::uint8_t* out = s.row(r);
            for (std::int64_t k = r0; k < r0 + rn; ++k)
              out[k] = static_cast<std::uint8_t>(bin_slot(options.binning, result.unit_bins[static_cast<std::size_t>(k)], v[k]));
            if (!symmetric)
              for (std::int64_t k = c0; k < c0 + cn; ++k)
                out[k] = static_cast<std::uint8_t>(bin_slot(options.binning, result.unit_bins[static_cast<std::size_t>(k)], v[k]));
          }
        });
        const MatrixView<const std::uint8_t> rows_view(s.data + r0, x.rows, rn, u);
        if (symmetric) {
          counter->add(rows_view);
        } else {
          counter->add(rows_view, MatrixView<const std::uint8_t>(s.data + c0, x.rows, cn, u));
        }
      });
      if (kept != moments.samples)
        throw Error("mutual information: " + std::to_string(kept) + " rows read, but the moments pass kept " +
                    std::to_string(moments.samples) + "; the files changed since");
      const JointCounts counts = counter->counts();
      add_block_terms(counts, r0, c0, nlogn, threads, terms);
    }
  result.samples = moments.samples;
  result.passes = result.quantile_passes + result.count_blocks;
  finish_terms(terms, dead, options.base, threads, result);
  return result;
}

}  // namespace

void mutual_information_from_counts(const JointCounts& counts, const std::vector<bool>& dead, MiBase base,
                                    MutualInformation& out) {
  const auto u = static_cast<std::int64_t>(dead.size());
  if (counts.row_units != u || counts.col_units != u ||
      static_cast<std::int64_t>(counts.values.size()) != counts.row_units * counts.bins * counts.cols())
    throw Error("mutual_information_from_counts: the counts are " + std::to_string(counts.row_units) + " x " +
                std::to_string(counts.col_units) + " units; expected " + std::to_string(u) + " x " + std::to_string(u));
  if (counts.samples < 1) throw Error("mutual_information_from_counts: the counts hold no sample");
  PairTerms terms;
  terms.units = u;
  terms.samples = counts.samples;
  terms.joint_nlogn.assign(static_cast<std::size_t>(u * u), 0.0);
  terms.joint_occupied.assign(static_cast<std::size_t>(u * u), 0);
  const int threads = thread_count(0);
  add_block_terms(counts, 0, 0, NLogN(counts.samples), threads, terms);
  out.samples = counts.samples;
  out.slots = counts.bins;
  out.base = base;
  finish_terms(terms, dead, base, threads, out);
}

MutualInformation mutual_information(Backend& backend, const Study& study, const StudyOptions& study_options,
                                     const MiOptions& options) {
  check_options(options);
  const FileSource source(study, study_options);
  return compute(backend, source, study.moments, study.dead, study_options.skip_nonfinite_rows, options);
}

MutualInformation mutual_information(Backend& backend, const std::vector<ActivationBlock>& nets, const Moments& moments,
                                     const std::vector<bool>& dead, bool skip_nonfinite_rows, const MiOptions& options) {
  check_options(options);
  if (nets.empty()) throw Error("mutual_information: no nets");
  for (std::size_t net = 0; net < nets.size(); ++net)
    if (net >= moments.net_units.size() || nets[net].units != moments.net_units[net])
      throw Error("mutual_information: net " + std::to_string(net) + " has " + std::to_string(nets[net].units) +
                  " units, which the moments do not describe");
  const BlockSource source(nets);
  return compute(backend, source, moments, dead, skip_nonfinite_rows, options);
}

MutualInformation mutual_information(Backend& backend, const RowSource& source, const Moments& moments,
                                     const std::vector<bool>& dead, bool skip_nonfinite_rows, const MiOptions& options) {
  check_options(options);
  if (source.nets() != moments.net_units.size())
    throw Error("mutual_information: the source has " + std::to_string(source.nets()) + " nets, the moments " +
                std::to_string(moments.net_units.size()));
  return compute(backend, source, moments, dead, skip_nonfinite_rows, options);
}

MiPairAlignment align_pair_by_mi(Backend& backend, MatrixView<const double> mi_ab, const PairAlignment& by_correlation,
                                 int threads) {
  MiPairAlignment result;
  result.alignment = align_pair(backend, mi_ab, threads);
  const auto& mi_match = result.alignment.matching.row_to_col;
  const auto& corr_match = by_correlation.matching.row_to_col;
  std::int64_t assigned = 0, same = 0, same_semi = 0;
  for (std::size_t a = 0; a < mi_match.size() && a < corr_match.size(); ++a) {
    if (corr_match[a] >= 0) {
      ++assigned;
      same += mi_match[a] == corr_match[a];
    }
  }
  for (std::size_t a = 0; a < result.alignment.semi_match.size() && a < by_correlation.semi_match.size(); ++a)
    same_semi += result.alignment.semi_match[a] == by_correlation.semi_match[a];
  result.same_matching_as_correlation = assigned > 0 ? double(same) / double(assigned) : 0.0;
  result.same_semi_matching_as_correlation =
      mi_ab.rows > 0 ? double(same_semi) / double(mi_ab.rows) : 0.0;
  return result;
}

}  // namespace convergent

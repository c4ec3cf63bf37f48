// Mutual information (issue 12): joint counts against brute-force counting (every binning, dtype and
// layout, batch sizes that do not divide the rows, blocks under a memory budget); closed forms
// (independent units near 0, an exact copy and a strictly increasing transform give the entropy); the
// equal-width bins against numpy.histogram's known answers; dead units, non-finite rows, files and the
// interface checks. Known answers are brute force in C++ or numbers numpy printed (quoted where used).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "convergent/convergent.hpp"
#include "convergent/mutual_information.hpp"
#include "io/npy.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

// ---------------------------------------------------------------------------------------------------
// Activations in a dtype and layout, from a float64 truth (rows x units, rows = images * h * w).

enum class Store { c_order, fortran, nchw, nhwc };

double in_dtype(double v, DType dtype) {
  if (!std::isfinite(v)) return v;
  if (dtype == DType::float16) return std::clamp(std::round(v * 64.0) / 64.0, -31.984375, 31.984375);
  if (dtype == DType::float32) return static_cast<double>(static_cast<float>(v));
  return v;
}

struct Net {
  DType dtype = DType::float64;
  Store store = Store::c_order;
  std::int64_t images = 0, height = 1, width = 1, units = 0;
  bool big_endian = false;
  std::vector<unsigned char> bytes;

  std::int64_t offset(std::int64_t n, std::int64_t c, std::int64_t y, std::int64_t x) const {
    switch (store) {
      case Store::c_order: return n * units + c;
      case Store::fortran: return n + c * images;
      case Store::nchw: return ((n * units + c) * height + y) * width + x;
      case Store::nhwc: return ((n * height + y) * width + x) * units + c;
    }
    return 0;
  }
  ActivationBlock block() const {
    ActivationBlock b;
    b.data = bytes.data();
    b.dtype = dtype;
    b.big_endian = big_endian;
    b.images = images;
    b.units = units;
    b.height = height;
    b.width = width;
    b.image_stride = offset(1, 0, 0, 0);
    b.unit_stride = offset(0, 1, 0, 0);
    b.y_stride = offset(0, 0, 1, 0);
    b.x_stride = offset(0, 0, 0, 1);
    return b;
  }
};

// truth: rows x total units; net k takes columns [first, first + units). Values are rounded to the dtype
// in `truth` itself, so that the oracle sees what the reader sees.
Net make_net(std::vector<double>& truth, std::int64_t total, std::int64_t first, std::int64_t units, DType dtype,
             Store store, std::int64_t images, std::int64_t h, std::int64_t w, bool big_endian) {
  Net net;
  net.dtype = dtype;
  net.store = store;
  net.images = images;
  net.height = h;
  net.width = w;
  net.units = units;
  net.big_endian = big_endian;
  const int size = dtype_size(dtype);
  net.bytes.resize(static_cast<std::size_t>(images * units * h * w * size));
  for (std::int64_t n = 0; n < images; ++n)
    for (std::int64_t y = 0; y < h; ++y)
      for (std::int64_t x = 0; x < w; ++x) {
        const std::int64_t r = (n * h + y) * w + x;
        for (std::int64_t c = 0; c < units; ++c) {
          double& v = truth[static_cast<std::size_t>(r * total + first + c)];
          v = in_dtype(v, dtype);
          unsigned char* p = net.bytes.data() + net.offset(n, c, y, x) * size;
          if (dtype == DType::float16) {
            const std::uint16_t bits = testing::float16_bits(v);
            std::memcpy(p, &bits, 2);
          } else if (dtype == DType::float32) {
            const float f = static_cast<float>(v);
            std::memcpy(p, &f, 4);
          } else {
            std::memcpy(p, &v, 8);
          }
          if (big_endian) std::reverse(p, p + size);
        }
      }
  return net;
}

// ReLU-like units (exact zeros) sharing a latent, a few with ties; values multiples of 1/64 (exact in every
// dtype) so that float16 holds them too.
std::vector<double> make_truth(std::int64_t rows, std::int64_t units, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> loading(static_cast<std::size_t>(units));
  for (double& l : loading) l = normal(rng);
  std::vector<double> truth(static_cast<std::size_t>(rows * units));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double z = normal(rng);
    for (std::int64_t u = 0; u < units; ++u) {
      const double v = std::max(0.0, 2.0 * (loading[u] * z + normal(rng)));
      truth[static_cast<std::size_t>(r * units + u)] = std::min(std::round(v * 64.0) / 64.0, 31.0);
    }
  }
  return truth;
}

Moments moments_of_truth(const std::vector<double>& truth, std::int64_t rows, const std::vector<std::int64_t>& net_units) {
  std::int64_t total = 0;
  for (auto u : net_units) total += u;
  return moments_of(MatrixView<const double>(truth.data(), rows, total), net_units);
}

// ---------------------------------------------------------------------------------------------------
// Oracles.

// The bins of numpy.histogram(v, bins=B) for uniform bins, as numpy computes them (numpy/lib/histograms.py):
// f = (v - first) * (B / (last - first)), k = int(f), k == B -> B - 1, then one step down where
// v < edges[k] and one up where v >= edges[k + 1] (not for the last bin).
int numpy_histogram_bin(double v, const std::vector<double>& edges) {
  const int b = static_cast<int>(edges.size()) - 1;
  const double first = edges.front(), last = edges.back();
  if (first == last) return 0;
  int k = static_cast<int>((v - first) * (b / (last - first)));
  if (k == b) k = b - 1;
  if (v < edges[static_cast<std::size_t>(k)]) --k;
  if (k != b - 1 && v >= edges[static_cast<std::size_t>(k) + 1]) ++k;
  return k;
}

// Quantile slots by sorting: zeros in slot 0; non-zero v in 1 + #{k : y_(ceil(k m / B)) < v}.
std::vector<int> quantile_oracle(const std::vector<double>& column, int bins, std::vector<double>* edges_out) {
  std::vector<double> nonzero;
  for (double v : column)
    if (v != 0.0) nonzero.push_back(v);
  std::sort(nonzero.begin(), nonzero.end());
  const auto m = static_cast<std::int64_t>(nonzero.size());
  std::vector<double> edges;
  if (m > 0)
    for (int k = 1; k < bins; ++k) edges.push_back(nonzero[static_cast<std::size_t>((k * m + bins - 1) / bins - 1)]);
  std::vector<int> slots;
  for (double v : column) {
    if (v == 0.0) {
      slots.push_back(0);
      continue;
    }
    int s = 1;
    for (double e : edges) s += e < v;
    slots.push_back(s);
  }
  if (edges_out) *edges_out = edges;
  return slots;
}

// Plug-in MI in nats by brute-force joint counting of two slot columns, as scikit-learn's
// mutual_info_score writes it: sum p_xy (log p_xy - log p_x - log p_y).
double brute_mi(const std::vector<int>& x, const std::vector<int>& y) {
  std::map<std::pair<int, int>, double> joint;
  std::map<int, double> px, py;
  for (std::size_t r = 0; r < x.size(); ++r) {
    joint[{x[r], y[r]}] += 1;
    px[x[r]] += 1;
    py[y[r]] += 1;
  }
  const double n = static_cast<double>(x.size());
  double mi = 0.0;
  for (const auto& [cell, c] : joint) mi += c / n * std::log(c * n / (px[cell.first] * py[cell.second]));
  return mi;
}

std::vector<double> column(const std::vector<double>& truth, std::int64_t rows, std::int64_t total, std::int64_t u) {
  std::vector<double> c(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) c[static_cast<std::size_t>(r)] = truth[static_cast<std::size_t>(r * total + u)];
  return c;
}

std::vector<bool> none_dead(const Moments& m) { return std::vector<bool>(static_cast<std::size_t>(m.units()), false); }

// Checks a result against brute force over every unit pair: slots, edges, MI to 1e-12 nats (the two
// sums differ in order only).
void expect_matches_brute_force(const MutualInformation& got, const std::vector<double>& truth, std::int64_t rows,
                                std::int64_t total, const std::vector<DType>& unit_dtype, const Moments& m,
                                const std::string& label) {
  std::vector<std::vector<int>> slots(static_cast<std::size_t>(total));
  for (std::int64_t u = 0; u < total; ++u) {
    const std::vector<double> c = column(truth, rows, total, u);
    if (got.binning == MiBinning::quantile) {
      std::vector<double> edges;
      slots[u] = quantile_oracle(c, got.bins, &edges);
      EXPECT_EQ(got.unit_bins[u].edges, edges) << label << ", unit " << u;
    } else {
      const std::vector<double> edges = equal_width_edges(m.min[u], m.max[u], got.bins, unit_dtype[u]);
      EXPECT_EQ(got.unit_bins[u].edges, edges) << label;
      for (double v : c) slots[u].push_back(numpy_histogram_bin(v, edges));
    }
    for (std::int64_t r = 0; r < rows; ++r)
      ASSERT_EQ(bin_slot(got.binning, got.unit_bins[u], c[r]), slots[u][r]) << label << ", unit " << u << ", row " << r;
  }
  const double to_base = got.base == MiBase::bits ? 1.0 / std::log(2.0) : 1.0;
  for (std::int64_t i = 0; i < total; ++i)
    for (std::int64_t j = 0; j < total; ++j) {
      const double expected = brute_mi(slots[i], slots[j]) * to_base;
      ASSERT_NEAR(got.mi(i, j), expected, 1e-12) << label << ", units " << i << ", " << j;
      ASSERT_EQ(got.mi(i, j), got.mi(j, i)) << label;
    }
}

// ---------------------------------------------------------------------------------------------------

// Brute-force joint counts of slot matrices (rows x units, row-major).
std::vector<std::int64_t> brute_counts(const std::vector<std::uint8_t>& rows_bins, std::int64_t ru,
                                       const std::vector<std::uint8_t>& col_bins, std::int64_t cu, std::int64_t rows,
                                       std::int64_t s) {
  std::vector<std::int64_t> c(static_cast<std::size_t>(ru * s * cu * s));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < ru; ++i)
      for (std::int64_t j = 0; j < cu; ++j)
        ++c[static_cast<std::size_t>((i * s + rows_bins[r * ru + i]) * (cu * s) + j * s + col_bins[r * cu + j])];
  return c;
}

std::vector<std::uint8_t> random_bins(std::int64_t rows, std::int64_t units, std::int64_t s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> b(static_cast<std::size_t>(rows * units));
  for (auto& x : b) x = static_cast<std::uint8_t>(rng() % static_cast<std::uint64_t>(s));
  return b;
}

TEST(JointCounts, CpuCountsEqualBruteForceSymmetricAndRectangular) {
  auto backend = make_backend(BackendChoice::cpu, {2, 0});
  for (std::int64_t s : {1, 3, 11, 256}) {
    const std::int64_t rows = 1001, ru = 5, cu = 3;
    const auto a = random_bins(rows, ru, s, 1 + s), b = random_bins(rows, cu, s, 2 + s);
    JointCountOptions options;
    options.bins = s;
    options.max_batch_rows = 97;  // does not divide 1001
    auto sym = backend->joint_counter(ru, std::nullopt, options);
    auto rect = backend->joint_counter(ru, cu, options);
    for (std::int64_t r = 0; r < rows; r += 97) {
      const std::int64_t n = std::min<std::int64_t>(97, rows - r);
      sym->add(MatrixView<const std::uint8_t>(a.data() + r * ru, n, ru));
      rect->add(MatrixView<const std::uint8_t>(a.data() + r * ru, n, ru), MatrixView<const std::uint8_t>(b.data() + r * cu, n, cu));
    }
    const JointCounts cs = sym->counts(), cr = rect->counts();
    EXPECT_EQ(cs.samples, rows);
    EXPECT_EQ(cs.values, brute_counts(a, ru, a, ru, rows, s)) << "symmetric, bins " << s;
    EXPECT_EQ(cr.values, brute_counts(a, ru, b, cu, rows, s)) << "rectangular, bins " << s;
  }
}

TEST(JointCounts, LongBatchesCrossTheKernelsRowBlocks) {
  auto backend = make_backend(BackendChoice::cpu, {2, 0});
  const std::int64_t rows = 40000, u = 4, s = 5;  // > 16384 rows: several row blocks of the CPU kernel
  const auto a = random_bins(rows, u, s, 7);
  JointCountOptions options;
  options.bins = s;
  options.max_batch_rows = rows;
  auto counter = backend->joint_counter(u, std::nullopt, options);
  counter->add(MatrixView<const std::uint8_t>(a.data(), rows, u));
  EXPECT_EQ(counter->counts().values, brute_counts(a, u, a, u, rows, s));
}

TEST(JointCounts, BadArgumentsAreRefused) {
  auto backend = make_backend(BackendChoice::cpu);
  JointCountOptions options;
  options.bins = 4;
  options.max_batch_rows = 8;
  EXPECT_THROW(backend->joint_counter(0, std::nullopt, options), Error);
  EXPECT_THROW(backend->joint_counter(2, 0, options), Error);
  JointCountOptions bad = options;
  bad.bins = 257;
  EXPECT_THROW(backend->joint_counter(2, std::nullopt, bad), Error);
  bad = options;
  bad.max_batch_rows = std::int64_t{1} << 31;
  EXPECT_THROW(backend->joint_counter(2, std::nullopt, bad), Error);
  auto sym = backend->joint_counter(2, std::nullopt, options);
  auto rect = backend->joint_counter(2, 3, options);
  std::vector<std::uint8_t> b(30, 1);
  const MatrixView<const std::uint8_t> two(b.data(), 4, 2), three(b.data(), 4, 3);
  EXPECT_THROW(sym->add(two, two), Error);  // columns given to a symmetric counter
  EXPECT_THROW(rect->add(two), Error);      // columns missing
  EXPECT_THROW(rect->add(two, MatrixView<const std::uint8_t>(b.data(), 3, 3)), Error);  // rows differ
  EXPECT_THROW(sym->add(three), Error);     // wrong unit count
  EXPECT_THROW(sym->add(MatrixView<const std::uint8_t>(b.data(), 9, 2)), Error);  // > max_batch_rows
  EXPECT_THROW(sym->add(MatrixView<const std::uint8_t>(nullptr, 2, 2)), Error);
  b[5] = 4;  // row 2, unit 1 of a 2-unit view: index == bins
  try {
    sym->add(two);
    FAIL() << "an index past the last bin was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bin index 4 at row 2, unit 1"), std::string::npos) << e.what();
  }
  EXPECT_EQ(sym->counts().samples, 0);  // refused batches add nothing
}

// ---------------------------------------------------------------------------------------------------

struct Layouts {
  DType dtype;
  Store store;
  std::int64_t h, w;
  bool big_endian;
};

TEST(MutualInformation, EveryBinningDtypeAndLayoutEqualsBruteForce) {
  auto backend = make_backend(BackendChoice::cpu, {2, 0});
  const std::vector<Layouts> cases = {
      {DType::float64, Store::c_order, 1, 1, false}, {DType::float32, Store::fortran, 1, 1, false},
      {DType::float16, Store::c_order, 1, 1, true},  {DType::float32, Store::nchw, 2, 3, false},
      {DType::float16, Store::nhwc, 3, 1, false},    {DType::float64, Store::nhwc, 2, 2, true}};
  for (const Layouts& l : cases)
    for (MiBinning binning : {MiBinning::quantile, MiBinning::equal_width}) {
      const std::int64_t images = 61, rows = images * l.h * l.w, ua = 4, ub = 3, total = ua + ub;
      std::vector<double> truth = make_truth(rows, total, 3);
      const Net a = make_net(truth, total, 0, ua, l.dtype, l.store, images, l.h, l.w, l.big_endian);
      const Net b = make_net(truth, total, ua, ub, DType::float64, Store::nhwc, images, l.h, l.w, false);
      const Moments m = moments_of_truth(truth, rows, {ua, ub});
      MiOptions options;
      options.binning = binning;
      options.bins = 5;
      options.batch_rows = 7 * l.h * l.w;  // 7 images a batch: does not divide 61
      const MutualInformation got = mutual_information(*backend, {a.block(), b.block()}, m, none_dead(m), false, options);
      std::vector<DType> dtypes(ua, l.dtype);
      dtypes.insert(dtypes.end(), ub, DType::float64);
      const std::string label = std::string(to_string(binning)) + " " + dtype_name(l.dtype) + " store " +
                                std::to_string(static_cast<int>(l.store)) + (l.big_endian ? " big-endian" : "");
      EXPECT_EQ(got.samples, rows) << label;
      EXPECT_EQ(got.slots, binning == MiBinning::quantile ? 6 : 5);
      EXPECT_EQ(got.quantile_rank_error, 0.0);
      expect_matches_brute_force(got, truth, rows, total, dtypes, m, label);
    }
}

TEST(MutualInformation, BlocksUnderAMemoryBudgetGiveTheSameBits) {
  auto backend = make_backend(BackendChoice::cpu, {2, 0});
  const std::int64_t rows = 500, total = 9;
  std::vector<double> truth = make_truth(rows, total, 5);
  const Net a = make_net(truth, total, 0, 5, DType::float32, Store::c_order, rows, 1, 1, false);
  const Net b = make_net(truth, total, 5, 4, DType::float32, Store::fortran, rows, 1, 1, false);
  const Moments m = moments_of_truth(truth, rows, {5, 4});
  MiOptions options;
  options.batch_rows = 123;
  const MutualInformation whole = mutual_information(*backend, {a.block(), b.block()}, m, none_dead(m), false, options);
  EXPECT_EQ(whole.count_blocks, 1);
  options.memory_budget_bytes = 8 * (2 * 11) * (2 * 11);  // two units per group: 5 groups, 15 blocks
  const MutualInformation blocked = mutual_information(*backend, {a.block(), b.block()}, m, none_dead(m), false, options);
  EXPECT_EQ(blocked.count_blocks, 15);
  EXPECT_LE(blocked.count_bytes, options.memory_budget_bytes);
  for (std::int64_t i = 0; i < total; ++i)
    for (std::int64_t j = 0; j < total; ++j) {
      EXPECT_EQ(blocked.mi(i, j), whole.mi(i, j));
      EXPECT_EQ(blocked.mi_miller_madow(i, j), whole.mi_miller_madow(i, j));
    }
  options.memory_budget_bytes = 8 * 11 * 11 - 1;  // not even one pair
  EXPECT_THROW(mutual_information(*backend, {a.block(), b.block()}, m, none_dead(m), false, options), Error);
}

// Two nets of 2-D float64 data from columns, for the closed-form cases.
MutualInformation mi_of_columns(const std::vector<std::vector<double>>& columns, MiBinning binning, int bins,
                                std::vector<bool> dead = {}) {
  const auto rows = static_cast<std::int64_t>(columns.front().size());
  const auto total = static_cast<std::int64_t>(columns.size());
  std::vector<double> truth(static_cast<std::size_t>(rows * total));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t u = 0; u < total; ++u) truth[r * total + u] = columns[u][r];
  const std::int64_t ua = total / 2;
  const Net a = make_net(truth, total, 0, ua, DType::float64, Store::c_order, rows, 1, 1, false);
  const Net b = make_net(truth, total, ua, total - ua, DType::float64, Store::c_order, rows, 1, 1, false);
  const Moments m = moments_of_truth(truth, rows, {ua, total - ua});
  auto backend = make_backend(BackendChoice::cpu, {2, 0});
  MiOptions options;
  options.binning = binning;
  options.bins = bins;
  if (dead.empty()) dead = none_dead(m);
  return mutual_information(*backend, {a.block(), b.block()}, m, dead, false, options);
}

TEST(MutualInformation, IndependentUnitsHaveMiNearZero) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal;
  const std::int64_t rows = 20000;
  std::vector<std::vector<double>> cols(2, std::vector<double>(rows));
  for (auto& c : cols)
    for (double& v : c) v = std::max(0.0, normal(rng));  // ReLU units, independent
  for (MiBinning binning : {MiBinning::quantile, MiBinning::equal_width}) {
    const MutualInformation got = mi_of_columns(cols, binning, 10);
    // Plug-in bias of independent units: about (cells - 1 - (bins_x - 1) - (bins_y - 1)) / (2 N ln 2) =
    // 81 / (2 20000 ln 2) = 0.003 bits for 10 x 10 occupied bins; Miller-Madow removes it to within its
    // spread (sd about sqrt(2 x 81) / (2 N ln 2) = 5e-4 bits).
    EXPECT_LT(got.mi(0, 1), 0.01) << to_string(binning);
    EXPECT_GT(got.mi(0, 1), 0.0) << to_string(binning);
    EXPECT_LT(std::abs(got.mi_miller_madow(0, 1)), 0.002) << to_string(binning);
    EXPECT_LT(got.normalized(0, 1), 0.005) << to_string(binning);
  }
}

TEST(MutualInformation, AnExactCopyAndAStrictlyIncreasingTransformGiveTheEntropy) {
  std::mt19937_64 rng(12);
  std::normal_distribution<double> normal;
  const std::int64_t rows = 3001;
  std::vector<double> relu(rows), gauss(rows);
  for (std::int64_t r = 0; r < rows; ++r) {
    gauss[r] = normal(rng);
    relu[r] = std::max(0.0, normal(rng));
  }
  std::vector<double> relu_cubed(rows), gauss_exp(rows);
  for (std::int64_t r = 0; r < rows; ++r) {
    relu_cubed[r] = relu[r] * relu[r] * relu[r] + relu[r];  // increasing and 0 at 0: zeros stay zeros
    gauss_exp[r] = std::exp(gauss[r]);
  }
  for (MiBinning binning : {MiBinning::quantile, MiBinning::equal_width}) {
    // Net A: relu, gauss; net B: copy of relu, copy of gauss.
    const MutualInformation copy = mi_of_columns({relu, gauss, relu, gauss}, binning, 10);
    for (std::int64_t u : {0, 1}) {
      // Entry by entry the joint block of a copy is the unit's diagonal block: the same sum, to the bit.
      EXPECT_EQ(copy.mi(u, u + 2), copy.entropy[u]) << to_string(binning);
      EXPECT_EQ(copy.mi(u, u), copy.entropy[u]);
      EXPECT_EQ(copy.mi_miller_madow(u, u + 2), copy.entropy_miller_madow[u]);
      EXPECT_DOUBLE_EQ(copy.normalized(u, u + 2), 1.0);
      EXPECT_GT(copy.entropy[u], 2.0);  // 10 bins: at most log2(10) = 3.32; exact zeros add their bin
    }
  }
  // Quantile bins depend on ranks alone.
  const MutualInformation transformed = mi_of_columns({relu, gauss, relu_cubed, gauss_exp}, MiBinning::quantile, 10);
  EXPECT_EQ(transformed.mi(0, 2), transformed.entropy[0]);
  EXPECT_EQ(transformed.mi(1, 3), transformed.entropy[1]);
  EXPECT_EQ(transformed.entropy[0], transformed.entropy[2]);
  // The quantile entropy of a continuous unit with m values in 10 bins of ceil(k m / 10) ranks: log2(10)
  // up to the uneven bin sizes of m = 3001.
  EXPECT_NEAR(transformed.entropy[1], std::log2(10.0), 1e-6);
}

TEST(MutualInformation, BitsAndNatsDifferByLn2) {
  std::mt19937_64 rng(13);
  std::normal_distribution<double> normal;
  std::vector<std::vector<double>> cols(4, std::vector<double>(800));
  for (std::size_t r = 0; r < 800; ++r) {
    const double z = normal(rng);
    for (auto& c : cols) c[r] = z + normal(rng);
  }
  const MutualInformation bits = mi_of_columns(cols, MiBinning::quantile, 10);
  MiOptions options;
  const auto rows = static_cast<std::int64_t>(cols[0].size());
  std::vector<double> truth(static_cast<std::size_t>(rows * 4));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t u = 0; u < 4; ++u) truth[r * 4 + u] = cols[u][r];
  const Net a = make_net(truth, 4, 0, 2, DType::float64, Store::c_order, rows, 1, 1, false);
  const Net b = make_net(truth, 4, 2, 2, DType::float64, Store::c_order, rows, 1, 1, false);
  const Moments m = moments_of_truth(truth, rows, {2, 2});
  options.base = MiBase::nats;
  auto backend = make_backend(BackendChoice::cpu);
  const MutualInformation nats = mutual_information(*backend, {a.block(), b.block()}, m, none_dead(m), false, options);
  for (std::int64_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(nats.entropy[i], bits.entropy[i] * std::log(2.0), 1e-12);
    for (std::int64_t j = 0; j < 4; ++j) EXPECT_NEAR(nats.mi(i, j), bits.mi(i, j) * std::log(2.0), 1e-12);
  }
}

TEST(MutualInformation, DeadUnitsHaveZeroMiAndNoNaN) {
  std::mt19937_64 rng(14);
  std::normal_distribution<double> normal;
  const std::int64_t rows = 400;
  std::vector<double> live(rows), constant(rows, 2.5), nearly(rows, 1.0), other(rows);
  for (std::int64_t r = 0; r < rows; ++r) live[r] = normal(rng), other[r] = live[r] + normal(rng);
  nearly[7] = 1.5;  // one sample off: dead by the threshold rule when flagged
  for (MiBinning binning : {MiBinning::quantile, MiBinning::equal_width}) {
    const MutualInformation got = mi_of_columns({live, constant, nearly, other}, binning, 10, {false, true, true, false});
    for (std::int64_t i = 0; i < 4; ++i)
      for (std::int64_t j = 0; j < 4; ++j) {
        for (const Matrix* m : {&got.mi, &got.mi_miller_madow, &got.normalized}) {
          EXPECT_FALSE(std::isnan((*m)(i, j)));
          if (i == 1 || i == 2 || j == 1 || j == 2) EXPECT_EQ((*m)(i, j), 0.0);
        }
      }
    EXPECT_EQ(got.entropy[1], 0.0);
    EXPECT_EQ(got.occupied_bins[1], 1);  // a constant unit has a single bin
    EXPECT_GT(got.mi(0, 3), 0.1);
  }
}

// Known answers printed by numpy 2.4 (np.histogram(x, bins)[1] as float.hex, and the bins it fills).
TEST(MutualInformation, EqualWidthBinsAreNumpyHistogramsKnownAnswers) {
  // np.histogram([0.1, 0.25, 0.3999999, 0.4, 0.55, 0.7], bins=4): edges np.linspace(0.1, 0.7, 5), counts
  // [1, 2, 1, 2]: 0.55 lies above the edge 0.5499999999999999, 0.7 in the closed last bin.
  const std::vector<double> e64 = equal_width_edges(0.1, 0.7, 4, DType::float64);
  EXPECT_EQ(e64, (std::vector<double>{0.1, 0.25, 0.4, 0.5499999999999999, 0.7}));
  for (auto [v, bin] : std::vector<std::pair<double, int>>{{0.1, 0}, {0.25, 1}, {0.3999999, 1}, {0.4, 2}, {0.55, 3}, {0.7, 3}}) {
    EXPECT_EQ(bin_slot(MiBinning::equal_width, UnitBins{e64, 0}, v), bin) << v;
    EXPECT_EQ(numpy_histogram_bin(v, e64), bin) << v;
  }
  // float32 data: numpy's edges are float32 linspace arithmetic (0.39999998f, not float32(0.4000000010)).
  EXPECT_EQ(equal_width_edges(double(0.1f), 1.0, 3, DType::float32),
            (std::vector<double>{double(0.1f), 0x1.999998p-2, double(0.7f), 1.0}));
  // np.histogram(np.array([-3.1234567, 7.654321], np.float32), bins=10)[1]
  EXPECT_EQ(equal_width_edges(double(-3.1234567f), double(7.654321f), 10, DType::float32),
            (std::vector<double>{-0x1.8fcd6ep+1, -0x1.05d8d0p+1, -0x1.ef90c0p-1, 0x1.c20dc0p-4, 0x1.300a1cp+0,
                                 0x1.21f9aep+1, 0x1.abee4ap+1, 0x1.1af174p+2, 0x1.5febc4p+2, 0x1.a4e614p+2,
                                 0x1.e9e066p+2}));
  // np.histogram(np.array([0.1, 31.9], np.float16), bins=7)[1]
  EXPECT_EQ(equal_width_edges(0.0999755859375, 31.90625, 7, DType::float16),
            (std::vector<double>{0.0999755859375, 4.64453125, 9.1875, 13.7265625, 18.265625, 22.8125, 27.34375, 31.90625}));
  // np.histogram(np.array([1e-3, 2 / 3]), bins=9)[1]
  EXPECT_EQ(equal_width_edges(1e-3, 2.0 / 3.0, 9, DType::float64),
            (std::vector<double>{0x1.0624dd2f1a9fcp-10, 0x1.330c5d25651c4p-4, 0x1.3100136b06e70p-3, 0x1.c879f8435b3fep-3,
                                 0x1.2ff9ee8dd7cc6p-2, 0x1.7bb6e0fa01f8dp-2, 0x1.c773d3662c254p-2, 0x1.099862e92b28dp-1,
                                 0x1.2f76dc1f403f1p-1, 0x1.5555555555555p-1}));
  EXPECT_EQ(equal_width_edges(3.0, 3.0, 10, DType::float64).size(), 2u);  // a constant unit: one bin
  EXPECT_THROW(equal_width_edges(1.0, 0.0, 3, DType::float64), Error);
}

TEST(MutualInformation, SkippedRowsAreSkippedAgainAndOthersRefused) {
  const std::int64_t rows = 300, total = 4;
  std::vector<double> truth = make_truth(rows, total, 21);
  std::vector<double> with_nan = truth;
  with_nan[17 * total + 3] = std::nan("");
  with_nan[40 * total + 0] = INFINITY;
  std::vector<double> without;  // the same rows without 17 and 40
  for (std::int64_t r = 0; r < rows; ++r)
    if (r != 17 && r != 40) without.insert(without.end(), truth.begin() + r * total, truth.begin() + (r + 1) * total);
  auto backend = make_backend(BackendChoice::cpu);
  MiOptions options;
  options.batch_rows = 64;
  const Net a = make_net(with_nan, total, 0, 2, DType::float32, Store::c_order, rows, 1, 1, false);
  const Net b = make_net(with_nan, total, 2, 2, DType::float32, Store::c_order, rows, 1, 1, false);
  const Net a2 = make_net(without, total, 0, 2, DType::float32, Store::c_order, rows - 2, 1, 1, false);
  const Net b2 = make_net(without, total, 2, 2, DType::float32, Store::c_order, rows - 2, 1, 1, false);
  const Moments m = moments_of_truth(without, rows - 2, {2, 2});
  const MutualInformation skipped = mutual_information(*backend, {a.block(), b.block()}, m, none_dead(m), true, options);
  const MutualInformation clean = mutual_information(*backend, {a2.block(), b2.block()}, m, none_dead(m), false, options);
  EXPECT_EQ(skipped.samples, rows - 2);
  for (std::int64_t i = 0; i < total; ++i)
    for (std::int64_t j = 0; j < total; ++j) EXPECT_EQ(skipped.mi(i, j), clean.mi(i, j));
  try {
    mutual_information(*backend, {a.block(), b.block()}, m, none_dead(m), false, options);
    FAIL() << "a NaN was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample row 17, unit 1"), std::string::npos) << e.what();
  }
  MiOptions bad;
  bad.bins = 1;
  EXPECT_THROW(mutual_information(*backend, {a2.block(), b2.block()}, m, none_dead(m), false, bad), Error);
  bad.bins = 256;
  EXPECT_THROW(mutual_information(*backend, {a2.block(), b2.block()}, m, none_dead(m), false, bad), Error);
}

TEST(MutualInformation, FilesOfAStudyGiveWhatTheBlocksGive) {
  testing::ScratchDir dir;
  const std::int64_t images = 50, h = 2, w = 3, rows = images * h * w, total = 5;
  std::vector<double> truth = make_truth(rows, total, 31);
  // net a: (N, C, H, W) float32; net b: 2-D float64 in Fortran order.
  const Net a = make_net(truth, total, 0, 3, DType::float32, Store::nchw, images, h, w, false);
  std::vector<float> a_values(a.bytes.size() / 4);
  std::memcpy(a_values.data(), a.bytes.data(), a.bytes.size());
  testing::write_array(dir.file("a.npy"), a_values, {images, 3, h, w});
  const Net b = make_net(truth, total, 3, 2, DType::float64, Store::fortran, rows, 1, 1, false);
  std::vector<double> b_values(b.bytes.size() / 8);
  std::memcpy(b_values.data(), b.bytes.data(), b.bytes.size());
  testing::write_array(dir.file("b.npy"), b_values, {rows, 2}, true);
  auto backend = make_backend(BackendChoice::cpu);
  StudyOptions study_options;
  study_options.batch_rows = 60;
  const Study study = run_study(*backend, {{"a", dir.file("a.npy")}, {"b", dir.file("b.npy")}}, study_options);
  MiOptions options;
  options.batch_rows = 42;
  const MutualInformation from_files = mutual_information(*backend, study, study_options, options);
  const Net b_blocks = make_net(truth, total, 3, 2, DType::float64, Store::nhwc, images, h, w, false);
  const MutualInformation from_blocks =
      mutual_information(*backend, {a.block(), b_blocks.block()}, study.moments, study.dead, false, options);
  for (std::int64_t i = 0; i < total; ++i)
    for (std::int64_t j = 0; j < total; ++j) EXPECT_EQ(from_files.mi(i, j), from_blocks.mi(i, j));
  EXPECT_GE(from_files.passes, 2);  // at least one quantile pass and the counting pass
}

TEST(MutualInformation, AlignmentByMiFindsAPlantedNonLinearPartner) {
  // B's unit j is a non-monotone function (x^2) of A's unit perm[j]: correlation sees little, MI all.
  std::mt19937_64 rng(41);
  std::normal_distribution<double> normal;
  const std::int64_t rows = 4000, units = 4;
  const std::vector<std::int64_t> perm = {2, 0, 3, 1};
  std::vector<std::vector<double>> cols(2 * units, std::vector<double>(rows));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t u = 0; u < units; ++u) {
      cols[u][r] = normal(rng);
      cols[units + perm[u]][r] = cols[u][r] * cols[u][r] + 0.05 * normal(rng);
    }
  const MutualInformation got = mi_of_columns(cols, MiBinning::quantile, 10);
  auto backend = make_backend(BackendChoice::cpu);
  PairAlignment by_corr;
  by_corr.matching.row_to_col = {0, 1, 2, 3};
  by_corr.semi_match = {0, 1, 2, 3};
  const MiPairAlignment aligned =
      align_pair_by_mi(*backend, got.mi_miller_madow.block(0, units, units, units), by_corr);
  for (std::int64_t u = 0; u < units; ++u) {
    EXPECT_EQ(aligned.alignment.matching.row_to_col[u], perm[u]);
    EXPECT_EQ(aligned.alignment.semi_match[u], perm[u]);
  }
  EXPECT_DOUBLE_EQ(aligned.same_matching_as_correlation, 0.0);  // perm has no fixed point
}

TEST(MutualInformationCli, AlignWritesMiOutputsBesideTheCorrelationOnes) {
  testing::ScratchDir dir;
  const std::int64_t rows = 400, total = 5;
  std::vector<double> truth = make_truth(rows, total, 51);
  std::vector<double> a(rows * 3), b(rows * 2);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t u = 0; u < 3; ++u) a[r * 3 + u] = truth[r * total + u];
    for (std::int64_t u = 0; u < 2; ++u) b[r * 2 + u] = truth[r * total + 3 + u];
  }
  testing::write_array(dir.file("a.npy"), a, {rows, 3});
  testing::write_array(dir.file("b.npy"), b, {rows, 2});
  const std::string nets = dir.file("a.npy") + " " + dir.file("b.npy");
  const auto r = testing::run_cli("align " + nets + " --clusters none --analyses mutual_information --mi-binning equal-width "
                                  "--mi-bins 6 --mi-base e --out " + dir.file("out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"mi_a.npy", "mi_b.npy", "mi_a_b.npy", "mi_mm_a_b.npy", "nmi_a_b.npy", "mi_mm_a.npy",
                           "mi_matching_a_b.csv", "mi_semi_a_b.csv"})
    EXPECT_TRUE(std::filesystem::exists(dir.file(std::string("out/") + name))) << name;
  const auto summary = nlohmann::json::parse(std::ifstream(dir.file("out/summary.json")));
  ASSERT_TRUE(summary.contains("mutual_information")) << summary.dump();
  EXPECT_FALSE(summary.contains("cca"));  // only mutual_information was asked for
  const auto& mi = summary["mutual_information"];
  EXPECT_EQ(mi["binning"], "equal-width");
  EXPECT_EQ(mi["bins"], 6);
  EXPECT_EQ(mi["base"], "nats");
  EXPECT_EQ(mi["pairs"][0]["matching"]["pairs"], 2);
  EXPECT_EQ(mi["nets"][1]["entropy"].size(), 2u);
  // The file holds what the library computes from the same study.
  auto backend = make_backend(BackendChoice::cpu);
  const Study study = run_study(*backend, {{"a", dir.file("a.npy")}, {"b", dir.file("b.npy")}}, {});
  MiOptions options;
  options.binning = MiBinning::equal_width;
  options.bins = 6;
  options.base = MiBase::nats;
  const MutualInformation expected = mutual_information(*backend, study, {}, options);
  MappedNpy file(dir.file("out/mi_a_b.npy"));
  ASSERT_EQ(file.header().shape, (std::vector<std::int64_t>{3, 2}));
  const auto* values = reinterpret_cast<const double*>(file.data());
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 2; ++j) EXPECT_EQ(values[i * 2 + j], expected.mi(i, 3 + j));

  const auto without = testing::run_cli("align " + nets + " --clusters none --analyses cca --out " + dir.file("no"));
  ASSERT_EQ(without.exit_code, 0) << without.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("no/mi_a_b.npy")));
  const auto bad = testing::run_cli("align " + nets + " --mi-bins 300 --out " + dir.file("bad"));
  EXPECT_NE(bad.exit_code, 0);
}

}  // namespace
}  // namespace convergent

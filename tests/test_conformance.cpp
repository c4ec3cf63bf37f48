// Conformance of every compiled backend: the CPU reference always, the CUDA backend when it is compiled.
// Each case runs the backend against the float64 oracle `moments_of` and against the CPU reference
// backend, over every dtype, the layouts a reader hands in (C order, Fortran order, padded rows, NCHW,
// NHWC), odd unit counts, batch sizes that do not divide the sample count, dead units and non-finite
// input. CUDA cases skip when no device is usable, and fail instead when CONVERGENT_REQUIRE_GPU=1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/moments.hpp"
#include "backend_test.hpp"
#include "test_util.hpp"
#include "backend/cuda_backend.hpp"

namespace convergent {


namespace {

using testing::compiled_backends;
using testing::gpu_required;

// ---------------------------------------------------------------------------------------------------
// Test data: a float64 "truth" matrix (samples x all units), rounded to what each dtype can hold, laid
// out per net in one of the layouts below.

enum class Layout { c_order, padded_rows, fortran, nchw, nhwc };

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::c_order: return "C-order";
    case Layout::padded_rows: return "padded-rows";
    case Layout::fortran: return "Fortran-order";
    case Layout::nchw: return "NCHW";
    case Layout::nhwc: return "NHWC";
  }
  return "?";
}

double representable(double v, DType dtype) {
  if (!std::isfinite(v)) return v;
  switch (dtype) {
    // Multiples of 1/64 below 32 have at most 11 significant bits: exact in float16.
    case DType::float16: return std::clamp(std::round(v * 64.0) / 64.0, 0.0, 31.984375);
    case DType::float32: return static_cast<double>(static_cast<float>(v));
    case DType::float64: return v;
  }
  return v;
}

struct Shape {
  std::int64_t images = 0;
  std::int64_t height = 1;
  std::int64_t width = 1;
  std::int64_t rows() const { return images * height * width; }
};

// ReLU-like units around an offset of 15 (mean/sd about 4, where raw-moment formulas lose digits), all
// driven by one shared latent so that units within and between nets correlate. With `dead`, unit 0 of
// every net is constant.
std::vector<double> make_truth(std::int64_t rows, std::int64_t units, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> loading(-1.0, 1.0);
  std::vector<double> a(static_cast<std::size_t>(units));
  for (auto& x : a) x = loading(rng);
  std::vector<double> truth(static_cast<std::size_t>(rows * units));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double z = normal(rng);
    for (std::int64_t u = 0; u < units; ++u) truth[r * units + u] = std::max(0.0, 15.0 + 3.0 * (a[u] * z + normal(rng)));
  }
  return truth;
}

// One net's activations of all samples, in its dtype and layout.
class NetArray {
 public:
  NetArray(DType dtype, Layout layout, Shape shape, std::int64_t units)
      : dtype_(dtype), layout_(layout), shape_(shape), units_(units) {
    bytes_.resize(static_cast<std::size_t>(extent() * dtype_size(dtype)));
  }

  // Element offset of (image, unit, y, x) in the whole array.
  std::int64_t offset(std::int64_t image, std::int64_t unit, std::int64_t y, std::int64_t x) const {
    const std::int64_t n = shape_.images, c = units_, h = shape_.height, w = shape_.width;
    switch (layout_) {
      case Layout::c_order: return image * c + unit;
      case Layout::padded_rows: return image * (c + 3) + unit;
      case Layout::fortran: return image + unit * n;
      case Layout::nchw: return ((image * c + unit) * h + y) * w + x;
      case Layout::nhwc: return ((image * h + y) * w + x) * c + unit;
    }
    return 0;
  }

  void set(std::int64_t image, std::int64_t unit, std::int64_t y, std::int64_t x, double v) {
    unsigned char* p = bytes_.data() + offset(image, unit, y, x) * dtype_size(dtype_);
    if (dtype_ == DType::float16) {
      const std::uint16_t h = testing::float16_bits(v);
      std::memcpy(p, &h, 2);
    } else if (dtype_ == DType::float32) {
      const auto f = static_cast<float>(v);
      std::memcpy(p, &f, 4);
    } else {
      std::memcpy(p, &v, 8);
    }
  }

  // Stores every element most significant byte first, as an .npy file with descr '>f2/>f4/>f8' holds it.
  void to_big_endian() {
    const int size = dtype_size(dtype_);
    for (std::size_t at = 0; at < bytes_.size(); at += static_cast<std::size_t>(size))
      std::reverse(bytes_.begin() + static_cast<std::ptrdiff_t>(at), bytes_.begin() + static_cast<std::ptrdiff_t>(at) + size);
    big_endian_ = !big_endian_;
  }

  // The block of images [first, first + count), with the whole array's strides.
  ActivationBlock block(std::int64_t first, std::int64_t count) const {
    ActivationBlock b;
    b.data = bytes_.data() + offset(first, 0, 0, 0) * dtype_size(dtype_);
    b.dtype = dtype_;
    b.big_endian = big_endian_;
    b.images = count;
    b.units = units_;
    b.height = shape_.height;
    b.width = shape_.width;
    const std::int64_t origin = offset(0, 0, 0, 0);
    b.image_stride = offset(1, 0, 0, 0) - origin;
    b.unit_stride = offset(0, 1, 0, 0) - origin;
    b.y_stride = offset(0, 0, 1, 0) - origin;
    b.x_stride = offset(0, 0, 0, 1) - origin;
    return b;
  }

 private:
  std::int64_t extent() const {
    const std::int64_t c = layout_ == Layout::padded_rows ? units_ + 3 : units_;
    return shape_.images * c * shape_.height * shape_.width;
  }
  DType dtype_;
  Layout layout_;
  Shape shape_;
  std::int64_t units_;
  std::vector<unsigned char> bytes_;
  bool big_endian_ = false;
};

struct NetSpec {
  DType dtype;
  Layout layout;
  std::int64_t units;
};

// A study: nets of one shape, their arrays, and the float64 values the oracle sees.
struct Study {
  Shape shape;
  std::vector<NetSpec> nets;
  std::vector<NetArray> arrays;
  std::vector<double> truth;  // rows x total units, rounded to each net's dtype
  std::int64_t total_units = 0;

  std::vector<std::int64_t> units() const {
    std::vector<std::int64_t> u;
    for (const auto& n : nets) u.push_back(n.units);
    return u;
  }
  std::string label() const {
    std::string text = std::to_string(shape.rows()) + " rows (" + std::to_string(shape.images) + " images of " +
                       std::to_string(shape.height) + "x" + std::to_string(shape.width) + "), nets:";
    for (const auto& n : nets)
      text += std::string(" ") + std::to_string(n.units) + "u " + dtype_name(n.dtype) + " " + layout_name(n.layout);
    return text;
  }
};

// `edit(truth)` may plant special values (NaN, constants) in the truth before it is rounded and laid out.
template <class Edit>
Study make_study(Shape shape, std::vector<NetSpec> nets, std::uint64_t seed, bool dead, Edit edit) {
  Study s;
  s.shape = shape;
  s.nets = std::move(nets);
  for (const auto& n : s.nets) s.total_units += n.units;
  const std::int64_t rows = shape.rows();
  s.truth = make_truth(rows, s.total_units, seed);
  std::int64_t col = 0;
  for (const auto& n : s.nets) {
    for (std::int64_t r = 0; r < rows; ++r) {
      if (dead) s.truth[r * s.total_units + col] = 3.0;  // exact in every dtype
      for (std::int64_t u = 0; u < n.units; ++u) {
        double& v = s.truth[r * s.total_units + col + u];
        v = representable(v, n.dtype);
      }
    }
    col += n.units;
  }
  edit(s.truth);
  col = 0;
  for (const auto& n : s.nets) {
    NetArray array(n.dtype, n.layout, shape, n.units);
    for (std::int64_t img = 0; img < shape.images; ++img)
      for (std::int64_t y = 0; y < shape.height; ++y)
        for (std::int64_t x = 0; x < shape.width; ++x) {
          const std::int64_t r = (img * shape.height + y) * shape.width + x;
          for (std::int64_t u = 0; u < n.units; ++u) array.set(img, u, y, x, s.truth[r * s.total_units + col + u]);
        }
    s.arrays.push_back(std::move(array));
    col += n.units;
  }
  return s;
}

Study make_study(Shape shape, std::vector<NetSpec> nets, std::uint64_t seed, bool dead = false) {
  return make_study(shape, std::move(nets), seed, dead, [](std::vector<double>&) {});
}

struct StreamResult {
  Moments moments;
  std::int64_t skipped = 0;
};

// Streams the study through an accumulator, `batch_images` images per add().
StreamResult stream(Backend& backend, const Study& s, std::int64_t batch_images, Precision precision = Precision::fp32,
                    bool skip_nonfinite = false) {
  AccumulateOptions options;
  options.precision = precision;
  options.max_batch_rows = batch_images * s.shape.height * s.shape.width;
  options.skip_nonfinite_rows = skip_nonfinite;
  auto acc = backend.accumulator(s.units(), options);
  for (std::int64_t first = 0; first < s.shape.images; first += batch_images) {
    const std::int64_t count = std::min(batch_images, s.shape.images - first);
    std::vector<ActivationBlock> blocks;
    for (const auto& a : s.arrays) blocks.push_back(a.block(first, count));
    acc->add(blocks);
  }
  return {acc->moments(), acc->skipped_rows()};
}

Moments oracle_of(const Study& s, const std::vector<bool>& keep_row = {}) {
  std::vector<double> rows;
  std::int64_t kept = 0;
  for (std::int64_t r = 0; r < s.shape.rows(); ++r) {
    if (!keep_row.empty() && !keep_row[r]) continue;
    rows.insert(rows.end(), s.truth.begin() + r * s.total_units, s.truth.begin() + (r + 1) * s.total_units);
    ++kept;
  }
  return moments_of(MatrixView<const double>(rows.data(), kept, s.total_units), s.units());
}

// Straight float64 Pearson correlation from Moments, dead (zero-variance) units as 0.
double oracle_corr(const Moments& m, std::int64_t i, std::int64_t j) {
  const double d = m.comoment(i, i) * m.comoment(j, j);
  if (m.comoment(i, i) == 0.0 || m.comoment(j, j) == 0.0) return 0.0;
  return i == j ? 1.0 : m.comoment(i, j) / std::sqrt(d);
}

// Tolerances for the fp32 path, with their reasons:
//  - mean: float64 sums of float32 values; float64 input is rounded to float32 on packing, moving each
//    value by at most 2^-24 |x|, so the mean moves by at most 2^-24 max|x| (1e-7 max|x| here).
//  - min/max: exact for float16/float32 input, within 2^-24 |x| for float64.
//  - comoment: one float32 product per batch of at most a few hundred rows, merged in float64: relative
//    error about sqrt(rows) 2^-24 ~ 1e-6 of sqrt(M2_ii M2_jj); 1e-5 leaves room for the product's
//    summation order.
//  - correlation: within 1e-6 of the float64 oracle (DESIGN.md, precision).
void expect_moments_near(const Moments& got, const Moments& oracle, double corr_tolerance, const std::string& label) {
  ASSERT_EQ(got.samples, oracle.samples) << label;
  ASSERT_EQ(got.net_units, oracle.net_units) << label;
  ASSERT_EQ(got.units(), oracle.units()) << label;
  ASSERT_EQ(got.comoment.rows(), oracle.units()) << label;
  const std::int64_t u = oracle.units();
  int failures = 0;
  for (std::int64_t i = 0; i < u && failures < 10; ++i) {
    const double magnitude = std::max(std::abs(oracle.min[i]), std::abs(oracle.max[i]));
    const double value_tolerance = 0x1p-24 * magnitude;
    if (std::abs(got.mean[i] - oracle.mean[i]) > 1e-7 * magnitude + 1e-12) {
      ADD_FAILURE() << label << ": mean[" << i << "] " << got.mean[i] << " vs oracle " << oracle.mean[i];
      ++failures;
    }
    if (std::abs(got.min[i] - oracle.min[i]) > value_tolerance || std::abs(got.max[i] - oracle.max[i]) > value_tolerance) {
      ADD_FAILURE() << label << ": min/max[" << i << "] " << got.min[i] << "/" << got.max[i] << " vs oracle "
                    << oracle.min[i] << "/" << oracle.max[i];
      ++failures;
    }
    if (oracle.comoment(i, i) == 0.0 && got.comoment(i, i) != 0.0) {
      // A constant unit centres to exact zeros: its variance must be exactly 0, or it would not be dead.
      ADD_FAILURE() << label << ": constant unit " << i << " has comoment " << got.comoment(i, i);
      ++failures;
    }
    for (std::int64_t j = 0; j < u && failures < 10; ++j) {
      // The comoment is kept scaled per unit (moments.hpp); covariance() undoes the scale.
      const double scale = std::sqrt(oracle.comoment(i, i) * oracle.comoment(j, j));
      const double unscaled = got.covariance(i, j) * static_cast<double>(got.samples);
      if (std::abs(unscaled - oracle.comoment(i, j)) > 1e-5 * scale + 1e-12) {
        ADD_FAILURE() << label << ": comoment(" << i << "," << j << ") " << unscaled << " vs oracle "
                      << oracle.comoment(i, j);
        ++failures;
      }
      if (got.comoment(i, j) != got.comoment(j, i)) {
        ADD_FAILURE() << label << ": comoment not symmetric at (" << i << "," << j << ")";
        ++failures;
      }
      if (std::abs(oracle_corr(got, i, j) - oracle_corr(oracle, i, j)) > corr_tolerance) {
        ADD_FAILURE() << label << ": correlation(" << i << "," << j << ") " << oracle_corr(got, i, j)
                      << " vs oracle " << oracle_corr(oracle, i, j) << " (tolerance " << corr_tolerance << ")";
        ++failures;
      }
    }
  }
  // The norm sums of the debiased CKA: float32-rounded centred values, as the comoment.
  testing::expect_norm_sums_near(got, oracle, 1e-5, label);
}

std::vector<bool> dead_of(const Moments& m) {
  std::vector<bool> dead(static_cast<std::size_t>(m.units()));
  for (std::int64_t i = 0; i < m.units(); ++i) dead[i] = m.comoment(i, i) == 0.0;
  return dead;
}

// ---------------------------------------------------------------------------------------------------

class Conformance : public testing::PerBackend {
 protected:
  void SetUp() override {
    PerBackend::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    reference_ = make_backend(BackendChoice::cpu);
  }

  // Runs the study on the backend and on the reference and checks both against the oracle and each other.
  void check_study(const Study& s, std::int64_t batch_images) {
    const std::string label = std::string(to_string(GetParam())) + ", " + s.label() + ", batches of " +
                              std::to_string(batch_images) + " images";
    const Moments oracle = oracle_of(s);
    const StreamResult got = stream(*backend_, s, batch_images);
    expect_moments_near(got.moments, oracle, 1e-6, label + " vs oracle");
    EXPECT_EQ(got.skipped, 0) << label;
    if (GetParam() != BackendKind::cpu) {
      const StreamResult ref = stream(*reference_, s, batch_images);
      expect_moments_near(got.moments, ref.moments, 1e-6, label + " vs cpu reference");
    }
  }

  std::unique_ptr<Backend> reference_;
};

TEST_P(Conformance, EveryDtypeAndTwoDimensionalLayout) {
  const Shape shape{203};
  for (DType dtype : {DType::float16, DType::float32, DType::float64})
    for (Layout layout : {Layout::c_order, Layout::fortran, Layout::padded_rows})
      check_study(make_study(shape, {{dtype, layout, 5}, {dtype, layout, 7}}, 11), 64);
}

TEST_P(Conformance, ConvolutionLayoutsNchwAndNhwc) {
  const Shape shape{13, 5, 3};  // 195 rows; batches of 4 images = 60 rows, the last one 15
  for (DType dtype : {DType::float16, DType::float32, DType::float64})
    for (Layout layout : {Layout::nchw, Layout::nhwc})
      check_study(make_study(shape, {{dtype, layout, 6}, {dtype, layout, 35}}, 12), 4);
}

TEST_P(Conformance, MixedDtypesAndLayoutsInOneStudy) {
  check_study(make_study(Shape{9, 4, 5},
                         {{DType::float16, Layout::nchw, 3}, {DType::float64, Layout::nhwc, 4},
                          {DType::float32, Layout::nchw, 33}},
                         13),
              2);
  check_study(make_study(Shape{150},
                         {{DType::float64, Layout::fortran, 2}, {DType::float16, Layout::c_order, 9},
                          {DType::float32, Layout::padded_rows, 1}},
                         14),
              41);
}

TEST_P(Conformance, OddUnitCounts) {
  const Shape shape{300};
  check_study(make_study(shape, {{DType::float32, Layout::c_order, 1}, {DType::float32, Layout::c_order, 3}}, 15), 77);
  check_study(make_study(shape, {{DType::float32, Layout::c_order, 257}}, 16), 128);
  check_study(make_study(shape, {{DType::float16, Layout::nhwc, 257}, {DType::float32, Layout::fortran, 1}}, 17), 299);
}

TEST_P(Conformance, BatchSizesThatDoNotDivideTheSamplesAndBatchSizeOne) {
  const Study s = make_study(Shape{37}, {{DType::float32, Layout::c_order, 4}, {DType::float64, Layout::c_order, 3}}, 18);
  for (std::int64_t batch : {1, 2, 5, 36, 37, 100}) check_study(s, batch);
  const Study images = make_study(Shape{7, 2, 3}, {{DType::float16, Layout::nchw, 5}}, 19);
  for (std::int64_t batch : {1, 3, 7}) check_study(images, batch);
}

// Batches longer than a backend's float32 product (2048 rows on the CPU, 4096 on CUDA) are taken in
// chunks that each merge in float64: 9000-row batches cross several chunk boundaries, which must lose
// and repeat no row. (The accuracy gain of chunking shows at 1024 units and 1e5 rows: bench_corr.)
TEST_P(Conformance, LongBatchesAreTakenInChunks) {
  const Study s = make_study(Shape{20000}, {{DType::float32, Layout::c_order, 6}, {DType::float16, Layout::c_order, 5}}, 23);
  check_study(s, 9000);
}

TEST_P(Conformance, DeadUnitsHaveZeroVarianceAndZeroCorrelations) {
  const Study s = make_study(Shape{120}, {{DType::float32, Layout::c_order, 4}, {DType::float16, Layout::nchw, 5}}, 20,
                             /*dead=*/true);
  check_study(s, 50);
  const Moments m = stream(*backend_, s, 50).moments;
  EXPECT_EQ(m.comoment(0, 0), 0.0);  // unit 0 of each net is constant
  EXPECT_EQ(m.comoment(4, 4), 0.0);
  const Matrix corr = backend_->correlation(m, dead_of(m));
  for (std::int64_t i = 0; i < m.units(); ++i)
    for (std::int64_t dead_unit : {0, 4}) {
      EXPECT_EQ(corr(dead_unit, i), 0.0);
      EXPECT_EQ(corr(i, dead_unit), 0.0);
    }
}

// A batch with three bad values: (batch row 4, net 1, unit 1), (row 4, net 0, unit 2) and (row 6, net 0,
// unit 0). The first in row-major order over the concatenated units is (row 4, net 0, unit 2).
void plant_nonfinite(std::vector<double>& truth, std::int64_t total_units, std::int64_t net1_offset,
                     std::int64_t batch_start) {
  truth[(batch_start + 4) * total_units + net1_offset + 1] = std::numeric_limits<double>::quiet_NaN();
  truth[(batch_start + 4) * total_units + 2] = std::numeric_limits<double>::infinity();
  truth[(batch_start + 6) * total_units + 0] = -std::numeric_limits<double>::infinity();
}

TEST_P(Conformance, NonFiniteValuesAreRejectedAtTheFirstPositionInRowMajorOrder) {
  for (DType dtype : {DType::float16, DType::float32, DType::float64})
    for (Layout layout : {Layout::c_order, Layout::fortran, Layout::nhwc}) {
      const std::string label = std::string(dtype_name(dtype)) + " " + layout_name(layout);
      const Study s = make_study(Shape{30}, {{dtype, layout, 3}, {dtype, layout, 4}}, 21, false,
                                 [](std::vector<double>& t) { plant_nonfinite(t, 7, 3, 10); });
      try {
        stream(*backend_, s, 10);
        ADD_FAILURE() << label << ": no NonFiniteValueError";
      } catch (const NonFiniteValueError& e) {
        EXPECT_EQ(e.net(), 0) << label;
        EXPECT_EQ(e.row(), 4) << label;  // row within the second batch
        EXPECT_EQ(e.unit(), 2) << label;
      }
    }
  // Finite float64 values beyond float32's range are valid input (tests/test_exact_inputs.cpp).
}

TEST_P(Conformance, NonFiniteRowsAreSkippedAndCounted) {
  for (DType dtype : {DType::float16, DType::float32, DType::float64}) {
    const std::string label = std::string(to_string(GetParam())) + " " + dtype_name(dtype);
    // Rows 14 and 16 are bad (planted), and rows 20..29 all bad: a whole batch of 10 is dropped.
    const Study s = make_study(Shape{45}, {{dtype, Layout::c_order, 3}, {dtype, Layout::nchw, 4}}, 23, false,
                               [](std::vector<double>& t) {
                                 plant_nonfinite(t, 7, 3, 10);
                                 for (std::int64_t r = 20; r < 30; ++r) t[r * 7 + 5] = std::nan("");
                               });
    std::vector<bool> keep(45, true);
    keep[14] = keep[16] = false;
    for (std::int64_t r = 20; r < 30; ++r) keep[r] = false;
    const StreamResult got = stream(*backend_, s, 10, Precision::fp32, /*skip_nonfinite=*/true);
    EXPECT_EQ(got.skipped, 12) << label;
    expect_moments_near(got.moments, oracle_of(s, keep), 1e-6, label + " skipping rows");
  }
}

TEST_P(Conformance, CorrelationIsSymmetricWithUnitDiagonalAndMatchesTheReference) {
  const Study s = make_study(Shape{250}, {{DType::float32, Layout::c_order, 9}, {DType::float32, Layout::nhwc, 31}}, 24,
                             /*dead=*/true);
  const Moments m = stream(*backend_, s, 100).moments;
  const std::vector<bool> dead = dead_of(m);
  const Matrix corr = backend_->correlation(m, dead);
  const Matrix ref = reference_->correlation(m, dead);
  const Moments oracle = oracle_of(s);
  const std::int64_t u = m.units();
  ASSERT_EQ(corr.rows(), u);
  ASSERT_EQ(corr.cols(), u);
  for (std::int64_t i = 0; i < u; ++i) {
    EXPECT_EQ(corr(i, i), dead[i] ? 0.0 : 1.0) << i;
    for (std::int64_t j = 0; j < u; ++j) {
      ASSERT_TRUE(std::isfinite(corr(i, j))) << i << "," << j;
      EXPECT_LE(std::abs(corr(i, j)), 1.0);
      // One triangle computed, the other its mirror: exactly symmetric.
      EXPECT_EQ(corr(i, j), corr(j, i)) << i << "," << j;
      // The same float64 operations in the same order as the reference (correctly rounded multiplication,
      // division and sqrt on both sides): the same bits.
      EXPECT_EQ(corr(i, j), ref(i, j)) << i << "," << j;
      EXPECT_NEAR(corr(i, j), oracle_corr(oracle, i, j), 1e-6) << i << "," << j;
    }
  }
  // Formed in the comoment's storage (take_correlation, what finish_study does): the same bits, the
  // comoment handed over (0 x 0), its diagonal kept, so that stddev() is unchanged.
  Moments taken = m;
  const std::vector<double> sd = m.stddev();
  const double* storage = taken.comoment.data();
  const Matrix in_place = backend_->take_correlation(taken, dead);
  EXPECT_EQ(in_place.data(), storage);  // no second U x U matrix
  EXPECT_EQ(taken.comoment.rows(), 0);
  EXPECT_EQ(taken.stddev(), sd);
  EXPECT_THROW(taken.covariance(0, 1), Error);
  EXPECT_DOUBLE_EQ(taken.covariance(0, 0), m.covariance(0, 0));
  EXPECT_THROW(backend_->take_correlation(taken, dead), Error);  // handed over already
  for (std::int64_t i = 0; i < u; ++i)
    for (std::int64_t j = 0; j < u; ++j) ASSERT_EQ(in_place(i, j), corr(i, j)) << i << "," << j;
  // Correlations beyond [-1, 1] from round-off are clamped.
  Moments tight(std::vector<std::int64_t>{2});
  tight.samples = 3;
  tight.comoment(0, 0) = 1.0;
  tight.comoment(1, 1) = 1.0;
  tight.comoment(0, 1) = tight.comoment(1, 0) = 1.0 + 1e-12;
  const Matrix clamped = backend_->correlation(tight, {false, false});
  EXPECT_EQ(clamped(0, 1), 1.0);
  EXPECT_EQ(clamped(1, 0), 1.0);
}

// (M2_ij s_i) s_j and (M2_ij s_j) s_i round differently for some pairs: a backend that computes each
// triangle on its own is not exactly symmetric. A random comoment has many such pairs.
TEST_P(Conformance, CorrelationIsExactlySymmetricWhereTheTwoProductOrdersDisagree) {
  const std::int64_t u = 64, rows = 200;
  std::mt19937_64 rng(31);
  std::normal_distribution<double> normal;
  std::vector<double> data(static_cast<std::size_t>(rows * u));
  for (double& v : data) v = normal(rng);
  const Moments m = moments_of(MatrixView<const double>(data.data(), rows, u), {u});
  const std::vector<bool> dead(static_cast<std::size_t>(u), false);
  std::int64_t disagreeing = 0;  // the test has teeth only if the two orders differ somewhere
  for (std::int64_t i = 0; i < u; ++i)
    for (std::int64_t j = i + 1; j < u; ++j) {
      const double si = 1.0 / std::sqrt(m.comoment(i, i)), sj = 1.0 / std::sqrt(m.comoment(j, j));
      disagreeing += m.comoment(i, j) * si * sj != m.comoment(j, i) * sj * si;
    }
  ASSERT_GT(disagreeing, 0);
  const Matrix corr = backend_->correlation(m, dead);
  const Matrix ref = reference_->correlation(m, dead);
  for (std::int64_t i = 0; i < u; ++i)
    for (std::int64_t j = 0; j < u; ++j) {
      ASSERT_EQ(corr(i, j), corr(j, i)) << i << "," << j;
      ASSERT_EQ(corr(i, j), ref(i, j)) << i << "," << j;
    }
}

TEST_P(Conformance, RowArgmaxTakesTheFirstMaximum) {
  // 100 columns: ties at 40 and 70 sit in different warp lanes on the GPU, 5 and 37 in the same lane.
  const std::int64_t cols = 100;
  Matrix m(6, cols, 0.0);
  m(0, 40) = m(0, 70) = 2.0;
  m(1, 5) = m(1, 37) = 1.5;
  m(2, 99) = 3.0;                                          // the last column
  for (std::int64_t c = 0; c < cols; ++c) m(3, c) = -1.0;  // all equal: column 0
  for (std::int64_t c = 0; c < cols; ++c) m(4, c) = -double(c);
  m(5, 64) = m(5, 0) = 7.0;
  const std::vector<std::int64_t> expected{40, 5, 99, 0, 0, 0};
  EXPECT_EQ(backend_->row_argmax(m.view()), expected);
  EXPECT_EQ(backend_->row_argmax(m.view()), reference_->row_argmax(m.view()));

  // A strided view: columns [10, 60) of every other row.
  const MatrixView<const double> strided(m.data() + 10, 3, 50, 2 * cols);
  const std::vector<std::int64_t> expected_strided{30, 0, 0};  // rows 0, 2, 4; row 2 is all 0 within the view
  EXPECT_EQ(backend_->row_argmax(strided), expected_strided);

  // Random rows with many ties.
  std::mt19937_64 rng(25);
  std::uniform_int_distribution<int> value(0, 3);
  Matrix r(57, 45);
  for (std::int64_t i = 0; i < r.rows(); ++i)
    for (std::int64_t j = 0; j < r.cols(); ++j) r(i, j) = value(rng);
  EXPECT_EQ(backend_->row_argmax(r.view()), reference_->row_argmax(r.view()));
}

// Calls f and returns the text of the Error it throws ("" and a failure when it throws none).
template <class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no Error thrown";
  return "";
}

// The NaN rule (backend.hpp): a NaN anywhere is an Error naming the first one in row-major order. Rows of
// 100 columns are longer than a warp, so on the GPU the NaN sits in different lanes and passes; before
// the rule a NaN in a lane's first column hid every later value of that lane.
TEST_P(Conformance, RowArgmaxRejectsNaNWhereverItIs) {
  const std::int64_t cols = 100;
  for (std::int64_t nan_col : {std::int64_t{0}, std::int64_t{33}, std::int64_t{57}, cols - 1}) {
    Matrix m(5, cols);
    for (std::int64_t r = 0; r < m.rows(); ++r)
      for (std::int64_t c = 0; c < cols; ++c) m(r, c) = std::sin(double(r * cols + c));
    m(2, nan_col) = std::numeric_limits<double>::quiet_NaN();
    m(4, 0) = std::numeric_limits<double>::quiet_NaN();  // a later NaN: not the one named
    m(3, 60) = std::nan("");                               // nor this one, later in row-major order
    const std::string expected =
        "row_argmax: NaN at row 2, column " + std::to_string(nan_col) + "; the matrix must hold no NaN";
    EXPECT_EQ(error_text([&] { backend_->row_argmax(m.view()); }), expected);
  }
  // A strided view sees only its own columns: the NaN outside it does not count.
  Matrix m(3, 80, 1.0);
  m(1, 0) = std::nan("");
  m(1, 50) = 5.0;
  const MatrixView<const double> inner(m.data() + 10, 3, 60, 80);
  EXPECT_EQ(backend_->row_argmax(inner), (std::vector<std::int64_t>{0, 40, 0}));
  m(2, 69) = std::nan("");  // column 59 of the view, its last
  EXPECT_EQ(error_text([&] { backend_->row_argmax(inner); }),
            "row_argmax: NaN at row 2, column 59; the matrix must hold no NaN");
}

TEST_P(Conformance, RowArgmaxTakesInfinitiesAsValues) {
  const double inf = std::numeric_limits<double>::infinity();
  Matrix m(3, 70, 0.0);
  m(0, 0) = -inf;            // the row's maximum is 0 at column 1
  m(1, 45) = inf;
  m(1, 66) = inf;            // a tie of infinities: the lower column
  for (std::int64_t c = 0; c < 70; ++c) m(2, c) = -inf;
  const std::vector<std::int64_t> expected{1, 45, 0};
  EXPECT_EQ(backend_->row_argmax(m.view()), expected);
}

// Every invalid argument of every public operation: the same words on every backend (backend.hpp checks
// them once, before a backend sees them).
TEST_P(Conformance, InvalidArgumentsAreRefusedWithTheSameWords) {
  AccumulateOptions options;
  EXPECT_EQ(error_text([&] { backend_->accumulator({}, options); }),
            "accumulator: no nets; give the unit count of at least one");
  EXPECT_EQ(error_text([&] { backend_->accumulator({3, 0}, options); }),
            "accumulator: net 1 has 0 units; every net needs at least one");
  EXPECT_EQ(error_text([&] { backend_->accumulator({-2}, options); }),
            "accumulator: net 0 has -2 units; every net needs at least one");
  options.max_batch_rows = 0;
  EXPECT_EQ(error_text([&] { backend_->accumulator({3}, options); }),
            "accumulator: max_batch_rows must be at least 1, not 0");
  // add() checks its batch at the interface too.
  options.max_batch_rows = 4;
  auto acc = backend_->accumulator({2, 1}, options);
  const std::vector<float> values(12, 1.0f);
  const ActivationBlock two = row_major_block(values.data(), DType::float32, 4, 2);
  const ActivationBlock one = row_major_block(values.data(), DType::float32, 4, 1);
  EXPECT_EQ(error_text([&] { acc->add({two}); }), "add: 1 blocks for 2 nets; expected one block per net");
  EXPECT_EQ(error_text([&] { acc->add({two, row_major_block(values.data(), DType::float32, 3, 1)}); }),
            "add: blocks of one batch must have the same rows and the declared unit counts (net 1: 3 rows x 1 "
            "units, expected 4 x 1)");
  EXPECT_EQ(error_text([&] { acc->add({one, one}); }),
            "add: blocks of one batch must have the same rows and the declared unit counts (net 0: 4 rows x 1 "
            "units, expected 4 x 2)");
  EXPECT_EQ(error_text([&] {
              acc->add({row_major_block(values.data(), DType::float32, 5, 2),
                        row_major_block(values.data(), DType::float32, 5, 1)});
            }),
            "add: batch of 5 rows is larger than max_batch_rows (4)");
  EXPECT_EQ(error_text([&] { acc->add({two, row_major_block(nullptr, DType::float32, 4, 1)}); }),
            "add: net 1 has no data");
  acc->add({row_major_block(nullptr, DType::float32, 0, 2), row_major_block(nullptr, DType::float32, 0, 1)});
  EXPECT_EQ(acc->moments().samples, 0);  // an empty batch adds nothing

  Moments m(std::vector<std::int64_t>{2, 1});
  m.samples = 4;
  m.comoment(0, 0) = m.comoment(1, 1) = m.comoment(2, 2) = 2.0;
  m.comoment(0, 1) = m.comoment(1, 0) = 0.5;
  EXPECT_EQ(error_text([&] { backend_->correlation(m, {false, false}); }),
            "correlation: `dead` has 2 entries for 3 units");
  Moments wrong = m;
  wrong.comoment = Matrix(3, 2);
  EXPECT_EQ(error_text([&] { backend_->correlation(wrong, {false, false, false}); }),
            "correlation: the comoment is 3 x 2, but the moments have 3 units");
  Moments nan = m;
  nan.comoment(2, 1) = std::nan("");
  EXPECT_EQ(error_text([&] { backend_->correlation(nan, {false, false, false}); }),
            "correlation: the comoment holds NaN at (2, 1)");
  nan.comoment(2, 1) = -std::numeric_limits<double>::infinity();
  EXPECT_EQ(error_text([&] { backend_->correlation(nan, {false, false, false}); }),
            "correlation: the comoment holds an infinity at (2, 1)");
  Moments flat = m;
  flat.comoment(1, 1) = 0.0;
  EXPECT_EQ(error_text([&] { backend_->correlation(flat, {false, false, false}); }),
            "correlation: unit 1 has variance 0 but is not flagged dead; flag it (dead_units) or its "
            "correlations would be NaN");
  EXPECT_EQ(backend_->correlation(flat, {false, true, false})(1, 1), 0.0);  // flagged: fine

  Matrix a(4, 4, 0.0);
  for (int i = 0; i < 4; ++i) a(i, i) = double(i);
  EXPECT_EQ(error_text([&] { backend_->row_argmax(MatrixView<const double>(a.data(), 3, 0, 4)); }),
            "row_argmax: a 3 x 0 matrix has no column to pick in its rows");
  EXPECT_EQ(error_text([&] { backend_->row_argmax(MatrixView<const double>(a.data(), 3, 4, 2)); }),
            "row_argmax: row stride 2 is below the column count 4");
  EXPECT_EQ(error_text([&] { backend_->row_argmax(MatrixView<const double>(nullptr, 3, 4, 4)); }),
            "row_argmax: the matrix has no data");
  EXPECT_EQ(backend_->row_argmax(MatrixView<const double>(nullptr, 0, 4, 4)), std::vector<std::int64_t>{});

  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(a.block(0, 0, 3, 4), 1, {}); }),
            "smallest_eigenpairs: the matrix is 3 x 4, not square");
  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(a.view(), 0, {}); }),
            "smallest_eigenpairs: k = 0 outside [1, 4]");
  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(a.view(), 5, {}); }),
            "smallest_eigenpairs: k = 5 outside [1, 4]");
  const std::pair<double, const char*> residuals[] = {{0.0, "0"}, {-1e-3, "-0.001"}, {std::nan(""), "nan"}};
  for (const auto& [residual, text] : residuals) {
    EigenOptions bad;
    bad.relative_residual = residual;
    EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(a.view(), 2, bad); }),
              std::string("smallest_eigenpairs: the residual tolerance must be positive, not ") + text);
  }
  Matrix holed = a;
  holed(1, 3) = std::nan("");
  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(holed.view(), 2, {}); }),
            "smallest_eigenpairs: the matrix holds NaN at (1, 3)");
  holed(1, 3) = 0.0;
  holed(3, 0) = std::numeric_limits<double>::infinity();
  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(holed.view(), 2, {}); }),
            "smallest_eigenpairs: the matrix holds an infinity at (3, 0)");

  std::vector<float> a32(16, 0.0f);
  const MatrixView<const float> view32(a32.data(), 4, 4);
  EigenOptions loose;
  loose.relative_residual = 1e-5;
  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(view32, 0, loose); }),
            "smallest_eigenpairs: k = 0 outside [1, 4]");
  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(MatrixView<const float>(a32.data(), 4, 3), 1, loose); }),
            "smallest_eigenpairs: the matrix is 4 x 3, not square");
  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(view32, 2, {}); }),
            "smallest_eigenpairs: a float32 matrix supports residuals of 1e-5 and looser, not 1e-09");
  a32[6] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(error_text([&] { backend_->smallest_eigenpairs(view32, 2, loose); }),
            "smallest_eigenpairs: the matrix holds NaN at (1, 2)");
}

// A = Q diag(lambda) Q^T with a random orthogonal Q (Gram-Schmidt of a seeded Gaussian matrix).
Matrix orthogonal(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Matrix q(n, n);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) q(i, j) = normal(rng);
  for (std::int64_t j = 0; j < n; ++j) {  // columns
    for (int pass = 0; pass < 2; ++pass)
      for (std::int64_t p = 0; p < j; ++p) {
        double dot = 0.0;
        for (std::int64_t i = 0; i < n; ++i) dot += q(i, j) * q(i, p);
        for (std::int64_t i = 0; i < n; ++i) q(i, j) -= dot * q(i, p);
      }
    double norm = 0.0;
    for (std::int64_t i = 0; i < n; ++i) norm += q(i, j) * q(i, j);
    norm = std::sqrt(norm);
    for (std::int64_t i = 0; i < n; ++i) q(i, j) /= norm;
  }
  return q;
}

TEST_P(Conformance, SmallestEigenpairsOfAKnownSpectrum) {
  const std::int64_t n = 40;
  const Matrix q = orthogonal(n, 26);
  std::vector<double> lambda(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) lambda[i] = -3.0 + 0.25 * double(i);  // distinct, spaced 0.25
  std::shuffle(lambda.begin(), lambda.end(), std::mt19937_64(27));  // columns of Q in no particular order
  Matrix a(n, n);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double v = 0.0;
      for (std::int64_t p = 0; p < n; ++p) v += q(i, p) * lambda[p] * q(j, p);
      a(i, j) = v;
    }
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < i; ++j) a(i, j) = a(j, i);  // exactly symmetric

  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](auto x, auto y) { return lambda[x] < lambda[y]; });
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{5}, n}) {
    const Eigenpairs e = backend_->smallest_eigenpairs(a.view(), k, {});
    ASSERT_EQ(static_cast<std::int64_t>(e.values.size()), k);
    ASSERT_EQ(e.vectors.rows(), n);
    ASSERT_EQ(e.vectors.cols(), k);
    for (std::int64_t j = 0; j < k; ++j) {
      // Backward-stable solvers: eigenvalues within a few ulps of ||A|| = 6.75 (1e-12 leaves margin).
      EXPECT_NEAR(e.values[j], lambda[order[j]], 1e-12) << "k " << k << " value " << j;
      // Vectors up to sign: the gap is 0.25, so the angle error is ~ eps ||A|| / gap ~ 1e-14.
      double dot = 0.0, norm = 0.0;
      for (std::int64_t i = 0; i < n; ++i) {
        dot += e.vectors(i, j) * q(i, order[j]);
        norm += e.vectors(i, j) * e.vectors(i, j);
      }
      EXPECT_NEAR(std::abs(dot), 1.0, 1e-10) << "k " << k << " vector " << j;
      EXPECT_NEAR(norm, 1.0, 1e-10) << "k " << k << " vector " << j;
    }
  }
  EXPECT_THROW(backend_->smallest_eigenpairs(a.view(), 0, {}), Error);
  EXPECT_THROW(backend_->smallest_eigenpairs(a.view(), n + 1, {}), Error);
  EXPECT_THROW(backend_->smallest_eigenpairs(a.block(0, 0, 3, 4), 1, {}), Error);

  // The float32 overload, at the loose tolerance it supports (and only there).
  std::vector<float> a32(static_cast<std::size_t>(n * n));
  std::copy(a.data(), a.data() + n * n, a32.begin());
  const MatrixView<const float> view32(a32.data(), n, n);
  EigenOptions loose;
  loose.relative_residual = 1e-5;
  const Eigenpairs e32 = backend_->smallest_eigenpairs(view32, 5, loose);
  ASSERT_EQ(e32.values.size(), 5u);
  for (std::int64_t j = 0; j < 5; ++j) {
    // Rounding A to float32 perturbs it by ~6e-8 ||A|| per entry; Weyl bounds the eigenvalue shift by
    // ||E||_2 <= n * 6e-8 * 6.75 ~ 2e-5.
    EXPECT_NEAR(e32.values[j], lambda[order[j]], 2e-5) << "float32 value " << j;
    double dot = 0.0;
    for (std::int64_t i = 0; i < n; ++i) dot += e32.vectors(i, j) * q(i, order[j]);
    // Angle ~ ||E|| / gap = 2e-5 / 0.25 = 8e-5 at most, so |dot| = cos(angle) is within 4e-9 of 1.
    EXPECT_NEAR(std::abs(dot), 1.0, 1e-6) << "float32 vector " << j;
  }
  EXPECT_THROW(backend_->smallest_eigenpairs(view32, 5, {}), Error);
}

TEST_P(Conformance, BadBatchesAreRefused) {
  const Study s = make_study(Shape{20}, {{DType::float32, Layout::c_order, 3}, {DType::float32, Layout::c_order, 2}}, 28);
  AccumulateOptions options;
  options.max_batch_rows = 10;
  auto acc = backend_->accumulator(s.units(), options);
  EXPECT_THROW(acc->add({s.arrays[0].block(0, 5)}), Error);                              // one block for two nets
  EXPECT_THROW(acc->add({s.arrays[0].block(0, 5), s.arrays[1].block(0, 4)}), Error);     // rows differ
  EXPECT_THROW(acc->add({s.arrays[0].block(0, 11), s.arrays[1].block(0, 11)}), Error);   // above max_batch_rows
  EXPECT_THROW(acc->add({s.arrays[1].block(0, 5), s.arrays[0].block(0, 5)}), Error);     // unit counts swapped
  acc->add({s.arrays[0].block(0, 10), s.arrays[1].block(0, 10)});  // still usable after refusals
  EXPECT_EQ(acc->moments().samples, 10);
  const Moments empty = backend_->accumulator(s.units(), options)->moments();
  EXPECT_EQ(empty.samples, 0);
  EXPECT_EQ(empty.min[0], std::numeric_limits<double>::infinity());
}

// Batches of several MiB are staged in pieces (2 MiB on the CUDA backend) spread over threads, each
// copied to the device as soon as it is filled: dense blocks split at byte offsets, host-packed ones
// (Fortran order) at rows. 6000 rows also cross the fp32 product's 4096-row chunks.
TEST_P(Conformance, BatchesOfSeveralMebibytesAreStagedInPieces) {
  const Study s = make_study(Shape{6000}, {{DType::float32, Layout::c_order, 101}, {DType::float32, Layout::fortran, 90},
                                          {DType::float64, Layout::padded_rows, 3}},
                             32);
  check_study(s, 6000);
}

// Big-endian blocks (issue 9, part 3): the reader hands them over unswapped, and each backend swaps the
// bytes as it reads them; on the CUDA backend dense blocks (C order, NCHW, NHWC) are swapped on the
// device, gathered ones (Fortran order, padded rows) keep their byte order through the host gather. A
// NaN or infinity stays one after the swap: the first is named as on little-endian input.
TEST_P(Conformance, BigEndianBlocksInEveryDtypeAndLayout) {
  auto big_endian = [](Study s, std::vector<bool> which) {
    for (std::size_t net = 0; net < s.arrays.size(); ++net)
      if (which[net]) s.arrays[net].to_big_endian();
    return s;
  };
  for (DType dtype : {DType::float16, DType::float32, DType::float64}) {
    for (Layout layout : {Layout::c_order, Layout::fortran, Layout::padded_rows})
      check_study(big_endian(make_study(Shape{203}, {{dtype, layout, 5}, {dtype, layout, 7}}, 41), {true, true}), 64);
    for (Layout layout : {Layout::nchw, Layout::nhwc})
      check_study(big_endian(make_study(Shape{13, 5, 3}, {{dtype, layout, 6}, {dtype, layout, 35}}, 42), {true, true}),
                  4);
    // One net of each byte order in one batch.
    check_study(big_endian(make_study(Shape{150}, {{dtype, Layout::c_order, 4}, {dtype, Layout::fortran, 3}}, 43),
                           {false, true}),
                41);
    const std::string label = std::string(to_string(GetParam())) + " big-endian " + dtype_name(dtype);
    const Study bad = big_endian(make_study(Shape{30}, {{dtype, Layout::c_order, 3}, {dtype, Layout::fortran, 4}}, 44,
                                            false, [](std::vector<double>& t) { plant_nonfinite(t, 7, 3, 10); }),
                                 {true, true});
    try {
      stream(*backend_, bad, 10);
      ADD_FAILURE() << label << ": no NonFiniteValueError";
    } catch (const NonFiniteValueError& e) {
      EXPECT_EQ(e.net(), 0) << label;
      EXPECT_EQ(e.row(), 4) << label;
      EXPECT_EQ(e.unit(), 2) << label;
    }
  }
}

// Finite float64 input far beyond float32's range, and a large offset (issue 9, parts 1-2): a unit near
// 1e300 and one at 1e12 + O(10), beside ordinary units, in several batches, both byte orders and a
// dense and a gathered layout. moments_of squares the values, so it cannot be the oracle of the 1e300
// unit directly: that unit is 2^993 times an ordinary one (exact), and its statistics divided by 2^993
// (exact too: the mean, the range, and the comoment's exponent) are checked against the ordinary unit's
// oracle. The 1e12 unit is checked as it is: the oracle's float64 deviations keep its spread's digits,
// which float32 rounding of the value (steps of 65536 at 1e12) would have lost entirely.
TEST_P(Conformance, Float64UnitsNear1e300AndAtAnOffsetOf1e12) {
  constexpr int huge_exponent = 993;  // 2^993 ~ 1.0e299; the unit's values reach about 3e300
  constexpr std::int64_t huge_unit = 1, offset_unit = 2;
  for (bool big : {false, true})
    for (Layout layout : {Layout::c_order, Layout::fortran, Layout::nchw}) {
      const Shape shape = layout == Layout::nchw ? Shape{40, 2, 3} : Shape{240};
      const Layout other = layout == Layout::nchw ? Layout::nhwc : Layout::c_order;  // an ordinary second net
      Study s = make_study(shape, {{DType::float64, layout, 4}, {DType::float32, other, 3}}, 45, false,
                           [&](std::vector<double>& t) {
                             for (std::size_t r = 0; r < t.size(); r += 7) {
                               t[r + huge_unit] = std::ldexp(t[r + huge_unit], huge_exponent);
                               t[r + offset_unit] += 1e12;
                             }
                           });
      if (big) s.arrays[0].to_big_endian();
      const std::string label = std::string(to_string(GetParam())) + (big ? " big-endian " : " ") +
                                layout_name(layout) + " float64 at 1e300 and 1e12";
      // The oracle's study: the huge unit divided back down.
      std::vector<double> down = s.truth;
      for (std::size_t r = 0; r < down.size(); r += 7) down[r + huge_unit] = std::ldexp(down[r + huge_unit], -huge_exponent);
      const Moments oracle = moments_of(MatrixView<const double>(down.data(), shape.rows(), 7), s.units());
      auto scaled_down = [&](Moments m) {
        m.mean[huge_unit] = std::ldexp(m.mean[huge_unit], -huge_exponent);
        m.min[huge_unit] = std::ldexp(m.min[huge_unit], -huge_exponent);
        m.max[huge_unit] = std::ldexp(m.max[huge_unit], -huge_exponent);
        m.exponent[huge_unit] += huge_exponent;  // covariance() divides by 2^(exponent_i + exponent_j)
        return m;
      };
      const std::int64_t batch_images = shape.images / 3 + 1;  // three batches, the last one shorter
      const Moments got = stream(*backend_, s, batch_images).moments;
      for (std::int64_t i = 0; i < got.units(); ++i) {
        ASSERT_TRUE(std::isfinite(got.mean[i]) && std::isfinite(got.stddev()[i])) << label << ": unit " << i;
        for (std::int64_t j = 0; j < got.units(); ++j) ASSERT_TRUE(std::isfinite(got.comoment(i, j))) << label;
      }
      EXPECT_GT(got.mean[huge_unit], 1e300) << label;
      // The norm sums of the debiased CKA are unscaled (moments.hpp): those that involve the net of the
      // huge unit overflow and read +inf; the other net's own sum stays exact. The rest of the check takes
      // the oracle's in place of the overflowed ones, which scaled_down cannot bring back.
      Moments checked = scaled_down(got);
      for (std::int64_t k = 0; k < 2; ++k)  // the huge unit's own sums are linear in it
        checked.unit_sqnorm_comoment(huge_unit, k) = std::ldexp(checked.unit_sqnorm_comoment(huge_unit, k), -huge_exponent);
      EXPECT_EQ(checked.sqnorm_comoment(0, 0), std::numeric_limits<double>::infinity()) << label;
      EXPECT_EQ(checked.sqnorm_comoment(0, 1), std::numeric_limits<double>::infinity()) << label;
      for (Matrix* sums : {&checked.sqnorm_comoment, &checked.unit_sqnorm_comoment})
        for (std::int64_t i = 0; i < sums->rows() * sums->cols(); ++i)
          if (std::isinf(sums->data()[i]))
            sums->data()[i] = (sums == &checked.sqnorm_comoment ? oracle.sqnorm_comoment : oracle.unit_sqnorm_comoment).data()[i];
      expect_moments_near(checked, oracle, 1e-6, label + " vs oracle");
      if (GetParam() != BackendKind::cpu)
        expect_moments_near(scaled_down(got), scaled_down(stream(*reference_, s, batch_images).moments), 1e-6,
                            label + " vs cpu reference");
    }
}

// Sets the allocation-failure hook for one scope and turns it off again, whatever happens.
struct InjectedAllocationFailure {
  explicit InjectedAllocationFailure(int successes) { detail::fail_cuda_allocation_after(successes); }
  ~InjectedAllocationFailure() { detail::fail_cuda_allocation_after(-1); }
};

// float64 input needs twice the staging planned for float32: the first such batch in each slot grows the
// slot's buffers. An out-of-memory failure there (of the device buffer, or of the pinned one after the
// device one succeeded) must leave the old buffers in place: the accumulator then takes batches that fit
// them, and grows when memory is back, with every row counted once.
TEST_P(Conformance, StagingGrowthSurvivesAnAllocationFailure) {
  if (GetParam() != BackendKind::cuda) GTEST_SKIP() << "staging buffers are the CUDA backend's";
  const Study s = make_study(Shape{170}, {{DType::float64, Layout::c_order, 7}, {DType::float32, Layout::c_order, 2}}, 33);
  for (int successes : {0, 1}) {
    AccumulateOptions options;
    options.max_batch_rows = 50;
    auto acc = backend_->accumulator(s.units(), options);
    auto batch = [&](std::int64_t first, std::int64_t count) {
      std::vector<ActivationBlock> blocks;
      for (const auto& a : s.arrays) blocks.push_back(a.block(first, count));
      acc->add(blocks);
    };
    {
      const InjectedAllocationFailure failure(successes);
      const std::string text = error_text([&] { batch(0, 50); });
      EXPECT_NE(text.find("out of memory"), std::string::npos) << text;
    }
    batch(0, 20);    // fits the planned buffers of slot 0 (20 x 7 doubles + 20 x 2 floats)
    batch(20, 20);   // slot 1
    batch(40, 50);   // slot 0 grows now
    batch(90, 50);   // slot 1 grows
    batch(140, 30);  // slot 0, grown
    expect_moments_near(acc->moments(), oracle_of(s), 1e-6,
                        "after a failed growth (" + std::to_string(successes) + " allocations succeeded)");
  }
  // A failure while the accumulator itself is built leaves nothing behind (RAII) and the backend usable.
  {
    const InjectedAllocationFailure failure(3);
    AccumulateOptions options;
    options.max_batch_rows = 50;
    EXPECT_NE(error_text([&] { backend_->accumulator(s.units(), options); }).find("out of memory"), std::string::npos);
  }
  check_study(s, 50);
}

// CUDA tensors handed over through DLPack (the Python package): blocks in the accumulator's device memory
// are read in place with their own strides, beside host blocks of the same batch, and give the same
// moments bit for bit as the same blocks in host memory (the device kernels decode the same bytes either
// way). An accumulator on the host, or on another device, refuses them.
TEST_P(Conformance, DeviceResidentBlocksAreReadInPlace) {
  const Study s = make_study(Shape{40, 3, 2},
                             {{DType::float32, Layout::nchw, 5}, {DType::float16, Layout::nhwc, 3},
                              {DType::float64, Layout::nchw, 4}},
                             61);
  AccumulateOptions options;
  options.max_batch_rows = 7 * 6;
  auto acc = backend_->accumulator(s.units(), options);
  std::vector<ActivationBlock> batch;
  for (const auto& a : s.arrays) batch.push_back(a.block(0, 7));
  batch[1].device = 3;
  EXPECT_EQ(error_text([&] { acc->add(batch); }),
            std::string("add: net 1's block is in the memory of CUDA device 3, but this accumulator computes on ") +
                (GetParam() == BackendKind::cpu ? "the host" : "CUDA device 0") +
                "; hand over host memory, or use the CUDA backend on that device");
  if (GetParam() != BackendKind::cuda) return;

  // Every array copied whole to the device; nets 0 and 2 are read from there, net 1 from the host.
  std::vector<std::shared_ptr<void>> copies;
  for (std::size_t net = 0; net < s.arrays.size(); ++net) {
    const ActivationBlock whole = s.arrays[net].block(0, s.shape.images);
    copies.push_back(detail::cuda_device_copy(whole.data, static_cast<std::size_t>(whole.rows() * whole.units *
                                                                                    dtype_size(whole.dtype)),
                                              0));
  }
  for (std::int64_t first = 0; first < s.shape.images; first += 7) {
    const std::int64_t count = std::min<std::int64_t>(7, s.shape.images - first);
    batch.clear();
    for (std::size_t net = 0; net < s.arrays.size(); ++net) {
      ActivationBlock b = s.arrays[net].block(first, count);
      if (net != 1) {
        const auto* host_origin = static_cast<const char*>(s.arrays[net].block(0, 1).data);
        b.data = static_cast<const char*>(copies[net].get()) + (static_cast<const char*>(b.data) - host_origin);
        b.device = 0;
      }
      batch.push_back(b);
    }
    acc->add(batch);
  }
  const Moments device = acc->moments();
  const Moments host = stream(*backend_, s, 7).moments;
  ASSERT_EQ(device.samples, host.samples);
  EXPECT_EQ(device.mean, host.mean);
  EXPECT_EQ(device.min, host.min);
  EXPECT_EQ(device.max, host.max);
  for (std::int64_t i = 0; i < host.units(); ++i)
    for (std::int64_t j = 0; j < host.units(); ++j) ASSERT_EQ(device.comoment(i, j), host.comoment(i, j)) << i << ", " << j;
  expect_moments_near(device, oracle_of(s), 1e-6, s.label());
}

// A multi-GPU host keeps the device its caller chose: creating and using the backend on another device
// gives the caller's current device back after every call, and after destruction.
TEST_P(Conformance, TheCallersCurrentDeviceIsRestored) {
  if (GetParam() != BackendKind::cuda) GTEST_SKIP() << "devices are the CUDA backend's";
  if (detail::cuda_device_count() < 2)
    GTEST_SKIP() << "needs two CUDA devices (" << detail::cuda_device_count() << " present); a device run on a "
                 << "single-GPU host cannot confirm this";
  const Study s = make_study(Shape{64}, {{DType::float32, Layout::c_order, 5}}, 34);
  detail::set_cuda_current_device(1);
  {
    auto backend = make_backend(BackendChoice::cuda, {0, 0});
    EXPECT_EQ(detail::cuda_current_device(), 1) << "after creating the backend";
    const Moments m = stream(*backend, s, 16).moments;
    EXPECT_EQ(detail::cuda_current_device(), 1) << "after streaming";
    const Matrix corr = backend->correlation(m, dead_of(m));
    backend->row_argmax(corr.view());
    backend->smallest_eigenpairs(corr.view(), 2, {});
    EXPECT_EQ(detail::cuda_current_device(), 1) << "after the other operations";
    AccumulateOptions options;
    options.max_batch_rows = 8;
    auto acc = backend->accumulator(s.units(), options);
    detail::set_cuda_current_device(1);
    acc.reset();
    EXPECT_EQ(detail::cuda_current_device(), 1) << "after destroying an accumulator";
  }
  EXPECT_EQ(detail::cuda_current_device(), 1) << "after destroying the backend";
  detail::set_cuda_current_device(0);
}

// Tensor-core precisions exist on the CUDA backend only; they are checked against the float64 oracle
// with tolerances from their mantissas: TF32 keeps 10 bits (unit round-off 2^-11 ~ 4.9e-4), BF16 keeps
// 7 (2^-8 ~ 3.9e-3); errors of the products of centred values average over the rows, so correlations
// stay within about one unit round-off: 2e-3 and 2e-2.
TEST_P(Conformance, TensorCorePrecisionsStayWithinTheirStatedError) {
  const Study s = make_study(Shape{400}, {{DType::float32, Layout::c_order, 20}, {DType::float16, Layout::nchw, 24}}, 29);
  if (GetParam() == BackendKind::cpu) {
    EXPECT_THROW(stream(*backend_, s, 100, Precision::tf32), Error);
    EXPECT_THROW(stream(*backend_, s, 100, Precision::bf16), Error);
    return;
  }
  const Moments oracle = oracle_of(s);
  const Moments tf32 = stream(*backend_, s, 100, Precision::tf32).moments;
  const Moments bf16 = stream(*backend_, s, 100, Precision::bf16).moments;
  double tf32_error = 0.0, bf16_error = 0.0;
  for (std::int64_t i = 0; i < oracle.units(); ++i)
    for (std::int64_t j = 0; j < oracle.units(); ++j) {
      tf32_error = std::max(tf32_error, std::abs(oracle_corr(tf32, i, j) - oracle_corr(oracle, i, j)));
      bf16_error = std::max(bf16_error, std::abs(oracle_corr(bf16, i, j) - oracle_corr(oracle, i, j)));
    }
  RecordProperty("tf32_max_correlation_error", std::to_string(tf32_error));
  RecordProperty("bf16_max_correlation_error", std::to_string(bf16_error));
  EXPECT_LT(tf32_error, 2e-3);
  EXPECT_LT(bf16_error, 2e-2);
  // Tensor-core modes take a whole batch in one product (no 4096-row chunks): a 9000-row batch.
  const Study long_study = make_study(Shape{9000}, {{DType::float32, Layout::c_order, 20}}, 35);
  const Moments long_oracle = oracle_of(long_study);
  const Moments long_tf32 = stream(*backend_, long_study, 9000, Precision::tf32).moments;
  double long_error = 0.0;
  for (std::int64_t i = 0; i < long_oracle.units(); ++i)
    for (std::int64_t j = 0; j < long_oracle.units(); ++j)
      long_error = std::max(long_error, std::abs(oracle_corr(long_tf32, i, j) - oracle_corr(long_oracle, i, j)));
  EXPECT_LT(long_error, 2e-3);
  EXPECT_EQ(tf32.samples, oracle.samples);
  for (std::int64_t i = 0; i < oracle.units(); ++i) {  // means and ranges do not go through the product
    EXPECT_NEAR(tf32.mean[i], oracle.mean[i], 1e-6 * std::abs(oracle.max[i]));
    EXPECT_EQ(bf16.max[i], oracle.max[i]);
  }
}

// Joint counts (mutual information, issue 12): exact integers, so every backend's counts equal the CPU
// reference's entry for entry: symmetric and rectangular counters, bins from 1 to 256 (S^2 cells up to
// 65536; S = 11 is the default quantile binning), batch sizes that do not divide the rows and batches
// longer than the CUDA backend's one-hot chunk, strided views.
TEST_P(Conformance, JointCountsEqualTheReferenceExactly) {
  struct Case {
    std::int64_t rows, row_units, col_units, bins, batch;
  };
  for (const Case c : {Case{1001, 7, 5, 11, 97}, Case{300, 3, 2, 256, 300}, Case{50, 4, 1, 1, 7},
                       Case{70000, 33, 17, 11, 65536}}) {
    std::mt19937_64 rng(static_cast<std::uint64_t>(c.rows + c.bins));
    const std::int64_t stride = c.row_units + c.col_units + 3;  // both sides in one padded row-major array
    std::vector<std::uint8_t> bins(static_cast<std::size_t>(c.rows * stride));
    for (auto& b : bins) b = static_cast<std::uint8_t>(rng() % static_cast<std::uint64_t>(c.bins));
    JointCountOptions options;
    options.bins = c.bins;
    options.max_batch_rows = c.batch;
    for (bool symmetric : {true, false}) {
      const std::optional<std::int64_t> cols = symmetric ? std::nullopt : std::optional<std::int64_t>(c.col_units);
      auto got = backend_->joint_counter(c.row_units, cols, options);
      auto ref = reference_->joint_counter(c.row_units, cols, options);
      for (std::int64_t first = 0; first < c.rows; first += c.batch) {
        const std::int64_t n = std::min(c.batch, c.rows - first);
        const MatrixView<const std::uint8_t> row_bins(bins.data() + first * stride, n, c.row_units, stride);
        const MatrixView<const std::uint8_t> col_bins(bins.data() + first * stride + c.row_units, n, c.col_units, stride);
        for (JointCounter* counter : {got.get(), ref.get()}) {
          if (symmetric) {
            counter->add(row_bins);
          } else {
            counter->add(row_bins, col_bins);
          }
        }
      }
      const JointCounts a = got->counts(), b = ref->counts();
      EXPECT_EQ(a.samples, c.rows);
      EXPECT_EQ(a.row_units, b.row_units);
      EXPECT_EQ(a.col_units, b.col_units);
      EXPECT_EQ(a.values, b.values) << to_string(GetParam()) << ", " << c.rows << " rows, " << c.row_units << " x "
                                    << (symmetric ? c.row_units : c.col_units) << " units, " << c.bins << " bins";
      // Every row lands in exactly one cell of each unit pair's block.
      std::int64_t total = 0;
      for (std::int64_t k = 0; k < c.bins * c.bins; ++k) total += a.values[static_cast<std::size_t>(k / c.bins * a.cols() + k % c.bins)];
      EXPECT_EQ(total, c.rows);
    }
  }
}

TEST_P(Conformance, JointCounterArgumentsAreRefusedWithTheSameWords) {
  JointCountOptions options;
  options.bins = 4;
  options.max_batch_rows = 8;
  auto words = [](const auto& call) {
    try {
      call();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::vector<std::uint8_t> b(16, 1);
  b[3] = 4;
  for (Backend* backend : {backend_.get(), reference_.get()}) {
    auto counter = backend->joint_counter(2, std::nullopt, options);
    EXPECT_EQ(words([&] { backend->joint_counter(2, std::nullopt, JointCountOptions{0, 8}); }),
              "joint_counter: bins = 0 outside [1, 256] (indices are uint8)");
    EXPECT_EQ(words([&] { counter->add(MatrixView<const std::uint8_t>(b.data(), 4, 2)); }),
              "add: row bins has bin index 4 at row 1, unit 1; indices must be below bins = 4");
    EXPECT_EQ(counter->counts().samples, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::ValuesIn(compiled_backends()), testing::backend_name);

// With CONVERGENT_REQUIRE_GPU=1 a build or machine without a usable CUDA backend fails here, even where
// the CUDA cases above are not instantiated (CUDA not compiled).
TEST(CudaBackendAvailability, UsableWhenRequired) {
  const BackendStatus status = detail::cuda_backend_status({});
  if (!gpu_required()) {
    if (!status.usable) GTEST_SKIP() << "CUDA backend not usable: " << status.detail;
    SUCCEED() << status.detail;
    return;
  }
  EXPECT_TRUE(status.compiled) << "CONVERGENT_REQUIRE_GPU=1 but the CUDA backend is not compiled";
  EXPECT_TRUE(status.usable) << "CONVERGENT_REQUIRE_GPU=1 but: " << status.detail;
}

}  // namespace
}  // namespace convergent

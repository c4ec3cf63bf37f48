// Streaming Moments on the CPU backend against a one-shot float64 computation, for every batch size.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/moments.hpp"
#include "convergent/study.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

// ReLU-like data with a large offset: the case where E[xy] - E[x]E[y] loses digits.
std::vector<float> make_rows(std::int64_t rows, std::int64_t units, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<float> x(static_cast<std::size_t>(rows * units));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double shared = normal(rng);
    for (std::int64_t u = 0; u < units; ++u)
      x[r * units + u] = static_cast<float>(std::max(0.0, 50.0 + 3.0 * (shared * (u % 3) + normal(rng))));
  }
  return x;
}

// The comoment is kept scaled per unit (moments.hpp); this is the sum of products in the input's units.
double unscaled_comoment(const Moments& m, std::int64_t i, std::int64_t j) {
  return m.covariance(i, j) * static_cast<double>(m.samples);
}

Moments stream(Backend& backend, const std::vector<float>& x, std::int64_t rows, std::vector<std::int64_t> units,
               std::int64_t batch) {
  AccumulateOptions options;
  options.max_batch_rows = batch;
  auto acc = backend.accumulator(units, options);
  std::int64_t total_units = 0;
  for (auto u : units) total_units += u;
  // Two nets side by side in one row-major matrix: each net's block starts at its column offset.
  for (std::int64_t r = 0; r < rows; r += batch) {
    const std::int64_t count = std::min(batch, rows - r);
    std::vector<ActivationBlock> blocks;
    std::int64_t offset = 0;
    for (auto u : units) {
      ActivationBlock b = row_major_block(x.data() + r * total_units + offset, DType::float32, count, u);
      b.image_stride = total_units;
      blocks.push_back(b);
      offset += u;
    }
    acc->add(blocks);
  }
  return acc->moments();
}

TEST(Moments, StreamedEqualsOneShotForEveryBatchSize) {
  const std::int64_t rows = 301, units = 13;
  const auto x = make_rows(rows, units, 7);
  std::vector<double> x64(x.begin(), x.end());
  const Moments oracle = moments_of(MatrixView<const double>(x64.data(), rows, units), {5, 8});
  auto backend = make_backend(BackendChoice::cpu);
  for (std::int64_t batch : {1, 2, 7, 64, 300, 301, 1000}) {
    const Moments m = stream(*backend, x, std::min(rows, rows), {5, 8}, batch);
    ASSERT_EQ(m.samples, rows);
    for (std::int64_t i = 0; i < units; ++i) {
      // Means are float64 sums of float32 values: agreement to 1e-12 relative.
      EXPECT_NEAR(m.mean[i], oracle.mean[i], 1e-12 * std::abs(oracle.mean[i])) << "batch " << batch;
      EXPECT_EQ(m.min[i], oracle.min[i]);
      EXPECT_EQ(m.max[i], oracle.max[i]);
      for (std::int64_t j = 0; j < units; ++j) {
        // Batch products are float32 on centred values: relative error ~ sqrt(batch) * 6e-8 of the
        // product of the two norms, far inside 1e-6.
        const double scale = std::sqrt(oracle.comoment(i, i) * oracle.comoment(j, j));
        EXPECT_NEAR(unscaled_comoment(m, i, j), oracle.comoment(i, j), 1e-6 * scale)
            << "batch " << batch << " " << i << "," << j;
        EXPECT_EQ(m.comoment(i, j), m.comoment(j, i));
      }
    }
    // Norm sums from float32-rounded centred values about a fixed origin, moved to the mean once.
    testing::expect_norm_sums_near(m, oracle, 1e-6, "batch " + std::to_string(batch));
  }
}

TEST(Moments, MergingShardsEqualsOnePass) {
  const std::int64_t rows = 200, units = 6;
  const auto x = make_rows(rows, units, 11);
  std::vector<double> x64(x.begin(), x.end());
  const Moments whole = moments_of(MatrixView<const double>(x64.data(), rows, units), {6});
  Moments merged = moments_of(MatrixView<const double>(x64.data(), 70, units), {6});
  merge(merged, moments_of(MatrixView<const double>(x64.data() + 70 * units, 130, units), {6}));
  EXPECT_EQ(merged.samples, rows);
  for (std::int64_t i = 0; i < units; ++i) {
    EXPECT_NEAR(merged.mean[i], whole.mean[i], 1e-12 * std::abs(whole.mean[i]));  // float64 round-off only
    for (std::int64_t j = 0; j < units; ++j)
      EXPECT_NEAR(unscaled_comoment(merged, i, j), whole.comoment(i, j), 1e-10 * std::abs(whole.comoment(i, i)));
  }
  Moments other({3, 3});
  EXPECT_THROW(merge(merged, other), Error);
}

TEST(Moments, MergingShardsMovesTheNormSumsToTheCommonMean) {
  // Two nets; shards of 70 and 130 rows with different means (the second half gets an offset of 5), an
  // empty shard on either side: the norm sums of the debiased CKA equal the one-pass ones to float64 round-off.
  const std::int64_t rows = 200, units = 6;
  const auto x = make_rows(rows, units, 12);
  std::vector<double> x64(x.begin(), x.end());
  for (std::size_t i = 100 * units; i < x64.size(); ++i) x64[i] += 5.0;
  const Moments whole = moments_of(MatrixView<const double>(x64.data(), rows, units), {2, 4});
  Moments merged({2, 4});
  merge(merged, moments_of(MatrixView<const double>(x64.data(), 70, units), {2, 4}));
  merge(merged, moments_of(MatrixView<const double>(x64.data() + 70 * units, 130, units), {2, 4}));
  merge(merged, Moments({2, 4}));
  EXPECT_EQ(merged.samples, rows);
  testing::expect_norm_sums_near(merged, whole, 1e-11, "merged shards");
}

TEST(Moments, KnownAnswerForTwoUnits) {
  // x = (1, 2, 3, 4), y = (2, 4, 6, 9): mean 2.5 / 5.25, comoments by hand.
  const std::vector<float> x = {1, 2, 2, 4, 3, 6, 4, 9};
  auto backend = make_backend(BackendChoice::cpu);
  const Moments m = stream(*backend, x, 4, {1, 1}, 3);
  EXPECT_DOUBLE_EQ(m.mean[0], 2.5);
  EXPECT_DOUBLE_EQ(m.mean[1], 5.25);
  EXPECT_NEAR(unscaled_comoment(m, 0, 0), 5.0, 1e-6);    // 2.25 + 0.25 + 0.25 + 2.25
  EXPECT_NEAR(unscaled_comoment(m, 0, 1), 11.5, 1e-6);   // -1.5*-3.25 + -0.5*-1.25 + 0.5*0.75 + 1.5*3.75
  EXPECT_NEAR(unscaled_comoment(m, 1, 1), 26.75, 1e-5);  // 10.5625 + 1.5625 + 0.5625 + 14.0625
  EXPECT_NEAR(m.stddev()[0], std::sqrt(5.0 / 4.0), 1e-7);  // population std (ddof = 0)
}

TEST(Moments, ConstantUnitIsDeadAndHasZeroCorrelations) {
  const std::int64_t rows = 50;
  std::vector<float> x(static_cast<std::size_t>(rows * 3));
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  for (std::int64_t r = 0; r < rows; ++r) {
    x[r * 3] = static_cast<float>(normal(rng));
    x[r * 3 + 1] = 0.37f;  // dead: the same value in every sample
    x[r * 3 + 2] = x[r * 3] * 2.0f + 1.0f;
  }
  auto backend = make_backend(BackendChoice::cpu);
  const Moments m = stream(*backend, x, rows, {3}, 16);
  const std::vector<bool> dead = dead_units(m, 1e-6);
  EXPECT_EQ(dead, (std::vector<bool>{false, true, false}));
  const Matrix corr = backend->correlation(m, dead);
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(corr(1, j), 0.0);
    EXPECT_EQ(corr(j, 1), 0.0);
  }
  EXPECT_EQ(corr(0, 0), 1.0);
  EXPECT_NEAR(corr(0, 2), 1.0, 1e-6);  // an exact linear relation; float32 products
  EXPECT_FALSE(std::isnan(corr(1, 1)));
}

TEST(Moments, NonFiniteValuesAreRejectedWithTheirPositionOrSkipped) {
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};  // 5 rows x 2 units, one net per unit
  x[7] = std::nanf("");                                   // row 3, unit 1 -> net 1, unit 0
  auto backend = make_backend(BackendChoice::cpu);
  try {
    stream(*backend, x, 5, {1, 1}, 2);
    FAIL() << "expected NonFiniteValueError";
  } catch (const NonFiniteValueError& e) {
    EXPECT_EQ(e.net(), 1);
    EXPECT_EQ(e.row(), 1);  // the second row of the batch that starts at row 2
    EXPECT_EQ(e.unit(), 0);
  }
  AccumulateOptions options;
  options.max_batch_rows = 5;
  options.skip_nonfinite_rows = true;
  auto acc = backend->accumulator({2}, options);
  acc->add({row_major_block(x.data(), DType::float32, 5, 2)});
  EXPECT_EQ(acc->skipped_rows(), 1);
  EXPECT_EQ(acc->moments().samples, 4);
  EXPECT_DOUBLE_EQ(acc->moments().mean[0], (1 + 3 + 5 + 9) / 4.0);
}

TEST(Moments, CpuBackendRefusesTensorCorePrecisions) {
  auto backend = make_backend(BackendChoice::cpu);
  AccumulateOptions options;
  options.precision = Precision::tf32;
  EXPECT_THROW(backend->accumulator({2}, options), Error);
}

}  // namespace
}  // namespace convergent

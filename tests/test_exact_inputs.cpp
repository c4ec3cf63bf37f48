// Exact on every finite input (issue 9, parts 1 and 2), on every compiled backend: large offsets keep the
// spread's digits, values from the smallest to the largest normal of each dtype neither overflow nor
// underflow, and the dead-unit rule looks at the spread. Known answers are two-pass long double
// statistics of the values exactly as stored, divided by the exact power-of-two scale they were made with.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/moments.hpp"
#include "convergent/study.hpp"
#include "backend_test.hpp"
#include "io/npy.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::compiled_backends;

// Activations of nets side by side, in one dtype: `truth` is what the file holds (as float64), `bytes` the
// file's row-major data (samples x all units).
struct Data {
  DType dtype = DType::float64;
  std::int64_t rows = 0;
  std::vector<std::int64_t> units;
  std::vector<double> truth;
  std::vector<unsigned char> bytes;

  std::int64_t total_units() const { return truth.size() / rows; }
};

Data store(DType dtype, std::int64_t rows, std::vector<std::int64_t> units, const std::vector<double>& values) {
  Data d{dtype, rows, std::move(units), values, {}};
  d.bytes.resize(values.size() * static_cast<std::size_t>(dtype_size(dtype)));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::float64) {
      std::memcpy(&d.bytes[i * 8], &values[i], 8);
    } else if (dtype == DType::float32) {
      const float f = static_cast<float>(values[i]);
      d.truth[i] = f;
      std::memcpy(&d.bytes[i * 4], &f, 4);
    } else {
      const std::uint16_t h = testing::float16_bits(values[i], &d.truth[i]);
      std::memcpy(&d.bytes[i * 2], &h, 2);
    }
  }
  return d;
}

// Two-pass long double statistics of the stored values divided by `scale` (an exact power of two).
struct Oracle {
  std::vector<long double> mean, sd;
  std::vector<std::vector<long double>> corr;
};

Oracle oracle_of(const Data& d, double scale) {
  const std::int64_t u = d.total_units();
  Oracle o{std::vector<long double>(u, 0.0L), std::vector<long double>(u, 0.0L),
           std::vector<std::vector<long double>>(u, std::vector<long double>(u, 0.0L))};
  auto at = [&](std::int64_t r, std::int64_t c) { return static_cast<long double>(d.truth[r * u + c]) / scale; };
  for (std::int64_t r = 0; r < d.rows; ++r)
    for (std::int64_t c = 0; c < u; ++c) o.mean[c] += at(r, c);
  for (auto& m : o.mean) m /= d.rows;
  for (std::int64_t r = 0; r < d.rows; ++r)
    for (std::int64_t i = 0; i < u; ++i)
      for (std::int64_t j = 0; j < u; ++j) o.corr[i][j] += (at(r, i) - o.mean[i]) * (at(r, j) - o.mean[j]);
  for (std::int64_t i = 0; i < u; ++i) o.sd[i] = std::sqrt(o.corr[i][i] / d.rows);
  for (std::int64_t i = 0; i < u; ++i)
    for (std::int64_t j = 0; j < u; ++j)
      if (i != j) o.corr[i][j] /= std::sqrt(o.corr[i][i] * o.corr[j][j]);
  for (std::int64_t i = 0; i < u; ++i) o.corr[i][i] = 1.0L;
  return o;
}

// unit c of every net = offset[c] + scale * (shared signal of that unit + 0.3 * independent noise)
std::vector<double> correlated_units(std::int64_t rows, std::int64_t nets, const std::vector<double>& offset,
                                     double scale, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const auto per_net = static_cast<std::int64_t>(offset.size());
  std::vector<double> v(static_cast<std::size_t>(rows * nets * per_net));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < per_net; ++c) {
      const double shared = normal(rng);
      for (std::int64_t n = 0; n < nets; ++n)
        v[r * nets * per_net + n * per_net + c] = offset[c] + scale * (shared + 0.3 * normal(rng));
    }
  return v;
}

// The bytes of `d` as another file would hold the same values: most significant byte first, and/or in
// Fortran (column-major) order, where a batch of rows is not one dense span (the CUDA backend gathers its
// rows on the host; dense big-endian blocks are swapped on the device).
std::vector<unsigned char> relaid(const Data& d, bool big_endian, bool fortran) {
  const std::int64_t u = d.total_units(), size = dtype_size(d.dtype);
  std::vector<unsigned char> out(d.bytes.size());
  for (std::int64_t r = 0; r < d.rows; ++r)
    for (std::int64_t c = 0; c < u; ++c) {
      const unsigned char* from = d.bytes.data() + (r * u + c) * size;
      unsigned char* to = out.data() + (fortran ? c * d.rows + r : r * u + c) * size;
      std::copy(from, from + size, to);
      if (big_endian) std::reverse(to, to + size);
    }
  return out;
}

Moments stream_relaid(Backend& backend, const Data& d, std::int64_t batch, bool big_endian, bool fortran) {
  const std::vector<unsigned char> bytes = relaid(d, big_endian, fortran);
  AccumulateOptions options;
  options.max_batch_rows = batch;
  auto acc = backend.accumulator(d.units, options);
  const std::int64_t u = d.total_units(), size = dtype_size(d.dtype);
  for (std::int64_t r = 0; r < d.rows; r += batch) {
    const std::int64_t count = std::min(batch, d.rows - r);
    std::vector<ActivationBlock> blocks;
    std::int64_t offset = 0;
    for (std::int64_t units : d.units) {
      const std::int64_t first = fortran ? offset * d.rows + r : r * u + offset;
      ActivationBlock b = row_major_block(bytes.data() + first * size, d.dtype, count, units);
      b.image_stride = fortran ? 1 : u;
      b.unit_stride = fortran ? d.rows : 1;
      b.big_endian = big_endian;
      blocks.push_back(b);
      offset += units;
    }
    acc->add(blocks);
  }
  return acc->moments();
}

class ExactInputs : public testing::PerBackend {
 protected:
  Moments stream(const Data& d, std::int64_t batch) { return stream_relaid(*backend_, d, batch, false, false); }

  // Checks the backend's statistics of `d` against the oracle, nothing dead. Tolerances: the shift and
  // scale are exact, so what is left is the float32 product over chunks of up to 2048 rows, whose sums
  // carry a relative error of about sqrt(2048 / 3) 2^-24 = 1.6e-6 on strongly correlated units (1.7e-6
  // seen on float16-quantised data with corr 0.92, the same with or without an offset): correlations
  // within 3e-6, std within 3e-6 relative; means within 1e-6 of a std plus float64 rounding of the offset.
  void expect_exact(const Data& d, double scale, std::int64_t batch, const std::string& label) {
    const Moments m = stream(d, batch);
    const Oracle o = oracle_of(d, scale);
    const std::vector<bool> dead = dead_units(m, 1e-6);
    const Matrix corr = backend_->correlation(m, dead);
    const std::vector<double> sd = m.stddev();
    const std::int64_t u = d.total_units();
    for (std::int64_t i = 0; i < u; ++i) {
      EXPECT_FALSE(dead[i]) << label << ": unit " << i << " declared dead";
      ASSERT_TRUE(std::isfinite(sd[i]) && std::isfinite(m.mean[i])) << label << ": unit " << i;
      EXPECT_NEAR(sd[i] / scale, static_cast<double>(o.sd[i]), 3e-6 * static_cast<double>(o.sd[i]))
          << label << ": std of unit " << i;
      const long double mean_error = static_cast<long double>(m.mean[i]) / scale - o.mean[i];
      EXPECT_LE(std::abs(static_cast<double>(mean_error)), 1e-6 * static_cast<double>(o.sd[i]) +
                                                               0x1p-52 * std::abs(static_cast<double>(o.mean[i])))
          << label << ": mean of unit " << i << " " << m.mean[i] << " vs " << static_cast<double>(o.mean[i] * scale);
      for (std::int64_t j = 0; j < u; ++j)
        EXPECT_NEAR(corr(i, j), static_cast<double>(o.corr[i][j]), 3e-6) << label << ": corr(" << i << ", " << j << ")";
    }
  }
};

TEST_P(ExactInputs, OffsetsFrom1e3To1e12KeepTheDigitsOfTheSpread) {
  // Offsets up to what each dtype can hold with the spread still above its rounding step.
  const struct {
    DType dtype;
    std::vector<double> offsets;
  } cases[] = {{DType::float64, {1e3, 1e6, 1e8, 1e10, 1e12, -1e12}},
               {DType::float32, {1e3, -1e4, 1e5, 1e6}},
               {DType::float16, {1e1, -1e2, 2e2}}};
  for (const auto& c : cases) {
    const std::int64_t rows = 5000;
    const Data d = store(c.dtype, rows, {static_cast<std::int64_t>(c.offsets.size()), static_cast<std::int64_t>(c.offsets.size())},
                         correlated_units(rows, 2, c.offsets, 1.0, 41));
    for (std::int64_t batch : {4999, 700})
      expect_exact(d, 1.0, batch, std::string(dtype_name(c.dtype)) + ", batches of " + std::to_string(batch));
  }
}

TEST_P(ExactInputs, ScalesFromTheSmallestToTheLargestNormalValue) {
  // Powers of two, so that dividing by them is exact: from a few steps above each dtype's smallest normal
  // (values near 0 are then subnormal) to a few below its largest (|z| < 5.3 with these seeds).
  const struct {
    DType dtype;
    std::vector<int> exponents;
  } cases[] = {{DType::float64, {-1019, -500, 0, 300, 1020}},
               {DType::float32, {-123, -60, 0, 66, 124}},  // 2^66 ~ 1e20: the example
               {DType::float16, {-11, 0, 12}}};
  for (const auto& c : cases)
    for (int e : c.exponents) {
      const double scale = std::ldexp(1.0, e);
      const std::int64_t rows = 3000;
      const Data d = store(c.dtype, rows, {3, 2}, correlated_units(rows, 1, {0.0, 0.0, 0.0, 0.0, 0.0}, scale, 43));
      expect_exact(d, scale, 2999, std::string(dtype_name(c.dtype)) + " x 2^" + std::to_string(e));
    }
}

TEST_P(ExactInputs, UnitsWhoseRangeSpansTheWholeFloat64Range) {
  // Values of both signs near the largest float64, and a unit that jumps from 1 to 1e300 between batches:
  // sums and differences of such values overflow unless halved first.
  const std::int64_t rows = 400;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal;
  std::vector<double> v(static_cast<std::size_t>(rows * 3));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double z = std::clamp(normal(rng), -1.7, 1.7);
    v[r * 3] = z * 1e308;
    v[r * 3 + 1] = (r < rows / 2 ? 1.0 : 1e300) * (1.0 + 0.01 * normal(rng));
    v[r * 3 + 2] = -z * 0x1p1020 + normal(rng) * 0x1p1018;
  }
  const Data d = store(DType::float64, rows, {3}, v);
  const double scale = 0x1p1000;
  for (std::int64_t batch : {rows, std::int64_t{150}}) expect_exact(d, scale, batch, "float64 near the limits");
}

TEST_P(ExactInputs, DeadUnitsAreTheConstantOnesWhateverTheOffset) {
  const std::int64_t rows = 300;
  std::mt19937_64 rng(9);
  std::normal_distribution<double> normal;
  std::vector<double> v(static_cast<std::size_t>(rows * 4));
  for (std::int64_t r = 0; r < rows; ++r) {
    v[r * 4] = 1e8 + normal(rng);  // alive: std 1 on an offset of 1e8
    v[r * 4 + 1] = 1e8;           // dead: constant
    v[r * 4 + 2] = 0.1;           // dead: constant that float64 sums cannot reproduce exactly
    v[r * 4 + 3] = r == 17 ? 1.0 : 0.0;  // alive: one spike, std = range / sqrt(300)
  }
  const Data d = store(DType::float64, rows, {2, 2}, v);
  for (std::int64_t batch : {rows, std::int64_t{64}}) {
    const Moments m = stream(d, batch);
    const std::vector<bool> dead = dead_units(m, 1e-6);
    EXPECT_EQ(dead, (std::vector<bool>{false, true, true, false})) << "batches of " << batch;
    EXPECT_EQ(m.stddev()[1], 0.0);
    EXPECT_EQ(m.stddev()[2], 0.0);
    EXPECT_EQ(m.mean[1], 1e8);
    EXPECT_EQ(m.mean[2], 0.1);
    const Matrix corr = backend_->correlation(m, dead);
    for (std::int64_t j = 0; j < 4; ++j) EXPECT_EQ(corr(1, j), 0.0);
  }
}

// Byte order and layout are how a value is stored, not what it is: every backend decodes each value
// exactly before it shifts and scales it, so the statistics are the same to the last bit. Together with
// expect_exact on the plain layout, this carries the exactness over to big-endian and gathered blocks.
TEST_P(ExactInputs, ByteOrderAndLayoutDoNotChangeABit) {
  const struct {
    DType dtype;
    std::vector<double> offsets;
    double scale;
  } cases[] = {{DType::float64, {1e3, -5e1, 0.0}, 0x1p990},  // spread 1e298 on offsets up to 1e301
               {DType::float64, {1e12, -1e10, 3.0}, 1.0},    // spread 1 on offsets up to 1e12
               {DType::float32, {1e5, -1e3, 0.0}, 0x1p60},   // beyond float32's square root of its range
               {DType::float16, {1e1, -2e2, 0.0}, 1.0}};
  for (const auto& c : cases) {
    const std::int64_t rows = 3000;
    const Data d = store(c.dtype, rows, {3, 3}, correlated_units(rows, 2, c.offsets, 1.0, 51));
    Data scaled = d;
    if (c.scale != 1.0) {
      std::vector<double> values = d.truth;
      for (double& v : values) v = std::ldexp(v, std::ilogb(c.scale));  // exact: a power of two
      scaled = store(c.dtype, rows, {3, 3}, values);
    }
    const std::string label = std::string(dtype_name(c.dtype)) + " scale " + std::to_string(c.scale);
    expect_exact(scaled, c.scale, 1000, label);
    const Moments plain = stream(scaled, 1000);
    for (const auto& [big_endian, fortran] : {std::pair{true, false}, std::pair{false, true}, std::pair{true, true}}) {
      const std::string how = label + (big_endian ? ", big-endian" : "") + (fortran ? ", Fortran order" : "");
      const Moments m = stream_relaid(*backend_, scaled, 1000, big_endian, fortran);
      EXPECT_EQ(m.samples, plain.samples) << how;
      EXPECT_EQ(m.mean, plain.mean) << how;
      EXPECT_EQ(m.min, plain.min) << how;
      EXPECT_EQ(m.max, plain.max) << how;
      EXPECT_EQ(m.exponent, plain.exponent) << how;
      const std::int64_t u = plain.units();
      EXPECT_TRUE(std::equal(m.comoment.data(), m.comoment.data() + u * u, plain.comoment.data())) << how;
    }
  }
}

// Shards accumulated on this backend merge (merge(), on the host) to the CPU's whole pass: the Moments a
// backend returns carry the scaled comoment and per-unit exponents that merge() expects.
TEST_P(ExactInputs, ShardsOfThisBackendMergeToTheCpuWholePass) {
  const std::int64_t rows = 600;
  std::mt19937_64 rng(17);
  std::normal_distribution<double> normal;
  std::vector<double> v(static_cast<std::size_t>(rows * 3));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double z = normal(rng);
    v[r * 3] = (r < 200 ? 1e12 : 1e12 + 3.0) + z;
    v[r * 3 + 1] = (r < 400 ? 1e-300 : 1e-290) * (z + normal(rng));
    v[r * 3 + 2] = 1e300 * (1.0 + 0.1 * (z + normal(rng)));
  }
  auto shard = [&](Backend& backend, std::int64_t first, std::int64_t count) {
    AccumulateOptions options;
    options.max_batch_rows = 128;  // several batches per shard
    auto acc = backend.accumulator({1, 2}, options);
    for (std::int64_t r = first; r < first + count; r += 128) {
      const std::int64_t n = std::min<std::int64_t>(128, first + count - r);
      ActivationBlock a = row_major_block(v.data() + r * 3, DType::float64, n, 1);
      ActivationBlock b = row_major_block(v.data() + r * 3 + 1, DType::float64, n, 2);
      a.image_stride = b.image_stride = 3;
      acc->add({a, b});
    }
    return acc->moments();
  };
  Moments merged = shard(*backend_, 0, 200);
  merge(merged, shard(*backend_, 200, 250));
  merge(merged, shard(*backend_, 450, 150));
  auto cpu = make_backend(BackendChoice::cpu);
  const Moments whole = shard(*cpu, 0, rows);
  ASSERT_EQ(merged.samples, rows);
  const std::vector<double> sd_merged = merged.stddev(), sd_whole = whole.stddev();
  for (int i = 0; i < 3; ++i) {
    // Within the float32 product's error of each other (see ShardsOfExtremeValuesMergeToTheWholePass).
    // Means: also a float64 rounding of the offset on each side.
    EXPECT_NEAR(merged.mean[i], whole.mean[i], 1e-6 * sd_whole[i] + 0x1p-51 * std::abs(whole.mean[i])) << "unit " << i;
    EXPECT_NEAR(sd_merged[i], sd_whole[i], 6e-6 * sd_whole[i]) << "unit " << i;
    EXPECT_EQ(merged.min[i], whole.min[i]) << "unit " << i;
    EXPECT_EQ(merged.max[i], whole.max[i]) << "unit " << i;
    for (int j = 0; j < 3; ++j) {
      const double corr_merged = merged.comoment(i, j) / std::sqrt(merged.comoment(i, i) * merged.comoment(j, j));
      const double corr_whole = whole.comoment(i, j) / std::sqrt(whole.comoment(i, i) * whole.comoment(j, j));
      EXPECT_NEAR(corr_merged, corr_whole, 6e-6) << i << ", " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ExactInputs, ::testing::ValuesIn(compiled_backends()), testing::backend_name);

TEST(ExactInputs, ShardsOfExtremeValuesMergeToTheWholePass) {
  // Shards with different offsets and scales: merge() reconciles the scales exactly.
  const std::int64_t rows = 600;
  std::mt19937_64 rng(13);
  std::normal_distribution<double> normal;
  std::vector<double> v(static_cast<std::size_t>(rows * 2));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double z = normal(rng);
    const double offset = r < 200 ? 1e12 : 1e12 + 3.0;
    v[r * 2] = offset + z;
    v[r * 2 + 1] = (r < 400 ? 1e-300 : 1e-290) * (z + normal(rng));
  }
  auto backend = make_backend(BackendChoice::cpu);
  auto shard = [&](std::int64_t first, std::int64_t count) {
    auto acc = backend->accumulator({2}, AccumulateOptions{});
    acc->add({row_major_block(v.data() + first * 2, DType::float64, count, 2)});
    return acc->moments();
  };
  Moments merged = shard(0, 200);
  merge(merged, shard(200, 250));
  merge(merged, shard(450, 150));
  const Moments whole = shard(0, rows);
  ASSERT_EQ(merged.samples, rows);
  const std::vector<double> sd_merged = merged.stddev(), sd_whole = whole.stddev();
  for (int i = 0; i < 2; ++i) {
    // Shards cut the rows into other float32 chunks than the whole pass: both are within the float32
    // product's error (see expect_exact) of the truth, so within twice that of each other.
    EXPECT_NEAR(merged.mean[i], whole.mean[i], 1e-6 * sd_whole[i]);
    EXPECT_NEAR(sd_merged[i], sd_whole[i], 6e-6 * sd_whole[i]);
  }
  const double corr_merged = merged.comoment(0, 1) / std::sqrt(merged.comoment(0, 0) * merged.comoment(1, 1));
  const double corr_whole = whole.comoment(0, 1) / std::sqrt(whole.comoment(0, 0) * whole.comoment(1, 1));
  EXPECT_NEAR(corr_merged, corr_whole, 6e-6);
}

// The reports through the command line: outputs equal the float64 answer, nothing dead.
TEST(ExactInputsCli, LargeOffsetsAndHugeValuesGiveTheFloat64Answer) {
  using testing::run_cli;
  testing::ScratchDir dir;
  const struct {
    const char* name;
    DType dtype;
    std::int64_t rows;
    std::vector<double> offsets;
    double scale;
  } cases[] = {{"offsets", DType::float64, 20000, {1e4, 1e6, 1e7, 1e8}, 1.0},
               {"huge32", DType::float32, 5000, {0.0, 0.0, 0.0}, 1e20},
               {"huge64", DType::float64, 5000, {0.0, 0.0, 0.0}, 1e39}};
  for (const auto& c : cases) {
    const auto units = static_cast<std::int64_t>(c.offsets.size());
    const std::vector<double> values = correlated_units(c.rows, 2, c.offsets, c.scale, 47);
    std::vector<double> a(static_cast<std::size_t>(c.rows * units)), b(a.size());
    for (std::int64_t r = 0; r < c.rows; ++r)
      for (std::int64_t u = 0; u < units; ++u) {
        a[r * units + u] = values[(r * 2) * units + u];
        b[r * units + u] = values[(r * 2 + 1) * units + u];
      }
    const Data da = store(c.dtype, c.rows, {units}, a), db = store(c.dtype, c.rows, {units}, b);
    const std::string descr = c.dtype == DType::float64 ? "<f8" : "<f4";
    const std::string pa = dir.file(std::string(c.name) + "_A.npy"), pb = dir.file(std::string(c.name) + "_B.npy");
    testing::write_raw_npy(pa, descr, false, testing::shape_tuple({c.rows, units}), da.bytes.data(), da.bytes.size());
    testing::write_raw_npy(pb, descr, false, testing::shape_tuple({c.rows, units}), db.bytes.data(), db.bytes.size());
    const std::string out = dir.file(std::string(c.name) + "_out");
    const auto r = run_cli("align " + pa + " " + pb + " --out " + out + " --clusters none --backend cpu");
    ASSERT_EQ(r.exit_code, 0) << c.name << ": " << r.output;

    // The float64 answer from the stored values of both files together.
    Data both = da;
    both.units = {units, units};
    both.truth.clear();
    for (std::int64_t row = 0; row < c.rows; ++row) {
      both.truth.insert(both.truth.end(), da.truth.begin() + row * units, da.truth.begin() + (row + 1) * units);
      both.truth.insert(both.truth.end(), db.truth.begin() + row * units, db.truth.begin() + (row + 1) * units);
    }
    const Oracle o = oracle_of(both, c.scale);
    MappedNpy corr(out + "/corr_" + c.name + "_A_" + c.name + "_B.npy");
    const auto* values_ab = reinterpret_cast<const double*>(corr.data());
    const auto summary = nlohmann::json::parse(std::ifstream(out + "/summary.json"));
    for (std::int64_t i = 0; i < units; ++i) {
      EXPECT_NEAR(values_ab[i * units + i], static_cast<double>(o.corr[i][units + i]), 1e-6) << c.name << " unit " << i;
      const double sd = summary["nets"][0]["std"][i];
      EXPECT_NEAR(sd / c.scale, static_cast<double>(o.sd[i]), 1e-6 * static_cast<double>(o.sd[i])) << c.name;
    }
    EXPECT_TRUE(summary["nets"][0]["dead_units"].empty()) << c.name;
    EXPECT_TRUE(summary["nets"][1]["dead_units"].empty()) << c.name;
  }
}

}  // namespace
}  // namespace convergent

// run_study end to end on .npy files: planted structure, every dtype and layout, and bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "convergent/convergent.hpp"
#include "io/resident_memory.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::ScratchDir;

// Net A: `units` independent features (ReLU'd); net B: the same features permuted, rescaled and noisy.
struct PlantedPair {
  std::vector<double> a, b;  // rows x units, C order
  std::vector<std::int64_t> permutation;  // unit a of A is unit permutation[a] of B
};

PlantedPair make_planted(std::int64_t rows, std::int64_t units, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  PlantedPair p;
  p.permutation.resize(static_cast<std::size_t>(units));
  std::iota(p.permutation.begin(), p.permutation.end(), 0);
  std::shuffle(p.permutation.begin(), p.permutation.end(), rng);
  p.a.resize(static_cast<std::size_t>(rows * units));
  p.b.resize(p.a.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t u = 0; u < units; ++u) {
      const double feature = normal(rng);
      p.a[r * units + u] = std::max(0.0, feature + 0.3 * normal(rng));
      p.b[r * units + p.permutation[u]] = 2.0 * feature + 1.0 + 0.6 * normal(rng);
    }
  return p;
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

// align's finish_study hands the comoment over (the correlation formed in its storage): the same
// correlation to the bit, the same standard deviations, the same similarity indices (their covariances
// then read back from the correlation and the kept diagonal), and no second U x U matrix.
TEST(Study, HandingTheComomentOverChangesNoResult) {
  ScratchDir dir;
  const std::int64_t rows = 500, units = 24;
  const PlantedPair p = make_planted(rows, units, 5);
  testing::write_array(dir.file("a.npy"), to_float(p.a), {rows, units});
  testing::write_array(dir.file("b.npy"), to_float(p.b), {rows, units});
  auto backend = make_backend(BackendChoice::cpu);
  Study kept = accumulate_study(*backend, {{"a", dir.file("a.npy")}, {"b", dir.file("b.npy")}}, {});
  Study handed = kept;
  const double* storage = handed.moments.comoment.data();
  finish_study(*backend, kept, 0.0);
  finish_study(*backend, handed, 0.0, ComomentAfterStudy::hand_over);
  EXPECT_EQ(handed.correlation.data(), storage);
  EXPECT_EQ(handed.moments.comoment.rows(), 0);
  EXPECT_EQ(kept.moments.comoment.rows(), 2 * units);
  EXPECT_EQ(handed.moments.stddev(), kept.moments.stddev());
  for (std::int64_t i = 0; i < 2 * units; ++i)
    for (std::int64_t j = 0; j < 2 * units; ++j) ASSERT_EQ(handed.correlation(i, j), kept.correlation(i, j));
  EXPECT_THROW(handed.moments.covariance(0, 1), Error);
  // The indices' covariances come from the comoment when kept and from corr_ij sqrt(M_ii M_jj) when
  // handed over: a few float64 roundings apart (1e-15 relative per entry), 1e-12 on the indices.
  const auto a = similarity_indices(*backend, kept), b = similarity_indices(*backend, handed);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_NEAR(*a[0].linear_cka, *b[0].linear_cka, 1e-12);
  ASSERT_EQ(a[0].cca->correlations.size(), b[0].cca->correlations.size());
  for (std::size_t k = 0; k < a[0].cca->correlations.size(); ++k)
    EXPECT_NEAR(a[0].cca->correlations[k], b[0].cca->correlations[k], 1e-12) << k;
  EXPECT_NEAR(a[0].procrustes->similarity, b[0].procrustes->similarity, 1e-12);
}

TEST(Study, MatchingRecoversAPlantedPermutation) {
  ScratchDir dir;
  const std::int64_t rows = 3000, units = 40;
  const PlantedPair p = make_planted(rows, units, 1);
  testing::write_array(dir.file("a.npy"), to_float(p.a), {rows, units});
  testing::write_array(dir.file("b.npy"), p.b, {rows, units});  // float64 file
  auto backend = make_backend(BackendChoice::cpu);
  StudyOptions options;
  options.batch_rows = 257;  // does not divide the row count
  const Study study = run_study(*backend, {{"a", dir.file("a.npy")}, {"b", dir.file("b.npy")}}, options);
  EXPECT_EQ(study.moments.samples, rows);
  const auto& n = study.nets;
  const PairAlignment pair =
      align_pair(*backend, study.correlation.block(n[0].offset, n[1].offset, n[0].units, n[1].units));
  for (std::int64_t u = 0; u < units; ++u) {
    EXPECT_EQ(pair.matching.row_to_col[u], p.permutation[u]);
    EXPECT_EQ(pair.semi_match[u], p.permutation[u]);
  }
  EXPECT_DOUBLE_EQ(pair.same_assignment_fraction, 1.0);
  EXPECT_GT(pair.matching_mean_corr, 0.7);  // planted signal: corr of relu(f + 0.3e) and 2f + 0.6e' ~ 0.75
  EXPECT_NEAR(pair.matching_mean_corr * units, pair.matching_total_corr, 1e-9);
  // Within-net correlations: symmetric with unit diagonal.
  for (std::int64_t i = 0; i < 2 * units; ++i) {
    EXPECT_EQ(study.correlation(i, i), 1.0);
    for (std::int64_t j = 0; j < 2 * units; ++j) EXPECT_EQ(study.correlation(i, j), study.correlation(j, i));
  }
}

// The same conv activations written as NCHW, NHWC, Fortran order, float16 and as plain 2-D rows give
// the same correlations.
TEST(Study, EveryLayoutAndDtypeGivesTheSameCorrelations) {
  ScratchDir dir;
  const std::int64_t images = 30, channels = 5, height = 3, width = 4;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal;
  // Values on a float16-exact grid (multiples of 1/8 below 64) so that every dtype holds them exactly.
  auto grid = [&] { return std::round(8.0 * (3.0 + normal(rng))) / 8.0; };
  std::vector<double> rows2d(static_cast<std::size_t>(images * height * width * channels));
  for (auto& v : rows2d) v = grid();
  std::vector<float> nchw(rows2d.size()), nhwc(rows2d.size()), nchw_fortran(rows2d.size());
  std::vector<std::uint16_t> nchw_half(rows2d.size());
  for (std::int64_t i = 0; i < images; ++i)
    for (std::int64_t c = 0; c < channels; ++c)
      for (std::int64_t y = 0; y < height; ++y)
        for (std::int64_t x = 0; x < width; ++x) {
          const double v = rows2d[((i * height + y) * width + x) * channels + c];
          nchw[((i * channels + c) * height + y) * width + x] = static_cast<float>(v);
          nhwc[((i * height + y) * width + x) * channels + c] = static_cast<float>(v);
          nchw_fortran[i + images * (c + channels * (y + height * x))] = static_cast<float>(v);
          // float16 bits of a value on the grid: exact by construction.
          const float f = static_cast<float>(v);
          std::uint32_t bits;
          std::memcpy(&bits, &f, 4);
          const std::uint32_t sign = (bits >> 16) & 0x8000u;
          const int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
          nchw_half[((i * channels + c) * height + y) * width + x] =
              f == 0.0f ? static_cast<std::uint16_t>(sign)
                        : static_cast<std::uint16_t>(sign | (exponent << 10) | ((bits >> 13) & 0x3ffu));
        }
  const std::int64_t samples = images * height * width;
  testing::write_array(dir.file("rows.npy"), rows2d, {samples, channels});
  testing::write_array(dir.file("nchw.npy"), nchw, {images, channels, height, width});
  testing::write_array(dir.file("nhwc.npy"), nhwc, {images, height, width, channels});
  testing::write_array(dir.file("fortran.npy"), nchw_fortran, {images, channels, height, width}, true);
  testing::write_raw_npy(dir.file("half.npy"), "<f2", false, testing::shape_tuple({images, channels, height, width}),
                         nchw_half.data(), nchw_half.size() * 2);
  auto backend = make_backend(BackendChoice::cpu);
  StudyOptions options;
  options.batch_rows = 25;  // rounds to whole images: 2 images of 12 pixels
  const Study reference = run_study(*backend, {{"r", dir.file("rows.npy")}, {"n", dir.file("nchw.npy")}}, options);
  // The same data twice: the between-net block equals the within-net block, and corr(u, u) = 1.
  for (std::int64_t i = 0; i < channels; ++i) EXPECT_NEAR(reference.correlation(i, channels + i), 1.0, 1e-6);
  for (const char* other : {"fortran.npy", "half.npy"}) {
    const Study s = run_study(*backend, {{"r", dir.file("rows.npy")}, {"x", dir.file(other)}}, options);
    for (std::int64_t i = 0; i < 2 * channels; ++i)
      for (std::int64_t j = 0; j < 2 * channels; ++j)
        EXPECT_NEAR(s.correlation(i, j), reference.correlation(i, j), 1e-6) << other;  // float32 products
  }
  options.layout = Layout::channels_last;
  const Study s = run_study(*backend, {{"r", dir.file("rows.npy")}, {"x", dir.file("nhwc.npy")}}, options);
  for (std::int64_t i = 0; i < 2 * channels; ++i)
    for (std::int64_t j = 0; j < 2 * channels; ++j) EXPECT_NEAR(s.correlation(i, j), reference.correlation(i, j), 1e-6);
}

TEST(Study, ThreeDimensionalActivationsChannelsFirstAndLast) {
  // 1-D conv activations (N, C, L) and transformer tokens (N, L, C): every (sample, position) is a sample,
  // so both give exactly the correlations of the 2-D (N L, C) matrix they were cut from.
  ScratchDir dir;
  const std::int64_t images = 40, channels = 6, length = 7;
  std::mt19937_64 rng(8);
  std::normal_distribution<double> normal;
  std::vector<float> rows(static_cast<std::size_t>(images * length * channels)), ncl(rows.size()), nlc(rows.size());
  for (std::int64_t i = 0; i < images; ++i)
    for (std::int64_t l = 0; l < length; ++l) {
      const double shared = normal(rng);
      for (std::int64_t c = 0; c < channels; ++c) {
        const auto v = static_cast<float>(shared * (c % 3) + normal(rng));
        rows[(i * length + l) * channels + c] = v;
        ncl[(i * channels + c) * length + l] = v;
        nlc[(i * length + l) * channels + c] = v;
      }
    }
  testing::write_array(dir.file("rows.npy"), rows, {images * length, channels});
  testing::write_array(dir.file("ncl.npy"), ncl, {images, channels, length});
  testing::write_array(dir.file("nlc.npy"), nlc, {images, length, channels});
  auto backend = make_backend(BackendChoice::cpu);
  StudyOptions options;
  options.batch_rows = 49;  // whole samples of 7 positions, and the same batches for the 2-D reference
  const Study reference = run_study(*backend, {{"a", dir.file("rows.npy")}, {"b", dir.file("rows.npy")}}, options);
  const Study first = run_study(*backend, {{"a", dir.file("rows.npy")}, {"b", dir.file("ncl.npy")}}, options);
  options.layout = Layout::channels_last;
  const Study last = run_study(*backend, {{"a", dir.file("rows.npy")}, {"b", dir.file("nlc.npy")}}, options);
  ASSERT_EQ(first.moments.samples, images * length);
  for (std::int64_t i = 0; i < 2 * channels; ++i)
    for (std::int64_t j = 0; j < 2 * channels; ++j) {
      EXPECT_EQ(first.correlation(i, j), reference.correlation(i, j));  // the same rows in the same order
      EXPECT_EQ(last.correlation(i, j), reference.correlation(i, j));
    }
  // Errors name the position as (image, l).
  std::vector<float> bad = ncl;
  bad[(3 * channels + 2) * length + 5] = NAN;  // image 3, channel 2, l 5 = sample row 3 * 7 + 5
  testing::write_array(dir.file("bad.npy"), bad, {images, channels, length});
  options.layout = Layout::channels_first;
  try {
    run_study(*backend, {{"a", dir.file("rows.npy")}, {"b", dir.file("bad.npy")}}, options);
    ADD_FAILURE() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.npy: NaN or infinity at sample row 26 (image 3, l 5), unit 2"),
              std::string::npos)
        << e.what();
  }
}

std::string study_error(const std::vector<NetSource>& nets, StudyOptions options = {}) {
  auto backend = make_backend(BackendChoice::cpu);
  try {
    run_study(*backend, nets, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Study, MismatchedSampleCountsNameBothFiles) {
  ScratchDir dir;
  testing::write_array(dir.file("net1.npy"), std::vector<float>(20, 1.0f), {10, 2});
  testing::write_array(dir.file("net2.npy"), std::vector<float>(18, 1.0f), {9, 2});
  const std::string message = study_error({{"n1", dir.file("net1.npy")}, {"n2", dir.file("net2.npy")}});
  EXPECT_NE(message.find("net2.npy: 9 samples, but"), std::string::npos) << message;
  EXPECT_NE(message.find("net1.npy has 10"), std::string::npos) << message;
}

TEST(Study, NonFiniteValueNamesFileRowAndUnit) {
  ScratchDir dir;
  std::vector<float> good(40), bad(40);
  for (int i = 0; i < 40; ++i) good[i] = bad[i] = static_cast<float>(i % 7);
  // NCHW shape (5, 2, 2, 2): flat index 15 = image 1, channel 1, y 1, x 1 = sample row 4 + 2 + 1 = 7.
  bad[15] = INFINITY;
  testing::write_array(dir.file("good.npy"), good, {5, 2, 2, 2});
  testing::write_array(dir.file("bad.npy"), bad, {5, 2, 2, 2});
  StudyOptions options;
  options.batch_rows = 4;
  const std::string message = study_error({{"g", dir.file("good.npy")}, {"b", dir.file("bad.npy")}}, options);
  EXPECT_NE(message.find("bad.npy: NaN or infinity at sample row 7 (image 1, y 1, x 1), unit 1"), std::string::npos)
      << message;
  options.skip_nonfinite_rows = true;
  auto backend = make_backend(BackendChoice::cpu);
  const Study s = run_study(*backend, {{"g", dir.file("good.npy")}, {"b", dir.file("bad.npy")}}, options);
  EXPECT_EQ(s.skipped_rows, 1);
  EXPECT_EQ(s.moments.samples, 19);
}

TEST(Study, TooFewSamplesAndZeroUnitsAreErrors) {
  ScratchDir dir;
  testing::write_array(dir.file("one.npy"), std::vector<float>(3, 1.0f), {1, 3});
  EXPECT_NE(study_error({{"a", dir.file("one.npy")}, {"b", dir.file("one.npy")}}).find("at least 2"), std::string::npos);
  // Wide and empty: refused from the headers, before the pass would ask for 2 x 100000 units squared (320 GB).
  // The fuzzer found this one (fuzz/corpus/npy_reader/wide_no_samples.npy).
  testing::write_array(dir.file("wide_empty.npy"), std::vector<float>{}, {0, 100000});
  EXPECT_NE(study_error({{"a", dir.file("wide_empty.npy")}, {"b", dir.file("wide_empty.npy")}})
                .find("wide_empty.npy: 0 sample(s); correlations need at least 2"),
            std::string::npos);
  // No positions: no sample, and 0 rows per input (the fuzzer found the division by it).
  testing::write_array(dir.file("no_positions.npy"), std::vector<float>{}, {3, 2, 4, 0});
  EXPECT_NE(study_error({{"a", dir.file("no_positions.npy")}, {"b", dir.file("no_positions.npy")}})
                .find("no_positions.npy: shape (3, 2, 4, 0) has zero positions"),
            std::string::npos);
  testing::write_array(dir.file("none.npy"), std::vector<float>{}, {10, 0});
  testing::write_array(dir.file("ok.npy"), std::vector<float>(10, 1.0f), {10, 1});
  EXPECT_NE(study_error({{"a", dir.file("ok.npy")}, {"b", dir.file("none.npy")}}).find("none.npy: shape (10, 0) has zero units"),
            std::string::npos);
  testing::write_array(dir.file("five.npy"), std::vector<float>(32, 1.0f), {2, 2, 2, 2, 2});
  EXPECT_NE(study_error({{"a", dir.file("five.npy")}, {"b", dir.file("ok.npy")}}).find("five.npy: shape (2, 2, 2, 2, 2) is 5-D"),
            std::string::npos);
}

// Files are memory-mapped and the pages of finished batches handed back, so resident memory follows the
// batch size and the unit count, not the file size: what lets a file larger than RAM stream.
TEST(Study, ResidentMemoryFollowsTheBatchNotTheFiles) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer's shadow memory adds to the resident size by design (289 MiB measured)";
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
  GTEST_SKIP() << "ThreadSanitizer's shadow memory adds to the resident size by design (289 MiB measured)";
#endif
#endif
  ScratchDir dir;
  const std::int64_t rows = 65536, units = 256;  // two 64 MiB files
  std::uint64_t state = 88172645463325252ull;
  for (const char* name : {"a.npy", "b.npy"}) {
    std::vector<float> values(static_cast<std::size_t>(rows * units));
    for (float& v : values) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
      v = static_cast<float>(state >> 40) * 0x1p-24f;
    }
    testing::write_array(dir.file(name), values, {rows, units});
  }
  detail::reset_peak_resident();
  const double before = detail::status_mib("VmRSS");
  ASSERT_NEAR(detail::status_mib("VmHWM"), before, 1.0) << "could not reset the peak resident size";
  auto backend = make_backend(BackendChoice::cpu);
  StudyOptions options;
  options.batch_rows = 2048;
  const Study study = run_study(*backend, {{"a", dir.file("a.npy")}, {"b", dir.file("b.npy")}}, options);
  EXPECT_EQ(study.moments.samples, rows);
  EXPECT_NEAR(study.moments.mean[0], 0.5, 0.01);  // uniform on [0, 1)
  // Expected peak: a 4 MiB batch, the mapped pages of about two batches of both files (8 MiB), and a few
  // 512 x 512 float64 matrices (2 MiB each). Mapping the files without handing pages back adds 128 MiB.
  EXPECT_LT(detail::status_mib("VmHWM") - before, 48.0);
}

TEST(Study, AlignPairOnRectangularBlocksMatchesTheSmallerSide) {
  // 3 units of A, 2 of B: two pairs; unit 2 of A stays unmatched and counts as not the same.
  const std::vector<double> corr = {0.9, 0.1, 0.2, 0.8, 0.85, 0.3};
  auto backend = make_backend(BackendChoice::cpu);
  const PairAlignment p = align_pair(*backend, MatrixView<const double>(corr.data(), 3, 2));
  EXPECT_EQ(p.semi_match, (std::vector<std::int64_t>{0, 1, 0}));
  EXPECT_EQ(p.matching.row_to_col, (std::vector<std::int64_t>{0, 1, -1}));
  EXPECT_DOUBLE_EQ(p.matching_total_corr, 1.7);
  EXPECT_DOUBLE_EQ(p.matching_mean_corr, 0.85);
  EXPECT_DOUBLE_EQ(p.semi_mean_corr, (0.9 + 0.8 + 0.85) / 3);
  EXPECT_DOUBLE_EQ(p.same_assignment_fraction, 2.0 / 3.0);
}

}  // namespace
}  // namespace convergent

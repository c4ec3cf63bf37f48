// Statistics files: shards of every size merge to the one-pass Moments, the file keeps Moments bit for bit,
// damaged, cut-short and mismatched files are clear errors, and stats + merge + align --from-stats gives
// the summary.json that align gives.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "convergent/error.hpp"
#include "convergent/stats_file.hpp"
#include "io/npz.hpp"
#include "test_analysis_util.hpp"
#include "test_util.hpp"
#include "summary_compare.hpp"

namespace convergent {
namespace {

using testing::Data;
using testing::ScratchDir;

// ReLU-like units on a large offset (the case where raw sums lose digits), two nets of 3 and 4 units.
Data relu_rows(std::int64_t rows, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Data d(rows, 7);
  for (std::int64_t r = 0; r < rows; ++r) {
    const double shared = normal(rng);
    for (std::int64_t u = 0; u < 7; ++u) d(r, u) = 1e3 + std::max(0.0, shared * (u % 3) + normal(rng));
  }
  return d;
}

// The float64 oracle's Moments of rows [begin, end) as a stats shard (one row per input).
StatsFile shard(const Data& d, std::int64_t begin, std::int64_t end) {
  StatsFile s;
  s.study.nets = {NetInfo{"a", "a.npy", {d.rows, 3}, DType::float64, 3, 0}, NetInfo{"b", "b.npy", {d.rows, 4}, DType::float64, 4, 3}};
  s.study.inputs = d.rows;
  s.range = {begin, end};
  s.backend = "oracle";
  // An empty range has the Moments of no sample (moments_of would divide by zero).
  s.moments = begin == end ? Moments({3, 4})
                           : moments_of(MatrixView<const double>(d.v.data() + begin * d.cols, end - begin, d.cols), {3, 4});
  return s;
}

// Float64 rounding of a Chan merge: each merge adds a few roundings of the comoment's own size, so the
// bound is relative to the diagonal (sqrt(M_ii M_jj)) and to the mean's magnitude; 1e-12 allows for a
// few hundred such roundings (2.2e-16 each) with room to spare.
void expect_moments_near(const Moments& got, const Moments& want, const std::string& what) {
  ASSERT_EQ(got.samples, want.samples) << what;
  for (std::int64_t i = 0; i < want.units(); ++i) {
    EXPECT_NEAR(got.mean[i], want.mean[i], 1e-12 * std::abs(want.mean[i])) << what << " unit " << i;
    EXPECT_EQ(got.min[i], want.min[i]) << what;
    EXPECT_EQ(got.max[i], want.max[i]) << what;
    for (std::int64_t j = 0; j < want.units(); ++j)
      EXPECT_NEAR(got.covariance(i, j), want.covariance(i, j),
                  1e-12 * std::sqrt(want.covariance(i, i) * want.covariance(j, j)))
          << what << " entry " << i << ", " << j;
  }
  testing::expect_norm_sums_near(got, want, 1e-11, what);  // the debiased CKA's sums, moved at every merge
}

TEST(StatsFile, ShardsOfEverySizeMergeToTheOnePassMoments) {
  const std::int64_t n = 23;
  const Data d = relu_rows(n, 5);
  const Moments whole = shard(d, 0, n).moments;
  // Two shards split at every point (empty and single-sample shards at both ends) ...
  for (std::int64_t split = 0; split <= n; ++split) {
    const StatsFile merged = merge_stats({shard(d, split, n), shard(d, 0, split)}, {"second.npz", "first.npz"});
    EXPECT_EQ(merged.range.begin, 0);
    EXPECT_EQ(merged.range.end, n);
    expect_moments_near(merged.moments, whole, "split at " + std::to_string(split));
  }
  // ... and n shards of one sample, with empty ones between them.
  std::vector<StatsFile> singles;
  std::vector<std::string> names;
  for (std::int64_t r = 0; r < n; ++r) {
    singles.push_back(shard(d, r, r + 1));
    singles.push_back(shard(d, r + 1, r + 1));
    names.push_back("one" + std::to_string(r) + ".npz");
    names.push_back("empty" + std::to_string(r) + ".npz");
  }
  expect_moments_near(merge_stats(singles, names).moments, whole, "single-sample shards");
}

TEST(StatsFile, MergeDoesNotDependOnTheOrderOfItsArguments) {
  const Data d = relu_rows(40, 6);
  std::vector<StatsFile> shards{shard(d, 0, 7), shard(d, 7, 8), shard(d, 8, 30), shard(d, 30, 40)};
  std::vector<std::string> names{"p0", "p1", "p2", "p3"};
  const StatsFile sorted = merge_stats(shards, names);
  std::reverse(shards.begin(), shards.end());
  std::reverse(names.begin(), names.end());
  const StatsFile reversed = merge_stats(shards, names);
  // Sorted by range before merging, so the same float64 operations run: bit for bit.
  EXPECT_EQ(sorted.moments.mean, reversed.moments.mean);
  EXPECT_EQ(sorted.moments.exponent, reversed.moments.exponent);
  EXPECT_TRUE(std::equal(sorted.moments.comoment.data(), sorted.moments.comoment.data() + 49, reversed.moments.comoment.data()));
}

TEST(StatsFile, BytesKeepTheMomentsBitForBit) {
  const Data d = relu_rows(30, 7);
  for (const auto& [begin, end] : {std::pair<std::int64_t, std::int64_t>{0, 30}, {4, 4}, {9, 10}}) {
    StatsFile s = shard(d, begin, end);
    s.study.layout = Layout::channels_last;
    s.study.skip_nonfinite_rows = true;
    s.skipped_rows = 0;
    s.moments.exponent = {-3, 0, 7, 1, -1022, 2, 1023};  // every stored exponent comes back
    const StatsFile back = parse_stats("s.npz", stats_bytes(s, "test"));
    EXPECT_EQ(back.moments.samples, s.moments.samples);
    EXPECT_EQ(back.moments.net_units, s.moments.net_units);
    EXPECT_EQ(back.moments.mean, s.moments.mean);
    EXPECT_EQ(back.moments.min, s.moments.min);  // +inf for the empty range
    EXPECT_EQ(back.moments.max, s.moments.max);
    EXPECT_EQ(back.moments.exponent, s.moments.exponent);
    EXPECT_TRUE(std::equal(s.moments.comoment.data(), s.moments.comoment.data() + 49, back.moments.comoment.data()));
    // The norm sums of the debiased CKA: 2 x 2 and 7 x 2 (two nets).
    EXPECT_TRUE(std::equal(s.moments.sqnorm_comoment.data(), s.moments.sqnorm_comoment.data() + 4,
                           back.moments.sqnorm_comoment.data()));
    EXPECT_TRUE(std::equal(s.moments.unit_sqnorm_comoment.data(), s.moments.unit_sqnorm_comoment.data() + 14,
                           back.moments.unit_sqnorm_comoment.data()));
    EXPECT_EQ(back.range.begin, begin);
    EXPECT_EQ(back.range.end, end);
    EXPECT_EQ(back.study.layout, Layout::channels_last);
    EXPECT_TRUE(back.study.skip_nonfinite_rows);
    EXPECT_EQ(back.study.nets[1].name, "b");
    EXPECT_EQ(back.study.nets[1].offset, 3);
    EXPECT_EQ(back.study.nets[0].shape, (std::vector<std::int64_t>{30, 3}));
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_ERROR(call, text)                                                       \
  do {                                                                                 \
    const std::string message = error_of([&] { call; });                               \
    EXPECT_NE(message.find(text), std::string::npos) << "expected '" << (text) << "' in: " << message; \
  } while (0)

TEST(StatsFile, DamagedAndCutShortFilesAreClearErrors) {
  const std::string good = stats_bytes(shard(relu_rows(20, 8), 0, 20), "test");
  // Cut at every length: each is refused, never read as Moments.
  for (std::size_t keep = 0; keep < good.size(); ++keep)
    EXPECT_THROW(parse_stats("cut.npz", good.substr(0, keep)), Error) << keep << " bytes";
  EXPECT_ERROR(parse_stats("cut.npz", good.substr(0, good.size() / 2)), "cut.npz: truncated");
  EXPECT_ERROR(parse_stats("x.npz", "mean,std\n1,2\n"), "x.npz: not a convergent stats file");
  // One flipped bit in any member's data fails that member's CRC-32.
  for (const char* member : {"\"samples\"", "\x93NUMPY"}) {
    std::string bad = good;
    bad[bad.find(member) + 3] ^= 0x10;
    EXPECT_ERROR(parse_stats("bad.npz", bad), "fails its CRC-32 check");
  }
  std::string bad = good;
  bad[bad.rfind("\x93NUMPY") + 130] ^= 0x01;  // inside the comoment's data (the last member; 128-byte header)
  EXPECT_ERROR(parse_stats("bad.npz", bad), "bad.npz: member 'comoment.npy' fails its CRC-32 check");
}

// Rewrites header.json (with a valid CRC, as a careless edit would).
std::string with_header(const std::string& bytes, const std::string& from, const std::string& to) {
  std::vector<NpzMember> members = parse_npz("x", bytes);
  std::string& header = members.front().bytes;
  const auto at = header.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  header.replace(at, from.size(), to);
  return npz_bytes(members);
}

TEST(StatsFile, WrongVersionsAndInconsistentHeadersAreRefused) {
  const std::string good = stats_bytes(shard(relu_rows(20, 8), 0, 20), "test");
  EXPECT_ERROR(parse_stats("v.npz", with_header(good, "\"format_version\": 1", "\"format_version\": 2")),
               "v.npz: stats format version 2; this convergent reads 1");
  EXPECT_ERROR(parse_stats("h.npz", with_header(good, "\"samples\": 20", "\"samples\": 19")), "do not add up");
  EXPECT_ERROR(parse_stats("u.npz", with_header(good, "\"units\": 4", "\"units\": 5")),
               "u.npz: mean.npy: float64 (7,), expected little-endian C-order float64 (8,)");
}

TEST(StatsFile, MergeRefusesOtherStudiesOverlapsAndGaps) {
  const Data d = relu_rows(20, 9);
  StatsFile other = shard(d, 10, 20);
  other.study.precision = Precision::tf32;
  EXPECT_ERROR(merge_stats({shard(d, 0, 10), other}, {"a.npz", "b.npz"}),
               "b.npz: a shard of another study than a.npz (precision \"fp32\" against \"tf32\")");
  other = shard(d, 10, 20);
  other.study.nets[1].name = "c";
  EXPECT_ERROR(merge_stats({shard(d, 0, 10), other}, {"a.npz", "b.npz"}), "b.npz: a shard of another study");
  other = shard(d, 10, 20);
  other.study.nets[1].path = "/elsewhere/b.npy";  // the same file on another machine merges
  EXPECT_EQ(merge_stats({shard(d, 0, 10), other}, {"a.npz", "b.npz"}).moments.samples, 20);
  EXPECT_ERROR(merge_stats({shard(d, 0, 12), shard(d, 10, 20)}, {"a.npz", "b.npz"}),
               "b.npz: inputs 10:20 overlap those of a.npz (up to 12)");
  EXPECT_ERROR(merge_stats({shard(d, 12, 20), shard(d, 0, 10)}, {"b.npz", "a.npz"}),
               "a.npz ends at input 10 but b.npz starts at 12: inputs 10:12 are in no shard");
  EXPECT_ERROR(study_of(shard(d, 0, 15), "part.npz"), "part.npz: covers inputs 0:15 of the study's 20");
}

// ---- The command line: stats, merge and align --from-stats against align on the files.

using testing::run_cli;

using testing::expect_same_summary;
using testing::write_conv;

TEST(StatsCli, ShardedStatsMergeToTheSummaryOfOnePass) {
  ScratchDir dir;
  write_conv(dir.file("n1.npy"), 50, 6, 1);
  write_conv(dir.file("n2.npy"), 50, 5, 2);
  const std::string nets = dir.file("n1.npy") + " " + dir.file("n2.npy") + " --backend cpu --batch-rows 24";
  auto r = run_cli("align " + nets + " --out " + dir.file("direct") + " --no-report --clusters 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // --rows counts images (50), each 6 sample rows: an empty shard, a one-image shard, and uneven ones.
  const std::vector<std::string> ranges{"0:0", "0:1", "1:17", "17:17", "17:49", "49:50"};
  std::string shards;
  for (std::size_t k = 0; k < ranges.size(); ++k) {
    const std::string file = dir.file("s" + std::to_string(k) + ".npz");
    r = run_cli("stats " + nets + " --rows " + ranges[k] + " --out " + file);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    shards = file + " " + shards;  // given in reverse: merge sorts them
  }
  const std::string s2 = read_file_bytes(dir.file("s2.npz"));
  const nlohmann::json header = nlohmann::json::parse(parse_npz("s", s2).front().bytes);
  EXPECT_EQ(header["samples"], 16 * 6);
  EXPECT_EQ(header["inputs"], nlohmann::json({1, 17}));
  r = run_cli("merge " + shards + " --out " + dir.file("all.npz"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_cli("align --from-stats " + dir.file("all.npz") + " --out " + dir.file("from_stats") +
              " --no-report --clusters 3 --backend cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same_summary(dir.file("from_stats/summary.json"), dir.file("direct/summary.json"));
  // Mutual information needs the activations: skipped with a note under "all", an error when named.
  const auto summary = nlohmann::json::parse(std::ifstream(dir.file("from_stats/summary.json")));
  ASSERT_EQ(summary["skipped_analyses"].size(), 1u);
  EXPECT_EQ(summary["skipped_analyses"][0]["name"], "mutual_information");
  EXPECT_FALSE(summary.contains("mutual_information"));
  r = run_cli("align --from-stats " + dir.file("all.npz") + " --out " + dir.file("mi") +
              " --analyses mutual_information,cka --no-report");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("mutual_information needs a second pass over the activations"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("mi")));
}

TEST(StatsCli, MistakesAreClearErrorsAndWriteNothing) {
  ScratchDir dir;
  testing::write_random(dir.file("x.npy"), 30, 3, 1);
  testing::write_random(dir.file("y.npy"), 30, 4, 2);
  testing::write_random(dir.file("z.npy"), 30, 5, 3);
  const std::string xy = dir.file("x.npy") + " " + dir.file("y.npy");
  ASSERT_EQ(run_cli("stats " + xy + " --rows 0:10 --out " + dir.file("a.npz")).exit_code, 0);
  ASSERT_EQ(run_cli("stats " + xy + " --rows 20:30 --out " + dir.file("c.npz")).exit_code, 0);
  ASSERT_EQ(run_cli("stats " + dir.file("x.npy") + " " + dir.file("z.npy") + " --rows 10:20 --out " + dir.file("z.npz")).exit_code, 0);
  std::string cut = read_file_bytes(dir.file("a.npz"));
  std::ofstream(dir.file("cut.npz"), std::ios::binary) << cut.substr(0, cut.size() - 100);
  const struct {
    std::string arguments, message;
  } cases[] = {
      {"stats " + xy + " --rows 0:31 --out " + dir.file("o.npz"), "x.npy: inputs 0:31 are not a range within its 30 inputs"},
      {"stats " + xy + " --rows 5 --out " + dir.file("o.npz"), "--rows '5': expected BEGIN:END"},
      {"merge " + dir.file("a.npz") + " " + dir.file("c.npz") + " --out " + dir.file("o.npz"), "inputs 10:20 are in no shard"},
      {"merge " + dir.file("a.npz") + " " + dir.file("z.npz") + " --out " + dir.file("o.npz"), "z.npz: a shard of another study than"},
      {"merge " + dir.file("a.npz") + " " + dir.file("cut.npz") + " --out " + dir.file("o.npz"), "cut.npz: truncated"},
      {"merge " + dir.file("a.npz") + " " + dir.file("x.npy") + " --out " + dir.file("o.npz"), "x.npy: not a convergent stats file"},
      {"merge " + dir.file("a.npz") + " " + dir.path().string() + " --out " + dir.file("o.npz"), "a directory, not a file"},
      {"align --from-stats " + dir.file("a.npz") + " --out " + dir.file("out"), "a.npz: covers inputs 0:10 of the study's 30"},
      {"align --from-stats " + dir.file("a.npz") + " --skip-nonfinite --out " + dir.file("out"), "excludes"},
  };
  for (const auto& c : cases) {
    const auto r = run_cli(c.arguments);
    EXPECT_EQ(r.exit_code, 1) << c.arguments << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << "expected '" << c.message << "' in: " << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("o.npz")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("out")));
}

}  // namespace
}  // namespace convergent

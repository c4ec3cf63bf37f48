// The command line: outputs that numpy/pandas read, and bad input that exits non-zero with a message
// naming the file and leaves no partial output behind.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "io/npy.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::files_in;
using testing::run_cli;
using testing::ScratchDir;

TEST(Cli, AlignWritesEveryOutputForThreeNets) {
  ScratchDir dir;
  testing::write_random(dir.file("n1.npy"), 100, 4, 1);
  testing::write_random(dir.file("n2.npy"), 100, 5, 2);
  testing::write_random(dir.file("x.npy"), 100, 3, 3);
  const auto r = run_cli("align " + dir.file("n1.npy") + " " + dir.file("n2.npy") + " third=" + dir.file("x.npy") +
                         " --out " + dir.file("out") + " --batch-rows 33 --backend cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto summary = nlohmann::json::parse(std::ifstream(dir.file("out/summary.json")));
  EXPECT_EQ(summary["samples"], 100);
  ASSERT_EQ(summary["nets"].size(), 3u);
  EXPECT_EQ(summary["nets"][2]["name"], "third");
  EXPECT_EQ(summary["nets"][1]["units"], 5);
  EXPECT_EQ(summary["nets"][1]["mean"].size(), 5u);
  EXPECT_EQ(summary["pairs"].size(), 3u);  // n1-n2, n1-third, n2-third
  EXPECT_EQ(summary["pairs"][1]["b"], "third");
  EXPECT_EQ(summary["pairs"][0]["matching"]["pairs"], 4);
  for (const char* name : {"corr_n1.npy", "corr_n2.npy", "corr_third.npy", "corr_n1_n2.npy", "corr_n1_third.npy",
                           "corr_n2_third.npy", "matching_n1_n2.csv", "semi_n2_third.csv"})
    EXPECT_TRUE(std::filesystem::exists(dir.file(std::string("out/") + name))) << name;
  MappedNpy corr(dir.file("out/corr_n1_n2.npy"));
  EXPECT_EQ(corr.header().shape, (std::vector<std::int64_t>{4, 5}));
  std::ifstream csv(dir.file("out/matching_n1_n2.csv"));
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "unit_a,unit_b,corr");
  int lines = 0;
  for (std::string line; std::getline(csv, line);) ++lines;
  EXPECT_EQ(lines, 4);
  // No temporary files are left behind.
  for (const auto& name : files_in(dir.file("out"))) EXPECT_EQ(name.find(".partial"), std::string::npos) << name;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Two nets whose units come from 3 shared latent groups: spectral clustering finds 3 mixed clusters.
void write_grouped(const std::string& path, std::int64_t rows, std::int64_t units, std::uint64_t seed) {
  std::mt19937_64 shared(42), own(seed);
  // One distribution per engine: a distribution may cache values between calls.
  std::normal_distribution<float> shared_normal, own_normal;
  std::vector<float> v(static_cast<std::size_t>(rows * units));
  for (std::int64_t r = 0; r < rows; ++r) {
    float latent[3];
    for (float& l : latent) l = shared_normal(shared);
    for (std::int64_t u = 0; u < units; ++u) v[r * units + u] = latent[u % 3] + 0.5f * own_normal(own);
  }
  testing::write_array(path, v, {rows, units});
}

TEST(Cli, AlignClustersUnitsOfAllNets) {
  ScratchDir dir;
  write_grouped(dir.file("p.npy"), 400, 9, 1);
  write_grouped(dir.file("q.npy"), 400, 6, 2);
  const std::string nets = dir.file("p.npy") + " " + dir.file("q.npy");
  const auto r = run_cli("align " + nets + " --clusters 3 --seed 7 --out " + dir.file("out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto spectral = nlohmann::json::parse(std::ifstream(dir.file("out/summary.json")))["spectral"];
  EXPECT_EQ(spectral["k"], 3);
  EXPECT_EQ(spectral["k_rule"], "given");
  EXPECT_EQ(spectral["cluster_sizes"], (std::vector<int>{5, 5, 5}));  // units u % 3 of both nets together
  EXPECT_DOUBLE_EQ(spectral["mixed_share"].get<double>(), 1.0);
  EXPECT_EQ(spectral["clusters"][0]["units_per_net"]["p"], 3);
  EXPECT_EQ(spectral["clusters"][0]["units_per_net"]["q"], 2);
  // clusters.csv lists units in cluster order, the order of corr_clustered.npy's rows.
  const std::string csv = read_text(dir.file("out/clusters.csv"));
  EXPECT_EQ(csv.substr(0, csv.find('\n', csv.find('\n') + 1) + 1), "net,unit,cluster\np,0,0\n");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 16);  // header + 15 units
  MappedNpy clustered(dir.file("out/corr_clustered.npy"));
  EXPECT_EQ(clustered.header().shape, (std::vector<std::int64_t>{15, 15}));
  // Same seed, same clusters; the eigengap rule finds the planted 3 by itself.
  const auto again = run_cli("align " + nets + " --seed 7 --out " + dir.file("again"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(read_text(dir.file("again/clusters.csv")), csv);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(dir.file("again/summary.json")))["spectral"]["k_rule"], "eigengap");
}

TEST(Cli, TooManyClustersIsAnErrorAndWritesNothing) {
  ScratchDir dir;
  write_grouped(dir.file("p.npy"), 100, 4, 1);
  write_grouped(dir.file("q.npy"), 100, 4, 2);
  const auto r = run_cli("align " + dir.file("p.npy") + " " + dir.file("q.npy") + " --clusters 9 --out " + dir.file("out"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("8 live units"), std::string::npos) << r.output;
  EXPECT_TRUE(files_in(dir.file("out")).empty());
  const auto none = run_cli("align " + dir.file("p.npy") + " " + dir.file("q.npy") + " --clusters none --out " + dir.file("n"));
  ASSERT_EQ(none.exit_code, 0) << none.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("n/clusters.csv")));
}

TEST(Cli, VersionListsBackends) {
  const auto r = run_cli("--version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("cpu: compiled, usable"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cuda: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("mpi: "), std::string::npos) << r.output;
}

TEST(Cli, MatchReadsACorrelationMatrix) {
  ScratchDir dir;
  // Fortran order, float64: rows = A units. Best one-to-one: (0,1), (1,0), (2,2).
  const std::vector<double> column_major = {0.1, 0.9, 0.0, 0.8, 0.7, 0.0, 0.0, 0.0, 0.5};
  testing::write_array(dir.file("corr.npy"), column_major, {3, 3}, true);
  const auto r = run_cli("match " + dir.file("corr.npy") + " --out " + dir.file("m"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream csv(dir.file("m/matching_a_b.csv"));
  std::string text((std::istreambuf_iterator<char>(csv)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "unit_a,unit_b,corr\n0,1,0.80000000000000004\n1,0,0.90000000000000002\n2,2,0.5\n");
  const auto summary = nlohmann::json::parse(std::ifstream(dir.file("m/summary.json")));
  EXPECT_DOUBLE_EQ(summary["pairs"][0]["matching"]["total_corr"].get<double>(), 2.2);
}

// Each bad input: non-zero exit, the message names the file and the problem, DIR holds nothing.
struct BadInput {
  std::string name;
  std::string expected_message;
};

void PrintTo(const BadInput& input, std::ostream* os) { *os << input.name; }

class CliBadInput : public ::testing::TestWithParam<BadInput> {};

TEST_P(CliBadInput, FailsCleanly) {
  ScratchDir dir;
  testing::write_random(dir.file("good.npy"), 50, 3, 1);
  const std::string bad = dir.file("bad.npy");
  const std::string& kind = GetParam().name;
  std::string extra_args;
  std::string out = dir.file("out");
  std::vector<float> values(150, 1.0f);
  if (kind == "missing") {
    // bad.npy is never written
  } else if (kind == "not_npy") {
    std::ofstream(bad) << "1,2,3\n";
  } else if (kind == "truncated") {
    testing::write_raw_npy(bad, "<f4", false, "(50, 3)", values.data(), 100 * 4);
  } else if (kind == "int_dtype") {
    testing::write_raw_npy(bad, "<i8", false, "(50, 3)", values.data(), 150 * 4);
  } else if (kind == "complex_dtype") {
    testing::write_raw_npy(bad, "<c8", false, "(50, 3)", values.data(), 150 * 4);
  } else if (kind == "object_dtype") {
    testing::write_raw_npy(bad, "|O", false, "(50, 3)", values.data(), 150 * 4);
  } else if (kind == "lying_header") {
    testing::write_raw_npy(bad, "<f4", false, "(40, 3)", values.data(), 150 * 4);
  } else if (kind == "sample_mismatch") {
    testing::write_array(bad, std::vector<float>(49 * 3, 1.0f), {49, 3});
  } else if (kind == "nan") {
    values[3 * 17 + 2] = std::nanf("");
    testing::write_array(bad, values, {50, 3});
  } else if (kind == "one_sample") {
    testing::write_array(bad, std::vector<float>(3, 1.0f), {1, 3});
    testing::write_array(dir.file("good.npy"), std::vector<float>(3, 2.0f), {1, 3});
  } else if (kind == "zero_units") {
    testing::write_array(bad, std::vector<float>{}, {50, 0});
  } else if (kind == "unwritable_out") {
    testing::write_array(bad, values, {50, 3});
    out = dir.file("good.npy") + "/out";  // a directory can't be made under a regular file, even by root
  } else if (kind == "name_collision") {
    testing::write_random(dir.file("sub_good.npy"), 50, 3, 2);
    std::filesystem::create_directories(dir.file("sub"));
    std::filesystem::rename(dir.file("sub_good.npy"), dir.file("sub/good.npy"));
    extra_args = " " + dir.file("sub/good.npy");
  }
  const std::string second = kind == "name_collision" ? "" : " " + bad;
  const auto r = run_cli("align " + dir.file("good.npy") + second + extra_args + " --out " + out);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(GetParam().expected_message), std::string::npos)
      << "expected '" << GetParam().expected_message << "' in: " << r.output;
  EXPECT_TRUE(files_in(dir.file("out")).empty()) << "partial output left behind";
  // The job made DIR, so a failed job removes it again (unwritable_out never made it).
  EXPECT_FALSE(std::filesystem::exists(dir.file("out"))) << "empty output directory left behind";
}

INSTANTIATE_TEST_SUITE_P(
    Cli, CliBadInput,
    ::testing::Values(BadInput{"missing", "bad.npy: cannot open: No such file or directory"},
                      BadInput{"not_npy", "bad.npy: not an .npy file"},
                      BadInput{"truncated", "bad.npy: truncated"},
                      BadInput{"int_dtype", "bad.npy: unsupported dtype '<i8'"},
                      BadInput{"complex_dtype", "bad.npy: unsupported dtype '<c8'"},
                      BadInput{"object_dtype", "bad.npy: unsupported dtype '|O'"},
                      BadInput{"lying_header", "bad.npy: header does not match the file"},
                      BadInput{"sample_mismatch", "bad.npy: 49 samples, but"},
                      BadInput{"nan", "bad.npy: NaN or infinity at sample row 17, unit 2"},
                      BadInput{"one_sample", "1 sample(s); correlations need at least 2"},
                      BadInput{"zero_units", "bad.npy: shape (50, 0) has zero units"},
                      BadInput{"unwritable_out", "good.npy/out: cannot create the output directory"},
                      BadInput{"name_collision", "two nets are named 'good'"}),
    [](const ::testing::TestParamInfo<BadInput>& info) { return info.param.name; });

// A directory as --out of stats or merge (one file each) failed only at the final rename, after the pass.
TEST(Cli, AnOutputFileThatIsADirectoryIsRefusedBeforeTheWork) {
  ScratchDir dir;
  testing::write_random(dir.file("x.npy"), 40, 3, 1);
  testing::write_random(dir.file("y.npy"), 40, 3, 2);
  std::filesystem::create_directories(dir.file("taken"));
  const std::string nets = dir.file("x.npy") + " " + dir.file("y.npy");
  ASSERT_EQ(run_cli("stats " + nets + " --out " + dir.file("s.npz")).exit_code, 0);
  for (const std::string& arguments : {"stats " + nets, "merge " + dir.file("s.npz")}) {
    const auto r = run_cli(arguments + " --out " + dir.file("taken"));
    EXPECT_EQ(r.exit_code, 1) << arguments << "\n" << r.output;
    EXPECT_NE(r.output.find(dir.file("taken") + ": is a directory; --out names the file to write"), std::string::npos)
        << arguments << "\n" << r.output;
  }
}

// A FIFO given as an input (a stale named pipe, a typo) is refused at once: opening it waited for a writer
// forever. `timeout` turns a regression into a failure instead of a hung suite.
TEST(Cli, AFifoIsRefusedInsteadOfWaitedOn) {
  ScratchDir dir;
  testing::write_random(dir.file("x.npy"), 40, 3, 1);
  const std::string fifo = dir.file("pipe.npy");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string cli = "timeout 60 " + std::string(CONVERGENT_CLI_PATH) + " ";
  for (const std::string& arguments :
       {"align " + fifo + " " + dir.file("x.npy") + " --out " + dir.file("out"), "match " + fifo + " --out " + dir.file("out"),
        "merge " + fifo + " --out " + dir.file("all.npz"), "align --from-stats " + fifo + " --out " + dir.file("out")}) {
    const auto r = testing::run_shell(cli + arguments);
    EXPECT_EQ(r.exit_code, 1) << arguments << "\n" << r.output;
    EXPECT_NE(r.output.find(fifo + ": cannot read: not a regular file"), std::string::npos) << arguments << "\n" << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir.file("out"))) << arguments;
    EXPECT_FALSE(std::filesystem::exists(dir.file("all.npz"))) << arguments;
  }
}

}  // namespace
}  // namespace convergent

namespace convergent {
namespace {

// Mistakes found by trying the tool as a new user: each stops before any work, names the problem, and
// leaves no output directory behind.
TEST(Cli, UserMistakesAreRefusedBeforeAnyWork) {
  ScratchDir dir;
  testing::write_random(dir.file("x.npy"), 40, 3, 1);
  testing::write_random(dir.file("y.npy"), 40, 3, 2);
  testing::write_random(dir.file("z.npy"), 40, 3, 3);
  testing::write_array(dir.file("t1.npy"), std::vector<float>(10 * 4 * 20, 1.0f), {10, 4, 20});
  testing::write_array(dir.file("t2.npy"), std::vector<float>(20 * 4 * 10, 1.0f), {20, 4, 10});
  testing::write_array(dir.file("big.npy"), std::vector<double>{0.5, 1.5, -0.2, 0.1}, {2, 2});
  testing::write_array(dir.file("inf.npy"), std::vector<double>{0.5, INFINITY, -0.2, 0.1}, {2, 2});
  testing::write_array(dir.file("ok.npy"), std::vector<double>{0.5, 0.4, -0.2, 0.1}, {2, 2});
  const std::string x = dir.file("x.npy"), y = dir.file("y.npy"), z = dir.file("z.npy");
  const struct {
    std::string arguments;
    std::string message;
  } cases[] = {
      // The pair (a, b) and the net a_b would both write corr_a_b.npy.
      {"align a=" + x + " b=" + y + " a_b=" + z, "the pair of nets 'a' and 'b' would both write files named *_a_b.*"},
      {"align .=" + x + " b=" + y, "net name '.' must use only letters"},
      // A file stem that is no net name (a space, an accent) says how to name the net instead.
      {"align '" + dir.file("my net.npy") + "' " + y,
       "net name 'my net' must use only letters, digits, '_', '-' and '.', and must not start with '.'; name the "
       "net with NAME=PATH, e.g. net1=" + dir.file("my net.npy")},
      {"align " + dir.file("t1.npy") + " " + dir.file("t2.npy"),
       "t2.npy: 20 inputs of 10 positions, but " + dir.file("t1.npy") + " has 10 inputs of 20"},
      {"align " + x + " " + y + " --dead-threshold nan", "the dead-unit threshold must be in [0, 1), not nan"},
      {"match " + dir.file("ok.npy") + " --name-a ../up", "--name-a: net name '../up' must use only"},
      {"match " + dir.file("ok.npy") + " --name-a p --name-b p", "--name-a and --name-b are both 'p'"},
      {"match " + dir.file("big.npy"), "big.npy: 1.500000 at row 0, column 1 is not a correlation"},
      {"match " + dir.file("inf.npy"), "inf.npy: an infinity at row 0, column 1"},
      // Command-line mistakes exit 1 like any bad input (CLI11's own codes are 105 and up).
      {"align " + x, "align needs at least two nets (or --from-stats FILE)"},
      {"stats " + x, "stats needs at least two nets"},
      // One path beside --from-stats was 'nets: At least 2 required but received 1'.
      {"align --from-stats " + x + " " + y, "nets excludes --from-stats"},
      {"align " + x + " " + y + " --threads -3", "--threads: Value -3 not in range 0 to 4096"},
      // CLI11 alone took -1 as 2^64 - 1 and 2^64 as 2^64 - 1, without a word.
      {"align " + x + " " + y + " --seed -1", "--seed: expected a whole number from 0 to 18446744073709551615, not '-1'"},
      {"align " + x + " " + y + " --seed 18446744073709551616", "not '18446744073709551616'"},
      // An empty list or entry ran fewer analyses than asked for, without a word.
      {"align " + x + " " + y + " --analyses ''", "--analyses is empty; expected all, none or a comma-separated list of"},
      {"align " + x + " " + y + " --analyses reliability,,cca", "--analyses 'reliability,,cca': an empty entry"},
      {"align " + x + " " + y + " --analyses none,cca", "--analyses 'none,cca': none stands alone"},
      {"align " + x + " " + y + " --analyses all,cka", "unknown analysis 'cka'"},
      {"align " + x + " " + y + " --analyses mutual_informaton",
       "unknown analysis 'mutual_informaton'; expected all, none or a comma-separated list of sparse_prediction,"
       "reliability,mean_distributions,linear_cka,cca,svcca,pwcca,procrustes,mutual_information"},
      {"align " + x + " " + y + " --lasso-alpha 0.1,,0.3", "--lasso-alpha: '' is not a positive number"},
      // A whole number of MiB: the range was given in floats (0.001 to 1e9) on an integer option.
      {"align " + x + " " + y + " --mi-memory 0", "--mi-memory: Value 0 not in range 1 to 1000000000"},
  };
  int n = 0;
  for (const auto& c : cases) {
    const std::string out = dir.file("out" + std::to_string(n++));
    const auto r = run_cli(c.arguments + " --out " + out);
    EXPECT_EQ(r.exit_code, 1) << c.arguments << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.arguments << "\n" << r.output;
    EXPECT_FALSE(std::filesystem::exists(out)) << c.arguments;
  }
}

}  // namespace
}  // namespace convergent

// mpirun -np 2 and -np 3 (oversubscribed on a small machine) against one process: the same summary.json,
// and a failure on one rank stops every rank with that rank's message and writes nothing.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/npz.hpp"
#include "summary_compare.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::run_cli;
using testing::ScratchDir;

#ifdef CONVERGENT_MPIEXEC
// As root, OpenMPI wants these two variables; --oversubscribe lets 3 ranks share 2 cores.
testing::CliResult run_mpi(int ranks, const std::string& arguments) {
  const std::string launcher = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " +
                               std::string(CONVERGENT_MPIEXEC) + " --oversubscribe -np " + std::to_string(ranks) + " " +
                               CONVERGENT_CLI_PATH;
  return testing::run_shell(launcher + " " + arguments);
}

TEST(Mpi, RanksGiveTheSummaryOfOneProcess) {
  ScratchDir dir;
  // 50 images: ranks take 25/25 and 16/17/17 of them.
  testing::write_conv(dir.file("n1.npy"), 50, 6, 1);
  testing::write_conv(dir.file("n2.npy"), 50, 5, 2);
  const std::string nets = dir.file("n1.npy") + " " + dir.file("n2.npy") +
                           " --backend cpu --threads 1 --batch-rows 24 --clusters 3 --mi-binning equal-width";
  auto r = run_cli("align " + nets + " --out " + dir.file("one"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int ranks : {2, 3}) {
    const std::string out = dir.file("np" + std::to_string(ranks));
    r = run_mpi(ranks, "align " + nets + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // Mutual information runs its passes on rank 0 over all inputs: exact counts, compared too.
    testing::expect_same_summary(out + "/summary.json", dir.file("one/summary.json"), true);
    EXPECT_TRUE(std::filesystem::exists(out + "/report.html"));
  }
  // Rank 0 merges in rank order, whichever rank finishes first: the same bytes on every run.
  r = run_mpi(3, "align " + nets + " --out " + dir.file("again"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"corr_n1_n2.npy", "matching_n1_n2.csv", "clusters.csv"})
    EXPECT_EQ(read_file_bytes(dir.file("again/") + name), read_file_bytes(dir.file("np3/") + name)) << name;
}

TEST(Mpi, AFailureOnOneRankStopsAllWithItsMessage) {
  ScratchDir dir;
  testing::write_random(dir.file("a.npy"), 90, 3, 1);
  std::vector<float> b(90 * 4, 0.5f);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 7);
  b[80 * 4 + 2] = std::nanf("");  // row 80: in the last of 3 ranks' thirds (60:90)
  testing::write_array(dir.file("b.npy"), b, {90, 4});
  const auto r = run_mpi(3, "align " + dir.file("a.npy") + " " + dir.file("b.npy") + " --backend cpu --threads 1 --out " +
                                dir.file("out"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("convergent: error: rank 2: " + dir.file("b.npy") + ": NaN or infinity at sample row 80, unit 2"),
            std::string::npos)
      << r.output;
  // Printed once (by rank 0), and nothing written.
  EXPECT_EQ(r.output.find("convergent: error:"), r.output.rfind("convergent: error:")) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("out")));
}

TEST(Mpi, OnlyAlignOfActivationsRunsUnderMpirun) {
  ScratchDir dir;
  testing::write_random(dir.file("a.npy"), 20, 3, 1);
  testing::write_random(dir.file("b.npy"), 20, 3, 2);
  auto r = run_mpi(2, "stats " + dir.file("a.npy") + " " + dir.file("b.npy") + " --out " + dir.file("s.npz"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("only align runs under mpirun"), std::string::npos) << r.output;
  ASSERT_EQ(run_cli("stats " + dir.file("a.npy") + " " + dir.file("b.npy") + " --out " + dir.file("s.npz")).exit_code, 0);
  r = run_mpi(2, "align --from-stats " + dir.file("s.npz") + " --out " + dir.file("out"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("align --from-stats runs as one process"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("out")));
}
#else
TEST(Mpi, RanksGiveTheSummaryOfOneProcess) { GTEST_SKIP() << "built without MPI (CONVERGENT_MPI=OFF or not found)"; }
#endif

}  // namespace
}  // namespace convergent

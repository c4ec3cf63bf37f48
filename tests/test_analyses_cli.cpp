// `convergent align` with the analyses of issue 11: their files and summary.json sections, --analyses
// and --lasso-alpha, and bad lists refused before any output.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_analysis_util.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::ScratchDir;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Three nets of 300 samples with shared factors; net c has a dead unit.
void write_nets(const ScratchDir& dir) {
  const testing::Data f = testing::gaussian_data(300, 5, 1);
  for (int k = 0; k < 3; ++k) {
    const std::int64_t units = 5 + k;
    testing::Data x = testing::mix(f, testing::gaussian_data(5, units, 10 + k).v, units);
    const testing::Data noise = testing::gaussian_data(300, units, 20 + k);
    for (std::size_t i = 0; i < x.v.size(); ++i) x.v[i] = std::max(0.0, x.v[i] + 0.5 * noise.v[i]);
    if (k == 2)
      for (std::int64_t r = 0; r < 300; ++r) x(r, 3) = 2.0;
    testing::write_array(dir.file(std::string(1, static_cast<char>('a' + k)) + ".npy"), x.v, {300, units});
  }
}

TEST(AnalysesCli, EveryAnalysisWritesItsFilesAndSections) {
  ScratchDir dir;
  write_nets(dir);
  const auto r = testing::run_cli("align " + dir.file("a.npy") + " " + dir.file("b.npy") + " " + dir.file("c.npy") +
                                  " --out " + dir.file("out") + " --clusters none --lasso-alpha 0.3,0.01");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"sparse_a_b.csv", "sparse_b_a.csv", "sparse_c_b.csv", "units_a.csv", "units_c.csv"})
    EXPECT_TRUE(std::filesystem::exists(dir.file("out/") + name)) << name;
  const auto summary = nlohmann::json::parse(read_file(dir.file("out/summary.json")));
  for (const char* key : {"sparse_prediction", "reliability", "mean_distributions", "linear_cka", "cca", "svcca", "pwcca",
                          "procrustes"})
    EXPECT_TRUE(summary.contains(key)) << key;
  const auto& path = summary["sparse_prediction"]["directions"][0]["path"];
  ASSERT_EQ(path.size(), 2u);
  EXPECT_EQ(path[0]["alpha"], 0.3);  // in the order given
  EXPECT_LE(path[1]["mean_loss"].get<double>(), path[0]["mean_loss"].get<double>());
  EXPECT_EQ(summary["linear_cka"].size(), 3u);
  EXPECT_TRUE(summary["linear_cka"][0].contains("debiased"));  // from the same pass
  EXPECT_EQ(summary["cca"]["pairs"][1]["dead_units_left_out"]["c"], 1);
  EXPECT_EQ(summary["reliability"]["nets"][2]["live_units"], 6);
  EXPECT_EQ(summary["mean_distributions"]["nets"][2]["dead_units_left_out"], 1);
  // units_c.csv: header, then one row per unit (the dead one flagged), one column set per other net.
  const std::string units = read_file(dir.file("out/units_c.csv"));
  EXPECT_EQ(units.substr(0, units.find('\n')),
            "unit,mean,std,dead,semi_a,semi_corr_a,match_a,match_corr_a,semi_b,semi_corr_b,match_b,match_corr_b,"
            "min_semi_corr,min_match_corr,consistent");
  EXPECT_EQ(std::count(units.begin(), units.end(), '\n'), 8);
  EXPECT_NE(units.find("\n3,2.0,0.0,true,-1,0.0,"), std::string::npos) << units;
  const std::string sparse = read_file(dir.file("out/sparse_a_b.csv"));
  EXPECT_EQ(sparse.substr(0, sparse.find('\n')),
            "alpha,unit,loss,nnz,predictor_1,weight_1,predictor_2,weight_2,predictor_3,weight_3");
  EXPECT_EQ(std::count(sparse.begin(), sparse.end(), '\n'), 1 + 2 * 6);  // 2 alphas x 6 units of b
}

TEST(AnalysesCli, SelectionAndBadLists) {
  ScratchDir dir;
  write_nets(dir);
  const std::string nets = "align " + dir.file("a.npy") + " " + dir.file("b.npy") + " --clusters none --out ";
  auto r = testing::run_cli(nets + dir.file("cka") + " --analyses linear_cka");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto summary = nlohmann::json::parse(read_file(dir.file("cka/summary.json")));
  EXPECT_TRUE(summary.contains("linear_cka"));
  EXPECT_FALSE(summary.contains("cca") || summary.contains("sparse_prediction") || summary.contains("reliability"));
  EXPECT_FALSE(std::filesystem::exists(dir.file("cka/units_a.csv")));
  r = testing::run_cli(nets + dir.file("bad") + " --analyses cca,cka");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("unknown analysis 'cka'"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad")));
  r = testing::run_cli(nets + dir.file("bad") + " --lasso-alpha 0.1,0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("'0' is not a positive number"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad")));
}

}  // namespace
}  // namespace convergent

// Same inputs and options, same bytes: `convergent align` run with --threads 1, 2 and 3, and twice with
// the same count, writes byte-identical summary.json (all but its `run` section), CSVs and .npy files.
// CPU against CUDA: the same outputs within the float32 contract of DESIGN.md (skipped without a GPU).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "backend_test.hpp"
#include "io/npy.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::run_cli;
using testing::ScratchDir;

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Every output file of an align run by name; summary.json without its `run` section (the one part that
// may differ, README), re-serialised.
std::map<std::string, std::string> outputs_of(const std::filesystem::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    std::string bytes = read_bytes(entry.path());
    if (name == "summary.json") {
      nlohmann::json summary = nlohmann::json::parse(bytes);
      EXPECT_TRUE(summary.contains("run"));
      summary.erase("run");
      bytes = summary.dump(2);
    }
    files[name] = std::move(bytes);
  }
  return files;
}

// Nets whose units mix `latents` shared factors (ReLU), so that every analysis has structure to find:
// 4-D NCHW when `positions` > 1 (images x units x positions x 1), else 2-D.
void write_shared(const std::string& path, std::int64_t inputs, std::int64_t units, std::int64_t positions,
                  int latents, std::uint64_t seed) {
  std::mt19937_64 shared(7), own(seed);
  std::normal_distribution<float> shared_normal, own_normal;
  std::vector<float> mix(static_cast<std::size_t>(units * latents));
  for (float& m : mix) m = own_normal(own);
  std::vector<float> v(static_cast<std::size_t>(inputs * units * positions));
  std::vector<float> latent(static_cast<std::size_t>(latents));
  for (std::int64_t i = 0; i < inputs; ++i)
    for (std::int64_t p = 0; p < positions; ++p) {
      for (float& l : latent) l = shared_normal(shared);
      for (std::int64_t u = 0; u < units; ++u) {
        float x = 0.6f * own_normal(own);
        for (int l = 0; l < latents; ++l) x += mix[static_cast<std::size_t>(u * latents + l)] * latent[static_cast<std::size_t>(l)];
        v[static_cast<std::size_t>((i * units + u) * positions + p)] = std::max(0.0f, x);
      }
    }
  if (positions > 1)
    testing::write_array(path, v, {inputs, units, positions, 1});
  else
    testing::write_array(path, v, {inputs, units});
}

// Runs `align ARGS --threads T` for T = 1, 2, 3 and once more with 2, and expects every
// output byte for byte equal to that of --threads 1.
void expect_same_bytes_on_any_thread_count(const ScratchDir& dir, const std::string& arguments) {
  std::map<std::string, std::string> first;
  int run = 0;
  for (const std::string threads : {"1", "2", "3", "2"}) {
    const std::string out = dir.file("run" + std::to_string(run++) + "-threads" + threads);
    const auto r = run_cli("align " + arguments + " --threads " + threads + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto files = outputs_of(out);
    if (first.empty()) {
      first = files;
      continue;
    }
    std::set<std::string> names, first_names;
    for (const auto& [name, bytes] : files) names.insert(name);
    for (const auto& [name, bytes] : first) first_names.insert(name);
    EXPECT_EQ(names, first_names) << "--threads " << threads;
    for (const auto& [name, bytes] : first) {
      const auto it = files.find(name);
      if (it == files.end()) continue;
      EXPECT_TRUE(it->second == bytes) << name << " differs between --threads 1 and --threads " << threads;
    }
  }
}

// Every analysis, mutual information included, over three conv nets streamed in several batches.
TEST(Determinism, EveryOutputIsTheSameOnOneTwoAndThreeThreads) {
  ScratchDir dir;
  write_shared(dir.file("n1.npy"), 150, 24, 6, 5, 1);
  write_shared(dir.file("n2.npy"), 150, 20, 6, 5, 2);
  write_shared(dir.file("n3.npy"), 150, 28, 6, 5, 3);
  expect_same_bytes_on_any_thread_count(
      dir, dir.file("n1.npy") + " " + dir.file("n2.npy") + " " + dir.file("n3.npy") +
               " --backend cpu --batch-rows 96 --analyses all,mutual_information --no-report");
}

// Large enough for the paths that thread inside LAPACK and OpenBLAS: spectral clustering of 1400 units
// goes through the block Lanczos solver (products with A in panels), the similarity indices
// through dsyevd/dgesdd on 700 x 700 matrices, sparse prediction through dpotrf on 700 predictors.
TEST(Determinism, LargeLayersAreTheSameOnOneTwoAndThreeThreads) {
  ScratchDir dir;
  write_shared(dir.file("a.npy"), 1500, 700, 1, 30, 4);
  write_shared(dir.file("b.npy"), 1500, 700, 1, 30, 5);
  expect_same_bytes_on_any_thread_count(
      dir, dir.file("a.npy") + " " + dir.file("b.npy") +
               " --backend cpu --analyses sparse_prediction,linear_cka,cca,svcca,pwcca,procrustes --lasso-alpha 0.3"
               " --no-report");
}

// CPU and CUDA on the same inputs: the correlations within 1e-6 (the float32 batch product with float64
// merging, DESIGN.md), means and stds within 1e-6 relative, the matchings' mean correlations within 1e-6,
// linear CKA within 1e-5 (a ratio of sums of squared covariances, each within the same relative error).
TEST(Determinism, CpuAndCudaAgreeWithinTheFloat32Contract) {
  const BackendStatus status = detail::cuda_backend_status({});
  if (!status.usable) {
    if (testing::gpu_required()) FAIL() << "CONVERGENT_REQUIRE_GPU=1 but CUDA is not usable: " << status.detail;
    GTEST_SKIP() << "CUDA backend not usable here (" << status.detail << ")";
  }
  ScratchDir dir;
  write_shared(dir.file("n1.npy"), 150, 24, 6, 5, 1);
  write_shared(dir.file("n2.npy"), 150, 20, 6, 5, 2);
  const std::string nets = dir.file("n1.npy") + " " + dir.file("n2.npy") +
                           " --analyses linear_cka,mean_distributions --clusters none --no-report --out ";
  ASSERT_EQ(run_cli("align " + nets + dir.file("cpu") + " --backend cpu").exit_code, 0);
  const auto r = run_cli("align " + nets + dir.file("cuda") + " --backend cuda");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"corr_n1.npy", "corr_n2.npy", "corr_n1_n2.npy"}) {
    MappedNpy cpu(dir.file(std::string("cpu/") + name)), cuda(dir.file(std::string("cuda/") + name));
    ASSERT_EQ(cpu.header().shape, cuda.header().shape) << name;
    const auto* a = reinterpret_cast<const double*>(cpu.data());
    const auto* b = reinterpret_cast<const double*>(cuda.data());
    for (std::int64_t i = 0; i < cpu.header().shape[0] * cpu.header().shape[1]; ++i)
      ASSERT_NEAR(a[i], b[i], 1e-6) << name << " entry " << i;
  }
  const auto cpu = nlohmann::json::parse(std::ifstream(dir.file("cpu/summary.json")));
  const auto cuda = nlohmann::json::parse(std::ifstream(dir.file("cuda/summary.json")));
  for (std::size_t n = 0; n < cpu["nets"].size(); ++n)
    for (const char* field : {"mean", "std"})
      for (std::size_t u = 0; u < cpu["nets"][n][field].size(); ++u) {
        const double want = cpu["nets"][n][field][u];
        EXPECT_NEAR(cuda["nets"][n][field][u].get<double>(), want, 1e-6 * std::max(1.0, std::abs(want)));
      }
  EXPECT_NEAR(cuda["pairs"][0]["matching"]["mean_corr"].get<double>(),
              cpu["pairs"][0]["matching"]["mean_corr"].get<double>(), 1e-6);
  EXPECT_NEAR(cuda["pairs"][0]["semi_matching"]["mean_corr"].get<double>(),
              cpu["pairs"][0]["semi_matching"]["mean_corr"].get<double>(), 1e-6);
  EXPECT_NEAR(cuda["linear_cka"]["pairs"][0]["value"].get<double>(), cpu["linear_cka"]["pairs"][0]["value"].get<double>(),
              1e-5);
}

}  // namespace
}  // namespace convergent

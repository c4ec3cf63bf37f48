// The bundled MNIST-1D study (examples/mnist1d) through the command line, against the figures its generator
// computed independently in numpy float64 from the same float16 files (study.json, numpy_reference): every
// layer (3-D conv activations and the dense layer), every pair of the five nets.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.hpp"

namespace convergent {
namespace {

TEST(ExampleStudy, EveryLayerAndPairMatchesTheNumpyReference) {
  const std::string root = std::string(CONVERGENT_SOURCE_DIR) + "/examples/mnist1d";
  const auto study = nlohmann::json::parse(std::ifstream(root + "/study.json"));
  const auto& reference = study.at("numpy_reference").at("pairs");
  testing::ScratchDir dir;
  for (const char* layer : {"conv1", "conv2", "conv3", "dense"}) {
    std::string nets;
    for (const char* net : {"net1", "net2", "net3", "net4", "wide"}) nets += " " + root + "/" + layer + "/" + net + ".npy";
    const std::string out = dir.file(layer);
    const auto r = testing::run_cli("align" + nets + " --out " + out + " --clusters none --analyses none --backend cpu");
    ASSERT_EQ(r.exit_code, 0) << layer << ": " << r.output;
    const auto summary = nlohmann::json::parse(std::ifstream(out + "/summary.json"));
    ASSERT_EQ(summary.at("pairs").size(), 10u) << layer;
    for (const auto& pair : summary.at("pairs")) {
      const std::string key = pair.at("a").get<std::string>() + "_vs_" + pair.at("b").get<std::string>();
      const auto& expected = reference.at(layer).at(key);
      // Means of correlations that are each within 3e-6 of float64 (tests/test_exact_inputs.cpp).
      EXPECT_NEAR(pair.at("semi_matching").at("mean_corr").get<double>(),
                  expected.at("semi_matching_mean_corr").get<double>(), 3e-6)
          << layer << " " << key;
      EXPECT_NEAR(pair.at("matching").at("mean_corr").get<double>(), expected.at("matching_mean_corr").get<double>(),
                  3e-6)
          << layer << " " << key;
    }
  }
}

}  // namespace
}  // namespace convergent

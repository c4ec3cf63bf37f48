// Comparing two summary.json files number by number (stats shards, MPI ranks against one pass), and a
// conv-like study to compare them on.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "test_util.hpp"

namespace convergent::testing {

// Every number in summary.json, by its JSON path; what describes the run (the `run` section) and the notes
// of skipped analyses are left out.
inline void numbers(const nlohmann::json& j, const std::string& path, std::map<std::string, double>& out) {
  if (j.is_number()) out[path] = j.get<double>();
  if (j.is_object())
    for (const auto& [key, value] : j.items())
      if (key != "run" && key != "skipped_analyses") numbers(value, path + "/" + key, out);
  if (j.is_array())
    for (std::size_t i = 0; i < j.size(); ++i) numbers(j[i], path + "/" + std::to_string(i), out);
}

// Shards accumulate their batches with their own shift and scale (the first batch of each), so their
// float32 batch products round differently from one pass: correlations, CKA and the rest agree to the
// float32 contract of DESIGN.md (1e-6), not to float64 rounding. Counts and indices agree exactly.
// Mutual information (its own passes over the files, exact counts) is compared when `with_mi`.
inline void expect_same_summary(const std::string& got_path, const std::string& want_path, bool with_mi = false) {
  std::map<std::string, double> got, want;
  numbers(nlohmann::json::parse(std::ifstream(got_path)), "", got);
  numbers(nlohmann::json::parse(std::ifstream(want_path)), "", want);
  for (const auto& [key, value] : want) {
    if (!with_mi && key.rfind("/mutual_information", 0) == 0) continue;
    ASSERT_TRUE(got.count(key)) << key;
    EXPECT_NEAR(got[key], value, 1e-6 * std::max(1.0, std::abs(value))) << key;
  }
}

// Two conv-like nets, 4-D NCHW (images x channels x 3 x 2), whose channels share latent factors.
inline void write_conv(const std::string& path, std::int64_t images, std::int64_t channels, std::uint64_t seed) {
  std::mt19937_64 shared(11), own(seed);
  std::normal_distribution<float> shared_normal, own_normal;
  std::vector<float> v(static_cast<std::size_t>(images * channels * 6));
  for (std::int64_t i = 0; i < images; ++i)
    for (std::int64_t p = 0; p < 6; ++p) {
      float latent[3];
      for (float& l : latent) l = shared_normal(shared);
      for (std::int64_t c = 0; c < channels; ++c)
        v[static_cast<std::size_t>((i * channels + c) * 6 + p)] = std::max(0.0f, latent[c % 3] + 0.5f * own_normal(own));
    }
  testing::write_array(path, v, {images, channels, 3, 2});
}

}  // namespace convergent::testing

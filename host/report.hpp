// What `convergent align` and `convergent match` write: summary.json, CSV tables and .npy matrices,
// all staged in an OutputDir so that they appear together or not at all.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "convergent/spectral.hpp"
#include "analysis/analyses.hpp"
#include "convergent/study.hpp"
#include "outputs.hpp"

namespace convergent {

struct PairReport {
  std::size_t a = 0;  // net indices into Study::nets
  std::size_t b = 0;
  PairAlignment alignment;
};

// Aligns every pair of nets (a < b) of a study.
std::vector<PairReport> align_all_pairs(Backend& backend, const Study& study, int threads);

// Spectral clustering of all units of a study, with the settings that produced it.
struct SpectralReport {
  SpectralResult result;
  AffinityMode affinity = AffinityMode::abs;
  std::uint64_t seed = 0;
};

// Stages summary.json, matching_<a>_<b>.csv, semi_<a>_<b>.csv, corr_<a>_<b>.npy and corr_<a>.npy; with
// a spectral report also clusters.csv (net,unit,cluster, in cluster order) and corr_clustered.npy (the
// combined correlation matrix with rows and columns in that same order); and the outputs of the
// analyses that ran (stage_analysis_outputs).
void stage_study_outputs(OutputDir& out, const Study& study, const std::vector<PairReport>& pairs,
                         const std::optional<SpectralReport>& spectral, const AnalysisResults& analyses,
                         const std::string& precision, const std::string& version);

// Reads a 2-D correlation matrix (float16/32/64, C or Fortran order) whole; NaN is an error naming the file.
Matrix read_matrix_npy(const std::string& path);

// Stages summary.json, matching_<a>_<b>.csv and semi_<a>_<b>.csv for `convergent match`.
void stage_match_outputs(OutputDir& out, const std::string& corr_path, const std::string& name_a,
                         const std::string& name_b, MatrixView<const double> corr, const PairAlignment& alignment,
                         const std::string& version);

}  // namespace convergent

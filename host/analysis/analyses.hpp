// The analyses that `convergent align --analyses LIST` switches, run on a finished study, and their
// outputs: CSV tables staged in the OutputDir and sections of summary.json under each analysis's name.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "convergent/mean_distributions.hpp"
#include "convergent/reliability.hpp"
#include "convergent/similarity_indices.hpp"
#include "convergent/sparse_prediction.hpp"
#include "convergent/study.hpp"
#include "io/outputs.hpp"

namespace convergent {

// Names as summary.json keys them, in the order of analysis_names().
struct AnalysisSelection {
  bool sparse_prediction = true;
  bool reliability = true;
  bool mean_distributions = true;
  bool linear_cka = true;
  bool cca = true;
  bool svcca = true;
  bool pwcca = true;
  bool procrustes = true;
};

// "sparse_prediction,reliability,mean_distributions,linear_cka,cca,svcca,pwcca,procrustes".
std::string analysis_names();
// A comma-separated list of those names, "all" or "none". Throws Error naming an unknown entry.
AnalysisSelection parse_analyses(const std::string& list);
// "0.001,0.01": penalties for sparse prediction. Throws Error on a malformed or non-positive entry.
std::vector<double> parse_alphas(const std::string& list);

struct AnalysisOptions {
  AnalysisSelection selection;
  LassoOptions lasso;
  ReliabilityOptions reliability;
  MeanDistributionOptions means;
  SimilarityOptions similarity;
};

struct AnalysisResults {
  std::vector<SparsePrediction> sparse;  // both directions of every pair: (0->1), (1->0), (0->2), ...
  std::optional<Reliability> reliability;
  std::optional<MeanDistributions> means;
  std::vector<PairSimilarity> similarity;  // empty when no index is selected
  std::vector<PairSimilarity> image_cka;   // image-level CKA (Samples::images with linear_cka selected)
  AnalysisOptions options;                 // what produced them (the summary states it)
};

// Runs the selected analyses. `matchings` are the pairs' one-to-one alignments in pair order (a < b), as
// reliability() takes them; the similarity indices' decompositions run on `backend`.
AnalysisResults run_analyses(Backend& backend, const Study& study, const std::vector<PairAlignment>& matchings,
                             const AnalysisOptions& options);

// Stages sparse_<a>_<b>.csv (A predicts B) for both directions of every pair and units_<net>.csv for
// every net, and adds the sections sparse_prediction, reliability, mean_distributions, linear_cka, cca,
// svcca, pwcca, procrustes and image_cka (those that ran) to `summary`.
void stage_analysis_outputs(OutputDir& out, const Study& study, const AnalysisResults& results,
                            nlohmann::json& summary);

}  // namespace convergent
